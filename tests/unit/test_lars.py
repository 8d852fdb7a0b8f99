"""LARS against hand-computed values and an independent NumPy reference (float64)."""
import math

import numpy
import pytest

import chainer

from pfn15.config import OptimizerConfig
from pfn15 import optimizers
from pfn15.optimizers import LARSSection
from pfn15.optimizers.lars import LARS, local_rate


class _Leaf(chainer.Link):
    def __init__(self, **arrays):
        super().__init__()
        with self.init_scope():
            for name, a in arrays.items():
                setattr(self, name, chainer.Parameter(numpy.array(a, dtype=numpy.float64)))


def _model(rng):
    """conv/W, conv/b, bn/gamma, bn/beta, zero/W (all zeros): names like Chainer's links."""
    m = chainer.Chain()
    with m.init_scope():
        m.conv = _Leaf(W=rng.randn(4, 3), b=rng.randn(4))
        m.bn = _Leaf(gamma=rng.rand(4) + 0.5, beta=rng.randn(4))
        m.zero = _Leaf(W=numpy.zeros((2, 2)))
    return m


def test_local_rate_hand_computed():
    # ||w|| = 5 (3-4-5), ||g|| = 13 (5-12-13): 0.001 x 5 / (13 + 5e-4 x 5)
    assert local_rate(5.0, 13.0, 0.001, 5e-4, 0.0) == pytest.approx(0.005 / 13.0025, rel=1e-12)
    assert local_rate(5.0, 13.0, 0.02, 0.0, 1.0) == pytest.approx(0.1 / 14.0, rel=1e-12)
    # Zero norms: local rate 1, never 0/0.
    assert local_rate(0.0, 13.0, 0.001, 5e-4, 0.0) == 1.0
    assert local_rate(5.0, 0.0, 0.001, 5e-4, 0.0) == 1.0
    assert local_rate(0.0, 0.0, 0.001, 0.0, 0.0) == 1.0


def test_one_update_hand_computed():
    w = numpy.array([3.0, 4.0])
    g = numpy.array([5.0, 12.0])
    m = chainer.Chain()
    with m.init_scope():
        m.l = _Leaf(W=w)
    opt = LARS(lr=2.0, momentum=0.9, weight_decay=0.0, trust=0.01)
    opt.setup(m)
    m.l.W.grad = g.copy()
    opt.update()
    # local = 0.01 x 5 / 13; v = -2 x local x g; w += v
    local = 0.05 / 13.0
    numpy.testing.assert_allclose(m.l.W.array, w - 2.0 * local * g, rtol=1e-12)
    m.l.W.grad = g.copy()
    opt.update()
    w1 = w - 2.0 * local * g
    local2 = 0.01 * numpy.linalg.norm(w1) / 13.0
    v2 = 0.9 * (-2.0 * local * g) - 2.0 * local2 * g
    numpy.testing.assert_allclose(m.l.W.array, w1 + v2, rtol=1e-12)


def _reference(params, grads_seq, lrs, mu, wd, trust, eps, lars_on, decay_on):
    """Independent NumPy LARS (You et al. Algorithm 1, Chainer's momentum sign convention)."""
    w = {k: v.copy() for k, v in params.items()}
    v = {k: numpy.zeros_like(a) for k, a in w.items()}
    for grads, lr in zip(grads_seq, lrs):
        for k in w:
            g = grads[k]
            wd_k = wd if decay_on[k] else 0.0
            wn, gn = math.sqrt((w[k] ** 2).sum()), math.sqrt((g ** 2).sum())
            if lars_on[k] and wn > 0 and gn > 0:
                local = trust * wn / (gn + wd_k * wn + eps)
            else:
                local = 1.0
            v[k] = mu * v[k] - lr * local * (g + wd_k * w[k])
            w[k] = w[k] + v[k]
    return w


@pytest.mark.parametrize('skip,decay_bn', [(True, True), (True, False), (False, True)])
def test_matches_numpy_reference_over_several_updates(skip, decay_bn):
    rng = numpy.random.RandomState(0)
    model = _model(rng)
    cfg = OptimizerConfig(name='lars', momentum=0.9, weight_decay=5e-4,
                          lars=LARSSection(trust=0.02, eps=1e-9, skip_bn_and_bias=skip),
                          decay_bn_and_bias=decay_bn)
    opt = optimizers.build(cfg, model, lr=3.0)
    params = {n: p.array.copy() for n, p in model.namedparams()}
    bn_bias = {n: optimizers.is_bn_or_bias(n) for n in params}
    lars_on = {n: not (skip and bn_bias[n]) for n in params}
    decay_on = {n: decay_bn or not bn_bias[n] for n in params}
    grads_seq, lrs = [], []
    for step in range(5):
        grads = {n: rng.randn(*a.shape) for n, a in params.items()}
        if step == 2:
            grads['/conv/W'][...] = 0.0     # a zero gradient: local rate 1, no NaN
        lr = 3.0 * (step + 1) / 5           # the schedule changes lr between updates
        opt.lr = lr
        for n, p in model.namedparams():
            p.grad = grads[n].copy()
        opt.update()
        grads_seq.append(grads)
        lrs.append(lr)
    ref = _reference(params, grads_seq, lrs, 0.9, 5e-4, 0.02, 1e-9, lars_on, decay_on)
    for n, p in model.namedparams():
        assert numpy.isfinite(p.array).all(), n
        numpy.testing.assert_allclose(p.array, ref[n], rtol=1e-6, atol=1e-12, err_msg=n)


