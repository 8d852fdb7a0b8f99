"""The GPU kernels' own text, compiled for the host (g++), against the NumPy update rules.

The CUDA kernels of the registered optimizers (RMSpropWarmup, LARS) are strings in their modules;
tests/kernels/hostcc.py compiles exactly those strings for the CPU. 50 steps with a
changing learning rate (and alpha_sgd) must agree with update_core_cpu within
1e-6 relative in float32: the GPU rule and the CPU rule cannot drift apart.
"""
import pfn15  # noqa: F401  (pfn15._compat before Chainer, on NumPy 2)
import os
import shutil

import numpy
import pytest

import chainer

from pfn15 import optimizers
from pfn15.optimizers import lars, rmsprop_warmup
from pfn15.optimizers import LARS, RMSpropWarmup

from hostcc import HostElementwise

# `make test` requires them (it sets PFN15_KERNEL_STACKS): without g++ they fail there.
pytestmark = pytest.mark.skipif(shutil.which('g++') is None
                                and not os.environ.get('PFN15_KERNEL_STACKS'),
                                reason='needs g++ (make test fails instead of skipping)')

F32 = numpy.float32
STEPS = 50


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp('hostcc'))


def _link(w):
    link = chainer.Link()
    with link.init_scope():
        link.w = chainer.Parameter(w.copy())
    return link


def _grads(rng, n):
    g = (rng.randn(STEPS, n) * rng.choice([1e-3, 1e-1, 1.0], size=(STEPS, 1))).astype(F32)
    g[:, :7] = 0          # zero gradient elements: the eps matters there
    return g


def _run_rmsprop_warmup(workdir, body_spec):
    rng = numpy.random.RandomState(3)
    n = 1000
    w0 = rng.randn(n).astype(F32)
    grads = _grads(rng, n)
    link = _link(w0)
    opt = RMSpropWarmup(lr=0.1, lr_rmsprop=3e-4, mu1=0.9, mu2=0.99, eps=1e-8)
    opt.setup(link)
    kern = HostElementwise(body_spec, {'T': F32}, ('grad', 'param', 'm', 'v'), workdir)
    param, m, v = w0.copy(), numpy.zeros(n, F32), numpy.zeros(n, F32)
    for step in range(STEPS):
        # alpha_sgd from 0 (RMSprop) to 1 (momentum SGD), lr changing too
        alpha = min(1.0, step / 40.0)
        lr = 0.05 + 0.002 * step
        opt.hyperparam.alpha_sgd, opt.hyperparam.lr = alpha, lr
        link.w.grad = grads[step].copy()
        opt.update()
        kern(n, grad=grads[step], param=param, m=m, v=v,
             **rmsprop_warmup.kernel_scalars(opt.hyperparam))
    state = link.w.update_rule.state
    return (link.w.array, state['m'], state['v']), (param, m, v)


def test_rmsprop_warmup_kernel_body_matches_numpy_rule(workdir):
    (w_np, m_np, v_np), (w_k, m_k, v_k) = _run_rmsprop_warmup(
        workdir, rmsprop_warmup.KERNEL)
    numpy.testing.assert_allclose(w_k, w_np, rtol=1e-6)
    numpy.testing.assert_allclose(m_k, m_np, rtol=1e-6, atol=1e-12)
    numpy.testing.assert_allclose(v_k, v_np, rtol=1e-6, atol=1e-6 * abs(v_np).max())


def test_a_changed_kernel_body_is_caught(workdir):
    """The comparison has teeth: eps moved under the square root is a different rule."""
    spec = rmsprop_warmup.KERNEL
    wrong = spec._replace(operation=spec.operation.replace('(sqrt(m_new) + (P)eps)',
                                                           'sqrt(m_new + (P)eps)'),
                          name='wrong')
    assert wrong.operation != spec.operation
    (w_np, _, _), (w_k, _, _) = _run_rmsprop_warmup(workdir, wrong)
    assert not numpy.allclose(w_k, w_np, rtol=1e-6)


