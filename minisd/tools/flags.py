"""The command line of ``python -m minisd.train``: the run's Config, its flags and their checks.

Every setting of a run is a field of :class:`Config` (saved as the run folder's config.json);
:func:`build_parser` makes a flag of each; :func:`config_from_args` resolves a recipe
(:mod:`minisd.tools.recipes`) or a resumed checkpoint's own config; :func:`check_config`
refuses impossible settings with one line before any work is done, calling the rule's
owner where there is one (the depth: the model; the schedule: the optimizer; the
validation size: the data).
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, fields
from typing import Optional

import numpy as np

from .. import backend, data
from ..model import check_densenet_depth, check_depth
from ..optim import lr_at_epoch
from . import recipes
from .checkpoint import CheckpointError, check_run_checkpoint, load_checkpoint
from .runs import TrainingError


@dataclass
class Config:
    """Everything a run depends on; saved as config.json in the run folder."""
    dataset: str = "cifar10"           # cifar10 | cifar10-sample (bundled, no download) | cifar100 | svhn
    data_dir: Optional[str] = None     # the data folder; None: $MINISD_DATA, else ./data (minisd.data.default_data_dir)
    download: bool = True              # fetch the official files into data_dir if missing
    depth: int = 110                   # 6N + 2
    p_last: float = 0.5                # survival probability of the last block; 1 = plain ResNet
    rule: str = "linear"               # linear | uniform
    mode: str = "batch"                # batch (one gate per mini-batch) | sample (per image)
    scale: str = "test"                # test (the paper) | train (inverted)
    epochs: int = 500
    batch_size: int = 128
    lr: float = 0.1
    milestones: Optional[list] = None  # epochs where lr is divided by 10; default 50% and 75%
    warmup_epochs: int = 0             # epochs at warmup_lr first (the paper's 1202-layer run)
    warmup_lr: float = 0.01
    weight_decay: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = True
    dropped: str = "paper"             # what SGD does to a dropped block's weights: paper | skip
    augment: bool = True               # translation by up to 4 px and horizontal flips
    valid_size: Optional[float] = None  # images held out: an int count, a fraction in (0, 1), 0 for none;
    #                                     None: 5,000 of a full set, a tenth of a smaller one (data.default_valid_size)
    limit_train: int = 0               # use only the first N training images (0: all); for quick runs
    seed: int = 0
    device: str = "auto"               # cpu | gpu | auto
    dtype: str = "float32"
    reference: bool = False            # run the readable code only (minisd.reference()); slower on the CPU
    eval_batch_size: int = 500
    out: str = "runs/run"
    progress: bool = True
    # the paper's recipes and protocols (minisd.tools.recipes); flags in _add_recipe_flags
    recipe: Optional[str] = None       # the --recipe the settings started from (a record; the fields hold the values)
    shortcut: str = "subsample"        # option-A shortcut: subsample (the paper's 2016 runs) | avg (2x2, the 2017 code)
    svhn_extra: bool = False           # SVHN: add extra_32x32.mat (531,131 images) to the training set
    valid_per_class: Optional[list] = None  # hold out N of each class [from train, from extra]; sets valid_size
    eval_every: int = 0                # also evaluate every N steps (the paper's SVHN: 200); 0: once per epoch
    # the network: the paper's ResNet (default) or the authors' DenseNet extension (flags in _add_densenet_flags)
    arch: str = "resnet"               # resnet | densenet
    growth_rate: int = 12              # DenseNet: k, the maps each dense layer adds
    bottleneck: bool = True            # DenseNet: 1x1 bottlenecks (DenseNet-BC) or not
    compression: float = 0.5           # DenseNet: a transition keeps floor(compression * C) channels


# Flags that only one architecture has: given beside the other, they are refused with one line.
RESNET_ONLY = ("p_last", "rule", "mode", "scale", "shortcut", "dropped")  # stochastic depth's gates
DENSENET_ONLY = ("growth_rate", "bottleneck", "compression")


def _valid_size(s):
    """--valid-size: an integer is a count (0: none), a number in (0, 1) a fraction (the rule:
    minisd.data.check_valid_size); anything else is refused by argparse with one line."""
    try:
        value = int(s)
    except ValueError:
        try:
            value = float(s)
        except ValueError:
            value = s
    try:
        return data.check_valid_size(0 if value == 0 else value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer count (e.g. 5000) or a fraction in (0, 1) "
                                         f"(e.g. 0.1), got {s}") from None


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block): 'error: argument --lr: ...'."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser(suppress_defaults=False):
    """The CLI. With ``suppress_defaults`` only flags written on the command line are set."""
    d = Config()
    p = OneLineParser(
        prog="python -m minisd.train", allow_abbrev=False,
        description="Train a CIFAR ResNet with stochastic depth (defaults: the paper's CIFAR-10 run).")

    def a(*flags, **kwargs):
        if suppress_defaults:
            kwargs["default"] = argparse.SUPPRESS
        p.add_argument(*flags, **kwargs)

    a("--dataset", choices=list(data.DATASETS), default=d.dataset,
      help="cifar10-sample: 2,500 + 1,000 real CIFAR-10 images shipped with minisd, no download "
      "(default: %(default)s)")
    a("--data-dir", default=d.data_dir, help="folder holding the data set, downloaded into it if missing "
      "(default: $MINISD_DATA if set, else ./data)")
    a("--download", action="store_true", default=d.download,
      help="download the data set into --data-dir if it is missing (the default): the official files, "
      "MD5 checked, moved into place only when complete")
    a("--no-download", dest="download", action="store_false",
      help="never download: if the data set is missing, stop and say which file to put where")
    a("--arch", choices=["resnet", "densenet"], default=d.arch,
      help="the paper's ResNet with stochastic depth, or the authors' DenseNet (default: %(default)s)")
    a("--depth", type=int, default=d.depth,
      help="layers: 6N+2 for a ResNet (default: %(default)s), 6n+4 for a DenseNet-BC (its default: 100), "
      "3n+4 without bottlenecks")
    a("--p-last", type=float, default=d.p_last,
      help="survival probability of the last block; 1 = constant depth (default: %(default)s)")
    a("--rule", choices=["linear", "uniform"], default=d.rule,
      help="survival probabilities: linear decay to --p-last (paper) or --p-last for every block (default: %(default)s)")
    a("--mode", choices=["batch", "sample"], default=d.mode,
      help="one gate per mini-batch (paper) or per image (default: %(default)s)")
    a("--scale", choices=["test", "train"], default=d.scale,
      help="scale the branch by p_l at test time (paper) or by 1/p_l in training (default: %(default)s)")
    a("--epochs", type=int, default=d.epochs, help="(default: %(default)s)")
    a("--batch-size", type=int, default=d.batch_size, help="(default: %(default)s)")
    a("--lr", type=float, default=d.lr, help="initial learning rate (default: %(default)s)")
    a("--milestones", type=int, nargs="+", default=None, help="divide lr by 10 after these epochs, e.g. "
      "'--milestones 250 375': epochs 251 and 376 start at the lower rate (default: after 50%% and 75%% of --epochs)")
    a("--warmup-epochs", type=int, default=d.warmup_epochs,
      help="epochs at --warmup-lr first (default: %(default)s)")
    a("--warmup-lr", type=float, default=d.warmup_lr, help="(default: %(default)s)")
    a("--weight-decay", type=float, default=d.weight_decay, help="(default: %(default)s)")
    a("--momentum", type=float, default=d.momentum, help="(default: %(default)s)")
    a("--no-nesterov", dest="nesterov", action="store_false", help="plain momentum instead of Nesterov's")
    a("--dropped", choices=["paper", "skip"], default=d.dropped,
      help="dropped blocks' weights: 'paper' still applies momentum and weight decay; "
      "'skip' leaves them (default: %(default)s)")
    a("--no-augment", dest="augment", action="store_false", help="no translation or flips")
    a("--valid-size", type=_valid_size, default=d.valid_size, metavar="N|F",
      help="training images held out for validation: an integer is a count (e.g. 5000), a number in (0, 1) "
      "a fraction (e.g. 0.1), 0 means none; at most half of the training images (default: the paper's 5000 "
      "for a full training set, 0.1 for the sample or any set under 50,000 images)")
    a("--limit-train", type=int, default=0, metavar="N",
      help="use only the first N training images, N >= 0 (0: all; for quick runs)")
    a("--seed", type=int, default=d.seed, help="(default: %(default)s)")
    a("--device", choices=["cpu", "gpu", "auto"], default=d.device,
      help="auto: the GPU when CuPy finds one (default: %(default)s)")
    a("--dtype", choices=["float32", "float64"], default=d.dtype, help="(default: %(default)s)")
    a("--reference", action="store_true",
      help="run the readable code of minisd/functional.py only (minisd.reference()), not the CPU fast path")
    a("--eval-batch-size", type=int, default=d.eval_batch_size, help="(default: %(default)s)")
    a("--out", default=None, help="run folder, new or without a run in it (default: runs/<dataset>-d<depth>-p<p_last>-s<seed>; "
      "with --resume: the checkpoint's folder)")
    a("--overwrite", action="store_true", help="replace the run already in --out: its config.json, metrics.csv, "
      "last.npz, best.npz, summary.json and curves.png are removed (no other file)")
    a("--resume", default=None, help="checkpoint to continue from (e.g. RUN/last.npz); its history comes "
      "along, into another --out too")
    a("--no-progress", dest="progress", action="store_false", help="no progress bars")
    _add_recipe_flags(a, d)
    a("--growth-rate", type=int, default=d.growth_rate, help="DenseNet: maps each layer adds, k (default: %(default)s)")
    a("--compression", type=float, default=d.compression,
      help="DenseNet: share of the channels a transition keeps, theta (default: %(default)s)")
    a("--no-bottleneck", dest="bottleneck", action="store_false",
      help="DenseNet: no 1x1 bottleneck convolutions (the paper's plain DenseNet; use --compression 1 with it)")
    return p


def _add_recipe_flags(a, d):
    """The paper's recipes (minisd.tools.recipes) and the settings only they needed so far."""
    a("--recipe", choices=list(recipes.RECIPES), default=None,
      help="start from the paper's settings for that run (minisd/tools/recipes.py); flags given beside it "
      "override it. Not with --resume: a resumed run keeps the settings it started with")
    a("--print-config", action="store_true",
      help="print the resolved settings as JSON (the config.json keys) and exit, loading no data")
    a("--shortcut", choices=["subsample", "avg"], default=d.shortcut,
      help="option-A shortcut of the downsampling blocks: keep every 2nd pixel (the paper's 2016 runs) "
      "or average 2x2 (the authors' 2017 code) (default: %(default)s)")
    a("--augment", dest="augment", action="store_true",
      help="translation and flips (the default; overrides a recipe's no augmentation)")
    a("--svhn-extra", action=argparse.BooleanOptionalAction, default=d.svhn_extra,
      help="SVHN: add extra_32x32.mat to the training set (604,388 images in all, as the paper): "
      f"{data.SVHN_EXTRA_MEMORY} (default: %(default)s)")
    a("--valid-per-class", type=int, nargs="+", default=d.valid_per_class, metavar="N",
      help="hold out N images of each class, drawn at random, instead of --valid-size random images; "
      "with --svhn-extra two numbers, from train_32x32.mat and from extra_32x32.mat "
      "(the paper's SVHN: 400 200, i.e. 6,000)")
    a("--eval-every", type=int, default=d.eval_every, metavar="N",
      help="also evaluate validation and test error every N steps (a metrics row each; the paper's "
      "SVHN: 200); 0: once per epoch (default: %(default)s)")


