"""Train the paper's CIFAR ResNets with stochastic depth: ``python -m minisd.train``.

The loop, top to bottom, is the paper's recipe:

    for each epoch:                      lr: 0.1, / 10 at 50% and 75% of the epochs
        for each mini-batch of 128:      shuffled, translated +-4 px, flipped
            net.sample_gates(rng)        block l survives with probability p_l
            loss = CE(net.forward(x))    dropped blocks: shortcut only
            net.backward(dloss)          dropped blocks: shortcut gradient only
            opt.step()                   SGD, Nesterov momentum 0.9, weight decay 1e-4
        evaluate (every block, branch scaled by p_l), log, checkpoint

Defaults are the paper's CIFAR-10 run: 110 layers, p_L = 0.5, linear decay,
500 epochs, batch 128. ``--recipe paper-cifar10 | paper-cifar100 | paper-svhn
| paper-1202`` sets everything as the paper did for that run (minisd.recipes);
``--print-config`` shows the settings without training. Outputs in the run
folder (``--out``): config.json, metrics.csv (one row per epoch; with
``--eval-every N`` also one every N steps), last.npz and best.npz
checkpoints, summary.json and curves.png (the run folder: minisd.runs).

The step itself - normalise, augment, gates, forward, loss, backward, update -
is minisd.step.train_step, the same function the lessons call.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields
from typing import Optional

import numpy as np

from . import backend, data, recipes, step
from .checkpoint import CheckpointError, load_checkpoint, prefixed, save_checkpoint, unprefixed
from .layers import SoftmaxCrossEntropy
from .model import ResNet
from .optim import SGD, lr_at_epoch
from .plot import plot_runs
from .route import reference
from .runs import read_metrics, summarize, write_json, write_metrics


@dataclass
class Config:
    """Everything a run depends on; saved as config.json in the run folder."""
    dataset: str = "cifar10"           # cifar10 | cifar100 | svhn
    data_dir: str = "data"             # a folder holding the data set (see minisd.data)
    download: bool = False             # fetch the official files into data_dir if missing
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
    valid_size: float = 5000           # images held out (count, or fraction < 1); 0 for none
    limit_train: int = 0               # use only the first N training images (0: all); for quick runs
    seed: int = 0
    device: str = "auto"               # cpu | gpu | auto
    dtype: str = "float32"
    reference: bool = False            # run the readable code only (minisd.reference()); slower on the CPU
    eval_batch_size: int = 500
    out: str = "runs/run"
    progress: bool = True
    # the paper's recipes and protocols (minisd.recipes); flags in _add_recipe_flags
    recipe: Optional[str] = None       # the --recipe the settings started from (a record; the fields hold the values)
    shortcut: str = "subsample"        # option-A shortcut: subsample (the paper's 2016 runs) | avg (2x2, the 2017 code)
    svhn_extra: bool = False           # SVHN: add extra_32x32.mat (531,131 images) to the training set
    valid_per_class: Optional[list] = None  # hold out N of each class [from train, from extra]; sets valid_size
    eval_every: int = 0                # also evaluate every N steps (the paper's SVHN: 200); 0: once per epoch


def log_line(msg):
    """Print a line now (runs under nohup or tee are block-buffered otherwise)."""
    print(msg, flush=True)


class TrainingError(Exception):
    """Stops a run with one clear line (bad data, NaN loss, unusable checkpoint)."""


# ---------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------


def evaluate(net, x_uint8, y, normalizer, *, batch_size=500):
    """Error rate (and mean loss) of ``net`` in eval mode: every block, branch scaled by p_l.

    x_uint8: (N, 3, 32, 32) images on the device, y: (N,) labels, ``batch_size`` images
    at a time. Returns (error, loss) as floats, or (nan, nan) for an empty set.
    """
    if len(y) == 0:
        return math.nan, math.nan
    net.eval()
    loss_fn = SoftmaxCrossEntropy()
    wrong, total_loss = 0, 0.0
    for i in range(0, len(y), batch_size):
        logits = net.forward(normalizer.apply(x_uint8[i:i + batch_size], dtype=net.dtype))
        yb = y[i:i + batch_size]
        total_loss += float(loss_fn.forward(logits, yb)) * len(yb)
        wrong += int((logits.argmax(axis=1) != yb).sum())
    net.clear_cache()
    loss_fn.cache = None
    net.train()
    return wrong / len(y), total_loss / len(y)


# ---------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------


# On a GPU, the steps' losses and error counts are read (the host waits for the
# device) once every READ_EVERY steps, when the progress bar is refreshed.
READ_EVERY = 20


class Run:
    """Holds the state of one training run: data, network, optimizer, RNG, progress."""

    def __init__(self, cfg: Config, log=log_line):
        self.cfg, self.log = cfg, log
        self.device = backend.resolve_device(cfg.device)
        self.rng = np.random.default_rng(cfg.seed)  # each epoch's shuffle, then each step's augmentation and gates
        self.load_data()
        dtype = np.dtype(cfg.dtype)
        self.net = ResNet(cfg.depth, self.num_classes, cfg.p_last, cfg.rule, dtype=dtype,
                          scale=cfg.scale, mode=cfg.mode, seed=cfg.seed, shortcut=cfg.shortcut).to(self.device)
        self.opt = SGD(self.net.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                       nesterov=cfg.nesterov, dropped=cfg.dropped)
        self.epoch, self.step_in_epoch, self.perm = 0, 0, None
        self.epoch_sums = dict(loss=0.0, wrong=0, seen=0, blocks=0.0, steps=0)
        self.metrics, self.best_valid = [], math.inf
        self.stop_requested = False  # set by Ctrl-C; checked between steps

    def load_data(self):
        cfg = self.cfg
        x_train, y_train, x_test, y_test, self.num_classes = data.load_dataset(
            cfg.dataset, cfg.data_dir, download=cfg.download, svhn_extra=cfg.svhn_extra)
        if cfg.limit_train:
            x_train, y_train = x_train[:cfg.limit_train], y_train[:cfg.limit_train]
        (x_train, y_train), (x_valid, y_valid) = self.split(x_train, y_train)
        if len(y_train) < cfg.batch_size:
            raise TrainingError(f"only {len(y_train)} training images for a batch of {cfg.batch_size}")
        self.normalizer = data.Normalizer.fit(x_train)
        to = lambda a: backend.to_device(a, self.device)  # uint8 images stay small on the device
        self.x_train, self.y_train = to(x_train), to(y_train)
        self.x_valid, self.y_valid = to(x_valid), to(y_valid)
        self.x_test, self.y_test = to(x_test), to(y_test)
        self.normalizer.to(self.device)
        self.log(f"data: {cfg.dataset}, {len(y_train)} train / {len(y_valid)} valid / {len(y_test)} test, "
                 f"{self.num_classes} classes")

    def split(self, x_train, y_train):
        """Hold out the validation set: ``valid_size`` random images, or ``valid_per_class``
        of each class from each file (the paper's SVHN split: 400 from train, 200 from extra)."""
        cfg = self.cfg
        try:
            if not cfg.valid_per_class:
                return data.train_valid_split(x_train, y_train, cfg.valid_size, seed=cfg.seed)
            files = data.svhn_file_of_each_image(cfg.data_dir, True)[:len(y_train)] if cfg.svhn_extra else None
            return data.stratified_split(x_train, y_train, cfg.valid_per_class, files=files, seed=cfg.seed)
        except ValueError as e:
            raise TrainingError(f"--{'valid-per-class' if cfg.valid_per_class else 'valid-size'}: {e}") from None

    @property
    def steps_per_epoch(self):
        return len(self.y_train) // self.cfg.batch_size  # the last partial batch is dropped

    @property
    def iteration(self):
        """SGD steps done since the start of the run (the paper's "iterations")."""
        return self.epoch * self.steps_per_epoch + self.step_in_epoch

    # -- one step, one epoch -----------------------------------------------------

    def train_step(self, idx):
        """One SGD step on the training images ``idx`` (minisd.step.train_step).

        Returns (loss, wrong, blocks run): loss and wrong as 0-d arrays on the
        device, not read yet (on a GPU, reading them makes the host wait for
        the step: :meth:`read_steps` reads many at once), blocks as a float.
        """
        return step.train_step(self.net, self.opt, self.x_train[idx], self.y_train[idx],
                               self.normalizer, self.rng, augment=self.cfg.augment)

    def read_steps(self, unread):
        """Add the losses and error counts of the ``unread`` steps to the epoch's sums, and empty it.

        ``unread``: ``(loss, wrong)`` 0-d device arrays of the last steps of this
        epoch, oldest first. On a GPU this is where the host waits for them:
        once for all (two small copies to the host), not once per step. A loss
        that is not finite stops the run with a TrainingError naming its step.
        """
        if not unread:
            return
        s, xp = self.epoch_sums, backend.get_xp(*unread[0])
        losses = backend.to_numpy(xp.stack([loss for loss, _ in unread]))
        wrong = backend.to_numpy(xp.stack([w for _, w in unread]))
        first = self.step_in_epoch - len(unread)
        for i, (loss, w) in enumerate(zip(losses.tolist(), wrong.tolist())):
            if not math.isfinite(loss):
                kept = (f"the last good checkpoint is {self.path('last.npz')}"
                        if os.path.exists(self.path("last.npz")) else "no checkpoint was written yet")
                raise TrainingError(f"loss became {loss} at epoch {self.epoch + 1}, step {first + i + 1}; "
                                    f"stopped ({kept}). Try a lower --lr or --warmup-epochs.")
            s["loss"] += loss * self.cfg.batch_size
            s["wrong"] += int(w)
        unread.clear()

    def train_epoch(self, bar=None):
        """The rest of this epoch's steps. Losses and error counts stay on the device and are
        read every READ_EVERY steps on a GPU (every step on the CPU, where reading costs nothing),
        before a mid-epoch evaluation or a stop, and at the end of the epoch."""
        cfg = self.cfg
        if self.step_in_epoch == 0:
            self.perm = self.rng.permutation(len(self.y_train))
            self.epoch_sums = dict(loss=0.0, wrong=0, seen=0, blocks=0.0, steps=0, seconds=0.0)
        self.opt.lr = self.lr_for(self.epoch)
        s = self.epoch_sums
        xp = backend.get_xp(self.x_train)
        read_every = 1 if xp is np else READ_EVERY
        unread = []  # (loss, wrong) of the steps not read yet
        t_epoch = t_read = time.perf_counter()
        while self.step_in_epoch < self.steps_per_epoch:
            b = self.step_in_epoch
            idx = backend.to_device(self.perm[b * cfg.batch_size:(b + 1) * cfg.batch_size], self.device)
            loss, wrong, blocks = self.train_step(idx)
            unread.append((loss, wrong))
            self.step_in_epoch += 1
            s["seen"] += len(idx)
            s["blocks"] += blocks
            s["steps"] += 1
            first_six = self.epoch == 0 and s["steps"] == 6
            if len(unread) >= read_every or first_six:
                steps_read = len(unread)
                self.read_steps(unread)  # on a GPU: waits for those steps
                now = time.perf_counter()
                if bar is not None:
                    bar.set_postfix(loss=f"{s['loss'] / s['seen']:.3f}", err=f"{s['wrong'] / s['seen']:.3f}",
                                    img_s=f"{steps_read * cfg.batch_size / (now - t_read):.0f}", refresh=False)
                t_read = now
            if bar is not None:
                bar.update(1)
            if first_six:
                self.announce_eta(time.perf_counter() - t_epoch)
            if cfg.eval_every and self.iteration % cfg.eval_every == 0 and self.step_in_epoch < self.steps_per_epoch:
                self.read_steps(unread)
                t_eval = time.perf_counter()  # (at an epoch's end finish_epoch evaluates)
                self.evaluate_mid_epoch(seconds=s.get("seconds", 0.0) + t_eval - t_epoch)
                t_epoch += time.perf_counter() - t_eval  # evaluating is not training time
            if self.stop_requested:
                self.read_steps(unread)
                s["seconds"] = s.get("seconds", 0.0) + time.perf_counter() - t_epoch
                raise KeyboardInterrupt
        self.read_steps(unread)
        backend.synchronize(xp)  # every step has run: now the clock means something
        s["seconds"] = s.get("seconds", 0.0) + time.perf_counter() - t_epoch

    def lr_for(self, epoch):
        cfg = self.cfg
        return lr_at_epoch(epoch, base_lr=cfg.lr, epochs=cfg.epochs, milestones=cfg.milestones,
                           warmup_epochs=cfg.warmup_epochs, warmup_lr=cfg.warmup_lr)

    def announce_eta(self, seconds_for_six_steps):
        per_step = seconds_for_six_steps / 6  # includes the first (slower) steps: errs on the long side
        total = per_step * self.steps_per_epoch * self.cfg.epochs
        self.log(f"\nexpected time: {per_step:.2f} s/step, {per_step * self.steps_per_epoch:.0f} s/epoch, "
                 f"{format_seconds(total)} for {self.cfg.epochs} epochs (+ evaluation)")

    def finish_epoch(self):
        """Evaluate, log a metrics row, write checkpoints. Called after a full epoch."""
        cfg, s = self.cfg, self.epoch_sums
        ve, _ = evaluate(self.net, self.x_valid, self.y_valid, self.normalizer, batch_size=cfg.eval_batch_size)
        te, _ = evaluate(self.net, self.x_test, self.y_test, self.normalizer, batch_size=cfg.eval_batch_size)
        row = dict(epoch=self.epoch, iteration=self.iteration, lr=self.opt.lr, train_loss=s["loss"] / s["seen"],
                   train_error=s["wrong"] / s["seen"], valid_error=ve, test_error=te,
                   epoch_seconds=s["seconds"], mean_blocks=s["blocks"] / s["steps"],
                   expected_blocks=self.net.expected_blocks())
        self.metrics.append(row)
        write_metrics(self.path("metrics.csv"), self.metrics)
        self.log(f"epoch {self.epoch + 1}/{cfg.epochs}: loss {row['train_loss']:.4f} "
                 f"train err {row['train_error']:.4f} valid err {ve:.4f} test err {te:.4f} "
                 f"blocks {row['mean_blocks']:.1f}/{len(self.net.blocks)} ({row['epoch_seconds']:.1f} s)")
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self.save("last.npz")
        if not math.isnan(ve) and ve < self.best_valid:
            self.best_valid = ve
            self.save("best.npz")

    def evaluate_mid_epoch(self, seconds):
        """--eval-every: a metrics row after this step, as finish_epoch writes one after the last.

        Validation and test error of the network now; the training columns
        (loss, error, seconds, blocks) are the epoch's so far. The row with the
        lowest validation error, mid-epoch or not, gives the summary's test
        error, and best.npz is saved at it.
        """
        cfg, s = self.cfg, self.epoch_sums
        ve, _ = evaluate(self.net, self.x_valid, self.y_valid, self.normalizer, batch_size=cfg.eval_batch_size)
        te, _ = evaluate(self.net, self.x_test, self.y_test, self.normalizer, batch_size=cfg.eval_batch_size)
        row = dict(epoch=self.epoch, iteration=self.iteration, lr=self.opt.lr, train_loss=s["loss"] / s["seen"],
                   train_error=s["wrong"] / s["seen"], valid_error=ve, test_error=te,
                   epoch_seconds=seconds, mean_blocks=s["blocks"] / s["steps"],
                   expected_blocks=self.net.expected_blocks())
        self.metrics.append(row)
        write_metrics(self.path("metrics.csv"), self.metrics)
        self.log(f"step {self.iteration} (epoch {self.epoch + 1}, {self.step_in_epoch}/{self.steps_per_epoch}): "
                 f"valid err {ve:.4f} test err {te:.4f}")
        if not math.isnan(ve) and ve < self.best_valid:
            self.best_valid = ve
            self.save("best.npz")

    # -- checkpoints -------------------------------------------------------------

    def path(self, name):
        return os.path.join(self.cfg.out, name)

    def save(self, name):
        arrays = {**prefixed("model", self.net.state_dict()), **prefixed("optim", self.opt.state_dict()),
                  **prefixed("data", self.normalizer.state_dict())}
        if self.perm is not None:
            arrays["perm"] = self.perm
        meta = dict(epoch=self.epoch, step_in_epoch=self.step_in_epoch, best_valid=self.best_valid,
                    rng=self.rng.bit_generator.state, epoch_sums=self.epoch_sums, lr=self.opt.lr,
                    config=asdict(self.cfg))
        save_checkpoint(self.path(name), arrays, meta)

    def resume(self, path):
        try:
            arrays, meta = load_checkpoint(path)
            self.net.load_state_dict(unprefixed("model", arrays))
            self.opt.load_state_dict(unprefixed("optim", arrays))
        except (CheckpointError, KeyError, ValueError) as e:
            raise TrainingError(f"cannot resume from {path}: {e}") from None
        self.rng.bit_generator.state = meta["rng"]
        self.epoch, self.step_in_epoch = meta["epoch"], meta["step_in_epoch"]
        self.best_valid, self.epoch_sums = meta["best_valid"], meta["epoch_sums"]
        self.perm = arrays.get("perm")
        self.opt.lr = meta["lr"]
        self.metrics = [r for r in read_metrics(self.path("metrics.csv")) if self.row_before_checkpoint(r)]
        for r in self.metrics:
            r["epoch"] = int(r["epoch"])
            if not math.isnan(r.get("iteration", math.nan)):
                r["iteration"] = int(r["iteration"])
        where = f"epoch {self.epoch + 1}" + (f", step {self.step_in_epoch}" if self.step_in_epoch else "")
        self.log(f"resumed from {path} at {where}")

    def row_before_checkpoint(self, row):
        """Whether a metrics row was written before the checkpoint just resumed (older rows have no iteration)."""
        it = row.get("iteration", math.nan)
        return row["epoch"] < self.epoch if math.isnan(it) else it <= self.iteration


def format_seconds(s):
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def train(cfg: Config, resume: Optional[str] = None, log=log_line):
    """Run (or continue) training; returns the summary dict. Raises TrainingError on failure.

    With ``cfg.reference`` every layer runs the readable code of minisd/functional.py
    (``with minisd.reference():``), never the CPU fast path: slower, the same numbers to rounding.
    """
    if cfg.reference:
        log("--reference: every layer runs the readable code of minisd/functional.py")
        with reference():
            return _train(cfg, resume, log)
    return _train(cfg, resume, log)


def _train(cfg: Config, resume: Optional[str], log):
    os.makedirs(cfg.out, exist_ok=True)
    run = Run(cfg, log=log)
    if resume:
        run.resume(resume)
    write_json(run.path("config.json"), asdict(cfg))
    log(f"model: {run.net!r}; expected blocks per step {run.net.expected_blocks():.2f}; "
        f"device {run.device}; output {cfg.out}")

    bar_factory = _progress_bar if cfg.progress else (lambda *a, **k: None)
    with _StopOnCtrlC(run):
        try:
            while run.epoch < cfg.epochs:
                bar = bar_factory(run.steps_per_epoch, run.step_in_epoch, f"epoch {run.epoch + 1}/{cfg.epochs}")
                try:
                    run.train_epoch(bar)
                finally:
                    if bar is not None:
                        bar.close()
                run.finish_epoch()
        except KeyboardInterrupt:
            # Ctrl-C is honoured between steps, so the saved state is consistent:
            # --resume continues from exactly here, mid-epoch included.
            run.save("last.npz")
            log(f"\ninterrupted: saved {run.path('last.npz')} (epoch {run.epoch + 1}, step "
                f"{run.step_in_epoch}); continue with --resume {run.path('last.npz')}")
            return None
    summary = summarize(run.metrics)
    write_json(run.path("summary.json"), summary)
    try:
        plot_runs([cfg.out], run.path("curves.png"))
    except Exception as e:  # a missing plotting backend must not fail a finished run
        log(f"(curves.png not written: {e})")
    log(f"done: test error {summary['test_error']:.4f} ({summary['test_error_rule']}); results in {cfg.out}")
    return summary


class _StopOnCtrlC:
    """The first Ctrl-C asks the run to stop after the current step; a second one stops at once."""

    def __init__(self, run):
        self.run = run

    def __enter__(self):
        self.previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self.handle)

    def handle(self, signum, frame):
        self.run.stop_requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)
        return False


