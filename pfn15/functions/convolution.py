"""2-D convolution on CPU as matrix products over channels-last rows.

Same contract as `chainer.functions.convolution_2d` without bias, groups or
dilation: x (N, C_in, H, W), W (C_out, C_in, kh, kw) -> y (N, C_out, H_o, W_o),
H_o = (H + 2 pad_h - kh) // stride_h + 1 (cover_all=False; stride and pad an
int or a (h, w) pair). y is the NCHW view of an NHWC buffer
(pfn15/functions/_layout.py). As Chainer's, x and W may differ in dtype: the
products run in the wider of the two (float16 in float32), y and gx come back
in x's dtype, gW in W's.

1x1: y_rows = x_rows @ W^T, one GEMM with no im2col (a stride > 1 takes every
stride-th pixel first). kxk: an im2col laid out as (N, H_o, W_o, kh, kw, C_in),
so each row is one output pixel's receptive field and the product is
cols @ W', W' = W as (kh*kw*C_in, C_out); borders are written as zeros instead
of padding a copy of x. Backward: gW = gy_rows^T @ cols and gx = gy_rows @ W'^T
(then col2im) -- transposes go to BLAS as flags, never as copies. The forward
keeps its im2col for the weight gradient (memory for time: no second im2col
in the backward pass).
"""
import numpy
from chainer import function_node
from chainer.utils import type_check

from pfn15.functions import _first_order
from pfn15.functions._layout import nchw, nhwc
from pfn15.functions._parallel import matmul, over_ranges


def _pair(v):
    return (int(v[0]), int(v[1])) if hasattr(v, '__getitem__') else (int(v), int(v))