def test_skips_bn_and_bias_where_config_says():
    model = _model(numpy.random.RandomState(1))
    optimizers.build(OptimizerConfig(name='lars', lars=LARSSection(skip_bn_and_bias=True)), model, lr=1.0)
    flags = {n: p.update_rule.lars for n, p in model.namedparams()}
    assert flags == {'/conv/W': True, '/conv/b': False, '/bn/gamma': False,
                     '/bn/beta': False, '/zero/W': True}
    model = _model(numpy.random.RandomState(1))
    optimizers.build(OptimizerConfig(name='lars', lars=LARSSection(skip_bn_and_bias=False)), model, lr=1.0)
    assert all(p.update_rule.lars for p in model.params())
    # No WeightDecay hook: the decay is inside the LARS rule, applied once.
    assert all(not p.update_rule._hookable._pre_update_hooks for p in model.params())


def test_zero_weights_give_no_nan():
    m = chainer.Chain()
    with m.init_scope():
        m.l = _Leaf(W=numpy.zeros(3))
    opt = LARS(lr=0.5, momentum=0.9, weight_decay=5e-4, trust=0.001)
    opt.setup(m)
    m.l.W.grad = numpy.array([1.0, -2.0, 2.0])
    opt.update()
    assert m.l.W.update_rule.last_local_lr == 1.0
    numpy.testing.assert_allclose(m.l.W.array, [-0.5, 1.0, -1.0], rtol=1e-12)
    m.l.W.grad = numpy.zeros(3)             # both norms zero after a reset
    m.l.W.array[...] = 0.0
    opt.update()
    assert numpy.isfinite(m.l.W.array).all()


def test_without_lars_and_decay_it_is_momentum_sgd():
    rng = numpy.random.RandomState(2)
    a = _model(rng)
    b = a.copy(mode='copy')
    opt_a = LARS(lr=0.1, momentum=0.9, weight_decay=0.0)
    opt_a.setup(a)
    for p in a.params():
        p.update_rule.lars = False
    opt_b = chainer.optimizers.MomentumSGD(lr=0.1, momentum=0.9)
    opt_b.setup(b)
    for _ in range(3):
        for (_, pa), (_, pb) in zip(sorted(a.namedparams()), sorted(b.namedparams())):
            g = rng.randn(*pa.shape)
            pa.grad, pb.grad = g.copy(), g.copy()
        opt_a.update()
        opt_b.update()
    for (n, pa), (_, pb) in zip(sorted(a.namedparams()), sorted(b.namedparams())):
        numpy.testing.assert_array_equal(pa.array, pb.array, err_msg=n)


def test_float32_params_stay_float32():
    m = chainer.Chain()
    with m.init_scope():
        m.l = chainer.links.Linear(3, 2)
    m.l.W.array[...] = 1.0
    opt = LARS(lr=1.0, weight_decay=1e-4, trust=0.01)
    opt.setup(m)
    m.cleargrads()
    F_sum = chainer.functions.sum(m.l(numpy.ones((1, 3), numpy.float32)))
    F_sum.backward()
    opt.update()
    assert m.l.W.array.dtype == numpy.float32
    assert numpy.isfinite(m.l.W.array).all()


@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
def test_a_large_parameter_in_pieces_on_threads_is_the_same_bits(monkeypatch, dtype):
    # Large parameters: the float64 norms and the update in cache-sized pieces
    # over the rank's threads. Forced here on 3 threads with small, uneven
    # pieces; the update is elementwise (the same bits), the norms agree with
    # NumPy's float64 norm to rounding.
    from pfn15 import cpu
    from pfn15.functions import _parallel
    from pfn15.optimizers import lars
    rng = numpy.random.RandomState(11)
    w0 = rng.randn(257, 1031).astype(dtype)    # >= the patched MIN_BYTES below
    grads = [rng.randn(*w0.shape).astype(dtype) * 1e-2 for _ in range(3)]

    def run():
        link = chainer.Link()
        with link.init_scope():
            link.W = chainer.Parameter(w0.copy())
        opt = LARS(lr=0.5, momentum=0.9, weight_decay=5e-4, trust=0.02)
        opt.setup(link)
        rates = []
        for g in grads:
            link.W.grad = g.copy()
            opt.update()
            rates.append(link.W.update_rule.last_local_lr)
        return link.W.array, rates

    def step(local=0.0123):   # the update alone, at one local rate
        rule = lars.LARSRule(lr=0.5, momentum=0.9, weight_decay=5e-4)
        w, v = w0.copy(), (grads[1] * 3).astype(dtype)
        rule._update_numpy(grads[0].copy(), w, v, local)
        return w, v

    whole, whole_rates = run()
    whole_step = step()
    monkeypatch.setattr(cpu, '_threads', 3)
    monkeypatch.setattr(_parallel, 'MIN_BYTES', 2 ** 16)
    monkeypatch.setattr(_parallel, 'CHUNK_BYTES', 40000)
    assert float(lars.norm(w0)) == pytest.approx(
        numpy.linalg.norm(w0.astype(numpy.float64)), rel=1e-13)
    for a, b in zip(step(), whole_step):
        assert numpy.array_equal(a, b)
    pieces, piece_rates = run()
    assert piece_rates == pytest.approx(whole_rates, rel=1e-12)
    if piece_rates == whole_rates:   # the same local rate: the same bits
        assert numpy.array_equal(pieces, whole)
    else:
        # Local rates a rounding apart: steps of ~1e-3 differ by ~1e-16 of that.
        tol = 1e-12 if dtype == numpy.float64 else 1e-6
        numpy.testing.assert_allclose(pieces, whole, rtol=tol, atol=tol)
