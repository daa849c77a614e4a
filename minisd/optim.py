"""SGD with (Nesterov) momentum and weight decay, and the paper's learning-rate schedule.

The paper trains with the Torch7 ``optim.sgd`` of fb.resnet.torch: lr 0.1,
Nesterov momentum 0.9 (dampening 0), weight decay 1e-4, batch 128, and the
learning rate divided by 10 at 50% and 75% of the epochs. PyTorch's
``torch.optim.SGD`` (dampening 0) computes the same update, so either serves
as the reference.

The one place the two frameworks part ways is a weight that got no gradient,
which is what a stochastic-depth block whose gate was closed is: see
:class:`SGD` and its ``dropped`` argument.
"""
from __future__ import annotations

import numbers
import weakref
from typing import Sequence
from urllib.parse import quote, unquote

from .backend import device_of, fuse, get_xp, to_device
from .fast import switch

DROPPED = ("paper", "skip")

# state_dict keys; see SGD.state_dict
_LR, _NUM_STEPS, _STEP, _BUF = "lr", "num_steps", "step/", "momentum_buffer/"


class SGD:
    """SGD with (Nesterov) momentum and L2 weight decay, in place: the formula of :func:`sgd_update`.

    ``params``: ``net.parameters()``, ``(name, param, grad)`` triples; the
    arrays are kept, so each ``step`` reads the gradients the last backward
    filled. ``lr`` is a plain attribute (the loop sets it each epoch).
    ``step(inactive=names)`` names the parameters that got no gradient (a
    dropped block's); ``dropped`` says what they get: ``"paper"`` (Torch7) a
    zero gradient, so weight decay and momentum still move them; ``"skip"``
    (PyTorch, grad ``None``) nothing, buffer and step count included.
    ``state[name]``: ``{"step": updates received, "momentum_buffer": array}``
    (zero before the first update, which makes that update ``buf = d``).
    """

    def __init__(self, params, lr, momentum=0.9, weight_decay=1e-4, nesterov=True, dropped="paper"):
        self.params = [(name, p, g) for name, p, g in params]  # materialise: a generator runs once
        _check_arguments(self.params, lr, momentum, weight_decay, dropped)
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.nesterov, self.dropped = bool(nesterov), dropped
        self.num_steps = 0  # calls to step()
        self.state = {name: {"step": 0, "momentum_buffer": None} for name, _, _ in self.params}
        # The speed appendix: parameters that are views of flat arrays (Module.flatten_parameters)
        # are updated one flat run at a time, their buffers views of one flat buffer (same numbers).
        self._flat, self._one_by_one = switch.flat_sgd(self.params, self.state, self.momentum > 0)
        for name, p, _ in self._one_by_one:
            if self.momentum:
                self.state[name]["momentum_buffer"] = get_xp(p).zeros_like(p)
        self._array_ids = {id(a) for _, p, g in self.params for a in (p, g)}  # see held_by_an_optimizer
        _OPTIMIZERS.add(self)

    def step(self, inactive: Sequence[str] = ()):
        """Update every parameter in place; ``inactive``: names that got no gradient this step."""
        inactive = set(inactive)
        if not inactive <= self.state.keys():
            raise ValueError(f"inactive names that are not parameters of this optimizer: "
                             f"{sorted(inactive - self.state.keys())[:5]}")
        for name, w, g in self._one_by_one:
            if self._update(w, g, self.state[name]["momentum_buffer"], active=name not in inactive):
                self.state[name]["step"] += 1
        if self._flat is not None:
            for name in self._flat.step(self._update, inactive):
                self.state[name]["step"] += 1
        self.num_steps += 1

    def _update(self, w, g, buf, active) -> bool:
        """One update of ``w`` (a parameter, or a run of a flat array); False when ``dropped`` skips it."""
        if not active and self.dropped == "skip":
            return False  # PyTorch: `if p.grad is None: continue`
        wd = self.weight_decay or None  # None: no decay term (w * 0 would turn an inf weight into nan)
        sgd_update(w, g if active else None, buf, self.lr, self.momentum, wd, nesterov=self.nesterov)
        return True

    @property
    def steps(self) -> dict:
        """``{name: updates that parameter has received}``."""
        return {name: s["step"] for name, s in self.state.items()}

    @property
    def buffers(self) -> dict:
        """``{name: momentum buffer}``, ``None`` before the parameter's first update (or without momentum)."""
        return {name: s["momentum_buffer"] if s["step"] else None for name, s in self.state.items()}

    def state_dict(self) -> dict:
        """Everything needed to resume, safe for ``np.savez``: ``"lr"``, ``"num_steps"``, and per
        parameter ``"step/<name>"`` and, once it has a buffer, ``"momentum_buffer/<name>"`` (a copy).
        Names are percent-encoded (``/`` would clash with the separator); dotted ones stay as they are.
        Hyper-parameters other than ``lr`` come from the constructor: a resumed run may change them."""
        state = {_LR: self.lr, _NUM_STEPS: self.num_steps}
        for name, buf in self.buffers.items():
            state[_STEP + _key(name)] = self.state[name]["step"]
            if buf is not None:
                state[_BUF + _key(name)] = buf.copy()
        return state

    def load_state_dict(self, state: dict):
        """Restore a :meth:`state_dict` (also as read back from an ``.npz``). ``KeyError`` when its
        keys do not fit these parameters, ``ValueError`` for a wrong shape; nothing changes unless all fit."""
        _check_state(self, state)
        self.lr, self.num_steps = float(state[_LR]), int(state[_NUM_STEPS])
        for name, p, _ in self.params:
            s, value = self.state[name], state.get(_BUF + _key(name))
            s["step"] = int(state[_STEP + _key(name)])
            if s["momentum_buffer"] is not None:  # in place: it may be a view of a flat buffer
                s["momentum_buffer"][...] = 0 if value is None else to_device(value, device_of(p)).astype(p.dtype)
        return self

    def __repr__(self):
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay}, "
                f"nesterov={self.nesterov}, dropped={self.dropped!r}, params={len(self.params)})")


