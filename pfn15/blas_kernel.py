"""OpenBLAS's kernel, chosen from what the CPU can do before NumPy loads, and read back after.

NumPy's OpenBLAS picks its kernels from a table of CPU models at load time. A
model the table does not know gets a weaker kernel: OpenBLAS 0.3.23 (NumPy
1.26) runs its generic "Prescott" kernels on Intel family 6 model 207 (AMX,
AVX-512), 5x slower than its AVX-512 ones, and some hypervisors make it pick
AVX2 kernels on AVX-512 CPUs. The variable OPENBLAS_CORETYPE overrides the
table; it is read once, when the library loads, so `choose()` runs from the
first line of pfn15/__init__.py, before `pfn15._compat` imports NumPy. It
uses the standard library only.

Rules:
- A user's OPENBLAS_CORETYPE always wins (nothing is changed).
- x86 only: the best instruction set in /proc/cpuinfo's flags names the core
  type (LEVELS): AVX-512 F/CD/BW/DQ/VL -> 'SkylakeX', AVX2 + FMA -> 'Haswell',
  AVX -> 'Sandybridge', SSE4.2 -> 'Nehalem', SSE3 -> 'Prescott'. CPUs with
  AVX512_BF16, AVX512_FP16 or AMX get 'SkylakeX' too: NumPy calls only the
  float32/float64 products, whose kernels are SkylakeX's in OpenBLAS's
  Cooperlake and SapphireRapids core types, and 'SkylakeX' is the one
  AVX-512 core type in both NumPy legs' OpenBLAS (NumPy 2's is built without
  the other two). No CPU model table: a CPU that is new tomorrow has flags.
- The variable is set in os.environ, so MPI ranks spawned from here and
  forkserver/spawn children inherit the same choice; every rank started by
  mpiexec imports pfn15 first and chooses the same way.
- After NumPy loads, `problem()` compares the kernel that runs (threadpoolctl)
  with the CPU's best instruction set and returns one line with the exact fix
  (NumPy imported before pfn15, a weaker OPENBLAS_CORETYPE exported, or an
  OpenBLAS without that kernel); `python -m pfn15.env` prints it as a problem,
  `bench step` reports it and `check()` (pfn15.cpu.set_threads) warns.
"""
import os
import sys

VAR = 'OPENBLAS_CORETYPE'
# Marks a value pfn15 set (children see it set and must not call it the user's).
MARK = 'PFN15_OPENBLAS_CORETYPE'
AVX512 = ('avx512f', 'avx512cd', 'avx512bw', 'avx512dq', 'avx512vl')

# (instruction set, the /proc/cpuinfo flags it needs, OpenBLAS core type), best first.
# 'pni' is how Linux names SSE3.
LEVELS = (
    ('AVX-512', AVX512 + ('avx2', 'fma'), 'SkylakeX'),
    ('AVX2', ('avx2', 'fma', 'avx'), 'Haswell'),
    ('AVX', ('avx',), 'Sandybridge'),
    ('SSE4.2', ('sse4_2', 'ssse3'), 'Nehalem'),
    ('SSE3', ('pni',), 'Prescott'),
)
_RANK = {name: len(LEVELS) - i for i, (name, _, _) in enumerate(LEVELS)}

# The instruction set of each x86 core type OpenBLAS may report (lower case).
# Katmai, Coppermine, ... are what a build without their kernels reports for
# its Prescott ones.
KERNEL_LEVEL = dict(
    [(k, 'AVX-512') for k in ('skylakex', 'cooperlake', 'sapphirerapids')]
    + [(k, 'AVX2') for k in ('haswell', 'zen')]
    + [(k, 'AVX') for k in ('sandybridge', 'bulldozer', 'piledriver', 'steamroller',
                            'excavator')]
    + [(k, 'SSE4.2') for k in ('nehalem', 'atom', 'barcelona', 'bobcat')]
    + [(k, 'SSE3') for k in ('prescott', 'core2', 'penryn', 'dunnington', 'opteron',
                             'opteron_sse3', 'nano', 'katmai', 'coppermine', 'northwood',
                             'banias', 'athlon')])
AVX512_KERNELS = tuple(k for k, level in KERNEL_LEVEL.items() if level == 'AVX-512')

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


def best_level(flags):
    """(instruction set, OpenBLAS core type) of the best level these flags support, or None."""
    for name, needs, coretype in LEVELS:
        if all(f in flags for f in needs):
            return name, coretype
    return None


