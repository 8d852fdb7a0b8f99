"""A new optimizer as one class and one registry entry, end to end (run by
tests/mpi/test_optimizer_registry_run.py in a fresh process, because entries are
registered before pfn15.config is imported, as the package's own are).

    python tests/mpi/programs/registry_dummy.py OUT_DIR    # prints one JSON report

`dummy_sgd`: w <- w - lr x gamma x g, with three state arrays (a running sum
of g, of g^2, and the last step) so the size estimate must count three, a
hyperparameter `gamma` the schedule drives (gamma0 / (1 + epoch)), and one
CUDA kernel.
"""
import json
import os
import sys
from dataclasses import dataclass, field

import pfn15  # noqa: F401  (before Chainer)

import numpy

import chainer
from chainer import optimizer

from pfn15 import optimizers
from pfn15.optimizers import kernels

KERNEL = kernels.Elementwise(
    'T grad, float64 lr, float64 gamma', 'T param, T a, T b, T step',
    '''
    typedef pfn15_compute<T>::type P;
    P g = (P)grad;
    P s = (P)lr * (P)gamma * g;
    a = (T)((P)a + g);
    b = (T)((P)b + g * g);
    step = (T)s;
    param = (T)((P)param - s);
    ''',
    'pfn15_dummy_sgd', kernels.PREAMBLE)
KERNELS = (kernels.KernelCase(KERNEL, arrays=('grad', 'param', 'a', 'b', 'step')),)


class DummySGDRule(optimizer.UpdateRule):

    def init_state(self, param):
        xp = param.device.xp
        for k in ('a', 'b', 'step'):
            self.state[k] = xp.zeros_like(param.data)

    def update_core_cpu(self, param):
        if param.grad is None:
            return
        g, hp, st = param.grad, self.hyperparam, self.state
        st['a'] += g
        st['b'] += g * g
        st['step'][...] = hp.lr * hp.gamma * g
        param.data -= st['step']


class DummySGD(optimizer.GradientMethod):

    def __init__(self, lr=0.1, gamma=1.0):
        super(DummySGD, self).__init__()
        self.hyperparam.lr = lr
        self.hyperparam.gamma = gamma

    lr = optimizer.HyperparameterProxy('lr')
    gamma = optimizer.HyperparameterProxy('gamma')

    def create_update_rule(self):
        return DummySGDRule(self.hyperparam)


def build(opt_cfg, section, model, lr):
    opt = DummySGD(lr=lr, gamma=section.gamma0)
    opt.setup(model)
    return opt


@dataclass
class DummySGDSection:
    gamma0: float = field(default=1.0, metadata={'min': 0.0, 'resume': 'same'})


optimizers.register(optimizers.Entry(
    'dummy_sgd', __name__, DummySGDSection, state_slots=3,
    scheduled={'gamma': lambda epoch, cfg: cfg.optimizer.dummy_sgd.gamma0 / (1.0 + epoch)}))


def main(out):
    from pfn15 import config
    from pfn15.training import startup
    tests = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # The kernel tests (tests/kernels/), the helpers they import (tests/), gpu_check (tools/).
    sys.path[:0] = [os.path.join(tests, 'kernels'), tests,
                    os.path.join(os.path.dirname(tests), 'tools')]
    import test_kernels_host
    import test_kernels_nvrtc
    import gpu_check
    from pfn15 import bench

    report = {}
    # The config: the name is a choice, the section is optimizer.dummy_sgd.*.
    cfg = config.load(None, ['data.dataset=digits', 'optimizer.name=dummy_sgd',
                             'optimizer.dummy_sgd.gamma0=0.5'])
    report['config_gamma0'] = cfg.optimizer.dummy_sgd.gamma0
    try:
        config.load(None, ['data.dataset=digits', 'optimizer.dummy_sgd.gamma0=-1'])
    except config.ConfigError as e:
        report['config_error'] = str(e)

    # Built, and its state: three arrays per parameter, as the entry says.
    model = chainer.links.Linear(5, 3, initialW=numpy.ones((3, 5), numpy.float32))
    opt = optimizers.build(cfg.optimizer, model, lr=0.2)
    model.W.grad = numpy.ones((3, 5), numpy.float32)
    model.b.grad = numpy.ones(3, numpy.float32)
    opt.update()
    report['built'] = type(opt).__name__
    report['w_after'] = float(model.W.array[0, 0])
    report['states'] = sorted(len(p.update_rule.state) for p in model.params())

    # Estimated: the checkpoint-size estimate counts its three state arrays.
    params = sum(p.array.nbytes for p in model.params())
    report['estimate_minus_momentum_sgd'] = (startup.checkpoint_file_bytes(model, 'dummy_sgd') -
                                             startup.checkpoint_file_bytes(model, 'momentum_sgd'))
    report['param_bytes'] = params

    # Listed for compiling: the NVRTC job, the host tests, gpu_check; and compiled here.
    report['nvrtc_ids'] = [kid for kid, _ in test_kernels_nvrtc.kernels()]
    report['host_cases'] = [name for name, _ in test_kernels_host.registered_cases()]
    try:
        test_kernels_host.test_every_registered_kernel_is_compared_with_its_numpy_rule()
        report['host_comparison_missing'] = None
    except AssertionError as e:
        report['host_comparison_missing'] = str(e)
    (_, case), = [(n, c) for n, c in test_kernels_host.registered_cases() if n == 'dummy_sgd']
    kern = test_kernels_host.compile_for_host(case, out)
    w, a, b, s = (numpy.ones(4, numpy.float32), numpy.zeros(4, numpy.float32),
                  numpy.zeros(4, numpy.float32), numpy.zeros(4, numpy.float32))
    kern(4, grad=numpy.full(4, 2.0, numpy.float32), lr=0.1, gamma=0.5, param=w, a=a, b=b, step=s)
    report['host_kernel'] = [float(w[0]), float(a[0]), float(b[0]), float(s[0])]
    report['gpu_checks'] = gpu_check.optimizer_checks()
    report['bench_choice'] = bench.parse_args(['step', '--optimizer', 'dummy_sgd']).optimizer

    # Trained: the schedule drives gamma, the log and the table show it.
    from pfn15 import train
    run_out = os.path.join(out, 'run')
    status = train.main(['configs/demo.yaml', 'out=' + run_out, 'optimizer.name=dummy_sgd',
                         'optimizer.dummy_sgd.gamma0=0.5', 'train.epochs=1',
                         'train.progress_bar=false', 'checkpoint.every_iterations=0'])
    report['train_status'] = status
    with open(os.path.join(run_out, 'log')) as f:
        report['log'] = [{k: row.get(k) for k in ('epoch', 'lr', 'gamma', 'alpha_sgd')}
                         for row in json.load(f)]
    print('REPORT ' + json.dumps(report))


if __name__ == '__main__':
    main(sys.argv[1])
