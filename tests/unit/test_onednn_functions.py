"""pfn15/functions/onednn against Chainer's functions, on every convolution/BN shape
of the models (conv_shapes() and bn_channels() of tests/helpers.py, read from the models).

float32: forward values against Chainer's and chainer.gradient_check.check_backward
(numerical gradients in float32, so a step of 1e-2 and 1e-2 tolerances; the
convolution is linear, where central differences are exact up to rounding).
bf16 (train.dtype=mixed16 on CPU): against the same computation in float32,
as relative errors ||bf16 - f32|| / ||f32|| -- stated tolerances: 2e-2 for
values, 1e-1 for gradients (bf16 has 8 bits of mantissa, 4e-3 per rounding;
BN's input gradient is a difference of near-equal terms). Pooling and ReLU in
bf16 are compared with float32 on the same bf16-rounded input (rounding makes
ties a float32 input does not have), 1e-2.
"""
import copy

import numpy
import pytest

import chainer
import chainer.functions as F
import chainer.links as L
from chainer import gradient_check

from pfn15 import models
from pfn15.functions import onednn as O

from helpers import bn_channels, conv_shapes
from helpers import image_size as _size, scaled as _scaled

pytestmark = pytest.mark.skipif(not O.available(), reason='oneDNN does not load: %s'
                                % O.load_error())
f32 = numpy.float32
CONV_SHAPES = conv_shapes()
BN_CHANNELS = bn_channels()
TOL = dict(atol=1e-4, rtol=1e-3)
GRAD_TOL = dict(eps=1e-2, atol=1e-2, rtol=1e-2)
needs_bf16 = pytest.mark.skipif(not O.bf16_supported(), reason='no bf16 on this CPU')


def _rel(a, b):
    a, b = numpy.asarray(a, numpy.float64), numpy.asarray(b, numpy.float64)
    return float(numpy.linalg.norm(a - b) / max(numpy.linalg.norm(b), 1e-30))


def _bf16(f):
    """f on bf16 activations: float32 in, float32 out (the edges convert)."""
    def g(x, *rest):
        y = f(O.to_bf16(x), *rest)
        return O.to_float32(y) if y.dtype == O.BF16_STORAGE else y
    return g


def _value_and_grads(f, inputs, gy):
    vs = [chainer.Variable(a.copy()) for a in inputs]
    y = f(*vs)
    y.grad = gy.copy()
    y.backward()
    return [y.array] + [v.grad for v in vs]


def test_the_library_is_onednn_3():
    assert O.version().startswith('3.')
    x = numpy.zeros((1, 2, 3, 3), f32)
    assert O.usable(x) and O.usable(x.astype(numpy.uint16))
    assert not O.usable(x.astype(numpy.float64)) and not O.usable(x.astype(numpy.float16))


@pytest.mark.parametrize('shape', CONV_SHAPES, ids=lambda s: 'c%d-o%d-k%d-s%d-p%d' % s)
def test_convolution_matches_chainer(shape):
    c_in, c_out, k, s, p = shape
    rng = numpy.random.default_rng(hash(shape) % 2 ** 32)
    size = _size(k)
    x = _scaled(rng, (2, c_in, size, size), f32)
    W = _scaled(rng, (c_out, c_in, k, k), f32, (2.0 / (c_in * k * k)) ** 0.5)
    y = O.convolution_2d(x, W, s, p)
    ref = F.convolution_2d(x, W, None, s, p)
    assert y.shape == ref.shape and y.dtype == f32
    assert isinstance(y.creator, O.convolution.Convolution2D)
    numpy.testing.assert_allclose(y.array, ref.array, **TOL)
    gy = _scaled(rng, y.shape, f32)
    numpy.random.seed(c_in + c_out)
    gradient_check.check_backward(lambda x, W: O.convolution_2d(x, W, s, p), (x, W), gy,
                                  **GRAD_TOL)
    # The same values as Chainer's gradients, not only self-consistent ones.
    ours = _value_and_grads(lambda x, W: O.convolution_2d(x, W, s, p), (x, W), gy)
    theirs = _value_and_grads(lambda x, W: F.convolution_2d(x, W, None, s, p), (x, W), gy)
    for a, b in zip(ours[1:], theirs[1:]):
        numpy.testing.assert_allclose(a, b, atol=1e-4 * float(abs(b).max()) + 1e-5, rtol=1e-3)


