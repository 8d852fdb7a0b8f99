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

Precision: the norms are accumulated in float64 and the local rate and the
update computed in kernels.compute_dtype of the parameter -- float32 for
float16 parameters, whose own range would overflow ||w|| above 256 (a sum of
squares above 65504) and flush ||g|| below about 2.4e-4 to zero. The GPU
kernels below do the same; only the results are stored in the parameter's
dtype.
"""
import numpy

import chainer
from chainer.backends import cuda
from chainer import optimizer

from pfn15.optimizers import kernels

# The GPU kernels. Each text is also compiled for the host and checked against
# update_core_cpu (tests/test_kernels_host.py), and compiled with NVRTC for
# every architecture (tests/test_kernels_nvrtc.py).
# ||x|| in P, the squares summed in double: no float16/float32 overflow or
# underflow, and a result that does not depend on the order of the sum, so the
# CPU rule (NumPy's sum order) and the GPU (a tree) get the same norm.
NORM_KERNEL = kernels.Reduction(
    'T x', 'P y', '(double)x * (double)x', 'a + b', 'y = (P)sqrt(a)', '0',
    'pfn15_lars_norm', 'double')
# The local rate from the two norms (0-d arrays: it stays on the device, no host sync).
LOCAL_RATE_KERNEL = kernels.Elementwise(
    'P w_norm, P g_norm, P trust, P weight_decay, P eps',
    'P local',
    '''
    local = (w_norm > 0 && g_norm > 0)
            ? trust * w_norm / (g_norm + weight_decay * w_norm + eps)
            : (P)1;
    ''',
    'pfn15_lars_local_rate')
# The update: one fused pass over the parameter (reads grad, param, v once).
UPDATE_KERNEL = kernels.Elementwise(
    'T grad, P lr, P local, P momentum, P weight_decay',
    'T param, T v',
    '''
    P w = (P)param;
    P v_new = momentum * (P)v - lr * local * ((P)grad + weight_decay * w);
    v = (T)v_new;
    param = (T)(w + v_new);
    ''',
    'pfn15_lars')


_default_hyperparam = optimizer.Hyperparameter()
_default_hyperparam.lr = 0.1
_default_hyperparam.momentum = 0.9
_default_hyperparam.weight_decay = 0.0
_default_hyperparam.trust = 0.001
_default_hyperparam.eps = 0.0


def norm(x):
    """||x||, the squares summed in float64 (as NORM_KERNEL sums them)."""
    return numpy.sqrt(numpy.sum(numpy.square(x.ravel(), dtype=numpy.float64)))


def local_rate(w_norm, g_norm, trust, weight_decay, eps):
    """trust x ||w|| / (||g|| + wd x ||w|| + eps), or 1 where a norm is zero.

    Floats or NumPy scalars of one dtype (then the arithmetic is in that dtype).
    """
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
        acc = kernels.compute_dtype(w.dtype)
        # The local rate in `acc` arithmetic, as LOCAL_RATE_KERNEL computes it.
        p = acc.type
        if self.lars:
            local = p(local_rate(p(norm(w)), p(norm(grad)),
                                 p(hp.trust), p(hp.weight_decay), p(hp.eps)))
        else:
            local = p(1)
        self.last_local_lr = float(local)
        v = self.state['v']
        if acc == w.dtype:
            self._update_numpy(grad, w, v, local)
            return
        # float16 storage, float32 arithmetic: what the GPU kernel does.
        w_acc, v_acc = w.astype(acc), v.astype(acc)
        self._update_numpy(grad.astype(acc), w_acc, v_acc, local)
        v[...], w[...] = v_acc, w_acc

    def _update_numpy(self, grad, w, v, local):
        """The update rule in NumPy, in place on w and v (all of one dtype)."""
        hp = self.hyperparam
        d = grad + hp.weight_decay * w if hp.weight_decay else grad
        v *= hp.momentum
        v -= (w.dtype.type(hp.lr) * local) * d
        w += v

    def update_core_gpu(self, param):
        grad = param.grad
        if grad is None:
            return
        hp = self.hyperparam
        w = param.data
        xp = cuda.cupy
        acc = kernels.compute_dtype(w.dtype)
        if self.lars:
            w_norm = NORM_KERNEL.gpu()(w, xp.empty((), dtype=acc))
            g_norm = NORM_KERNEL.gpu()(grad, xp.empty((), dtype=acc))
            local = LOCAL_RATE_KERNEL.gpu()(
                w_norm, g_norm, *[kernels.scalar(x, acc)
                                  for x in (hp.trust, hp.weight_decay, hp.eps)])
        else:
            local = kernels.scalar(1, acc)
        UPDATE_KERNEL.gpu()(grad, kernels.scalar(hp.lr, acc), local,
                            kernels.scalar(hp.momentum, acc),
                            kernels.scalar(hp.weight_decay, acc), w, self.state['v'])


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
