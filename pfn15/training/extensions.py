"""Trainer extensions of the recipe: the schedule driver, BN statistics before
evaluation, throughput, non-finite checks, preemption, and the final summary."""
import json
import os
import signal
import time

import numpy

import chainer
from chainer.training import extension
from chainer.training import triggers

from pfn15 import bn
from pfn15 import schedules


class ScheduleDriver(extension.Extension):

    """Sets `lr` (and `alpha_sgd` where the optimizer has it) every iteration.

    The schedules are functions of the fractional epoch, computed as samples
    seen by all workers / training-set size: the same number on every rank
    and for every worker count (an accumulating run of the 32k config on 8
    workers sees the same epochs as the 1,024-worker run).
    It reports the values used by the iteration that just ran as `lr` and
    `alpha_sgd`.
    """

    trigger = 1, 'iteration'
    priority = extension.PRIORITY_WRITER + 2   # report before LogReport reads

    def __init__(self, cfg, train_size):
        self.schedule = cfg.schedule
        self.base_lr = cfg.base_lr()
        self.global_batch = cfg.batch.global_
        self.train_size = train_size

    def epoch(self, iteration):
        return iteration * self.global_batch / self.train_size

    def initialize(self, trainer):
        self._set(trainer.updater.get_optimizer('main'), trainer.updater.iteration)

    def __call__(self, trainer):
        optimizer = trainer.updater.get_optimizer('main')
        trainer.observation['lr'] = optimizer.lr
        if hasattr(optimizer, 'alpha_sgd'):   # the multi-node wrapper forwards attributes
            trainer.observation['alpha_sgd'] = optimizer.alpha_sgd
        self._set(optimizer, trainer.updater.iteration)

    def _set(self, optimizer, iteration):
        e = self.epoch(iteration)
        optimizer.lr = schedules.learning_rate(e, self.schedule, self.base_lr)
        if hasattr(optimizer, 'alpha_sgd'):
            optimizer.alpha_sgd = schedules.alpha_sgd(
                e, self.schedule.alpha_center, self.schedule.alpha_period)


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


class EvaluationTrigger(object):

    """Every `period` epochs, and once more at the last iteration.

    So a run whose length is not a multiple of the period still ends with a
    validation result in its log and summary.
    """

    def __init__(self, period_epochs, stop_trigger):
        self.interval = triggers.IntervalTrigger(period_epochs, 'epoch') \
            if period_epochs > 0 else None
        self.stop_trigger = stop_trigger

    def __call__(self, trainer):
        fired = self.interval(trainer) if self.interval is not None else False
        return fired or self.stop_trigger.get_training_length_reached(trainer)

    def serialize(self, serializer):
        if self.interval is not None:
            self.interval.serialize(serializer['interval'])


class StopTrigger(object):

    """Stop after `iterations` (if > 0) else after `epochs` (fractional allowed)."""

    def __init__(self, epochs, iterations=0):
        self.epochs = epochs
        self.iterations = iterations

    def get_training_length_reached(self, trainer):
        u = trainer.updater
        if self.iterations > 0:
            return u.iteration >= self.iterations
        return u.epoch_detail >= self.epochs - 1e-12

    def get_training_length(self):
        return (self.iterations, 'iteration') if self.iterations > 0 else (self.epochs, 'epoch')

    def __call__(self, trainer):
        return self.get_training_length_reached(trainer)


class Throughput(extension.Extension):

    """Reports `images/s`: global images per second of wall time between iterations."""

    trigger = 1, 'iteration'
    priority = extension.PRIORITY_WRITER + 2

    def __init__(self, global_batch):
        self.global_batch = global_batch
        self._last = None

    def __call__(self, trainer):
        now = time.perf_counter()
        if self._last is not None:
            trainer.observation['images/s'] = self.global_batch / max(now - self._last, 1e-9)
        self._last = now


class NonFiniteError(RuntimeError):
    """A non-finite loss or gradient: training stops before it reaches the weights."""


class FiniteGradientCheck(object):

    """Optimizer hook (before the update, after the all-reduce) that stops on NaN/inf.

    The gradients are all-reduced by then, so every rank sees the same
    verdict and stops together; the weights and the last checkpoint stay good.
    One reduction to a scalar keeps the cost to one device sync per iteration.
    """

    name = 'FiniteGradientCheck'
    call_for_each_param = False
    timing = 'pre'

    def __call__(self, optimizer):
        xp = None
        total = 0.0
        for param in optimizer.target.params():
            g = param.grad
            if g is None:
                continue
            xp = chainer.backend.get_array_module(g)
            total = total + g.sum(dtype=numpy.float64)
        if xp is not None and not bool(xp.isfinite(total)):
            raise NonFiniteError(
                'non-finite gradient at iteration %d (loss or gradients became NaN/inf); '
                'stopped before updating the weights -- lower the learning rate or check '
                'the data' % (optimizer.t + 1))


class Preempted(Exception):
    """Raised after a signal-triggered checkpoint: the job should be requeued."""


class PreemptionHandler(extension.Extension):

    """On SIGTERM or SIGUSR1: finish the iteration, checkpoint on every rank, stop.

    Schedulers send the signal to some or all ranks; one all-reduce of a flag
    per iteration lets every rank agree to stop after the same iteration.
    """

    trigger = 1, 'iteration'
    priority = extension.PRIORITY_READER - 60    # after everything else, the checkpoint included

    def __init__(self, comm, checkpointer, signals=(signal.SIGTERM, signal.SIGUSR1)):
        self.comm = comm
        self.checkpointer = checkpointer
        self.received = None
        for s in signals:
            signal.signal(s, self._on_signal)

    def _on_signal(self, signum, frame):
        self.received = signum

    def __call__(self, trainer):
        flag = numpy.array([1.0 if self.received is not None else 0.0], numpy.float32)
        if float(self.comm.allreduce(flag)[0]) > 0:
            self.checkpointer.save(trainer)
            raise Preempted('signal received: checkpoint written at iteration %d'
                            % trainer.updater.iteration)


def write_summary(path, summary):
    """Write summary.json atomically (outside checks read it)."""
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write('\n')
    os.replace(tmp, path)
