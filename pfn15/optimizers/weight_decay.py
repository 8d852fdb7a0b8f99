"""Weight decay as Chainer's per-parameter hook, which a rule may apply in its own pass.

Chainer's `WeightDecay` adds rate x param to the gradient in a pass of its
own before the update. On CPU a rule that updates in cache-sized pieces
(`fuses_weight_decay = True`) can do that addition on each piece instead, so
gradient and weights are read from memory once for both: the hook then
leaves it to the rule. Same operations in the same order, so the same bits.
"""
import numpy

from chainer import optimizer_hooks


class WeightDecay(optimizer_hooks.WeightDecay):
    """chainer.optimizer_hooks.WeightDecay; deferred to the rule where it fuses it."""

    def __call__(self, rule, param):
        if deferred_rate(rule, param) is None:
            super().__call__(rule, param)


def deferred_rate(rule, param):
    """The weight-decay rate `rule` must apply itself to `param` (None: the hook does).

    Only where nothing could observe the difference: a NumPy parameter without
    loss scaling, and the decay the last pre-update hook (any hook after it
    would see the decayed gradient)."""
    if not getattr(rule, 'fuses_weight_decay', False) or param._loss_scale is not None:
        return None
    if not isinstance(param.data, numpy.ndarray):
        return None
    hooks = list(rule._hookable._pre_update_hooks.values())
    if not hooks or not isinstance(hooks[-1], WeightDecay):
        return None
    return hooks[-1].rate
