"""The paper's training recipes, one dict each: ``python -m minisd.train --recipe paper-cifar10``.

Every setting the paper fixes is written out, even where it equals minisd's
default, so that each dict reads as the paper's recipe on its own. Flags given
beside ``--recipe`` override it (:func:`resolve`); ``--print-config`` shows the
result. What a recipe leaves alone is not the paper's to decide: where the
data lives, the seed, the device, the dtype, the evaluation batch size, the
run folder, progress bars.

Sources. "Paper" is Huang et al., *Deep Networks with Stochastic Depth*, ECCV
2016 (arXiv 1603.09382 v3), Sec. 4; "code" is the authors' Torch7 code,
github.com/yueatsprograms/Stochastic_Depth (``main.lua``, ``cifar-dataset.lua``,
``svhn-dataset.lua``). Where the two differ the paper's words are followed and
the difference is noted.

Epochs are 0-based in minisd: ``milestones=[250, 375]`` means the rate drops
for the first time in the 251st epoch, i.e. "after epoch 250" in the paper's
words. (``main.lua`` drops it one epoch earlier: its 1-based counter tests
``epoch < 0.5 * maxEpochs``, so 0.01 starts in its epoch 250.)
"""
from __future__ import annotations

from ..data import NUM_CLASSES

# Settings shared by every recipe (paper Sec. 4 and main.lua's sgdState and model):
_COMMON = dict(
    rule="linear",          # paper: "linear decay rule ... p_L = 0.5"; code: deathMode lin_decay
    p_last=0.5,             # paper: p_L = 0.5 throughout Sec. 4; code: -deathRate 0.5 in the README's command
    mode="batch",           # paper Sec. 3: one gate per block per mini-batch; code: gates drawn once per batch
    scale="test",           # paper Eq. 5: the branch scaled by p_l at test time; code: ResidualDrop's evaluate()
    shortcut="subsample",   # the 2016 results: SpatialAveragePooling(1, 1, s, s) keeps every s-th pixel
                            # (the authors switched to a 2x2 average in Feb. 2017, after the paper)
    batch_size=128,         # paper: "mini-batch size 128"; code: --batchSize 128
    lr=0.1,                 # paper: "The learning rate starts from 0.1"; code: learningRate 0.1
    warmup_epochs=0,
    warmup_lr=0.01,
    weight_decay=1e-4,      # paper: "weight decay 1e-4"; code: weightDecay 1e-4
    momentum=0.9,           # paper: "momentum 0.9"; code: momentum 0.9, dampening 0
    nesterov=True,          # paper: "Nesterov momentum"; code: nesterov = true
    dropped="paper",        # code: one flat gradient vector, zeroed each step; a dropped block adds nothing
    limit_train=0,          # the whole training set
    svhn_extra=False,
    valid_per_class=None,   # a random validation set of valid_size images
    eval_every=0,           # validation and test error once per epoch (code: accounting() after each epoch)
)

