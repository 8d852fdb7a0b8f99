"""CPU training: malloc that keeps freed activations, and one BLAS pool per core.

1. glibc's malloc keeps freed activations for the next iteration.

Every CPU training step allocates and frees the same large arrays (activations,
im2col buffers, gradients). By default glibc serves each block above its mmap
threshold with a fresh mmap() and gives it back with munmap(), so every
iteration page-faults its whole working set in again: ~1M minor faults and a
large share of system time per ResNet-50 step. Serving all blocks from the heap
and never trimming it lets the next iteration reuse the pages, at the same peak
resident memory. It also makes the time of a step independent of the accidents
of the allocation order (whether a loop keeps its last graph alive or frees it).

2. BLAS threads: every rank's OpenBLAS starts one thread per core of the node,
so `mpiexec -n 2` on 2 cores runs 4 threads that spin against each other. pfn15
gives each rank cores / (ranks on this node) threads (torchrun's rule), unless
OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS say otherwise.

   With pfn15's CPU functions (model.cpu_functions=pfn15) those threads are
pfn15's: BLAS runs one thread, and each large matrix product is split over
the rank's threads by pfn15 (functions/_parallel.matmul), a single-threaded
BLAS call per share of rows. OpenBLAS's own split of the convolutions'
tall, narrow products keeps its threads waiting on each other.

(The measurements behind 1 and 2: docs/performance.md, "Memory and threads"
and "bench step".)

3. OpenBLAS's kernel (pfn15/blas_kernel.py): chosen from the CPU flags before
NumPy loads; set_threads() warns with the line to export when NumPy was loaded
earlier with a weaker kernel. threadpoolctl only sets thread counts, so the
two do not interact.

The GPU path needs none of these: CuPy has its own memory pool, cuBLAS its own threads.
"""
import os
import ctypes
import ctypes.util

# mallopt(3) parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

_applied = None   # keep_freed_memory()'s outcome
_threads = None   # what set_threads() set
_split = False    # set_threads(split_products=True) took effect: BLAS has one thread


def keep_freed_memory():
    """Serve every malloc from the heap (no mmap) and never trim it.

    Returns True when applied (glibc), False where mallopt is not available
    (macOS, musl): those allocators keep their own behaviour. Idempotent.
    """
    global _applied
    if _applied is None:
        _applied = False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            return False
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        # mallopt returns 1 on success.
        _applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))
    return _applied


def applied():
    """Whether keep_freed_memory() took effect in this process (None: not called)."""
    return _applied


THREAD_VARS = ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS')


def threads_from_environment():
    """The thread count the user set in the environment, or None."""
    for var in THREAD_VARS:
        value = os.environ.get(var, '')
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def set_threads(requested, ranks_on_node, split_products=False, loader_processes=0):
    """Limit this process's BLAS/OpenMP pools; returns the thread count in force.

    requested > 0: that many. 0 (auto): the environment's setting if any, else
    the node's cores shared out over its ranks (at least one each).
    split_products: pfn15's CPU functions split the products over these
    threads themselves, so BLAS gets one (see the module docstring).
    loader_processes: data loader processes per rank (they need cores too).
    """
    global _threads, _split
    from pfn15 import blas_kernel
    blas_kernel.check()
    n = requested or threads_from_environment() or \
        max(1, (os.cpu_count() or 1) // max(1, ranks_on_node))
    from pfn15.functions.onednn import _lib as onednn_lib
    wanted = max(1, ranks_on_node) * (n + max(0, loader_processes))
    onednn_lib.set_threads(n, fits_node=wanted <= node_cores())   # oneDNN's team: same share
    try:
        from threadpoolctl import threadpool_limits   # ships with scikit-learn
    except ImportError:
        return None
    threadpool_limits(limits=n)
    _split = bool(split_products) and n > 1
    if _split:
        threadpool_limits(limits=1, user_api='blas')
    _threads = n
    return n


def node_cores():
    """The cores this process may run on (its affinity mask; else the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def products_split():
    """Whether pfn15 splits the matrix products over the rank's threads (BLAS has one)."""
    return _split


def threads_in_force():
    """What set_threads() set, else the environment's setting, else the cores."""
    return _threads or threads_from_environment() or os.cpu_count() or 1
