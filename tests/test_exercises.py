"""The exercises (lessons/exercises/NN_*.py): stubs fail, --solution passes, wrong code is caught, hints on request.

Each exercise is run as a learner runs it, in a subprocess from the repository root: as shipped
(every function a stub) it must exit non-zero saying "not written yet", with the details of the
first case only and no hint text; ``--hint`` prints hint 1 for the first failing case and a
number past its last hint gets one line; with ``--solution`` it runs the same checks on
lessons/solutions/NN_*.py and must exit 0. Then the checks themselves are tested: each
exercise's cases are imported and run on deliberately wrong functions (the worked solution with
one classic mistake), which must be reported as wrong, with the diagnosis the exercise promises,
printed for the first failing case and for no other. Lesson 00 runs in --quick mode.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXERCISES_DIR = ROOT / "lessons" / "exercises"
SOLUTIONS_DIR = ROOT / "lessons" / "solutions"
EXERCISES = sorted(EXERCISES_DIR.glob("[0-9][0-9]_*.py"))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def run(*args, timeout=120):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=ENV)
    return proc.returncode, proc.stdout + proc.stderr


def test_at_least_six_exercises_each_with_a_solution():
    assert len(EXERCISES) >= 6, [p.name for p in EXERCISES]
    for p in EXERCISES:
        assert (SOLUTIONS_DIR / p.name).is_file(), f"no worked solution for {p.name}"
        assert 'raise NotImplementedError("not written yet")' in p.read_text(), f"{p.name} has no stub"


def all_hints(exercise):
    """Every hint text of every case of ``exercise`` (a path)."""
    module, _ = load(exercise.stem)
    return [h for _, hints, _ in module.cases.cases for h in hints]


@pytest.mark.parametrize("exercise", EXERCISES, ids=[p.stem for p in EXERCISES])
def test_stub_fails_saying_not_written_yet(exercise):
    rc, output = run(exercise)
    assert rc != 0, f"{exercise.name} passed on its stubs:\n{output[-3000:]}"
    assert "not written yet" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    # the details of the first case only: one "raises NotImplementedError" line, not one per case
    assert output.count("raises NotImplementedError") == 1, output[-3000:]
    module, _ = load(exercise.stem)        # named by the stub that raised, not by the case that called it
    assert f"{module.cases.function_names[0]} raises NotImplementedError" in output, output[-3000:]
    assert "[1/" in output and "<- the first that fails" in output.splitlines()[1], output[-3000:]
    # and no hint unless asked: only the pointer to --hint
    shown = [h for h in all_hints(exercise) if h in output]
    assert not shown, f"{exercise.name} printed hints nobody asked for: {shown}"
    assert "--hint" in output


@pytest.mark.parametrize("exercise", EXERCISES, ids=[p.stem for p in EXERCISES])
def test_solution_passes(exercise):
    rc, output = run(exercise, "--solution")
    assert rc == 0, f"{exercise.name} --solution exited with {rc}:\n{output[-3000:]}"
    assert "All cases pass" in output and "WRONG" not in output and "not written yet" not in output


@pytest.mark.parametrize("exercise", EXERCISES, ids=[p.stem for p in EXERCISES])
def test_hint_on_the_command_line(exercise):
    """``--hint`` shows hint 1 of the first failing case (case 1 on the stubs); past the last, one line."""
    module, _ = load(exercise.stem)
    first_hints = module.cases.cases[0][1]
    rc, output = run(exercise, "--hint")
    assert rc == 0, output[-3000:]
    assert f"Hint 1 of {len(first_hints)} for case 1" in output and first_hints[0] in output, output
    assert "[1/" not in output and "WRONG" not in output       # the hint alone, not the checks
    rc, output = run(exercise, "--hint", len(first_hints) + 1)
    assert rc == 2, output
    assert len(output.strip().splitlines()) == 1, output
    assert f"No hint {len(first_hints) + 1}" in output and f"solutions/{exercise.name}" in output


def hint_mode(stem, n, capsys, **replaced):
    """``cases.main(..., ["--hint", n])`` of exercise ``stem`` in this process, on its stubs or, with
    ``replaced``, on its solution with those functions replaced: (exit status, printed text)."""
    module, solution = load(stem)
    names = dict(vars(module))
    if replaced:
        names.update({**vars(solution), **replaced})
    with pytest.raises(SystemExit) as stop:
        module.cases.main(names, ["--hint", str(n)])
    return stop.value.code, capsys.readouterr().out


@pytest.mark.parametrize("exercise", EXERCISES, ids=[p.stem for p in EXERCISES])
def test_every_hint_is_shown_one_at_a_time(exercise, capsys):
    module, _ = load(exercise.stem)
    for number, (title, hints, _) in enumerate(module.cases.cases, 1):
        assert hints and all(h.strip() for h in hints), f"{exercise.name}: case {title!r} has an empty hint"
    hints = module.cases.cases[0][1]
    for n, text in enumerate(hints, 1):
        rc, output = hint_mode(exercise.stem, n, capsys)
        assert rc == 0 and text in output
        assert [h for h in hints if h in output] == [text], f"--hint {n} showed more than hint {n}"
        assert (f"--hint {n + 1} for the next one" in output) == (n < len(hints))
    for n in (0, len(hints) + 1):
        rc, output = hint_mode(exercise.stem, n, capsys)
        assert rc == 2 and len(output.strip().splitlines()) == 1, output


def test_hint_follows_the_first_failing_case(capsys):
    """A learner past the forward gets the backward's hints, and none when every case passes."""
    _, sol = load("03_batchnorm")

    def constant_statistics(dout, cache):       # mean and variance treated as constants
        xhat, s, gamma = cache
        return gamma[None, :, None, None] * s * dout, (dout * xhat).sum(axis=(0, 2, 3)), dout.sum(axis=(0, 2, 3))

    module, _ = load("03_batchnorm")
    number = [t for t, _, _ in module.cases.cases].index("gamma = 1, beta = 0: dx, dgamma, dbeta") + 1
    rc, output = hint_mode("03_batchnorm", 2, capsys, batchnorm_backward=constant_statistics)
    assert rc == 0 and f"for case {number}," in output and module.cases.hint(number, 2) in output
    rc, output = hint_mode("03_batchnorm", 1, capsys, batchnorm_backward=sol.batchnorm_backward)
    assert rc == 0 and "no hint needed" in output


