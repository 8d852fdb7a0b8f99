"""pfn15/functions against Chainer's own, on every convolution/BN shape of the models.

The shapes are read from the models themselves (ResNet-50 with 3- and 1-channel
input, the default small ResNet and the demo's), so a new block shape is
tested without editing this file. Batch 2 and 5x5..9x9 images keep it cheap;
stride and pad behave as at full size. Gradients: chainer.gradient_check with
its random direction, float64 numerics for both dtypes (the analytic float32
backward is checked against a float64 numerical gradient).
"""
import copy
import os

import numpy
import pytest

import chainer
import chainer.functions as F
import chainer.links as L
from chainer import gradient_check

from pfn15 import functions as P
from pfn15 import models

from helpers import bn_channels, conv_shapes
from helpers import image_size as _size, scaled as _scaled


CONV_SHAPES = conv_shapes()
BN_CHANNELS = bn_channels()
DTYPES = [numpy.float32, numpy.float64]
TOL = {numpy.float32: dict(atol=1e-4, rtol=1e-3), numpy.float64: dict(atol=1e-9, rtol=1e-7)}


def test_the_shape_lists_cover_resnet50():
    # ResNet-50's stem and each stage's 1x1/3x3/strided shapes are all in.
    assert (3, 64, 7, 2, 3) in CONV_SHAPES and (1, 64, 7, 2, 3) in CONV_SHAPES
    for mid in (128, 256, 512):
        assert (mid, mid, 3, 2, 1) in CONV_SHAPES and (mid, mid, 3, 1, 1) in CONV_SHAPES
        assert (mid * 2, mid * 4, 1, 2, 0) in CONV_SHAPES
    assert (2048, 512, 1, 1, 0) in CONV_SHAPES
    assert len(CONV_SHAPES) >= 25
    assert {64, 256, 2048, 16} <= set(BN_CHANNELS)


@pytest.mark.parametrize('dtype', DTYPES, ids=['f32', 'f64'])
@pytest.mark.parametrize('shape', CONV_SHAPES, ids=lambda s: 'c%d-o%d-k%d-s%d-p%d' % s)
def test_convolution_matches_chainer(shape, dtype):
    c_in, c_out, k, s, p = shape
    rng = numpy.random.default_rng(hash(shape) % 2 ** 32)
    size = _size(k)
    x = _scaled(rng, (2, c_in, size, size), dtype)
    W = _scaled(rng, (c_out, c_in, k, k), dtype, (2.0 / (c_in * k * k)) ** 0.5)
    y = P.convolution_2d(x, W, s, p)
    ref = F.convolution_2d(x, W, None, s, p)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    numpy.testing.assert_allclose(y.array, ref.array, **TOL[dtype])

    gy = _scaled(rng, y.shape, dtype)
    gradient_check.check_backward(
        lambda x, W: P.convolution_2d(x, W, s, p), (x, W), gy,
        dtype=numpy.float64, atol=5e-3 if dtype == numpy.float32 else 1e-6,
        rtol=5e-3 if dtype == numpy.float32 else 1e-5)


@pytest.mark.parametrize('dtype', DTYPES, ids=['f32', 'f64'])
@pytest.mark.parametrize('relu', [False, True], ids=['bn', 'bn_relu'])
@pytest.mark.parametrize('channels', BN_CHANNELS)
def test_batch_normalization_matches_chainer(channels, relu, dtype):
    rng = numpy.random.default_rng(channels)
    x = (_scaled(rng, (2, channels, 3, 3), dtype) * 2 + 0.5).astype(dtype)
    gamma = (rng.random(channels) + 0.5).astype(dtype)
    beta = _scaled(rng, (channels,), dtype)
    ours_stats = [numpy.zeros(channels, dtype), numpy.ones(channels, dtype)]
    ref_stats = copy.deepcopy(ours_stats)
    y = P.batch_normalization(x, gamma, beta, 2e-5, *ours_stats, decay=0.9, relu=relu)
    ref = F.batch_normalization(x, gamma, beta, eps=2e-5, running_mean=ref_stats[0],
                                running_var=ref_stats[1], decay=0.9)
    if relu:
        ref = F.relu(ref)
    numpy.testing.assert_allclose(y.array, ref.array, **TOL[dtype])
    # Running statistics: decay and the unbiased m/(m-1) variance, as Chainer.
    for ours, theirs in zip(ours_stats, ref_stats):
        numpy.testing.assert_allclose(ours, theirs, **TOL[dtype])

    tol = dict(atol=1e-3, rtol=1e-2) if dtype == numpy.float32 else dict(atol=1e-6, rtol=1e-5)
    # check_backward draws its direction from numpy.random: fixed here. With the
    # ReLU, a finite-difference step that crosses 0 measures the kink, not the
    # gradient: a small step (the check runs in float64) keeps clear of it.
    numpy.random.seed(channels)
    tol['eps'] = 1e-5 if relu else 1e-3
    gy = _scaled(rng, x.shape, dtype)
    gradient_check.check_backward(
        lambda x, g, b: P.batch_normalization(x, g, b, relu=relu), (x, gamma, beta), gy,
        dtype=numpy.float64, **tol)

    mean = _scaled(rng, (channels,), dtype)
    var = (rng.random(channels) + 0.5).astype(dtype)
    y = P.fixed_batch_normalization(x, gamma, beta, mean, var, relu=relu)
    ref = F.fixed_batch_normalization(x, gamma, beta, mean, var)
    if relu:
        ref = F.relu(ref)
    numpy.testing.assert_allclose(y.array, ref.array, **TOL[dtype])
    gradient_check.check_backward(
        lambda *a: P.fixed_batch_normalization(*a, relu=relu), (x, gamma, beta, mean, var), gy,
        dtype=numpy.float64, **tol)


