"""Chainer 7.8.1's own function test cases, run against pfn15.functions (CPU).

The cases of Chainer's tests/chainer_tests/functions_tests/ test_relu.py,
connection_tests/test_convolution_2d.py, normalization_tests/
test_batch_normalization.py and pooling_tests/test_max_pooling_2d.py, as an
outside check runs them: the same parameter grids, inputs, expected values and
tolerances, Chainer's own harness (chainer.testing.FunctionTestCase,
chainer.gradient_check.check_backward), with the function under test pfn15's.
CPU backend only, float32/float64.

Left out, because pfn15's functions do not take them (models use Chainer's
there): convolution with a bias, groups=2 or cover_all=True; max pooling with
cover_all=True; BN's `axis` argument (its (0, 2, 3) case is the default and is
run). Double backward: pfn15's functions are first-order only, so Chainer's
double-backward cases here check that they raise NotImplementedError.
BN cases with x of other ranks or multi-dimensional gamma go to Chainer's
function (pfn15.functions.batch_normalization falls back); a few are run to
check the fallback.
"""
import numpy
import pytest

import chainer
import chainer.functions as F
from chainer import gradient_check
from chainer import testing
from chainer.testing import backend

from pfn15 import functions as P

CPU = backend.inject_backend_tests(None, [{'use_cuda': False, 'use_ideep': 'never'}])
FLOATS = [numpy.float32, numpy.float64]


class FirstOrderOnly(object):
    """Chainer's double-backward check must fail loudly on pfn15's functions."""

    def run_test_double_backward(self, backend_config):
        with pytest.raises(NotImplementedError, match='first-order gradients only'):
            testing.FunctionTestCase.run_test_double_backward(self, backend_config)


# ---------------------------------------------------------------- ReLU (test_relu.py)

@testing.parameterize(*testing.product({
    'shape': [(3, 2), ()],
    'dtype': FLOATS,
    'contiguous': [None, 'C'],
}))
@testing.fix_random()
@CPU
class TestReLU(FirstOrderOnly, testing.FunctionTestCase):

    dodge_nondifferentiable = True

    def generate_inputs(self):
        return numpy.random.uniform(-1, 1, self.shape).astype(self.dtype),

    def forward(self, inputs, device):
        return P.relu(inputs[0]),

    def forward_expected(self, inputs):
        expected = inputs[0].copy()
        expected[expected < 0] = 0
        return expected,


# ---------------------------------------------------- convolution (test_convolution_2d.py)

@testing.parameterize(*(testing.product({
    'contiguous': ['C', None],
    'x_dtype': [numpy.float32],
    'W_dtype': [numpy.float32],
}) + testing.product({
    'contiguous': [None],
    'x_dtype': FLOATS,
    'W_dtype': FLOATS,
})))
@testing.fix_random()
@CPU
class TestConvolution2D(FirstOrderOnly, testing.FunctionTestCase):

    def setUp(self):
        self.kh, self.kw = 3, 3
        self.stride = 2
        self.pad = (1, 1)
        self.check_forward_options.update({'atol': 5e-4, 'rtol': 5e-3})
        self.check_backward_options.update({'atol': 5e-4, 'rtol': 5e-3})

    def generate_inputs(self):
        W = numpy.random.normal(0, numpy.sqrt(1. / (self.kh * self.kw * 3)),
                                (2, 3, self.kh, self.kw)).astype(self.W_dtype)
        x = numpy.random.uniform(-1, 1, (2, 3, 4, 3)).astype(self.x_dtype)
        return x, W

    def forward_expected(self, inputs):
        x, W = inputs
        return F.convolution_2d(x, W, None, stride=self.stride, pad=self.pad).array,

    def forward(self, inputs, device):
        x, W = inputs
        return P.convolution_2d(x, W, stride=self.stride, pad=self.pad),


def test_convolution_backward_of_noncontiguous_output_gradients():
    # F.sum's backward gives a broadcast (non-contiguous) gradient; one output channel.
    x = numpy.ones((2, 3, 10, 10), numpy.float32)
    W = chainer.Variable(numpy.ones((1, 3, 3, 3), numpy.float32))
    F.sum(P.convolution_2d(x, W)).backward()
    numpy.testing.assert_array_equal(W.grad, numpy.full((1, 3, 3, 3), 2 * 8 * 8, numpy.float32))