# the heart of each derivation, as the worked solution writes it: the stub asks for it, never states it
ANSWERS = {"01_relu": ["[x_i > 0]"], "02_softmax_linear": ["p_k - [k = y]", "G^T x"],
           "03_batchnorm": ["xhat_j sum_i g_i xhat_i"], "04_conv_im2col": ["G[n] @ cols[n]^T"],
           "05_shortcut": ["dout[n, c, h/s, w/s]"], "06_gated_block": ["f'(c g)"]}


@pytest.mark.parametrize("exercise", EXERCISES, ids=[p.stem for p in EXERCISES])
def test_the_stub_asks_for_the_derivation_without_giving_it(exercise):
    module, _ = load(exercise.stem)
    solution_doc = (SOLUTIONS_DIR / exercise.name).read_text()
    for answer in ANSWERS[exercise.stem]:
        assert answer in solution_doc, f"the solution of {exercise.name} no longer derives {answer!r}"
        assert answer not in module.__doc__, f"{exercise.name}'s docstring gives the answer {answer!r} away"
    assert "Derivation to do" in module.__doc__ and "--hint" in module.__doc__


@pytest.mark.parametrize("exercise", EXERCISES, ids=[p.stem for p in EXERCISES])
def test_the_exercise_and_its_notebook_show_no_hint_and_no_wrong_answer(exercise):
    """The cases (their hints and the wrong answers they recognise) live in _cases/NN_name.py: the
    exercise file a learner opens, and the notebook made from it, hold neither."""
    module, _ = load(exercise.stem)
    assert (EXERCISES_DIR / "_cases" / exercise.name).is_file()
    source = exercise.read_text()
    assert "hints=" not in source and "mistakes=" not in source, f"{exercise.name} holds its cases"
    notebook = ROOT / "lessons" / "notebooks" / "exercises" / f"{exercise.stem}.ipynb"
    shown = source + (notebook.read_text() if notebook.is_file() else "")   # cells and their outputs
    if notebook.is_file():   # run on the stubs: it names the first stub, as the command line does
        assert f"{module.cases.function_names[0]} raises NotImplementedError" in notebook.read_text()
    hints = all_hints(exercise)
    assert hints and not [h for h in hints if h in shown or json.dumps(h)[1:-1] in shown], exercise.name


