"""Batch normalization (optionally with the ReLU fused) on oneDNN.

Same contract as pfn15.functions.batch_normalization /
fixed_batch_normalization (Chainer's F.batch_normalization then F.relu): x
(N, C, H, W) float32 or bf16 storage, gamma/beta/statistics float32 of shape
(C,). oneDNN computes the mean first and the variance around it (no
E[x^2] - E[x]^2), and with `dnnl_fuse_norm_relu` keeps the ReLU's mask in a
workspace bitmap instead of a second activation. The batch statistics it
returns are the ones the model needs: running averages are updated exactly as
Chainer's BatchNormalization does (pfn15/bn.py averages them over workers).
"""
import numpy
from chainer import function_node

from pfn15.functions import _first_order
from pfn15.functions.normalization import update_running
from pfn15.functions.onednn import _common, _lib
from pfn15.functions.onednn._common import ptr

_F = _lib.USE_SCALE | _lib.USE_SHIFT


def _primitives(shape, dt, eps, flags):
    def make():
        src = _lib.md(shape, dt)
        fwd = _lib.create_pd('batch_normalization_forward', _lib.engine(),
                             _lib.FORWARD_TRAINING, src, src, eps, flags, _lib.attr())
        bwd = _lib.create_pd('batch_normalization_backward', _lib.engine(), _lib.BACKWARD,
                             src, src, src, eps, flags, fwd, _lib.attr())
        relu = bool(flags & _lib.FUSE_NORM_RELU)
        ws = (_lib.ARG_WORKSPACE,) if relu else ()
        if flags & _lib.USE_GLOBAL_STATS:
            f_args = (_lib.ARG_SRC, _lib.ARG_MEAN, _lib.ARG_VARIANCE, _lib.ARG_SCALE,
                      _lib.ARG_SHIFT, _lib.ARG_DST) + ws
        else:
            f_args = (_lib.ARG_SRC, _lib.ARG_SCALE, _lib.ARG_SHIFT, _lib.ARG_DST,
                      _lib.ARG_MEAN, _lib.ARG_VARIANCE) + ws
        b_args = (_lib.ARG_SRC, _lib.ARG_MEAN, _lib.ARG_VARIANCE, _lib.ARG_DIFF_DST,
                  _lib.ARG_SCALE) + ws + (_lib.ARG_DIFF_SRC, _lib.ARG_DIFF_SCALE,
                                          _lib.ARG_DIFF_SHIFT)
        f, b = _lib.Primitive(fwd, f_args), _lib.Primitive(bwd, b_args)
        return f, b, (f.size(_lib.ARG_WORKSPACE) if relu else 0)
    return _lib.cached(('bn', tuple(shape), dt, float(eps), flags), make)


def _vector(v, c, what):
    v = numpy.ascontiguousarray(v, dtype=numpy.float32)
    if v.shape != (c,):
        raise ValueError('pfn15.functions.onednn batch normalization: %s has shape %s, '
                         'x has %d channels' % (what, v.shape, c))
    return v


def _check_x(x):
    if x.ndim != 4:
        raise ValueError('pfn15.functions.onednn batch normalization: x must be 4-D '
                         '(N, C, H, W), not of shape %s' % (x.shape,))
    return _common.dnnl_type(x.dtype)


class _Base(function_node.FunctionNode):

    def _forward(self, x, gamma, beta, mean, var, flags):
        c = x.shape[1]
        dt = _check_x(x)
        self.flags, self.dt = flags, dt
        fwd, _, ws_size = _primitives(x.shape, dt, self.eps, flags)
        xh = _common.nhwc_of(x)
        gamma, beta = _vector(gamma, c, 'gamma'), _vector(beta, c, 'beta')
        ybuf, y = _common.empty_nchw(*x.shape, x.dtype)
        self.ws = _common.empty(ws_size, numpy.uint8) if ws_size else None
        ws = (ptr(self.ws),) if ws_size else ()
        if flags & _lib.USE_GLOBAL_STATS:
            fwd(ptr(xh), ptr(mean), ptr(var), ptr(gamma),
                ptr(beta), ptr(ybuf), *ws)
        else:
            fwd(ptr(xh), ptr(gamma), ptr(beta), ptr(ybuf),
                ptr(mean), ptr(var), *ws)
        self.mean, self.var = mean, var
        return y

    def _backward(self, x, gamma, gy):
        _, bwd, _ = _primitives(x.shape, self.dt, self.eps, self.flags)
        c = x.shape[1]
        if gy.dtype != x.dtype:
            raise TypeError('pfn15.functions.onednn batch normalization: gradient %s for '
                            'output %s' % (gy.dtype, x.dtype))
        xh, gyh = _common.nhwc_of(x), _common.nhwc_of(gy)
        gamma = _vector(gamma, c, 'gamma')
        gxbuf, gx = _common.empty_nchw(*x.shape, x.dtype)
        ggamma = _common.empty(c, numpy.float32)
        gbeta = _common.empty(c, numpy.float32)
        ws = (ptr(self.ws),) if self.ws is not None else ()
        bwd(ptr(xh), ptr(self.mean), ptr(self.var), ptr(gyh),
            ptr(gamma), *ws, ptr(gxbuf), ptr(ggamma), ptr(gbeta))
        return gx, ggamma, gbeta


