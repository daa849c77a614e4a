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
| paper-1202`` sets everything as the paper did for that run (minisd.tools.recipes);
``--print-config`` shows the settings without training. Outputs in the run
folder (``--out``): config.json, metrics.csv (one row per epoch; with
``--eval-every N`` also one every N steps), last.npz and best.npz
checkpoints, summary.json and curves.png (the run folder: minisd.tools.runs).

Faults lose nothing: Ctrl-C and SIGTERM save last.npz at the next step
boundary (further signals wait until it is written) and exit 130 / 143;
``--resume RUN/last.npz`` continues bit-exactly. Every file is written
atomically; a full disk stops the run with one line and keeps the previous
checkpoint. Bad input stops with one line before anything is written, and a
run folder is created only once the run can start.

The step itself - normalise, augment, gates, forward, loss, backward, update -
is minisd.step.train_step, the same function the lessons call.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from typing import Optional

import numpy as np

from . import backend, data, step
from .data import files as data_files
from .tools import recipes
from .tools.checkpoint import (CheckpointError, atomic_write, load_checkpoint, prefixed, remove_orphan_temp_files,
                         save_checkpoint, unprefixed)
from .layers import SoftmaxCrossEntropy
from .model import ResNet
from .optim import SGD, lr_at_epoch
from .tools.plot import plot_runs
from .fast.switch import reference
from .tools.runs import RUN_FILES, read_metrics, summarize, write_json, write_metrics


@dataclass
class Config:
    """Everything a run depends on; saved as config.json in the run folder."""
    dataset: str = "cifar10"           # cifar10 | cifar100 | svhn
    data_dir: str = "data"             # a folder holding the data set (see minisd.data)
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
    valid_size: float = 5000           # images held out: an int count, or a fraction in (0, 1); 0 for none
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


def log_line(msg):
    """Print a line now (runs under nohup or tee are block-buffered otherwise)."""
    print(msg, flush=True)


class TrainingError(Exception):
    """Stops a run with one clear line (bad data, NaN loss, unusable checkpoint)."""


