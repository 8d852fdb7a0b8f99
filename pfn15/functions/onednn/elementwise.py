"""ReLU, residual add + ReLU, and the float32 <-> bf16 edges, on oneDNN.

Elementwise work does not care about the layout, so a 4-D array is handed to
oneDNN as the flat NHWC buffer behind it (the output is the NCHW view of an
NHWC buffer again) and any other array as its flat C-order copy.
"""
import numpy
from chainer import function_node

from pfn15.functions import _first_order
from pfn15.functions._layout import nchw
from pfn15.functions.onednn import _common, _lib
from pfn15.functions.onednn._common import ptr


def _flat(x):
    """(flat contiguous buffer, function from a flat buffer of x's size to x's shape)."""
    if x.ndim == 4:
        xh = _common.nhwc_of(x)
        shape = xh.shape
        return xh.reshape(-1), lambda b: nchw(b.reshape(shape))
    xc = numpy.ascontiguousarray(x)
    return xc.reshape(-1), lambda b: b.reshape(x.shape)


def _relu_fwd(size, dt):
    def make():
        m = _lib.md((size,), dt)
        pd = _lib.create_pd('eltwise_forward', _lib.engine(), _lib.FORWARD_TRAINING,
                            _lib.ELTWISE_RELU_USE_DST, m, m, 0.0, 0.0, _lib.attr())
        return _lib.Primitive(pd, (_lib.ARG_SRC, _lib.ARG_DST)), pd
    return _lib.cached(('relu', size, dt), make)


def _relu_bwd(size, dt):
    def make():
        m = _lib.md((size,), dt)
        pd = _lib.create_pd('eltwise_backward', _lib.engine(), _lib.ELTWISE_RELU_USE_DST,
                            m, m, m, 0.0, 0.0, _relu_fwd(size, dt)[1], _lib.attr())
        return _lib.Primitive(pd, (_lib.ARG_DST, _lib.ARG_DIFF_DST, _lib.ARG_DIFF_SRC))
    return _lib.cached(('relu_bwd', size, dt), make)


def _add(size, dt, relu):
    def make():
        m = _lib.md((size,), dt)
        pd = _lib.create_pd('binary', _lib.engine(), _lib.BINARY_ADD, m, m, m,
                            _lib.attr(post_relu=relu))
        return _lib.Primitive(pd, (_lib.ARG_SRC, _lib.ARG_SRC_1, _lib.ARG_DST))
    return _lib.cached(('add', size, dt, relu), make)


def _relu_grad(gy, y):
    """gy where y > 0, else 0, in y's layout."""
    if gy.dtype != y.dtype:
        raise TypeError('pfn15.functions.onednn relu: gradient %s for output %s'
                        % (gy.dtype, y.dtype))
    yf, shape = _flat(y)
    gf = numpy.ascontiguousarray(_common.nhwc_of(gy) if gy.ndim == 4 else gy).reshape(-1)
    out = _common.empty(yf.shape, yf.dtype)
    if out.size:
        _relu_bwd(out.size, _common.dnnl_type(y.dtype))(ptr(yf), ptr(gf),
                                                         ptr(out))
    return shape(out)


class ReLU(function_node.FunctionNode):
    """y = max(x, 0)."""

    def forward_cpu(self, inputs):
        x, = inputs
        xf, shape = _flat(x)
        y = _common.empty(xf.shape, xf.dtype)
        if y.size:
            _relu_fwd(y.size, _common.dnnl_type(x.dtype))[0](ptr(xf), ptr(y))
        self.retain_outputs((0,))
        return shape(y),

    def backward(self, indexes, grad_outputs):
        g = _relu_grad(grad_outputs[0].array, self.get_retained_outputs()[0].array)
        return _first_order.wrap(self, indexes, (g,), grad_outputs)


