"""Every field of a checkpoint is checked before use (issue 29, item 3): a checkpoint doctored in one
field - weights, buffers, optimizer state, the loop state (epoch, step, shuffle order, RNG state,
sums), the metrics, the normaliser - is refused by ``--resume`` with one line that names the field,
and the file is left as it was. The checks: minisd.tools.checkpoint.check_run_checkpoint."""
import copy
import os

import numpy as np
import pytest

from minisd import train
from minisd.data.fake import write_fake_cifar10
from minisd.tools import checkpoint
from minisd.tools.checkpoint import CheckpointError, check_run_checkpoint, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """(arrays, meta) of a ResNet-8 run stopped in its second epoch, after step 1 of 3 (48 images, batches
    of 16): every field is in use when it resumes (the shuffle order and the epoch's sums included)."""
    root = tmp_path_factory.mktemp("data")
    write_fake_cifar10(root, n_per_batch=20, seed=0, n_test=20)
    out = tmp_path_factory.mktemp("stopped") / "run"
    argv = ["--data-dir", str(root), "--depth", "8", "--epochs", "3", "--batch-size", "16", "--limit-train", "48",
            "--valid-size", "0", "--eval-batch-size", "40", "--device", "cpu", "--out", str(out), "--no-progress"]
    original, calls = train.Run.train_step, {"n": 0}

    def stop_after_4(self, idx):
        result = original(self, idx)
        calls["n"] += 1
        self.stop_requested = calls["n"] == 4
        return result
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train.Run, "train_step", stop_after_4)
        assert train.main(argv) == 130
    arrays, meta = load_checkpoint(out / "last.npz")
    assert (meta["epoch"], meta["step_in_epoch"], meta["epoch_sums"]["seen"]) == (1, 1, 16) and "perm" in arrays
    return arrays, meta


def doctored(stopped, tmp_path, doctor):
    arrays, meta = copy.deepcopy(stopped)
    doctor(arrays, meta)
    folder = tmp_path / "run"
    save_checkpoint(folder / "last.npz", arrays, meta)
    return folder / "last.npz"


def resume(path, capsys, *extra):
    """``--resume path``: (exit status, stderr lines, stdout)."""
    capsys.readouterr()
    code = train.main(["--resume", str(path), "--no-progress", *extra])
    out, err = capsys.readouterr()
    return code, [l for l in err.splitlines() if l.strip()], out


def setter(where, key, value):
    """A doctor that sets ``meta[where][key]`` (``where`` None: ``meta[key]``; an array name: ``arrays[key]``)."""
    def doctor(arrays, meta):
        if where == "arrays":
            arrays[key] = value(arrays[key]) if callable(value) else value
        else:
            (meta if where is None else meta[where])[key] = value
    return doctor


def dropper(where, key):
    def doctor(arrays, meta):
        del (arrays if where == "arrays" else meta if where is None else meta[where])[key]
    return doctor


def first(prefix, arrays):
    return next(k for k in sorted(arrays) if k.startswith(prefix))


def on_first(prefix, change):
    """A doctor that changes the first array whose name starts with ``prefix``."""
    def doctor(arrays, meta):
        name = first(prefix, arrays)
        arrays[name] = change(arrays[name].copy())
    return doctor


def with_value(value, at=0):
    def change(a):
        a.reshape(-1)[at] = value
        return a
    return change