def best_coretype(flags):
    """The OpenBLAS core type for this CPU's flags, or None (leave it to OpenBLAS)."""
    best = best_level(flags)
    return best[1] if best else None


def choose(environ=None, flags=None, numpy_loaded=None):
    """Set OPENBLAS_CORETYPE for this process (and its children) from the CPU flags.

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
        best = best_level(cpu_flags() if flags is None else flags)
        if best is None:
            decision = (None, "OpenBLAS's own detection (no x86 instruction-set flags)")
        else:
            env[VAR] = env[MARK] = best[1]
            decision = (best[1], 'chosen by pfn15 from the CPU flags (%s)' % best[0])
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
    numpy_dir = os.path.dirname(os.path.dirname(os.path.realpath(numpy.__file__)))
    for lib in libs:
        path = os.path.realpath(lib.get('filepath') or '')
        if os.path.basename(os.path.dirname(path)).startswith('numpy') and \
                path.startswith(numpy_dir):
            return lib
    return libs[0] if libs else None


def weaker(architecture, flags):
    """(running level, CPU's level, core type to set) when OpenBLAS's `architecture`
    is a weaker instruction set than `flags` support; else None."""
    best = best_level(flags)
    running = KERNEL_LEVEL.get((architecture or '').lower())
    if best is None or running is None or _RANK[running] >= _RANK[best[0]]:
        return None
    return running, best[0], best[1]


def problem(info=None, flags=None, environ=None, numpy_first=None):
    """One line, with the exact fix, when NumPy's OpenBLAS runs kernels for a weaker
    instruction set than this CPU's best; None when it does not (or is not OpenBLAS).
    The arguments (defaults: threadpoolctl, /proc/cpuinfo, os.environ, this process's
    choose()) are for tests."""
    info = openblas_info() if info is None else info
    if not info:
        return None
    arch = info.get('architecture')
    found = weaker(arch, cpu_flags() if flags is None else flags)
    if found is None:
        return None
    running, level, coretype = found
    env = os.environ if environ is None else environ
    user = env.get(VAR)
    if numpy_first is None:
        numpy_first = _decision is None or _decision[1].startswith('NumPy was loaded')
    if user and env.get(MARK) != user:
        fix = ('%s=%s is set in the environment; export %s=%s instead (or unset it)'
               % (VAR, user, VAR, coretype))
    elif numpy_first:
        fix = ('NumPy was imported before pfn15, too late to choose; import pfn15 first, '
               'or start Python with %s=%s exported' % (VAR, coretype))
    else:
        fix = ('this OpenBLAS has no %s kernels (it fell back); install NumPy from its '
               'PyPI wheel (pip install --force-reinstall numpy==%s)'
               % (coretype, _numpy_version()))
    return ("NumPy's OpenBLAS %s runs its %s kernels (%s) on a CPU with %s: matrix "
            "products run several times slower than they can. Fix: %s"
            % (info.get('version'), arch, running, level, fix))


def _numpy_version():
    try:
        import numpy
        return numpy.__version__
    except ImportError:
        return '...'


def report():
    """{'architecture', 'version', 'coretype', 'why', 'cpu_best', 'weaker', 'problem'}
    for bench step's JSON."""
    info = openblas_info() or {}
    chosen, why = _decision or (os.environ.get(VAR), 'pfn15.blas_kernel.choose() did not run')
    flags = cpu_flags()
    best = best_level(flags)
    arch = info.get('architecture')
    return {
        'architecture': arch, 'version': info.get('version'),
        'coretype': chosen, 'why': why,
        'cpu_best': best[1] if best else None, 'cpu_level': best[0] if best else None,
        'weaker': weaker(arch, flags) is not None,
        'problem': problem(info, flags) if info else None,
    }


def chosen_by_user(environ=None):
    """Whether OPENBLAS_CORETYPE is the user's own setting (not the one pfn15 made)."""
    env = os.environ if environ is None else environ
    user = env.get(VAR)
    return bool(user) and env.get(MARK) != user


def check(warn=True):
    """Warn (on stderr) when OpenBLAS runs a weaker kernel than the CPU supports
    and the user did not choose it; returns the warning text or None."""
    if chosen_by_user():
        return None     # the user's choice: pfn15.env still names it
    line = problem()
    if line is None:
        return None
    text = 'pfn15: warning: %s' % line
    if warn:
        print(text, file=sys.stderr)
    return text