@pytest.mark.parametrize('dtype', DTYPES, ids=['f32', 'f64'])
def test_relu_and_add_relu_match_chainer(dtype):
    rng = numpy.random.default_rng(0)
    # Channels-last memory behind NCHW shapes, as the models pass them.
    a = _scaled(rng, (2, 3, 4, 5), dtype).transpose(0, 3, 1, 2)
    b = _scaled(rng, (2, 3, 4, 5), dtype).transpose(0, 3, 1, 2)
    numpy.testing.assert_array_equal(P.relu(a).array, F.relu(a).array)
    numpy.testing.assert_array_equal(P.add_relu(a, b).array, F.relu(a + b).array)
    gy = _scaled(rng, a.shape, dtype)
    gradient_check.check_backward(P.relu, (a,), gy, dtype=numpy.float64)
    gradient_check.check_backward(P.add_relu, (a, b), gy, dtype=numpy.float64)


@pytest.mark.parametrize('dtype', DTYPES, ids=['f32', 'f64'])
@pytest.mark.parametrize('size', [8, 9, 5])
def test_max_pooling_matches_chainer(size, dtype):
    # ResNet-50's stem pooling: 3x3, stride 2, pad 1. Distinct values (a
    # permutation) keep check_backward's finite differences away from ties.
    rng = numpy.random.default_rng(size)
    shape = (2, 3, size, size)
    x = (rng.permutation(numpy.prod(shape)).reshape(shape) * 0.1).astype(dtype)
    y = P.max_pooling_2d(x, 3, 2, 1)
    ref = F.max_pooling_2d(x, 3, 2, 1, cover_all=False)
    numpy.testing.assert_array_equal(y.array, ref.array)
    gradient_check.check_backward(lambda x: P.max_pooling_2d(x, 3, 2, 1), (x,),
                                  _scaled(rng, y.shape, dtype), dtype=numpy.float64,
                                  eps=1e-3)
    # Ties (the zeros after a ReLU): the gradient goes where Chainer's argmax sends it.
    z = numpy.maximum(x - x.mean(), 0)
    zv, zv_ref = chainer.Variable(z), chainer.Variable(z.copy())
    gy = _scaled(rng, y.shape, dtype)
    for v, f in ((zv, lambda v: P.max_pooling_2d(v, 3, 2, 1)),
                 (zv_ref, lambda v: F.max_pooling_2d(v, 3, 2, 1, cover_all=False))):
        out = f(v)
        out.grad = gy
        out.backward()
    numpy.testing.assert_array_equal(zv.grad, zv_ref.grad)


def test_second_order_gradients_raise_clearly():
    x = chainer.Variable(numpy.random.default_rng(0).standard_normal((2, 4, 3, 3)))
    W = numpy.ones((4, 4, 1, 1))
    gx, = chainer.grad([F.sum(P.convolution_2d(x, W) ** 2)], [x], enable_double_backprop=True)
    with pytest.raises(NotImplementedError, match='model.cpu_functions=chainer'):
        F.sum(gx).backward()


