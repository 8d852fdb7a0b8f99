"""The CPU update on the rank's threads, the same bits as the plain NumPy one.

pfn15's optimizer rules apply the weight decay on their own pieces
(pfn15/optimizers/weight_decay.py): the same bits as Chainer's MomentumSGD
with Chainer's WeightDecay hook, for large parameters (split over threads and
pieces) and small ones, and the hook still runs itself where fusing would
change the order. The gradients' packing (pfn15/functions/_parallel.concatenate)
is numpy.concatenate's."""
import numpy
import pytest

import chainer
from chainer import optimizer_hooks

from helpers import update_with_random_grads
from pfn15.functions import _parallel
from pfn15.optimizers import momentum_sgd, rmsprop_warmup, weight_decay

# One parameter above _parallel.MIN_BYTES (pieces, threads), one below, odd sizes.
SHAPES = [(_parallel.MIN_BYTES // 4 + 1237,), (3, 5, 7)]


class Model(chainer.Link):
    def __init__(self, seed):
        super().__init__()
        rng = numpy.random.default_rng(seed)
        with self.init_scope():
            for i, shape in enumerate(SHAPES):
                setattr(self, 'p%d' % i, chainer.Parameter(
                    rng.standard_normal(shape).astype(numpy.float32)))


def _run(make_opt, hook_cls, steps=4, extra_hook=None):
    model = Model(0)
    opt = make_opt()
    opt.setup(model)
    for p in model.params():
        p.update_rule.add_hook(hook_cls(5e-3))
        if extra_hook is not None:
            p.update_rule.add_hook(extra_hook, name='after_decay')
    return update_with_random_grads(opt, model, steps)


def _same_bits(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert numpy.array_equal(x.view(numpy.uint32), y.view(numpy.uint32))


def test_momentum_sgd_same_bits_as_chainer():
    ours = _run(lambda: momentum_sgd.MomentumSGD(lr=0.1, momentum=0.9), weight_decay.WeightDecay)
    chainers = _run(lambda: chainer.optimizers.MomentumSGD(lr=0.1, momentum=0.9),
                    optimizer_hooks.WeightDecay)
    _same_bits(ours, chainers)
    # and the decay did something: without it the weights differ
    plain = _run(lambda: chainer.optimizers.MomentumSGD(lr=0.1, momentum=0.9),
                 lambda rate: optimizer_hooks.WeightDecay(0.0))
    assert not numpy.array_equal(ours[0], plain[0])


@pytest.mark.parametrize('alpha_sgd', [0.0, 0.5, 1.0])
def test_rmsprop_warmup_same_bits_as_with_chainers_hook(alpha_sgd):
    def make():
        return rmsprop_warmup.RMSpropWarmup(lr=0.1, alpha_sgd=alpha_sgd)
    _same_bits(_run(make, weight_decay.WeightDecay), _run(make, optimizer_hooks.WeightDecay))


def test_a_hook_after_the_decay_sees_the_decayed_gradient():
    seen = []

    def record(rule, param):   # a per-parameter hook registered after the decay
        seen.append(float(param.grad.reshape(-1)[0]))
    record.timing = 'pre'
    ours = _run(lambda: momentum_sgd.MomentumSGD(lr=0.1, momentum=0.9), weight_decay.WeightDecay,
                steps=1, extra_hook=record)
    seen_ours, seen[:] = list(seen), []
    chainers = _run(lambda: chainer.optimizers.MomentumSGD(lr=0.1, momentum=0.9),
                    optimizer_hooks.WeightDecay, steps=1, extra_hook=record)
    assert seen_ours == seen
    _same_bits(ours, chainers)


def test_deferred_only_for_rules_that_fuse():
    model = Model(0)
    opt = chainer.optimizers.MomentumSGD(lr=0.1)   # Chainer's rule: the hook runs itself
    opt.setup(model)
    p = model.p1
    p.update_rule.add_hook(weight_decay.WeightDecay(1e-2))
    assert weight_decay.deferred_rate(p.update_rule, p) is None
    model2 = Model(0)
    opt2 = momentum_sgd.MomentumSGD(lr=0.1)
    opt2.setup(model2)
    model2.p1.update_rule.add_hook(weight_decay.WeightDecay(1e-2))
    assert weight_decay.deferred_rate(model2.p1.update_rule, model2.p1) == 1e-2


def test_parallel_concatenate_is_numpys():
    rng = numpy.random.default_rng(3)
    arrays = [rng.standard_normal(s).astype(numpy.float32)
              for s in [(7,), (_parallel.MIN_BYTES // 4 + 11,), (3, 4, 5), (1,),
                        (_parallel.MIN_BYTES // 8, 3)]]
    arrays.append(rng.standard_normal((4, 6)).astype(numpy.float32).T)   # not contiguous
    got = _parallel.concatenate(arrays)
    want = numpy.concatenate([a.ravel() for a in arrays])
    assert got.dtype == want.dtype and numpy.array_equal(got, want)


@pytest.mark.parametrize('groups', [1, 2, 3])
def test_unpacked_gradients_are_the_sums_over_the_groups(groups):
    # One group (one rank, one microbatch) skips the division: x / 1 is x.
    from pfn15.training import updater
    model = Model(0)
    rng = numpy.random.default_rng(2)
    for p in model.params():
        p.grad = rng.standard_normal(p.shape).astype(numpy.float32)
    raw = [p.grad.copy() for p in model.params()]
    leaf, layout = updater._pack(model, [], {})
    layout.unpack(leaf, groups, model, [])
    _same_bits([p.grad for p in model.params()],
               [numpy.true_divide(g, groups) for g in raw])


def test_one_group_skips_the_packing_with_the_same_bits(tmp_path):
    # One rank, one microbatch: the update takes the gradients as they stand. The
    # packed path (forced by an identity cast, grad_dtype float32) must give the
    # same parameters and the same reported figures.
    import json
    import subprocess
    import sys
    code = (
        "import json, sys, numpy, pfn15, chainer\n"
        "from pfn15 import bench, comm, train\n"
        "out = []\n"
        "for cast in (None, numpy.float32):\n"
        "    args = bench.parse_args(['step', '--arch', 'resnet_small', '--batch', '4',\n"
        "                             '--size', '16', '--peer', 'none'])\n"
        "    cfg = bench._step_config(args, sys.argv[1])\n"
        "    trainer = train.build_trainer(cfg, comm.create(cfg))\n"
        "    u = trainer.updater\n"
        "    assert u.canonical and u.microbatches == 1\n"
        "    u.grad_dtype = cast\n"
        "    seen = []\n"
        "    for _ in range(3):\n"
        "        obs = {}\n"
        "        with trainer.reporter.scope(obs):\n"
        "            u.update()\n"
        "        seen.append({k: float(v) for k, v in sorted(obs.items())})\n"
        "    model = u.get_optimizer('main').target\n"
        "    params = [p.array.view(numpy.uint32).tolist() for _, p in sorted(model.namedparams())\n"
        "              if p.array.size < 5000]\n"
        "    out.append([seen, params, sum(int(p.array.view(numpy.uint32).sum(dtype=numpy.uint64))\n"
        "                                  for p in model.params())])\n"
        "print(json.dumps(out))\n")
    res = subprocess.run([sys.executable, '-c', code, str(tmp_path)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    alone, packed = json.loads(res.stdout.splitlines()[-1])
    assert alone[0] and all('main/loss' in s for s in alone[0])
    assert alone == packed