def config_from_args(args, argv=None, checkpoint_meta=None) -> Config:
    """The run's Config: the flags, or with --resume the checkpoint's own config
    (``checkpoint_meta``, read once by the caller) with only the flags given on the command
    line changed (e.g. --epochs to train longer), and the checkpoint's folder as --out unless
    --out is given."""
    if args.resume and args.recipe:
        raise TrainingError("--recipe cannot be used with --resume: a resumed run keeps the settings it "
                            "started with (its config.json); give single flags beside --resume to change them")
    if args.resume:
        try:
            values = dict(checkpoint_meta["config"])
        except (KeyError, TypeError, ValueError):
            raise TrainingError(f"cannot resume from {args.resume}: not a checkpoint of python -m minisd.train "
                                f"(it has no config)") from None
        given = given_flags(argv)
        values.update(given)
        if "out" not in given:
            values["out"] = os.path.dirname(args.resume) or "."
        known = {f.name for f in fields(Config)}
        cfg = Config(**{k: v for k, v in values.items() if k in known})
        check_arch_flags(cfg.arch, given)
        return cfg
    values = {f.name: getattr(args, f.name) for f in fields(Config) if hasattr(args, f.name)}
    cfg = Config(**resolve_recipe(values, argv))
    cfg.data_dir = str(data.default_data_dir(cfg.data_dir))  # the one rule: --data-dir, $MINISD_DATA, ./data
    given = given_flags(argv)
    check_arch_flags(cfg.arch, given)
    if cfg.arch == "densenet" and "depth" not in given and not cfg.recipe:
        cfg.depth = 100  # DenseNet-BC-100, not the ResNet's 110
    if args.out is None:
        name = (f"densenet{cfg.depth}-k{cfg.growth_rate}" if cfg.arch == "densenet"
                else f"d{cfg.depth}-p{cfg.p_last:g}")
        cfg.out = os.path.join("runs", f"{cfg.dataset}-{name}-s{cfg.seed}")
    return cfg


