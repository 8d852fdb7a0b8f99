"""pfn15's CPU functions: what ResNet training spends its time in, as Chainer FunctionNodes.

Convolution (pfn15/functions/convolution.py), batch normalization with an
optional fused ReLU (normalization.py), ReLU and residual add + ReLU
(activation.py), max pooling (pooling.py). They compute the same values as
Chainer's F.convolution_2d / F.batch_normalization /
F.fixed_batch_normalization / F.relu / F.max_pooling_2d on NumPy arrays of float32 or float64, keep activations channels-last
inside (_layout.py), and have first-order gradients only (a second-order
request raises NotImplementedError, _first_order.py).

pfn15's models use them when `model.cpu_functions` is 'pfn15' (the default)
and the arrays are NumPy float32/float64 (`usable`); on GPU, with float16 or
with 'chainer' they use Chainer's functions.
"""
import numpy

from pfn15.functions.activation import add_relu, relu  # noqa: F401
from pfn15.functions.convolution import convolution_2d  # noqa: F401
from pfn15.functions.normalization import (  # noqa: F401
    batch_normalization, fixed_batch_normalization)
from pfn15.functions.pooling import max_pooling_2d  # noqa: F401

DTYPES = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


def usable(*arrays):
    """Whether pfn15's CPU functions apply: NumPy arrays of one float32/float64 dtype."""
    dtype = None
    for a in arrays:
        a = getattr(a, 'array', a)
        if type(a) is not numpy.ndarray or a.dtype not in DTYPES:
            return False
        if dtype is not None and a.dtype != dtype:
            return False
        dtype = a.dtype
    return True