def _progress_bar(total, initial, desc):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="step", leave=False, dynamic_ncols=True)


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def _valid_size(s):
    v = float(s)
    if v < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return v if v < 1 else int(v)


def build_parser(suppress_defaults=False):
    """The CLI. With ``suppress_defaults`` only flags written on the command line are set."""
    d = Config()
    p = argparse.ArgumentParser(
        prog="python -m minisd.train", allow_abbrev=False,
        description="Train a CIFAR ResNet with stochastic depth (defaults: the paper's CIFAR-10 run).")

    def a(*flags, **kwargs):
        if suppress_defaults:
            kwargs["default"] = argparse.SUPPRESS
        p.add_argument(*flags, **kwargs)

    a("--dataset", choices=["cifar10", "cifar100", "svhn"], default=d.dataset, help="(default: %(default)s)")
    a("--data-dir", default=d.data_dir, help="folder holding the data set (default: %(default)s)")
    a("--download", action="store_true", help="download the data set into --data-dir if it is missing")
    a("--depth", type=int, default=d.depth, help="6N+2 layers (default: %(default)s)")
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
    a("--milestones", type=int, nargs="+", default=None, help="epochs at which lr is divided by 10 "
      "(default: 50%% and 75%% of --epochs)")
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
    a("--valid-size", type=_valid_size, default=d.valid_size, help="held-out images from the training set (count or fraction; 0: none; default: %(default)s)")
    a("--limit-train", type=int, default=0, help="use only the first N training images (quick runs)")
    a("--seed", type=int, default=d.seed, help="(default: %(default)s)")
    a("--device", choices=["cpu", "gpu", "auto"], default=d.device,
      help="auto: the GPU when CuPy finds one (default: %(default)s)")
    a("--dtype", choices=["float32", "float64"], default=d.dtype, help="(default: %(default)s)")
    a("--reference", action="store_true",
      help="run the readable code of minisd/functional.py only (minisd.reference()), not the CPU fast path")
    a("--eval-batch-size", type=int, default=d.eval_batch_size, help="(default: %(default)s)")
    a("--out", default=None, help="run folder (default: runs/<dataset>-d<depth>-p<p_last>-s<seed>)")
    a("--resume", default=None, help="checkpoint to continue from (e.g. RUN/last.npz)")
    a("--no-progress", dest="progress", action="store_false", help="no progress bars")
    _add_recipe_flags(a, d)
    return p


