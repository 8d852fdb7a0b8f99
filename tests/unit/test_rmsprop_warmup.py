"""RMSpropWarmup against an independent float64 NumPy reference of the docs/recipe.md rule."""
import numpy
import pytest

import chainer
from chainer import optimizer_hooks
import chainer.links as L

from pfn15 import schedules
from pfn15.optimizers import RMSpropWarmup


def reference_steps(theta, grads, lrs, alphas, lr_rms=3e-4, mu1=0.9, mu2=0.99, eps=1e-8,
                    weight_decay=0.0):
    """The rule exactly as written in docs/recipe.md, in float64, alpha_rms divided out."""
    theta = theta.astype(numpy.float64).copy()
    m = numpy.zeros_like(theta)
    v = numpy.zeros_like(theta)
    for g, lr, a_sgd in zip(grads, lrs, alphas):
        g = g.astype(numpy.float64) + weight_decay * theta
        m = mu2 * m + (1 - mu2) * g ** 2
        alpha_rms = (1 - a_sgd) * lr_rms / lr
        v = mu1 * v - lr * (a_sgd + alpha_rms / (numpy.sqrt(m) + eps)) * g
        theta = theta + v
    return theta


def run_chainer(opt, theta0, grads, lrs, alphas, dtype=numpy.float32):
    """Apply `opt` to a parameter initialized to theta0, feeding the given grads.

    float64 compares the rule itself with the reference (1e-6); float32, the
    precision of training, accumulates rounding of a few 1e-6 over 50 steps.
    """
    link = L.Linear(theta0.shape[1], theta0.shape[0], nobias=True)
    link.W.array = theta0.astype(dtype)
    opt.setup(link)
    for g, lr, a in zip(grads, lrs, alphas):
        link.W.grad = g.astype(dtype)
        opt.lr = lr
        if a is not None:
            opt.alpha_sgd = a
        opt.update()
    return link.W.array


def random_problem(steps=50, shape=(7, 5), seed=0):
    rng = numpy.random.RandomState(seed)
    theta0 = rng.randn(*shape).astype(numpy.float32)
    # Gradients over several orders of magnitude, so the RMSprop normalization matters.
    grads = [(rng.randn(*shape) * 10.0 ** rng.uniform(-3, 1)).astype(numpy.float32)
             for _ in range(steps)]
    return theta0, grads


def test_fifty_updates_with_changing_alpha_match_reference():
    theta0, grads = random_problem()
    epochs = numpy.linspace(5.0, 14.0, 50)   # crosses both branches and the plateau
    alphas = [schedules.alpha_sgd(e, 10.0, 5.0) for e in epochs]
    assert min(alphas) < 0.1 and max(alphas) == 1.0
    lrs = [schedules.slow_start(e, 0.4, (8, 12), (0.5, 0.2, 0.05)) for e in epochs]
    want = reference_steps(theta0, grads, lrs, alphas)
    got = run_chainer(RMSpropWarmup(), theta0, grads, lrs, alphas, dtype=numpy.float64)
    numpy.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    got32 = run_chainer(RMSpropWarmup(), theta0, grads, lrs, alphas)
    assert got32.dtype == numpy.float32
    numpy.testing.assert_allclose(got32, want, rtol=1e-5, atol=1e-6)
    # ... and the reference is sensitive: a wrong alpha schedule is far off.
    wrong = reference_steps(theta0, grads, lrs, [min(1.0, 2 * a) for a in alphas])
    assert numpy.abs(wrong - want).max() > 1e-3


def test_pure_rmsprop_phase_matches_reference():
    theta0, grads = random_problem(steps=20, seed=1)
    got = run_chainer(RMSpropWarmup(lr_rmsprop=1e-3), theta0, grads, [0.5] * 20, [0.0] * 20,
                      dtype=numpy.float64)
    want = reference_steps(theta0, grads, [0.5] * 20, [0.0] * 20, lr_rms=1e-3)
    numpy.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


def test_alpha_sgd_one_is_exactly_momentum_sgd():
    theta0, grads = random_problem(seed=2)
    lrs = list(numpy.linspace(0.5, 0.01, 50))
    ours = run_chainer(RMSpropWarmup(mu1=0.9, alpha_sgd=1.0), theta0, grads, lrs, [1.0] * 50)
    momentum = run_chainer(chainer.optimizers.MomentumSGD(momentum=0.9), theta0, grads, lrs,
                           [None] * 50)
    assert numpy.array_equal(ours, momentum)   # bit for bit


