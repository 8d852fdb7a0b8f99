"""The compiled CPU updates (pfn15/optimizers/cpu_update.c): built by the install,
the same bits as each rule's NumPy code on every kind of value and thread count,
taken by the rules, and an exact finite check."""
import numpy
import pytest

import chainer

from helpers import update_with_random_grads
from pfn15.functions import _parallel
from pfn15.optimizers import cpu_update, lars, momentum_sgd, rmsprop_warmup, weight_decay

N = _parallel.MIN_BYTES // 4 + 4099   # pieces and threads on the NumPy side; odd


def _values(rng, n, scale=1.0):
    x = (rng.standard_normal(n) * scale).astype(numpy.float32)
    # zeros of both signs, subnormals, the largest floats, tiny and huge magnitudes
    special = numpy.array([0.0, -0.0, 1e-45, -1e-42, 1e-39, 3.4e38, -3.4e38, 1e-30, 1e30],
                          numpy.float32)
    x[rng.choice(n, 64, replace=False)] = numpy.resize(special, 64)
    return x


def _bits(a):
    return a.view(numpy.uint32)


def test_the_install_built_it():
    assert cpu_update.available(), cpu_update.status()


def test_a_library_built_from_another_source_is_not_called(monkeypatch):
    # an editable install after `git pull` keeps its old library until reinstalled
    monkeypatch.setattr(cpu_update, '_lib', None)
    monkeypatch.setattr(cpu_update, '_why', None)
    monkeypatch.setattr(cpu_update, 'VERSION', cpu_update.VERSION + 1)
    assert not cpu_update.available()
    assert 'reinstall' in cpu_update.status()
    a = numpy.ones(8, numpy.float32)
    assert not cpu_update.momentum_sgd(a, a.copy(), a.copy(), 0.0, 0.9, 0.1)
    assert cpu_update.all_finite([a]) is None


class HP(object):
    def __init__(self, **kw):
        self.__dict__.update(kw)


def _numpy_momentum(g, w, v, rate, hp):
    # MomentumSGDRule's pieces (the rules themselves: test_the_rules_take_it...)
    if rate:
        g += rate * w
    v *= hp.momentum
    v -= hp.lr * g
    w += v


CASES = [dict(rate=0.0, lr=0.1, momentum=0.9), dict(rate=5e-4, lr=3.2, momentum=0.9),
         dict(rate=1e-4, lr=0.0, momentum=0.0)]


@pytest.mark.parametrize('threads', [1, 2, 3])
@pytest.mark.parametrize('case', CASES)
def test_momentum_sgd_same_bits(monkeypatch, threads, case):
    monkeypatch.setattr(_parallel, 'threads', lambda: threads)
    rng = numpy.random.default_rng(threads)
    arrays = [_values(rng, N), _values(rng, N), _values(rng, N, 0.1)]
    ours = [a.copy() for a in arrays]
    hp = HP(**case)
    assert cpu_update.momentum_sgd(*ours, case['rate'], hp.momentum, hp.lr)
    _numpy_momentum(*arrays, case['rate'], hp)
    for a, b in zip(ours, arrays):
        assert numpy.array_equal(_bits(a), _bits(b))


@pytest.mark.parametrize('alpha_sgd', [0.0, 0.37, 1.0])
@pytest.mark.parametrize('rate', [0.0, 1e-4])
def test_rmsprop_warmup_same_bits(monkeypatch, alpha_sgd, rate):
    monkeypatch.setattr(_parallel, 'threads', lambda: 2)
    rng = numpy.random.default_rng(7)
    g, w = _values(rng, N), _values(rng, N)
    m = numpy.abs(_values(rng, N, 0.01))
    v = _values(rng, N, 0.1)
    rule = rmsprop_warmup.RMSpropWarmupRule(lr=0.4, alpha_sgd=alpha_sgd, lr_rmsprop=3e-4,
                                            mu1=0.9, mu2=0.99, eps=1e-8)
    ours = [a.copy() for a in (g, w, m, v)]
    assert cpu_update.rmsprop_warmup(*ours, rate, rule.hyperparam)
    rule._update_pieces(g, w, m, v, rate)
    for a, b in zip(ours, (g, w, m, v)):
        assert numpy.array_equal(_bits(a), _bits(b))


