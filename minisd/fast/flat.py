"""Flat parameters: every weight in one array, every gradient in another, and SGD on them in one call.

Torch7's ``getParameters()``, which the paper's code calls once. After
:func:`flatten_parameters` the ``params`` and ``grads`` of every layer hold
views (reshaped slices) of one flat array per dtype and device, in the order of
``Module.parameters()``, with their values kept. A layer notices nothing: it
reads its weights and adds into its gradients in place. What changes is the
number of array operations outside the layers:

* ``zero_grad`` is one fill per flat array (:meth:`FlatLayout.zero_grad`);
* :class:`minisd.SGD` updates each flat array with one call of its formula
  (:class:`FlatSGD`) instead of one per parameter: one GPU kernel instead of
  hundreds. Dropped blocks cut a flat array into a few runs of consecutive
  parameters, active or not, one call each. On NumPy a run is cut into
  slices of :data:`CPU_CHUNK` elements, so the formula's temporaries stay in
  the CPU cache.

The layout hands SGD its groups: :func:`flatten_parameters` registers each
flat group, and :func:`sgd_groups` finds the group of each parameter it is
given by the parameter array itself. The numbers are those of the update one
parameter at a time, bit for bit (tests/test_optim.py).

The core reaches this module only through :mod:`minisd.fast.switch`; it
imports nothing of the layers or the optimizer.
"""
from __future__ import annotations

import weakref

import numpy as np

from ..backend import device_of, get_xp

# Elements per call of the SGD formula on NumPy: its temporaries (a few arrays
# of this size) then stay in the CPU cache instead of being fresh memory each
# step (the gain is in benchmarks/RESULTS.md). On the GPU a run is one call: one kernel.
CPU_CHUNK = 1 << 16

# id(a parameter view) -> the FlatGroup that holds it (the group holds the view, so the id stays its own)
_GROUP_OF = weakref.WeakValueDictionary()


class FlatGroup:
    """The parameters of one dtype and device, as views of ``params``; their gradients, of ``grads``.

    ``members[i] = (module, key, param view, grad view)``, in the order of
    ``parameters()``; parameter ``i`` is ``params[bounds[i][0]:bounds[i][1]]``.
    """

    def __init__(self, members):
        first = members[0][0].params[members[0][1]]
        xp, size = get_xp(first), sum(m.params[key].size for m, key in members)
        self.params, self.grads = xp.empty(size, dtype=first.dtype), xp.empty(size, dtype=first.dtype)
        self.members, self.bounds, start = [], [], 0
        for m, key in members:
            p, g = m.params[key], m.grads[key]
            part = slice(start, start + p.size)
            self.params[part], self.grads[part] = p.reshape(-1), g.reshape(-1)
            m.params[key], m.grads[key] = self.params[part].reshape(p.shape), self.grads[part].reshape(p.shape)
            self.members.append((m, key, m.params[key], m.grads[key]))
            self.bounds.append((start, start + p.size))
            start += p.size
        self.index = {id(p): i for i, (_, _, p, _) in enumerate(self.members)}
        for _, _, p, _ in self.members:
            _GROUP_OF[id(p)] = self

    def is_current(self) -> bool:
        """Whether every layer's gradient still is the view put there (a new array by hand is not)."""
        return all(m.grads.get(key) is g for m, key, _, g in self.members)


class FlatLayout:
    """What :func:`flatten_parameters` made for one module: its :class:`FlatGroup` s."""

    def __init__(self, groups):
        self.groups = groups

    def zero_grad(self) -> bool:
        """One fill per flat gradient; False (nothing done) once a layer's gradient was replaced."""
        if not all(group.is_current() for group in self.groups):
            return False
        for group in self.groups:
            group.grads.fill(0)
        return True


