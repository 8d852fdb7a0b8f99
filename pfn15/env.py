"""python -m pfn15.env [CONFIG [key=value ...]]: the stack a run will use, and whether CONFIG can run on it.

    python -m pfn15.env                       # one screen: Python, NumPy + BLAS, Chainer,
                                              # CuPy, CUDA, cuDNN, NCCL, GPUs, MPI
    python -m pfn15.env configs/32k.yaml      # ... and check that config against it

Like `python -m torch.utils.collect_env` and `horovodrun --check-build`. With
a config, every reason it cannot run here is printed as one line
(`pfn15.env: problem: ...`) and the exit status is 2; 0 when it can. The job
scripts in jobs/ run it before the training, so a broken node fails in
seconds instead of after the queue wait.

It runs on a broken install too, with only the standard library importable:
each part that is missing or cannot be imported (NumPy, Chainer, mpi4py and
its MPI library, PyYAML, Pillow, scikit-learn, matplotlib) is one problem
line, exit 2, never a traceback.

`check_cudnn(cfg, comm)` is what pfn15.train calls at the start of a GPU run:
one line from rank 0 when convolutions would fall back to im2col + GEMM
(cuDNN unavailable), with the reason; an error (exit 2) under
`train.require_cudnn: true`.
"""
import importlib
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys

import pfn15
from pfn15 import cli, cuda_libs, errors

PROG = 'pfn15.env'

# What a CPU run needs, (module, name): imported (numpy, chainer, mpi4py, yaml, PIL)
# or, for the slow imports the training loads late, looked up (sklearn, matplotlib).
REQUIRED = (('numpy', 'NumPy'), ('chainer', 'Chainer'), ('mpi4py', 'mpi4py'),
            ('yaml', 'PyYAML'), ('PIL', 'Pillow'))
LOOKED_UP = (('sklearn', 'scikit-learn'), ('matplotlib', 'matplotlib'))

COMMUNICATORS_ON_CPU = ('naive',)   # the others need CuPy and GPUs (ChainerMN)


# ----------------------------------------------------------------- probes

def _chainer_cuda():
    """chainer.backends.cuda (importing Chainer imports CuPy if it is installed)."""
    import chainer.backends.cuda as ccuda
    return ccuda


def missing_parts():
    """{name: one-line reason} of each required part that cannot be imported or is not
    installed, in REQUIRED order."""
    out = {}
    for module, name in REQUIRED:
        try:
            importlib.import_module(module)
        except Exception as e:   # ImportError, or anything a broken package raises
            out[name] = 'cannot be imported (%s)' % _one_line(e)
    for module, name in LOOKED_UP:
        try:
            found = importlib.util.find_spec(module) is not None
        except Exception as e:
            found, out[name] = True, 'cannot be found (%s)' % _one_line(e)
        if not found:
            out[name] = 'is not installed (no module %s)' % module
    return out


def cupy_status():
    """(cupy module or None, reason it is unusable or None)."""
    try:
        ccuda = _chainer_cuda()
    except Exception as e:
        return None, 'needs Chainer (%s)' % _one_line(e)
    if not ccuda.available:
        return None, _one_line(getattr(ccuda, '_resolution_error', 'CuPy is not installed'))
    return ccuda.cupy, None


def cudnn_status():
    """(enabled in Chainer, version or None, the exact reason it is off or None)."""
    try:
        ccuda = _chainer_cuda()
    except Exception as e:
        return False, None, 'needs Chainer (%s)' % _one_line(e)
    version = None
    if ccuda.available:
        try:
            import cupy.cuda.cudnn as libcudnn
            version = _cudnn_version_string(libcudnn.getVersion())
        except Exception:
            pass
    if ccuda.cudnn_enabled:
        import chainer
        if chainer.config.use_cudnn == 'never':
            return False, version, "chainer.config.use_cudnn is 'never'"
        return True, version, None
    if not ccuda.available:
        return False, version, 'CuPy is unusable: %s' % _one_line(ccuda._resolution_error)
    if getattr(ccuda, '_cudnn_disabled_by_user', False):
        return False, version, 'CHAINER_CUDNN=0 in the environment'
    err = getattr(ccuda, '_resolution_error', None)
    reason = _one_line(err) if err is not None else 'unknown'
    cupy_major = int(ccuda.cupy.__version__.split('.')[0])
    if cupy_major >= 14:
        reason = ('CuPy %s has no cuDNN (cupy.cudnn was removed in CuPy 14; the .[gpu] '
                  'stack, CuPy 13, has it): %s' % (ccuda.cupy.__version__, reason))
    return False, version, reason