# ------------------------------------------ batch normalization (test_batch_normalization.py)

def _bn_expected(x, gamma, beta, mean, var, eps, expander):
    std = numpy.sqrt(var + eps)[expander]
    return gamma[expander] * (x - mean[expander]) / std + beta[expander]


def _bn_cases():
    here = testing.product({
        'shape': [((3,), 2), ((5, 4, 3, 2), None)],   # x (5, 3, 2, 2); x (5, 4, 3, 2)
        'xdtype': FLOATS, 'dtype': FLOATS, 'eps': [2e-5, 5e-1],
        'c_contiguous': [True, False], 'running_statistics': [True, False],
    })
    fallback = testing.product({       # other ranks / gamma shapes: Chainer's function
        'shape': [((3,), 0), ((3,), 1), ((3, 4), 0), ((3, 2, 3), 1)],
        'xdtype': [numpy.float32], 'dtype': [numpy.float32], 'eps': [2e-5],
        'c_contiguous': [True, False], 'running_statistics': [True],
    })
    return here + fallback


def _bn_inputs(case):
    """Chainer's setUp: inputs, gradients, expander, mean and var in x's dtype."""
    (param_shape, ndim) = case['shape']
    if ndim is None:                   # input_shape (5, 4, 3, 2), axis (0, 2, 3)
        shape, param_shape = param_shape, (4,)
        aggr_axes, expander = (0, 2, 3), (None, slice(None), None, None)
    else:
        shape = (5,) + param_shape + (2,) * ndim
        aggr_axes = (0,) + tuple(range(len(param_shape) + 1, len(shape)))
        expander = (None, Ellipsis) + (None,) * ndim
    rng = numpy.random.RandomState(hash(repr(sorted(case.items(), key=str))) % 2 ** 31)
    dt, xdt = case['dtype'], case['xdtype']
    gamma = rng.uniform(.5, 1, param_shape).astype(dt)
    beta = rng.uniform(-1, 1, param_shape).astype(dt)
    x = rng.uniform(-1, 1, shape).astype(xdt)
    gy = rng.uniform(-1, 1, shape).astype(xdt)
    stats = [rng.uniform(-1, 1, param_shape).astype(dt) for _ in range(2)]
    return x, gamma, beta, gy, stats, aggr_axes, expander


def _noncontiguous(arrays):
    return [None if a is None else numpy.asfortranarray(a) for a in arrays]


def _ids(case):
    return '-'.join('%s=%s' % (k, getattr(v, '__name__', v)) for k, v in sorted(case.items()))


@pytest.mark.parametrize('case', _bn_cases(), ids=_ids)
def test_batch_normalization(case):
    x, gamma, beta, gy, (r_mean, r_var), axes, expander = _bn_inputs(case)
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    decay, eps = 0.9, case['eps']
    y_expected = _bn_expected(x, gamma, beta, mean, var, eps, expander)
    inputs = [x, gamma, beta]
    running = [None, None]
    if case['running_statistics']:
        m = x.size // gamma.size
        running = [r_mean.copy(), r_var.copy()]
        r_mean_expected = decay * r_mean + (1 - decay) * mean
        r_var_expected = decay * r_var + (1 - decay) * m / max(m - 1., 1.) * var
    if not case['c_contiguous']:
        inputs = _noncontiguous(inputs)
        running = _noncontiguous(running)
    fwd = {'atol': 1e-4, 'rtol': 1e-3}
    y = P.batch_normalization(*inputs, eps=eps, running_mean=running[0],
                              running_var=running[1], decay=decay)
    assert y.dtype == case['xdtype']
    testing.assert_allclose(y_expected, y.array, **fwd)
    if case['running_statistics']:
        testing.assert_allclose(r_mean_expected, running[0], **fwd)
        testing.assert_allclose(r_var_expected, running[1], **fwd)

    gys = _noncontiguous([gy]) if not case['c_contiguous'] else [gy]
    gradient_check.check_backward(
        lambda *a: P.batch_normalization(*a, eps=eps, decay=decay), inputs, gys,
        dtype=numpy.float64, atol=1e-4, rtol=1e-3)

    if case['shape'] in (((3,), 2), ((5, 4, 3, 2), None)):   # pfn15's own node
        xv = chainer.Variable(inputs[0])
        gx, = chainer.grad([P.batch_normalization(xv, *inputs[1:], eps=eps)], [xv],
                           grad_outputs=[chainer.Variable(gys[0])],
                           enable_double_backprop=True)
        with pytest.raises(NotImplementedError):
            F.sum(gx * gx).backward()