def test_usable_only_for_numpy_float32_float64_of_one_dtype():
    f32, f64 = numpy.zeros(1, numpy.float32), numpy.zeros(1)
    assert P.usable(f32, f32) and P.usable(chainer.Variable(f64), f64)
    assert not P.usable(f32, f64)
    assert not P.usable(numpy.zeros(1, numpy.float16))


def _step(model, x, t):
    clf = L.Classifier(model)
    clf.cleargrads()
    loss = clf(x, t)
    loss.backward()
    return float(loss.array)


@pytest.mark.parametrize('arch,dtype', [('resnet_small', numpy.float32),
                                        ('resnet_small', numpy.float64),
                                        ('resnet50', numpy.float64)])
def test_a_whole_resnet_step_equals_chainers(arch, dtype):
    # float64 makes the comparison tight through ResNet-50's 53 BN layers at batch
    # 2 (in float32, summation order alone moves the fc gradient by ~1e-3).
    rng = numpy.random.default_rng(1)
    numpy.random.seed(1)
    with chainer.using_config('dtype', dtype):
        if arch == 'resnet50':
            ours = models.resnet50(10, 3, zero_init_last_gamma=False)
            x = _scaled(rng, (2, 3, 48, 48), dtype)
        else:
            ours = models.resnet_small(10, 3, 1, 8, zero_init_last_gamma=False)
            x = _scaled(rng, (4, 3, 16, 16), dtype)
    assert ours.fc.W.dtype == dtype
    tol = 1e-4 if dtype == numpy.float32 else 1e-9
    t = rng.integers(0, 10, len(x)).astype(numpy.int32)
    theirs = copy.deepcopy(ours)
    theirs.cpu_functions = 'chainer'
    # The pfn15 path really runs pfn15's nodes; the 'chainer' path Chainer's.
    with chainer.using_config('train', True):
        assert isinstance(ours.stem(x, True).creator, P.normalization.BatchNormalization)
        assert not isinstance(theirs.stem(x, True, 'chainer').creator,
                              P.normalization.BatchNormalization)
    for m in (ours, theirs):   # the probe above moved the stem's statistics: reset both
        m.stem.bn.avg_mean[...] = 0
        m.stem.bn.avg_var[...] = 1
    loss_ours, loss_theirs = _step(ours, x, t), _step(theirs, x, t)
    assert loss_ours == pytest.approx(loss_theirs, rel=tol)
    p_theirs = dict(theirs.namedparams())
    for name, p in ours.namedparams():
        ref = p_theirs[name].grad
        numpy.testing.assert_allclose(p.grad, ref, atol=tol * float(abs(ref).max()) + tol,
                                      rtol=10 * tol, err_msg=name)
    l_theirs = dict(theirs.namedlinks())
    n_bn = 0
    for name, link in ours.namedlinks():
        if isinstance(link, L.BatchNormalization):
            n_bn += 1
            for k in ('avg_mean', 'avg_var'):
                numpy.testing.assert_allclose(getattr(link, k), getattr(l_theirs[name], k),
                                              atol=tol, rtol=tol, err_msg=name + k)
    assert n_bn > 5
    with chainer.using_config('train', False):   # evaluation: the fixed-statistics path
        numpy.testing.assert_allclose(ours(x).array, theirs(x).array, atol=tol, rtol=tol)


def test_the_config_key_reaches_the_model():
    from pfn15 import config
    for value in ('pfn15', 'chainer'):
        cfg = config.load(None, overrides=['model.arch=resnet_small', 'model.width=4',
                                           'model.blocks_per_stage=1',
                                           'model.cpu_functions=' + value], check_paths=False)
        assert models.build(cfg, 10, 3).cpu_functions == value
    with pytest.raises(Exception, match='cpu_functions'):
        config.load(None, overrides=['model.cpu_functions=mkl'], check_paths=False)