RECIPES = {
    # CIFAR-10, Table 1 and Fig. 3: ResNet-110, 5.25% with stochastic depth (6.41% constant depth).
    "paper-cifar10": dict(
        _COMMON,
        dataset="cifar10",
        depth=110,            # paper: "110-layer ResNet"; code: --N 18 (6 * 18 + 2)
        epochs=500,           # paper: "trained for 500 epochs"; code: --maxEpochs 500
        milestones=[250, 375],  # paper: "divided by a factor of 10 after epochs 250 and 375"
        augment=True,         # paper: "translation by 4 pixels and horizontal flipping"; code: --augmentation true
        valid_size=5000,      # paper: "hold out 5,000 training images as validation set"; code: vasize 5000
    ),
    # CIFAR-100, Table 1: the same network and recipe as CIFAR-10 (24.98% with stochastic depth).
    "paper-cifar100": dict(
        _COMMON,
        dataset="cifar100",
        depth=110,
        epochs=500,
        milestones=[250, 375],
        augment=True,
        valid_size=5000,
    ),
    # SVHN, Table 1 and Fig. 4 (left): 152 layers, train + extra, 1.75% with stochastic depth.
    "paper-svhn": dict(
        _COMMON,
        dataset="svhn",
        depth=152,            # paper: "Our baseline network has 152 layers"
        svhn_extra=True,      # paper: 73,257 training + 531,131 additional images; code: extra_32x32
        augment=False,        # paper: "we do not perform data augmentation"; code: no augmentation for SVHN
        valid_per_class=[400, 200],  # paper: "400 samples per class from the training set and 200 samples
        valid_size=6000,      # per class from the additional set" (6,000); code: svhn-dataset.lua's idx_val
        epochs=50,            # paper: "trained for 50 epochs"
        milestones=[30, 35],  # paper: "divided by 10 after epochs 30 and 35"; code: lrSchedule svhn {0.6, 0.7}
        eval_every=200,       # paper: "validation error is calculated every 200 iterations"; code: iterCounter % 200
    ),
    # CIFAR-10 with 1202 layers, Table 1: 4.91% with stochastic depth (constant depth: 6.67% in He et al.).
    "paper-1202": dict(
        _COMMON,
        dataset="cifar10",
        depth=1202,           # paper: "1202-layer ResNet" (N = 200)
        epochs=300,           # paper: 300 epochs for the 1202-layer net
        warmup_epochs=10,     # paper: learning rate 0.01 for the first 10 epochs, then 0.1
        warmup_lr=0.01,
        milestones=[150, 225],  # paper: divided by 10 at epochs 150 and 225
        augment=True,
        valid_size=5000,
    ),
    # The DenseNet extension (Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional
    # Networks", CVPR 2017, arXiv 1608.06993, Sec. 4.2 "Training"; code: liuzhuang13/DenseNet):
    # DenseNet-BC, L = 100, k = 12 on C10+ (Table 2: 4.51% error, 0.8M parameters).
    "paper-densenet-bc-100": dict(
        dataset="cifar10",
        arch="densenet",
        depth=100,            # Table 2: DenseNet-BC (L = 100, k = 12)
        growth_rate=12,
        bottleneck=True,      # "BC": bottleneck layers and compression
        compression=0.5,      # Sec. 3: "we set theta = 0.5 in our experiment"
        batch_size=64,        # Sec. 4.2: "batch size 64 for 300 and 40 epochs"
        epochs=300,           # Sec. 4.2: CIFAR "for 300 ... epochs"
        lr=0.1,               # Sec. 4.2: "The initial learning rate is set to 0.1,
        milestones=[150, 225],  # and is divided by 10 at 50% and 75% of the total number of training epochs"
        warmup_epochs=0,
        warmup_lr=0.01,
        weight_decay=1e-4,    # Sec. 4.2: "a weight decay of 10^-4"
        momentum=0.9,         # Sec. 4.2: "Nesterov momentum [35] of 0.9 without dampening"
        nesterov=True,
        augment=True,         # C10+: "mirroring/shifting" (Sec. 4.1), minisd's translation and flips
        valid_size=0,         # Sec. 4.1: "For the final run we use all 50,000 training images and report
                              # the final test error at the end of training"
        limit_train=0,
        svhn_extra=False,
        valid_per_class=None,
        eval_every=0,
        # Not the paper's: it normalises "using the channel means and standard deviations"; minisd's
        # Normalizer removes the mean image and divides by one standard deviation. No dropout: the
        # paper uses 0.2 only without augmentation (C10), not on C10+.
    ),
}


def recipe(name: str) -> dict:
    """A copy of recipe ``name`` (``KeyError`` with the choices for an unknown one)."""
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)}")
    return {k: (list(v) if isinstance(v, list) else v) for k, v in RECIPES[name].items()}


def scaled_milestones(milestones, epochs: int, new_epochs: int) -> list:
    """A recipe's ``milestones`` for ``epochs``, moved in proportion to ``new_epochs``.

    Each becomes ``ceil(m * new_epochs / epochs)`` (the rounding of
    :func:`minisd.optim.lr_at_epoch`'s 50% / 75% default); repeats and those
    not below ``new_epochs`` are dropped. ``[250, 375]`` of 500 epochs become
    ``[50, 75]`` of 100, ``[30, 35]`` of 50 become ``[6, 7]`` of 10.
    """
    scaled = sorted({-(-m * new_epochs // epochs) for m in milestones})  # integer ceil
    return [m for m in scaled if m < new_epochs]


def resolve(defaults: dict, name, given: dict) -> dict:
    """The settings of a run: ``defaults``, then recipe ``name`` (if any), then the flags ``given``.

    ``given`` holds only the flags written on the command line, so a flag
    beside ``--recipe`` always wins over the recipe. ``--epochs`` without
    ``--milestones`` moves the recipe's milestones with it
    (:func:`scaled_milestones`), so a shorter run keeps the schedule's shape;
    the warm-up stays as many epochs as the recipe says.

    One coupling: the validation split is one setting written two ways,
    ``valid_size`` (a random split of that many images) or ``valid_per_class``
    (that many images of each class from each file, e.g. SVHN's [400, 200]).
    With ``valid_per_class`` set, ``valid_size`` is its total (classes x sum),
    recorded so that config.json says how many images were held out. A
    ``--valid-size`` given beside a recipe that splits per class asks for a
    random split of that size, so the recipe's ``valid_per_class`` is dropped;
    both given, they must agree. Raises ``ValueError`` when they do not.
    """
    values = dict(defaults)
    if name:
        values.update(recipe(name))
        if "epochs" in given and "milestones" not in given and values.get("milestones"):
            values["milestones"] = scaled_milestones(values["milestones"], values["epochs"], given["epochs"])
    values.update(given)
    if "valid_size" in given and "valid_per_class" not in given:
        values["valid_per_class"] = None
    per_class = values.get("valid_per_class")
    if per_class:
        total = NUM_CLASSES.get(values["dataset"], 0) * sum(per_class)
        if "valid_size" in given and given["valid_size"] != total:
            raise ValueError(f"--valid-size {given['valid_size']} and --valid-per-class "
                             f"{' '.join(map(str, per_class))} disagree ({values['dataset']}: "
                             f"{NUM_CLASSES.get(values['dataset'])} classes x {sum(per_class)} = {total}); "
                             f"give one of them")
        values["valid_size"] = total
    return values
