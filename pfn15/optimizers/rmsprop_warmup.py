"""RMSprop warm-up (Akiba et al. 2017): start as RMSprop, move gradually to momentum SGD.

    m     <- mu2 * m + (1 - mu2) * g^2
    v     <- mu1 * v - lr * (alpha_sgd + alpha_rms / (sqrt(m) + eps)) * g
    theta <- theta + v
    alpha_rms = (1 - alpha_sgd) * lr_rmsprop / lr

`alpha_sgd` is a hyperparameter like `lr`, driven each iteration by
`pfn15.schedules.alpha_sgd(epoch)`. With alpha_sgd = 1 the rule is exactly
Chainer's MomentumSGD (lr, momentum=mu1).

We evaluate lr * alpha_rms as (1 - alpha_sgd) * lr_rmsprop: the same number
without dividing by lr, so a zero learning rate cannot produce NaN.

float16 parameters: the arithmetic runs in float32 (kernels.compute_dtype),
on the CPU and in the GPU kernel, and only the results are stored in
float16. In float16 itself the default eps=1e-8 rounds to 0 and a zero
gradient element would divide 0 by 0 (Chainer's RMSprop refuses such an eps
instead; float32 arithmetic keeps it meaningful).
"""
import numpy

import chainer
from chainer import optimizer

from pfn15.functions import _parallel
from pfn15.optimizers import cpu_update, kernels, weight_decay

# The GPU update: one fused pass over the parameter (reads grad, param, m, v
# once). This text is also compiled for the host and checked against
# update_core_cpu (tests/kernels/test_kernels_host.py), and compiled with NVRTC for
# every architecture (tests/kernels/test_kernels_nvrtc.py).
KERNEL = kernels.Elementwise(
    'T grad, float64 lr_sgd, float64 lr_rms, float64 mu1, float64 mu2, float64 one_minus_mu2, '
    'float64 eps',
    'T param, T m, T v',
    '''
    typedef pfn15_compute<T>::type P;
    P g = (P)grad;
    P m_new = (P)mu2 * (P)m + (P)one_minus_mu2 * g * g;
    P v_new = (P)mu1 * (P)v - ((P)lr_sgd + (P)lr_rms / (sqrt(m_new) + (P)eps)) * g;
    m = (T)m_new;
    v = (T)v_new;
    param = (T)((P)param + v_new);
    ''',
    'pfn15_rmsprop_warmup',
    kernels.PREAMBLE)


KERNELS = (kernels.KernelCase(KERNEL, arrays=('grad', 'param', 'm', 'v')),)


def build(opt_cfg, section, model, lr):
    """RMSpropWarmup from `optimizer.*` and `optimizer.rmsprop_warmup.*`, set up on
    `model`, weight decay as a hook (pfn15.optimizers.add_weight_decay)."""
    from pfn15 import optimizers
    opt = RMSpropWarmup(lr=lr, lr_rmsprop=section.lr_rmsprop, mu1=opt_cfg.momentum,
                        mu2=section.decay, eps=section.eps)
    opt.setup(model)
    optimizers.add_weight_decay(opt, opt_cfg, model)
    return opt


def kernel_scalars(hp):
    """KERNEL's scalar arguments from the hyperparameters.

    Computed on the host in double precision (the kernel rounds each to P
    once), as the NumPy rule computes them: lr * alpha_sgd,
    (1 - alpha_sgd) * lr_rmsprop, 1 - mu2.
    """
    return {'lr_sgd': hp.lr * hp.alpha_sgd, 'lr_rms': (1 - hp.alpha_sgd) * hp.lr_rmsprop,
            'mu1': hp.mu1, 'mu2': hp.mu2, 'one_minus_mu2': 1 - hp.mu2, 'eps': hp.eps}


_default_hyperparam = optimizer.Hyperparameter()
_default_hyperparam.lr = 0.1
_default_hyperparam.alpha_sgd = 0.0
_default_hyperparam.lr_rmsprop = 3e-4
_default_hyperparam.mu1 = 0.9
_default_hyperparam.mu2 = 0.99
_default_hyperparam.eps = 1e-8


