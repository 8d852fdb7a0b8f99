"""The compiled CPU updates (cpu_update.c): each rule's float32 update in one pass on
the rank's OpenMP threads, the same bits as its NumPy code, and the exact
finite-gradient check.

`make install` compiles cpu_update.c (setup.py, an optional extension: without a
C compiler with OpenMP the install goes on and the rules run their NumPy code).
Each function returns False where it does not apply -- no library, an array that
is not C-contiguous float32 NumPy, a scalar whose NumPy arithmetic would not be
float32 -- and the caller runs its NumPy code then (measured: docs/onednn.md).
"""
import ctypes
import importlib.machinery
import os

import numpy

_NUMPY2 = int(numpy.__version__.split('.')[0]) >= 2
VERSION = 1   # pfn15_cpu_update_version() of the cpu_update.c beside this file
_lib = None
_why = None


def _load():
    global _lib, _why
    if _lib is not None or _why is not None:
        return _lib
    here = os.path.dirname(os.path.abspath(__file__))
    paths = [os.path.join(here, '_cpu_update' + s)
             for s in importlib.machinery.EXTENSION_SUFFIXES]
    path = next((p for p in paths if os.path.exists(p)), None)
    if path is None:
        _why = 'not built (pip install -e . compiles pfn15/optimizers/cpu_update.c)'
        return None
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        _why = 'does not load: %s' % e
        return None
    built = getattr(lib, 'pfn15_cpu_update_version', None)
    built = built() if built is not None else 0
    if built != VERSION:
        _why = ('built from another cpu_update.c (version %d, this pfn15 has %d): '
                'reinstall (pip install -e .)' % (built, VERSION))
        return None
    f32p, i64, c_int, c_float = (ctypes.c_void_p, ctypes.c_int64, ctypes.c_int,
                                 ctypes.c_float)
    lib.pfn15_momentum_sgd_f32.argtypes = [f32p] * 3 + [i64, c_int] + [c_float] * 3 + [c_int]
    lib.pfn15_rmsprop_warmup_f32.argtypes = ([f32p] * 4 + [i64, c_int] + [c_float] * 4 +
                                             [c_int] + [c_float] * 4 + [c_int])
    lib.pfn15_lars_f32.argtypes = [f32p] * 3 + [i64, c_int] + [c_float] * 3 + [c_int]
    lib.pfn15_all_finite_f32.argtypes = [ctypes.POINTER(ctypes.c_void_p),
                                         ctypes.POINTER(ctypes.c_int64), i64, c_int]
    lib.pfn15_all_finite_f32.restype = c_int
    for f in (lib.pfn15_momentum_sgd_f32, lib.pfn15_rmsprop_warmup_f32, lib.pfn15_lars_f32):
        f.restype = None
    _lib = lib
    return lib


def available():
    return _load() is not None


def status():
    """'compiled (path)' or why the rules run their NumPy code, for pfn15.env."""
    lib = _load()
    return 'compiled (%s)' % lib._name if lib is not None else _why


def _plain(a):
    """A C-contiguous float32 NumPy array: what the C code takes."""
    return type(a) is numpy.ndarray and a.dtype == numpy.float32 and a.flags.c_contiguous


def _arrays(*arrays):
    return all(_plain(a) and a.size == arrays[0].size for a in arrays)


def _scalars(*values):
    # NumPy 2 computes a float32 array with a NumPy float64 scalar in float64.
    return not _NUMPY2 or all(type(v) in (float, int, bool) for v in values)


def _threads():
    from pfn15.functions import _parallel
    return _parallel.threads()


def _ptr(a):
    return a.ctypes.data


def momentum_sgd(g, w, v, rate, momentum, lr):
    """momentum_sgd.py's pieces on whole arrays, in place; False: not done."""
    lib = _load()
    if lib is None or not _arrays(g, w, v) or not _scalars(rate or 0.0, momentum, lr):
        return False
    lib.pfn15_momentum_sgd_f32(_ptr(g), _ptr(w), _ptr(v), g.size, bool(rate), rate or 0.0,
                               momentum, lr, _threads())
    return True


def rmsprop_warmup(g, w, m, v, rate, hp):
    """rmsprop_warmup.py's _update_pieces on whole arrays, in place; False: not done."""
    lib = _load()
    if lib is None or not _arrays(g, w, m, v) or not _scalars(
            rate or 0.0, hp.mu1, hp.mu2, hp.lr, hp.alpha_sgd, hp.lr_rmsprop, hp.eps):
        return False
    lib.pfn15_rmsprop_warmup_f32(
        _ptr(g), _ptr(w), _ptr(m), _ptr(v), g.size, bool(rate), rate or 0.0,
        hp.mu2, 1 - hp.mu2, hp.mu1, hp.alpha_sgd == 1, hp.lr,
        (1 - hp.alpha_sgd) * hp.lr_rmsprop, hp.eps, hp.lr * hp.alpha_sgd, _threads())
    return True


def lars(g, w, v, weight_decay, momentum, scale):
    """lars.py's _update_pieces on whole arrays, in place (scale: float32(lr) x
    float32(local), as there); False: not done."""
    lib = _load()
    if lib is None or not _arrays(g, w, v) or not _scalars(weight_decay, momentum):
        return False
    lib.pfn15_lars_f32(_ptr(g), _ptr(w), _ptr(v), g.size, bool(weight_decay), weight_decay,
                       momentum, scale, _threads())
    return True


def all_finite(arrays):
    """True/False: no NaN or inf in any of `arrays`; None where the library cannot
    answer (no library, or an array that is not C-contiguous float32 NumPy)."""
    lib = _load()
    if lib is None or not arrays or not all(_plain(a) for a in arrays):
        return None
    n = len(arrays)
    ptrs = (ctypes.c_void_p * n)(*[a.ctypes.data for a in arrays])
    sizes = (ctypes.c_int64 * n)(*[a.size for a in arrays])
    return bool(lib.pfn15_all_finite_f32(ptrs, sizes, n, _threads()))
