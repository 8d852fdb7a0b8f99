"""Shims that let Chainer 7.8.1 (the last release, 2020) import and run on newer stacks.

Each shim restores one thing Chainer uses that NumPy 2 or Python 3.12 removed.
They are no-ops on the stack Chainer was released for (Python <= 3.11,
NumPy 1.x): each one first checks that the thing is really missing. They must
run before the first `import chainer` (pfn15/__init__.py imports this module
first).

What Chainer 7.8.1 (with chainermn inside it) needs from the removed APIs was
found by importing and running it on Python 3.12 + NumPy 2 and by grepping
site-packages/chainer for the names NumPy 2 and Python 3.12 removed; only two
things are used:

- `numpy.sctypes` (removed in NumPy 2.0): chainer/functions/array/as_strided.py
  reads it at import time (`import chainer` fails without it).
- `numpy.distutils` (gone for Python >= 3.12, and in NumPy 2.x there):
  chainer/_environment_check.py imports `numpy.distutils.system_info` at
  import time, only to ask, on macOS, whether NumPy links Accelerate.

Not shimmed, on purpose:

- `pkg_resources` (chainer/_environment_check.py, at import time, to check the
  CuPy/iDeep versions): it comes with setuptools < 81, which both stacks pin
  (setuptools==69.5.1, also needed to build Chainer's sdist). A stand-in would
  be seen by every other library that probes for pkg_resources.
- The rest of the NumPy 2 removals (np.float_, np.product, np.asscalar,
  np.find_common_type, np.bool8, ...) and the Python 3.12 removals (imp,
  distutils, collections ABC aliases): Chainer 7.8.1 outside chainer.testing
  does not use them.
"""
import importlib.util
import sys
import types

import numpy

# NumPy 2.0 removed `np.sctypes` (NumPy 2 release notes, "expired/removed
# members"). Chainer reads it in chainer/functions/array/as_strided.py: at
# import time (`np.sctypes['int']`, to pick an index dtype by item size) and in
# the backward pass (`gy.dtype not in np.sctypes['float']`). Restore NumPy
# 1.x's lists for the kinds Chainer reads, with the same scalar types (the
# platform-dependent longdouble/clongdouble included, as NumPy 1.x had them).
if not hasattr(numpy, 'sctypes'):
    numpy.sctypes = {
        'int': [numpy.int8, numpy.int16, numpy.int32, numpy.int64],
        'uint': [numpy.uint8, numpy.uint16, numpy.uint32, numpy.uint64],
        'float': [numpy.float16, numpy.float32, numpy.float64, numpy.longdouble],
        'complex': [numpy.complex64, numpy.complex128, numpy.clongdouble],
        'others': [bool, object, bytes, str, numpy.void],
    }

# numpy.distutils is gone on Python >= 3.12 (and from NumPy 2.x there).
# chainer/_environment_check.py does `import numpy.distutils.system_info` at
# import time and calls `numpy.distutils.system_info.get_info('blas_opt')`,
# only on macOS, to warn if NumPy uses Accelerate. The stand-in answers
# `get_info` as numpy.distutils did for a library it could not find (an empty
# dict), so the macOS check just finds nothing. find_spec does not import
# numpy.distutils where it still exists, so this is a no-op there.
if importlib.util.find_spec('numpy.distutils') is None:
    _distutils = types.ModuleType(
        'numpy.distutils',
        'pfn15._compat stand-in: numpy.distutils is gone on Python >= 3.12; '
        'only system_info.get_info exists, for Chainer 7.8.1\'s import-time check.')
    _system_info = types.ModuleType(
        'numpy.distutils.system_info',
        'pfn15._compat stand-in: get_info() finds nothing, as numpy.distutils '
        'did for a library it could not find.')
    _system_info.get_info = lambda name, notfound_action=0: {}
    _distutils.system_info = _system_info
    _distutils.__pfn15_stand_in__ = True
    sys.modules['numpy.distutils'] = _distutils
    sys.modules['numpy.distutils.system_info'] = _system_info
    numpy.distutils = _distutils
