"""The CUDA kernels of pfn15's optimizers, as data: one text per kernel, used twice.

Each kernel is an `Elementwise` spec: the parameter lists, the body text
and the preamble CuPy's ElementwiseKernel compiles on the GPU. The same texts
are compiled for the host by the tests (tests/kernels/hostcc.py: g++, with the type
names defined) and checked against the NumPy update rules, and compiled with
NVRTC through CuPy's own code generation for every GPU architecture and both
CuPy stacks (tests/kernels/test_kernels_nvrtc.py). So the GPU rule and the CPU rule
cannot drift apart unnoticed, and a kernel that does not compile fails
`make test`.

Types in the kernels: `T` is the parameter's dtype (what the arrays hold);
`P` (from PREAMBLE) the type the arithmetic runs in: float for float16
parameters -- float16 cannot hold RMSprop's eps=1e-8 or a squared norm above
65504 -- and T itself otherwise. Hyperparameters arrive as float64 and are
rounded to P where they are used, as NumPy rounds a Python float against a
float32 array.
"""
import collections

import numpy

# P = compute_dtype(T), in C++. CuPy names NumPy's float16 `float16`.
PREAMBLE = '''
template <typename T> struct pfn15_compute { typedef T type; };
template <> struct pfn15_compute<float16> { typedef float type; };
'''


def compute_dtype(dtype):
    """The dtype an optimizer's arithmetic runs in for parameters of `dtype` (P)."""
    dtype = numpy.dtype(dtype)
    return numpy.dtype(numpy.float32) if dtype == numpy.float16 else dtype


class Elementwise(collections.namedtuple(
        'Elementwise', 'in_params out_params operation name preamble')):
    """An elementwise kernel (cupy.ElementwiseKernel's arguments)."""

    def gpu(self):
        """The CuPy kernel (Chainer memoizes it per device; CuPy compiles it per dtype)."""
        from chainer.backends import cuda
        return cuda.elementwise(self.in_params, self.out_params, self.operation, self.name,
                                preamble=self.preamble)

    def args(self, **values):
        """The kernel's arguments in its parameter order (CuPy takes them positionally)."""
        return [values[p.split()[-1]] for p in
                (self.in_params + ',' + self.out_params).split(',')]


class KernelCase(collections.namedtuple('KernelCase', 'spec arrays broadcast dtypes variant')):
    """One way a GPU run launches `spec` (an Elementwise): which arguments are arrays
    (the others are scalars), which of those are 0-d (broadcast), for which
    parameter dtypes (T), and a `variant` label when one kernel is launched two
    ways. The kernel tests compile every case of every registered optimizer."""

    def __new__(cls, spec, arrays, broadcast=(), dtypes=('float32', 'float16'), variant=''):
        return super(KernelCase, cls).__new__(cls, spec, tuple(arrays), tuple(broadcast),
                                              tuple(dtypes), variant)

    @property
    def typed(self):
        """Whether the kernel has the type parameter T (else it is float64 only)."""
        return any(p.split()[0] == 'T' for p in
                   (self.spec.in_params + ',' + self.spec.out_params).split(','))

    def ids(self):
        """[(id, dtype)]: 'name/dtype' or 'name/dtype/variant'."""
        return [('/'.join([self.spec.name, d] + ([self.variant] if self.variant else [])), d)
                for d in self.dtypes]