class StopRequested(Exception):
    """Raised at a step boundary after Ctrl-C or SIGTERM: the run saves last.npz and stops."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM before training started (nothing written yet); ``signum`` says which."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


# ---------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------


def evaluate(net, x_uint8, y, normalizer, *, batch_size=500, should_stop=None):
    """Error rate (and mean loss) of ``net`` in eval mode: every block, branch scaled by p_l.

    x_uint8: (N, 3, 32, 32) images on the device, y: (N,) labels, ``batch_size`` images
    at a time. Returns (error, loss) as floats, or (nan, nan) for an empty set.
    ``should_stop``: called between batches; when it returns true, the evaluation
    is abandoned with :class:`StopRequested` (the network is left in training mode).
    """
    if len(y) == 0:
        return math.nan, math.nan
    net.eval()
    loss_fn = SoftmaxCrossEntropy()
    wrong, total_loss = 0, 0.0
    try:
        for i in range(0, len(y), batch_size):
            if should_stop is not None and should_stop():
                raise StopRequested
            logits = net.forward(normalizer.apply(x_uint8[i:i + batch_size], dtype=net.dtype))
            yb = y[i:i + batch_size]
            total_loss += float(loss_fn.forward(logits, yb)) * len(yb)
            wrong += int((logits.argmax(axis=1) != yb).sum())
    finally:
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
        self.stop_requested = False  # set by Ctrl-C or SIGTERM (_Signals); checked between steps
        self.stop_signal = None      # which signal asked first

    def load_files(self):
        """load_dataset with the command line's messages: what to fetch, where to put it, --data-dir."""
        cfg = self.cfg
        elsewhere = "or point --data-dir at a folder that holds it"
        _test_hook("data")
        try:
            return data.load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download, svhn_extra=cfg.svhn_extra,
                                     log=self.log, progress=cfg.progress)
        except data_files.DownloadError as e:
            raise TrainingError(f"{e}, {elsewhere}") from None
        except data.DataNotFoundError as e:
            if cfg.download:
                raise
            parts = [cfg.dataset] + (["svhn-extra"] if cfg.svhn_extra else [])
            files = " and ".join(data_files.where_to_put(r, cfg.data_dir)
                                 for part in parts for r in data_files.RESOURCES[part])
            found = getattr(e, "not_found", str(e))
            raise TrainingError(f"{found}; --no-download: nothing was fetched. Put {files}, {elsewhere}") from None

    def load_data(self):
        cfg = self.cfg
        x_train, y_train, x_test, y_test, self.num_classes = self.load_files()
        if cfg.limit_train:
            x_train, y_train = x_train[:cfg.limit_train], y_train[:cfg.limit_train]
        (x_train, y_train), (x_valid, y_valid) = self.split(x_train, y_train)
        check_valid_share(cfg.valid_size, len(y_train), len(y_valid))
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
            if cfg.valid_per_class:
                raise TrainingError(f"--valid-per-class: {e}") from None
            raise TrainingError(f"--valid-size: {e}; use --valid-size 0 (no validation split) "
                                f"or a fraction such as 0.1") from None

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
            if self.should_stop():
                self.read_steps(unread)
                s["seconds"] = s.get("seconds", 0.0) + time.perf_counter() - t_epoch
                raise StopRequested
        self.read_steps(unread)
        backend.synchronize(xp)  # every step has run: now the clock means something
        s["seconds"] = s.get("seconds", 0.0) + time.perf_counter() - t_epoch

    def should_stop(self):
        """At a step boundary: has Ctrl-C or SIGTERM asked the run to stop? (Also a test hook.)"""
        _test_hook(f"step-{self.epoch + 1}-{self.step_in_epoch}")
        return self.stop_requested

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
        """Evaluate, log a metrics row, write checkpoints. Called after a full epoch.

        A stop request during the evaluation abandons it (StopRequested): last.npz
        then holds the state after the epoch's last step, and --resume evaluates again.
        """
        cfg, s = self.cfg, self.epoch_sums
        stop = lambda: self.stop_requested  # noqa: E731
        ve, _ = evaluate(self.net, self.x_valid, self.y_valid, self.normalizer, batch_size=cfg.eval_batch_size,
                         should_stop=stop)
        te, _ = evaluate(self.net, self.x_test, self.y_test, self.normalizer, batch_size=cfg.eval_batch_size,
                         should_stop=stop)
        row = dict(epoch=self.epoch + 1, iteration=self.iteration, lr=self.opt.lr, train_loss=s["loss"] / s["seen"],
                   train_error=s["wrong"] / s["seen"], valid_error=ve, test_error=te,
                   epoch_seconds=s["seconds"], mean_blocks=s["blocks"] / s["steps"],
                   expected_blocks=self.net.expected_blocks())
        valid = "" if math.isnan(ve) else f"valid err {ve:.4f} "  # no validation split: no figure
        self.log(f"epoch {self.epoch + 1}/{cfg.epochs}: loss {row['train_loss']:.4f} "
                 f"train err {row['train_error']:.4f} {valid}test err {te:.4f} "
                 f"blocks {row['mean_blocks']:.1f}/{len(self.net.blocks)} ({row['epoch_seconds']:.1f} s)")
        self.metrics.append(row)
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        is_best = not math.isnan(ve) and ve < self.best_valid
        if is_best:
            self.best_valid = ve
            self.save("best.npz")  # before last.npz: a run stopped between the two redoes this epoch
        self.save("last.npz")      # it holds the metrics too (metrics.csv is their copy)
        self.write_file(write_metrics, "metrics.csv", self.metrics)

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
        row = dict(epoch=self.epoch + 1, iteration=self.iteration, lr=self.opt.lr, train_loss=s["loss"] / s["seen"],
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
                    config=asdict(self.cfg), metrics=self.metrics)
        try:
            save_checkpoint(self.path(name), arrays, meta, on_written=lambda tmp: _test_hook(f"save-{name}"))
        except OSError as e:
            raise TrainingError(self.write_failed(name, e)) from None

    def write_file(self, write, name, obj):
        """``write(path, obj)`` for a file of the run folder; a full disk etc. becomes one line."""
        try:
            write(self.path(name), obj)
        except OSError as e:
            raise TrainingError(self.write_failed(name, e)) from None

    def write_failed(self, name, e):
        """The line for a run-folder file that could not be written (a full disk, a lost mount)."""
        reason = "no space left on the device" if e.errno in _DISK_FULL else (e.strerror or str(e))
        last = self.path("last.npz")
        if name.endswith(".npz"):
            kept = (f"the previous {self.path(name)} is kept unchanged" if os.path.exists(self.path(name))
                    else "no checkpoint was written")
        else:
            kept = "the checkpoints are unchanged"
        again = f"; free some space, then continue with --resume {last}" if os.path.exists(last) else ""
        return f"cannot write {self.path(name)}: {reason}; {kept}{again}"

    def resume(self, path):
        try:
            arrays, meta = load_checkpoint(path)
            check_checkpoint_fits(arrays, meta, self.cfg, path)
            self.net.load_state_dict(unprefixed("model", arrays))
            self.opt.load_state_dict(unprefixed("optim", arrays))
            rng, epoch, step_in_epoch = meta["rng"], meta["epoch"], meta["step_in_epoch"]
            best_valid, epoch_sums, lr = meta["best_valid"], meta["epoch_sums"], meta["lr"]
        except CheckpointError as e:
            raise TrainingError(f"cannot resume: {e}") from None
        except (KeyError, ValueError, TypeError) as e:
            raise TrainingError(f"cannot resume from {path}: {e}") from None
        self.rng.bit_generator.state = rng
        self.epoch, self.step_in_epoch = epoch, step_in_epoch
        self.best_valid, self.epoch_sums = best_valid, epoch_sums
        self.perm = arrays.get("perm")
        self.opt.lr = lr
        self.metrics = metrics_history(path, meta)
        self.log(f"resumed from {path} at {self.position()}")

    def position(self):
        """Where the run stands: 'epoch 2, step 5 of 40', 'the end of epoch 3', 'the start'."""
        if self.step_in_epoch:
            return f"epoch {self.epoch + 1}, step {self.step_in_epoch} of {self.steps_per_epoch}"
        return f"the end of epoch {self.epoch}" if self.epoch else "the start"