def check_arch_flags(arch, given):
    """One line for a flag of the other architecture (e.g. --growth-rate beside a ResNet)."""
    other = DENSENET_ONLY if arch == "resnet" else RESNET_ONLY
    wrong = [k for k in other if k in given]
    if wrong:
        flag = "--no-bottleneck" if wrong[0] == "bottleneck" else "--" + wrong[0].replace("_", "-")
        why = ("is a DenseNet flag: add --arch densenet" if arch == "resnet" else
               "is a flag of the ResNet's stochastic depth; a DenseNet has no gates (leave it out, or use --arch resnet)")
        raise TrainingError(f"{flag} {why}")


def network(cfg: Config, num_classes: int):
    """The network ``cfg`` describes, its weights drawn from ``cfg.seed``."""
    from ..model import DenseNet, ResNet
    if cfg.arch == "densenet":
        return DenseNet(cfg.depth, cfg.growth_rate, cfg.bottleneck, cfg.compression, num_classes,
                        dtype=np.dtype(cfg.dtype), rng=np.random.default_rng(cfg.seed))
    return ResNet(cfg.depth, num_classes, cfg.p_last, cfg.rule, dtype=np.dtype(cfg.dtype), scale=cfg.scale,
                  mode=cfg.mode, seed=cfg.seed, shortcut=cfg.shortcut)