CASES = [  # (id, doctor, extra flags, what the one line must say)
    # the shuffle order, used to continue mid-epoch
    ("perm floats", setter("arrays", "perm", lambda p: p.astype(np.float64)), [], "perm must hold integers"),
    ("perm 2-d", setter("arrays", "perm", lambda p: p.reshape(-1, 1)), [], "shuffle order (perm) must be 48"),
    ("perm short", setter("arrays", "perm", lambda p: p[:-1]), [], "shuffle order (perm) must be 48"),
    ("perm repeats", setter("arrays", "perm", lambda p: np.where(p == p[1], p[0], p)), [],
     "must be a permutation of 0..47"),
    ("perm negative", setter("arrays", "perm", lambda p: p - 1), [], "perm must hold integers >= 0"),
    ("perm missing", dropper("arrays", "perm"), [], "shuffle order (perm) must be 48 integers"),
    ("perm of other images", lambda a, m: None, ["--limit-train", "64"], "shuffle order (perm) must be 64"),
    # where the run stands
    ("step a string", setter(None, "step_in_epoch", "1"), [], "step_in_epoch must be an integer >= 0"),
    ("step a float", setter(None, "step_in_epoch", 1.0), [], "step_in_epoch must be an integer >= 0"),
    ("step negative", setter(None, "step_in_epoch", -1), [], "step_in_epoch must be an integer >= 0"),
    ("step past the epoch", setter(None, "step_in_epoch", 4), [], "step_in_epoch must be at most the 3 steps"),
    ("epoch negative", setter(None, "epoch", -1), [], "epoch must be an integer >= 0"),
    ("epoch a bool", setter(None, "epoch", True), [], "epoch must be an integer >= 0"),
    # the generator
    ("rng another generator", setter("rng", "bit_generator", "MT19937"), [], "rng must be a PCG64 state"),
    ("rng not a state", setter(None, "rng", [1, 2]), [], "rng must be a bit generator's state"),
    ("rng state too large", lambda a, m: m["rng"]["state"].update(state=2 ** 130), [], "rng state and inc"),
    ("rng inc even", lambda a, m: m["rng"]["state"].update(inc=2), [], "rng inc must be odd"),
    ("rng has_uint32 7", setter("rng", "has_uint32", 7), [], "rng has_uint32 must be 0 or 1"),
    ("rng uinteger negative", setter("rng", "uinteger", -1), [], "rng uinteger must be an integer"),
    # the epoch's sums
    ("sums seen 0", setter("epoch_sums", "seen", 0), [], "epoch_sums wrong must be <= seen"),
    ("sums steps 0", lambda a, m: m["epoch_sums"].update(steps=0, seen=0, wrong=0), [], "epoch_sums must count"),
    ("sums loss nan", setter("epoch_sums", "loss", float("nan")), [], "epoch_sums loss must be a number"),
    ("sums wrong a float", setter("epoch_sums", "wrong", 1.5), [], "epoch_sums wrong must be an integer"),
    ("sums missing", dropper("epoch_sums", "blocks"), [], "epoch_sums must hold"),
    ("sums of other batches", lambda a, m: None, ["--batch-size", "8"], "batches of 8 (--batch-size"),
    # the other numbers of the loop
    ("best_valid nan", setter(None, "best_valid", float("nan")), [], "best_valid must be in [0, 1] or inf"),
    ("best_valid a string", setter(None, "best_valid", "0.5"), [], "best_valid must be in [0, 1] or inf"),
    ("lr 0", setter(None, "lr", 0), [], "its lr must be a number > 0"),
    ("config a list", setter(None, "config", []), [], "config must be a JSON object"),
    ("rng missing", dropper(None, "rng"), [], "metadata must hold"),
    ("metrics a dict", setter(None, "metrics", {}), [], "metrics must be a list of rows"),
    ("metrics row without test error", lambda a, m: m["metrics"][0].pop("test_error"), [],
     "metrics row 1 must hold numbers: test_error"),
    ("metrics from the future", lambda a, m: m["metrics"][0].update(epoch=5), [], "metrics epochs must rise"),
    ("metrics ahead of the checkpoint", lambda a, m: (m["metrics"].append(dict(m["metrics"][0], epoch=2)),
                                                      m.update(step_in_epoch=0)), [],
     "metrics must end at the checkpoint's epoch"),  # (at an epoch's end no row of the next epoch exists)
    # weights, buffers, the optimizer, the normaliser
    ("weights of text", setter("arrays", "model/fc.weight", np.array(["a", "b"])), [], "must hold real numbers"),
    ("weights complex", setter("arrays", "model/fc.weight", lambda w: w.astype(np.complex64)), [],
     "model/fc.weight must hold real numbers"),
    ("weights nan", on_first("model/fc.weight", with_value(np.nan)), [], "model/fc.weight must be finite"),
    ("weights of another shape", setter("arrays", "model/fc.weight", lambda w: w[:, :-1]), [],
     "model/fc.weight must be floats of shape"),
    ("weights missing", dropper("arrays", "model/fc.bias"), [], "arrays must be this network's"),
    ("an unknown array", setter("arrays", "model/extra.weight", np.zeros(3)), [], "arrays must be this network's"),
    ("a negative variance", lambda a, m: a.update({k: -np.ones_like(v) for k, v in a.items()
                                                   if k.endswith("running_var")}), [], "running_var must be >= 0"),
    ("momentum buffer inf", on_first("optim/momentum_buffer/", with_value(np.inf)), [], "must be finite"),
    ("momentum buffer of another shape", on_first("optim/momentum_buffer/", lambda b: b.reshape(-1)[:-1]), [],
     "must be floats of shape"),
    ("optimizer lr 0", setter("arrays", "optim/lr", np.array(0.0)), [], "optim/lr must be > 0"),
    ("optimizer steps negative", setter("arrays", "optim/num_steps", np.array(-3)), [],
     "optim/num_steps must hold integers >= 0"),
    ("optimizer steps floats", on_first("optim/step/", lambda s: s.astype(np.float64)), [],
     "must hold integers >= 0"),
    ("normaliser std 0", setter("arrays", "data/std", np.array(0.0)), [], "data/std must be > 0"),
    ("normaliser of another shape", setter("arrays", "data/mean", lambda m: m[:2]), [],
     "data/mean must be floats of shape"),
]


