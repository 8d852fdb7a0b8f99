"""Shims that let Chainer 7.8.1 (the last release, 2020) import on newer stacks.

Each shim restores one thing Chainer uses that NumPy 2 or Python 3.12 removed.
They are no-ops on the stack Chainer was released for (Python <= 3.11,
NumPy 1.x), and must run before the first `import chainer`.
"""
import numpy

# NumPy 2.0 removed `np.sctypes`; chainer/_backend? type_check uses it to list
# the float/int dtypes. Restore the NumPy 1.x mapping.
if not hasattr(numpy, 'sctypes'):
    numpy.sctypes = {
        'int': [numpy.int8, numpy.int16, numpy.int32, numpy.int64],
        'uint': [numpy.uint8, numpy.uint16, numpy.uint32, numpy.uint64],
        'float': [numpy.float16, numpy.float32, numpy.float64],
        'complex': [numpy.complex64, numpy.complex128],
        'others': [bool, object, bytes, str, numpy.void],
    }