def given_flags(argv=None) -> dict:
    """{config field: value} for the flags written on the command line, defaults left out."""
    given = vars(build_parser(suppress_defaults=True).parse_args(argv))
    given.pop("resume", None)
    given.pop("print_config", None)
    given.pop("overwrite", None)
    return given


def resolve_recipe(values: dict, argv=None) -> dict:
    """``values`` (every flag, defaults included) with ``values["recipe"]`` applied, then the
    flags written on the command line on top (minisd.tools.recipes.resolve)."""
    known = {f.name for f in fields(Config)}
    given = {k: v for k, v in given_flags(argv).items() if k in known}
    try:
        return recipes.resolve(values, values.get("recipe"), given)
    except ValueError as e:
        raise TrainingError(str(e)) from None


def _number(flag, value, ok, rule):
    """One line for a numeric flag that is not a finite number satisfying ``ok``."""
    good = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and ok(value))
    if not good:
        raise TrainingError(f"--{flag} must be {rule}, got {value}")


def check_config(cfg: Config):
    """Reject impossible settings with one clear line, before any work is done (every numeric flag
    finite and in range)."""
    if cfg.arch not in ("resnet", "densenet"):
        raise TrainingError(f"--arch must be resnet or densenet, got {cfg.arch!r}")
    try:
        if cfg.arch == "densenet":
            check_densenet_depth(cfg.depth, cfg.bottleneck)
        else:
            check_depth(cfg.depth)
    except ValueError as e:
        raise TrainingError(f"--{e}") from None
    if cfg.arch == "densenet":
        _number("growth-rate", cfg.growth_rate, lambda v: v >= 1 and v == int(v), "an integer >= 1")
        _number("compression", cfg.compression, lambda v: 0 < v <= 1, "in (0, 1]")
    _number("p-last", cfg.p_last, lambda v: 0 < v <= 1, "in (0, 1]")
    for name in ("epochs", "batch_size", "eval_batch_size"):
        _number(name.replace("_", "-"), getattr(cfg, name), lambda v: v >= 1, "an integer >= 1")
    _number("lr", cfg.lr, lambda v: v > 0, "a number > 0")
    _number("warmup-lr", cfg.warmup_lr, lambda v: v > 0, "a number > 0")
    _number("momentum", cfg.momentum, lambda v: 0 <= v < 1, "in [0, 1)")
    _number("weight-decay", cfg.weight_decay, lambda v: v >= 0, "a number >= 0")
    _number("warmup-epochs", cfg.warmup_epochs, lambda v: 0 <= v <= cfg.epochs, f"in 0..{cfg.epochs} (--epochs)")
    _number("limit-train", cfg.limit_train, lambda v: v >= 0, "an integer >= 0 (0: every image)")
    _number("seed", cfg.seed, lambda v: v >= 0, "an integer >= 0")
    try:
        if cfg.valid_size is not None:  # None: the data set's default, chosen when it is loaded
            data.check_valid_size(cfg.valid_size)
    except ValueError as e:
        raise TrainingError(f"--{e}".replace("valid_size", "valid-size", 1)) from None
    try:
        backend.resolve_device(cfg.device)
    except RuntimeError as e:
        raise TrainingError(str(e)) from None
    check_recipe_settings(cfg)


