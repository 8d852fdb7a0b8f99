"""Max pooling on CPU over channels-last images (ResNet's 3x3/2 stem pooling).

Same contract as `chainer.functions.max_pooling_2d(x, k, stride, pad,
cover_all=False)`: the window's maximum, padding never wins, and the gradient
goes to the first maximum of each window in (row, column) order, as Chainer's
argmax does. The output is the NCHW view of an NHWC buffer, so the next
convolution reads it without a copy (Chainer's comes back NCHW).
"""
import numpy
from chainer import function_node
from chainer.utils import type_check

from pfn15.functions import _first_order
from pfn15.functions._layout import nchw, nhwc
from pfn15.functions._parallel import over_ranges
from pfn15.functions.convolution import _out_size, _valid


def _taps(h, w, ho, wo, k, s, p):
    """For each window offset (i, j): output slices and the input's strided slices."""
    for i in range(k):
        r0, r1, hi0 = _valid(ho, h, i, s, p)
        for j in range(k):
            c0, c1, wi0 = _valid(wo, w, j, s, p)
            if r1 > r0 and c1 > c0:
                yield ((slice(r0, r1), slice(c0, c1)),
                       (slice(hi0, hi0 + (r1 - r0 - 1) * s + 1, s),
                        slice(wi0, wi0 + (c1 - c0 - 1) * s + 1, s)))


class MaxPooling2D(function_node.FunctionNode):
    """y = max over k x k windows (stride, pad; cover_all=False)."""

    def __init__(self, ksize, stride, pad):
        self.k, self.s, self.p = int(ksize), int(stride), int(pad)
        if self.p >= self.k:
            raise ValueError('pfn15.functions.max_pooling_2d: pad %d >= ksize %d'
                             % (self.p, self.k))

    def check_type_forward(self, in_types):
        type_check.expect(in_types.size() == 1, in_types[0].dtype.kind == 'f',
                          in_types[0].ndim == 4)

    def forward_cpu(self, inputs):
        x, = inputs
        xh = nhwc(x)
        n, h, w, c = xh.shape
        ho, wo = _out_size(h, self.k, self.s, self.p), _out_size(w, self.k, self.s, self.p)
        y = numpy.empty((n, ho, wo, c), dtype=xh.dtype)
        taps = list(_taps(h, w, ho, wo, self.k, self.s, self.p))

        def images(lo, hi):
            out, x_ = y[lo:hi], xh[lo:hi]
            out[...] = -numpy.inf
            for (ro, co), (ri, ci) in taps:
                numpy.maximum(out[:, ro, co], x_[:, ri, ci], out=out[:, ro, co])
        over_ranges(images, n, xh.nbytes)
        self.retain_inputs((0,))
        self.retain_outputs((0,))
        return nchw(y),

    def backward(self, indexes, grad_outputs):
        xh = nhwc(self.get_retained_inputs()[0].array)
        yh = nhwc(self.get_retained_outputs()[0].array)
        gy = nhwc(grad_outputs[0].array)
        n, h, w, c = xh.shape
        ho, wo = yh.shape[1:3]
        gx = numpy.empty_like(xh)
        taps = list(_taps(h, w, ho, wo, self.k, self.s, self.p))

        def images(lo, hi):
            g, x_, y_, gy_ = gx[lo:hi], xh[lo:hi], yh[lo:hi], gy[lo:hi]
            g[...] = 0
            taken = numpy.zeros(y_.shape, dtype=bool)
            for (ro, co), (ri, ci) in taps:
                # The first window position (row-major) holding the maximum gets gy.
                first = x_[:, ri, ci] == y_[:, ro, co]
                first &= ~taken[:, ro, co]
                taken[:, ro, co] |= first
                g[:, ri, ci] += gy_[:, ro, co] * first
        over_ranges(images, n, xh.nbytes)
        return _first_order.wrap(self, indexes, (nchw(gx),), grad_outputs)


def max_pooling_2d(x, ksize, stride, pad=0):
    """pfn15's CPU max pooling; same as F.max_pooling_2d(..., cover_all=False)."""
    return MaxPooling2D(ksize, stride, pad).apply((x,))[0]
