"""Pure functions of the fractional epoch: learning-rate and mixing schedules.

No Chainer import: these are the recipe's math, tested against hand-computed
values. `pfn15.training.recipe.ScheduleDriver` evaluates them every
iteration at epoch = (samples seen by all workers) / (training set size).
Batch-size control (a growing global batch) is here too, as pure functions of
the iteration.
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


def poly(epoch, base_lr, total_epochs, power=2.0):
    """Polynomial decay (You et al., LARS): base_lr x (1 - epoch / total_epochs)^power, 0 after."""
    if total_epochs <= 0:
        raise ValueError('poly decay needs total_epochs > 0')
    if epoch >= total_epochs:
        return 0.0
    return base_lr * (1.0 - epoch / total_epochs) ** power


def learning_rate(epoch, schedule, base_lr, total_epochs=None):
    """The rate a `ScheduleConfig` asks for at `epoch` (base_lr from the batch size).

    `total_epochs` (the run's length) is needed by 'poly' only.
    """
    if schedule.lr == 'constant':
        lr = base_lr
    elif schedule.lr == 'poly':
        if total_epochs is None:
            raise ValueError("schedule.lr 'poly' needs the run's total_epochs")
        lr = poly(epoch, base_lr, total_epochs, schedule.power)
    else:  # slow_start and step share the piecewise-constant form
        lr = step(epoch, base_lr, schedule.boundaries, schedule.factors)
    return linear_warmup(epoch, lr, schedule.warmup_epochs, schedule.warmup_start_lr)


# ---------------------------------------------------------- batch-size control
#
# Mikami et al. (Sony): the global batch grows during training. The schedule
# is a list of (epoch, global_batch) pairs, epochs increasing from 0: from
# that epoch on, updates use that batch. A switch takes effect at the first
# update boundary at or after its epoch (an update is never split), so epochs
# are counted from the samples actually seen: a sum over the phases, not
# iteration x batch. All three functions are pure functions of the iteration
# (the same on every rank, nothing to checkpoint).

def batch_size(epoch, batch_schedule):
    """The global batch the schedule asks for at `epoch`."""
    size = batch_schedule[0][1]
    for e, b in batch_schedule:
        if epoch + 1e-9 >= e:
            size = b
    return int(size)


def _batch_phases(train_size, batch_schedule):
    """Yields (first iteration, samples seen before it, batch, iterations or None for the last)."""
    iteration, samples = 0, 0
    for i, (_, b) in enumerate(batch_schedule):
        b = int(b)
        if i + 1 == len(batch_schedule):
            yield iteration, samples, b, None
            return
        until = batch_schedule[i + 1][0] * train_size   # samples at the next switch
        n = max(0, int(math.ceil((until - samples) / b - 1e-9)))
        yield iteration, samples, b, n
        iteration += n
        samples += n * b


def batch_epoch_at(iteration, train_size, batch_schedule):
    """Epochs done (samples seen / train_size) after `iteration` updates."""
    for it0, s0, b, n in _batch_phases(train_size, batch_schedule):
        if n is None or iteration <= it0 + n:
            return (s0 + (iteration - it0) * b) / train_size


def batch_samples_at(iteration, train_size, batch_schedule):
    """Samples taken (a whole number) by the first `iteration` updates."""
    for it0, s0, b, n in _batch_phases(train_size, batch_schedule):
        if n is None or iteration <= it0 + n:
            return s0 + (iteration - it0) * b


def batch_at_iteration(iteration, train_size, batch_schedule):
    """The global batch of the update that follows `iteration` done updates."""
    for it0, s0, b, n in _batch_phases(train_size, batch_schedule):
        if n is None or iteration < it0 + n:
            return b


def batch_iterations_for(epochs, train_size, batch_schedule):
    """The first iteration at which `epochs` epochs are complete."""
    target = epochs * train_size
    for it0, s0, b, n in _batch_phases(train_size, batch_schedule):
        if n is None or s0 + n * b >= target - 1e-9:
            return it0 + max(0, int(math.ceil((target - s0) / b - 1e-9)))
