"""The rank's threads (pfn15/cpu.py) for the work NumPy and BLAS would do on one.

NumPy's elementwise operations (BN's sums and affine map, the ReLU masks,
im2col/col2im copies) run on one thread. NumPy releases the GIL inside its
loops, so splitting the rows of a large array over a small thread pool runs
them in parallel; arrays under MIN_BYTES stay on the calling thread (a
hand-off costs ~50 us). The matrix products likewise (`matmul`), each share
a single-threaded BLAS call, when pfn15.cpu gave BLAS one thread for this
(`cpu.products_split()`). With one thread per rank (several ranks per node)
all of this is a plain call.
"""
import concurrent.futures
import os

import numpy

MIN_BYTES = 2 ** 20
# A piece of an array that several passes in a row can work on in cache (the
# per-core L2 of current x86 is 1-2 MiB): in_chunks().
CHUNK_BYTES = 2 ** 19
# Products under this many flops run as one call (~0.2 ms at 100 GFLOP/s).
MIN_FLOPS = 2 ** 24

_pool = None
_pool_key = None


def threads():
    """The thread count pfn15 gives this rank's BLAS (pfn15.cpu)."""
    from pfn15 import cpu
    return max(1, int(cpu.threads_in_force()))


def _executor(n):
    global _pool, _pool_key
    key = (os.getpid(), n)   # a forked child gets its own pool (threads do not fork)
    if _pool_key != key:
        _pool = concurrent.futures.ThreadPoolExecutor(max_workers=n,
                                                      thread_name_prefix='pfn15-cpu')
        _pool_key = key
    return _pool


def over_ranges(fn, n, nbytes):
    """fn(lo, hi) over a split of range(n) into one part per thread (the first part
    on the calling thread); returns the results in order."""
    t = min(threads(), n) if nbytes >= MIN_BYTES else 1
    if t <= 1:
        return [fn(0, n)]
    bounds = [n * i // t for i in range(t + 1)]
    pool = _executor(t - 1)
    futures = [pool.submit(fn, bounds[i], bounds[i + 1]) for i in range(1, t)]
    first = fn(bounds[0], bounds[1])
    return [first] + [f.result() for f in futures]


def in_chunks(fn, row_bytes):
    """fn(lo, hi) over consecutive pieces of rows lo..hi of at most CHUNK_BYTES, so
    the several passes a piece takes stay in cache: the arrays are read from
    memory once and written once. Compose with over_ranges (each thread's range
    in pieces)."""
    step = chunk_rows(row_bytes)

    def run(lo, hi):
        for i in range(lo, hi, step):
            fn(i, min(i + step, hi))
    return run


def elementwise(fn, *arrays):
    """fn(*arrays) for an elementwise fn that works in place. Arrays of one size,
    large and C-contiguous: fn on cache-sized pieces of their flat views, over
    the rank's threads -- the same bits as one call, each array read and
    written once however many passes fn makes. Otherwise one call."""
    first = arrays[0]
    if first.nbytes < MIN_BYTES or not all(
            a.flags.c_contiguous and a.size == first.size for a in arrays):
        fn(*arrays)
        return
    flat = [a.reshape(-1) for a in arrays]   # views: contiguous
    over_ranges(in_chunks(lambda lo, hi: fn(*[a[lo:hi] for a in flat]), first.itemsize),
                first.size, first.nbytes)


def concatenate(arrays):
    """numpy.concatenate of the arrays' flat views (one dtype), the copies split over
    the rank's threads by position in the result."""
    flat = [numpy.ascontiguousarray(a).reshape(-1) for a in arrays]
    offsets, total = [], 0
    for a in flat:
        offsets.append(total)
        total += a.size
    out = numpy.empty(total, flat[0].dtype if flat else numpy.float32)

    def copy(lo, hi):
        for a, off in zip(flat, offsets):
            s, e = max(lo, off), min(hi, off + a.size)
            if s < e:
                out[s:e] = a[s - off:e - off]
    over_ranges(copy, total, out.nbytes)
    return out


def chunk_rows(row_bytes):
    """Rows of `row_bytes` each in one piece of in_chunks()."""
    return max(1, CHUNK_BYTES // max(1, row_bytes))


def matmul(a, b):
    """a @ b for 2-D arrays; split over the rank's threads when cpu.products_split().

    By rows of a (each thread writes its rows of the result), or, when the
    inner dimension is at least 4x both of the result's (a weight gradient:
    (C_out x pixels) @ (pixels x C_in k k)), by the inner dimension, the
    partial products then summed: split by rows, every thread would read all
    of the pixels. Measured, 2 threads, (64x25600)@(25600x576): 101 GFLOP/s
    with OpenBLAS's own split, 75 by rows, 109 by the inner dimension.
    """
    from pfn15 import cpu
    m, k = a.shape
    n = b.shape[1]
    t = threads() if cpu.products_split() else 1
    if t <= 1 or 2 * m * k * n < MIN_FLOPS:
        return numpy.matmul(a, b)
    if k >= 4 * max(m, n):
        parts = over_ranges(lambda lo, hi: numpy.matmul(a[:, lo:hi], b[lo:hi]), k, MIN_BYTES)
        out = parts[0]
        for part in parts[1:]:
            out += part
        return out
    out = numpy.empty((m, n), numpy.result_type(a.dtype, b.dtype))

    def rows(lo, hi):
        numpy.matmul(a[lo:hi], b, out=out[lo:hi])
    over_ranges(rows, m, MIN_BYTES)
    return out
