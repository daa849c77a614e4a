"""Train the paper's CIFAR ResNets with stochastic depth: ``python -m minisd.train``.

The loop, top to bottom, is the paper's recipe:

    for each epoch:                      lr: 0.1, / 10 at 50% and 75% of the epochs
        for each mini-batch of 128:      shuffled, translated +-4 px, flipped
            net.sample_gates(rng)        block l survives with probability p_l
            loss = CE(net.forward(x))    dropped blocks: shortcut only
            net.backward(dloss)          dropped blocks: shortcut gradient only
            opt.step()                   SGD, Nesterov momentum 0.9, weight decay 1e-4
        evaluate (every block, branch scaled by p_l), log one row, checkpoint

The step and the evaluation are :mod:`minisd.step` (the lessons call them too); this file is
the loop around them. Flags: :mod:`minisd.tools.flags`; the run folder: :mod:`minisd.tools.runs`;
Ctrl-C and SIGTERM (saved at the next step boundary, exit 130 / 143): :mod:`minisd.tools.signals`.
``--resume RUN/last.npz`` continues bit-exactly (same machine, BLAS kernel and thread count).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict
from typing import Optional

import numpy as np
from tqdm import tqdm

from . import backend, data, step
from .fast.switch import reference
from .fast.threads import tune_process
from .optim import SGD, lr_at_epoch
from .step import StopRequested
from .tools.checkpoint import (CheckpointError, RunShape, check_run_checkpoint, file_stamp, prefixed,
                               save_checkpoint, unprefixed)
from .tools.flags import (Config, build_parser, check_config, check_resume, config_from_args,  # noqa: F401
                          network, read_resume_checkpoint)
from .tools.plot import plot_runs
from .tools.run_data import check_data_folder, load_data
from .tools.runs import (RunFolder, TrainingError, carry_best_checkpoint, summarize, write_failed, write_json,
                         write_metrics)
from .tools.signals import SIGNAL_NAMES, Signals, test_hook

# On a GPU, the steps' losses and error counts are read (the host waits for the
# device) once every READ_EVERY steps, when the progress bar is refreshed.
READ_EVERY = 20


def log_line(msg):
    """Print a line now (runs under nohup or tee are block-buffered otherwise)."""
    print(msg, flush=True)


class Run:
    """One training run: data, network, optimizer, RNG and where the loop stands; ``checkpoint``:
    ``(arrays, meta)`` of a checkpoint read once by the caller, to continue from."""

    def __init__(self, cfg: Config, log=log_line, checkpoint=None, checkpoint_path=None):
        self.cfg, self.log = cfg, log
        self.device = backend.resolve_device(cfg.device)
        self.rng = np.random.default_rng(cfg.seed)  # each epoch's shuffle, then each step's augmentation and gates
        (self.x_train, self.y_train), (self.x_valid, self.y_valid), (self.x_test, self.y_test), \
            self.num_classes, self.normalizer = load_data(cfg, self.device, log)
        self.net = network(cfg, self.num_classes).to(self.device)  # the ResNet, or a DenseNet
        self.opt = SGD(self.net.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                       nesterov=cfg.nesterov, dropped=cfg.dropped)
        self.epoch, self.step_in_epoch, self.perm = 0, 0, None
        self.epoch_sums = dict(loss=0.0, wrong=0, seen=0, blocks=0.0, steps=0, seconds=0.0)
        self.metrics, self.best_valid = [], math.inf
        self.stop_requested, self.stop_signal = False, None  # set by Ctrl-C or SIGTERM (tools.signals)
        if checkpoint is not None:
            self.restore(*checkpoint, checkpoint_path)

    @property
    def steps_per_epoch(self):
        return len(self.y_train) // self.cfg.batch_size  # the last partial batch is dropped

    @property
    def iteration(self):
        """SGD steps done since the start of the run (the paper's "iterations")."""
        return self.epoch * self.steps_per_epoch + self.step_in_epoch

    # -- steps and epochs ----------------------------------------------------------

    def train_step(self, idx):
        """One SGD step on the training images ``idx``: (loss, wrong) as unread 0-d device arrays, blocks run."""
        return step.train_step(self.net, self.opt, self.x_train[idx], self.y_train[idx], self.normalizer, self.rng,
                          augment=self.cfg.augment)

    def read_steps(self, unread):
        """Add the ``unread`` steps' (loss, wrong) to the epoch's sums and empty it. On a GPU this is where
        the host waits for the device, once for many steps. A loss that is not finite stops the run."""
        if not unread:
            return
        s, xp = self.epoch_sums, backend.get_xp(*unread[0])
        losses = backend.to_numpy(xp.stack([loss for loss, _ in unread])).tolist()
        wrong = backend.to_numpy(xp.stack([w for _, w in unread])).tolist()
        first = self.step_in_epoch - len(unread)
        for i, (loss, w) in enumerate(zip(losses, wrong)):
            if not math.isfinite(loss):
                kept = (f"the last good checkpoint is {self.path('last.npz')}"
                        if os.path.exists(self.path("last.npz")) else "no checkpoint was written yet")
                raise TrainingError(f"loss became {loss} at epoch {self.epoch + 1}, step {first + i + 1}; "
                                    f"stopped ({kept}). Try a lower --lr or --warmup-epochs.")
            s["loss"] += loss * self.cfg.batch_size
            s["wrong"] += int(w)
        unread.clear()

    def train_epoch(self, bar=None):
        """The rest of this epoch's steps; with --eval-every, a metrics row every N steps."""
        cfg, s = self.cfg, self.epoch_sums
        if self.step_in_epoch == 0:
            self.perm = self.rng.permutation(len(self.y_train))
            self.epoch_sums = s = dict(loss=0.0, wrong=0, seen=0, blocks=0.0, steps=0, seconds=0.0)
        self.opt.lr = lr_at_epoch(self.epoch, base_lr=cfg.lr, epochs=cfg.epochs, milestones=cfg.milestones,
                                  warmup_epochs=cfg.warmup_epochs, warmup_lr=cfg.warmup_lr)
        read_every = 1 if backend.get_xp(self.x_train) is np else READ_EVERY  # reading costs nothing on the CPU
        unread = []  # (loss, wrong) of the steps not read yet
        t_epoch = t_read = time.perf_counter()
        if self.mid_epoch_evaluation_due():  # resumed from a stop that abandoned this step's evaluation
            self.evaluate_and_log(s["seconds"])
        while self.step_in_epoch < self.steps_per_epoch:
            b = self.step_in_epoch
            idx = backend.to_device(self.perm[b * cfg.batch_size:(b + 1) * cfg.batch_size], self.device)
            loss, wrong, blocks = self.train_step(idx)
            unread.append((loss, wrong))
            self.step_in_epoch += 1
            s["seen"], s["blocks"], s["steps"] = s["seen"] + len(idx), s["blocks"] + blocks, s["steps"] + 1
            first_six = self.epoch == 0 and s["steps"] == 6
            if len(unread) >= read_every or first_six:
                steps_read = len(unread)
                self.read_steps(unread)
                now = time.perf_counter()
                if bar is not None:
                    bar.set_postfix(loss=f"{s['loss'] / s['seen']:.3f}", err=f"{s['wrong'] / s['seen']:.3f}",
                                    img_s=f"{steps_read * cfg.batch_size / (now - t_read):.0f}", refresh=False)
                t_read = now
            if bar is not None:
                bar.update(1)
            if first_six:
                self.announce_eta(time.perf_counter() - t_epoch)
            if self.mid_epoch_evaluation_due():
                self.read_steps(unread)
                t_eval = time.perf_counter()  # (at an epoch's end finish_epoch evaluates)
                self.evaluate_and_log(s["seconds"] + t_eval - t_epoch)
                t_epoch += time.perf_counter() - t_eval  # evaluating is not training time
            if self.should_stop():
                self.read_steps(unread)
                s["seconds"] += time.perf_counter() - t_epoch
                raise StopRequested
        self.read_steps(unread)
        backend.synchronize(backend.get_xp(self.x_train))  # every step has run: now the clock means something
        s["seconds"] += time.perf_counter() - t_epoch

    def mid_epoch_evaluation_due(self):
        """--eval-every N: a row is due after every N-th step (not the epoch's last: finish_epoch)."""
        n = self.cfg.eval_every
        return (n and self.iteration % n == 0 and 0 < self.step_in_epoch < self.steps_per_epoch
                and not (self.metrics and self.metrics[-1]["iteration"] == self.iteration))

    def should_stop(self):
        """At a step boundary: has Ctrl-C or SIGTERM asked the run to stop? (Also a test hook.)"""
        test_hook(f"step-{self.epoch + 1}-{self.step_in_epoch}")
        return self.stop_requested

    def announce_eta(self, seconds_for_six_steps):
        per_step = seconds_for_six_steps / 6  # includes the first (slower) steps: errs on the long side
        total = per_step * self.steps_per_epoch * self.cfg.epochs
        when = f"{total:.0f} s" if total < 120 else f"{total / 60:.1f} min" if total < 7200 else f"{total / 3600:.1f} h"
        self.log(f"\nexpected time: {per_step:.2f} s/step, {per_step * self.steps_per_epoch:.0f} s/epoch, "
                 f"{when} for {self.cfg.epochs} epochs (+ evaluation)")

    # -- evaluation and the metrics row ----------------------------------------------

    def evaluate_and_log(self, seconds, end_of_epoch=False):
        """Validation and test error now, one metrics row (built here only; training columns: the
        epoch so far), best.npz at a new best, and at an epoch's end last.npz (which holds the
        metrics too). A stop request abandons the evaluation: --resume evaluates again."""
        cfg, s = self.cfg, self.epoch_sums
        stop = lambda: self.stop_requested  # noqa: E731
        ve, _ = step.evaluate(self.net, self.x_valid, self.y_valid, self.normalizer, batch_size=cfg.eval_batch_size,
                         should_stop=stop)
        te, _ = step.evaluate(self.net, self.x_test, self.y_test, self.normalizer, batch_size=cfg.eval_batch_size,
                         should_stop=stop)
        row = dict(epoch=self.epoch + 1, iteration=self.iteration, lr=self.opt.lr, train_loss=s["loss"] / s["seen"],
                   train_error=s["wrong"] / s["seen"], valid_error=ve, test_error=te, epoch_seconds=seconds,
                   mean_blocks=s["blocks"] / s["steps"], expected_blocks=self.net.expected_blocks())
        valid = "" if math.isnan(ve) else f"valid err {ve:.4f} "  # no validation split: no figure
        if end_of_epoch:
            self.log(f"epoch {self.epoch + 1}/{cfg.epochs}: loss {row['train_loss']:.4f} "
                     f"train err {row['train_error']:.4f} {valid}test err {te:.4f} "
                     f"blocks {row['mean_blocks']:.1f}/{len(self.net.blocks)} ({seconds:.1f} s)")
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
        else:
            self.log(f"step {self.iteration} (epoch {self.epoch + 1}, {self.step_in_epoch}/{self.steps_per_epoch}): "
                     f"{valid}test err {te:.4f}")
        self.metrics.append(row)
        if not math.isnan(ve) and ve < self.best_valid:
            self.best_valid = ve
            self.save("best.npz")  # before last.npz: a run stopped between the two redoes this epoch
        if end_of_epoch:
            self.save("last.npz")
        self.write_file(write_metrics, "metrics.csv", self.metrics)

    def finish_epoch(self):
        self.evaluate_and_log(self.epoch_sums["seconds"], end_of_epoch=True)

    # -- checkpoints ---------------------------------------------------------------

    def path(self, name):
        return os.path.join(self.cfg.out, name)

    def arrays(self):
        """What a checkpoint holds besides the metadata (the table in minisd/tools/checkpoint.py)."""
        arrays = {**prefixed("model", self.net.state_dict()), **prefixed("optim", self.opt.state_dict()),
                  **prefixed("data", self.normalizer.state_dict())}
        return arrays if self.perm is None else {**arrays, "perm": self.perm}

    def save(self, name):
        meta = dict(epoch=self.epoch, step_in_epoch=self.step_in_epoch, best_valid=self.best_valid,
                    rng=self.rng.bit_generator.state, epoch_sums=self.epoch_sums, lr=self.opt.lr,
                    config=asdict(self.cfg), metrics=self.metrics)
        self.write_file(lambda path, _: save_checkpoint(path, self.arrays(), meta,
                                                        on_written=lambda tmp: test_hook(f"save-{name}")), name)

    def write_file(self, write, name, obj=None):
        """``write(path, obj)`` for a file of the run folder; a full disk etc. becomes one line."""
        try:
            write(self.path(name), obj)
        except OSError as e:
            raise TrainingError(write_failed(self.cfg.out, name, e)) from None

    def restore(self, arrays, meta, path):
        """Continue from a checkpoint's ``arrays`` and ``meta`` (read once, by the caller), checked first."""
        try:
            check_run_checkpoint(arrays, meta, RunShape(self.arrays(), len(self.y_train), self.cfg.batch_size,
                                                        self.cfg.epochs, self.rng.bit_generator.state["bit_generator"]))
        except CheckpointError as e:
            raise TrainingError(f"cannot resume from {path}: {e}") from None
        self.net.load_state_dict(unprefixed("model", arrays))
        self.opt.load_state_dict(unprefixed("optim", arrays))
        self.rng.bit_generator.state = meta["rng"]
        self.epoch, self.step_in_epoch = meta["epoch"], meta["step_in_epoch"]
        self.best_valid, self.epoch_sums, self.opt.lr = meta["best_valid"], dict(meta["epoch_sums"]), meta["lr"]
        self.metrics = [dict(r) for r in meta["metrics"]]
        self.epoch_sums.setdefault("seconds", 0.0)
        self.perm = arrays.get("perm") if self.step_in_epoch else None
        self.log(f"resumed from {path} at {self.position()}")

    def position(self):
        """Where the run stands: 'epoch 2, step 5 of 40', 'the end of epoch 3', 'the start'."""
        if self.step_in_epoch:
            return f"epoch {self.epoch + 1}, step {self.step_in_epoch} of {self.steps_per_epoch}"
        return f"the end of epoch {self.epoch}" if self.epoch else "the start"


def train(cfg: Config, resume: Optional[str] = None, log=log_line, overwrite: bool = False,
          signals: Optional[Signals] = None, checkpoint=None, resume_stamp=None):
    """Run (or continue) training; returns the summary dict, or None when stopped by Ctrl-C /
    SIGTERM (last.npz saved). Raises TrainingError on failure.

    ``cfg.out`` must not hold another run unless ``resume`` is a checkpoint in it, or ``overwrite``;
    the run holds it to the end (minisd.tools.runs.RunFolder: a second run on it is refused).
    ``checkpoint``: ``resume``'s ``(arrays, meta)`` if the caller has read it (read here otherwise),
    ``resume_stamp`` the file's stamp from before that read. ``signals``: main()'s Signals, already
    installed (else one is installed for the run). ``cfg.reference``: every layer runs the readable
    code of minisd/functional.py (``with minisd.reference():``): slower, the same numbers.
    """
    if resume and checkpoint is None:
        resume_stamp = file_stamp(resume)  # before the read: a change after it is seen
        checkpoint = read_resume_checkpoint(resume)
        check_resume(cfg, resume, *checkpoint)
    check_data_folder(cfg.data_dir, cfg.dataset, cfg.download, cfg.svhn_extra)  # before anything is said
    with contextlib.ExitStack() as stack:
        signals = signals or stack.enter_context(Signals())
        folder = stack.enter_context(RunFolder(cfg.out, resume, overwrite, checkpoint and checkpoint[1],
                                               resume_stamp, log))  # on failure: what it wrote goes
        if cfg.reference:
            log("--reference: every layer runs the readable code of minisd/functional.py")
            stack.enter_context(reference())
        run = Run(cfg, log, checkpoint, resume)
        del checkpoint  # loaded into the run: free its arrays
        signals.defer_to(run)  # from here on, a signal is honoured at a step boundary
        folder.prepare()
        try:
            run.write_file(write_json, "config.json", asdict(cfg))
            if run.metrics:  # resumed: the history comes along, into another folder too
                run.write_file(write_metrics, "metrics.csv", run.metrics)
            if resume:
                carry_best_checkpoint(resume, cfg.out, run.best_valid, run.epoch)
            log(f"model: {run.net!r}; expected blocks per step {run.net.expected_blocks():.2f}; "
                f"device {run.device}; output {cfg.out}")
            while run.epoch < cfg.epochs:
                if run.stop_requested:
                    raise StopRequested
                bar = tqdm(total=run.steps_per_epoch, initial=run.step_in_epoch, unit="step", leave=False,
                           desc=f"epoch {run.epoch + 1}/{cfg.epochs}", dynamic_ncols=True) if cfg.progress else None
                try:
                    run.train_epoch(bar)
                finally:
                    if bar is not None:
                        bar.close()
                run.finish_epoch()
        except StopRequested:  # honoured between steps only: --resume continues from exactly here
            run.save("last.npz")
            name = SIGNAL_NAMES.get(run.stop_signal or signal.SIGINT)
            log(f"\ninterrupted ({name}): saved {run.path('last.npz')} (at {run.position()}); "
                f"continue with --resume {run.path('last.npz')}")
            return None
        summary = summarize(run.metrics)
        run.write_file(write_json, "summary.json", summary)
        try:
            plot_runs([cfg.out], run.path("curves.png"))
        except Exception as e:  # a missing plotting backend must not fail a finished run
            log(f"(curves.png not written: {e})")
    log(f"done: test error {summary['test_error']:.4f} ({summary['test_error_rule']}); results in {cfg.out}")
    return summary


def main(argv=None):
    """The command line; returns the exit status: 0 done, 1 an error (one line on stderr),
    130 / 143 stopped by Ctrl-C / SIGTERM (last.npz saved, or nothing written before training)."""
    args = build_parser().parse_args(argv)
    tune_process()  # this process is minisd's own: BLAS on one thread, freed memory kept (fast/threads.py)
    with Signals() as signals:  # until training starts, a signal stops at once: nothing written yet
        try:
            stamp = file_stamp(args.resume) if args.resume else None  # before the read: a change after it is seen
            checkpoint = read_resume_checkpoint(args.resume) if args.resume else None  # the one read
            cfg = config_from_args(args, argv, checkpoint and checkpoint[1])
            check_config(cfg)
            if args.print_config:  # the resolved settings, and nothing else: no data, no folder
                print(json.dumps(asdict(cfg), indent=2))
                return 0
            if checkpoint is not None:
                check_resume(cfg, args.resume, *checkpoint)
            summary = train(cfg, args.resume, log_line, args.overwrite, signals, checkpoint, stamp)
        except (TrainingError, data.DataError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt as e:
            signum = getattr(e, "signum", signal.SIGINT)
            print(f"\ninterrupted ({SIGNAL_NAMES.get(signum, signum)}) before training started: "
                  f"nothing was written", file=sys.stderr)
            signals.ignore_further = True
            return 128 + signum
        if summary is None:
            signals.ignore_further = True  # saved and about to exit: a further Ctrl-C must not cut that short
            return 128 + (signals.run.stop_signal or signal.SIGINT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