# ---------------------------------------------------------------------------------------------
# the checks catch wrong code: the solution with one classic mistake
# ---------------------------------------------------------------------------------------------


def load(stem):
    """(the exercise module, its solution's functions) for lessons/exercises/<stem>.py."""
    if str(EXERCISES_DIR) not in sys.path:
        sys.path.insert(0, str(EXERCISES_DIR))
    import _check
    exercise = _check.load_exercise(EXERCISES_DIR / f"{stem}.py")
    solution = _check.load_functions(SOLUTIONS_DIR / f"{stem}.py", exercise.cases.function_names)
    return exercise, solution


def run_with(stem, **replaced):
    """Run the cases of ``stem`` on its solution with some functions replaced: {title: (status, text)}."""
    exercise, solution = load(stem)
    impl = SimpleNamespace(**{**vars(solution), **replaced})
    return {title: (status, "\n".join(lines)) for title, status, lines in exercise.cases.run(impl, echo=lambda s: None)}


def statuses(results):
    return [status for status, _ in results.values()]


def test_the_solutions_pass_in_process():
    for p in EXERCISES:
        assert set(statuses(run_with(p.stem))) == {"ok"}, p.name


def test_relu_in_place_and_unmasked_gradients_are_caught():
    def in_place(x):
        x[x < 0] = 0
        return x, x

    results = run_with("01_relu", relu_forward=in_place)
    assert results["the forward leaves x alone"][0] == "wrong"
    results = run_with("01_relu", relu_backward=lambda dout, cache: (cache > 0) * 1.0)
    status, text = results["backward with a random dout"]
    assert status == "wrong" and "dout is left out" in text
    results = run_with("01_relu", relu_backward=lambda dout, cache: dout * (cache >= 0))
    assert results["x exactly 0: the gradient at the kink"][0] == "wrong"


def test_softmax_without_the_mean_is_caught():
    _, sol = load("02_softmax_linear")

    def no_mean(dout, cache):
        p, labels = cache
        return sol.softmax_cross_entropy_backward(dout, cache) * p.shape[0]

    results = run_with("02_softmax_linear", softmax_cross_entropy_backward=no_mean)
    status, text = results["softmax CE: a batch of 6, the mean over N"]
    assert status == "wrong" and "the sum over the batch, not of the mean" in text
    assert results["softmax CE: one example"][0] == "ok"          # N = 1: the factor is 1, rightly not caught

    def unstable(logits, labels):
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return -np.log(p[np.arange(len(labels)), labels]).mean(), (p, labels)

    results = run_with("02_softmax_linear", softmax_cross_entropy_forward=unstable)
    assert results["softmax CE: logits in the thousands (stability)"][0] == "wrong"
    assert results["softmax CE: a batch of 6, the mean over N"][0] == "ok"


def test_linear_with_transposed_weight_gradient_is_caught():
    _, sol = load("02_softmax_linear")

    def transposed(dout, cache):
        dx, dW, db = sol.linear_backward(dout, cache)
        return dx, dW.T, db

    results = run_with("02_softmax_linear", linear_backward=transposed)
    status, text = results["linear: forward and backward, N=4 D=3 K=5"]
    assert status == "wrong" and "transposed" in text


