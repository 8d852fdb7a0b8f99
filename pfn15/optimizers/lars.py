"""LARS: Layer-wise Adaptive Rate Scaling (You, Gitman, Ginsburg 2017; arXiv 1708.03888).

Each parameter array (a "layer") gets its own local rate, multiplied into
the global rate the schedule drives:

    local = trust * ||w|| / (||g|| + wd * ||w|| + eps)     (1 if ||w|| = 0 or ||g|| = 0)
    v     <- mu * v - lr * local * (g + wd * w)
    w     <- w + v

Weight decay lives inside the rule (it enters the local rate), so `build`
adds no WeightDecay hook for LARS. With `lars = False` on a parameter's rule
(BN gamma/beta and biases, where the config says so) the local rate is 1: the
rule is then momentum SGD with weight decay, exactly Chainer's MomentumSGD
when wd = 0.

Zero norms: a weight initialized to 0 (a zero-initialized BN gamma, a bias)
or a parameter without gradient signal would give 0/0 or a zero rate; the
local rate is 1 there instead, as in the MLPerf reference implementations,
so no NaN reaches the weights.
"""
import numpy

import chainer
from chainer.backends import cuda
from chainer import optimizer


_default_hyperparam = optimizer.Hyperparameter()
_default_hyperparam.lr = 0.1
_default_hyperparam.momentum = 0.9
_default_hyperparam.weight_decay = 0.0
_default_hyperparam.trust = 0.001
_default_hyperparam.eps = 0.0


def local_rate(w_norm, g_norm, trust, weight_decay, eps):
    """trust x ||w|| / (||g|| + wd x ||w|| + eps), or 1 where a norm is zero (host floats)."""
    if w_norm > 0 and g_norm > 0:
        return trust * w_norm / (g_norm + weight_decay * w_norm + eps)
    return 1.0


class LARSRule(optimizer.UpdateRule):

    """Update rule of LARS; see the module docstring.

    State: `v` (velocity). Attribute `lars` (default True): False makes the
    local rate 1 for this parameter (plain momentum SGD with weight decay).
    The local rate of the last update is kept as `last_local_lr` on CPU (for
    inspection and tests).
    """

    _kernel = None

    def __init__(self, parent_hyperparam=None, lr=None, momentum=None,
                 weight_decay=None, trust=None, eps=None, lars=True):
        super(LARSRule, self).__init__(parent_hyperparam or _default_hyperparam)
        for name, value in (('lr', lr), ('momentum', momentum),
                            ('weight_decay', weight_decay), ('trust', trust), ('eps', eps)):
            if value is not None:
                setattr(self.hyperparam, name, value)
        self.lars = lars
        self.last_local_lr = None

    def init_state(self, param):
        with chainer.using_device(param.device):
            self.state['v'] = param.device.xp.zeros_like(param.data)

    def update_core_cpu(self, param):
        grad = param.grad
        if grad is None:
            return
        hp = self.hyperparam
        w = param.data
        if self.lars:
            local = local_rate(float(numpy.linalg.norm(w.ravel())),
                               float(numpy.linalg.norm(grad.ravel())),
                               hp.trust, hp.weight_decay, hp.eps)
        else:
            local = 1.0
        self.last_local_lr = local
        d = grad + hp.weight_decay * w if hp.weight_decay else grad
        v = self.state['v']
        v *= hp.momentum
        v -= (hp.lr * local) * d
        w += v

    def update_core_gpu(self, param):
        grad = param.grad
        if grad is None:
            return
        hp = self.hyperparam
        w = param.data
        xp = cuda.cupy
        if self.lars:
            # The norms and the local rate stay on the device: no host sync.
            w_norm = xp.sqrt(xp.sum(w * w))
            g_norm = xp.sqrt(xp.sum(grad * grad))
            ok = (w_norm > 0) & (g_norm > 0)
            denom = xp.where(ok, g_norm + hp.weight_decay * w_norm + hp.eps, 1)
            local = xp.where(ok, hp.trust * w_norm / denom, 1).astype(w.dtype)
        else:
            local = xp.ones((), dtype=w.dtype)
        if LARSRule._kernel is None:
            # One fused pass over the parameter: reads grad, param, v once.
            LARSRule._kernel = cuda.elementwise(
                'T grad, T lr, T local, T momentum, T weight_decay',
                'T param, T v',
                '''v = momentum * v - lr * local * (grad + weight_decay * param);
                   param += v;''',
                'pfn15_lars')
        LARSRule._kernel(grad, hp.lr, local, hp.momentum, hp.weight_decay,
                         w, self.state['v'])


class LARS(optimizer.GradientMethod):

    """LARS optimizer (You et al. 2017) with momentum and weight decay inside.

    Args:
        lr (float): Global learning rate (the schedule drives it).
        momentum (float): Momentum.
        weight_decay (float): Weight decay, also in the local-rate denominator.
        trust (float): Trust coefficient (You et al.: about 0.001).
        eps (float): Added to the local-rate denominator.
    """

    def __init__(self, lr=_default_hyperparam.lr, momentum=_default_hyperparam.momentum,
                 weight_decay=_default_hyperparam.weight_decay,
                 trust=_default_hyperparam.trust, eps=_default_hyperparam.eps):
        super(LARS, self).__init__()
        self.hyperparam.lr = lr
        self.hyperparam.momentum = momentum
        self.hyperparam.weight_decay = weight_decay
        self.hyperparam.trust = trust
        self.hyperparam.eps = eps

    lr = optimizer.HyperparameterProxy('lr')
    momentum = optimizer.HyperparameterProxy('momentum')
    weight_decay = optimizer.HyperparameterProxy('weight_decay')
    trust = optimizer.HyperparameterProxy('trust')
    eps = optimizer.HyperparameterProxy('eps')

    def create_update_rule(self):
        return LARSRule(self.hyperparam)