_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def metrics_history(path, meta):
    """The metrics rows of the epochs a checkpoint has finished, to carry over on resume.

    Checkpoints hold them (``meta["metrics"]``: the rows written before it, --eval-every
    rows of the unfinished epoch included); for one written before they did, the
    metrics.csv beside it is read.
    """
    if "metrics" in meta:
        rows = [dict(r) for r in meta["metrics"]]
    else:
        try:
            rows = read_metrics(os.path.join(os.path.dirname(os.path.abspath(path)), "metrics.csv"))
        except (OSError, ValueError):
            rows = []
        rows = [r for r in rows if r["epoch"] <= meta["epoch"]]  # the epochs it finished
    for r in rows:
        r["epoch"] = int(r["epoch"])
        if not math.isnan(r.get("iteration", math.nan)):
            r["iteration"] = int(r["iteration"])
    return rows


def checkpoint_depth(arrays):
    """The depth (6N + 2) of the ResNet whose weights ``arrays`` hold, or None if they hold none."""
    blocks = {k.split(".")[1] for k in arrays if k.startswith("model/blocks.")}
    return 2 * len(blocks) + 2 if blocks else None


def check_checkpoint_fits(arrays, meta, cfg, path=None):
    """One line (TrainingError) when a checkpoint is of another network than ``cfg`` asks for."""
    where = f"cannot resume from {path}: " if path else ""
    depth = checkpoint_depth(arrays)
    if depth is not None and depth != cfg.depth:
        raise TrainingError(f"{where}the checkpoint is a ResNet-{depth}, the flags ask for ResNet-{cfg.depth} "
                            f"(leave out --depth to continue it as it is)")
    fc = arrays.get("model/fc.weight")
    classes = data.NUM_CLASSES.get(cfg.dataset)
    if fc is not None and classes is not None and fc.shape[0] != classes:
        raise TrainingError(f"{where}the checkpoint has {fc.shape[0]} classes, --dataset {cfg.dataset} has {classes} "
                            f"(leave out --dataset to continue it as it is)")


def check_valid_share(valid_size, n_train, n_valid):
    """Refuse a validation split that takes more than half of the training images."""
    if n_valid > n_train:
        raise TrainingError(f"--valid-size {valid_size} holds out {n_valid} of the {n_train + n_valid} training "
                            f"images, leaving {n_train} to train on: use --valid-size 0 (no validation split) "
                            f"or a fraction such as 0.1")