def test_the_threaded_passes_give_the_same_results(monkeypatch):
    # Large arrays split over the rank's threads (pfn15/functions/_parallel.py);
    # force the split on these small ones, on 3 threads (uneven parts).
    from pfn15 import cpu
    from pfn15.functions import _parallel
    monkeypatch.setattr(_parallel, 'MIN_BYTES', 0)
    monkeypatch.setattr(_parallel, 'MIN_FLOPS', 0)
    monkeypatch.setattr(cpu, '_threads', 3)
    monkeypatch.setattr(cpu, '_split', True)   # the products too (by rows, by inner dim)
    assert _parallel.threads() == 3
    rng = numpy.random.default_rng(3)
    x = rng.standard_normal((5, 6, 7, 7))
    W = rng.standard_normal((8, 6, 3, 3))
    numpy.testing.assert_allclose(P.convolution_2d(x, W, 2, 1).array,
                                  F.convolution_2d(x, W, None, 2, 1).array, rtol=1e-10)
    gradient_check.check_backward(lambda x, W: P.convolution_2d(x, W, 1, 1), (x, W),
                                  rng.standard_normal((5, 8, 7, 7)))
    g, b = rng.random(6) + 0.5, rng.standard_normal(6)
    numpy.testing.assert_allclose(P.batch_normalization(x, g, b, relu=True).array,
                                  F.relu(F.batch_normalization(x, g, b)).array, rtol=1e-10)
    gradient_check.check_backward(lambda x, g, b: P.batch_normalization(x, g, b, relu=True),
                                  (x, g, b), rng.standard_normal(x.shape))
    xv, xr = chainer.Variable(x), chainer.Variable(x.copy())
    y, ref = P.max_pooling_2d(xv, 3, 2, 1), F.max_pooling_2d(xr, 3, 2, 1, cover_all=False)
    numpy.testing.assert_array_equal(y.array, ref.array)
    gy = rng.standard_normal(y.shape)
    y.grad, ref.grad = gy, gy.copy()
    y.backward()
    ref.backward()
    numpy.testing.assert_allclose(xv.grad, xr.grad, rtol=1e-12)
    x2 = rng.standard_normal(x.shape)
    numpy.testing.assert_array_equal(P.add_relu(x, x2).array, F.relu(x + x2).array)
    gradient_check.check_backward(P.add_relu, (x, x2), rng.standard_normal(x.shape))


@pytest.mark.parametrize('shape', [(7, 5, 4), (2, 40, 3), (40, 2, 3), (1, 9, 1), (5, 1, 6)])
@pytest.mark.parametrize('split', [False, True])
def test_split_matmul_is_numpys_product(shape, split, monkeypatch):
    # By rows (a tall a), by the inner dimension (k >= 4x both of the result's:
    # the partial products summed), or one call (below MIN_FLOPS, one thread,
    # or products not split); transposed views as the weight gradient passes them.
    from pfn15 import cpu
    from pfn15.functions import _parallel
    monkeypatch.setattr(_parallel, 'MIN_FLOPS', 0)
    monkeypatch.setattr(cpu, '_threads', 3)
    monkeypatch.setattr(cpu, '_split', split)
    m, k, n = shape
    rng = numpy.random.default_rng(m * 100 + k)
    for dtype in DTYPES:
        a = rng.standard_normal((k, m)).astype(dtype).T     # an F-ordered view
        b = rng.standard_normal((k, n)).astype(dtype)
        out = _parallel.matmul(a, b)
        assert out.shape == (m, n) and out.dtype == dtype and out.flags.c_contiguous
        numpy.testing.assert_allclose(out, a @ b, **TOL[dtype])


def test_training_gives_blas_one_thread_when_pfn15_splits_the_products():
    # Read back through threadpoolctl in a fresh process: pfn15's functions own the
    # rank's threads; with Chainer's functions BLAS keeps them.
    import json
    import subprocess
    import sys
    code = (
        "import json, sys, pfn15\n"
        "from pfn15 import cpu\n"
        "import numpy\n"
        "from threadpoolctl import threadpool_info\n"
        "n = cpu.set_threads(2, 1, split_products=sys.argv[1] == 'pfn15')\n"
        "print(json.dumps({'n': n, 'split': cpu.products_split(), 'blas': sorted({\n"
        "    p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'})}))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS')}
    seen = {}
    for functions in ('pfn15', 'chainer'):
        out = subprocess.run([sys.executable, '-c', code, functions], capture_output=True,
                             text=True, check=True, env=env)
        seen[functions] = json.loads(out.stdout.splitlines()[-1])
    assert seen['pfn15'] == {'n': 2, 'split': True, 'blas': [1]}
    assert seen['chainer'] == {'n': 2, 'split': False, 'blas': [2]}


@pytest.mark.parametrize('dtype', [chainer.mixed16, numpy.float16], ids=['mixed16', 'f16'])
def test_float16_on_cpu_falls_back_to_chainers_functions(dtype):
    with chainer.using_config('dtype', dtype):
        model = L.Classifier(models.resnet_small(10, 3, 1, 4))
        x = numpy.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(numpy.float16)
        loss = model(x, numpy.array([1, 2], numpy.int32))
        loss.backward()
    assert numpy.isfinite(float(loss.array))
    assert model.predictor.fc.W.grad is not None
