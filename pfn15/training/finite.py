"""The stop on a non-finite gradient: an optimizer hook after the all-reduce,
before the update, so every rank stops together and the weights stay good."""
import numpy

import chainer

from pfn15 import errors
from pfn15.functions import _parallel
from pfn15.optimizers import cpu_update

NonFiniteError = errors.NonFiniteError   # exit 3


class FiniteGradientCheck(object):

    """Optimizer hook (before the update, after the all-reduce) that stops on NaN/inf.

    The gradients are all-reduced by then, so every rank sees the same
    verdict and stops together; the weights and the last checkpoint stay good.
    One reduction to a scalar keeps the cost to one device sync per iteration.
    The sums run in float32 (float64 gradients: float64), at a third of a
    float64 sum's cost on CPU (docs/performance.md).
    NaN and inf survive any sum, but a sum of huge finite values can overflow
    to inf, so a non-finite total is confirmed element by element before stopping.
    """

    name = 'FiniteGradientCheck'
    call_for_each_param = False
    timing = 'pre'

    def __call__(self, optimizer):
        grads = [param.grad for param in optimizer.target.params()
                 if param.grad is not None]
        if not grads:
            return
        verdict = cpu_update.all_finite(grads)   # exact, on the OpenMP threads
        if verdict is True:
            return
        xp = chainer.backend.get_array_module(grads[0])

        def total_of(lo, hi):
            total = 0.0
            with numpy.errstate(over='ignore', invalid='ignore'):   # the verdict says it
                for g in grads[lo:hi]:   # float16 sums in float32 (its 65504 is easily passed)
                    total = total + g.sum(dtype=numpy.promote_types(g.dtype, numpy.float32))
            return total
        if xp is numpy:   # the arrays shared out over the rank's threads
            nbytes = sum(g.nbytes for g in grads)
            with numpy.errstate(over='ignore', invalid='ignore'):
                total = sum(_parallel.over_ranges(total_of, len(grads), nbytes))
        else:
            total = total_of(0, len(grads))
        if bool(xp.isfinite(total)) or all(bool(xp.isfinite(g).all()) for g in grads):
            return
        raise NonFiniteError(
            'non-finite gradient at iteration %d (loss or gradients became NaN/inf); '
            'stopped before updating the weights -- lower the learning rate or check '
            'the data' % (optimizer.t + 1))