def test_convolution_takes_a_stride_and_pad_per_axis():
    rng = numpy.random.default_rng(0)
    x = _scaled(rng, (2, 4, 7, 8), f32)
    W = _scaled(rng, (4, 4, 3, 3), f32)
    y = O.convolution_2d(x, W, (2, 1), (1, 0))
    ref = F.convolution_2d(x, W, None, (2, 1), (1, 0))
    assert y.shape == ref.shape
    numpy.testing.assert_allclose(y.array, ref.array, **TOL)


@pytest.mark.parametrize('stride', [(2, 2), (2, 1), (1, 3)])
def test_strided_1x1_weight_gradient_matches_chainer(stride):
    # A 1x1 layer's gW is a matrix product on the pixels the stride reads
    # (_MatmulWeightGradient); odd sizes leave a last row/column it must still read.
    rng = numpy.random.default_rng(sum(stride))
    x = _scaled(rng, (3, 8, 7, 9), f32)
    W = _scaled(rng, (6, 8, 1, 1), f32)
    _, _, grad_w, _ = O.convolution._primitives(x.shape, W.shape, stride, (0, 0),
                                                O.convolution._lib.F32)
    assert isinstance(grad_w, O.convolution._MatmulWeightGradient)
    gy = _scaled(rng, F.convolution_2d(x, W, None, stride).shape, f32)
    ours = _value_and_grads(lambda x, W: O.convolution_2d(x, W, stride, 0), (x, W), gy)
    theirs = _value_and_grads(lambda x, W: F.convolution_2d(x, W, None, stride, 0), (x, W), gy)
    for a, b in zip(ours, theirs):
        numpy.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('relu', [False, True], ids=['bn', 'bn_relu'])
@pytest.mark.parametrize('channels', BN_CHANNELS)
def test_batch_normalization_matches_chainer(channels, relu):
    rng = numpy.random.default_rng(channels)
    x = (_scaled(rng, (2, channels, 3, 3), f32) * 2 + 0.5).astype(f32)
    gamma = (rng.random(channels) + 0.5).astype(f32)
    beta = _scaled(rng, (channels,), f32)
    ours_stats = [numpy.zeros(channels, f32), numpy.ones(channels, f32)]
    ref_stats = copy.deepcopy(ours_stats)
    y = O.batch_normalization(x, gamma, beta, 2e-5, *ours_stats, decay=0.9, relu=relu)
    ref = F.batch_normalization(x, gamma, beta, eps=2e-5, running_mean=ref_stats[0],
                                running_var=ref_stats[1], decay=0.9)
    ref = F.relu(ref) if relu else ref
    numpy.testing.assert_allclose(y.array, ref.array, **TOL)
    # The statistics the model keeps (pfn15/bn.py averages them over workers).
    for ours, theirs in zip(ours_stats, ref_stats):
        numpy.testing.assert_allclose(ours, theirs, **TOL)
    gy = _scaled(rng, x.shape, f32)
    numpy.random.seed(channels)
    # With the ReLU a small step keeps clear of its kink, and float32 differences of
    # a small step are coarse: looser there; Chainer's own gradients are matched
    # tightly below.
    tol = dict(eps=1e-3, atol=5e-2, rtol=5e-2) if relu else GRAD_TOL
    gradient_check.check_backward(
        lambda x, g, b: O.batch_normalization(x, g, b, relu=relu), (x, gamma, beta), gy,
        **tol)
    post = F.relu if relu else F.identity
    ours = _value_and_grads(lambda x, g, b: O.batch_normalization(x, g, b, relu=relu),
                            (x, gamma, beta), gy)
    theirs = _value_and_grads(lambda x, g, b: post(F.batch_normalization(x, g, b)),
                              (x, gamma, beta), gy)
    for a, ref in zip(ours, theirs):
        numpy.testing.assert_allclose(a, ref, atol=1e-4 * float(abs(ref).max()) + 1e-5,
                                      rtol=1e-3)

    mean = _scaled(rng, (channels,), f32)
    var = (rng.random(channels) + 0.5).astype(f32)
    y = O.fixed_batch_normalization(x, gamma, beta, mean, var, relu=relu)
    ref = F.fixed_batch_normalization(x, gamma, beta, mean, var)
    ref = F.relu(ref) if relu else ref
    numpy.testing.assert_allclose(y.array, ref.array, **TOL)
    gradient_check.check_backward(
        lambda *a: O.fixed_batch_normalization(*a, relu=relu), (x, gamma, beta, mean, var),
        gy, **tol)
    ours = _value_and_grads(lambda *a: O.fixed_batch_normalization(*a, relu=relu),
                            (x, gamma, beta, mean, var), gy)
    theirs = _value_and_grads(lambda *a: post(F.fixed_batch_normalization(*a)),
                              (x, gamma, beta, mean, var), gy)
    for a, ref in zip(ours, theirs):
        numpy.testing.assert_allclose(a, ref, atol=1e-4 * float(abs(ref).max()) + 1e-5,
                                      rtol=1e-3)