@pytest.mark.parametrize("missing, expected", [("mean", "without the term through the mean"),
                                               ("var", "without the term through the variance"),
                                               ("both", "the mean and the variance treated as constants")])
def test_batchnorm_without_a_correction_term_is_caught(missing, expected):
    def backward(dout, cache):
        xhat, s, gamma = cache
        m = dout.size // dout.shape[1]
        dbeta, dgamma = dout.sum(axis=(0, 2, 3)), (dout * xhat).sum(axis=(0, 2, 3))
        dx = m * dout
        if missing not in ("mean", "both"):
            dx = dx - dbeta[None, :, None, None]
        if missing not in ("var", "both"):
            dx = dx - xhat * dgamma[None, :, None, None]
        return gamma[None, :, None, None] * s / m * dx, dgamma, dbeta

    results = run_with("03_batchnorm", batchnorm_backward=backward)
    status, text = results["gamma = 1, beta = 0: dx, dgamma, dbeta"]
    assert status == "wrong" and expected in text
    # shift and scale invariance: each missing term breaks one of them, and is named
    status, text = results["dx is blind to shifting and to scaling a channel (eps = 0)"]
    assert status == "wrong"
    assert ("the term through the mean is missing" in text) == (missing in ("mean", "both"))
    assert ("the term through the variance is missing" in text) == (missing in ("var", "both"))


def test_batchnorm_with_m_miscounted_is_caught():
    """m = N (the batch) instead of N*H*W (every value of the channel): named, on a case with H*W > 1."""
    def m_is_n(dout, cache):
        xhat, s, gamma = cache
        m = dout.shape[0]
        dbeta, dgamma = dout.sum(axis=(0, 2, 3)), (dout * xhat).sum(axis=(0, 2, 3))
        dx = m * dout - dbeta[None, :, None, None] - xhat * dgamma[None, :, None, None]
        return gamma[None, :, None, None] * s / m * dx, dgamma, dbeta

    results = run_with("03_batchnorm", batchnorm_backward=m_is_n)
    status, text = results["gamma = 1, beta = 0: dx, dgamma, dbeta"]
    assert status == "wrong" and "m = N, not N*H*W" in text, text


def test_dout_of_ones_tests_the_mean_term_only():
    """Why the invariance case has a random dout: with dout = 1 the variance's term is 0 anyway."""
    _, sol = load("03_batchnorm")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, 3, 3)) * 2 + 1
    _, (xhat, s, gamma) = sol.batchnorm_forward(x, np.ones(2), np.zeros(2))
    ones = np.ones_like(x)
    assert np.abs((ones * xhat).sum(axis=(0, 2, 3))).max() < 1e-12      # sum g xhat: the variance's term
    assert np.abs(ones.sum(axis=(0, 2, 3))).min() == x.size // 2        # sum g: the mean's term


def test_only_the_first_failing_case_is_diagnosed():
    """A backward without the variance's term fails several cases; only the first one's details are printed."""
    def no_variance_term(dout, cache):
        xhat, s, gamma = cache
        m = dout.size // dout.shape[1]
        dbeta, dgamma = dout.sum(axis=(0, 2, 3)), (dout * xhat).sum(axis=(0, 2, 3))
        return gamma[None, :, None, None] * s / m * (m * dout - dbeta[None, :, None, None]), dgamma, dbeta

    exercise, solution = load("03_batchnorm")
    printed = []
    results = exercise.cases.run(SimpleNamespace(**{**vars(solution), "batchnorm_backward": no_variance_term}),
                                 echo=printed.append)
    text = "\n".join(printed)
    failing = [title for title, status, _ in results if status != "ok"]
    assert len(failing) >= 2, failing
    assert "without the term through the variance" in text            # the first failing case's diagnosis
    later = dict((t, "\n".join(lines)) for t, _, lines in results)[failing[-1]]
    assert "the term through the variance is missing" in later          # the later case found it too ...
    assert "the term through the variance is missing" not in text       # ... but it is not printed
    assert sum(failing[-1] in line for line in printed) == 1            # its status line only
    assert not [h for _, hints, _ in exercise.cases.cases for h in hints if h in text]   # no hint text


