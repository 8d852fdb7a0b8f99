"""pfn15.chainermn_patches: what each patch restores (the kernels' compilation is in test_kernels_nvrtc)."""
import pfn15  # noqa: F401  (pfn15._compat before Chainer, on NumPy 2)
import numpy
import pytest

import chainer
from chainermn.communicators import _memory_utility

from pfn15 import chainermn_patches

NUMPY2 = int(numpy.__version__.split('.')[0]) >= 2


def test_apply_is_idempotent_and_patches_where_communicators_look():
    chainermn_patches.apply()
    patched = {a: getattr(_memory_utility, a) for a in chainermn_patches.FP16_KERNEL_GETTERS}
    chainermn_patches.apply()
    for attr, getter in patched.items():
        assert getattr(_memory_utility, attr) is getter            # not patched twice
        assert chainermn_patches.original(attr) is not getter       # the original is kept
    assert _memory_utility.unpack_params is chainermn_patches.unpack_params


def test_pack_unpack_kernels_get_cuda_fp16_and_nothing_else():
    unpatched = chainermn_patches.unpatched_kernel_sources()
    patched = chainermn_patches.patched_kernel_sources()
    assert sorted(patched) == ['cupy_batched_pack_params', 'cupy_batched_unpack_params']
    for name, code in unpatched.items():
        assert 'half' in code and '#include <cupy/carray.cuh>' in code
        assert 'cuda_fp16.h' not in code
        assert patched[name] == '#include <cuda_fp16.h>\n' + code
        # the text the patched getter compiles (chainer.cuda.raw gets exactly this)
        getter = getattr(_memory_utility, '_' + name)
        assert (getter.code, getter.kernel_name) == (patched[name], name)


def test_comm_create_applies_the_patches():
    import inspect
    from pfn15 import comm
    # comm.create must apply them before ChainerMN builds any communicator
    src = inspect.getsource(comm.create)
    assert src.index('chainermn_patches.apply()') < src.index('create_communicator')


class _HostBuffer(object):
    """A packed transfer buffer in host memory with ChainerMN's buffer interface
    (to_device copies `size` bytes at `offset` into the array)."""

    def __init__(self, values):
        self.raw = numpy.ascontiguousarray(values).view(numpy.uint8).ravel()

    def to_device(self, dst, size, offset=0, stream=None):
        dst.view(numpy.uint8).ravel()[:size] = self.raw[offset:offset + size]


def _float16_params():
    link = chainer.Link()
    with link.init_scope():
        link.a = chainer.Parameter(numpy.zeros((2, 3), numpy.float16))
        link.b = chainer.Parameter(numpy.zeros(4, numpy.float16))
    return [link.a, link.b]


def test_unpack_params_converts_dtypes_under_this_numpy():
    """mixed16's bcast_data: float16 parameters, float32 transfer buffer."""
    values = numpy.arange(10, dtype=numpy.float32) * 0.5
    params = _float16_params()
    chainermn_patches.unpack_params(params, 'data', _HostBuffer(values), numpy.float32, False)
    numpy.testing.assert_array_equal(params[0].array.ravel(), values[:6].astype(numpy.float16))
    numpy.testing.assert_array_equal(params[1].array, values[6:].astype(numpy.float16))
    assert params[0].array.dtype == numpy.float16


@pytest.mark.skipif(not NUMPY2, reason='the defect is NumPy 2 semantics (the 3.12 leg runs this)')
def test_chainermn_unpack_params_fails_under_numpy2():
    original = chainermn_patches.original('unpack_params')
    with pytest.raises(ValueError, match='copy'):
        original(_float16_params(), 'data', _HostBuffer(numpy.ones(10, numpy.float32)),
                 numpy.float32, False)
