"""Batch normalization (optionally followed by ReLU) on CPU, over channels-last rows.

Same contract as `chainer.functions.batch_normalization` /
`fixed_batch_normalization` for 4-D x (N, C, H, W) and per-channel gamma, beta
(axis (0, 2, 3)), with an optional ReLU fused in: `relu=True` gives
relu(bn(x)) in one node, so the pair stores one array instead of two and the
mask comes from the output.

Training mode (batch statistics): the per-channel sums of d = x - shift and
d^2 over the (N*H*W, C) rows, then mean = shift + sum(d)/m and
var = sum(d^2)/m - (sum(d)/m)^2, and y = x*a + b with a = gamma/std,
b = beta - mean*a (one read of x, one write of y). E[x^2] - E[x]^2 in float32
loses all digits of the variance when a channel's mean is ~1000 standard
deviations from 0; the shift, the mean of a strided sample of rows, is near
the mean, x - shift is exact in float32 there, and what cancels is only
(mean - shift)^2 against var. (Should the sample miss the mean by over
FAR_SHIFT standard deviations, the sums are redone from the mean found.)
Always shifted: a shift taken or not by a threshold would make runs that
differ only in summation order take different paths. Where the mean is over
FAR_MEAN standard deviations from 0 the affine steps use x - shift too. The
running averages are updated exactly as
Chainer's BatchNormalization does:
  avg_mean = decay*avg_mean + (1-decay)*mean,
  avg_var  = decay*avg_var  + (1-decay)*m/(m-1)*var   (m = N*H*W).
Backward: sum(gy) and sum(gy*d) per channel, then gx = gy*a' + x*b' + c'.

4-D NumPy float32/float64 x with 1-D gamma run here (shapes and dtypes
checked as Chainer checks them); other x (float16, other ranks, CuPy) go to
Chainer's functions.
"""
import chainer.functions as F
import numpy
from chainer import function_node
from chainer.utils import type_check

from pfn15.functions import _first_order
from pfn15.functions._layout import nchw, nhwc
from pfn15.functions._parallel import chunk_rows, in_chunks, over_ranges

# The per-channel sums: a chunk (chunk_rows, <= 512 KiB) is summed in float32
# while it is in cache, the chunks' sums are added in float64. Plain float64
# reductions (dtype=float64) measured 3-6x slower; one float32 sum over all
# N*H*W rows (100k at the stem) would lose digits.


# Rows of the sample whose mean is the shift (strided over the whole batch).
SHIFT_SAMPLE = 64
# Should the statistics show a mean more than FAR_SHIFT standard deviations
# from the shift (a sample that missed it), they are summed again from the mean.
FAR_SHIFT = 4.0
# Above this |mean|/std the affine steps subtract the shift first: x*a + b
# would lose log2(ratio) bits of y to the rounding of x*a.
FAR_MEAN = 64.0


