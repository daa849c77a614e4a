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

import numpy as np

from .backend import device_of, fuse, get_xp, offset_in_base, to_device

DROPPED = ("paper", "skip")

# Elements per sgd_update call on NumPy: its temporaries (a few arrays of this
# size) then stay in the CPU cache instead of being fresh memory each step.
# Measured on a 2-core EPYC: 2**16 about 1.7x as fast as one call on all 1.7M
# weights of a ResNet-110 (2**12: slower than one call). On the GPU a run is
# one call: one kernel.
CPU_CHUNK = 1 << 16

# state_dict keys; see SGD.state_dict
_LR, _NUM_STEPS, _STEP, _BUF = "lr", "num_steps", "step/", "momentum_buffer/"


class SGD:
    """Stochastic gradient descent with momentum and L2 weight decay, updated in place.

    ``params`` is ``net.parameters()``: ``(name, param, grad)`` triples. The
    optimizer keeps references to the arrays, so every ``step`` reads the grad
    buffers the last backward filled and writes the params in place.

    One step, for each parameter ``w`` with gradient ``g`` (Torch7
    ``optim.sgd`` and PyTorch ``SGD``, dampening 0)::

        d = g + weight_decay * w
        buf = d                     on the parameter's first step
        buf = momentum * buf + d    afterwards
        d = d + momentum * buf      if nesterov, else d = buf
        w -= lr * d

    (:func:`sgd_update` is this formula, written once for every array.) With
    ``momentum=0`` no buffer is kept and ``nesterov`` changes nothing (PyTorch
    refuses nesterov without momentum; the formula above is simply plain SGD
    then).

    Dropped blocks. ``step(inactive=names)`` is told which parameters got no
    gradient this step (``net.inactive_parameter_names()``: the weights of the
    blocks whose gate was closed). ``dropped`` says what happens to them:

    ``"paper"`` (default)
        As in the paper's Torch7 code: there all weights live in one flat
        vector whose gradient is zeroed before each backward, and a dropped
        block simply adds nothing to its part, so ``optim.sgd`` sees a zero
        gradient. Weight decay and momentum still apply: the weights shrink
        and keep drifting along their momentum, exactly as a parameter whose
        gradient is zero would. (The grad buffer is not even read: it is
        taken to be zero, whatever it holds.)
    ``"skip"``
        As PyTorch does for a parameter whose ``.grad`` is ``None``: the
        parameter, its momentum buffer and its step count are left untouched,
        as if the step never happened for it. A parameter skipped on its
        first steps gets its buffer on the first step it is active.

    ``lr`` is a plain attribute: the training loop sets it each epoch (see
    :func:`lr_at_epoch`). ``state_dict``/``load_state_dict`` save and restore
    everything a resumed run needs to continue bit-exactly.

    One update for many parameters. When the parameters are views of one
    flat array (``Module.flatten_parameters``, Torch7's ``getParameters``;
    :class:`minisd.ResNet` does it when built), the formula runs once on the
    whole flat array, the gradient and the momentum buffer being flat arrays
    laid out alike, instead of once per parameter: one GPU kernel instead of
    hundreds, and faster on NumPy too. Dropped blocks cut the flat arrays into
    a few runs of consecutive parameters, one update each. Other parameters
    are updated one by one, with the same formula. ``buffers[name]`` is the
    parameter's part of the momentum buffer (``None`` before its first update).

    Works on NumPy and CuPy arrays alike. The gradients are only read.
    """

    def __init__(self, params, lr, momentum=0.9, weight_decay=1e-4, nesterov=True, dropped="paper"):
        self.params = [(name, p, g) for name, p, g in params]  # materialise: a generator runs once
        if not self.params:
            raise ValueError("SGD got no parameters")
        names = [name for name, _, _ in self.params]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"parameter names must be unique; repeated: {dup[:5]}")
        for name, p, g in self.params:
            if p.shape != g.shape:
                raise ValueError(f"{name}: grad shape {g.shape} differs from param shape {p.shape}")
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
        if dropped not in DROPPED:
            raise ValueError(f"dropped must be one of {DROPPED} ('paper': a dropped block's weights still "
                             f"get weight decay and momentum, as in the paper's Torch7 code; 'skip': they "
                             f"are left untouched, as PyTorch does for a grad of None), got {dropped!r}")
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.nesterov = bool(nesterov)
        self.dropped = dropped
        self.names = frozenset(names)
        self.num_steps = 0                     # calls to step()
        self.steps = {n: 0 for n in names}     # updates each parameter received
        self.groups = _groups(self.params, with_momentum=self.momentum > 0)
        self._momentum_views = {name: view for group in self.groups for name, view in group.momentum_views()}
        # So that Module.to() can refuse to strand this optimizer on arrays it no longer uses
        # (the ids stay valid: this optimizer holds the arrays).
        self._array_ids = {id(a) for _, p, g in self.params for a in (p, g)}
        self._array_ids |= {id(a) for group in self.groups for a in (group.params, group.grads)}
        _OPTIMIZERS.add(self)

    @property
    def buffers(self) -> dict:
        """``{name: momentum buffer}``: a view of the flat buffer, or ``None`` before the first update."""
        return {name: (self._momentum_views[name] if self.momentum and self.steps[name] else None)
                for name in self.steps}

    def step(self, inactive: Sequence[str] = ()):
        """Update every parameter in place from its grad buffer.

        ``inactive``: names of the parameters whose gradient was not computed
        this step (``net.inactive_parameter_names()``); what happens to them
        depends on ``dropped`` (see the class docstring).
        """
        inactive = set(inactive)
        unknown = inactive - self.names
        if unknown:
            raise ValueError(f"inactive names that are not parameters of this optimizer: {sorted(unknown)[:5]}")
        wd = self.weight_decay or None  # None: no decay term (w * 0 would turn an inf weight into nan)
        for group in self.groups:
            for w, g, buf, names, active in group.runs(inactive):
                if not active and self.dropped == "skip":
                    continue  # PyTorch: `if p.grad is None: continue`, buffer and all
                for w_, g_, buf_ in _pieces(w, g if active else None, buf):
                    sgd_update(w_, g_, buf_, self.lr, self.momentum, wd, nesterov=self.nesterov)
                for name in names:
                    self.steps[name] += 1
        self.num_steps += 1

    # -- saving and resuming --------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to resume, as ``{key: array or number}``: safe for ``np.savez``.

        Keys (parameter names are percent-encoded with ``urllib.parse.quote``,
        keeping letters, digits and ``_.-``, so a name can hold no ``/`` that
        would clash with the key's own separator or a checkpoint's prefix;
        minisd's dotted names come through unchanged):

        - ``"lr"``: the current learning rate (float);
        - ``"num_steps"``: calls to ``step`` so far (int);
        - ``"step/<name>"``: updates that parameter has received (int);
        - ``"momentum_buffer/<name>"``: its momentum buffer (a copy, on the
          parameter's device), present once the parameter has been updated
          with ``momentum > 0``.

        Hyper-parameters other than ``lr`` come from the constructor, not the
        state (so a resumed run may change them on purpose).
        """
        state = {_LR: self.lr, _NUM_STEPS: self.num_steps}
        buffers = self.buffers
        for name, _, _ in self.params:
            key = quote(name, safe="._-")
            state[_STEP + key] = self.steps[name]
            if buffers[name] is not None:
                state[_BUF + key] = buffers[name].copy()
        return state

    def load_state_dict(self, state: dict):
        """Restore a :meth:`state_dict` (also as read back from an ``.npz``: 0-d arrays are fine).

        Buffers are copied into this optimizer's (flat) momentum buffer, on the
        parameter's device and dtype; a parameter without one in ``state``
        starts from zero, which makes its first update ``buf = d``. Raises
        ``KeyError`` when the keys do not fit these parameters and
        ``ValueError`` for a wrong shape; nothing changes unless all fit.
        """
        expected = {_LR, _NUM_STEPS}
        steps, buffers = {}, {}
        for name, p, _ in self.params:
            key = quote(name, safe="._-")
            step_key, buf_key = _STEP + key, _BUF + key
            if step_key not in state:
                raise KeyError(f"optimizer state has no {step_key!r}")
            steps[name] = int(state[step_key])
            expected.add(step_key)
            if buf_key in state:
                expected.add(buf_key)
                value = state[buf_key]
                if tuple(value.shape) != tuple(p.shape):
                    raise ValueError(f"optimizer state {buf_key!r} has shape {tuple(value.shape)}, expected {p.shape}")
                buffers[name] = to_device(value, device_of(p)).astype(p.dtype, copy=False)
            elif self.momentum and steps[name] > 0:
                raise KeyError(f"optimizer state has no {buf_key!r} although {name} was updated "
                               f"{steps[name]} times with momentum")
            else:
                buffers[name] = None
        missing = sorted(k for k in (_LR, _NUM_STEPS) if k not in state)
        unexpected = sorted(k for k in state if k not in expected)
        if missing or unexpected:
            raise KeyError(f"optimizer state does not fit: missing {missing}, unexpected {[unquote(k) for k in unexpected[:5]]}")
        self.lr, self.num_steps = float(state[_LR]), int(state[_NUM_STEPS])
        self.steps = steps
        for name, view in self._momentum_views.items():
            if buffers[name] is None:
                view.fill(0)
            else:
                view[...] = buffers[name]
        return self

    def __repr__(self):
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay}, "
                f"nesterov={self.nesterov}, dropped={self.dropped!r}, params={len(self.params)})")


@fuse
def sgd_update(xp, w, g, buf, lr, momentum, weight_decay, *, nesterov):
    """One SGD step on ``w``, in place: the formula of :class:`SGD`, for one array.

    w: the weights; g: their gradient, or ``None`` for a zero gradient (a dropped
    block in ``"paper"`` mode: the grad buffer is not read); buf: the momentum
    buffer, updated in place (zero before the first update, so that
    ``momentum * buf + d`` is ``d`` then), or ``None`` without momentum;
    weight_decay: a number, or ``None`` for no decay term. Any shape, as long as
    all arrays have the same. On the GPU this is one kernel (see :func:`minisd.backend.fuse`).
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


class _Group:
    """Parameters updated together: views of one flat array, or a single parameter.

    ``params``, ``grads`` and ``momentum`` are arrays laid out alike (flat for a
    group of views, the parameter's own shape for a single one); parameter
    ``names[i]``, of shape ``shapes[i]``, is ``bounds[i] = (start, stop)`` of them.
    """

    def __init__(self, params, grads, names, shapes, bounds, with_momentum):
        self.params, self.grads, self.names, self.shapes, self.bounds = params, grads, names, shapes, bounds
        self.momentum = get_xp(params).zeros_like(params) if with_momentum else None

    def momentum_views(self):
        """(name, its part of the momentum buffer, in the parameter's shape), for each parameter."""
        if self.momentum is None:
            return []
        if len(self.names) == 1:
            return [(self.names[0], self.momentum)]
        return [(name, self.momentum[a:b].reshape(shape))
                for name, shape, (a, b) in zip(self.names, self.shapes, self.bounds)]

    def runs(self, inactive):
        """``(w, g, buf, names, active)`` for each run of consecutive parameters alike (all active or all not)."""
        if len(self.names) == 1:
            yield self.params, self.grads, self.momentum, self.names, self.names[0] not in inactive
            return
        start = 0
        for i, name in enumerate(self.names):
            last = i + 1 == len(self.names)
            active = name not in inactive
            if last or (self.names[i + 1] not in inactive) != active:
                a, b = self.bounds[start][0], self.bounds[i][1]
                buf = None if self.momentum is None else self.momentum[a:b]
                yield self.params[a:b], self.grads[a:b], buf, self.names[start:i + 1], active
                start = i + 1


def _pieces(w, g, buf):
    """``(w, g, buf)`` whole on the GPU; on NumPy, flat runs cut in slices of :data:`CPU_CHUNK`."""
    if get_xp(w) is not np or w.ndim != 1 or w.size <= CPU_CHUNK:
        yield w, g, buf
        return
    for a in range(0, w.size, CPU_CHUNK):
        part = slice(a, a + CPU_CHUNK)
        yield w[part], (None if g is None else g[part]), (None if buf is None else buf[part])


def _groups(params, with_momentum):
    """Split ``(name, p, g)`` triples into :class:`_Group` s, each updated by one :func:`sgd_update` per run.

    Parameters whose arrays are contiguous views that exactly tile one flat
    parameter array and one flat gradient array, at the same offsets (what
    ``Module.flatten_parameters`` makes), form one group; every other
    parameter is a group of its own.
    """
    tiles, groups = {}, []
    for name, p, g in params:
        fp, fg = p.base, g.base
        if (fp is not None and fg is not None and fp.ndim == 1 and fp.shape == fg.shape and fp.dtype == p.dtype
                and fg.dtype == g.dtype and p.flags.c_contiguous and g.flags.c_contiguous
                and offset_in_base(p) == offset_in_base(g)):
            tiles.setdefault((id(fp), id(fg)), (fp, fg, []))[2].append((offset_in_base(p), name, p, g))
        else:
            groups.append(_Group(p, g, [name], [p.shape], [(0, p.size)], with_momentum))
    for fp, fg, members in tiles.values():
        members.sort(key=lambda m: m[0])
        bounds = [(start, start + p.size) for start, _, p, _ in members]
        exact = bounds[0][0] == 0 and bounds[-1][1] == fp.size and all(
            b0[1] == b1[0] for b0, b1 in zip(bounds, bounds[1:]))
        if exact:
            groups.append(_Group(fp, fg, [name for _, name, _, _ in members], [p.shape for _, _, p, _ in members],
                                 bounds, with_momentum))
        else:  # views of something else: one by one
            groups += [_Group(p, g, [name], [p.shape], [(0, p.size)], with_momentum) for _, name, p, g in members]
    return groups


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