class BatchNormalization(_Base):
    """relu?(bn(x, gamma, beta)) with batch statistics; updates running stats."""

    def __init__(self, eps=2e-5, running_mean=None, running_var=None, decay=0.9, relu=False):
        self.eps = float(eps)
        self.running_mean = running_mean
        self.running_var = running_var
        self.decay = decay
        self.relu = relu

    def forward_cpu(self, inputs):
        x, gamma, beta = inputs
        c = x.shape[1] if x.ndim == 4 else 0
        mean = _common.empty(c, numpy.float32)
        var = _common.empty(c, numpy.float32)
        flags = _F | (_lib.FUSE_NORM_RELU if self.relu else 0)
        y = self._forward(x, gamma, beta, mean, var, flags)
        if self.running_mean is not None:
            update_running(self.running_mean, self.running_var, mean, var, x.size // c,
                           self.decay)
        self.retain_inputs((0, 1))
        return y,

    def backward(self, indexes, grad_outputs):
        x, gamma = (v.array for v in self.get_retained_inputs())
        gx, ggamma, gbeta = self._backward(x, gamma, grad_outputs[0].array)
        dt = gamma.dtype
        grads = (gx, ggamma.astype(dt, copy=False), gbeta.astype(dt, copy=False))
        return _first_order.wrap(self, indexes, grads, grad_outputs)


class FixedBatchNormalization(_Base):
    """relu?(gamma * (x - mean) / sqrt(var + eps) + beta) with given statistics."""

    def __init__(self, eps=2e-5, relu=False):
        self.eps = float(eps)
        self.relu = relu

    def forward_cpu(self, inputs):
        x, gamma, beta, mean, var = inputs
        c = x.shape[1] if x.ndim == 4 else 0
        mean, var = _vector(mean, c, 'mean'), _vector(var, c, 'var')
        flags = _F | _lib.USE_GLOBAL_STATS | (_lib.FUSE_NORM_RELU if self.relu else 0)
        y = self._forward(x, gamma, beta, mean, var, flags)
        self.retain_inputs((0, 1))
        return y,

    def backward(self, indexes, grad_outputs):
        x, gamma = (v.array for v in self.get_retained_inputs())
        gx, ggamma, gbeta = self._backward(x, gamma, grad_outputs[0].array)
        inv_std = 1.0 / numpy.sqrt(self.var.astype(numpy.float64) + self.eps)
        g64 = gamma.astype(numpy.float64)
        dt = gamma.dtype
        grads = (gx, ggamma.astype(dt, copy=False), gbeta.astype(dt, copy=False),
                 (-g64 * inv_std * gbeta).astype(dt),
                 (-0.5 * g64 * inv_std * inv_std * ggamma).astype(dt))
        return _first_order.wrap(self, indexes, grads, grad_outputs)


def batch_normalization(x, gamma, beta, eps=2e-5, running_mean=None, running_var=None,
                        decay=0.9, relu=False):
    """Training-mode BN (+ReLU) on oneDNN; same as F.batch_normalization (then F.relu)."""
    return BatchNormalization(eps, running_mean, running_var, decay, relu).apply(
        (x, gamma, beta))[0]


def fixed_batch_normalization(x, gamma, beta, mean, var, eps=2e-5, relu=False):
    """BN (+ReLU) with given statistics on oneDNN; same as F.fixed_batch_normalization."""
    return FixedBatchNormalization(eps, relu).apply((x, gamma, beta, mean, var))[0]