def test_batchnorm_without_eps_in_the_backward_is_caught():
    _, sol = load("03_batchnorm")

    def forward(x, gamma, beta, eps=1e-5):
        out, (xhat, s, g) = sol.batchnorm_forward(x, gamma, beta, eps)
        return out, (xhat, 1 / np.sqrt(x.var(axis=(0, 2, 3), keepdims=True)), g)   # s without eps

    results = run_with("03_batchnorm", batchnorm_forward=forward)
    assert results["a channel with almost no variance (eps matters)"][0] == "wrong"


def test_convolution_mistakes_are_caught():
    _, sol = load("04_conv_im2col")

    def one_image_dw(dout, cache):
        x_shape, cols, weight, stride, padding = cache
        dx, dw, db = sol.conv_backward(dout, cache)
        F = weight.shape[0]
        return dx, (dout[0].reshape(F, -1) @ cols[0].T).reshape(weight.shape), db

    results = run_with("04_conv_im2col", conv_backward=one_image_dw)
    status, text = results["backward: stride 1, padding 1, 2 images"]
    assert status == "wrong" and "the first image's share only" in text

    def col2im_assign(cols, x_shape, k, stride=1, padding=0):   # = instead of +=: overlaps lost
        N, C, H, W = x_shape
        Ho, Wo = (H + 2 * padding - k) // stride + 1, (W + 2 * padding - k) // stride + 1
        cols = cols.reshape(N, C, k, k, Ho, Wo)
        dxpad = np.zeros((N, C, H + 2 * padding, W + 2 * padding))
        for di in range(k):
            for dj in range(k):
                dxpad[:, :, di:di + stride * Ho:stride, dj:dj + stride * Wo:stride] = cols[:, :, di, dj]
        return dxpad[:, :, padding:padding + H, padding:padding + W]

    results = run_with("04_conv_im2col", col2im=col2im_assign)
    assert results["col2im is the adjoint of im2col: <im2col(x), c> = <x, col2im(c)>"][0] == "wrong"
    assert results["forward: stride 1, padding 1 (the ResNet's 3x3 convolution)"][0] == "ok"


def test_shortcut_mistakes_are_caught():
    def forward_no_subsample(x, out_channels, stride):
        out = np.zeros((x.shape[0], out_channels) + x.shape[2:])
        out[:, :x.shape[1]] = x
        return out, (x.shape, stride)

    results = run_with("05_shortcut", shortcut_forward=forward_no_subsample)
    assert results["identity: stride 1, 4 -> 4 channels"][0] == "ok"
    assert results["a stage transition: stride 2, 2 -> 4 channels, 6x6 -> 3x3"][0] == "wrong"

    def backward_leaks(dout, cache):      # the zero channels' gradient folded back onto the old ones
        x_shape, stride = cache
        C = x_shape[1]
        dx = np.zeros(x_shape)
        dx[:, :, ::stride, ::stride] = dout[:, :C] + dout[:, C:2 * C]
        return dx

    results = run_with("05_shortcut", shortcut_backward=backward_leaks)
    assert results["the zero channels send nothing back"][0] == "wrong"


