"""Max pooling and global average pooling on oneDNN.

max_pooling_2d: Chainer's contract with cover_all=False (padding never wins;
the gradient goes to the window's first maximum, oneDNN's workspace records
it). global_average_pooling: F.average(x, axis=(2, 3)) for float32 or bf16
storage x, the result float32 (N, C) -- the edge where activations leave the
oneDNN layout for Chainer's fully connected layer.
"""
import numpy
from chainer import function_node

from pfn15.functions import _first_order
from pfn15.functions.onednn import _common, _lib
from pfn15.functions.onednn._common import ptr
from pfn15.functions.onednn.elementwise import convert


def _max_primitives(shape, k, s, p, dt):
    n, c, h, w = shape
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1

    def make():
        src = _lib.md(shape, dt)
        dst = _lib.md((n, c, ho, wo), dt)
        args = (_lib.dims((s, s)), _lib.dims((k, k)), _lib.dims((0, 0)), _lib.dims((p, p)),
                _lib.dims(((ho - 1) * s + k - h - p, (wo - 1) * s + k - w - p)))
        fwd = _lib.create_pd('pooling_forward', _lib.engine(), _lib.FORWARD_TRAINING,
                             _lib.POOLING_MAX, src, dst, *args, _lib.attr())
        bwd = _lib.create_pd('pooling_backward', _lib.engine(), _lib.POOLING_MAX, src, dst,
                             *args, fwd, _lib.attr())
        f = _lib.Primitive(fwd, (_lib.ARG_SRC, _lib.ARG_DST, _lib.ARG_WORKSPACE))
        b = _lib.Primitive(bwd, (_lib.ARG_DIFF_DST, _lib.ARG_WORKSPACE, _lib.ARG_DIFF_SRC))
        return f, b, f.size(_lib.ARG_WORKSPACE), (ho, wo)
    return _lib.cached(('maxpool', tuple(shape), k, s, p, dt), make)


class MaxPooling2D(function_node.FunctionNode):
    """y = max over k x k windows (stride, pad; cover_all=False)."""

    def __init__(self, ksize, stride, pad):
        self.k, self.s, self.p = int(ksize), int(stride), int(pad)
        if self.p >= self.k:
            raise ValueError('pfn15.functions.onednn.max_pooling_2d: pad %d >= ksize %d'
                             % (self.p, self.k))

    def forward_cpu(self, inputs):
        x, = inputs
        if x.ndim != 4:
            raise ValueError('pfn15.functions.onednn.max_pooling_2d: x must be 4-D, not %s'
                             % (x.shape,))
        self.dt = _common.dnnl_type(x.dtype)
        self.x_shape, self.x_dtype = x.shape, x.dtype
        fwd, _, ws_size, (ho, wo) = _max_primitives(x.shape, self.k, self.s, self.p, self.dt)
        xh = _common.nhwc_of(x)
        ybuf, y = _common.empty_nchw(x.shape[0], x.shape[1], ho, wo, x.dtype)
        self.ws = _common.empty(ws_size, numpy.uint8)
        fwd(ptr(xh), ptr(ybuf), ptr(self.ws))
        return y,

    def backward(self, indexes, grad_outputs):
        _, bwd, _, _ = _max_primitives(self.x_shape, self.k, self.s, self.p, self.dt)
        gyh = _common.nhwc_of(grad_outputs[0].array)
        gxbuf, gx = _common.empty_nchw(*self.x_shape, self.x_dtype)
        bwd(ptr(gyh), ptr(self.ws), ptr(gxbuf))
        return _first_order.wrap(self, indexes, (gx,), grad_outputs)


def _avg_primitives(shape):
    n, c, h, w = shape

    def make():
        src = _lib.md(shape, _lib.F32)
        dst = _lib.md((n, c, 1, 1), _lib.F32)
        args = (_lib.dims((1, 1)), _lib.dims((h, w)), _lib.dims((0, 0)), _lib.dims((0, 0)),
                _lib.dims((0, 0)))
        fwd = _lib.create_pd('pooling_forward', _lib.engine(), _lib.FORWARD_TRAINING,
                             _lib.POOLING_AVG_EXCLUDE_PADDING, src, dst, *args, _lib.attr())
        bwd = _lib.create_pd('pooling_backward', _lib.engine(),
                             _lib.POOLING_AVG_EXCLUDE_PADDING, src, dst, *args, fwd,
                             _lib.attr())
        return (_lib.Primitive(fwd, (_lib.ARG_SRC, _lib.ARG_DST)),
                _lib.Primitive(bwd, (_lib.ARG_DIFF_DST, _lib.ARG_DIFF_SRC)))
    return _lib.cached(('gap', tuple(shape)), make)


class GlobalAveragePooling(function_node.FunctionNode):
    """y[n, c] = mean of x[n, c, :, :]; y float32 (a bf16 x is widened first: oneDNN 3.2
    has no bf16 -> f32 average pooling)."""

    def forward_cpu(self, inputs):
        x, = inputs
        if x.ndim != 4:
            raise ValueError('pfn15.functions.onednn.global_average_pooling: x must be 4-D')
        self.x_shape, self.x_dtype = x.shape, x.dtype
        _common.dnnl_type(x.dtype)
        if x.dtype == _common.BF16_STORAGE:
            x = convert(x, _common.F32)
        fwd, _ = _avg_primitives(x.shape)
        xh = _common.nhwc_of(x)
        y = _common.empty(x.shape[:2], numpy.float32)
        fwd(ptr(xh), ptr(y))
        return y,

    def backward(self, indexes, grad_outputs):
        _, bwd = _avg_primitives(self.x_shape)
        gy = numpy.ascontiguousarray(grad_outputs[0].array, numpy.float32)
        gxbuf, gx = _common.empty_nchw(*self.x_shape, numpy.float32)
        bwd(ptr(gy), ptr(gxbuf))
        if self.x_dtype == _common.BF16_STORAGE:
            gx = convert(gx, _common.BF16_STORAGE)
        return _first_order.wrap(self, indexes, (gx,), grad_outputs)


def max_pooling_2d(x, ksize, stride, pad=0):
    """oneDNN max pooling; same as F.max_pooling_2d(..., cover_all=False)."""
    return MaxPooling2D(ksize, stride, pad).apply((x,))[0]


def global_average_pooling(x):
    """Mean over H and W of x (N, C, H, W) -> (N, C) float32; same as F.average(x, (2, 3))."""
    return GlobalAveragePooling().apply((x,))[0]
