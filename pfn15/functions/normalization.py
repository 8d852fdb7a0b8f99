"""Batch normalization (optionally followed by ReLU) on CPU, over channels-last rows.

Same contract as `chainer.functions.batch_normalization` /
`fixed_batch_normalization` for 4-D x (N, C, H, W) and per-channel gamma, beta
(axis (0, 2, 3)), with an optional ReLU fused in: `relu=True` gives
relu(bn(x)) in one node, so the pair stores one array instead of two and the
mask comes from the output.

Training mode (batch statistics): the per-channel sums of x and x^2 come from
one GEMV-like reduction each over the (N*H*W, C) rows, then y = x*a + b with
a = gamma/std, b = beta - mean*a (one read of x, one write of y). The running
averages are updated exactly as Chainer's BatchNormalization does:
  avg_mean = decay*avg_mean + (1-decay)*mean,
  avg_var  = decay*avg_var  + (1-decay)*m/(m-1)*var   (m = N*H*W).
Backward: sum(gy) and sum(gy*x) per channel, then gx = gy*a' + x*b' + c'.
"""
import numpy
from chainer import function_node

from pfn15.functions import _first_order
from pfn15.functions._layout import nchw, nhwc
from pfn15.functions._parallel import chunk_rows, in_chunks, over_ranges

# The per-channel sums: a chunk (chunk_rows, <= 512 KiB) is summed in float32
# while it is in cache, the chunks' sums are added in float64. Plain float64
# reductions (dtype=float64) measured 3-6x slower; one float32 sum over all
# N*H*W rows (100k at the stem) would lose digits.


def _channel_sums(r, q=None, lo=0, hi=None):
    """Per-column sums of rows lo..hi of an (M, C) matrix r, and of r*q if q is
    given (float64)."""
    c = r.shape[1]
    hi = r.shape[0] if hi is None else hi
    step = chunk_rows(c * r.itemsize)
    s = numpy.zeros(c)
    d = numpy.zeros(c) if q is not None else None
    for i in range(lo, hi, step):
        j = min(i + step, hi)
        rc = r[i:j]
        s += numpy.add.reduce(rc, axis=0)
        if q is not None:
            d += numpy.einsum('mc,mc->c', rc, q[i:j])
    return s, d


def _tiled(v, dtype, row_bytes, rows):
    """A per-channel vector repeated over a chunk's rows (at most `rows`):
    multiplying a chunk by it is one flat loop, where broadcasting runs one
    short loop per row (measured 7.4 vs 10.5 ms for x*a+b then ReLU over
    (25600, 256) float32)."""
    return numpy.tile(numpy.asarray(v, dtype), (min(rows, chunk_rows(row_bytes)), 1))


def _sum_parts(parts):
    s = sum(p[0] for p in parts)
    d = sum(p[1] for p in parts) if parts[0][1] is not None else None
    return s, d


def _affine(x_rows, a, b, relu, shape):
    """relu?(x*a + b) per row, on the threads; the NCHW view of the NHWC result."""
    y = numpy.empty_like(x_rows)
    row_bytes = y[:1].nbytes
    a, b = (_tiled(v, y.dtype, row_bytes, len(y)) for v in (a, b))
    zero = y.dtype.type(0)

    def rows(lo, hi):
        yr = y[lo:hi]
        k = hi - lo
        numpy.multiply(x_rows[lo:hi], a[:k], out=yr)
        yr += b[:k]
        if relu:
            numpy.maximum(yr, zero, out=yr)
    over_ranges(in_chunks(rows, row_bytes), len(y), y.nbytes)
    return nchw(y.reshape(shape))


def _backward_sums(node, x, grad_outputs):
    """What both BN backwards start from: x as (rows, channels), the output
    gradient masked by the fused ReLU (if any), and its per-channel sums."""
    x_rows = nhwc(x).reshape(-1, x.shape[1])
    gy = nhwc(grad_outputs[0].array).reshape(x_rows.shape)
    y = None
    if node.relu:
        y = nhwc(node.get_retained_outputs()[0].array).reshape(x_rows.shape)
    return (x_rows,) + tuple(_masked_sums(gy, y, x_rows))


def _masked_sums(gy_rows, y_rows, x_rows):
    """(g, sum(g), sum(g*x)): g = gy where the ReLU output y is > 0 (or gy itself
    when y is None), and its per-channel sums, on the threads. The mask is a
    multiply (numpy.where measured 5-8x slower)."""
    g = gy_rows if y_rows is None else numpy.empty_like(gy_rows)

    def rows(lo, hi):
        if y_rows is not None:
            numpy.multiply(gy_rows[lo:hi], y_rows[lo:hi] > 0, out=g[lo:hi])
        return _channel_sums(g, x_rows, lo, hi)
    gsum, gxsum = _sum_parts(over_ranges(rows, len(g), g.nbytes))
    return g, gsum, gxsum