def _check_arguments(params, lr, momentum, weight_decay, dropped):
    """Raise ``ValueError`` with one line for arguments :class:`SGD` cannot use."""
    names = [name for name, _, _ in params]
    if not names:
        raise ValueError("SGD got no parameters")
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"parameter names must be unique; repeated: {repeated[:5]}")
    for name, p, g in params:
        if p.shape != g.shape:
            raise ValueError(f"{name}: grad shape {g.shape} differs from param shape {p.shape}")
    if lr < 0 or momentum < 0 or weight_decay < 0:
        raise ValueError(f"lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
    if dropped not in DROPPED:
        raise ValueError(f"dropped must be one of {DROPPED} ('paper': a dropped block's weights still "
                         f"get weight decay and momentum, as in the paper's Torch7 code; 'skip': they "
                         f"are left untouched, as PyTorch does for a grad of None), got {dropped!r}")


def _key(name):
    return quote(name, safe="._-")


def _check_state(opt, state):
    """Raise unless ``state`` is a state dict of ``opt``'s parameters (see :meth:`SGD.load_state_dict`)."""
    names = list(opt.state)
    missing = [k for k in (_LR, _NUM_STEPS, *(_STEP + _key(n) for n in names)) if k not in state]
    missing += [_BUF + _key(n) for n in names  # updated with momentum, so it had a buffer
                if opt.momentum and int(state.get(_STEP + _key(n), 0)) > 0 and _BUF + _key(n) not in state]
    known = {_LR, _NUM_STEPS} | {prefix + _key(n) for n in names for prefix in (_STEP, _BUF)}
    unexpected = sorted(unquote(k) for k in state if k not in known)
    if missing or unexpected:
        raise KeyError(f"optimizer state does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, p, _ in opt.params:
        value = state.get(_BUF + _key(name))
        if value is not None and tuple(value.shape) != tuple(p.shape):
            raise ValueError(f"optimizer state {_BUF + _key(name)!r} has shape {tuple(value.shape)}, "
                             f"expected {p.shape}")


@fuse
def sgd_update(xp, w, g, buf, lr, momentum, weight_decay, *, nesterov):
    """One SGD step on ``w``, in place (Torch7 ``optim.sgd`` and PyTorch ``SGD``, dampening 0)::

        d = g + weight_decay * w
        buf = momentum * buf + d    (buf is zero before the first step: then buf = d)
        d = d + momentum * buf      if nesterov, else d = buf
        w -= lr * d

    ``g`` ``None``: a zero gradient (a dropped block in ``"paper"`` mode: the
    grad buffer is not read); ``buf`` ``None``: no momentum; ``weight_decay``
    ``None``: no decay term. Arrays of any one shape. One kernel on the GPU
    (see :func:`minisd.backend.fuse`).
    """
    if g is None:
        d = 0 if weight_decay is None else weight_decay * w
    else:
        d = g if weight_decay is None else g + weight_decay * w
    if buf is not None:
        buf *= momentum
        buf += d                                     # buf = momentum * buf + d
        d = d + momentum * buf if nesterov else buf
    w -= lr * d


# ---------------------------------------------------------------------------
# learning-rate schedule
# ---------------------------------------------------------------------------


def lr_at_epoch(epoch, base_lr=0.1, epochs=500, milestones=None, gamma=0.1, warmup_epochs=0, warmup_lr=0.01):
    """The learning rate for 0-based ``epoch``: ``base_lr`` times ``gamma`` for each milestone passed.

    The paper (CIFAR): lr 0.1, divided by 10 at 50% and 75% of the epochs.
    With ``milestones=None`` the divisions take effect at the first epoch
    with ``epoch >= 0.5 * epochs`` and ``epoch >= 0.75 * epochs`` (0-based
    epochs): 250 and 375 for 500 epochs, i.e. ``ceil(epochs / 2)`` and
    ``ceil(3 * epochs / 4)``. Explicit ``milestones`` are strictly increasing
    0-based epochs at which a division takes effect (PyTorch's
    ``MultiStepLR``), each below ``epochs``.

    Warm-up: epochs ``0 .. warmup_epochs - 1`` use ``warmup_lr`` instead. The
    paper trains its 1202-layer net this way: 0.01 for the first 10 epochs,
    then 0.1, divided by 10 at epochs 150 and 225 of 300 (``warmup_epochs=10,
    warmup_lr=0.01, milestones=[150, 225]``; the recipe ``paper-1202`` in
    :mod:`minisd.tools.recipes`). (He et al. 2016 warmed their 110-layer net up
    until the training error fell below 80%, about 400 iterations; the
    stochastic-depth paper uses a fixed 10 epochs.) Warm-up epochs count
    towards ``epochs`` and the milestones.

    Epochs at or past ``epochs`` keep the last rate. Bad arguments raise ``ValueError``.

    >>> [lr_at_epoch(e) for e in (0, 249, 250, 374, 375, 499)]  # doctest: +SKIP
    [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]   (up to rounding: 0.1 * 0.1 = 0.010000000000000002)
    """
    _check_schedule(epoch, base_lr, epochs, milestones, gamma, warmup_epochs, warmup_lr)
    if epoch < warmup_epochs:
        return float(warmup_lr)
    if milestones is None:  # the first epochs >= 0.5 * epochs and >= 0.75 * epochs (integer maths, exact)
        milestones = (-(-epochs // 2), -(-3 * epochs // 4))
    lr = float(base_lr)
    for m in milestones:
        if epoch >= m:
            lr *= gamma
    return lr


# Every SGD that still exists (weakly held: an optimizer that is gone strands nothing).
_OPTIMIZERS = weakref.WeakSet()


def held_by_an_optimizer(array) -> bool:
    """True if an optimizer that still exists updates ``array`` in place (see ``Module.to``)."""
    return any(id(array) in opt._array_ids for opt in list(_OPTIMIZERS))


def _is_int(x) -> bool:
    """Python or NumPy integer, not bool (True as an epoch count is a mistake, not a 1)."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_schedule(epoch, base_lr, epochs, milestones, gamma, warmup_epochs, warmup_lr):
    """Raise ``ValueError`` with one line for arguments :func:`lr_at_epoch` cannot use."""
    if not _is_int(epoch) or epoch < 0:
        raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
    if not _is_int(epochs) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not base_lr > 0 or not gamma > 0 or not warmup_lr > 0:
        raise ValueError(f"base_lr, gamma and warmup_lr must be > 0, got {base_lr}, {gamma}, {warmup_lr}")
    if not _is_int(warmup_epochs) or not 0 <= warmup_epochs <= epochs:
        raise ValueError(f"warmup_epochs must be an integer in [0, epochs={epochs}], got {warmup_epochs!r}")
    if milestones is not None:
        ms = list(milestones)
        if not all(_is_int(m) for m in ms):
            raise ValueError(f"milestones must be integer epochs, got {ms}")
        if any(b <= a for a, b in zip(ms, ms[1:])):
            raise ValueError(f"milestones must be strictly increasing, got {ms}")
        if ms and not (0 <= ms[0] and ms[-1] < epochs):
            raise ValueError(f"milestones must lie in [0, epochs={epochs}), got {ms}")
