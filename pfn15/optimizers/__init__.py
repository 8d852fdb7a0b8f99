"""Optimizers of the record recipes, and the factory that builds one from the config."""
import chainer
from chainer import optimizer_hooks

from pfn15.optimizers.lars import LARS, LARSRule  # noqa: F401
from pfn15.optimizers.rmsprop_warmup import RMSpropWarmup, RMSpropWarmupRule  # noqa: F401


def is_bn_or_bias(name):
    """True for BN gamma/beta and biases (named by Chainer's links)."""
    leaf = name.rsplit('/', 1)[-1]
    return leaf in ('b', 'gamma', 'beta')


def build(opt_cfg, model, lr):
    """The optimizer `opt_cfg` (an OptimizerConfig) names, set up on `model`.

    Weight decay is a per-parameter hook, so it composes with every rule and
    can leave BN and bias parameters out (optimizer.decay_bn_and_bias).
    LARS is the exception: its weight decay is part of the rule (it enters the
    local rate), set per parameter, and BN/bias parameters get local rate 1
    where optimizer.lars_skip_bn_and_bias says so.
    """
    if opt_cfg.name == 'lars':
        opt = LARS(lr=lr, momentum=opt_cfg.momentum, weight_decay=opt_cfg.weight_decay,
                   trust=opt_cfg.lars_trust, eps=opt_cfg.lars_eps)
        opt.setup(model)
        for name, param in model.namedparams():
            if is_bn_or_bias(name):
                param.update_rule.lars = not opt_cfg.lars_skip_bn_and_bias
                if not opt_cfg.decay_bn_and_bias:
                    param.update_rule.hyperparam.weight_decay = 0.0
        return opt
    if opt_cfg.name == 'rmsprop_warmup':
        opt = RMSpropWarmup(lr=lr, lr_rmsprop=opt_cfg.lr_rmsprop, mu1=opt_cfg.momentum,
                            mu2=opt_cfg.rmsprop_decay, eps=opt_cfg.eps)
    elif opt_cfg.name == 'momentum_sgd':
        opt = chainer.optimizers.MomentumSGD(lr=lr, momentum=opt_cfg.momentum)
    else:  # config validation lists the names; this guards a new one half-added
        raise ValueError('unknown optimizer %r' % opt_cfg.name)
    opt.setup(model)
    if opt_cfg.weight_decay > 0:
        for name, param in model.namedparams():
            if opt_cfg.decay_bn_and_bias or not is_bn_or_bias(name):
                param.update_rule.add_hook(optimizer_hooks.WeightDecay(opt_cfg.weight_decay))
    return opt