def format_seconds(s):
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def train(cfg: Config, resume: Optional[str] = None, log=log_line, overwrite: bool = False):
    """Run (or continue) training; returns the summary dict, or None when stopped by Ctrl-C / SIGTERM
    (last.npz saved). Raises TrainingError on failure.

    ``cfg.out`` must not hold another run (refused) unless ``resume`` is a checkpoint
    in it, or ``overwrite`` (the earlier run's files are removed). With ``cfg.reference``
    every layer runs the readable code of minisd/functional.py (``with minisd.reference():``),
    never the CPU fast path: slower, the same numbers to rounding.
    """
    return _train(cfg, resume, log, overwrite)[0]


def _train(cfg, resume, log, overwrite, signals=None):
    """train(), returning (summary or None, the signal that stopped the run or None)."""
    if cfg.reference:
        log("--reference: every layer runs the readable code of minisd/functional.py")
        with reference():
            return _run(cfg, resume, log, overwrite, signals)
    return _run(cfg, resume, log, overwrite, signals)


def _run(cfg, resume, log, overwrite, signals=None):
    """The run itself, for :func:`_train`.

    ``signals``: main()'s :class:`_Signals`, already installed; without it, one is
    installed for the training (and the earlier handlers restored after it).
    """
    check_out_folder(cfg.out, resume, overwrite)  # before the data is loaded: fail fast, write nothing
    run = Run(cfg, log=log)
    if resume:
        run.resume(resume)
        check_not_finished(run, resume)
    bar_factory = _progress_bar if cfg.progress else (lambda *a, **k: None)
    with contextlib.ExitStack() as stack:
        if signals is None:
            signals = stack.enter_context(_Signals())
        signals.defer_to(run)  # from here on, a signal is honoured at a step boundary
        created = prepare_run_folder(cfg.out, resume, overwrite, log)
        try:
            try:
                run.write_file(write_json, "config.json", asdict(cfg))
                if run.metrics:  # resumed: the history comes along, into another folder too
                    run.write_file(write_metrics, "metrics.csv", run.metrics)
                if resume:
                    carry_best_checkpoint(resume, run)
                log(f"model: {run.net!r}; expected blocks per step {run.net.expected_blocks():.2f}; "
                    f"device {run.device}; output {cfg.out}")
                while run.epoch < cfg.epochs:
                    if run.stop_requested:
                        raise StopRequested
                    bar = bar_factory(run.steps_per_epoch, run.step_in_epoch,
                                      f"epoch {run.epoch + 1}/{cfg.epochs}")
                    try:
                        run.train_epoch(bar)
                    finally:
                        if bar is not None:
                            bar.close()
                    run.finish_epoch()
            except StopRequested:
                # honoured between steps only, so the saved state is consistent:
                # --resume continues from exactly here, mid-epoch included
                run.save("last.npz")
                signum = run.stop_signal or signal.SIGINT
                log(f"\ninterrupted ({_SIGNAL_NAMES.get(signum, signum)}): saved {run.path('last.npz')} "
                    f"(at {run.position()}); continue with --resume {run.path('last.npz')}")
                return None, signum
        except BaseException:
            if created:
                remove_unstarted_run(cfg.out)
            raise
        summary = summarize(run.metrics)
        run.write_file(write_json, "summary.json", summary)
        try:
            plot_runs([cfg.out], run.path("curves.png"))
        except Exception as e:  # a missing plotting backend must not fail a finished run
            log(f"(curves.png not written: {e})")
    log(f"done: test error {summary['test_error']:.4f} ({summary['test_error_rule']}); results in {cfg.out}")
    return summary, None


