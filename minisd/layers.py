"""Layers: thin stateful classes over the forward/backward pairs of ``functional``.

Every layer has ``forward(x)``, ``backward(dout) -> dx``, the dicts ``params`` and ``grads``
(same keys, same shapes: ``weight``, ``bias`` as in PyTorch), ``train()`` / ``eval()`` and
``zero_grad()``. ``backward`` *adds* into ``grads`` (as Torch7 and PyTorch do); ``zero_grad``
clears them. The ``cache`` attribute holds what backward needs, from ``forward`` until
``backward`` has used it (then freed); inside ``with minisd.no_grad():`` a forward keeps none.

Which code computes a layer is decided in one place, :func:`minisd.fast.switch.choose`:
the readable :mod:`minisd.functional` inside ``with minisd.reference():``, else
its fast twin, :mod:`minisd.fast.cpu` for NumPy arrays and :mod:`minisd.fast.gpu`
for CuPy arrays. A layer calls ``impl = switch.choose(x)`` in ``forward`` and
stores its cache tagged with it, ``(impl, cache)``; ``backward`` calls ``impl``'s
twin of what ran.

Containers (:class:`Sequential`, the blocks, the networks) find their sub-layers by looking
at their attributes: names such as ``blocks.3.branch.0.weight`` come free, in a stable order.
"""
from __future__ import annotations

import contextlib
import contextvars
import math

import numpy as np

from . import functional as F
from .fast import switch
from .backend import device_of, get_xp, resolve_device, to_device
from .tracing import traced


# A ContextVar, not a global: each thread (and asyncio task) has its own value, as for reference().
_grad_enabled = contextvars.ContextVar("minisd_grad_enabled", default=True)


@contextlib.contextmanager
def no_grad():
    """Inside this block no layer keeps a cache: a forward holds no activation for a backward.

    For evaluation, where no backward comes: the memory a forward would keep
    for it (every layer's input, more or less) is freed as the forward goes.
    A ``backward`` inside the block raises one ``RuntimeError`` line; so does
    one outside it for a forward made inside. The outputs are the same, and
    batch norm in training mode still updates its running statistics.

    Threads: like :func:`minisd.reference`, the block holds for the thread
    that entered it (a :mod:`contextvars` variable); nesting is allowed.
    Usage: ``net.eval()``, then ``with minisd.no_grad(): logits = net.forward(x)``.
    """
    token = _grad_enabled.set(False)
    try:
        yield
    finally:
        _grad_enabled.reset(token)


def grad_enabled() -> bool:
    """False inside ``with minisd.no_grad():`` (in this thread)."""
    return _grad_enabled.get()