def _cudnn_version_string(v):
    # cuDNN 8: major*1000 + minor*100 + patch; cuDNN 9: major*10000 + minor*100 + patch
    if v >= 90000:
        return '%d.%d.%d' % (v // 10000, v % 10000 // 100, v % 100)
    return '%d.%d.%d' % (v // 1000, v % 1000 // 100, v % 100)


def nccl_status(cupy):
    """(version string or None, reason unavailable or None)."""
    if cupy is None:
        return None, 'needs CuPy'
    try:
        from cupy.cuda import nccl
    except Exception as e:
        return None, _one_line(e)
    if not getattr(nccl, 'available', True):
        return None, 'CuPy was built without NCCL'
    try:
        v = nccl.get_version()
    except Exception as e:
        return None, 'libnccl cannot be loaded: %s' % _one_line(e)
    return '%d.%d.%d' % (v // 10000, v % 10000 // 100, v % 100) if v >= 10000 else \
        '%d.%d.%d' % (v // 1000, v % 1000 // 100, v % 100), None


def gpus(cupy):
    """([(index, name, GiB, 'sm_XY')], reason there are none or None)."""
    if cupy is None:
        return [], 'CuPy is unusable'
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return [], _one_line(e)
    out = []
    for i in range(n):
        p = cupy.cuda.runtime.getDeviceProperties(i)
        name = p['name'].decode() if isinstance(p['name'], bytes) else str(p['name'])
        out.append((i, name, p['totalGlobalMem'] / 2 ** 30, 'sm_%d%d' % (p['major'], p['minor'])))
    return out, (None if out else 'CUDA reports 0 devices')


def cuda_versions(cupy):
    """(runtime 'X.Y' or None, driver 'X.Y' or reason)."""
    def fmt(v):
        return '%d.%d' % (v // 1000, v % 1000 // 10)
    if cupy is None:
        return None, 'n/a'
    try:
        runtime = fmt(cupy.cuda.runtime.runtimeGetVersion())
    except Exception as e:
        runtime = 'unknown (%s)' % _one_line(e)
    try:
        d = cupy.cuda.runtime.driverGetVersion()
        driver = fmt(d) if d else 'none (no NVIDIA driver on this machine)'
    except Exception as e:
        driver = 'unknown (%s)' % _one_line(e)
    return runtime, driver


def blas():
    """NumPy's BLAS as threadpoolctl sees it: 'openblas 0.3.23 (Haswell kernels, 2 threads)'."""
    try:
        import threadpoolctl
    except ImportError:
        return 'unknown (threadpoolctl is not installed)'
    infos = [i for i in threadpoolctl.threadpool_info() if i.get('user_api') == 'blas']
    if not infos:
        return 'none found by threadpoolctl'
    parts = []
    for i in infos:
        arch = i.get('architecture')
        parts.append('%s %s (%s%d threads; %s)' % (
            i.get('internal_api'), i.get('version'),
            '%s kernels, ' % arch if arch else '', i.get('num_threads', 0),
            i.get('filepath')))
    coretype = os.environ.get('OPENBLAS_CORETYPE')
    return '; '.join(parts) + (' [OPENBLAS_CORETYPE=%s]' % coretype if coretype else '')


def cpu_update_status():
    """The optimizers' compiled float32 CPU update (pfn15/optimizers/cpu_update.c), or
    why they run their NumPy code."""
    from pfn15.optimizers import cpu_update
    if cpu_update.available():
        return cpu_update.status() + '; float32 updates in one pass on OpenMP threads'
    return 'NumPy (the compiled pass: %s)' % cpu_update.status()


def mpi():
    """(library 'vendor version', mpiexec verdict line)."""
    try:
        import mpi4py
    except Exception as e:
        return 'unusable: mpi4py cannot be imported (%s)' % _one_line(e), 'n/a'
    try:
        if 'mpi4py.MPI' not in sys.modules:
            # MPI_Get_library_version may be called before MPI_Init: no MPI start-up here.
            mpi4py.rc.initialize = False
            mpi4py.rc.finalize = False
        from mpi4py import MPI
        library = ' '.join(MPI.Get_library_version().strip().splitlines()[0].split())
    except Exception as e:
        # the first line of mpi4py's error: the library it looked for first
        return 'unusable: mpi4py cannot load an MPI library (%s: %s)' % (
            type(e).__name__, str(e).strip().splitlines()[0]), 'n/a'
    lib_vendor, lib_version = _mpi_vendor_version(library)
    mpiexec = shutil.which('mpiexec')
    if mpiexec is None:
        return ('mpi4py %s, %s' % (mpi4py.__version__, library),
                'no mpiexec on PATH')
    try:
        out = subprocess.run([mpiexec, '--version'], capture_output=True, text=True,
                             timeout=20)
        text = out.stdout + out.stderr
    except Exception as e:
        return 'mpi4py %s, %s' % (mpi4py.__version__, library), \
            '%s (cannot run --version: %s)' % (mpiexec, _one_line(e))
    exe_vendor, exe_version = _mpi_vendor_version(text)
    same = exe_vendor == lib_vendor and exe_version == lib_version and lib_vendor
    verdict = '%s: %s %s -- %s' % (
        mpiexec, exe_vendor or 'unknown MPI', exe_version or '',
        'belongs to the library mpi4py uses' if same else
        'NOT the library mpi4py uses (%s %s): ranks started by it may each run alone'
        % (lib_vendor or '?', lib_version or '?'))
    return 'mpi4py %s, %s' % (mpi4py.__version__, library), verdict


def _mpi_vendor_version(text):
    """('MPICH'|'Open MPI'|'Intel MPI'|'MVAPICH'|..., version) from a library or mpiexec banner."""
    patterns = (
        ('Intel MPI', r'Intel\(R\) MPI Library[^0-9]*([0-9][0-9.]*)'),
        ('MVAPICH', r'MVAPICH2? Version:?\s*([0-9][0-9.a-z]*)'),
        ('Open MPI', r'Open MPI v?([0-9][0-9.]*)'),
        ('Open MPI', r'\(Open(?:RTE| MPI)\)\s*([0-9][0-9.]*)'),
        ('MPICH', r'MPICH Version:\s*([0-9][0-9.a-z]*)'),
        ('MPICH', r'HYDRA build details:\s*Version:\s*([0-9][0-9.a-z]*)'),
        ('MPICH', r'^\s*Version:\s*([0-9][0-9.a-z]*)'),
    )
    for vendor, pat in patterns:
        m = re.search(pat, text, re.M)
        if m:
            return vendor, m.group(1).rstrip('.')
    return None, None


def _one_line(e):
    if isinstance(e, BaseException):
        text = '%s: %s' % (type(e).__name__, e)
    else:
        text = str(e)
    return ' '.join(text.split())


def _version(module_name):
    try:
        return __import__(module_name).__version__
    except Exception as e:
        return 'absent (%s)' % _one_line(e)


# ----------------------------------------------------------------- report

class Stack(object):
    """Everything the report and the config check need, probed once."""

    def __init__(self):
        self.python = '%s (%s)' % (platform.python_version(), sys.executable)
        self.missing = missing_parts()
        self.numpy = 'absent: ' + self.missing['NumPy'] if 'NumPy' in self.missing \
            else _version('numpy')
        self.blas = blas() if 'NumPy' not in self.missing else 'n/a'
        self.chainer = 'absent: ' + self.missing['Chainer'] if 'Chainer' in self.missing \
            else _version('chainer')
        self.cpu_update = cpu_update_status() if 'NumPy' not in self.missing else 'n/a'
        self.cupy, self.cupy_reason = cupy_status()
        self.runtime, self.driver = cuda_versions(self.cupy)
        self.cudnn_enabled, self.cudnn_version, self.cudnn_reason = cudnn_status()
        self.nccl_version, self.nccl_reason = nccl_status(self.cupy)
        self.gpus, self.gpu_reason = gpus(self.cupy)
        self.mpi_library, self.mpiexec = mpi()

    def lines(self):
        out = ['pfn15 %s: the stack a run will use (python -m pfn15.env)' % pfn15.__version__,
               'Python    %s' % self.python,
               'NumPy     %s; BLAS: %s' % (self.numpy, self.blas),
               'Chainer   %s' % self.chainer,
               'CPU update %s' % self.cpu_update]

        if self.cupy is None:
            out.append('CuPy      unusable: %s' % self.cupy_reason)
        else:
            out.append('CuPy      %s (%s)' % (self.cupy.__version__,
                                              os.path.dirname(self.cupy.__file__)))
            out.append('CUDA      runtime %s, driver %s' % (self.runtime, self.driver))
        cudnn_file = cuda_libs.loaded_path('libcudnn.so')
        where = ' from %s' % cudnn_file if cudnn_file else ''
        if self.cudnn_enabled:
            out.append('cuDNN     %s%s; enabled in Chainer' % (self.cudnn_version, where))
        else:
            out.append('cuDNN     %s; OFF in Chainer (convolutions run as im2col + GEMM): %s'
                       % ((self.cudnn_version + where) if self.cudnn_version else 'not loaded',
                          self.cudnn_reason))
        if self.nccl_version:
            nccl_file = cuda_libs.loaded_path('libnccl.so')
            out.append('NCCL      %s%s' % (self.nccl_version,
                                           ' from %s' % nccl_file if nccl_file else ''))
        else:
            out.append('NCCL      unavailable: %s' % self.nccl_reason)
        if self.gpus:
            out.append('GPUs      %d: %s' % (len(self.gpus), '; '.join(
                '%d %s (%.0f GiB, %s)' % g for g in self.gpus)))
        else:
            out.append('GPUs      none visible: %s' % self.gpu_reason)
        out.append('CUDA libs %s=%s: %s' % (
            cuda_libs.ENV_VAR, cuda_libs.policy,
            '%d preloaded from pip wheels (%s)' % (
                len(cuda_libs.loaded), ', '.join(sorted(cuda_libs.loaded)))
            if cuda_libs.loaded else 'none preloaded (no nvidia-* wheels, or policy system)'))
        for line in cuda_libs.failed:
            out.append('          %s' % line)
        out.append('MPI       %s' % self.mpi_library)
        out.append('mpiexec   %s' % self.mpiexec)
        return out


# ----------------------------------------------------------------- install check

def install_problems(stack):
    """One line per missing or broken part of the install (empty: nothing is).

    Checks of the stack that need no config add their line here."""
    out = ['%s %s' % (name, reason) for name, reason in stack.missing.items()
           if name != 'mpi4py' or not stack.mpi_library.startswith('unusable')]
    if stack.mpi_library.startswith('unusable'):
        out.append('MPI: %s' % stack.mpi_library)
    return out


# ----------------------------------------------------------------- config check

def problems(cfg, stack):
    """One line per reason `cfg` cannot run on `stack` (empty: it can)."""
    out = []
    if stack.mpi_library.startswith('unusable') or 'Chainer' in stack.missing:
        # pfn15.train needs MPI, and importing ChainerMN (pfn15.comm) needs it and
        # Chainer: the communicator checks below are left out.
        if stack.mpi_library.startswith('unusable'):
            out.append('MPI: %s' % stack.mpi_library)
        comm_name = None
    else:
        from pfn15 import comm as comm_module
        comm_name = comm_module.communicator_name(cfg)
    if cfg.train.device == 'gpu':
        if stack.cupy is None:
            out.append('train.device=gpu needs CuPy with a GPU; CuPy is unusable here: %s'
                       % stack.cupy_reason)
        elif not stack.gpus:
            out.append('train.device=gpu needs a GPU; CuPy sees none here: %s'
                       % stack.gpu_reason)
        if stack.cupy is not None and comm_name == 'pure_nccl' and not stack.nccl_version:
            out.append('comm.name=pure_nccl%s needs NCCL: %s'
                       % (' (auto on GPUs)' if cfg.comm.name == 'auto' else '',
                          stack.nccl_reason))
        if stack.cupy is not None and cfg.train.require_cudnn and not stack.cudnn_enabled:
            out.append('train.require_cudnn is true, but cuDNN is off: %s' % stack.cudnn_reason)
    elif comm_name is not None and comm_name not in COMMUNICATORS_ON_CPU:
        out.append('comm.name=%s needs GPUs; on train.device=cpu only %s exists'
                   % (comm_name, ' or '.join(COMMUNICATORS_ON_CPU)))
    if cfg.comm.allreduce_fp16 and comm_name is not None and comm_name != 'pure_nccl':
        out.append('comm.allreduce_fp16 needs the pure_nccl communicator (GPUs and NCCL); '
                   'comm.name resolves to %s' % comm_name)
    return out


def load_config(path, overrides):
    """The config for a stack check: data paths are not checked, and an environment
    variable it names that is unset here (IMAGENET_ROOT on a login node) only gets a note.
    Returns (cfg, notes); raises ConfigError."""
    from pfn15 import config as config_module
    text = ''
    if os.path.isfile(path):   # else config.load says the file does not exist
        with open(path) as f:
            text = f.read()
    unset = sorted({m.group(1) for m in config_module._ENV.finditer(text)
                    if m.group(1) not in os.environ and m.group(2) is None})
    saved = dict(os.environ)
    try:
        os.environ.update({name: '' for name in unset})
        cfg = config_module.load(path, overrides, check_paths=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    notes = ['note: %s names the environment variable %s, unset here; pfn15.train will '
             'need it' % (path, name) for name in unset]
    return cfg, notes


# ----------------------------------------------------------------- at train start

def check_cudnn(cfg, comm):
    """At the start of a GPU run: say once (rank 0) if convolutions fall back to im2col.

    Every rank probes its own node; the verdicts are gathered, so a node
    without cuDNN is named (rank, host) and all ranks stop together when
    train.require_cudnn makes it an error (exit 2) -- none waits in a collective.
    """
    if cfg.train.device != 'gpu':
        return
    enabled, _, reason = cudnn_status()
    verdicts = comm.mpi_comm.allgather(None if enabled else (errors.host(), reason))
    off = [(rank, v) for rank, v in enumerate(verdicts) if v is not None]
    if not off:
        return
    rank, (host, reason) = off[0]
    where = ('all %d ranks' % comm.size if len(off) == comm.size else
             '%d of %d ranks, first rank %d on %s' % (len(off), comm.size, rank, host))
    if cfg.train.require_cudnn:   # every rank has the verdicts: raised on all at once
        raise errors.UserError('train.require_cudnn is true, but cuDNN is off (%s): %s'
                               % (where, reason))
    if comm.rank == 0:
        print('pfn15: warning: cuDNN is off (%s): convolutions run as im2col + GEMM, '
              'several times slower: %s. (train.require_cudnn: true makes this an error.)'
              % (where, reason), file=sys.stderr, flush=True)


# ----------------------------------------------------------------- main

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ('-h', '--help'):
        print(__doc__.strip() + '\n\n' + cli.epilog(keys=True))
        return 0
    cfg = notes = None
    config_unread = None
    if argv:
        try:
            from pfn15 import config as config_module
        except Exception as e:   # PyYAML missing: one problem line below says so
            config_unread = _one_line(e)
        else:
            try:
                cfg, notes = load_config(argv[0], argv[1:])
            except config_module.ConfigError as e:
                print('pfn15.env: problem: %s: %s' % (argv[0], e), file=sys.stderr, flush=True)
                return errors.USER_ERROR
    stack = Stack()
    print('\n'.join(stack.lines()), flush=True)
    found = install_problems(stack)
    # A slow BLAS kernel: a problem on any CPU run where pfn15's choice did not take;
    # a warning where it is the user's own OPENBLAS_CORETYPE (theirs to keep).
    from pfn15 import blas_kernel
    slow_blas = blas_kernel.problem() if 'NumPy' not in stack.missing else None
    if slow_blas and blas_kernel.chosen_by_user():
        print('pfn15.env: warning: %s' % slow_blas, file=sys.stderr, flush=True)
        slow_blas = None
    elif slow_blas:
        print('pfn15.env: problem: %s' % slow_blas, file=sys.stderr, flush=True)
    if config_unread:
        print('note: %s was not checked: the config cannot be read without PyYAML (%s)'
              % (argv[0], config_unread))
    for note in notes or ():
        print(note)
    if cfg is not None:
        found += ['%s: %s' % (argv[0], line) for line in problems(cfg, stack)
                  if line not in found]
    for line in found:
        print('pfn15.env: problem: %s' % line, file=sys.stderr, flush=True)
    if found or (slow_blas and cfg is not None and cfg.train.device == 'cpu'):
        return errors.USER_ERROR
    if cfg is None:
        return 0
    from pfn15 import comm as comm_module   # MPI is usable: no problem above
    print('%s (%s): can run on this stack (train.device=%s, communicator %s)'
          % (argv[0], cfg.name, cfg.train.device, comm_module.communicator_name(cfg)))
    return 0


def _main_never_a_traceback(argv=None):
    """A diagnosis tool meets broken installs: whatever a probe raises is one more line."""
    try:
        return main(argv)
    except (errors.Stop, KeyboardInterrupt):
        raise
    except Exception as e:
        print('pfn15.env: problem: probing the stack failed: %s' % _one_line(e),
              file=sys.stderr, flush=True)
        return errors.USER_ERROR


if __name__ == '__main__':
    sys.exit(cli.run(_main_never_a_traceback, PROG))