# ---------------------------------------------------------------------------
# the run folder
# ---------------------------------------------------------------------------


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_out_folder(out, resume=None, overwrite=False):
    """Can a run write to ``out``? One line (TrainingError) when not; nothing is created.

    ``out`` must be a folder that exists and is writable, or one that can be
    created. It must not hold another run (any of RUN_FILES) unless that run is
    the one resumed (``resume`` is a checkpoint in ``out`` that is not behind
    ``out/last.npz``) or ``overwrite`` is given.
    """
    if os.path.isdir(out):
        if not os.access(out, os.W_OK | os.X_OK):
            raise TrainingError(f"cannot write to the run folder {out}: permission denied (choose another --out)")
        existing = [n for n in RUN_FILES if os.path.lexists(os.path.join(out, n))]
        if not existing or overwrite:
            return
        last = os.path.join(out, "last.npz")
        if resume and _same_file(os.path.dirname(os.path.abspath(resume)), out):
            check_not_behind(resume, last, out)
            return
        again = f"continue it with --resume {last}, " if os.path.exists(last) else ""
        raise TrainingError(f"{out} already holds a run ({', '.join(existing)}): {again}pass --overwrite to "
                            f"replace it, or choose another --out")
    if os.path.lexists(out):
        raise TrainingError(f"--out {out} is a file, not a folder")
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise TrainingError(f"cannot create the run folder {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TrainingError(f"cannot create the run folder {out}: {parent} is not writable (choose another --out)")


def check_not_behind(resume, last, out):
    """Resuming from ``resume`` (say best.npz) in its own folder must not replace a ``last`` further along."""
    if not os.path.exists(last) or _same_file(resume, last):
        return
    try:
        _, mine = load_checkpoint(resume)
        _, theirs = load_checkpoint(last)
        ahead = (theirs["epoch"], theirs["step_in_epoch"]) > (mine["epoch"], mine["step_in_epoch"])
    except (CheckpointError, KeyError, TypeError):
        return  # a damaged last.npz: resuming from another checkpoint is the way out
    if ahead:
        raise TrainingError(f"{last} is further along (epoch {theirs['epoch'] + (theirs['step_in_epoch'] > 0)}) "
                            f"than {resume} (epoch {mine['epoch'] + (mine['step_in_epoch'] > 0)}): continuing "
                            f"here would replace it; give another --out to branch off, or --overwrite")


def check_not_finished(run, resume):
    if run.epoch >= run.cfg.epochs:
        raise TrainingError(_finished(resume, run.epoch, run.cfg.epochs))


def _finished(path, done, epochs):
    return (f"{path} has already run {done} epoch{'s' if done != 1 else ''} (--epochs {epochs}): "
            f"pass a larger --epochs to train longer")


def prepare_run_folder(out, resume, overwrite, log):
    """Create ``out`` (or clear it with ``overwrite``) and remove orphan temporary files; returns
    whether the folder was created here. Called once the run can start (data loaded, model built)."""
    check_out_folder(out, resume, overwrite)
    created = not os.path.isdir(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise TrainingError(f"cannot create the run folder {out}: {e.strerror or e}") from None
    if overwrite:
        old = [n for n in RUN_FILES if os.path.lexists(os.path.join(out, n))
               and not (resume and _same_file(os.path.join(out, n), resume))]
        for n in old:
            os.remove(os.path.join(out, n))
        if old:
            log(f"--overwrite: removed the earlier run's {', '.join(old)} from {out}")
    orphans = remove_orphan_temp_files(out)
    if orphans:
        log(f"removed {len(orphans)} unfinished temporary file(s) left in {out} by an interrupted save")
    return created


def remove_unstarted_run(out):
    """After a failure: remove a run folder created by this run, unless it holds a checkpoint."""
    if os.path.exists(os.path.join(out, "last.npz")):
        return  # resumable: keep everything
    for n in RUN_FILES:
        try:
            os.remove(os.path.join(out, n))
        except OSError:
            pass
    remove_orphan_temp_files(out)
    try:
        os.rmdir(out)  # only if empty: files of anyone else stay
    except OSError:
        pass


def carry_best_checkpoint(resume, run):
    """Resumed into another folder: copy the source run's best.npz along when it is this run's best."""
    src = os.path.join(os.path.dirname(os.path.abspath(resume)), "best.npz")
    dst = run.path("best.npz")
    if not os.path.exists(src) or os.path.exists(dst) or _same_file(os.path.dirname(src), run.cfg.out):
        return
    try:
        _, meta = load_checkpoint(src)
        if meta.get("best_valid") != run.best_valid or meta.get("epoch", math.inf) > run.epoch:
            return
        with open(src, "rb") as f:
            atomic_write(dst, lambda out: shutil.copyfileobj(f, out))
    except CheckpointError:
        return
    except OSError as e:
        raise TrainingError(run.write_failed("best.npz", e)) from None


# ---------------------------------------------------------------------------
# signals
# ---------------------------------------------------------------------------

_SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # SIGTERM exists on Windows too (sent by nothing there)


class _Signals:
    """SIGINT (Ctrl-C) and SIGTERM (kill, job schedulers, containers) while a run is set up and trained.

    Until :meth:`defer_to` is called - while flags are checked and the data
    loads - a signal stops at once (:class:`Interrupted`): nothing has been
    written yet. From then on a signal only asks the run to stop: the loop
    saves last.npz at the next step boundary (or abandons an epoch's
    evaluation) and the command exits with 128 + the signal number. Further
    signals are recorded the same way, so none can cut a step, a save or the
    exit short. On leaving, the earlier handlers come back - or, with
    ``ignore_further`` (the command is about to exit after a signal), further
    signals stay ignored.
    """

    def __init__(self):
        self.run, self.previous, self.ignore_further, self.raised = None, {}, False, False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for s in _STOP_SIGNALS:
                self.previous[s] = signal.signal(s, self.handle)
        return self

    def defer_to(self, run):
        self.run = run

    def handle(self, signum, frame):
        run = self.run
        if run is None:
            if not self.raised:  # once: a second signal must not interrupt the first one's way out
                self.raised = True
                raise Interrupted(signum)
            return
        if run.stop_requested:
            return
        run.stop_requested, run.stop_signal = True, signum
        # os.write, not print: a handler may run in the middle of another print
        msg = f"\n{_SIGNAL_NAMES.get(signum, signum)}: saving a checkpoint at the end of this step, then stopping\n"
        try:
            os.write(sys.stderr.fileno(), msg.encode())
        except (OSError, ValueError, AttributeError):
            pass

    def __exit__(self, *exc):
        for s, h in self.previous.items():
            signal.signal(s, signal.SIG_IGN if self.ignore_further else h)
        return False


def _test_hook(point):
    """For tests only: with $MINISD_TEST_HOOKS naming a folder, stop at ``point`` when asked.

    A file ``pause-<point>`` in that folder asks for it (once): the run creates
    ``at-<point>`` there and, when the pause file says ``wait``, waits until
    ``go-<point>`` appears. Points: ``step-<epoch>-<step>`` (a step boundary)
    and ``save-<name>`` (a checkpoint written, not yet renamed into place).
    """
    folder = os.environ.get("MINISD_TEST_HOOKS")
    if not folder:
        return
    trigger = os.path.join(folder, f"pause-{point}")
    try:
        with open(trigger) as f:
            mode = f.read().strip()
        os.remove(trigger)
    except OSError:
        return
    with open(os.path.join(folder, f"at-{point}"), "w") as f:
        f.write(str(os.getpid()))
    deadline = time.monotonic() + 600
    while mode == "wait" and not os.path.exists(os.path.join(folder, f"go-{point}")):
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)


def _progress_bar(total, initial, desc):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="step", leave=False, dynamic_ncols=True)


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def _valid_size(s):
    """--valid-size: an integer is a count (0: none), a number in (0, 1) a fraction; anything else is refused."""
    try:
        n = int(s)
    except ValueError:
        pass
    else:
        if n < 0:
            raise argparse.ArgumentTypeError(f"must be a count >= 0 or a fraction in (0, 1), got {s}")
        return n
    try:
        v = float(s)
    except ValueError:
        v = math.nan
    if v == 0:
        return 0
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"must be an integer count (e.g. 5000) or a fraction in (0, 1) "
                                         f"(e.g. 0.1), got {s}")
    return v