class Module:
    """Base class: parameters, gradients, buffers, train/eval and naming."""

    def __init__(self):
        self.params: dict = {}
        self.grads: dict = {}
        self.buffers: dict = {}  # state that is not trained (BN running statistics)
        self.training = True
        self.cache = None
        self.name = ""
        self._flat = None  # the flat layout of the parameters, once flatten_parameters made one

    # -- the tree of layers --------------------------------------------------

    def named_children(self):
        """Direct sub-layers, in the order they were assigned: (name, module)."""
        for attr, value in vars(self).items():
            if isinstance(value, Module):
                yield attr, value
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Module) for v in value):
                for i, v in enumerate(value):
                    yield f"{attr}.{i}", v

    def named_modules(self, prefix=""):
        """This module and every module below it, depth first: (dotted name, module)."""
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def assign_names(self, prefix=""):
        """Give every module its dotted name (used by errors and the trace)."""
        for name, m in self.named_modules(prefix):
            m.name = name
        return self

    # -- parameters and state ------------------------------------------------

    def parameters(self):
        """Yield ``(name, param, grad)`` for every parameter, in a stable order."""
        for mname, m in self.named_modules():
            for key, p in m.params.items():
                yield (f"{mname}.{key}" if mname else key), p, m.grads[key]

    def zero_grad(self):
        """Set every gradient below this module to zero (one fill per flat array once flattened)."""
        if self._flat is not None and self._flat.zero_grad():
            return
        for m in self.modules():
            for g in m.grads.values():
                g.fill(0)

    def flatten_parameters(self):
        """Put all parameters of one dtype in one flat array, and their gradients in another.

        Torch7's ``getParameters()``: afterwards every layer below holds views of
        the flat arrays, values kept; :meth:`zero_grad` is one fill per flat array
        and :class:`minisd.SGD` one update (the speed appendix,
        :mod:`minisd.fast.flat`). :class:`minisd.ResNet` calls it when built;
        :meth:`to` keeps it. Returns self.
        """
        self._flat = switch.flatten_parameters(self)
        return self

    def train(self, mode: bool = True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def clear_cache(self):
        """Free every cache below this module (nothing is kept for a backward)."""
        for m in self.modules():
            m.cache = None

    def state_dict(self) -> dict:
        """Ordered ``{dotted name: array}`` of parameters and buffers (copies)."""
        state = {}
        for mname, m in self.named_modules():
            for key, a in list(m.params.items()) + list(m.buffers.items()):
                state[f"{mname}.{key}" if mname else key] = a.copy()
        return state

    def load_state_dict(self, state: dict):
        """Copy arrays from ``state`` (as made by :meth:`state_dict`) into this module.

        Every key must be present with the right shape; nothing is changed unless all are.
        """
        targets = {}
        for mname, m in self.named_modules():
            for store in (m.params, m.buffers):
                for key, a in store.items():
                    targets[f"{mname}.{key}" if mname else key] = (store, key, a)
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state if k not in targets]
        if missing or unexpected:
            raise KeyError(f"state_dict does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for k, (_, _, a) in targets.items():
            if tuple(np.shape(state[k])) != tuple(a.shape):
                raise ValueError(f"state_dict[{k!r}] has shape {tuple(np.shape(state[k]))}, expected {a.shape}")
        for k, (store, key, a) in targets.items():
            xp = get_xp(a)
            store[key][...] = xp.asarray(state[k], dtype=a.dtype)
        return self

    def to(self, device: str):
        """Move parameters, gradients and buffers to ``"cpu"`` or ``"gpu"``.

        Moving makes new arrays. An optimizer built earlier would go on updating the
        old ones, so that case is refused: move the model first, then build the optimizer.
        """
        from .optim import held_by_an_optimizer  # optim imports nothing of the layers: no cycle
        moving = [a for m in self.modules() for a in list(m.params.values()) + list(m.grads.values())
                  if device_of(a) != resolve_device(device)]
        if any(held_by_an_optimizer(a) for a in moving):
            raise RuntimeError(f"{self._label()}.to({device!r}): an optimizer was built on this model's "
                               "parameters and would keep updating the old arrays; call .to() first, "
                               "then build the optimizer")
        flat = self._flat is not None
        for m in self.modules():
            for store in (m.params, m.grads, m.buffers):
                for key in store:
                    store[key] = to_device(store[key], device)
            m.cache = None
        return self.flatten_parameters() if flat and moving else self  # flat again, on the new device

    # -- checks shared by the layers -----------------------------------------

    def _save_for_backward(self, *cache):
        """``self.cache = cache`` (a leaf layer's: ``(impl, arrays)``), or nothing inside :func:`no_grad`."""
        self.cache = cache if _grad_enabled.get() else None

    def _check_backward(self):
        if not _grad_enabled.get():
            raise RuntimeError(f"{self._label()}.backward() inside minisd.no_grad(): no layer keeps a cache "
                               "there; run the forward and backward that need gradients outside the block")
        if self.cache is None:
            raise RuntimeError(f"{self._label()}.backward() called before forward() (or twice for one forward: "
                               "the cache is freed after use; or its forward ran inside minisd.no_grad())")

    def _take_cache(self, dout=None):
        """For ``backward``: ``(impl, cache)`` as ``forward`` stored them; frees ``self.cache``.

        ``impl``, the cache's tag, is the module the forward ran on (see
        :mod:`minisd.fast.switch`); a backward in the other mode or on the other
        device raises one clear error. ``dout``: the upstream gradient (None for
        the loss, which is given no array).
        """
        self._check_backward()
        impl, cache = self.cache
        switch.check_backward(impl, self._label(), dout)
        self.cache = None
        return impl, cache

    def _label(self):
        return self.name or type(self).__name__

    def _check_input(self, x, ndim, channels=None, like=None):
        """One clear error for the wrong rank, channel count, dtype or device."""
        label = self._label()
        if not hasattr(x, "ndim") or not hasattr(x, "dtype"):
            raise TypeError(f"{label}: expected a NumPy or CuPy array, got {type(x).__name__}")
        if x.ndim != ndim:
            what = "(N, C, H, W)" if ndim == 4 else "(N, features)"
            raise ValueError(f"{label}: expected a {ndim}-D input {what}, got shape {tuple(x.shape)}")
        if channels is not None and x.shape[1] != channels:
            raise ValueError(f"{label}: expected {channels} input channels/features, got {x.shape[1]} "
                             f"(input shape {tuple(x.shape)})")
        if like is not None:
            if x.dtype != like.dtype:
                raise TypeError(f"{label}: input dtype {x.dtype} does not match the layer's {like.dtype}; "
                                f"cast with x.astype(...) or build the layer with dtype={x.dtype}")
            if device_of(x) != device_of(like):
                raise ValueError(f"{label}: input is on the {device_of(x)} but the layer's parameters are "
                                 f"on the {device_of(like)}; use minisd.to_device(x, ...) or layer.to(...)")

    def _add_grad(self, key, g):
        self.grads[key] += g

    # -- for the trace ---------------------------------------------------------

    in_shape = None  # the shape of the last forward's input: recorded by @traced
    backward_flops_factor = 1

    def flops(self) -> int:
        """FLOPs of the last forward call (elementwise layers count one per element)."""
        return int(np.prod(self.in_shape)) if self.in_shape is not None else 0


class Conv2d(Module):
    """2-D convolution by im2col + matrix product.

    weight: (out_channels, in_channels, k, k), bias: (out_channels,)
    forward: (N, in_channels, H, W) -> (N, out_channels, Ho, Wo)
    Initialised as in the paper's code (``nninit.kaiming``): He normal with
    std sqrt(2 / fan_in), fan_in = in_channels * k * k; bias zero.
    """

    backward_flops_factor = 2  # dx and dweight each cost one forward

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 dtype=np.float32, rng=None):
        super().__init__()
        for what, v in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("kernel_size", kernel_size), ("stride", stride)):
            if int(v) != v or v < 1:
                raise ValueError(f"Conv2d: {what} must be a positive integer, got {v!r}")
        if padding < 0:
            raise ValueError(f"Conv2d: padding must be >= 0, got {padding!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        rng = rng if rng is not None else np.random.default_rng()
        std = math.sqrt(2.0 / (in_channels * kernel_size * kernel_size))  # He et al., fan-in
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.params["weight"] = (rng.standard_normal(shape) * std).astype(dtype)
        self.grads["weight"] = np.zeros(shape, dtype=dtype)
        if bias:
            self.params["bias"] = np.zeros(out_channels, dtype=dtype)
            self.grads["bias"] = np.zeros(out_channels, dtype=dtype)
        self.naive = False  # True: use the textbook loop (slow; for teaching and tests)

    @traced
    def forward(self, x):
        w = self.params["weight"]
        self._check_input(x, 4, self.in_channels, like=w)
        H, W = x.shape[2:]
        if H + 2 * self.padding < self.kernel_size or W + 2 * self.padding < self.kernel_size:
            raise ValueError(f"{self._label()}: input {H}x{W} is smaller than the {self.kernel_size}x"
                             f"{self.kernel_size} kernel (padding {self.padding})")
        impl = switch.choose(x)
        if self.is_matrix_product():  # 1x1, stride 1: a matrix product over the channels, no im2col
            out, cache = impl.conv1x1_forward(x, w)
            self._save_for_backward(impl, ("1x1", cache))
            return out
        fwd = F.conv2d_naive_forward if self.naive else impl.conv2d_forward
        out, cache = fwd(x, w, self.params.get("bias"), self.stride, self.padding)
        self._save_for_backward(impl, ("im2col", cache))
        return out

    def is_matrix_product(self):
        """A 1x1 convolution with stride 1, no padding and no bias (DenseNet's bottlenecks and
        transitions) is one matrix product per image: functional.conv1x1_forward."""
        return (self.kernel_size, self.stride, self.padding) == (1, 1, 0) and "bias" not in self.params \
            and not self.naive

    @traced
    def backward(self, dout):
        impl, (kind, cache) = self._take_cache(dout)
        if kind == "1x1":
            dx, dw = impl.conv1x1_backward(dout, cache)
            self._add_grad("weight", dw)
            return dx
        bwd = F.conv2d_naive_backward if self.naive else impl.conv2d_backward
        dx, dw, db = bwd(dout, cache)  # the naive and im2col caches are alike
        self._add_grad("weight", dw)
        if db is not None:
            self._add_grad("bias", db)
        return dx

    def flops(self):
        if self.in_shape is None:
            return 0
        return F.conv2d_flops(self.in_shape, self.params["weight"].shape, self.stride, self.padding)


class BatchNorm2d(Module):
    """Batch normalisation over N, H, W for each of ``num_features`` channels.

    weight (gamma) 1 and bias (beta) 0 at first, as PyTorch does (the paper's Torch7 code ran
    cudnn's batch norm, which starts gamma uniform in [0, 1): ``weight_init="uniform"``
    gives that, from ``rng``); buffers ``running_mean`` and
    ``running_var`` are updated in training as PyTorch does:
    running = (1 - momentum) * running + momentum * batch, with the *unbiased*
    batch variance. Eval mode normalises with the running statistics.
    """

    backward_flops_factor = 2

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype=np.float32, weight_init="one", rng=None):
        super().__init__()
        if weight_init not in ("one", "uniform"):
            raise ValueError(f"BatchNorm2d: weight_init must be 'one' or 'uniform', got {weight_init!r}")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        for key, value in (("weight", 1.0), ("bias", 0.0)):
            self.params[key] = np.full(num_features, value, dtype=dtype)
            self.grads[key] = np.zeros(num_features, dtype=dtype)
        if weight_init == "uniform":
            rng = rng if rng is not None else np.random.default_rng()
            self.params["weight"][...] = rng.uniform(0.0, 1.0, num_features)
        self.buffers["running_mean"] = np.zeros(num_features, dtype=dtype)
        self.buffers["running_var"] = np.ones(num_features, dtype=dtype)

    @property
    def running_mean(self):
        return self.buffers["running_mean"]

    @property
    def running_var(self):
        return self.buffers["running_var"]

    @traced
    def forward(self, x):
        w, b = self.params["weight"], self.params["bias"]
        self._check_input(x, 4, self.num_features, like=w)
        impl = switch.choose(x)
        if self.training:
            N, C, H, W = x.shape
            m = N * H * W
            if m < 2:
                raise ValueError(f"{self._label()}: batch statistics need more than one value per "
                                 f"channel in training, got input shape {tuple(x.shape)}")
            out, cache = impl.batchnorm_train_forward(x, w, b, self.eps)
            self.update_running_stats(impl, cache, m)
            self._save_for_backward(impl, ("train", cache))
        else:
            out, cache = impl.batchnorm_eval_forward(x, w, b, self.running_mean, self.running_var, self.eps)
            self._save_for_backward(impl, ("eval", cache))
        return out

    def update_running_stats(self, impl, cache, m):
        """Fold a batch's statistics (``cache.mean``, ``cache.var`` of m values) into the running ones: the variance unbiased."""
        impl.batchnorm_running_average(self.running_mean, cache.mean, self.momentum)
        impl.batchnorm_running_average(self.running_var, cache.var, self.momentum, m / (m - 1))

    @traced
    def backward(self, dout):
        impl, (mode, cache) = self._take_cache(dout)
        bwd = impl.batchnorm_train_backward if mode == "train" else impl.batchnorm_eval_backward
        dx, dw, db = bwd(dout, cache)
        self._add_grad("weight", dw)
        self._add_grad("bias", db)
        return dx

    def flops(self):
        return 4 * super().flops()


