"""Momentum SGD: Chainer's own MomentumSGD (its kernel ships with Chainer, tested there)."""
import chainer

KERNELS = ()


def build(opt_cfg, section, model, lr):
    """chainer.optimizers.MomentumSGD set up on `model`, weight decay as a hook."""
    from pfn15 import optimizers
    opt = chainer.optimizers.MomentumSGD(lr=lr, momentum=opt_cfg.momentum)
    opt.setup(model)
    optimizers.add_weight_decay(opt, opt_cfg, model)
    return opt
