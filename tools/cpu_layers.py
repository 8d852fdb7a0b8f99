"""Per-layer GFLOP/s of ResNet-50's convolutions on CPU: Chainer, pfn15, an NCHW variant, PyTorch.

    python tools/cpu_layers.py [--batch 16] [--repeat 5] [--backward]

The measurement behind pfn15/functions' layout choice (channels-last inside):
'NCHW GEMM' is the same matrix-product convolution written for NCHW memory
(a batched product per image for 1x1; im2col as (N, C*kh*kw, H*W) for kxk).
PyTorch (channels-last, as bench step's peer) when torch imports. Best of
--repeat; forward only unless --backward (then forward + both gradients).
"""
import argparse
import time

import pfn15  # noqa: F401  (OpenBLAS kernel choice before NumPy loads)
import numpy

import chainer
import chainer.functions as F

from pfn15 import functions as P
from pfn15.functions.convolution import _im2col

LAYERS = [  # (c_in, c_out, k, stride, pad, size): ResNet-50 shapes, 1x1 and 3x3, large and small
    (256, 64, 1, 1, 0, 40), (64, 64, 3, 1, 1, 40), (64, 256, 1, 1, 0, 40),
    (1024, 256, 1, 1, 0, 10), (256, 256, 3, 1, 1, 10),
]


def nchw_gemm(x, W, s, p):
    """Forward of the NCHW variant (no backward: the forward alone decides)."""
    n, c, h, w = x.shape
    co, _, k, _ = W.shape
    if k == 1 and s == 1:
        return numpy.matmul(W.reshape(co, c), x.reshape(n, c, h * w))
    ho = (h + 2 * p - k) // s + 1
    cols = _im2col(numpy.ascontiguousarray(x.transpose(0, 2, 3, 1)), k, k, s, p, ho, ho)
    cols = numpy.ascontiguousarray(cols.reshape(n, ho * ho, k * k * c).transpose(0, 2, 1))
    wm = W.transpose(0, 2, 3, 1).reshape(co, k * k * c)
    return numpy.matmul(wm, cols)


def best(fn, repeat):
    fn()
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return min(t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--batch', type=int, default=16)
    ap.add_argument('--repeat', type=int, default=5)
    ap.add_argument('--backward', action='store_true')
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    rng = numpy.random.default_rng(0)
    print('%-24s %8s %8s %10s %8s   (GFLOP/s, %s)' % (
        'layer', 'Chainer', 'pfn15', 'NCHW GEMM', 'PyTorch',
        'forward+backward' if args.backward else 'forward'))
    for c, co, k, s, p, size in LAYERS:
        x = rng.standard_normal((args.batch, c, size, size), dtype=numpy.float32)
        W = rng.standard_normal((co, c, k, k), dtype=numpy.float32) * 0.05
        ho = (size + 2 * p - k) // s + 1
        flop = 2.0 * args.batch * ho * ho * co * c * k * k * (3 if args.backward else 1)
        x_cl = numpy.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)

        def run(f, x_in):
            def go():
                xv, Wv = chainer.Variable(x_in), chainer.Variable(W)
                y = f(xv, Wv)
                if args.backward:
                    y.grad = numpy.ones_like(y.array)
                    y.backward()
            return go
        r_chainer = flop / best(run(lambda a, b: F.convolution_2d(a, b, None, s, p), x),
                                args.repeat) / 1e9
        r_ours = flop / best(run(lambda a, b: P.convolution_2d(a, b, s, p), x_cl),
                             args.repeat) / 1e9
        r_nchw = '-'
        if not args.backward:
            r_nchw = '%10.0f' % (flop / best(lambda: nchw_gemm(x, W, s, p), args.repeat) / 1e9)
        r_torch = '-'
        if torch is not None:
            tx = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
            tw = torch.from_numpy(W).contiguous(memory_format=torch.channels_last)
            tx.requires_grad_(args.backward)
            tw.requires_grad_(args.backward)

            def tgo():
                y = torch.nn.functional.conv2d(tx, tw, None, s, p)
                if args.backward:
                    y.sum().backward()
            r_torch = '%8.0f' % (flop / best(tgo, args.repeat) / 1e9)
        name = '%dx%d, %d->%d, %dx%d' % (k, k, c, co, size, size)
        print('%-24s %8.0f %8.0f %10s %8s' % (name, r_chainer, r_ours, r_nchw, r_torch))


if __name__ == '__main__':
    main()