def check_recipe_settings(cfg: Config):
    """check_config for the settings of _add_recipe_flags."""
    if cfg.shortcut not in ("subsample", "avg"):
        raise TrainingError(f"--shortcut must be subsample or avg, got {cfg.shortcut!r}")
    if cfg.svhn_extra and cfg.dataset != "svhn":
        raise TrainingError(f"--svhn-extra needs --dataset svhn, got {cfg.dataset}")
    if cfg.eval_every < 0:
        raise TrainingError(f"--eval-every must be >= 0 (0: once per epoch), got {cfg.eval_every}")
    try:  # the learning-rate schedule as the loop will ask for it
        lr_at_epoch(0, base_lr=cfg.lr, epochs=cfg.epochs, milestones=cfg.milestones,
                    warmup_epochs=cfg.warmup_epochs, warmup_lr=cfg.warmup_lr)
    except ValueError as e:
        raise TrainingError(f"learning-rate schedule (--epochs, --milestones, --warmup-epochs): {e}") from None
    per_class = cfg.valid_per_class
    if per_class:
        if len(per_class) != 1 + cfg.svhn_extra or min(per_class) < 0 or sum(per_class) < 1:
            raise TrainingError(f"--valid-per-class takes one count >= 0 per training file, not all 0: "
                                f"{'two (train, extra) with' if cfg.svhn_extra else 'one without'} "
                                f"--svhn-extra; got {' '.join(map(str, per_class))}")


def read_resume_checkpoint(path):
    """``(arrays, meta)`` of the checkpoint to resume from, read once for the whole resume."""
    try:
        arrays, meta = load_checkpoint(path)
    except CheckpointError as e:
        raise TrainingError(f"cannot resume: {e}") from None
    if not isinstance(meta, dict) or "epoch" not in meta:
        raise TrainingError(f"cannot resume from {path}: not a checkpoint of python -m minisd.train")
    try:  # every field alone, before any is used (against the run too: Run.restore, once the data is loaded)
        check_run_checkpoint(arrays, meta)
    except CheckpointError as e:
        raise TrainingError(f"cannot resume from {path}: {e}") from None
    return arrays, meta


def check_resume(cfg: Config, path, arrays, meta):
    """Before the data is loaded: the checkpoint fits the network the flags describe and has epochs left."""
    check_checkpoint_fits(arrays, meta, cfg, path)
    if meta["epoch"] >= cfg.epochs:
        raise TrainingError(finished_message(path, meta["epoch"], cfg.epochs))


def checkpoint_depth(arrays):
    """The depth (6N + 2) of the ResNet whose weights ``arrays`` hold, or None if they hold none."""
    blocks = {k.split(".")[1] for k in arrays if k.startswith("model/blocks.")}
    return 2 * len(blocks) + 2 if blocks else None


def check_checkpoint_fits(arrays, meta, cfg, path=None):
    """One line (TrainingError) when a checkpoint is of another network than ``cfg`` asks for."""
    where = f"cannot resume from {path}: " if path else ""
    saved_arch = (meta.get("config") or {}).get("arch", "resnet")
    if saved_arch != cfg.arch:
        raise TrainingError(f"{where}the checkpoint is a {saved_arch}, the flags ask for a {cfg.arch} "
                            f"(leave out --arch to continue it as it is)")
    depth = checkpoint_depth(arrays)
    if depth is not None and depth != cfg.depth:
        raise TrainingError(f"{where}the checkpoint is a ResNet-{depth}, the flags ask for ResNet-{cfg.depth} "
                            f"(leave out --depth to continue it as it is)")
    fc = arrays.get("model/fc.weight")
    classes = data.NUM_CLASSES.get(cfg.dataset)
    if fc is not None and classes is not None and fc.shape[0] != classes:
        raise TrainingError(f"{where}the checkpoint has {fc.shape[0]} classes, --dataset {cfg.dataset} has {classes} "
                            f"(leave out --dataset to continue it as it is)")


def finished_message(path, done, epochs):
    """The line for a resume with no epochs left."""
    return (f"{path} has already run {done} epoch{'s' if done != 1 else ''} (--epochs {epochs}): "
            f"pass a larger --epochs to train longer")