# SVHN with extra, computed (README, "The paper's recipes"): 604,388 x 3 x 32 x 32 bytes = 1.86 GB of
# uint8 images; reading the extra file holds its 1.63 GB as well, the split a 1.84 GB training copy.
SVHN_MEMORY_HELP = ("1.86 GB of uint8 images held throughout (on the GPU with --device gpu), "
                    "about 3.8 GB of host memory at the peak while loading and splitting")


def _add_recipe_flags(a, d):
    """The paper's recipes (minisd.recipes) and the settings only they needed so far."""
    a("--recipe", choices=list(recipes.RECIPES), default=None,
      help="start from the paper's settings for that run (minisd/recipes.py); flags given beside it "
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
      f"{SVHN_MEMORY_HELP} (default: %(default)s)")
    a("--valid-per-class", type=int, nargs="+", default=d.valid_per_class, metavar="N",
      help="hold out N images of each class, drawn at random, instead of --valid-size random images; "
      "with --svhn-extra two numbers, from train_32x32.mat and from extra_32x32.mat "
      "(the paper's SVHN: 400 200, i.e. 6,000)")
    a("--eval-every", type=int, default=d.eval_every, metavar="N",
      help="also evaluate validation and test error every N steps (a metrics row each; the paper's "
      "SVHN: 200); 0: once per epoch (default: %(default)s)")


