"""Momentum SGD: Chainer's MomentumSGD, whose CPU update runs in cache-sized pieces.

    v     <- momentum * v - lr * g
    theta <- theta + v

The GPU update is Chainer's own kernel. On CPU the rule makes Chainer's
operations (and the weight decay's, pfn15/optimizers/weight_decay.py) on
pieces of the arrays over the rank's threads (pfn15/functions/_parallel.py):
the same bits as Chainer's MomentumSGD with its WeightDecay hook, with the
gradient, the weights and v read from memory once; for float32 the compiled
pass of cpu_update.c does the same on OpenMP threads.
"""
import chainer

from pfn15.functions import _parallel
from pfn15.optimizers import cpu_update, weight_decay

KERNELS = ()


class MomentumSGDRule(chainer.optimizers.momentum_sgd.MomentumSGDRule):

    fuses_weight_decay = True

    def update_core_cpu(self, param):
        grad = param.grad
        if grad is None:
            return
        rate = weight_decay.deferred_rate(self, param)
        hp = self.hyperparam
        if cpu_update.momentum_sgd(grad, param.data, self.state['v'], rate, hp.momentum,
                                   hp.lr):
            return

        def pieces(g, w, v):
            if rate:
                g += rate * w
            v *= hp.momentum
            v -= hp.lr * g
            w += v
        _parallel.elementwise(pieces, grad, param.data, self.state['v'])


class MomentumSGD(chainer.optimizers.MomentumSGD):
    """chainer.optimizers.MomentumSGD with pfn15's CPU rule."""

    def create_update_rule(self):
        return MomentumSGDRule(self.hyperparam)


def build(opt_cfg, section, model, lr):
    """MomentumSGD set up on `model`, weight decay as a hook."""
    from pfn15 import optimizers
    opt = MomentumSGD(lr=lr, momentum=opt_cfg.momentum)
    opt.setup(model)
    optimizers.add_weight_decay(opt, opt_cfg, model)
    return opt