@pytest.mark.parametrize("doctor,extra,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_doctored_field_is_one_line_and_the_file_is_untouched(doctor, extra, message, stopped, tmp_path, capsys):
    path = doctored(stopped, tmp_path, doctor)
    before, names = path.read_bytes(), sorted(os.listdir(path.parent))
    code, err, out = resume(path, capsys, *extra)
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"error: cannot resume from {path}: its ") and message in err[0], err
    assert "resumed from" not in out and "Traceback" not in "".join(err)
    assert path.read_bytes() == before and sorted(os.listdir(path.parent)) == names  # nothing written


def test_the_undoctored_checkpoint_resumes(stopped, tmp_path, capsys):
    """The harness itself: a copy written the same way, with no field changed, continues to the end."""
    path = doctored(stopped, tmp_path, lambda arrays, meta: None)
    code, err, out = resume(path, capsys)
    assert code == 0, err
    assert "resumed from" in out and "at epoch 2, step 1 of 3" in out and "epoch 3/3" in out


def test_at_an_epochs_end_the_order_and_sums_are_not_used(stopped, tmp_path, capsys):
    """At step 0 the next epoch draws its own order and starts its own sums: a checkpoint without them is fine."""
    def at_epoch_end(arrays, meta):
        del arrays["perm"]
        meta.update(step_in_epoch=0, epoch_sums=dict(loss=0.0, wrong=0, seen=0, blocks=0.0, steps=0, seconds=0.0))
    code, err, out = resume(doctored(stopped, tmp_path, at_epoch_end), capsys)
    assert code == 0, err
    assert "at the end of epoch 1" in out


def test_each_metadata_field_is_required_alone(stopped):
    _, meta = stopped
    for key in checkpoint.META_FIELDS:
        less = {k: v for k, v in meta.items() if k != key}
        with pytest.raises(CheckpointError, match=f"no {key}"):
            check_run_checkpoint({}, less)
    check_run_checkpoint(*stopped)  # the whole checkpoint passes the checks of its fields alone