def config_from_args(args, argv=None) -> Config:
    """The run's Config: the flags, or with --resume the checkpoint's own config with
    only the flags given on the command line changed (e.g. --epochs to train longer)."""
    if args.resume and args.recipe:
        raise TrainingError("--recipe cannot be used with --resume: a resumed run keeps the settings it "
                            "started with (its config.json); give single flags beside --resume to change them")
    if args.resume:
        try:
            _, meta = load_checkpoint(args.resume)
            values = dict(meta["config"])
        except (CheckpointError, KeyError, TypeError) as e:
            raise TrainingError(f"cannot resume from {args.resume}: {e}") from None
        values.update(given_flags(argv))
        known = {f.name for f in fields(Config)}
        return Config(**{k: v for k, v in values.items() if k in known})
    values = {f.name: getattr(args, f.name) for f in fields(Config) if hasattr(args, f.name)}
    cfg = Config(**resolve_recipe(values, argv))
    if args.out is None:
        cfg.out = os.path.join("runs", f"{cfg.dataset}-d{cfg.depth}-p{cfg.p_last:g}-s{cfg.seed}")
    return cfg


def given_flags(argv=None) -> dict:
    """{config field: value} for the flags written on the command line, defaults left out."""
    given = vars(build_parser(suppress_defaults=True).parse_args(argv))
    given.pop("resume", None)
    given.pop("print_config", None)
    return given