@pytest.mark.parametrize('use_lars', [True, False])
def test_lars_kernel_bodies_match_numpy_rule(workdir, use_lars):
    rng = numpy.random.RandomState(4)
    n = 777
    w0 = rng.randn(n).astype(F32)
    grads = _grads(rng, n)
    link = _link(w0)
    opt = LARS(lr=0.1, momentum=0.9, weight_decay=5e-4, trust=0.02, eps=1e-9)
    opt.setup(link)
    link.w.update_rule.lars = use_lars
    types = {'T': F32}
    rate = HostElementwise(lars.LOCAL_RATE_KERNEL, types, ('local',), workdir)
    update = HostElementwise(lars.UPDATE_KERNEL, types, ('grad', 'param', 'v'), workdir)
    param, v = w0.copy(), numpy.zeros(n, F32)
    for step in range(STEPS):
        lr = 0.1 * (1 + step) / STEPS if step < 25 else 0.1 * 0.5 ** (step - 25)
        opt.hyperparam.lr = lr
        g = grads[step]
        link.w.grad = g.copy()
        opt.update()
        local = numpy.ones((1,), numpy.float64)
        if use_lars:
            # The norms as the GPU path computes them: lars.norm, run by CuPy there.
            rate(1, w_norm=lars.norm(param), g_norm=lars.norm(g), trust=0.02,
                 weight_decay=5e-4, eps=1e-9, local=local)
            assert local[0] == pytest.approx(link.w.update_rule.last_local_lr, rel=1e-12)
        update(n, grad=g, lr=lr, local=local[0], momentum=0.9, weight_decay=5e-4,
               param=param, v=v)
    assert not numpy.allclose(param, w0)
    numpy.testing.assert_allclose(param, link.w.array, rtol=1e-6)
    v_np = link.w.update_rule.state['v']
    numpy.testing.assert_allclose(v, v_np, rtol=1e-6, atol=1e-6 * abs(v_np).max())


def test_gpu_call_passes_arguments_in_the_kernels_order():
    """update_core_gpu passes CuPy (which takes them positionally) KERNEL.args(...)."""
    hp = RMSpropWarmup(lr=0.2, alpha_sgd=0.25, lr_rmsprop=1e-3, mu1=0.8, mu2=0.9,
                       eps=1e-7).hyperparam
    args = rmsprop_warmup.KERNEL.args(grad='g', param='p', m='m', v='v',
                                      **rmsprop_warmup.kernel_scalars(hp))
    assert args[0] == 'g' and args[-3:] == ['p', 'm', 'v']
    assert args[1:-3] == pytest.approx([0.2 * 0.25, 0.75 * 1e-3, 0.8, 0.9, 0.1, 1e-7])
    args = lars.UPDATE_KERNEL.args(grad='g', lr=0.1, local=2.0, momentum=0.9,
                                   weight_decay=1e-4, param='p', v='v')
    assert args == ['g', 0.1, 2.0, 0.9, 1e-4, 'p', 'v']


# The kernels this file compares against their NumPy rules, by kernel name. A
# registered optimizer's kernel missing here fails the test below: a new kernel
# needs its comparison.
COMPARED = {rmsprop_warmup.KERNEL.name, lars.UPDATE_KERNEL.name, lars.LOCAL_RATE_KERNEL.name}


def registered_cases(entries=None):
    """[(entry name, KernelCase)] of every registered optimizer."""
    return [(e.name, case) for e in (optimizers.REGISTRY if entries is None else entries)
            for case in e.kernels()]


def test_every_registered_kernel_is_compared_with_its_numpy_rule():
    names = {case.spec.name for _, case in registered_cases()}
    assert names, 'no optimizer registers a kernel'
    assert names <= COMPARED, ('kernels with no host comparison in this file: %s'
                               % ', '.join(sorted(names - COMPARED)))


def compile_for_host(case, workdir):
    """The case's kernel text compiled with g++ (float32 for T, else its float64)."""
    types = {'T': F32} if case.typed else {}
    return HostElementwise(case.spec, types, case.arrays, workdir)


@pytest.mark.parametrize('name,case', registered_cases(),
                         ids=['%s:%s' % (n, c.ids()[0][0]) for n, c in registered_cases()])
def test_every_registered_kernel_compiles_for_the_host(workdir, name, case):
    kern = compile_for_host(case, workdir)
    assert kern.spec.operation in kern.source