def test_batch_normalization_variance_is_exact_far_from_zero_mean():
    # Mean 1000, std 1: E[x^2] - E[x]^2 in float32 would lose the variance.
    rng = numpy.random.default_rng(5)
    x = (rng.standard_normal((8, 4, 16, 16)) + 1000).astype(f32)
    g, b = numpy.ones(4, f32), numpy.zeros(4, f32)
    y = O.batch_normalization(x, g, b).array
    x64 = x.astype(numpy.float64)
    exact = (x64 - x64.mean((0, 2, 3), keepdims=True)) / numpy.sqrt(
        x64.var((0, 2, 3), keepdims=True) + 2e-5)
    # float32's spacing at 1000 is 6.1e-5: the batch mean (and so y) is good to a
    # few of those, by the summation order oneDNN's threads use (measured max
    # 2.1e-4 to 1.07e-3); E[x^2] - E[x]^2 would be off by hundreds.
    assert abs(y - exact).max() < 3e-3


@pytest.mark.parametrize('size', [8, 9, 5, 20])
def test_pooling_matches_chainer(size):
    rng = numpy.random.default_rng(size)
    x = _scaled(rng, (2, 16, size, size), f32)
    x[0, 0, :3, :3] = 1.5   # ties: the gradient goes to the first maximum, as Chainer's
    gy = _scaled(rng, (2, 16, (size - 1) // 2 + 1, (size - 1) // 2 + 1), f32)
    ours = _value_and_grads(lambda x: O.max_pooling_2d(x, 3, 2, 1), (x,), gy)
    theirs = _value_and_grads(lambda x: F.max_pooling_2d(x, 3, 2, 1, cover_all=False), (x,), gy)
    for a, b in zip(ours, theirs):
        numpy.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6)
    g2 = _scaled(rng, (2, 16), f32)
    ours = _value_and_grads(O.global_average_pooling, (x,), g2)
    theirs = _value_and_grads(lambda x: F.average(x, axis=(2, 3)), (x,), g2)
    for a, b in zip(ours, theirs):
        numpy.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)
    numpy.random.seed(size)
    gradient_check.check_backward(O.global_average_pooling, (x,), g2, **GRAD_TOL)