def resolve_recipe(values: dict, argv=None) -> dict:
    """``values`` (every flag, defaults included) with ``values["recipe"]`` applied, then the
    flags written on the command line on top (minisd.recipes.resolve)."""
    known = {f.name for f in fields(Config)}
    given = {k: v for k, v in given_flags(argv).items() if k in known}
    try:
        return recipes.resolve(values, values.get("recipe"), given)
    except ValueError as e:
        raise TrainingError(str(e)) from None


def check_config(cfg: Config):
    """Reject impossible settings with one clear line, before any work is done."""
    if cfg.depth < 8 or (cfg.depth - 2) % 6:
        raise TrainingError(f"--depth must be 6N+2 (20, 32, 44, 56, 110, ..., 1202), got {cfg.depth}")
    if not 0 < cfg.p_last <= 1:
        raise TrainingError(f"--p-last must be in (0, 1], got {cfg.p_last}")
    for name in ("epochs", "batch_size", "eval_batch_size"):
        if getattr(cfg, name) < 1:
            raise TrainingError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.lr <= 0 or cfg.warmup_lr <= 0:
        raise TrainingError("--lr and --warmup-lr must be > 0")
    if cfg.milestones and (sorted(cfg.milestones) != cfg.milestones or cfg.milestones[0] < 0):
        raise TrainingError(f"--milestones must be increasing epoch numbers >= 0, got {cfg.milestones}")
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


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args, argv)
        check_config(cfg)
        if args.print_config:
            print(json.dumps(asdict(cfg), indent=2))
            return 0
        summary = train(cfg, resume=args.resume)
    except (TrainingError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0 if summary is not None else 130


if __name__ == "__main__":
    sys.exit(main())
