"""minisd's CuPy path, on every CI run: the NumPy-backed stand-in without a GPU, CuPy with one.

* A ResNet-8 and a ResNet-110 training step (forward, loss, zero_grad, backward, SGD) on
  the GPU path agree with the NumPy path (float64, fixed gates) to 1e-10.
* ``python -m minisd.train --device gpu`` trains and resumes bit-exactly; every lesson runs
  with ``--quick --device gpu``; ``benchmarks/step_time.py --device gpu`` runs.
* What a step costs on a GPU, counted by the stand-in (tests/support/cupy_standin.py): kernel
  launches per phase of an all-blocks-open ResNet-110 step, and the device -> host syncs,
  with the line each comes from. The counts do not depend on the batch size (checked), so
  they are measured at batch 4. See them with

      python tests/test_gpu_path.py            # ResNet-110; or: python tests/test_gpu_path.py 20

* The targets of issue 14 as their own tests: no sync in a training step (the loss checks
  no label range on the GPU; minisd.train reads the losses every few steps), at most 3,000
  launches per all-open ResNet-110 step (minisd/fast/gpu.py, the fused BN running
  statistics, one flat SGD update and one zero_grad fill): about 2,550 today.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minisd
from minisd import backend, layers, train
from minisd.data.fake import write_fake_cifar10
from minisd.optim import SGD

pytestmark = pytest.mark.gpu

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LESSONS = sorted((ROOT / "lessons").glob("[0-9][0-9]*_*.py"))  # 05b follows 05
PHASES = ("forward", "loss", "zero_grad", "backward", "sgd")
COUNT_BATCH = 4          # counts are the same at batch 128 (see test_counts_do_not_depend_on_the_batch)
MAX_LAUNCHES_110 = 3000  # issue 14: per all-open ResNet-110 training step


def _real_gpu():
    import conftest
    return conftest.REAL_GPU


# ---------------------------------------------------------------------------
# one training step, GPU path against NumPy path
# ---------------------------------------------------------------------------


def training_step(net, opt, loss_fn, x, y):
    logits = net.forward(x)
    loss = loss_fn.forward(logits, y)
    net.zero_grad()
    net.backward(loss_fn.backward())
    opt.step(inactive=net.inactive_parameter_names())
    return logits, loss


@pytest.mark.parametrize("depth", [8, 110])
def test_training_step_matches_numpy(depth, gpu_xp):
    rng = np.random.default_rng(depth)
    x = rng.standard_normal((4, 3, 32, 32))
    y = rng.integers(0, 10, 4)
    results = {}
    for device in ("cpu", "gpu"):
        net = minisd.ResNet(depth, 10, p_last=0.5, dtype=np.float64, seed=0).to(device)
        net.set_gates([i % 3 != 1 for i in range(len(net.blocks))])  # fixed: every third block closed
        opt = SGD(net.parameters(), lr=0.1)
        loss_fn = minisd.SoftmaxCrossEntropy()
        xd, yd = backend.to_device(x, device), backend.to_device(y, device)
        for _ in range(2):  # the second step uses the momentum buffers
            logits, loss = training_step(net, opt, loss_fn, xd, yd)
        assert backend.device_of(logits) == device
        results[device] = dict(logits=logits, loss=loss, **{f"grad {n}": g for n, _, g in net.parameters()},
                               **{f"state {k}": v for k, v in net.state_dict().items()},
                               **{f"momentum {k}": v for k, v in opt.buffers.items() if v is not None})
    cpu, gpu = results["cpu"], results["gpu"]
    assert cpu.keys() == gpu.keys()
    worst = max((minisd.relative_error(np.asarray(cpu[k]), backend.to_numpy(gpu[k])), k) for k in cpu)
    assert worst[0] < 1e-10, f"worst: {worst}"


# ---------------------------------------------------------------------------
# what a step costs: launches and syncs, counted by the stand-in
# ---------------------------------------------------------------------------


def count_step(standin, depth, batch=COUNT_BATCH, gates=None, seed=0, net=None):
    """Counts of the second training step (the first makes the momentum buffers), by phase.
    ``net``: another network to count (on the GPU path) instead of a ResNet of ``depth``."""
    net = net if net is not None else minisd.ResNet(depth, 10, p_last=0.5, seed=seed).to("gpu")
    opt = SGD(net.parameters(), lr=0.01)
    loss_fn = minisd.SoftmaxCrossEntropy()
    rng = np.random.default_rng(seed)
    x = backend.to_device(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32), "gpu")
    y = backend.to_device(rng.integers(0, 10, batch), "gpu")
    if isinstance(net, minisd.ResNet):
        net.set_gates([True] * len(net.blocks) if gates is None else gates)
    training_step(net, opt, loss_fn, x, y)
    phases = {}
    with standin.counting() as phases["forward"]:
        logits = net.forward(x)
    with standin.counting() as phases["loss"]:
        loss_fn.forward(logits, y)
    with standin.counting() as phases["zero_grad"]:
        net.zero_grad()
    with standin.counting() as phases["backward"]:
        net.backward(loss_fn.backward())
    with standin.counting() as phases["sgd"]:
        opt.step(inactive=net.inactive_parameter_names())
    return phases


def total(phases, what="launches"):
    return sum(getattr(c, what) for c in phases.values())


def format_counts(depth, phases, name=None):
    lines = [f"{name or f'ResNet-{depth}, all blocks open'}, batch {COUNT_BATCH} (same at any batch), second step:"]
    lines += [f"  {name:<10} {c.launches:>6} launches  {c.syncs} syncs  {c.uploads} uploads"
              for name, c in phases.items()]
    lines.append(f"  {'step':<10} {total(phases):>6} launches  {total(phases, 'syncs')} syncs  "
                 f"{total(phases, 'uploads')} uploads")
    for name, c in phases.items():
        lines += [f"  sync in {name}: {n} x {site}" for site, n in c.sync_sites.items()]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def resnet110_counts():
    import cupy_standin
    with pytest.MonkeyPatch.context() as mp:
        cupy_standin.install(mp)
        all_open = count_step(cupy_standin, 110)
        net = minisd.ResNet(110, 10, p_last=0.5)
        gates = net.sample_gates(np.random.default_rng(1))
        dropped = count_step(cupy_standin, 110, gates=gates)
    return all_open, dropped, sum(gates) / len(gates)


def test_counts_of_a_resnet110_step(resnet110_counts, capsys):
    """Prints the launches per phase and where every sync comes from (run with -s to see)."""
    all_open, _, _ = resnet110_counts
    with capsys.disabled():
        print("\n" + format_counts(110, all_open))
    assert set(all_open) == set(PHASES)
    assert all(c.launches > 0 for c in all_open.values())
    assert all(c.uploads == 0 for c in all_open.values()), "a step must not copy host arrays to the device"


def test_counts_do_not_depend_on_the_batch(standin):
    small, large = count_step(standin, 8, batch=2), count_step(standin, 8, batch=16)
    assert {k: c.launches for k, c in small.items()} == {k: c.launches for k, c in large.items()}
    assert {k: c.syncs for k, c in small.items()} == {k: c.syncs for k, c in large.items()}


def test_dropped_blocks_launch_fewer_kernels(resnet110_counts, standin):
    all_open, dropped, fraction = resnet110_counts
    assert fraction < 1
    assert total(dropped) < total(all_open)
    # and each closed block saves launches: ResNet-20 with one, then two blocks closed
    counts = [total(count_step(standin, 20, gates=[i not in closed for i in range(9)]))
              for closed in ((), (4,), (4, 7))]
    assert counts[0] > counts[1] > counts[2], counts


def test_target_launches_per_resnet110_step(resnet110_counts):
    all_open, _, _ = resnet110_counts
    assert total(all_open) <= MAX_LAUNCHES_110, format_counts(110, all_open)


def test_a_densenet_step_queues_work_and_never_waits(resnet110_counts, standin, capsys):
    """DenseNet-BC-100 (shared storage) beside ResNet-110: launches per phase, and no sync in a step."""
    phases = count_step(standin, None, net=minisd.DenseNet(100, 12).to("gpu"))
    with capsys.disabled():
        print("\n" + format_counts(None, phases, "DenseNet-BC-100, k=12") + "\n" + format_counts(110, resnet110_counts[0]))
    assert total(phases, "syncs") == 0, format_counts(None, phases, "DenseNet-BC-100")
    assert all(c.uploads == 0 for c in phases.values())


def test_target_no_sync_in_a_model_step(resnet110_counts):
    """forward, loss, zero_grad, backward and SGD queue work and never wait for the device."""
    all_open, _, _ = resnet110_counts
    assert total(all_open, "syncs") == 0, format_counts(110, all_open)


def syncs_in_training_steps(standin, root, tmp_path, images):
    """Syncs of one epoch of ``minisd.train`` steps (no progress bar, no evaluation)."""
    from minisd import train
    cfg = train.Config(dataset="cifar10", data_dir=root, depth=8, epochs=1, batch_size=8, valid_size=0,
                       limit_train=images, seed=0, device="gpu", out=str(tmp_path / f"run{images}"),
                       progress=False)
    run = train.Run(cfg, log=lambda *a: None)
    with standin.counting() as c:
        run.train_epoch(bar=None)
    return run.steps_per_epoch, c


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fake_cifar10(root, n_per_batch=40, seed=0)
    return str(root)


def test_target_no_sync_per_training_step(standin, fake_root, tmp_path):
    """The training loop's steps never wait for the device: an epoch of 6 steps syncs no more
    than one of 3 (reading the sums at the end of the epoch is allowed)."""
    s1, short = syncs_in_training_steps(standin, fake_root, tmp_path, 24)
    s2, long = syncs_in_training_steps(standin, fake_root, tmp_path, 48)
    assert (s1, s2) == (3, 6), f"expected epochs of 3 and 6 steps, got {s1} and {s2}"
    per_step = (long.syncs - short.syncs) / (s2 - s1)
    assert per_step == 0, f"{per_step} syncs per step; in 6 steps:\n{long.summary()}"


# ---------------------------------------------------------------------------
# the training loop reads the losses in batches
# ---------------------------------------------------------------------------


def make_run(root, out, **kw):
    cfg = dict(dataset="cifar10", data_dir=root, depth=8, epochs=1, batch_size=16, valid_size=40, seed=3,
               device="gpu", out=str(out), progress=False, eval_batch_size=64)
    cfg.update(kw)
    run = train.Run(train.Config(**cfg), log=lambda *a: None)
    return run


def test_an_epoch_waits_only_to_read_every_few_steps(fake_root, tmp_path, standin, monkeypatch):
    monkeypatch.setattr(train, "READ_EVERY", 3)
    run = make_run(fake_root, tmp_path)
    assert run.steps_per_epoch == 10
    with standin.counting() as c:
        run.train_epoch()
    # reads after steps 3, 6, 9 and at the end (10): two copies to the host each; then one synchronise
    where = {site.split(" ")[-1]: n for site, n in c.sync_sites.items()}
    assert where == {"(to_numpy)": 4 * 2, "(synchronize)": 1}, c.summary()
    s = run.epoch_sums
    assert s["seen"] == 160 and 0 <= s["wrong"] <= 160 and s["loss"] > 0 and s["steps"] == 10


def test_the_same_sums_as_reading_every_step(fake_root, tmp_path, standin, monkeypatch):
    """Reading in batches changes when the host looks, not what it adds up."""
    sums = []
    for every in (1, train.READ_EVERY):
        monkeypatch.setattr(train, "READ_EVERY", every)
        run = make_run(fake_root, tmp_path / str(every))
        run.train_epoch()
        sums.append({k: v for k, v in run.epoch_sums.items() if k != "seconds"})
    assert sums[0] == sums[1]


def test_a_nan_loss_names_its_step_and_epoch(fake_root, tmp_path, standin, monkeypatch):
    monkeypatch.setattr(train, "READ_EVERY", 4)
    calls = {"n": 0}
    original = layers.SoftmaxCrossEntropy.forward

    def nan_from_step_2(self, logits, labels):
        calls["n"] += 1
        return original(self, logits * np.nan if calls["n"] >= 2 else logits, labels)

    monkeypatch.setattr(layers.SoftmaxCrossEntropy, "forward", nan_from_step_2)
    run = make_run(fake_root, tmp_path)
    with pytest.raises(train.TrainingError, match="loss became nan at epoch 1, step 2;"):
        run.train_epoch()
    assert run.step_in_epoch == 4  # found when the first four steps were read


# ---------------------------------------------------------------------------
# the trace on the GPU path: CUDA events, no wait per call
# ---------------------------------------------------------------------------


def test_trace_times_gpu_calls_with_events(standin):
    net = minisd.ResNet(8, 10, seed=0).to("gpu")
    loss_fn = minisd.SoftmaxCrossEntropy()
    x = backend.to_device(np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32), "gpu")
    y = backend.to_device(np.array([1, 2]), "gpu")
    loss_fn.forward(net.forward(x), y)  # fast_gpu makes its index arrays and buffers on a shape's first call
    net.backward(loss_fn.backward())
    with standin.counting() as untraced:
        loss_fn.forward(net.forward(x), y)
        net.backward(loss_fn.backward())
    with standin.counting() as traced:
        with minisd.trace() as t:
            loss_fn.forward(net.forward(x), y)
            net.backward(loss_fn.backward())
    assert traced.syncs == untraced.syncs + 1, traced.summary()  # one wait for the whole trace
    assert traced.launches == untraced.launches
    assert all(e.seconds >= 0 for e in t.events) and sum(e.seconds for e in t.events) > 0
    loss_backward = [e for e in t.events if e.kind == "SoftmaxCrossEntropy" and e.phase == "backward"]
    assert len(loss_backward) == 1 and loss_backward[0].seconds > 0
    assert "blocks run 3/3" in t.table(net)


# ---------------------------------------------------------------------------
# the stand-in behaves as CuPy does where minisd could go wrong
# ---------------------------------------------------------------------------


def test_standin_refuses_numpy_and_counts(standin):
    a = standin.asarray(np.arange(6.0).reshape(2, 3))
    assert standin.counts().uploads == 1
    for bad in (lambda: a + np.ones(3), lambda: np.ones(3) * a, lambda: np.asarray(a),
                lambda: standin.maximum(a, np.zeros(3))):
        with pytest.raises(TypeError):
            bad()
    with pytest.raises(ValueError):
        a[0] = np.ones(3)  # CuPy will not fill a slice from host memory
    with standin.counting() as c:
        s = (a * 2.0 + np.float32(1)).sum()   # scalars are fine: 2 kernels and a reduction
        b = a[1, 2]                           # a 0-d view: no kernel
        a.T.reshape(-1)                       # a copy: one kernel
    assert (c.launches, c.syncs) == (4, 0)
    assert isinstance(s, standin.ndarray) and s.shape == () and b.shape == () and b.base is a
    assert float(s) == 36.0 and standin.counts().syncs == 1
    assert "test_gpu_path.py" in next(iter(standin.counts().sync_sites))


def test_standin_events_need_a_sync_before_reading(standin):
    start, end = standin.cuda.Event(), standin.cuda.Event()
    start.record()
    end.record()
    with pytest.raises(RuntimeError, match="NotReady"):
        standin.cuda.get_elapsed_time(start, end)
    end.synchronize()
    assert standin.cuda.get_elapsed_time(start, end) >= 0


def test_standin_rng_has_no_permutation(standin):
    rng = standin.random.default_rng(0)
    assert isinstance(rng.random(3), standin.ndarray)
    assert not hasattr(rng, "permutation")


# ---------------------------------------------------------------------------
# whole programs: the training CLI, the lessons, the benchmark
# ---------------------------------------------------------------------------


def run_gpu(args, cwd=ROOT, timeout=300, **env):
    """Run ``python ARGS`` on the GPU path (through tests/support/run_with_standin.py without a GPU)."""
    launcher = [] if _real_gpu() else [str(HERE / "support" / "run_with_standin.py")]
    environ = {**os.environ, **env,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, *launcher, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=environ)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{args} exited with {proc.returncode}:\n{output[-4000:]}"
    assert "Traceback" not in output, output[-4000:]
    return proc.stdout, proc.stderr


def test_train_cli_on_gpu_resumes_bit_exactly(fake_root, tmp_path):
    from minisd.tools.checkpoint import load_checkpoint
    common = ["-m", "minisd.train", "--data-dir", fake_root, "--depth", "8", "--batch-size", "16",
              "--valid-size", "32", "--seed", "3", "--device", "gpu", "--no-progress"]
    out, _ = run_gpu(common + ["--epochs", "2", "--out", str(tmp_path / "straight")])
    assert "device gpu" in out
    run_gpu(common + ["--epochs", "1", "--out", str(tmp_path / "split")])
    out, _ = run_gpu(["-m", "minisd.train", "--resume", str(tmp_path / "split" / "last.npz"), "--epochs", "2",
                      "--no-progress"])
    assert "resumed from" in out and "epoch 2/2" in out
    a, _ = load_checkpoint(tmp_path / "straight" / "last.npz")
    b, _ = load_checkpoint(tmp_path / "split" / "last.npz")
    assert a.keys() == b.keys()
    for k in a:
        if _real_gpu():
            np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7, err_msg=k)
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_runs_on_gpu(lesson, tmp_path):
    out, _ = run_gpu([str(lesson), "--quick", "--device", "gpu", "--out", str(tmp_path)], cwd=lesson.parent)
    assert "device gpu" in out and "Try this" in out


def test_step_time_benchmark_runs_on_gpu():
    out, err = run_gpu([str(ROOT / "benchmarks" / "step_time.py"), "--device", "gpu", "--depth", "8",
                        "--batch-size", "4", "--steps", "2", "--warmup", "1", "--plain-steps", "2"])
    for expected in ("=== ResNet-8", "gpu ===", "SD/const", "Conv2d", "stochastic / constant step time",
                     "plain loop", "peak MB"):
        assert expected in out, f"missing {expected!r} in:\n{out}"


if __name__ == "__main__":  # print the counts: python tests/test_gpu_path.py [depth]
    sys.path.insert(0, str(HERE / "support"))
    import cupy_standin
    cupy_standin.install()
    depth = int(sys.argv[1]) if len(sys.argv) > 1 else 110
    phases = count_step(cupy_standin, depth)
    print(format_counts(depth, phases))
    for name, c in phases.items():
        print(f"\n{name}: the launch sites")
        print("\n".join(f"  {n:>5} {site}" for site, n in c.launch_sites.most_common()))
