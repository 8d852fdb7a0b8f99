"""Channels-last inside, NCHW outside.

pfn15's CPU functions keep activations in NHWC memory (channels innermost) so
that a 1x1 convolution is one matrix product (N*H*W, C_in) @ (C_in, C_out) and
batch normalization reduces over the rows of an (N*H*W, C) matrix. To the rest
of Chainer (max pooling, averaging, the residual add, the checkpoint, the
tests) they still look like NCHW arrays: every output is an NCHW-shaped
*view* of an NHWC-contiguous buffer, `buf.transpose(0, 3, 1, 2)`. An input
that arrives in another layout (the data's NCHW batch, a gradient from
Chainer's max pooling) is copied once into NHWC.

Why (`python tools/cpu_layers.py`, batch 16, one thread, busy machine):
forward GFLOP/s, Chainer / channels-last / NCHW-GEMM / PyTorch: 1x1 1024->256
at 10x10: 61 / 86 / 82 / 99; 3x3 64->64 at 40x40: 31 / 40 / 23 / 109. NCHW
needs a batched product per image for a 1x1 convolution (poor shapes at small
spatial sizes) and a transposed copy for the weight gradient; channels-last
needs neither.
"""
import numpy

from pfn15.functions._parallel import over_ranges


def nhwc(x):
    """The NHWC-contiguous array behind an NCHW-shaped array (a view when it is one,
    else a copy, split over the threads by image)."""
    t = x.transpose(0, 2, 3, 1)
    if t.flags.c_contiguous:
        return t
    out = numpy.empty(t.shape, t.dtype)

    def copy(lo, hi):
        out[lo:hi] = t[lo:hi]
    over_ranges(copy, t.shape[0], out.nbytes)
    return out


def nchw(t):
    """The NCHW-shaped view of an NHWC array."""
    return t.transpose(0, 3, 1, 2)


def rows(x):
    """An NCHW-shaped array as an (N*H*W, C) matrix (NHWC memory)."""
    t = nhwc(x)
    return t.reshape(-1, t.shape[3])