@pytest.mark.parametrize('shape', [(2, 8, 5, 5), (3, 7), (11,)])
def test_relu_add_relu_and_fork_match_chainer(shape):
    rng = numpy.random.default_rng(len(shape))
    a, b, gy = (_scaled(rng, shape, f32) for _ in range(3))
    for ours, theirs, inputs in ((O.relu, F.relu, (a,)),
                                 (O.add_relu, lambda a, b: F.relu(a + b), (a, b))):
        r1, r2 = _value_and_grads(ours, inputs, gy), _value_and_grads(theirs, inputs, gy)
        for p, q in zip(r1, r2):
            numpy.testing.assert_array_equal(p, q)

    def forked(x):
        u, v = O.fork(x)
        return O.add_relu(u, v * 2)
    r1 = _value_and_grads(forked, (a,), gy)
    r2 = _value_and_grads(lambda x: F.relu(3 * x), (a,), gy)
    for p, q in zip(r1, r2):
        numpy.testing.assert_allclose(p, q, atol=1e-6, rtol=1e-6)


def test_add_relu_over_its_first_input_is_add_relu_in_that_buffer():
    """overwrite_a (the model's residual branch) writes the result over a's array:
    the same values and gradients as a new buffer, and a then holds them."""
    rng = numpy.random.default_rng(5)
    a, b, gy = (_scaled(rng, (2, 8, 5, 5), f32) for _ in range(3))
    a_nhwc = O._common.empty((2, 5, 5, 8), f32)
    a_nhwc[...] = a.transpose(0, 2, 3, 1)      # NHWC memory, as the model's arrays
    a_view = a_nhwc.transpose(0, 3, 1, 2)
    expected = _value_and_grads(O.add_relu, (a, b), gy)
    va, vb = chainer.Variable(a_view), chainer.Variable(b)
    y = O.add_relu(va, vb, overwrite_a=True)
    assert numpy.shares_memory(y.array, a_nhwc)
    numpy.testing.assert_array_equal(a_view, expected[0])
    y.grad = gy
    y.backward()
    for p, q in zip((y.array, va.grad, vb.grad), expected):
        numpy.testing.assert_array_equal(p, q)


def test_the_buffers_onednn_writes_start_on_a_cache_line():
    """Outputs and gradients of every oneDNN function are 64-byte aligned (glibc
    gives large NumPy arrays 16: AVX-512 accesses would straddle two lines)."""
    rng = numpy.random.default_rng(3)
    x = _scaled(rng, (4, 16, 12, 12), f32)
    W = _scaled(rng, (16, 16, 3, 3), f32)
    W1 = _scaled(rng, (32, 16, 1, 1), f32)
    gamma, beta = numpy.ones(16, f32), numpy.zeros(16, f32)
    arrays = []
    for f, args in ((O.convolution_2d, (x, W, 1, 1)), (O.convolution_2d, (x, W1, 2, 0)),
                    (lambda a, g, b: O.batch_normalization(a, g, b, relu=True), (x, gamma, beta)),
                    (O.relu, (x,)), (O.add_relu, (x, x.copy())),
                    (lambda a: O.max_pooling_2d(a, 3, 2, 1), (x,)),
                    (O.global_average_pooling, (x,))):
        vs = [chainer.Variable(a.copy()) if isinstance(a, numpy.ndarray) else a for a in args]
        y = f(*vs)
        y.grad = numpy.ones_like(y.array)
        y.backward()
        arrays += [y.array] + [v.grad for v in vs if isinstance(v, chainer.Variable)]
    misaligned = [a.shape for a in arrays if a.ctypes.data % 64]
    assert len(arrays) == 19 and not misaligned


def test_second_order_gradients_raise_clearly():
    x = chainer.Variable(numpy.ones((1, 2, 3, 3), f32))
    W = chainer.Variable(numpy.ones((2, 2, 1, 1), f32))
    h = O.convolution_2d(x, W)
    y = F.sum(h * h)   # the output gradient depends on x: a real second-order graph
    gx, = chainer.grad([y], [x], enable_double_backprop=True)
    with pytest.raises(NotImplementedError, match='first-order'):
        F.sum(gx * gx).backward()