def _out_size(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def _valid(size_out, size_in, offset, stride, pad):
    """Output index range [lo, hi) whose input index o*stride + offset - pad is
    inside [0, size_in), and the first input index."""
    lo = max(0, -(-(pad - offset) // stride))
    hi = min(size_out, (size_in - 1 - offset + pad) // stride + 1)
    hi = max(hi, lo)
    return lo, hi, lo * stride + offset - pad


def _im2col(xh, kh, kw, stride, pad, ho, wo):
    n = xh.shape[0]
    cols = numpy.empty((n, ho, wo, kh, kw, xh.shape[3]), dtype=xh.dtype)

    def fill(lo, hi):   # images lo..hi
        _im2col_into(xh[lo:hi], cols[lo:hi], stride, pad)
    over_ranges(fill, n, cols.nbytes)
    return cols


def _im2col_into(xh, cols, stride, pad):
    n, h, w, c = xh.shape
    _, ho, wo, kh, kw, _ = cols.shape
    (sy, sx), (ph, pw) = stride, pad
    for i in range(kh):
        r0, r1, hi0 = _valid(ho, h, i, sy, ph)
        rows_in = slice(hi0, hi0 + (r1 - r0 - 1) * sy + 1, sy)
        for j in range(kw):
            c0, c1, wi0 = _valid(wo, w, j, sx, pw)
            cols_in = slice(wi0, wi0 + (c1 - c0 - 1) * sx + 1, sx)
            dst = cols[:, :, :, i, j, :]
            if r1 > r0 and c1 > c0:
                dst[:, r0:r1, c0:c1] = xh[:, rows_in, cols_in]
            # The receptive field outside the image: zeros (the padding).
            dst[:, :r0] = 0
            dst[:, r1:] = 0
            dst[:, r0:r1, :c0] = 0
            dst[:, r0:r1, c1:] = 0


def _col2im(gcols, h, w, stride, pad):
    n, c = gcols.shape[0], gcols.shape[5]
    gx = numpy.empty((n, h, w, c), dtype=gcols.dtype)

    def add(lo, hi):   # images lo..hi
        gx[lo:hi] = 0
        _col2im_into(gcols[lo:hi], gx[lo:hi], stride, pad)
    over_ranges(add, n, gcols.nbytes)
    return gx


def _col2im_into(gcols, gx, stride, pad):
    n, ho, wo, kh, kw, c = gcols.shape
    h, w = gx.shape[1:3]
    (sy, sx), (ph, pw) = stride, pad
    for i in range(kh):
        r0, r1, hi0 = _valid(ho, h, i, sy, ph)
        if r1 <= r0:
            continue
        rows_in = slice(hi0, hi0 + (r1 - r0 - 1) * sy + 1, sy)
        for j in range(kw):
            c0, c1, wi0 = _valid(wo, w, j, sx, pw)
            if c1 <= c0:
                continue
            cols_in = slice(wi0, wi0 + (c1 - c0 - 1) * sx + 1, sx)
            gx[:, rows_in, cols_in] += gcols[:, r0:r1, c0:c1, i, j]


class Convolution2D(function_node.FunctionNode):
    """y = conv(x, W) on CPU; see the module docstring."""

    def __init__(self, stride=1, pad=0):
        self.stride = _pair(stride)
        self.pad = _pair(pad)

    def check_type_forward(self, in_types):
        type_check.expect(in_types.size() == 2)
        x_type, w_type = in_types
        type_check.expect(
            x_type.dtype.kind == 'f',
            w_type.dtype.kind == 'f',
            x_type.ndim == 4,
            w_type.ndim == 4,
            x_type.shape[1] == w_type.shape[1],
        )

    def forward_cpu(self, inputs):
        x, W = inputs
        n, c, h, w = x.shape
        c_out, c_in, kh, kw = W.shape
        (sy, sx), (ph, pw) = self.stride, self.pad
        ho, wo = _out_size(h, kh, sy, ph), _out_size(w, kw, sx, pw)
        if ho <= 0 or wo <= 0:
            raise ValueError('pfn15.functions.convolution_2d: output would be %dx%d '
                             '(input %dx%d, kernel %dx%d, stride %s, pad %s)'
                             % (ho, wo, h, w, kh, kw, self.stride, self.pad))
        self.x_shape = x.shape
        self.dtypes = x.dtype, W.dtype
        self.dtype = numpy.result_type(x.dtype, W.dtype, numpy.float32)
        x, W = (v.astype(self.dtype, copy=False) for v in (x, W))
        xh = nhwc(x)
        if kh == 1 and kw == 1 and ph == pw == 0:
            if sy > 1 or sx > 1:
                xh = numpy.ascontiguousarray(xh[:, ::sy, ::sx])
            cols = xh.reshape(-1, c_in)
            wmat = W.reshape(c_out, c_in).T                    # (C_in, C_out) view
        else:
            cols = _im2col(xh, kh, kw, self.stride, self.pad, ho, wo).reshape(
                n * ho * wo, kh * kw * c_in)
            wmat = W.transpose(2, 3, 1, 0).reshape(kh * kw * c_in, c_out)
        self.cols = cols
        self.wmat = wmat   # a copy for kxk: kept, not redone in backward (~16 ms a step)
        # x too: a second-order request must reach FirstOrderOnly (_first_order.py);
        # its array is kept anyway (the previous layer's retained output, or the batch).
        self.retain_inputs((0, 1))
        y = matmul(cols, wmat)
        return nchw(y.reshape(n, ho, wo, c_out).astype(self.dtypes[0], copy=False)),

    def backward(self, indexes, grad_outputs):
        W = self.get_retained_inputs()[1].array.astype(self.dtype, copy=False)
        gy = grad_outputs[0].array.astype(self.dtype, copy=False)
        n, c, h, w = self.x_shape
        c_out, c_in, kh, kw = W.shape
        (sy, sx), (ph, pw) = s, p = self.stride, self.pad
        gyh = nhwc(gy)
        ho, wo = gyh.shape[1:3]
        gy_rows = gyh.reshape(-1, c_out)
        cols = self.cols
        gx = gW = None
        one_by_one = kh == 1 and kw == 1 and ph == pw == 0
        if 1 in indexes:
            if one_by_one:
                gW = matmul(gy_rows.T, cols).reshape(W.shape)
            else:
                gW = matmul(gy_rows.T, cols).reshape(c_out, kh, kw, c_in)
                gW = numpy.ascontiguousarray(gW.transpose(0, 3, 1, 2))
        if 0 in indexes:
            if one_by_one:
                g = matmul(gy_rows, W.reshape(c_out, c_in))
                if sy > 1 or sx > 1:
                    gxh = numpy.zeros((n, h, w, c), dtype=g.dtype)
                    gxh[:, ::sy, ::sx] = g.reshape(n, ho, wo, c)
                else:
                    gxh = g.reshape(n, h, w, c)
            else:
                gcols = matmul(gy_rows, self.wmat.T).reshape(n, ho, wo, kh, kw, c_in)
                gxh = _col2im(gcols, h, w, s, p)
            gx = nchw(gxh.astype(self.dtypes[0], copy=False))
        if gW is not None:
            gW = gW.astype(self.dtypes[1], copy=False)
        return _first_order.wrap(self, indexes, (gx, gW), grad_outputs)


def convolution_2d(x, W, stride=1, pad=0):
    """pfn15's CPU convolution (no bias); same results as F.convolution_2d.
    stride and pad: an int or an (h, w) pair, as Chainer's."""
    return Convolution2D(stride, pad).apply((x, W))[0]
