"""Pure functions of the fractional epoch: learning-rate and mixing schedules.

No Chainer import: these are the recipe's math, tested against hand-computed
values. `pfn15.training.extensions.ScheduleDriver` evaluates them every
iteration at epoch = (samples seen by all workers) / (training set size).
"""
import bisect
import math


def alpha_sgd(epoch, center=10.0, period=5.0):
    """RMSprop -> SGD mixing weight of Akiba et al.'s RMSprop warm-up.

    0.5 exp(2 (e - c) / p) before the center, then linear with the same slope
    (1/p) until it reaches exactly 1 at c + p/2, then 1. Continuous with a
    continuous slope at c; always within [0, 1]; non-decreasing.
    """
    if epoch < center:
        return 0.5 * math.exp(2.0 * (epoch - center) / period)
    if epoch < center + period / 2.0:
        return 0.5 + (epoch - center) / period
    return 1.0


def step(epoch, base_lr, boundaries, factors):
    """base_lr x factors[i], where i counts the boundaries (epochs) passed."""
    if len(factors) != len(boundaries) + 1:
        raise ValueError('factors needs one more entry than boundaries')
    return base_lr * factors[bisect.bisect_right(list(boundaries), epoch)]


def slow_start(epoch, base_lr, boundaries=(40, 70, 85), factors=(0.5, 0.075, 0.01, 0.001)):
    """Akiba et al.'s slow-start schedule: a long first phase at half the base rate."""
    return step(epoch, base_lr, boundaries, factors)


def linear_warmup(epoch, target_lr, warmup_epochs, start_lr):
    """Goyal et al.'s gradual warm-up: start_lr rising linearly to target_lr."""
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return target_lr
    return start_lr + (target_lr - start_lr) * epoch / warmup_epochs


def learning_rate(epoch, schedule, base_lr):
    """The rate a `ScheduleConfig` asks for at `epoch` (base_lr from the batch size)."""
    if schedule.lr == 'constant':
        lr = base_lr
    else:  # slow_start and step share the piecewise-constant form
        lr = step(epoch, base_lr, schedule.boundaries, schedule.factors)
    return linear_warmup(epoch, lr, schedule.warmup_epochs, schedule.warmup_start_lr)
