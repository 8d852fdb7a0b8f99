"""Make CuPy find the CUDA libraries that NVIDIA ships as pip wheels (`pip install '.[gpu]'`).

CuPy's wheels bundle no CUDA library: they open libcudart, libnvrtc,
libcublas, libcufft, libcurand, libcusolver, libcusparse, libcudnn and
libnccl by their sonames (`libcudnn.so.8`, ...), through the dynamic
loader's search path. NVIDIA's `nvidia-*-cu12` wheels put those libraries in
site-packages/nvidia/<name>/lib/, where the loader does not look; CuPy 13
looks there for NCCL only (and not for cuDNN). So on a node with only a
driver, CuPy 13 fails to load NVRTC (no kernel compiles) and Chainer turns
cuDNN off.

`preload()` loads each library present in those wheels by absolute path,
with RTLD_GLOBAL, before anything imports CuPy (pfn15/__init__.py calls it
right after pfn15._compat). A later dlopen by soname -- CuPy's -- then gets
the library already loaded: the loader matches loaded libraries by soname.
PyTorch and JAX load their pip-installed CUDA libraries the same way.

Which copy wins, chosen by the environment variable PFN15_CUDA_LIBS:

- unset or `wheels` (the default): each library that a pip wheel provides
  comes from the wheel; the others from the loader's search path
  (LD_LIBRARY_PATH, i.e. a site's `module load cuda cudnn nccl`).
- `system`: nothing is preloaded; every library comes from the search path,
  as if the wheels were absent (a site's own CUDA/cuDNN/NCCL builds).

Without the wheels (a CPU machine, `pip install .`) it does nothing but
look for the `nvidia` package once; it never imports CuPy.

CuPy 14 finds NVIDIA's wheels itself (cuda-pathfinder), including the CUDA 13
ones (site-packages/nvidia/cu13/lib, not looked at here); preloading the
CUDA 12 wheels' files for it loads the same files it would pick.
"""
import ctypes
import importlib.util
import os
import sys

ENV_VAR = 'PFN15_CUDA_LIBS'

# (directory under site-packages/nvidia/, soname prefix), dependencies first.
# cuDNN 8's libcudnn.so.8 opens its sub-libraries (libcudnn_cnn_infer.so.8, ...)
# itself, from its own directory (RUNPATH $ORIGIN), when first used.
LIBRARIES = (
    ('cuda_runtime', 'libcudart.so.'),
    ('nvjitlink', 'libnvJitLink.so.'),
    ('cublas', 'libcublasLt.so.'),
    ('cublas', 'libcublas.so.'),
    ('cusparse', 'libcusparse.so.'),
    ('cusolver', 'libcusolver.so.'),
    ('cufft', 'libcufft.so.'),
    ('curand', 'libcurand.so.'),
    ('cuda_nvrtc', 'libnvrtc.so.'),
    ('cudnn', 'libcudnn.so.'),
    ('nccl', 'libnccl.so.'),
)

# What preload() did, for `python -m pfn15.env`: soname -> absolute path loaded,
# and one line for each thing that went wrong (a library found but not loadable).
loaded = {}
failed = []
policy = None   # 'wheels', 'system', or the reason nothing was looked for


def _nvidia_dirs():
    """The site-packages/nvidia directories (a namespace package), or []."""
    try:
        spec = importlib.util.find_spec('nvidia')
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    return list(spec.submodule_search_locations or [])


def wheel_libraries():
    """[(soname, absolute path)] of the libraries the installed wheels provide, in load order."""
    found = []
    for root in _nvidia_dirs():
        for package, prefix in LIBRARIES:
            libdir = os.path.join(root, package, 'lib')
            try:
                names = sorted(os.listdir(libdir))
            except OSError:
                continue
            for name in names:
                # libcudnn.so.8, libnccl.so.2; not libnvrtc.alt.so.12 or libnvrtc-builtins
                if name.startswith(prefix) and name[len(prefix):].split('.')[0].isdigit():
                    found.append((name, os.path.join(libdir, name)))
                    break
    return found


def preload():
    """Load the wheels' CUDA libraries (see the module docstring); idempotent."""
    global policy
    if policy is not None:
        return
    choice = os.environ.get(ENV_VAR, 'wheels').strip().lower() or 'wheels'
    if not sys.platform.startswith('linux'):
        policy = 'not Linux: nothing preloaded'
        return
    if choice not in ('wheels', 'system'):
        policy = 'wheels'
        failed.append('%s=%r is neither "wheels" nor "system"; using "wheels"'
                      % (ENV_VAR, choice))
    else:
        policy = choice
    if policy == 'system':
        return
    for soname, path in wheel_libraries():
        if soname in loaded:
            continue
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError as e:   # e.g. a wheel for a newer driver; CuPy reports it later
            failed.append('cannot load %s: %s' % (path, e))
        else:
            loaded[soname] = path


def loaded_path(soname_prefix):
    """The file this process has mapped for a library (e.g. 'libcudnn.so'), or None."""
    try:
        with open('/proc/self/maps') as f:
            for line in f:
                path = line.rstrip('\n').split(None, 5)[-1]
                if os.path.basename(path).startswith(soname_prefix):
                    return path
    except OSError:
        pass
    return None


preload()   # on import: pfn15/__init__.py imports this module before anything imports CuPy
