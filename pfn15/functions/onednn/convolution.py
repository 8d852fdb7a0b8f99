"""2-D convolution on oneDNN: forward, backward-data and backward-weights primitives.

Same contract as `chainer.functions.convolution_2d` without bias, groups or
dilation (cover_all=False). Activations are NHWC buffers seen as NCHW views
(pfn15/functions/_layout.py), which oneDNN reads and writes in place; the
weights stay float32 OIHW (Chainer's parameter) and are reordered each call
into the blocked layout (and, for bf16, the type) the primitive chose; the
weight gradient comes back float32 OIHW (for 1x1 layers from a matrix
product written straight in that layout). Primitive descriptors are
made once per shape.
"""
import numpy
from chainer import function_node

from pfn15.functions import _first_order
from pfn15.functions.onednn import _common, _lib
from pfn15.functions.onednn._common import ptr


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _primitives(xs, ws, stride, pad, dt):
    n, c, h, w = xs
    co, ci, kh, kw = ws
    sy, sx = stride
    py, px = pad
    ho = (h + 2 * py - kh) // sy + 1
    wo = (w + 2 * px - kw) // sx + 1
    key = ('conv', xs, ws, stride, pad, dt)

    def make():
        src = _lib.md((n, c, h, w), dt)
        dst = _lib.md((n, co, ho, wo), dt)
        wany = _lib.md(ws, dt, _lib.ANY)
        args = (_lib.dims((sy, sx)), _lib.dims((0, 0)), _lib.dims((py, px)),
                _lib.dims(((ho - 1) * sy + kh - h - py, (wo - 1) * sx + kw - w - px)))
        fwd = _lib.create_pd('convolution_forward', _lib.engine(), _lib.FORWARD_TRAINING,
                             _lib.CONVOLUTION_DIRECT, src, wany, None, dst, *args, _lib.attr())
        bwd_d = _lib.create_pd('convolution_backward_data', _lib.engine(),
                               _lib.CONVOLUTION_DIRECT, src, wany, dst, *args, fwd, _lib.attr())
        if (kh, kw, py, px) == (1, 1, 0, 0):
            grad_w = _MatmulWeightGradient(n * ho * wo, c, co, dt, stride)
        else:
            bwd_w = _lib.create_pd('convolution_backward_weights', _lib.engine(),
                                   _lib.CONVOLUTION_DIRECT, src, _lib.md(ws, _lib.F32, _lib.ANY),
                                   None, dst, *args, fwd, _lib.attr())
            grad_w = _ConvWeightGradient(bwd_w, ws)
        return (_lib.Primitive(fwd, (_lib.ARG_SRC, _lib.ARG_WEIGHTS, _lib.ARG_DST)),
                _lib.Primitive(bwd_d, (_lib.ARG_DIFF_DST, _lib.ARG_WEIGHTS, _lib.ARG_DIFF_SRC)),
                grad_w, (ho, wo))
    return _lib.cached(key, make)


class _ConvWeightGradient:
    """gW from the backward-weights primitive: in the blocked layout it chose,
    then reordered into gW (float32 OIHW)."""

    def __init__(self, pd, ws):
        self.prim = _lib.Primitive(pd, (_lib.ARG_SRC, _lib.ARG_DIFF_DST, _lib.ARG_DIFF_WEIGHTS))
        user = _lib.md(ws, _lib.F32, _lib.TAG_ABCD)
        self.chosen = self.prim.mds[_lib.ARG_DIFF_WEIGHTS]
        self.to_user = None if _lib.md_equal(user, self.chosen) else _lib.reorder(self.chosen, user)
        self.chosen_bytes = _lib.md_size(self.chosen)

    def __call__(self, xh, gyh, gW):
        if self.to_user is None:
            self.prim(ptr(xh), ptr(gyh), ptr(gW))
        else:
            tmp = _common.empty(self.chosen_bytes, numpy.uint8)
            self.prim(ptr(xh), ptr(gyh), ptr(tmp))
            self.to_user(ptr(tmp), ptr(gW))


