"""pfn15._compat: Chainer 7.8.1 works on this stack, and each shim is there exactly when needed.

Runs on both stacks: Python 3.11 + NumPy 1.x (`make test`, where every shim
must be a no-op) and Python 3.12 + NumPy 2 (`make test-py312`, where the
shims make Chainer import and run).
"""
import subprocess
import sys

import numpy
import pytest

import pfn15  # noqa: F401  (imports pfn15._compat before Chainer)

NUMPY2 = int(numpy.__version__.split('.')[0]) >= 2


def test_chainer_and_chainermn_import():
    import chainer
    import chainermn

    assert chainer.__version__ == '7.8.1'
    assert hasattr(chainermn, 'create_communicator')


def test_tiny_model_forward_backward_update_on_cpu():
    import chainer
    import chainer.functions as F
    import chainer.links as L

    class Net(chainer.Chain):
        def __init__(self):
            super().__init__()
            with self.init_scope():
                self.conv = L.Convolution2D(3, 4, 3, pad=1, nobias=True)
                self.bn = L.BatchNormalization(4)
                self.fc = L.Linear(4, 5)

        def forward(self, x):
            h = F.relu(self.bn(self.conv(x)))
            h = F.max_pooling_2d(h, 2)
            h = F.average_pooling_2d(h, 4)
            return self.fc(h)

    rng = numpy.random.RandomState(0)
    x = rng.randn(8, 3, 8, 8).astype(numpy.float32)
    t = rng.randint(0, 5, 8).astype(numpy.int32)
    model = L.Classifier(Net())
    opt = chainer.optimizers.MomentumSGD(lr=0.1)
    opt.setup(model)
    before = model.predictor.fc.W.array.copy()
    losses = []
    for _ in range(5):
        model.cleargrads()
        loss = model(x, t)
        loss.backward()
        opt.update()
        losses.append(float(loss.array))
    assert all(numpy.isfinite(losses))
    assert losses[-1] < losses[0]
    assert not numpy.array_equal(before, model.predictor.fc.W.array)
    for p in model.params():
        assert p.array.dtype == numpy.float32, p.name


def test_as_strided_backward_reads_sctypes():
    # chainer/functions/array/as_strided.py is the user of np.sctypes.
    import chainer
    import chainer.functions as F

    x = chainer.Variable(numpy.arange(6, dtype=numpy.float32))
    y = F.as_strided(x, (2, 3), (3, 1))
    F.sum(y).backward()
    numpy.testing.assert_array_equal(x.grad, numpy.ones(6, numpy.float32))


@pytest.mark.skipif(not NUMPY2, reason='NumPy 1.x has its own numpy.sctypes')
def test_sctypes_shim_present_on_numpy2():
    assert isinstance(numpy.sctypes, dict)
    assert numpy.float32 in numpy.sctypes['float']
    assert numpy.float16 in numpy.sctypes['float']
    assert numpy.int32 in numpy.sctypes['int']
    assert {t().itemsize for t in numpy.sctypes['int']} == {1, 2, 4, 8}


@pytest.mark.skipif(NUMPY2, reason='the shim only exists on NumPy 2')
def test_sctypes_is_numpys_own_on_numpy1():
    # A fresh interpreter without pfn15 sees the same mapping: the shim did not
    # replace NumPy 1.x's object.
    own = subprocess.run(
        [sys.executable, '-c', 'import numpy; print(sorted((k, [t.__name__ for t in v]) '
                               'for k, v in numpy.sctypes.items()))'],
        check=True, capture_output=True, text=True).stdout.strip()
    ours = str(sorted((k, [t.__name__ for t in v]) for k, v in numpy.sctypes.items()))
    assert own == ours
    from numpy.core import numerictypes
    assert numpy.sctypes is numerictypes.sctypes


def test_numpy_distutils_stand_in_exactly_when_missing():
    mod = sys.modules.get('numpy.distutils')
    out = subprocess.run(
        [sys.executable, '-c', 'import importlib.util as u; '
                               'print(u.find_spec("numpy.distutils") is not None)'],
        check=True, capture_output=True, text=True).stdout.strip()
    numpy_ships_it = out == 'True'
    if numpy_ships_it:
        # No-op: NumPy's own package (or not yet imported at all).
        assert mod is None or not getattr(mod, '__pfn15_stand_in__', False)
        if mod is not None:
            assert mod.__file__
    else:
        assert getattr(mod, '__pfn15_stand_in__', False)
        from numpy.distutils import system_info
        assert system_info.get_info('blas_opt') == {}