def test_weight_decay_hook_composes():
    theta0, grads = random_problem(steps=30, seed=3)
    epochs = numpy.linspace(8.0, 13.0, 30)
    alphas = [schedules.alpha_sgd(e) for e in epochs]
    lrs = [0.2] * 30
    opt = RMSpropWarmup()
    link = L.Linear(5, 7, nobias=True)
    link.W.array = theta0.astype(numpy.float64)
    opt.setup(link)
    opt.add_hook(optimizer_hooks.WeightDecay(5e-3))
    for g, lr, a in zip(grads, lrs, alphas):
        link.W.grad = g.astype(numpy.float64)
        opt.lr, opt.alpha_sgd = lr, a
        opt.update()
    want = reference_steps(theta0, grads, lrs, alphas, weight_decay=5e-3)
    numpy.testing.assert_allclose(link.W.array, want, rtol=1e-6, atol=1e-7)
    without = reference_steps(theta0, grads, lrs, alphas)
    assert numpy.abs(without - want).max() > 1e-5


def test_hyperparameters_are_settable_attributes_and_state_serializes(tmp_path):
    opt = RMSpropWarmup(lr=0.3, lr_rmsprop=1e-3, mu1=0.8, mu2=0.95, eps=1e-7)
    assert (opt.lr, opt.lr_rmsprop, opt.mu1, opt.mu2, opt.eps, opt.alpha_sgd) == \
        (0.3, 1e-3, 0.8, 0.95, 1e-7, 0.0)
    opt.alpha_sgd = 0.25
    assert opt.hyperparam.alpha_sgd == 0.25
    theta0, grads = random_problem(steps=3, seed=4)
    link = L.Linear(5, 7, nobias=True)
    link.W.array[...] = theta0
    opt.setup(link)
    for g in grads:
        link.W.grad = g
        opt.update()
    path = str(tmp_path / 'opt.npz')
    chainer.serializers.save_npz(path, opt)
    with numpy.load(path) as npz:
        keys = set(npz.files)
    assert any(k.endswith('W/m') for k in keys) and any(k.endswith('W/v') for k in keys), keys


def test_zero_learning_rate_gives_no_nan():
    theta0, grads = random_problem(steps=3, seed=5)
    got = run_chainer(RMSpropWarmup(), theta0, grads, [0.0] * 3, [0.3] * 3)
    assert numpy.isfinite(got).all()
    numpy.testing.assert_allclose(got, reference_steps(theta0, grads, [1e-30] * 3, [0.3] * 3),
                                  rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(not chainer.backends.cuda.available, reason='no CUDA GPU (CuPy) here; '
                    'tools/gpu_check.py runs the GPU comparison on a GPU machine')
def test_gpu_kernel_matches_cpu():
    theta0, grads = random_problem(steps=20, seed=6)
    alphas = [schedules.alpha_sgd(e) for e in numpy.linspace(8, 13, 20)]
    cpu = run_chainer(RMSpropWarmup(), theta0, grads, [0.2] * 20, alphas)
    import cupy
    link = L.Linear(5, 7, nobias=True)
    link.W.array[...] = theta0
    link.to_gpu()
    opt = RMSpropWarmup()
    opt.setup(link)
    for g, a in zip(grads, alphas):
        link.W.grad = cupy.asarray(g)
        opt.lr, opt.alpha_sgd = 0.2, a
        opt.update()
    numpy.testing.assert_allclose(cupy.asnumpy(link.W.array), cpu, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('alpha_sgd', [0.0, 0.4, 1.0])
@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
def test_a_large_parameter_updated_in_pieces_on_threads_is_the_same_bits(
        monkeypatch, alpha_sgd, dtype):
    # Large parameters go in cache-sized pieces over the rank's threads; small
    # ones in one piece. Forced here on 3 threads with small, uneven pieces.
    from pfn15 import cpu
    from pfn15.functions import _parallel
    rng = numpy.random.default_rng(7)
    theta0 = rng.standard_normal((301, 1009))          # 2.4 MB in float64, >= MIN_BYTES
    grads = [rng.standard_normal(theta0.shape) for _ in range(4)]
    lrs, alphas = [0.3, 0.2, 0.1, 0.05], [alpha_sgd] * 4

    def run():
        return run_chainer(RMSpropWarmup(lr_rmsprop=1e-3), theta0, grads, lrs, alphas,
                           dtype=dtype)
    whole = run()   # float32: the compiled pass (pfn15/optimizers/cpu_update.c)
    from pfn15.optimizers import cpu_update
    monkeypatch.setattr(cpu_update, '_lib', None)   # the NumPy split path from here
    monkeypatch.setattr(cpu_update, '_why', 'switched off by the test')
    monkeypatch.setattr(cpu, '_threads', 3)
    monkeypatch.setattr(_parallel, 'MIN_BYTES', 2 ** 16)
    monkeypatch.setattr(_parallel, 'CHUNK_BYTES', 40000)   # not a divisor of the size
    calls = []
    real = _parallel.over_ranges
    monkeypatch.setattr(_parallel, 'over_ranges',
                        lambda fn, n, nbytes: calls.append(n) or real(fn, n, nbytes))
    pieces = run()
    assert calls and all(n == theta0.size for n in calls)   # the split path ran
    assert pieces.dtype == dtype and numpy.array_equal(pieces, whole)