def flatten_parameters(module) -> FlatLayout:
    """Put the parameters below ``module`` of one dtype and device in one flat array, their gradients in another.

    A flat layout of a sub-module goes stale and is dropped. Putting a new
    array in a layer's dict by hand afterwards leaves that one out (flatten again).
    """
    slots = {}  # (dtype, device) -> [(module, key)], in the order of parameters()
    for _, m in module.named_modules():
        m._flat = None
        for key, p in m.params.items():
            slots.setdefault((p.dtype, device_of(p)), []).append((m, key))
    return FlatLayout([FlatGroup(members) for members in slots.values()])


# ---------------------------------------------------------------------------
# SGD on flat arrays
# ---------------------------------------------------------------------------


class _SGDGroup:
    """One :class:`FlatGroup` as one optimizer sees it: its names for the members, and a flat momentum buffer."""

    def __init__(self, group, names, with_momentum):
        self.group, self.names = group, names
        self.momentum = get_xp(group.params).zeros_like(group.params) if with_momentum else None

    def momentum_view(self, i):
        """Member ``i``'s part of the momentum buffer, in its parameter's shape."""
        (a, b), p = self.group.bounds[i], self.group.members[i][2]
        return self.momentum[a:b].reshape(p.shape)

    def runs(self, inactive):
        """``(w, g, buf, names, active)`` for each run of consecutive members alike (all active or all not)."""
        start, g = 0, self.group
        for i, name in enumerate(self.names):
            active = name not in inactive
            if i + 1 == len(self.names) or (self.names[i + 1] not in inactive) != active:
                a, b = g.bounds[start][0], g.bounds[i][1]
                buf = None if self.momentum is None else self.momentum[a:b]
                yield g.params[a:b], g.grads[a:b], buf, self.names[start:i + 1], active
                start = i + 1


class FlatSGD:
    """SGD's update of the parameters that tile flat arrays: one call of the formula per run."""

    def __init__(self, groups):
        self.groups = groups

    def step(self, update, inactive):
        """Call ``update(w, g, buf, active)`` (SGD's update of one array) on each run; return the names it updated."""
        done = []
        for group in self.groups:
            for w, g, buf, names, active in group.runs(inactive):
                updated = False
                for piece in _pieces(w, g, buf):
                    updated = update(*piece, active)
                if updated:
                    done += names
        return done


def _pieces(w, g, buf):
    """``(w, g, buf)`` whole on the GPU; on NumPy, cut in slices of :data:`CPU_CHUNK` elements."""
    if get_xp(w) is not np or w.size <= CPU_CHUNK:
        yield w, g, buf
        return
    for a in range(0, w.size, CPU_CHUNK):
        part = slice(a, a + CPU_CHUNK)
        yield w[part], g[part], (None if buf is None else buf[part])


def sgd_groups(params, state, with_momentum):
    """SGD's fast path for ``params``, ``(name, p, g)`` triples: ``(FlatSGD or None, the triples left)``.

    A flat group is used when every one of its members is among ``params``,
    with the group's own parameter and gradient views; its members' momentum
    buffers in ``state`` (``state[name]["momentum_buffer"]``) become views of
    one flat buffer. Every other parameter is left for the optimizer to update
    on its own.
    """
    found = {}  # id(group) -> (group, {member index: name})
    for name, p, g in params:
        group = _GROUP_OF.get(id(p))
        if group is not None and group.members[group.index[id(p)]][3] is g:
            found.setdefault(id(group), (group, {}))[1][group.index[id(p)]] = name
    groups, covered = [], set()
    for group, names in found.values():
        if len(names) == len(group.members):
            sgd_group = _SGDGroup(group, [names[i] for i in range(len(names))], with_momentum)
            groups.append(sgd_group)
            covered.update(names.values())
            if with_momentum:
                for i, name in enumerate(sgd_group.names):
                    state[name]["momentum_buffer"] = sgd_group.momentum_view(i)
    rest = [(name, p, g) for name, p, g in params if name not in covered]
    return (FlatSGD(groups) if groups else None), rest