class ReLU(Module):
    """out = max(x, 0), any shape."""

    @traced
    def forward(self, x):
        impl = switch.choose(x)
        out, cache = impl.relu_forward(x)
        self._save_for_backward(impl, cache)
        return out

    @traced
    def backward(self, dout):
        impl, cache = self._take_cache(dout)
        return impl.relu_backward(dout, cache)


class GlobalAvgPool(Module):
    """(N, C, H, W) -> (N, C): average of each channel map."""

    @traced
    def forward(self, x):
        self._check_input(x, 4)
        impl = switch.choose(x)
        out, cache = impl.global_avg_pool_forward(x)
        self._save_for_backward(impl, cache)
        return out

    @traced
    def backward(self, dout):
        impl, cache = self._take_cache(dout)
        return impl.global_avg_pool_backward(dout, cache)


class AvgPool2d(Module):
    """2x2 average pooling with stride 2 (DenseNet's transitions): (N, C, H, W) -> (N, C, H/2, W/2)."""

    @traced
    def forward(self, x):
        self._check_input(x, 4)
        impl = switch.choose(x)
        out, cache = impl.avg_pool_forward(x)
        self._save_for_backward(impl, cache)
        return out

    @traced
    def backward(self, dout):
        impl, cache = self._take_cache(dout)
        return impl.avg_pool_backward(dout, cache)