@needs_bf16
@pytest.mark.parametrize('shape', CONV_SHAPES[::3], ids=lambda s: 'c%d-o%d-k%d-s%d-p%d' % s)
def test_bf16_convolution_and_bn_against_float32(shape):
    c_in, c_out, k, s, p = shape
    rng = numpy.random.default_rng(hash(shape) % 2 ** 32)
    size = _size(k)
    x = _scaled(rng, (4, c_in, size, size), f32)
    W = _scaled(rng, (c_out, c_in, k, k), f32, (2.0 / (c_in * k * k)) ** 0.5)
    g = (rng.random(c_out) + 0.5).astype(f32)
    b = _scaled(rng, (c_out,), f32)

    def layer(x, W, g, b):
        return O.batch_normalization(O.convolution_2d(x, W, s, p), g, b, relu=True)
    y = layer(x, W, g, b)
    gy = _scaled(rng, y.shape, f32)
    r32 = _value_and_grads(layer, (x, W, g, b), gy)
    r16 = _value_and_grads(_bf16(layer), (x, W, g, b), gy)
    assert r16[1].dtype == f32 and r16[2].dtype == f32   # float32 parameters and gradients
    assert _rel(r16[0], r32[0]) < 2e-2
    for a, ref in zip(r16[1:], r32[1:]):
        assert _rel(a, ref) < 1e-1


@needs_bf16
def test_bf16_pooling_relu_and_storage():
    rng = numpy.random.default_rng(7)
    x = _scaled(rng, (2, 16, 9, 9), f32)
    xb = O.to_bf16(x)
    assert xb.dtype == O.BF16_STORAGE and xb.shape == x.shape
    # Round to nearest: the bits are float32's upper half, within bf16's half ulp.
    back = O.to_float32(xb).array
    assert abs(back - x).max() <= 2 ** -8 * abs(x).max()
    for f in (lambda h: O.max_pooling_2d(h, 3, 2, 1), O.relu,
              lambda h: O.add_relu(*O.fork(h)), O.global_average_pooling):
        gy = _scaled(rng, f(x).shape, f32)
        r32 = _value_and_grads(f, (back,), gy)
        r16 = _value_and_grads(_bf16(f), (back,), gy)
        for a, ref in zip(r16, r32):
            assert _rel(a, ref) < 1e-2


def _flat_grads(model):
    return numpy.concatenate([p.grad.ravel() for _, p in sorted(model.namedparams())])


def _step(model, x, t):
    model.cleargrads()
    loss = F.softmax_cross_entropy(model(x), t)
    loss.backward()
    return float(loss.array)


@pytest.mark.parametrize('arch', ['resnet_small',
                                  pytest.param('resnet50', marks=pytest.mark.slow)])
def test_a_whole_resnet_step_equals_chainers(arch):
    rng = numpy.random.default_rng(1)
    numpy.random.seed(1)
    if arch == 'resnet50':
        ours = models.resnet50(10, 3, zero_init_last_gamma=False, cpu_functions='onednn')
        x = _scaled(rng, (2, 3, 48, 48), f32)
    else:
        ours = models.resnet_small(10, 3, 1, 8, zero_init_last_gamma=False,
                                   cpu_functions='onednn')
        x = _scaled(rng, (4, 3, 16, 16), f32)
    t = rng.integers(0, 10, len(x)).astype(numpy.int32)
    theirs = copy.deepcopy(ours)
    theirs.cpu_functions = 'chainer'
    with chainer.using_config('train', True):
        assert isinstance(ours.stem(x, True, 'onednn').creator,
                          O.normalization.BatchNormalization)
    for m in (ours, theirs):
        m.stem.bn.avg_mean[...] = 0
        m.stem.bn.avg_var[...] = 1
    assert _step(ours, x, t) == pytest.approx(_step(theirs, x, t), rel=1e-4)
    p_theirs = dict(theirs.namedparams())
    # float32 through ResNet-50's 53 BN layers at batch 2 (8 samples a channel in
    # the last stage) amplifies rounding: pfn15's own functions differ from
    # Chainer's by 4.4% of the whole gradient there, oneDNN's by 4.0%.
    tol = 1e-1 if arch == 'resnet50' else 1e-2
    for name, p in ours.namedparams():
        assert _rel(p.grad, p_theirs[name].grad) < 2 * tol, name
    assert _rel(_flat_grads(ours), _flat_grads(theirs)) < tol
    l_theirs = dict(theirs.namedlinks())
    for name, link in ours.namedlinks():
        if isinstance(link, L.BatchNormalization):
            for k in ('avg_mean', 'avg_var'):
                numpy.testing.assert_allclose(getattr(link, k), getattr(l_theirs[name], k),
                                              atol=1e-4, rtol=1e-3, err_msg=name + k)
    with chainer.using_config('train', False):   # the fixed-statistics path
        numpy.testing.assert_allclose(ours(x).array, theirs(x).array, atol=1e-3, rtol=1e-3)


