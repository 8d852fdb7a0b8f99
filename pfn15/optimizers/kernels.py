"""The CUDA kernels of pfn15's optimizers, as data: one text per kernel, used twice.

Each kernel is a `Elementwise` or `Reduction` spec: the parameter lists and
the body text CuPy's ElementwiseKernel / ReductionKernel compiles on the GPU.
The same texts are compiled for the host by the tests (tests/hostcc.py: g++,
with the two type names defined) and checked against the NumPy update rules,
and compiled with NVRTC for every GPU architecture and both CuPy stacks
(tests/test_kernels_nvrtc.py), so the GPU rule and the CPU rule cannot drift
apart unnoticed, and a kernel that does not compile fails `make test`.

Type names in the kernels: `T` is the parameter's dtype (what the arrays
hold), `P` the dtype the arithmetic is done in (`compute_dtype(T)`): float32
for float16 parameters -- float16 cannot hold RMSprop's eps=1e-8 or a
squared norm above 65504 -- and T itself otherwise.
"""
import collections

import numpy


def compute_dtype(dtype):
    """The dtype an optimizer's arithmetic runs in for parameters of `dtype`."""
    dtype = numpy.dtype(dtype)
    return numpy.dtype(numpy.float32) if dtype == numpy.float16 else dtype


class Elementwise(collections.namedtuple(
        'Elementwise', 'in_params out_params operation name')):
    """An elementwise kernel (cupy.ElementwiseKernel's arguments)."""

    def gpu(self):
        """The CuPy kernel (Chainer memoizes it per device; CuPy compiles it per dtype)."""
        from chainer.backends import cuda
        return cuda.elementwise(self.in_params, self.out_params, self.operation, self.name)

    def args(self, **values):
        """The kernel's arguments in its parameter order (CuPy takes them positionally)."""
        return [values[p.split()[-1]] for p in
                (self.in_params + ',' + self.out_params).split(',')]


class Reduction(collections.namedtuple(
        'Reduction', 'in_params out_params map_expr reduce_expr post_map_expr '
                     'identity name reduce_type')):
    """A reduction kernel (cupy.ReductionKernel's arguments)."""

    def gpu(self):
        """The CuPy kernel (Chainer memoizes it per device; CuPy compiles it per dtype)."""
        from chainer.backends import cuda
        return cuda.reduce(self.in_params, self.out_params, self.map_expr, self.reduce_expr,
                           self.post_map_expr, self.identity, self.name,
                           reduce_type=self.reduce_type)


def scalar(value, dtype):
    """A hyperparameter as a NumPy scalar of `dtype`: it fixes the kernel's `P`."""
    return numpy.dtype(dtype).type(value)