class RMSpropWarmupRule(optimizer.UpdateRule):

    """Update rule of RMSprop warm-up; see the module docstring.

    State: `m` (running mean of g^2, the RMSprop part) and `v` (velocity,
    the momentum part).
    """
    is_elementwise = True
    fuses_weight_decay = True   # on the pieces of _update_pieces (weight_decay.py)

    def __init__(self, parent_hyperparam=None, lr=None, alpha_sgd=None,
                 lr_rmsprop=None, mu1=None, mu2=None, eps=None):
        super(RMSpropWarmupRule, self).__init__(
            parent_hyperparam or _default_hyperparam)
        for name, value in (('lr', lr), ('alpha_sgd', alpha_sgd),
                            ('lr_rmsprop', lr_rmsprop), ('mu1', mu1),
                            ('mu2', mu2), ('eps', eps)):
            if value is not None:
                setattr(self.hyperparam, name, value)

    def init_state(self, param):
        with chainer.using_device(param.device):
            xp = param.device.xp
            self.state['m'] = xp.zeros_like(param.data)
            self.state['v'] = xp.zeros_like(param.data)

    def update_core_cpu(self, param):
        grad = param.grad
        if grad is None:
            return
        m, v, w = self.state['m'], self.state['v'], param.data
        rate = weight_decay.deferred_rate(self, param)
        acc = kernels.compute_dtype(w.dtype)
        if acc == w.dtype:
            if not cpu_update.rmsprop_warmup(grad, w, m, v, rate, self.hyperparam):
                self._update_numpy(grad, w, m, v, rate)
            return
        if rate:   # the hook's own operation, in the parameter's dtype
            grad += rate * w
        # float16 storage, float32 arithmetic: what the GPU kernel does.
        w_acc, m_acc, v_acc = w.astype(acc), m.astype(acc), v.astype(acc)
        self._update_numpy(grad.astype(acc), w_acc, m_acc, v_acc)
        m[...], v[...], w[...] = m_acc, v_acc, w_acc

    def _update_numpy(self, grad, w, m, v, rate=None):
        """The update rule in NumPy, in place on w, m, v (all of one dtype).

        A large parameter is updated in cache-sized pieces on the rank's threads
        (pfn15/functions/_parallel.elementwise): its dozen passes then read and
        write memory once instead of a dozen times. The same bits.
        """
        _parallel.elementwise(lambda g, w_, m_, v_: self._update_pieces(g, w_, m_, v_, rate),
                              grad, w, m, v)

    def _update_pieces(self, grad, w, m, v, rate=None):
        hp = self.hyperparam
        if rate:   # the weight decay hook's g += rate * w, deferred to here
            grad += rate * w
        m *= hp.mu2
        m += (1 - hp.mu2) * grad * grad
        v *= hp.mu1
        if hp.alpha_sgd == 1:
            # Pure momentum SGD: the same operations as MomentumSGDRule, so
            # the result is bit-identical to it.
            v -= hp.lr * grad
        else:
            coef = (1 - hp.alpha_sgd) * hp.lr_rmsprop / (numpy.sqrt(m) + hp.eps)
            coef += hp.lr * hp.alpha_sgd
            v -= coef * grad
        w += v

    def update_core_gpu(self, param):
        grad = param.grad
        if grad is None:
            return
        KERNEL.gpu()(*KERNEL.args(grad=grad, param=param.data, m=self.state['m'],
                                  v=self.state['v'], **kernel_scalars(self.hyperparam)))


class RMSpropWarmup(optimizer.GradientMethod):

    """RMSprop warm-up optimizer (Akiba, Suzuki, Fukuda 2017).

    Args:
        lr (float): Learning rate of the SGD part (the schedule drives it).
        lr_rmsprop (float): Learning rate of the RMSprop part.
        mu1 (float): Momentum.
        mu2 (float): Decay of the running mean of squared gradients.
        eps (float): Added to sqrt(m) for stability.
        alpha_sgd (float): Mixing weight, 0 = RMSprop (with momentum), 1 = momentum SGD.
    """

    def __init__(self, lr=_default_hyperparam.lr,
                 lr_rmsprop=_default_hyperparam.lr_rmsprop,
                 mu1=_default_hyperparam.mu1, mu2=_default_hyperparam.mu2,
                 eps=_default_hyperparam.eps,
                 alpha_sgd=_default_hyperparam.alpha_sgd):
        super(RMSpropWarmup, self).__init__()
        self.hyperparam.lr = lr
        self.hyperparam.lr_rmsprop = lr_rmsprop
        self.hyperparam.mu1 = mu1
        self.hyperparam.mu2 = mu2
        self.hyperparam.eps = eps
        self.hyperparam.alpha_sgd = alpha_sgd

    lr = optimizer.HyperparameterProxy('lr')
    alpha_sgd = optimizer.HyperparameterProxy('alpha_sgd')
    lr_rmsprop = optimizer.HyperparameterProxy('lr_rmsprop')
    mu1 = optimizer.HyperparameterProxy('mu1')
    mu2 = optimizer.HyperparameterProxy('mu2')
    eps = optimizer.HyperparameterProxy('eps')

    def create_update_rule(self):
        return RMSpropWarmupRule(self.hyperparam)
