"""The speed appendix: the readable functions of :mod:`minisd.functional`, made fast.

* :mod:`minisd.fast.switch`: the one place that chooses which code runs a layer
  (``minisd.reference()`` forces the readable code); the core reaches this folder only here;
* :mod:`minisd.fast.cpu`: the CPU twins (threads, cache-sized chunks, long copies);
* :mod:`minisd.fast.gpu`: the GPU twins (gathers, fused kernels);
* :mod:`minisd.fast.threads`: the thread pool and per-thread scratch buffers of the CPU twins;
* :mod:`minisd.fast.flat`: the flat-parameter buffers (Torch7's ``getParameters``) and SGD's
  one update per flat array.

Each twin is tested equal to its readable function (tests/test_fast_cpu.py, test_fast_gpu.py).
"""