class BatchNormalization(function_node.FunctionNode):
    """relu?(bn(x, gamma, beta)) with batch statistics; updates running stats."""

    def __init__(self, eps=2e-5, running_mean=None, running_var=None, decay=0.9, relu=False):
        self.eps = eps
        self.running_mean = running_mean
        self.running_var = running_var
        self.decay = decay
        self.relu = relu

    def forward_cpu(self, inputs):
        x, gamma, beta = inputs
        xh = nhwc(x)
        x_rows = xh.reshape(-1, xh.shape[3])
        m = x_rows.shape[0]
        sums, squares = _sum_parts(over_ranges(
            lambda lo, hi: _channel_sums(x_rows, x_rows, lo, hi), m, x_rows.nbytes))
        mean = sums / m
        var = numpy.maximum(squares / m - mean * mean, 0.0)
        inv_std = 1.0 / numpy.sqrt(var + self.eps)
        a = gamma.astype(numpy.float64) * inv_std
        b = beta.astype(numpy.float64) - mean * a
        y = _affine(x_rows, a, b, self.relu, xh.shape)
        if self.running_mean is not None:
            adjust = m / max(m - 1., 1.)  # unbiased variance, as Chainer
            d = self.decay
            self.running_mean *= d
            self.running_mean += ((1 - d) * mean).astype(self.running_mean.dtype)
            self.running_var *= d
            self.running_var += ((1 - d) * adjust * var).astype(self.running_var.dtype)
        self.mean, self.inv_std = mean, inv_std
        self.retain_inputs((0, 1))
        if self.relu:
            self.retain_outputs((0,))
        return y,

    def backward(self, indexes, grad_outputs):
        x, gamma = (v.array for v in self.get_retained_inputs())
        x_rows, g, gbeta, gx_dot = _backward_sums(self, x, grad_outputs)
        m = x_rows.shape[0]
        mean, inv_std = self.mean, self.inv_std
        ggamma = (gx_dot - mean * gbeta) * inv_std
        gx = None
        if 0 in indexes:
            # gx = gamma*inv_std * (g - gbeta/m - xhat*ggamma/m), xhat = (x-mean)*inv_std,
            #    = g*a + x*b + c
            a = gamma.astype(numpy.float64) * inv_std
            b = -a * inv_std * ggamma / m
            c = -a * gbeta / m - b * mean
            gx_rows = numpy.empty_like(g)
            row_bytes = g[:1].nbytes
            a, b, c = (_tiled(v, g.dtype, row_bytes, m) for v in (a, b, c))

            def rows(lo, hi):
                out = gx_rows[lo:hi]
                k = hi - lo
                numpy.multiply(g[lo:hi], a[:k], out=out)
                tmp = numpy.multiply(x_rows[lo:hi], b[:k])
                out += tmp
                out += c[:k]
            over_ranges(in_chunks(rows, row_bytes), m, g.nbytes)
            gx = nchw(gx_rows.reshape(nhwc(x).shape))
        grads = (gx, ggamma.astype(gamma.dtype), gbeta.astype(gamma.dtype))
        return _first_order.wrap(self, indexes, grads, grad_outputs)


class FixedBatchNormalization(function_node.FunctionNode):
    """relu?(gamma * (x - mean) / sqrt(var + eps) + beta) with given statistics."""

    def __init__(self, eps=2e-5, relu=False):
        self.eps = eps
        self.relu = relu

    def forward_cpu(self, inputs):
        x, gamma, beta, mean, var = inputs
        xh = nhwc(x)
        inv_std = 1.0 / numpy.sqrt(var.astype(numpy.float64) + self.eps)
        a = gamma.astype(numpy.float64) * inv_std
        b = beta.astype(numpy.float64) - mean * a
        self.inv_std = inv_std
        self.retain_inputs((0, 1, 3))
        if self.relu:
            self.retain_outputs((0,))
        return _affine(xh.reshape(-1, xh.shape[3]), a, b, self.relu, xh.shape),

    def backward(self, indexes, grad_outputs):
        x, gamma, mean = (v.array for v in self.get_retained_inputs())
        x_rows, g, gbeta, gx_dot = _backward_sums(self, x, grad_outputs)
        inv_std = self.inv_std
        a = gamma.astype(numpy.float64) * inv_std
        # sum(g * xhat) = (sum(g*x) - mean*sum(g)) * inv_std
        ggamma = (gx_dot - mean * gbeta) * inv_std
        gx = None
        if 0 in indexes:
            gx = nchw(numpy.multiply(g, a.astype(g.dtype)).reshape(nhwc(x).shape))
        dt = gamma.dtype
        grads = (gx, ggamma.astype(dt), gbeta.astype(dt), (-a * gbeta).astype(dt),
                 (-0.5 * gamma * inv_std * inv_std * ggamma).astype(dt))
        return _first_order.wrap(self, indexes, grads, grad_outputs)


def batch_normalization(x, gamma, beta, eps=2e-5, running_mean=None, running_var=None,
                        decay=0.9, relu=False):
    """Training-mode BN (+ReLU) with batch statistics; same as F.batch_normalization
    (then F.relu when relu=True)."""
    return BatchNormalization(eps, running_mean, running_var, decay, relu).apply(
        (x, gamma, beta))[0]


def fixed_batch_normalization(x, gamma, beta, mean, var, eps=2e-5, relu=False):
    """Test-mode BN (+ReLU); same as F.fixed_batch_normalization (then F.relu)."""
    return FixedBatchNormalization(eps, relu).apply((x, gamma, beta, mean, var))[0]
