"""What the oneDNN functions share: the bf16 storage type, buffers, layouts."""
import math

import numpy

from pfn15.functions._layout import nchw, nhwc
from pfn15.functions.onednn import _lib

# bfloat16 activations travel between the oneDNN functions as NumPy uint16
# arrays holding the bf16 bits (NumPy has no bfloat16); only to_bf16 /
# to_float32 (edges of the network) convert.
BF16_STORAGE = numpy.dtype(numpy.uint16)
F32 = numpy.dtype(numpy.float32)


def dnnl_type(dtype):
    """oneDNN's data type for an activation array's dtype."""
    if dtype == F32:
        return _lib.F32
    if dtype == BF16_STORAGE:
        return _lib.BF16
    raise TypeError('pfn15.functions.onednn computes float32 or bf16 (uint16 storage), '
                    'not %s' % dtype)


def nhwc_of(x):
    """The NHWC-contiguous buffer behind an NCHW-shaped array (view or copy)."""
    return nhwc(x)


# oneDNN's kernels load and store whole 64-byte cache lines (AVX-512); glibc
# gives large NumPy arrays 16-byte alignment, so every vector access of a
# buffer from numpy.empty would straddle two lines.
ALIGN = 64


def empty(shape, dtype):
    """numpy.empty(shape, dtype) whose data starts on a 64-byte boundary."""
    dtype = numpy.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    raw = numpy.empty(math.prod(shape) * dtype.itemsize + ALIGN, numpy.uint8)
    return numpy.ndarray(shape, dtype, raw, -ptr(raw) % ALIGN)


def empty_nchw(n, c, h, w, dtype):
    """A new NHWC buffer and its NCHW view."""
    buf = empty((n, h, w, c), dtype)
    return buf, nchw(buf)


ptr = _lib.ptr


# (primitive, argument) -> None (W as it is) or (reorder, bytes): a primitive is
# made for one weight shape and lives as long as the process.
_weight_reorders = {}


def weights_for(prim, arg, W):
    """W (float32 OIHW, or a vector) in the layout/type the primitive chose for `arg`:
    W itself when they agree, else a reordered copy (a uint8 buffer)."""
    key = (id(prim), arg)
    if key not in _weight_reorders:
        user = _lib.md(W.shape, _lib.F32, _lib.TAG_ABCD if W.ndim == 4 else None)
        want = prim.mds[arg]
        _weight_reorders[key] = None if _lib.md_equal(user, want) else (
            _lib.reorder(user, want), _lib.md_size(want))
    plan = _weight_reorders[key]
    W = numpy.ascontiguousarray(W)
    if plan is None:
        return W
    reorder, nbytes = plan
    out = empty(nbytes, numpy.uint8)
    reorder(ptr(W), ptr(out))
    return out
