"""pfn15: the 15-minute ImageNet ResNet-50 recipe (Akiba et al. 2017) in Chainer/ChainerMN.

Importing pfn15 is light (the standard library only), so an entry point can
catch signals before anything heavy loads: `python -m pfn15.train` imports
this package first. What must precede NumPy, Chainer and CuPy is arranged
here without importing them:

- OpenBLAS's kernel (pfn15.blas_kernel): an environment variable, set now.
- Chainer's shims for newer stacks (pfn15._compat) and the CUDA libraries of
  NVIDIA's pip wheels (pfn15.cuda_libs): run by an import hook the first time
  anything imports Chainer, ChainerMN or CuPy, just before it loads.
"""
import sys

from pfn15 import blas_kernel

__version__ = '0.1.0'

blas_kernel.choose()   # before NumPy loads

_BEFORE = ('chainer', 'chainermn', 'cupy')


def prepare_stack():
    """Load pfn15._compat and pfn15.cuda_libs (idempotent). Runs before the first
    import of Chainer, ChainerMN or CuPy; callable directly."""
    _hook.done = True
    from pfn15 import _compat, cuda_libs   # noqa: F401


class _Hook(object):
    """A meta-path finder that finds nothing: it only runs prepare_stack() first."""

    done = False

    def find_spec(self, name, path=None, target=None):
        if not self.done and name in _BEFORE:
            prepare_stack()
        return None


_hook = _Hook()
if any(name in sys.modules for name in _BEFORE):
    prepare_stack()   # too late to precede them; the shims still apply to what follows
else:
    sys.meta_path.insert(0, _hook)
