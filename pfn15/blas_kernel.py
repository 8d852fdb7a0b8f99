"""OpenBLAS's kernel: the AVX-512 one on a CPU that has AVX-512, chosen before NumPy loads.

NumPy's OpenBLAS picks its kernels from the CPU at load time, and on some
AVX-512 CPUs (AMD EPYC Zen 4 under some hypervisors, notably) it falls back to
its AVX2 "Haswell" kernels; the issue measured sgemm at 249 GFLOP/s there and
449 with `OPENBLAS_CORETYPE=SkylakeX`. The variable is read once, when the
library loads, so `choose()` runs from the first line of pfn15/__init__.py,
before `pfn15._compat` imports NumPy. It uses the standard library only.

Rules:
- A user's OPENBLAS_CORETYPE always wins (nothing is changed).
- Linux x86-64 only: from /proc/cpuinfo's flags, AVX-512 (F, CD, BW, DQ, VL)
  -> 'SkylakeX', and with AVX512_BF16 -> 'Cooperlake' (same sgemm kernel, also
  bf16). CPUs with AMX or AVX512_FP16 (Sapphire Rapids and later), and all
  others, are left to OpenBLAS's own detection, which knows them.
- The variable is set in os.environ, so MPI ranks spawned from here and
  forkserver/spawn children inherit the same choice; every rank started by
  mpiexec imports pfn15 first and chooses the same way.
- If NumPy is already loaded (the user imported it before pfn15), it is too
  late: `check()` (called from pfn15.cpu.set_threads) compares the kernel that
  runs with the CPU's and warns with the exact line to export.

`report()` says what runs (through threadpoolctl), for bench step's JSON.
"""
import os
import sys

VAR = 'OPENBLAS_CORETYPE'
# Marks a value pfn15 set (children see it set and must not call it the user's).
MARK = 'PFN15_OPENBLAS_CORETYPE'
AVX512 = ('avx512f', 'avx512cd', 'avx512bw', 'avx512dq', 'avx512vl')
NEWER = ('amx_tile', 'avx512_fp16')       # OpenBLAS's own detection goes further there
AVX512_KERNELS = ('skylakex', 'cooperlake', 'sapphirerapids')

_decision = None


def cpu_flags(path='/proc/cpuinfo'):
    """The first CPU's flags from /proc/cpuinfo (empty set where there is none)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith('flags'):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


def best_coretype(flags):
    """The OpenBLAS core type this CPU's flags support, or None (leave it to OpenBLAS)."""
    if not all(f in flags for f in AVX512) or any(f in flags for f in NEWER):
        return None
    return 'Cooperlake' if 'avx512_bf16' in flags else 'SkylakeX'


def choose(environ=None, flags=None, numpy_loaded=None):
    """Set OPENBLAS_CORETYPE for this process (and its children) if it helps.

    Returns (coretype or None, why). Idempotent per process. The arguments
    (defaults: os.environ, /proc/cpuinfo, sys.modules) are for tests."""
    global _decision
    env = os.environ if environ is None else environ
    if numpy_loaded is None:
        numpy_loaded = 'numpy' in sys.modules
    user = env.get(VAR)
    if user and env.get(MARK) != user:
        decision = (user, 'set by the user (%s=%s)' % (VAR, user))
    elif user:
        decision = (user, 'chosen by pfn15 in a parent process from the CPU flags')
    elif numpy_loaded:
        decision = (None, 'NumPy was loaded before pfn15: OpenBLAS chose its own kernel')
    else:
        best = best_coretype(cpu_flags() if flags is None else flags)
        if best is None:
            decision = (None, "OpenBLAS's own detection (no AVX-512 rule applies)")
        else:
            env[VAR] = env[MARK] = best
            decision = (best, 'chosen by pfn15 from the CPU flags (AVX-512)')
    if environ is None:
        _decision = decision
    return decision


def decision():
    """What choose() decided in this process, or None if it did not run."""
    return _decision


def openblas_info():
    """threadpoolctl's record of NumPy's OpenBLAS (architecture, version), or None.

    SciPy (loaded by scikit-learn) brings its own OpenBLAS; NumPy's is the one
    under numpy's directory (numpy.libs/ in the wheels)."""
    try:
        import numpy
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    libs = [lib for lib in threadpool_info() if lib.get('internal_api') == 'openblas']
    numpy_dir = os.path.dirname(os.path.dirname(os.path.abspath(numpy.__file__)))
    for lib in libs:
        path = os.path.abspath(lib.get('filepath') or '')
        if os.path.basename(os.path.dirname(path)).startswith('numpy') and \
                path.startswith(numpy_dir):
            return lib
    return libs[0] if libs else None


def report():
    """{'architecture', 'version', 'coretype', 'why', 'cpu_best', 'weaker'} for bench JSON."""
    info = openblas_info() or {}
    chosen, why = _decision or (os.environ.get(VAR), 'pfn15.blas_kernel.choose() did not run')
    best = best_coretype(cpu_flags())
    arch = info.get('architecture')
    return {
        'architecture': arch, 'version': info.get('version'),
        'coretype': chosen, 'why': why, 'cpu_best': best,
        'weaker': bool(best and arch and arch.lower() not in AVX512_KERNELS),
    }


def check(warn=True):
    """Warn (on stderr) when OpenBLAS runs a weaker kernel than the CPU supports
    and the user did not choose it; returns the warning text or None."""
    r = report()
    if not r['weaker'] or os.environ.get(VAR):
        return None
    text = ("pfn15: NumPy's OpenBLAS runs its %s kernels on a CPU with AVX-512 (NumPy was "
            "imported before pfn15, so pfn15 could not choose). For ~2x faster matrix "
            "products, start Python with:\n    export %s=%s"
            % (r['architecture'], VAR, r['cpu_best']))
    if warn:
        print(text, file=sys.stderr)
    return text