def test_gated_block_multiplied_by_zero_is_caught():
    """Right numbers, but the closed branch was run and multiplied by 0: the calls and the BN statistics say so."""
    def times_zero(x, branch, shortcut, gate, p, training, scale="test"):
        b = 1.0 if (gate or not training) else 0.0
        factor = b * ((1.0 if scale == "test" else 1 / p) if training else (p if scale == "test" else 1.0))
        total = shortcut.forward(x) + factor * branch.forward(x)
        out = np.maximum(total, 0)
        return out, (out > 0, True, factor)

    results = run_with("06_gated_block", gated_block_forward=times_zero)
    status, text = results["training, gate closed: out = ReLU(sc(x)), the branch never called"]
    assert status == "wrong"
    assert "branch calls (forward, backward): [1, 1], should be [0, 0]" in text
    assert "BN running statistics unchanged: no" in text
    assert "ok    out:" in text and "ok    dx:" in text            # the numbers themselves were right
    assert results["training, gate open, scale='test': out = ReLU(sc(x) + f(x))"][0] == "ok"


def test_gated_block_scaling_mistakes_are_caught():
    _, sol = load("06_gated_block")

    def unscaled_backward(dout, cache, branch, shortcut):     # the factor only in the forward
        mask, runs, factor = cache
        return sol.gated_block_backward(dout, (mask, runs, 1.0), branch, shortcut)

    results = run_with("06_gated_block", gated_block_backward=unscaled_backward)
    status, text = results["eval, scale='test': out = ReLU(sc(x) + p f(x)), the gate ignored"]
    assert status == "wrong" and "1.429 = 1/0.7 x the right answer" in text     # 1 / p, p = 0.7
    assert results["training, gate open, scale='train': out = ReLU(sc(x) + f(x) / p)"][0] == "wrong"
    assert results["training, gate open, scale='test': out = ReLU(sc(x) + f(x))"][0] == "ok"

    def gate_used_at_test_time(x, branch, shortcut, gate, p, training, scale="test"):
        return sol.gated_block_forward(x, branch, shortcut, gate, p, True, scale) if not gate else \
            sol.gated_block_forward(x, branch, shortcut, gate, p, training, scale)

    results = run_with("06_gated_block", gated_block_forward=gate_used_at_test_time)
    assert results["eval, scale='test': out = ReLU(sc(x) + p f(x)), the gate ignored"][0] == "wrong"

    def p_in_training(x, branch, shortcut, gate, p, training, scale="test"):   # "train" scale as x p
        return sol.gated_block_forward(x, branch, shortcut, gate, 1 / p if (training and scale == "train") else p,
                                       training, scale)

    results = run_with("06_gated_block", gated_block_forward=p_in_training)
    assert results["training, gate open, scale='train': out = ReLU(sc(x) + f(x) / p)"][0] == "wrong"


def test_a_crash_is_an_error_not_a_pass():
    def crashes(x):
        raise ValueError("shapes do not match")

    results = run_with("01_relu", relu_forward=crashes)
    status, text = results["forward of a (5, 4) array"]
    # where: the learner's line (here this file), not the checks that called it
    assert status == "error" and "ValueError: shapes do not match" in text
    assert "at tests/test_exercises.py" in text and "(crashes)" in text, text

    def crashes_in_numpy(x):
        return np.reshape(x, (7, 7)), None

    status, text = run_with("01_relu", relu_forward=crashes_in_numpy)["forward of a (5, 4) array"]
    assert status == "error" and "at tests/test_exercises.py" in text and "(crashes_in_numpy)" in text, text


# ---------------------------------------------------------------------------------------------
# lesson 00
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_lesson_00_runs_quick(tmp_path):
    lesson = ROOT / "lessons" / "00_stochastic_depth_first.py"
    rc, output = run(lesson, "--quick", "--out", tmp_path)
    assert rc == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    assert "Try this" in output
    heading = re.search(r"--- \d+\. findings", output)       # the lesson's last numbered section
    assert heading, output[-4000:]
    findings = output[heading.start():]
    assert "claim" in findings and "supported?" in findings
    # one seed in --quick mode: no claim about the seeds is made
    assert "stochastic depth lowers the test error" in findings and "not shown (fewer than 3 seeds)" in findings
    assert "0 in " in findings and "dropped pairs" in findings   # dropped blocks: no forward, no gradient
    assert (tmp_path / "00_stochastic_depth_first_gates.png").is_file()