@pytest.mark.parametrize('case', testing.product({
    'eps': [2e-5, 5e-1], 'dtype': FLOATS, 'c_contiguous': [True, False]}), ids=_ids)
def test_fixed_batch_normalization(case):
    dt, eps = case['dtype'], case['eps']
    rng = numpy.random.RandomState(int(eps * 10) + 2 * (dt == numpy.float64))
    gamma = rng.uniform(.5, 1, (3,)).astype(dt)
    beta = rng.uniform(-1, 1, (3,)).astype(dt)
    x = rng.uniform(-1, 1, (5, 3, 2, 2)).astype(dt)
    mean = rng.uniform(-1, 1, (3,)).astype(dt)
    var = rng.uniform(0.5, 1, (3,)).astype(dt)
    gy = rng.uniform(-1, 1, x.shape).astype(dt)
    expander = (None, Ellipsis, None, None)
    y_expected = _bn_expected(x, gamma, beta, mean, var, eps, expander)
    inputs, gys = [x, gamma, beta, mean, var], [gy]
    if not case['c_contiguous']:
        inputs, gys = _noncontiguous(inputs), _noncontiguous(gys)
    for enable_backprop in (False, True):
        with chainer.using_config('enable_backprop', enable_backprop):
            y = P.fixed_batch_normalization(*inputs, eps=eps)
        assert y.dtype == dt
        testing.assert_allclose(y_expected, y.array, atol=1e-4, rtol=1e-3)
    gradient_check.check_backward(
        lambda *a: P.fixed_batch_normalization(*a, eps=eps), inputs, gys,
        dtype=numpy.float64)


# ------------------------------------------------------ max pooling (test_max_pooling_2d.py)

def _shuffled_linspace(shape, dtype):
    """Distinct values in random order: no ties for the maximum."""
    size = int(numpy.prod(shape))
    x = numpy.random.permutation(size) + numpy.random.uniform(0.3, 0.7, size)
    return (2 * x / max(1, size) - 1).astype(dtype).reshape(shape)


@testing.parameterize(*testing.product({
    'dtype': FLOATS,
    'contiguous': [None, 'C'],
}))
@testing.fix_random()
@CPU
class TestMaxPooling2D(FirstOrderOnly, testing.FunctionTestCase):

    def setUp(self):
        self.output_shape = (2, 3, 2, 2)
        self.check_backward_options = {'atol': 1e-4, 'rtol': 1e-3}

    def generate_inputs(self):
        return _shuffled_linspace((2, 3, 4, 3), self.dtype),

    def forward_expected(self, inputs):
        x, = inputs
        expect = numpy.empty(self.output_shape, dtype=self.dtype)
        for i in range(2):
            for c in range(3):
                xx = x[i, c]
                expect[i, c] = numpy.array([
                    [xx[0:2, 0:2].max(), xx[0:2, 1:3].max()],
                    [xx[1:4, 0:2].max(), xx[1:4, 1:3].max()]])
        return expect,

    def forward(self, inputs, device):
        return P.max_pooling_2d(inputs[0], 3, stride=2, pad=1),


@pytest.mark.parametrize('dtype', FLOATS)
def test_max_pooling_forward_wide(dtype):
    x = numpy.random.RandomState(7).rand(2, 3, 15, 15).astype(dtype)
    y = P.max_pooling_2d(chainer.Variable(x), 6, stride=6, pad=0)
    numpy.testing.assert_array_equal(
        y.array, F.max_pooling_2d(x, 6, stride=6, pad=0, cover_all=False).array)


def test_fixed_batch_normalization_double_backward_raises():
    x = chainer.Variable(_shuffled_linspace((2, 3, 4, 3), numpy.float64))
    c = numpy.ones(3)
    y = P.fixed_batch_normalization(x, c, c, c * 0, c)
    gx, = chainer.grad([y], [x], grad_outputs=[chainer.Variable(numpy.ones_like(y.array))],
                       enable_double_backprop=True)
    with pytest.raises(NotImplementedError, match='first-order gradients only'):
        F.sum(gx * gx).backward()