@pytest.mark.parametrize('weight_decay', [0.0, 5e-5])
def test_lars_same_bits(weight_decay):
    rng = numpy.random.default_rng(3)
    g, w, v = _values(rng, N), _values(rng, N), _values(rng, N, 0.1)
    rule = lars.LARSRule(lr=2.5, momentum=0.9, weight_decay=weight_decay)
    local = 0.0123
    ours = [a.copy() for a in (g, w, v)]
    p = numpy.float32
    assert cpu_update.lars(*ours, weight_decay, 0.9, p(2.5) * p(local))
    rule._update_pieces(g, w, v, local)
    for a, b in zip(ours, (g, w, v)):
        assert numpy.array_equal(_bits(a), _bits(b))


def test_what_it_cannot_take_is_left_to_numpy():
    a = numpy.ones(10, numpy.float32)
    assert not cpu_update.momentum_sgd(a.astype(numpy.float64), a, a, 0.0, 0.9, 0.1)
    assert not cpu_update.momentum_sgd(numpy.ones((4, 4), numpy.float32)[:, ::2],
                                       a[:8], a[:8], 0.0, 0.9, 0.1)
    assert cpu_update.all_finite([a, a.astype(numpy.float16)]) is None


@pytest.mark.parametrize('threads', [1, 2, 3])
def test_all_finite_is_exact(monkeypatch, threads):
    monkeypatch.setattr(_parallel, 'threads', lambda: threads)
    rng = numpy.random.default_rng(0)
    arrays = [rng.standard_normal(n).astype(numpy.float32) for n in (N, 1, 0, 1000, N // 3)]
    assert cpu_update.all_finite(arrays) is True
    huge = [numpy.full(1000, 3e38, numpy.float32)]   # its sum overflows; every value is finite
    assert cpu_update.all_finite(huge) is True
    for bad in (numpy.nan, numpy.inf, -numpy.inf):
        for k, i in ((0, 0), (0, N - 1), (0, N // 2 + 1), (1, 0), (4, N // 3 - 1)):
            spoilt = [a.copy() for a in arrays]
            spoilt[k][i] = bad
            assert cpu_update.all_finite(spoilt) is False


class Model(chainer.Link):
    def __init__(self):
        super().__init__()
        rng = numpy.random.default_rng(0)
        with self.init_scope():
            self.W = chainer.Parameter(rng.standard_normal((N,)).astype(numpy.float32))
            self.b = chainer.Parameter(rng.standard_normal((5,)).astype(numpy.float32))


def _train(make, steps=3):
    model = Model()
    opt = make()
    opt.setup(model)
    if not isinstance(opt, lars.LARS):   # LARS decays inside its rule
        model.W.update_rule.add_hook(weight_decay.WeightDecay(5e-4))
    return update_with_random_grads(opt, model, steps)


@pytest.mark.parametrize('make', [
    lambda: momentum_sgd.MomentumSGD(lr=0.1, momentum=0.9),
    lambda: rmsprop_warmup.RMSpropWarmup(lr=0.1, alpha_sgd=0.5),
    lambda: lars.LARS(lr=0.1, weight_decay=1e-4)], ids=['momentum_sgd', 'rmsprop', 'lars'])
def test_the_rules_take_it_with_the_same_result(monkeypatch, make):
    taken = []
    for name in ('momentum_sgd', 'rmsprop_warmup', 'lars'):
        real = getattr(cpu_update, name)

        def spy(*args, _real=real):
            done = _real(*args)
            taken.append(done)
            return done
        monkeypatch.setattr(cpu_update, name, spy)
    compiled = _train(make)
    assert taken and all(taken)
    monkeypatch.setattr(cpu_update, '_lib', None)
    monkeypatch.setattr(cpu_update, '_why', 'switched off by the test')
    taken.clear()
    plain = _train(make)
    assert taken and not any(taken)
    for a, b in zip(compiled, plain):
        assert numpy.array_equal(_bits(a), _bits(b))
