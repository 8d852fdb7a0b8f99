"""Trainer extensions of the recipe: the schedule driver, BN statistics before
evaluation, throughput, non-finite checks, and the final summary. The
per-iteration collective checks (stop signals, data health) are in checks.py."""
import json
import math
import os
import time

import numpy

import chainer
from chainer.training import extension

from pfn15 import bn
from pfn15 import optimizers
from pfn15 import schedules
from pfn15.data import order


class ScheduleDriver(extension.Extension):

    """Sets `lr` and the optimizer's other scheduled hyperparameters every iteration.

    Which ones, and their schedules, come from the optimizer's registry entry
    (pfn15.optimizers: `scheduled`, e.g. RMSprop warm-up's `alpha_sgd`).

    The schedules are functions of the fractional epoch, computed as samples
    seen by all workers / training-set size: the same number on every rank
    and for every worker count (an accumulating run of the 32k config on 8
    workers sees the same epochs as the 1,024-worker run).
    It reports the values used by the iteration that just ran under their
    names (and `global_batch` under batch-size control).

    Batch-size control (batch.schedule): before each update it sets the
    updater's microbatches k = batch / (per_worker x workers) for the batch
    the schedule asks for, and the linear-scaling base rate follows that
    batch (lr_per_256 x batch / 256); `global_epochs` counts the samples
    actually seen.
    """

    trigger = 1, 'iteration'
    priority = extension.PRIORITY_WRITER + 2   # report before LogReport reads

    def __init__(self, cfg, global_epochs, workers=1):
        self.cfg = cfg
        self.scheduled = optimizers.entry(cfg.optimizer.name).scheduled
        self.schedule = cfg.schedule
        self.lr_per_256 = cfg.schedule.lr_per_256
        self.total_epochs = cfg.train.epochs     # for schedule.lr 'poly'
        self.epochs = global_epochs
        self.per_update = cfg.batch.per_worker * workers   # samples of one microbatch round
        self.batch_control = bool(cfg.batch.schedule)

    def initialize(self, trainer):
        self._set(trainer.updater.get_optimizer('main'), trainer.updater.iteration)
        self._set_batch(trainer.updater)

    def __call__(self, trainer):
        optimizer = trainer.updater.get_optimizer('main')
        trainer.observation['lr'] = optimizer.lr
        for name in self.scheduled:   # the multi-node wrapper forwards attributes
            trainer.observation[name] = getattr(optimizer, name)
        if self.batch_control:
            trainer.observation['global_batch'] = \
                trainer.updater.microbatches * self.per_update
        self._set(optimizer, trainer.updater.iteration)
        self._set_batch(trainer.updater)

    def _set_batch(self, updater):
        if self.batch_control:
            updater.microbatches = self.epochs.batch(updater.iteration) // self.per_update

    def _set(self, optimizer, iteration):
        e = self.epochs.at(iteration)
        base_lr = self.lr_per_256 * self.epochs.batch(iteration) / 256.0
        optimizer.lr = schedules.learning_rate(e, self.schedule, base_lr, self.total_epochs)
        for name, schedule in self.scheduled.items():
            setattr(optimizer, name, schedule(e, self.cfg))


class AllreduceBNStatistics(extension.Extension):

    """Average the last-minibatch BN statistics over all workers before evaluation.

    Runs with the evaluator's trigger at a higher priority, so the evaluator
    sees the averaged statistics (Akiba et al.: BN without moving averages).
    """

    priority = extension.PRIORITY_WRITER + 1

    def __init__(self, model, comm, trigger):
        self.model = model
        self.comm = comm
        self.trigger = trigger

    def __call__(self, trainer=None):
        bn.allreduce_statistics(self.model, self.comm)