class Linear(Module):
    """Fully connected: (N, in_features) -> (N, out_features); weight (out, in).

    Initialised as Torch7 and PyTorch do: weight and bias uniform in
    +-1/sqrt(in_features).
    """

    backward_flops_factor = 2

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, rng=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        rng = rng if rng is not None else np.random.default_rng()
        bound = 1.0 / math.sqrt(in_features)
        self.params["weight"] = rng.uniform(-bound, bound, (out_features, in_features)).astype(dtype)
        self.grads["weight"] = np.zeros((out_features, in_features), dtype=dtype)
        if bias:
            self.params["bias"] = rng.uniform(-bound, bound, out_features).astype(dtype)
            self.grads["bias"] = np.zeros(out_features, dtype=dtype)

    @traced
    def forward(self, x):
        w = self.params["weight"]
        self._check_input(x, 2, self.in_features, like=w)
        impl = switch.choose(x)
        out, cache = impl.linear_forward(x, w, self.params.get("bias"))
        self._save_for_backward(impl, cache)
        return out

    @traced
    def backward(self, dout):
        impl, cache = self._take_cache(dout)
        dx, dw, db = impl.linear_backward(dout, cache)
        self._add_grad("weight", dw)
        if db is not None:
            self._add_grad("bias", db)
        return dx

    def flops(self):
        return 2 * self.in_shape[0] * self.in_features * self.out_features if self.in_shape else 0


