"""The elementwise passes on as many threads as BLAS gets.

OpenBLAS runs the matrix products on every thread pfn15 gives a rank
(pfn15/cpu.py), but NumPy's elementwise operations (BN's sums and affine map,
the ReLU masks, im2col/col2im copies) run on one. NumPy releases the GIL
inside its loops, so splitting the rows of a large array over a small thread
pool runs them in parallel; arrays under MIN_BYTES stay on the calling thread
(a hand-off costs ~50 us). With one thread per rank (several ranks per node)
this is a plain call.
"""
import concurrent.futures
import os

MIN_BYTES = 2 ** 20

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
