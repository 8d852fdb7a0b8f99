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

Precision: the norms and the local rate are computed in float64, the update
in kernels.compute_dtype of the parameter -- float32 for
float16 parameters, whose own range would overflow ||w|| above 256 (a sum of
squares above 65504) and flush ||g|| below about 2.4e-4 to zero. The GPU
kernels below do the same; only the results are stored in the parameter's
dtype.
"""
import numpy

import chainer
from chainer.backends import cuda
from chainer import optimizer

from pfn15.functions import _parallel
from pfn15.optimizers import cpu_update, kernels

# The GPU kernels. Each text is also compiled for the host and checked against
# update_core_cpu (tests/kernels/test_kernels_host.py), and compiled with NVRTC for
# every architecture (tests/kernels/test_kernels_nvrtc.py). The norms come from `norm`
# below, run by CuPy's own (tested) ufuncs and reductions.
# The local rate from the two float64 norms, in float64, as update_core_cpu
# computes it with Python floats (0-d arrays: no host sync).
LOCAL_RATE_KERNEL = kernels.Elementwise(
    'float64 w_norm, float64 g_norm, float64 trust, float64 weight_decay, float64 eps',
    'float64 local',
    '''
    local = (w_norm > 0 && g_norm > 0)
            ? trust * w_norm / (g_norm + weight_decay * w_norm + eps)
            : 1.0;
    ''',
    'pfn15_lars_local_rate',
    '')
# The update: one fused pass over the parameter (reads grad, param, v once).
UPDATE_KERNEL = kernels.Elementwise(
    'T grad, float64 lr, float64 local, float64 momentum, float64 weight_decay',
    'T param, T v',
    '''
    typedef pfn15_compute<T>::type P;
    P w = (P)param;
    P v_new = (P)momentum * (P)v - (P)lr * (P)local * ((P)grad + (P)weight_decay * w);
    v = (T)v_new;
    param = (T)(w + v_new);
    ''',
    'pfn15_lars',
    kernels.PREAMBLE)


# A parameter LARS skips (BN, bias) gets its local rate 1 as a scalar.
KERNELS = (
    kernels.KernelCase(UPDATE_KERNEL, arrays=('grad', 'param', 'v'), broadcast=('local',)),
    kernels.KernelCase(UPDATE_KERNEL, arrays=('grad', 'param', 'v'), variant='local-scalar'),
    kernels.KernelCase(LOCAL_RATE_KERNEL, arrays=('local',), broadcast=('w_norm', 'g_norm'),
                       dtypes=('float64',)),
)


def build(opt_cfg, section, model, lr):
    """LARS from `optimizer.*` and `optimizer.lars.*`, set up on `model`.

    Its weight decay is part of the rule (it enters the local rate), set per
    parameter; BN/bias parameters get local rate 1 where
    optimizer.lars.skip_bn_and_bias says so.
    """
    from pfn15 import optimizers
    opt = LARS(lr=lr, momentum=opt_cfg.momentum, weight_decay=opt_cfg.weight_decay,
               trust=section.trust, eps=section.eps)
    opt.setup(model)
    for name, param in model.namedparams():
        if optimizers.is_bn_or_bias(name):
            param.update_rule.lars = not section.skip_bn_and_bias
            if not opt_cfg.decay_bn_and_bias:
                param.update_rule.hyperparam.weight_decay = 0.0
    return opt


_default_hyperparam = optimizer.Hyperparameter()
_default_hyperparam.lr = 0.1
_default_hyperparam.momentum = 0.9
_default_hyperparam.weight_decay = 0.0
_default_hyperparam.trust = 0.001
_default_hyperparam.eps = 0.0


def norm(x, xp=numpy):
    """||x|| in float64, the squares summed in float64 (NumPy arrays, or CuPy's with xp=cupy).

    float64 cannot overflow or underflow where float16 does, and the result does
    not depend on the order of the sum: NumPy's and CuPy's agree to rounding.
    A large NumPy array is summed in cache-sized float64 pieces on the rank's
    threads (no float64 copy of the whole array).
    """
    if xp is numpy and x.nbytes >= _parallel.MIN_BYTES and x.flags.c_contiguous:
        flat = x.reshape(-1)
        step = _parallel.chunk_rows(8)   # the piece's float64 copy fits the chunk

        def squares(lo, hi):
            total = 0.0
            for i in range(lo, hi, step):
                piece = flat[i:min(i + step, hi)].astype(numpy.float64)
                total += float(numpy.dot(piece, piece))
            return total
        return numpy.sqrt(numpy.float64(sum(_parallel.over_ranges(squares, flat.size,
                                                                  x.nbytes))))
    return xp.sqrt(xp.sum(xp.square(x, dtype=numpy.float64)))


def local_rate(w_norm, g_norm, trust, weight_decay, eps):
    """trust x ||w|| / (||g|| + wd x ||w|| + eps), or 1 where a norm is zero (host floats:
    float64, as LOCAL_RATE_KERNEL computes it)."""
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
        if self.lars:
            local = local_rate(float(norm(w)), float(norm(grad)),
                               hp.trust, hp.weight_decay, hp.eps)
        else:
            local = 1.0
        self.last_local_lr = local
        acc = kernels.compute_dtype(w.dtype)
        v = self.state['v']
        if acc == w.dtype:
            p = w.dtype.type   # as _update_pieces rounds them
            if not cpu_update.lars(grad, w, v, hp.weight_decay, hp.momentum,
                                   p(hp.lr) * p(local)):
                self._update_numpy(grad, w, v, local)
            return
        # float16 storage, float32 arithmetic: what the GPU kernel does.
        w_acc, v_acc = w.astype(acc), v.astype(acc)
        self._update_numpy(grad.astype(acc), w_acc, v_acc, local)
        v[...], w[...] = v_acc, w_acc

    def _update_numpy(self, grad, w, v, local):
        """The update rule in NumPy, in place on w and v (all of one dtype); a
        large parameter in cache-sized pieces on the rank's threads (the same
        bits: pfn15/functions/_parallel.elementwise)."""
        _parallel.elementwise(lambda g, w_, v_: self._update_pieces(g, w_, v_, local),
                              grad, w, v)

    def _update_pieces(self, grad, w, v, local):
        hp = self.hyperparam
        d = grad + hp.weight_decay * w if hp.weight_decay else grad
        v *= hp.momentum
        p = w.dtype.type   # rounded to P as UPDATE_KERNEL rounds them
        v -= (p(hp.lr) * p(local)) * d
        w += v

    def update_core_gpu(self, param):
        grad = param.grad
        if grad is None:
            return
        hp = self.hyperparam
        w = param.data
        xp = cuda.cupy
        if self.lars:
            local = LOCAL_RATE_KERNEL.gpu()(norm(w, xp), norm(grad, xp),
                                            hp.trust, hp.weight_decay, hp.eps)
        else:
            local = 1.0
        UPDATE_KERNEL.gpu()(*UPDATE_KERNEL.args(
            grad=grad, lr=hp.lr, local=local, momentum=hp.momentum,
            weight_decay=hp.weight_decay, param=w, v=self.state['v']))


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