class Shortcut(Module):
    """The paper's option-A shortcut: downsample by ``stride``, zero-pad new channels.

    (N, in_channels, H, W) -> (N, out_channels, ceil(H/stride), ceil(W/stride));
    the identity when the shapes match. No parameters. ``downsample``:
    ``"subsample"`` (keep every stride-th pixel: the paper's 2016 runs, the default) or
    ``"avg"`` (the mean of each stride x stride window: the authors' 2017 code); see
    :func:`minisd.functional.shortcut_forward`.
    """

    def __init__(self, in_channels, out_channels, stride=1, downsample="subsample"):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"Shortcut: option A can only add channels ({in_channels} -> {out_channels})")
        if downsample not in F.DOWNSAMPLES:
            raise ValueError(f"Shortcut: downsample must be one of {F.DOWNSAMPLES}, got {downsample!r}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.downsample = downsample

    @traced
    def forward(self, x):
        self._check_input(x, 4, self.in_channels)
        impl = switch.choose(x)
        out, cache = impl.shortcut_forward(x, self.out_channels, self.stride, self.downsample)
        self._save_for_backward(impl, cache)
        return out

    @traced
    def backward(self, dout):
        impl, cache = self._take_cache(dout)
        return impl.shortcut_backward(dout, cache)

    def flops(self):
        return 0


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse."""

    def __init__(self, *layers):
        super().__init__()
        self.layers = list(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def named_children(self):
        for i, layer in enumerate(self.layers):  # "branch.0", as PyTorch names them
            yield str(i), layer

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)


class SoftmaxCrossEntropy(Module):
    """Mean softmax cross-entropy: ``forward(logits, labels) -> loss``, ``backward() -> dlogits``.

    logits: (N, K) float, labels: (N,) integers in [0, K). The loss is a 0-d array.

    ``check_labels``: check every label lies in [0, K). ``None`` (default): NumPy labels only;
    on the GPU reading them back would make the host wait twice per step (minisd's loaders
    check the files once instead); ``True`` checks GPU labels too, at that price.
    """

    def __init__(self, check_labels=None):
        super().__init__()
        self.check_labels = check_labels

    @traced
    def forward(self, logits, labels):
        self._check_input(logits, 2)
        xp = get_xp(logits, labels)
        labels = xp.asarray(labels)
        if labels.shape != (logits.shape[0],) or labels.dtype.kind not in "iu":
            raise ValueError(f"{self._label()}: labels must be {logits.shape[0]} integers, "
                             f"got shape {tuple(labels.shape)} dtype {labels.dtype}")
        K = logits.shape[1]
        check = self.check_labels if self.check_labels is not None else xp is np
        if check and labels.size and (int(labels.min()) < 0 or int(labels.max()) >= K):
            raise ValueError(f"{self._label()}: labels must lie in [0, {K}), got "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        impl = switch.choose(logits)
        loss, cache = impl.softmax_cross_entropy_forward(logits, labels)
        self._save_for_backward(impl, cache)
        return loss

    @traced
    def backward(self, dout=1.0):
        """Gradient of the loss w.r.t. the logits, (N, K); ``dout``: the gradient arriving
        at the loss (1, the default, when the loss is what is minimised)."""
        impl, cache = self._take_cache()  # no array arrives here: the cache is on its forward's device
        return impl.softmax_cross_entropy_backward(dout, cache)

    def flops(self):
        return 5 * super().flops()