@needs_bf16
def test_a_bf16_resnet_step_is_close_to_float32():
    rng = numpy.random.default_rng(2)
    numpy.random.seed(2)
    m32 = models.resnet_small(10, 3, 1, 8, zero_init_last_gamma=False, cpu_functions='onednn')
    m16 = copy.deepcopy(m32)
    m16.cpu_bf16 = True
    x = _scaled(rng, (8, 3, 16, 16), f32)
    t = rng.integers(0, 10, len(x)).astype(numpy.int32)
    l32, l16 = _step(m32, x, t), _step(m16, x, t)
    assert l16 == pytest.approx(l32, rel=2e-2)
    for name, p in m16.namedparams():
        assert p.array.dtype == f32 and p.grad.dtype == f32, name
    # Rounding to bf16 at every layer: the whole gradient within 5%, same direction
    # (measured 2.1%, cosine 0.9998).
    g16, g32 = _flat_grads(m16), _flat_grads(m32)
    assert _rel(g16, g32) < 5e-2
    assert g16 @ g32 / (numpy.linalg.norm(g16) * numpy.linalg.norm(g32)) > 0.99


def test_float64_stays_on_pfn15s_functions():
    from pfn15.functions import normalization
    with chainer.using_config('dtype', numpy.float64):
        model = models.resnet_small(10, 3, 1, 4, cpu_functions='onednn')
    x = numpy.zeros((2, 3, 8, 8))
    with chainer.using_config('train', True):
        h = model.stem(x, True, 'onednn')
    assert isinstance(h.creator, normalization.BatchNormalization)


def _cfg(*overrides):
    from pfn15 import config
    return config.load(None, overrides=['model.arch=resnet_small', 'model.width=4',
                                        'model.blocks_per_stage=1'] + list(overrides),
                       check_paths=False)


def test_onednn_is_the_default_and_the_config_reaches_the_model():
    cfg = _cfg()
    assert cfg.model.cpu_functions == 'onednn'
    assert models.cpu_choice(cfg) == ('onednn', False, None)
    for value in ('onednn', 'pfn15', 'chainer'):
        assert models.build(_cfg('model.cpu_functions=' + value), 10, 3).cpu_functions == value
    cfg = _cfg('train.dtype=mixed16')
    functions, bf16, notice = models.cpu_choice(cfg)
    assert bf16 == O.bf16_supported() and (notice is None) == bf16
    assert models.build(cfg, 10, 3).cpu_bf16 == bf16
    functions, bf16, notice = models.cpu_choice(_cfg('train.dtype=mixed16',
                                                     'model.cpu_functions=pfn15'))
    assert not bf16 and 'needs model.cpu_functions=onednn' in notice


def test_without_the_library_a_notice_and_pfn15s_functions(monkeypatch):
    from pfn15.functions.onednn import _lib
    monkeypatch.setattr(_lib, '_lib', None)
    monkeypatch.setattr(_lib, '_load_error', 'libdnnl.so.3 not found (test)')
    functions, bf16, notice = models.cpu_choice(_cfg('train.dtype=mixed16'))
    assert functions == 'pfn15' and not bf16
    assert 'oneDNN does not load here (libdnnl.so.3 not found (test))' in notice
    assert '\n' not in notice
    assert not O.usable(numpy.zeros((1, 1, 1, 1), f32))