class _OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block): 'error: argument --lr: ...'."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser(suppress_defaults=False):
    """The CLI. With ``suppress_defaults`` only flags written on the command line are set."""
    d = Config()
    p = _OneLineParser(
        prog="python -m minisd.train", allow_abbrev=False,
        description="Train a CIFAR ResNet with stochastic depth (defaults: the paper's CIFAR-10 run).")

    def a(*flags, **kwargs):
        if suppress_defaults:
            kwargs["default"] = argparse.SUPPRESS
        p.add_argument(*flags, **kwargs)

    a("--dataset", choices=["cifar10", "cifar100", "svhn"], default=d.dataset, help="(default: %(default)s)")
    a("--data-dir", default=d.data_dir, help="folder holding the data set (default: %(default)s)")
    a("--download", action="store_true", default=d.download,
      help="download the data set into --data-dir if it is missing (the default): the official files, "
      "MD5 checked, moved into place only when complete")
    a("--no-download", dest="download", action="store_false",
      help="never download: if the data set is missing, stop and say which file to put where")
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
      "a fraction (e.g. 0.1), 0 means none; at most half of the training images (default: %(default)s)")
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
    return p


# SVHN with extra, computed (README, "The paper's recipes"): 604,388 x 3 x 32 x 32 bytes = 1.86 GB of
# uint8 images; reading the extra file holds its 1.63 GB as well, the split a 1.84 GB training copy.
SVHN_MEMORY_HELP = ("1.86 GB of uint8 images held throughout (on the GPU with --device gpu), "
                    "about 3.8 GB of host memory at the peak while loading and splitting")


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
    only the flags given on the command line changed (e.g. --epochs to train longer),
    and the checkpoint's folder as --out unless --out is given."""

    if args.resume and args.recipe:
        raise TrainingError("--recipe cannot be used with --resume: a resumed run keeps the settings it "
                            "started with (its config.json); give single flags beside --resume to change them")
    if args.resume:
        try:
            _, meta = load_checkpoint(args.resume)
            values = dict(meta["config"])
        except CheckpointError as e:
            raise TrainingError(f"cannot resume: {e}") from None
        except (KeyError, TypeError, ValueError):
            raise TrainingError(f"cannot resume from {args.resume}: not a checkpoint of python -m minisd.train "
                                f"(it has no config)") from None
        given = given_flags(argv)
        values.update(given)
        if "out" not in given:
            values["out"] = os.path.dirname(args.resume) or "."
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
    if not isinstance(cfg.depth, int) or cfg.depth < 8 or (cfg.depth - 2) % 6:
        raise TrainingError(f"--depth must be 6N+2 (20, 32, 44, 56, 110, ..., 1202), got {cfg.depth}")
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
    v = cfg.valid_size
    if isinstance(v, bool) or not (isinstance(v, int) and v >= 0 or isinstance(v, float) and (v == 0 or 0 < v < 1)):
        raise TrainingError(f"--valid-size must be an integer count (e.g. 5000) or a fraction in (0, 1) "
                            f"(e.g. 0.1), got {v}")
    ms = cfg.milestones
    if ms and (any(b <= a for a, b in zip(ms, ms[1:])) or ms[0] < 0 or ms[-1] >= cfg.epochs):
        raise TrainingError(f"--milestones must be increasing epoch numbers in 0..{cfg.epochs - 1} "
                            f"(lr is divided after each), got {' '.join(map(str, ms))}")
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


