"""The checks of exercise 6 (lessons/exercises/06_gated_block.py): its cases, the wrong answers they
recognise and the hints. They show what the answer is not, and the hints come close to what
it is: solve the exercise first. ``python lessons/exercises/06_gated_block.py`` runs them.
"""
import numpy as np

from minisd import ResidualBlock
from _check import EXACT_TOL, Cases

cases = Cases("gated_block_forward", "gated_block_backward")


class Counted:
    """A layer that counts its forward and backward calls, and is otherwise the layer itself."""

    def __init__(self, layer):
        self.layer, self.forwards, self.backwards = layer, 0, 0

    def forward(self, x):
        self.forwards += 1
        return self.layer.forward(x)

    def backward(self, dout):
        self.backwards += 1
        return self.layer.backward(dout)

    def __getattr__(self, name):
        return getattr(self.layer, name)


def make_block(rng, c_in, c_out, stride, p, scale):
    """minisd's ResidualBlock in float64, with random BN gammas/betas and running statistics moved."""
    block = ResidualBlock(c_in, c_out, stride, survival_prob=p, scale=scale, dtype=np.float64, rng=rng)
    for bn in (block.branch[1], block.branch[4]):
        bn.params["weight"][...] = rng.uniform(0.5, 1.5, c_out)
        bn.params["bias"][...] = rng.uniform(-0.5, 0.5, c_out)
    block.train()
    for _ in range(3):  # some training batches, so that eval mode has statistics of its own
        block.forward(1.5 * rng.standard_normal((4, c_in, 6, 6)) + 0.3)
    block.clear_cache()
    return block


def check_block(impl, check, gate, training, scale, p=0.7, c_in=2, c_out=2, stride=1, size=4):
    """Run the learner's block against minisd's ResidualBlock with the same branch and shortcut.

    Checks the output, how often the branch was called, dx and two branch parameter gradients
    (against central differences of minisd's block), and, when the branch must not run, that
    its gradients are exactly 0 and its BN running statistics did not move.
    """
    rng = check.rng
    block = make_block(rng, c_in, c_out, stride, p, scale)
    block.train(training)
    block.gate = gate
    runs = (not training) or gate
    x = rng.standard_normal((3, c_in, size, size))
    want = block.forward(x)                     # minisd's block: the reference
    block.clear_cache()
    block.zero_grad()
    dout = rng.standard_normal(want.shape)
    stats = {k: v.copy() for k, v in block.state_dict().items() if "running" in k}
    branch, shortcut = Counted(block.branch), Counted(block.shortcut)

    out, cache = impl.gated_block_forward(x, branch, shortcut, gate, p, training, scale)
    check.shape("out", out, want.shape)
    check.close("out", out, want, tol=EXACT_TOL)
    dx = impl.gated_block_backward(dout, cache, branch, shortcut)
    calls = (branch.forwards, branch.backwards)
    grads = {name: g.copy() for name, _, g in block.branch.parameters()}
    moved = [k for k, v in block.state_dict().items() if "running" in k and not np.array_equal(v, stats[k])]

    check.exact("branch calls (forward, backward)", np.array(calls), np.array((1, 1) if runs else (0, 0)))
    check.exact("shortcut calls (forward, backward)", np.array((shortcut.forwards, shortcut.backwards)),
                np.array((1, 1)))
    f = lambda: block.forward(x)                # the true function, for central differences
    check.close("dx", dx, check.numgrad(f, x, dout))
    conv1, bn2 = block.branch[0].params["weight"], block.branch[4].params["weight"]
    if runs:
        check.close("dW of the branch's first conv", grads["0.weight"], check.numgrad(f, conv1, dout))
        check.close("dgamma of the branch's last BN", grads["4.weight"], check.numgrad(f, bn2, dout))
    else:
        for name, g in grads.items():
            check.exact(f"gradient of branch parameter {name}", g, np.zeros_like(g))
    if training and not gate:
        check.true("BN running statistics unchanged", not moved, f"{moved} moved: the branch ran in training mode")
    block.clear_cache()


@cases.case("training, gate open, scale='test': out = ReLU(sc(x) + f(x))",
            hints=["forward: total = shortcut.forward(x), plus factor * branch.forward(x) when the branch runs; "
                   "out = ReLU(total). The backward needs the ReLU's mask, whether the branch ran, and the factor",
                   "backward: through the ReLU, g = dout * (total > 0). A sum passes g unchanged to both of its "
                   "terms: to shortcut.backward and to the branch's term",
                   "the branch's term is factor * f(x): its backward is branch.backward(factor * g). Add the two "
                   "results: dx = shortcut.backward(g) + branch.backward(factor * g); here factor = 1"])
def _(impl, check):
    check_block(impl, check, gate=True, training=True, scale="test")


@cases.case("training, gate closed: out = ReLU(sc(x)), the branch never called",
            hints=["a closed gate means the branch is not run at all - not f(x) * 0, which costs the whole branch and "
                   "moves its BN running statistics (a forward in training mode updates them)",
                   "remember in the cache whether the branch ran, and let the backward take the same `if`: "
                   "a branch that did not run has no backward to call"])
def _(impl, check):
    check_block(impl, check, gate=False, training=True, scale="test")


@cases.case("eval, scale='test': out = ReLU(sc(x) + p f(x)), the gate ignored",
            hints=["at test time the gate is ignored: every branch runs, with the factor of the table (scale='test': "
                   "p, its expected contribution in training)",
                   "the factor multiplies f(x) in the forward, so it multiplies the branch's gradient in the backward "
                   "too: the branch's backward receives p * g"])
def _(impl, check):
    check_block(impl, check, gate=False, training=False, scale="test")


@cases.case("training, gate open, scale='train': out = ReLU(sc(x) + f(x) / p)",
            hints=["scale='train' divides the branch by p in training: in the forward, and so in the backward too"])
def _(impl, check):
    check_block(impl, check, gate=True, training=True, scale="train")


@cases.case("eval, scale='train': out = ReLU(sc(x) + f(x)), the gate ignored",
            hints=["with scale='train' the factor at test time is 1 (see the table), and every branch runs"])
def _(impl, check):
    check_block(impl, check, gate=False, training=False, scale="train")


@cases.case("training, gate closed, scale='train': still the branch never called",
            hints=["a closed gate skips the branch whatever the scale: there is nothing to divide by p"])
def _(impl, check):
    check_block(impl, check, gate=False, training=True, scale="train")


@cases.case("a stage transition (2 -> 4 channels, stride 2), gate open, p = 0.5",
            hints=["the shortcut changes the shape here: use shortcut.forward and shortcut.backward, never x or "
                   "g themselves, in the sum"])
def _(impl, check):
    check_block(impl, check, gate=True, training=True, scale="test", p=0.5, c_in=2, c_out=4, stride=2, size=6)


@cases.case("a stage transition in eval, scale='test', p = 0.5",
            hints=["at test time with scale='test', out = ReLU(shortcut(x) + p f(x)) with p = 0.5 here; "
                   "the branch's backward receives p * g"])
def _(impl, check):
    check_block(impl, check, gate=True, training=False, scale="test", p=0.5, c_in=2, c_out=4, stride=2, size=6)
