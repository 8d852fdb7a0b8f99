"""Compile a CuPy kernel spec (pfn15.optimizers.kernels.Elementwise) for the host; call it via ctypes.

The kernel's own text goes in unchanged, inside a loop that stands in for
CuPy's grid-stride loop: array arguments are bound the way CuPy binds them
(`const T &x = _raw_x[i]` for inputs, `T &y = _raw_y[i]` for outputs),
scalars are passed by value, and the type names (T, float32, float64) are
typedefs. The only CUDA name the kernels use is `sqrt`, which <cmath> gives
for float and double as CUDA does. So the arithmetic that runs here is the
GPU kernel's (without the FMA contraction NVRTC may apply).
"""
import ctypes
import hashlib
import os
import subprocess

import numpy

_C_TYPES = {numpy.dtype(numpy.float32): ('float', ctypes.c_float),
            numpy.dtype(numpy.float64): ('double', ctypes.c_double)}

# CuPy's names for NumPy's types; float16 only as a type name (host tests run
# float32 and float64; the preamble specializes on it).
_HEADER = ('#include <cmath>\nusing std::sqrt;\n'
           'typedef float float32;\ntypedef double float64;\nstruct float16 {};\n')


def _params(spec):
    """[(type name, name)] of a CuPy parameter list like 'T grad, P lr'."""
    return [tuple(p.split()) for p in spec.split(',')]


def _typedefs(types):
    return ''.join('typedef %s %s;\n' % (_C_TYPES[numpy.dtype(d)][0], name)
                   for name, d in sorted(types.items()))


def _build(source, workdir):
    digest = hashlib.sha1(source.encode()).hexdigest()[:16]
    src = os.path.join(workdir, 'k%s.cpp' % digest)
    lib = os.path.join(workdir, 'k%s.so' % digest)
    if not os.path.exists(lib):
        with open(src, 'w') as f:
            f.write(source)
        subprocess.run(['g++', '-std=c++17', '-O2', '-shared', '-fPIC', '-o', lib, src],
                       check=True, capture_output=True, text=True)
    return ctypes.CDLL(lib)


def _ctype(types, tname):
    return _C_TYPES[numpy.dtype(types.get(tname, tname))][1]


class HostElementwise(object):
    """An Elementwise spec compiled for the host: call(n, name=value, ...).

    `arrays` names the parameters passed as arrays of n elements (in place
    for outputs); the others are scalars.
    """

    def __init__(self, spec, types, arrays, workdir):
        self.spec, self.types, self.arrays = spec, types, set(arrays)
        self.params = _params(spec.in_params) + _params(spec.out_params)
        n_in = len(_params(spec.in_params))
        args, binds = ['long _n'], []
        for i, (t, name) in enumerate(self.params):
            if name in self.arrays:
                args.append('%s *_raw_%s' % (t, name))
                binds.append('%s%s &%s = _raw_%s[_i];'
                             % ('const ' if i < n_in else '', t, name, name))
            else:
                args.append('%s %s' % (t, name))
        self.source = (_HEADER + _typedefs(types) + spec.preamble +
                       '\nextern "C" void kernel(%s) {\n'
                       '  for (long _i = 0; _i < _n; ++_i) {\n    %s\n%s\n  }\n}\n'
                       % (', '.join(args), '\n    '.join(binds), spec.operation))
        self.fn = _build(self.source, workdir).kernel
        self.fn.restype = None

    def __call__(self, n, **values):
        args = [ctypes.c_long(n)]
        for t, name in self.params:
            v = values[name]
            if name in self.arrays:
                assert v.dtype == self.types.get(t, t) and v.flags.c_contiguous and v.size == n, name
                args.append(v.ctypes.data_as(ctypes.c_void_p))
            else:
                args.append(_ctype(self.types, t)(v))
        self.fn(*args)