def test_onednn_gets_the_ranks_threads():
    # In a fresh process: cpu.set_threads gives oneDNN's OpenMP runtime the count.
    import json
    import os
    import subprocess
    import sys
    code = (
        "import json, ctypes, pfn15\n"
        "from pfn15 import cpu\n"
        "from pfn15.functions import onednn\n"
        "onednn.load()\n"
        "cpu.set_threads(1, 2)\n"
        "gomp = ctypes.CDLL('libgomp.so.1')\n"
        "print(json.dumps(gomp.omp_get_max_threads()))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS')}
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True, env=env)
    assert json.loads(out.stdout.splitlines()[-1]) == 1


@pytest.mark.parametrize('ranks_on_node,threads,loaders', [(1, 1, 0), (2, 1, 0), (4, 2, 0),
                                                           (1, 1, 64)])
def test_openmp_sleeps_at_once_only_where_the_node_is_oversubscribed(ranks_on_node, threads,
                                                                     loaders):
    # OMP_WAIT_POLICY is read when libgomp loads: set_threads first, then the library.
    import json
    import os
    import subprocess
    import sys
    from pfn15 import cpu
    code = (
        "import json, os, sys, pfn15\n"
        "from pfn15 import cpu\n"
        "from pfn15.functions import onednn\n"
        "cpu.set_threads(%d, %d, loader_processes=%d)\n"
        "onednn.load()\n"
        "print(json.dumps(os.environ.get('OMP_WAIT_POLICY')))\n"
        % (threads, ranks_on_node, loaders))
    env = {k: v for k, v in os.environ.items() if k != 'OMP_WAIT_POLICY'}
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True, env=env)
    fits = ranks_on_node * (threads + loaders) <= cpu.node_cores()
    assert json.loads(out.stdout.splitlines()[-1]) == (None if fits else 'PASSIVE')


def test_training_decides_the_wait_policy_before_onednn_loads(tmp_path):
    # pfn15.train picks the CPU functions (which loads oneDNN, and with it libgomp)
    # after cpu.set_threads: one rank x 1 thread fits any node, so libgomp keeps its
    # default (spin, then sleep), not the PASSIVE of an oversubscribed node.
    import json
    import os
    import subprocess
    import sys
    code = (
        "import json, os, sys, pfn15\n"
        "from pfn15 import bench, comm, train\n"
        "args = bench.parse_args(['step', '--arch', 'resnet_small', '--batch', '4',\n"
        "                         '--size', '16', '--peer', 'none',\n"
        "                         '--set', 'train.cpu_threads=1'])\n"
        "cfg = bench._step_config(args, sys.argv[1])\n"
        "train.build_trainer(cfg, comm.create(cfg))\n"
        "from pfn15.functions import onednn\n"
        "print(json.dumps([onednn.available(), os.environ.get('OMP_WAIT_POLICY')]))\n")
    env = {k: v for k, v in os.environ.items() if k != 'OMP_WAIT_POLICY'}
    out = subprocess.run([sys.executable, '-c', code, str(tmp_path)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.splitlines()[-1]) == [True, None]


def test_openmp_wait_policy_of_the_user_wins():
    import json
    import os
    import subprocess
    import sys
    code = ("import json, os, pfn15\nfrom pfn15 import cpu\n"
            "from pfn15.functions import onednn\ncpu.set_threads(1, 64)\nonednn.load()\n"
            "print(json.dumps(os.environ.get('OMP_WAIT_POLICY')))\n")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True, env=dict(os.environ, OMP_WAIT_POLICY='ACTIVE'))
    assert json.loads(out.stdout.splitlines()[-1]) == 'ACTIVE'
