"""The patches ChainerMN 7.8.1 (the last release, 2020) needs on CuPy 13 and 14, in one place.

`apply()` runs when pfn15 creates a communicator (pfn15/comm.py); it is
idempotent and patches module attributes of
chainermn.communicators._memory_utility, which every communicator reaches
through the module (`_memory_utility.unpack_params(...)`). Each patch says
what it restores and why; tests/kernels/test_chainermn_patches.py and
tests/kernels/test_kernels_nvrtc.py test them (the latter: the unpatched kernels fail
to compile on CuPy 14, the patched ones compile on CuPy 13 and 14).

1. `half` in the batched pack/unpack kernels. `_cupy_batched_pack_params` and
   `_cupy_batched_unpack_params` are raw CUDA kernels (every gradient
   all-reduce of pure_nccl packs and unpacks through them, in every dtype)
   that use `half` and include only <cupy/carray.cuh>. Up to CuPy 13,
   carray.cuh included <cuda_fp16.h>, which defines `half`; CuPy 14's does
   not, and NVRTC fails with `identifier "half" is undefined`. The patch
   compiles the same kernel text with `#include <cuda_fp16.h>` in front
   (a no-op on CuPy 13, where carray.cuh includes it anyway).

2. `xp.array(v, copy=False, dtype=...)` in `unpack_params`
   (_memory_utility.py:211), used by `bcast_data` and the gradient unpacking
   when the transfer dtype differs from the parameter's (mixed16: float16
   parameters, float32 transfer). NumPy 2 (and CuPy 14, which follows it)
   made copy=False mean "never copy", so the dtype conversion raises
   `ValueError: Unable to avoid copy`. NumPy 1's meaning was "copy only if
   needed": `xp.asarray(v, dtype=...)`. The patch is ChainerMN's function with
   that one call changed.
"""
import numpy as np

import chainer
from chainermn.communicators import _memory_utility

FP16_INCLUDE = '#include <cuda_fp16.h>\n'

# The kernel getters of patch 1, by attribute name in _memory_utility.
FP16_KERNEL_GETTERS = ('_cupy_batched_pack_params', '_cupy_batched_unpack_params')

_originals = {}


def raw_kernel_source(getter):
    """(code, name) a ChainerMN getter passes to chainer.cuda.raw: its string constants.

    Read from the function's code object, so no CuPy or GPU is needed (the
    kernel-compile tests and the patch use the same text).
    """
    consts = [c for c in getter.__code__.co_consts if isinstance(c, str)]
    code = [c for c in consts if '__global__' in c]
    names = [c for c in consts if c.isidentifier() and c in ''.join(code)]
    if len(code) != 1 or len(names) != 1:
        raise RuntimeError('pfn15.chainermn_patches: %s no longer looks like ChainerMN '
                           '7.8.1\'s kernel getter' % getter.__name__)
    return code[0], names[0]


def fp16_source(code):
    """Patch 1: the kernel text with cuda_fp16.h included first (idempotent)."""
    return code if code.startswith(FP16_INCLUDE) else FP16_INCLUDE + code


def original(name):
    """ChainerMN's own function `name` of _memory_utility, patched or not."""
    return _originals.get(name, getattr(_memory_utility, name))


def _fp16_getter(code, name):
    def getter():
        return chainer.cuda.raw(code, name)   # memoized by Chainer, compiled by CuPy
    getter.__name__ = name
    getter.__doc__ = 'pfn15.chainermn_patches: ChainerMN\'s %s kernel with cuda_fp16.h' % name
    getter.code, getter.kernel_name = code, name   # what it compiles (for the tests)
    return getter


def unpack_params(params, attr_name, buffer, transfer_dtype, zero_fill, stream=None):
    """ChainerMN 7.8.1's _memory_utility.unpack_params, with patch 2 (see the module doc)."""
    if len(params) == 0:
        return
    xp = chainer.backend.get_array_module(getattr(params[0], attr_name))
    offset = 0
    for param in params:
        v = getattr(param, attr_name)
        if attr_name == 'grad' and v is None and zero_fill:
            v = param.xp.empty_like(param.data)
            setattr(param, attr_name, v)
        size = v.size * np.dtype(transfer_dtype).itemsize
        grad_dtype = v.dtype
        if grad_dtype != transfer_dtype:
            v = xp.asarray(v, dtype=transfer_dtype)   # was xp.array(v, copy=False, dtype=...)
        buffer.to_device(v, size, offset, stream)
        offset += size
        if grad_dtype != transfer_dtype:
            # avoid using setattr as ChainerX array cannot be directly updated
            getattr(param, attr_name)[...] = v.astype(grad_dtype)


def apply():
    """Apply both patches to chainermn.communicators._memory_utility (idempotent)."""
    if _originals:
        return
    for attr in FP16_KERNEL_GETTERS:
        getter = getattr(_memory_utility, attr)
        _originals[attr] = getter
        setattr(_memory_utility, attr, _fp16_getter(*_patched_source(getter)))
    _originals['unpack_params'] = _memory_utility.unpack_params
    _memory_utility.unpack_params = unpack_params


def _patched_source(getter):
    code, name = raw_kernel_source(getter)
    return fp16_source(code), name


def patched_kernel_sources():
    """{name: code} of the pack/unpack kernels as the patched ChainerMN compiles them."""
    apply()
    return dict((g.kernel_name, g.code) for g in
                (getattr(_memory_utility, a) for a in FP16_KERNEL_GETTERS))


def unpatched_kernel_sources():
    """{name: code} of the pack/unpack kernels as ChainerMN 7.8.1 ships them."""
    return dict((name, code) for code, name in
                (raw_kernel_source(original(a)) for a in FP16_KERNEL_GETTERS))