class _MatmulWeightGradient:
    """gW of a 1x1 convolution as one matrix product on the NHWC buffers,
    gW (O x C) = gy^T (O x NHoWo) x (NHoWo x C), written straight into float32
    OIHW: no reorder of the gradient, and oneDNN's matmul is faster here than its
    1x1 backward-weights kernels (docs/onednn.md). A strided layer's x is first
    copied at the pixels the stride reads (a quarter of x at stride 2)."""

    def __init__(self, m, c, co, dt, stride=(1, 1)):
        self.stride = tuple(stride)
        pd = _lib.create_pd('matmul', _lib.engine(),
                            _lib.md((co, m), dt, strides=(1, co)),     # gy^T
                            _lib.md((m, c), dt, strides=(c, 1)),       # x
                            None, _lib.md((co, c), _lib.F32, strides=(c, 1)), _lib.attr())
        self.prim = _lib.Primitive(pd, (_lib.ARG_SRC, _lib.ARG_WEIGHTS, _lib.ARG_DST))

    def __call__(self, xh, gyh, gW):
        if self.stride != (1, 1):
            sy, sx = self.stride
            strided = xh[:, ::sy, ::sx, :]
            xh = _common.empty(strided.shape, strided.dtype)
            xh[...] = strided
        self.prim(ptr(gyh), ptr(xh), ptr(gW))


class Convolution2D(function_node.FunctionNode):
    """y = conv(x, W) on oneDNN; x float32 or bf16 storage, W float32."""

    def __init__(self, stride=1, pad=0):
        self.stride = _pair(stride)
        self.pad = _pair(pad)

    def forward_cpu(self, inputs):
        x, W = inputs
        if x.ndim != 4 or W.ndim != 4 or x.shape[1] != W.shape[1]:
            raise ValueError('pfn15.functions.onednn.convolution_2d: x %s and W %s do not fit'
                             % (x.shape, W.shape))
        if W.dtype != _common.F32:
            raise TypeError('pfn15.functions.onednn.convolution_2d: W must be float32, not %s'
                            % W.dtype)
        dt = _common.dnnl_type(x.dtype)
        fwd, _, _, (ho, wo) = _primitives(x.shape, W.shape, self.stride, self.pad, dt)
        if ho <= 0 or wo <= 0:
            raise ValueError('pfn15.functions.onednn.convolution_2d: output would be %dx%d'
                             % (ho, wo))
        self.dt = dt
        xh = _common.nhwc_of(x)
        w = _common.weights_for(fwd, _lib.ARG_WEIGHTS, W)
        ybuf, y = _common.empty_nchw(x.shape[0], W.shape[0], ho, wo, x.dtype)
        fwd(ptr(xh), ptr(w), ptr(ybuf))
        self.retain_inputs((0, 1))
        return y,

    def backward(self, indexes, grad_outputs):
        x, W = (v.array for v in self.get_retained_inputs())
        gy = grad_outputs[0].array
        _, bwd_d, grad_w, _ = _primitives(x.shape, W.shape, self.stride, self.pad, self.dt)
        if gy.dtype != x.dtype:
            raise TypeError('pfn15.functions.onednn.convolution_2d: gradient %s for output %s'
                            % (gy.dtype, x.dtype))
        gyh = _common.nhwc_of(gy)
        gx = gW = None
        if 0 in indexes:
            w = _common.weights_for(bwd_d, _lib.ARG_WEIGHTS, W)
            gxbuf, gx = _common.empty_nchw(*x.shape, x.dtype)
            bwd_d(ptr(gyh), ptr(w), ptr(gxbuf))
        if 1 in indexes:
            xh = _common.nhwc_of(x)
            gW = _common.empty(W.shape, numpy.float32)
            grad_w(xh, gyh, gW)
        return _first_order.wrap(self, indexes, (gx, gW), grad_outputs)


def convolution_2d(x, W, stride=1, pad=0):
    """oneDNN convolution (no bias); same results as F.convolution_2d (cover_all=False)."""
    return Convolution2D(stride, pad).apply((x, W))[0]