class GlobalEpochs(order.BatchPlan):

    """Epochs as the whole job counts them: samples seen by all workers / training-set size.

    The global sample order (pfn15.data.order) takes the positions of one
    stream of per-epoch permutations, so this is also exactly how far into
    that stream the run is. Everything that must happen on all ranks at once
    (evaluation, stopping, the log's epoch) counts with this.
    With a batch schedule (batch-size control) the global batch changes
    between updates, and epochs are the sum over its phases
    (pfn15.schedules.batch_epoch_at). The global batch and the samples per
    update come from `order.BatchPlan`, the same plan the data order follows.
    """

    def at(self, iteration):
        if self.batch_schedule:
            return schedules.batch_epoch_at(iteration, self.train_size, self.batch_schedule)
        return iteration * self.global_batch / self.train_size

    def iterations_for(self, epochs):
        """The first iteration at which `epochs` epochs are complete."""
        if self.batch_schedule:
            return schedules.batch_iterations_for(epochs, self.train_size, self.batch_schedule)
        return int(math.ceil(epochs * self.train_size / self.global_batch - 1e-9))


class StopTrigger(object):

    """Stop after `iterations` (if > 0) else once `epochs` global epochs are done."""

    def __init__(self, epochs, iterations, global_epochs):
        self.iterations = iterations if iterations > 0 else global_epochs.iterations_for(epochs)

    def get_training_length(self):
        return self.iterations, 'iteration'

    def __call__(self, trainer):
        return trainer.updater.iteration >= self.iterations


class EpochTrigger(object):

    """Fires every `period` global epochs, and at the last iteration.

    Stateless (a function of the iteration), so it can be shared and needs no
    checkpointing; a run whose length is not a multiple of the period still
    ends with a validation result.
    """

    def __init__(self, period, global_epochs, stop_trigger):
        self.period = period
        self.epochs = global_epochs
        self.stop = stop_trigger

    def __call__(self, trainer):
        it = trainer.updater.iteration
        if self.stop(trainer):
            return True
        if self.period <= 0:
            return False
        return (math.floor(self.epochs.at(it) / self.period + 1e-9)
                > math.floor(self.epochs.at(it - 1) / self.period + 1e-9))


class Throughput(extension.Extension):

    """Reports `images/s`: global images per second of wall time between iterations
    (the batch of the iteration that just ran, which grows under batch-size control)."""

    trigger = 1, 'iteration'
    priority = extension.PRIORITY_WRITER + 2

    def __init__(self, global_epochs):
        self.epochs = global_epochs
        self._last = None

    def __call__(self, trainer):
        now = time.perf_counter()
        if self._last is not None:
            batch = self.epochs.batch(trainer.updater.iteration - 1)
            trainer.observation['images/s'] = batch / max(now - self._last, 1e-9)
        self._last = now


class BadImageCount(extension.Extension):

    """Reports `bad_images`: corrupt images skipped so far, summed over all ranks.

    A collective, so it runs on every rank with a global trigger (the log's).
    """

    priority = extension.PRIORITY_WRITER + 2

    def __init__(self, comm, trigger):
        self.comm = comm
        self.trigger = trigger

    def __call__(self, trainer):
        from pfn15.data import transforms
        mine = numpy.array([transforms.bad_image_count()], numpy.float64)
        trainer.observation['bad_images'] = float(self.comm.allreduce(mine)[0])


class NonFiniteError(RuntimeError):
    """A non-finite loss or gradient: training stops before it reaches the weights."""


class FiniteGradientCheck(object):

    """Optimizer hook (before the update, after the all-reduce) that stops on NaN/inf.

    The gradients are all-reduced by then, so every rank sees the same
    verdict and stops together; the weights and the last checkpoint stay good.
    One reduction to a scalar keeps the cost to one device sync per iteration.
    The sums run in float32 (float64 gradients: float64; a float64 sum of
    ResNet-50's float32 gradients cost 20 ms of a 2.5 s CPU step, float32 6 ms).
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
        xp = chainer.backend.get_array_module(grads[0])
        total = 0.0
        with numpy.errstate(over='ignore', invalid='ignore'):   # the verdict says it
            for g in grads:   # float16 sums in float32 (its 65504 is easily passed)
                total = total + g.sum(dtype=numpy.promote_types(g.dtype, numpy.float32))
        if bool(xp.isfinite(total)) or all(bool(xp.isfinite(g).all()) for g in grads):
            return
        raise NonFiniteError(
            'non-finite gradient at iteration %d (loss or gradients became NaN/inf); '
            'stopped before updating the weights -- lower the learning rate or check '
            'the data' % (optimizer.t + 1))


def write_summary(path, summary):
    """Write summary.json atomically (outside checks read it)."""
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write('\n')
    os.replace(tmp, path)