def check_resume(cfg: Config, path):
    """Before the data is loaded: the checkpoint fits the network the flags describe and has epochs left."""
    try:
        arrays, meta = load_checkpoint(path)
        epoch = meta["epoch"]
    except CheckpointError as e:
        raise TrainingError(f"cannot resume: {e}") from None
    except KeyError:
        raise TrainingError(f"cannot resume from {path}: not a checkpoint of python -m minisd.train") from None
    check_checkpoint_fits(arrays, meta, cfg, path)
    if epoch >= cfg.epochs:
        raise TrainingError(_finished(path, epoch, cfg.epochs))


def main(argv=None):
    """The command line; returns the exit status: 0 done, 1 an error (one line on stderr),
    130 / 143 stopped by Ctrl-C / SIGTERM (last.npz saved, or nothing written before training)."""
    args = build_parser().parse_args(argv)
    with _Signals() as signals:  # until training starts, a signal stops at once: nothing written yet
        try:
            cfg = config_from_args(args, argv)
            check_config(cfg)
            if args.print_config:  # the resolved settings, and nothing else: no data, no folder
                print(json.dumps(asdict(cfg), indent=2))
                return 0
            if args.resume:
                check_resume(cfg, args.resume)
            check_out_folder(cfg.out, args.resume, args.overwrite)
            summary, signum = _train(cfg, args.resume, log_line, args.overwrite, signals)
        except (TrainingError, data.DataError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt as e:
            signum = getattr(e, "signum", signal.SIGINT)
            print(f"\ninterrupted ({_SIGNAL_NAMES.get(signum, signum)}) before training started: "
                  f"nothing was written", file=sys.stderr)
            signals.ignore_further = True
            return 128 + signum
        if summary is None:
            signals.ignore_further = True  # saved and about to exit: a further Ctrl-C must not cut that short
            return 128 + signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