class AddReLU(function_node.FunctionNode):
    """y = max(a + b, 0); with overwrite_a, y is written over a's NHWC buffer."""

    def __init__(self, overwrite_a=False):
        self.overwrite_a = overwrite_a

    def forward_cpu(self, inputs):
        a, b = inputs
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError('pfn15.functions.onednn.add_relu: %s %s and %s %s differ'
                             % (a.shape, a.dtype, b.shape, b.dtype))
        af, shape = _flat(a)
        bf = _common.nhwc_of(b).reshape(-1) if b.ndim == 4 else \
            numpy.ascontiguousarray(b).reshape(-1)
        # In place, the output's lines are in cache from reading a: a new buffer's
        # are first read from memory (measured 2.2 ms against 3.7 for 26 MB).
        y = af if self.overwrite_a else _common.empty(af.shape, af.dtype)
        if y.size:
            _add(y.size, _common.dnnl_type(a.dtype), True)(ptr(af), ptr(bf), ptr(y))
        self.retain_outputs((0,))
        return shape(y),

    def backward(self, indexes, grad_outputs):
        g = _relu_grad(grad_outputs[0].array, self.get_retained_outputs()[0].array)
        return _first_order.wrap(self, indexes, (g, g), grad_outputs)


def convert(x, dtype):
    """x converted to `dtype` (float32 <-> bf16 storage), same shape and layout."""
    xf, shape = _flat(x)
    out = _common.empty(xf.shape, dtype)
    if out.size:
        src = _lib.md((out.size,), _common.dnnl_type(x.dtype))
        dst = _lib.md((out.size,), _common.dnnl_type(dtype))
        _lib.reorder(src, dst)(ptr(xf), ptr(out))
    return shape(out)


class Convert(function_node.FunctionNode):
    """float32 <-> bfloat16 (uint16 storage), round to nearest even; the gradient
    converts back."""

    def __init__(self, dtype):
        self.dtype = numpy.dtype(dtype)

    def forward_cpu(self, inputs):
        x, = inputs
        self.in_dtype = x.dtype
        return convert(x, self.dtype),

    def backward(self, indexes, grad_outputs):
        g = convert(grad_outputs[0].array, self.in_dtype)
        return _first_order.wrap(self, indexes, (g,), grad_outputs)


class Fork(function_node.FunctionNode):
    """Two uses of one activation, with the sum of their gradients made here.

    Chainer adds the gradients of an array used twice with NumPy's +, which on
    bf16 storage (uint16) would add bit patterns; the model forks every
    activation it uses twice, and this node adds the gradients in bf16.
    """

    def forward_cpu(self, inputs):
        x, = inputs
        return x, x.view()

    def backward(self, indexes, grad_outputs):
        ga, gb = (None if g is None else g.array for g in grad_outputs)
        if ga is None or gb is None:
            g = ga if gb is None else gb
        else:
            af, shape = _flat(ga)
            bf = _common.nhwc_of(gb).reshape(-1) if gb.ndim == 4 else \
                numpy.ascontiguousarray(gb).reshape(-1)
            out = _common.empty(af.shape, af.dtype)
            if out.size:
                _add(out.size, _common.dnnl_type(ga.dtype), False)(
                    ptr(af), ptr(bf), ptr(out))
            g = shape(out)
        return _first_order.wrap(self, indexes, (g,), grad_outputs)


def fork(x):
    """(x, x) as two Variables whose gradients this node adds (needed for bf16)."""
    return Fork().apply((x,))


def relu(x):
    """max(x, 0) on oneDNN; same as F.relu."""
    return ReLU().apply((x,))[0]


def add_relu(a, b, overwrite_a=False):
    """max(a + b, 0) on oneDNN; same as F.relu(a + b). overwrite_a: write the result
    over a's array, for a caller whose `a` is a temporary no one else reads (the
    model's residual branch): it then holds the result."""
    return AddReLU(overwrite_a).apply((a, b))[0]


def to_bf16(x):
    """float32 -> bfloat16 (uint16 storage), for the oneDNN functions' bf16 path."""
    return Convert(_common.BF16_STORAGE).apply((x,))[0]


def to_float32(x):
    """bfloat16 (uint16 storage) -> float32."""
    return Convert(_common.F32).apply((x,))[0]
