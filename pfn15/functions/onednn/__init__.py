"""pfn15's CPU functions on oneDNN (libdnnl.so.3 from the onednn-cpu-gomp wheel).

Convolution forward / backward-data / backward-weights, batch normalization
(batch statistics or fixed ones, ReLU fused), max and global average
pooling, ReLU and residual add + ReLU, as Chainer FunctionNodes with the
contracts of pfn15.functions (and so of Chainer's functions), first-order
gradients only. Activations are NHWC buffers seen as NCHW views
(pfn15/functions/_layout.py), float32 or bfloat16 (NumPy uint16 holding the
bits; to_bf16 / to_float32 convert at the network's edges); parameters and
their gradients are float32. See docs/onednn.md.
"""
import numpy

from pfn15.functions.onednn._lib import (  # noqa: F401
    OneDNNError, load, load_error, set_threads, version)
from pfn15.functions.onednn.convolution import convolution_2d  # noqa: F401
from pfn15.functions.onednn.elementwise import (  # noqa: F401
    add_relu, fork, relu, to_bf16, to_float32)  # noqa: F401
from pfn15.functions.onednn.normalization import (  # noqa: F401
    batch_normalization, fixed_batch_normalization)
from pfn15.functions.onednn.pooling import global_average_pooling, max_pooling_2d  # noqa: F401
from pfn15.functions.onednn._common import BF16_STORAGE  # noqa: F401

DTYPES = (numpy.dtype(numpy.float32), BF16_STORAGE)


def available():
    """Whether libdnnl loads here."""
    return load() is not None


def usable(*arrays):
    """Whether the oneDNN functions apply: the library loads and the arrays are NumPy
    float32 (or bf16 storage for activations)."""
    for a in arrays:
        a = getattr(a, 'array', a)
        if type(a) is not numpy.ndarray or a.dtype not in DTYPES:
            return False
    return available()


# dnnl_cpu_isa_avx512_core_bf16: its bits are part of every later ISA (FP16, AMX).
_AVX512_CORE_BF16 = 0xe7


def bf16_supported():
    """Whether oneDNN runs bfloat16 natively here (AVX512_BF16 or AMX), from the
    effective ISA it dispatches to."""
    lib = load()
    if lib is None:
        return False
    isa = lib.dnnl_get_effective_cpu_isa()
    return (isa & _AVX512_CORE_BF16) == _AVX512_CORE_BF16