def _shift(x_rows):
    """A per-channel value near the mean: the mean of a strided row sample."""
    step = max(1, len(x_rows) // SHIFT_SAMPLE)
    sample = x_rows[::step][:SHIFT_SAMPLE]
    return sample.mean(axis=0, dtype=numpy.float64).astype(x_rows.dtype)


def _channel_sums(x, shift, g=None, lo=0, hi=None):
    """Per-column (sum(v), sum(v*d)) over rows lo..hi of an (M, C) matrix x (float64),
    d = x - shift, v = g's rows if g is given, else d."""
    c = x.shape[1]
    hi = x.shape[0] if hi is None else hi
    step = chunk_rows(c * x.itemsize)
    shift = _tiled(shift, x.dtype, c * x.itemsize, hi - lo)
    d = numpy.empty_like(shift)
    s = numpy.zeros(c)
    p = numpy.zeros(c)
    for i in range(lo, hi, step):
        j = min(i + step, hi)
        di = numpy.subtract(x[i:j], shift[:j - i], out=d[:j - i])
        v = di if g is None else g[i:j]
        s += numpy.add.reduce(v, axis=0)
        p += numpy.einsum('mc,mc->c', v, di)
    return s, p


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


def _far(mean, inv_std):
    return bool(numpy.max(numpy.abs(mean) * inv_std, initial=0.0) > FAR_MEAN)


def _affine(x_rows, a, b, relu, shape, shift=None):
    """relu?((x - shift)*a + b) per row (shift None: x*a + b), on the threads; the
    NCHW view of the NHWC result."""
    y = numpy.empty_like(x_rows)
    row_bytes = y[:1].nbytes
    a, b = (_tiled(v, y.dtype, row_bytes, len(y)) for v in (a, b))
    if shift is not None:
        shift = _tiled(shift, y.dtype, row_bytes, len(y))
    zero = y.dtype.type(0)

    def rows(lo, hi):
        yr = y[lo:hi]
        k = hi - lo
        if shift is None:
            numpy.multiply(x_rows[lo:hi], a[:k], out=yr)
        else:
            numpy.subtract(x_rows[lo:hi], shift[:k], out=yr)
            yr *= a[:k]
        yr += b[:k]
        if relu:
            numpy.maximum(yr, zero, out=yr)
    over_ranges(in_chunks(rows, row_bytes), len(y), y.nbytes)
    return nchw(y.reshape(shape))


def _backward_sums(node, x, grad_outputs, shift):
    """What both BN backwards start from: x as (rows, channels), the output
    gradient masked by the fused ReLU (if any), and its per-channel sums
    sum(g), sum(g*(x - shift))."""
    x_rows = nhwc(x).reshape(-1, x.shape[1])
    gy = nhwc(grad_outputs[0].array).reshape(x_rows.shape)
    y = None
    if node.relu:
        y = nhwc(node.get_retained_outputs()[0].array).reshape(x_rows.shape)
    return (x_rows,) + tuple(_masked_sums(gy, y, x_rows, shift))


def _masked_sums(gy_rows, y_rows, x_rows, shift):
    """(g, sum(g), sum(g*(x - shift))): g = gy where the ReLU output y is > 0 (or gy
    itself when y is None), and its per-channel sums, on the threads. The mask is
    a multiply (numpy.where measured 5-8x slower)."""
    g = gy_rows if y_rows is None else numpy.empty_like(gy_rows)

    def rows(lo, hi):
        if y_rows is not None:
            numpy.multiply(gy_rows[lo:hi], y_rows[lo:hi] > 0, out=g[lo:hi])
        return _channel_sums(x_rows, shift, g, lo, hi)
    gsum, gxsum = _sum_parts(over_ranges(rows, len(g), g.nbytes))
    return g, gsum, gxsum


def _check_types(in_types, n_params):
    """Chainer's checks for x (N, C, H, W) and per-channel parameters, as InvalidType."""
    x_type, gamma_type = in_types[0], in_types[1]
    type_check.expect(
        x_type.dtype.kind == 'f',
        x_type.ndim == 4,
        gamma_type.dtype.kind == 'f',
        gamma_type.ndim == 1,
        gamma_type.shape[0] == x_type.shape[1],
    )
    for t in in_types[2:2 + n_params]:
        type_check.expect(t.dtype == gamma_type.dtype, t.shape == gamma_type.shape)



def update_running(running_mean, running_var, mean, var, m, decay):
    """Chainer's running averages, in place: the batch's `mean` and its variance
    made unbiased over the `m` values per channel."""
    adjust = m / max(m - 1., 1.)
    running_mean *= decay
    running_mean += ((1 - decay) * mean).astype(running_mean.dtype)
    running_var *= decay
    running_var += ((1 - decay) * adjust * var).astype(running_var.dtype)

class BatchNormalization(function_node.FunctionNode):
    """relu?(bn(x, gamma, beta)) with batch statistics; updates running stats."""

    def __init__(self, eps=2e-5, running_mean=None, running_var=None, decay=0.9, relu=False):
        self.eps = eps
        self.running_mean = running_mean
        self.running_var = running_var
        self.decay = decay
        self.relu = relu

    def check_type_forward(self, in_types):
        type_check.expect(in_types.size() == 3)
        _check_types(in_types, 1)

    def forward_cpu(self, inputs):
        x, gamma, beta = inputs
        xh = nhwc(x)
        x_rows = xh.reshape(-1, xh.shape[3])
        m = x_rows.shape[0]
        shift = _shift(x_rows)
        mean, var, offset = self._statistics(x_rows, shift)
        if numpy.any(offset * offset > FAR_SHIFT ** 2 * var):
            shift = mean.astype(x.dtype)   # the sample missed the mean: once more from it
            mean, var, offset = self._statistics(x_rows, shift)
        inv_std = 1.0 / numpy.sqrt(var + self.eps)
        a = gamma.astype(numpy.float64) * inv_std
        if _far(mean, inv_std):
            y = _affine(x_rows, a, beta - offset * a, self.relu, xh.shape, shift)
        else:
            y = _affine(x_rows, a, beta - mean * a, self.relu, xh.shape)
        if self.running_mean is not None:
            update_running(self.running_mean, self.running_var, mean, var, m, self.decay)
        self.mean, self.inv_std, self.shift = mean, inv_std, shift
        self.retain_inputs((0, 1))
        if self.relu:
            self.retain_outputs((0,))
        return y,

    @staticmethod
    def _statistics(x_rows, shift):
        """Per-channel mean, variance and mean - shift (float64)."""
        m = x_rows.shape[0]
        sums, squares = _sum_parts(over_ranges(
            lambda lo, hi: _channel_sums(x_rows, shift, None, lo, hi), m, x_rows.nbytes))
        offset = sums / m
        mean = shift + offset
        return mean, numpy.maximum(squares / m - offset * offset, 0.0), offset

    def backward(self, indexes, grad_outputs):
        x, gamma = (v.array for v in self.get_retained_inputs())
        mean, inv_std, shift = self.mean, self.inv_std, self.shift
        x_rows, g, gbeta, gd_dot = _backward_sums(self, x, grad_outputs, shift)
        m = x_rows.shape[0]
        ggamma = (gd_dot - (mean - shift) * gbeta) * inv_std
        gx = None
        if 0 in indexes:
            # gx = gamma*inv_std * (g - gbeta/m - xhat*ggamma/m), xhat = (x-mean)*inv_std,
            #    = g*a + (x - s)*b + c, s = shift where the mean is far from 0, else 0
            far = _far(mean, inv_std)
            s = shift if far else 0.0
            a = gamma.astype(numpy.float64) * inv_std
            b = -a * inv_std * ggamma / m
            c = -a * gbeta / m - b * (mean - s)
            gx_rows = numpy.empty_like(g)
            row_bytes = g[:1].nbytes
            a, b, c = (_tiled(v, g.dtype, row_bytes, m) for v in (a, b, c))
            s = _tiled(shift, g.dtype, row_bytes, m) if far else None

            def rows(lo, hi):
                out = gx_rows[lo:hi]
                k = hi - lo
                numpy.multiply(g[lo:hi], a[:k], out=out)
                if s is None:
                    tmp = numpy.multiply(x_rows[lo:hi], b[:k])
                else:
                    tmp = numpy.subtract(x_rows[lo:hi], s[:k])
                    tmp *= b[:k]
                out += tmp
                out += c[:k]
            over_ranges(in_chunks(rows, row_bytes), m, g.nbytes)
            gx = nchw(gx_rows.reshape(nhwc(x).shape))
        if gx is not None:
            gx = gx.astype(x.dtype, copy=False)
        grads = (gx, ggamma.astype(gamma.dtype), gbeta.astype(gamma.dtype))
        return _first_order.wrap(self, indexes, grads, grad_outputs)


class FixedBatchNormalization(function_node.FunctionNode):
    """relu?(gamma * (x - mean) / sqrt(var + eps) + beta) with given statistics."""

    def __init__(self, eps=2e-5, relu=False):
        self.eps = eps
        self.relu = relu

    def check_type_forward(self, in_types):
        type_check.expect(in_types.size() == 5)
        _check_types(in_types, 3)

    def forward_cpu(self, inputs):
        x, gamma, beta, mean, var = inputs
        xh = nhwc(x)
        x_rows = xh.reshape(-1, xh.shape[3])
        mean = mean.astype(numpy.float64)
        inv_std = 1.0 / numpy.sqrt(var.astype(numpy.float64) + self.eps)
        a = gamma.astype(numpy.float64) * inv_std
        self.inv_std = inv_std
        self.retain_inputs((0, 1, 3, 4))
        if self.relu:
            self.retain_outputs((0,))
        if _far(mean, inv_std):
            shift = mean.astype(x.dtype)
            y = _affine(x_rows, a, beta - (mean - shift) * a, self.relu, xh.shape, shift)
        else:
            y = _affine(x_rows, a, beta - mean * a, self.relu, xh.shape)
        return y,

    def backward(self, indexes, grad_outputs):
        x, gamma, mean, _ = (v.array for v in self.get_retained_inputs())
        mean = mean.astype(numpy.float64)
        inv_std = self.inv_std
        shift = mean.astype(x.dtype)
        x_rows, g, gbeta, gd_dot = _backward_sums(self, x, grad_outputs, shift)
        a = gamma.astype(numpy.float64) * inv_std
        # sum(g * xhat) = (sum(g*(x - shift)) - (mean - shift)*sum(g)) * inv_std
        ggamma = (gd_dot - (mean - shift) * gbeta) * inv_std
        gx = None
        if 0 in indexes:
            gx = nchw(numpy.multiply(g, a.astype(g.dtype)).reshape(nhwc(x).shape))
        dt = gamma.dtype
        grads = (gx, ggamma.astype(dt), gbeta.astype(dt), (-a * gbeta).astype(dt),
                 (-0.5 * gamma * inv_std * inv_std * ggamma).astype(dt))
        return _first_order.wrap(self, indexes, grads, grad_outputs)


def _here(x, gamma):
    """Whether pfn15's BN takes these: NumPy float32/float64, 4-D x, 1-D gamma."""
    x, gamma = (getattr(v, 'array', v) for v in (x, gamma))
    return (type(x) is numpy.ndarray and type(gamma) is numpy.ndarray
            and x.dtype in _DTYPES and gamma.dtype in _DTYPES
            and x.ndim == 4 and gamma.ndim == 1)


_DTYPES = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


def batch_normalization(x, gamma, beta, eps=2e-5, running_mean=None, running_var=None,
                        decay=0.9, relu=False):
    """Training-mode BN (+ReLU) with batch statistics; same as F.batch_normalization
    (then F.relu when relu=True)."""
    if not _here(x, gamma):
        y = F.batch_normalization(x, gamma, beta, eps=eps, running_mean=running_mean,
                                  running_var=running_var, decay=decay)
        return F.relu(y) if relu else y
    return BatchNormalization(eps, running_mean, running_var, decay, relu).apply(
        (x, gamma, beta))[0]


def fixed_batch_normalization(x, gamma, beta, mean, var, eps=2e-5, relu=False):
    """Test-mode BN (+ReLU); same as F.fixed_batch_normalization (then F.relu)."""
    if not _here(x, gamma):
        y = F.fixed_batch_normalization(x, gamma, beta, mean, var, eps=eps)
        return F.relu(y) if relu else y
    return FixedBatchNormalization(eps, relu).apply((x, gamma, beta, mean, var))[0]
