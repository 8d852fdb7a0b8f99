"""An updater that accumulates gradients over microbatches before the all-reduce.

The config names the global batch and the per-worker (BN) batch. With W
workers, each accumulates k = global / (per_worker x W) microbatches; with the
global sample order (pfn15.data.order) the k microbatches are exactly the BN
groups the 1,024-GPU run would spread over k workers, so `mpiexec -n 8` runs
the same optimization as the 1,024-GPU run sample for sample, only slower.
"""
import math
import time

import numpy

import chainer
from chainer import reporter as reporter_module
from chainer.dataset import convert
from chainer import training

from pfn15 import bn
from pfn15 import reduction
from pfn15.functions import _parallel
from pfn15.training import progress as progress_module


class AccumulatingUpdater(training.updaters.StandardUpdater):

    """StandardUpdater with k microbatches per update.

    Each microbatch's loss is divided by k before backward, so the summed
    gradient is the mean over the worker's k x per_worker samples; the
    multi-node optimizer then averages over workers: the gradient of the
    mean loss over the global batch.

    With `comm`, the observations (loss, accuracy, top5) are the means over
    all BN groups of the global batch (one small all-reduce per update), so
    the log does not depend on the worker count. With `average_bn_statistics`
    (BN without moving averages), each BN link's avg_mean/avg_var end the
    update as the mean of the k microbatches' statistics; the mean over
    workers follows before evaluation (pfn15.bn): the global batch's groups.
    With `plan` (the run's BatchPlan), epoch/epoch_detail count samples of the
    whole job.

    With `canonical` (comm.reduction=canonical, needs `comm`), every sum over
    the global batch's G BN groups -- the gradient, the BN statistics, the
    observations -- is the fixed tree of pfn15.reduction: each microbatch's
    unscaled gradient is one leaf, this worker's k leaves are summed into the
    tree's nodes as they come, the all-reduce finishes the same tree, and the
    sum is divided by G once. Every rank then holds the same bits on every
    worker count, and the BN statistics of the global batch leave each update
    already averaged over workers.

    `progress` (pfn15.training.progress) is told each microbatch, the
    gradient all-reduce and the optimizer's step (an optimizer hook: under
    ChainerMN's optimizer the step follows the all-reduce inside its update).
    """

    def __init__(self, iterator, optimizer, microbatches=1, device=None,
                 converter=convert.concat_examples, comm=None, plan=None,
                 average_bn_statistics=False, canonical=False, progress=None):
        super().__init__(iterator, optimizer, converter=converter, device=device)
        if microbatches < 1:
            raise ValueError('microbatches must be >= 1')
        self.microbatches = microbatches
        self.comm = comm
        self.plan = plan
        self.bn_links = bn.batch_norms(optimizer.target) if average_bn_statistics else []
        if canonical and comm is None:
            raise ValueError('the canonical reduction needs the communicator')
        self.canonical = canonical
        if canonical:
            from pfn15 import comm as comm_module
            self.grad_dtype = comm_module.allreduce_dtype(comm)   # float16: summed in float16
        self.progress = progress or progress_module.NONE
        if progress is not None:
            optimizer.add_hook(progress_module.UpdateStart(progress, self))
        self.update_seconds = 0.0   # time spent in updates (for images/s)
        self.update_durations = []  # this process's updates, seconds each (not checkpointed)
        # Each microbatch's data, forward and backward, seconds: the rest of an update
        # (all-reduce, optimizer) is paid once per update, whatever k is (pfn15.plan).
        self.microbatch_durations = []

    # Epochs of the whole job (samples / training-set size), not of a rank's iterator.
    @property
    def epoch_detail(self):
        if self.plan is None:
            return super().epoch_detail
        return self.plan.epochs_at(self.iteration)

    @property
    def previous_epoch_detail(self):
        if self.plan is None:
            return super().previous_epoch_detail
        return self.plan.epochs_at(self.iteration - 1) if self.iteration > 0 else None

    @property
    def epoch(self):
        if self.plan is None:
            return super().epoch
        return int(math.floor(self.epoch_detail + 1e-9))

    @property
    def is_new_epoch(self):
        if self.plan is None:
            return super().is_new_epoch
        prev = self.previous_epoch_detail
        return prev is not None and math.floor(prev + 1e-9) < self.epoch

    def update_core(self):
        start = time.perf_counter()
        iterator = self._iterators['main']
        optimizer = self._optimizers['main']
        model = optimizer.target
        k = self.microbatches
        if self.canonical:
            self._update_canonical(iterator, optimizer, model, k)
            took = time.perf_counter() - start
            self.update_seconds += took
            self.update_durations.append(took)
            return
        loss_scale = getattr(optimizer, '_loss_scale', None)

        model.cleargrads()
        summary = reporter_module.DictSummary()
        bn_sums = None
        for m in range(k):
            began = time.perf_counter()
            batch = iterator.next()
            self.progress.microbatch(self.iteration + 1, m + 1, k)
            x, t = self.converter(batch, self.input_device)
            observation = {}
            with reporter_module.report_scope(observation):
                loss = model(x, t)
            summary.add(observation)
            if k > 1 and self.bn_links:
                stats = [a for link in self.bn_links for a in (link.avg_mean, link.avg_var)]
                bn_sums = ([s.copy() for s in stats] if bn_sums is None
                           else [s + a for s, a in zip(bn_sums, stats)])
            if k > 1:
                loss = loss / k
            # Chainer adds into existing .grad: the microbatch gradients sum up.
            loss.backward(loss_scale=loss_scale)
            del loss
            self.microbatch_durations.append(time.perf_counter() - began)
        if bn_sums is not None:
            stats = [a for link in self.bn_links for a in (link.avg_mean, link.avg_var)]
            for a, s in zip(stats, bn_sums):
                a[...] = s / k
        chainer.reporter.report(self._global_mean(summary.compute_mean()))
        self.progress.gradient_allreduce(self.iteration + 1)
        optimizer.update()   # the multi-node optimizer all-reduces, then steps
        took = time.perf_counter() - start
        self.update_seconds += took
        self.update_durations.append(took)

    def _update_canonical(self, iterator, optimizer, model, k):
        """One update whose sums over the G groups follow pfn15.reduction's tree."""
        comm = self.comm
        actual = getattr(optimizer, 'actual_optimizer', optimizer)
        loss_scale = getattr(actual, '_loss_scale', None)
        groups = k * comm.size
        lo = comm.rank * k                       # group g is worker g // k's microbatch g % k
        acc = reduction.Accumulator(lo, lo + k, groups)
        layout = None
        # One group in all (one rank, one microbatch): its own gradients, statistics and
        # observations are the sums, as they stand -- nothing to pack, sum or divide.
        alone = groups == 1 and self.grad_dtype is None
        for m in range(k):
            began = time.perf_counter()
            batch = iterator.next()
            self.progress.microbatch(self.iteration + 1, m + 1, k)
            x, t = self.converter(batch, self.input_device)
            model.cleargrads()
            observation = {}
            with reporter_module.report_scope(observation):
                loss = model(x, t)
            # Unscaled: the leaf is this group's own gradient, whatever k is.
            loss.backward(loss_scale=loss_scale)
            del loss
            if not alone:
                leaf, layout = _pack(model, self.bn_links, observation, self.grad_dtype)
                acc.add(leaf)
            self.microbatch_durations.append(time.perf_counter() - began)
        self.progress.gradient_allreduce(self.iteration + 1)
        if alone:
            means = _observed(observation)
            for link in self.bn_links:
                setattr(link, bn.CANONICAL, True)
        else:
            total = self.canonical_allreduce(acc.nodes(), k, groups, layout.template)
            means = layout.unpack(total, groups, model, self.bn_links)
        chainer.reporter.report(means)
        actual.update()   # every rank: the same gradient bits, the same step

    def canonical_allreduce(self, partials, k, groups, template):
        """The tree's sum over every rank's groups (worker r holds groups [rk, (r+1)k))."""
        from pfn15 import comm as comm_module
        ranges = [(r * k, (r + 1) * k) for r in range(self.comm.size)]
        return comm_module.canonical_allreduce(self.comm, partials, ranges, groups, template)

    def _global_mean(self, means):
        """This worker's means over its k microbatches -> the means over all workers'
        groups (every group has per_worker samples, so that is the sample mean)."""
        if self.comm is None or self.comm.size == 1:
            return means
        keys = sorted(means)
        local = numpy.array([float(means[key]) for key in keys], numpy.float64)
        total = self.comm.mpi_comm.allreduce(local) / self.comm.size
        return dict(zip(keys, total.tolist()))

    def serialize(self, serializer):
        super().serialize(serializer)
        self.update_seconds = float(serializer('update_seconds', self.update_seconds))


class _Layout(object):
    """Where each gradient, BN statistic and observation sits in a leaf's buffers."""

    def __init__(self, params, n_bn, keys, template, where):
        self.params, self.n_bn, self.keys = params, n_bn, keys
        self.template, self.where = template, where   # where: [(buffer, start, stop)]

    def unpack(self, total, groups, model, bn_links):
        """Gradients and BN statistics: the sums / groups, in place; returns the
        observations' means (the sums / groups, as floats)."""
        for buf in total:   # in place, on the rank's threads: total is this update's own
            _divide_in_place(buf, groups)
        views = [total[b][s:e] for b, s, e in self.where]
        for param, v in zip(self.params, views):
            v = v.reshape(param.grad.shape)
            if v.dtype == param.grad.dtype:
                param.grad = v   # a view of the sum: no copy
            else:
                param.grad[...] = v
        stats = [a for link in bn_links for a in (link.avg_mean, link.avg_var)]
        for a, v in zip(stats, views[len(self.params):]):
            a[...] = v.reshape(a.shape)
        for link in bn_links:
            setattr(link, bn.CANONICAL, True)   # already the mean over all groups
        metrics = views[-1] if self.keys else []
        return dict(zip(self.keys, [float(x) for x in metrics]))


def _divide_in_place(buf, groups):
    """buf /= groups: the same bits as buf / groups (one true_divide per element)."""
    if isinstance(buf, numpy.ndarray):
        _parallel.elementwise(lambda piece: numpy.true_divide(piece, groups, out=piece), buf)
    else:
        buf /= groups


def _observed(observation):
    """One group's observations as the floats unpack() reports (their sums / 1)."""
    return {key: _as_float(value) for key, value in observation.items()}


def _as_float(value):
    """An observation (a Variable, a device or NumPy scalar) as a Python float."""
    return float(chainer.backend.CpuDevice().send(getattr(value, 'array', value)))


def _pack(model, bn_links, observation, grad_dtype=None):
    """(leaf, layout): one group's gradients (in `grad_dtype` if given), BN
    statistics and observations as one new 1-D buffer per dtype (the
    observations in float64)."""
    params = [p for _, p in sorted(model.namedparams()) if p.grad is not None]
    stats = [a for link in bn_links for a in (link.avg_mean, link.avg_var)]
    keys = sorted(observation)
    xp = chainer.backend.get_array_module(params[0].grad) if params else numpy
    pieces = [p.grad if grad_dtype is None else p.grad.astype(grad_dtype)
              for p in params] + stats
    if keys:
        pieces.append(numpy.array([_as_float(observation[key]) for key in keys],
                                  numpy.float64))
    dtypes = sorted({numpy.dtype(a.dtype).str for a in pieces})
    where, parts = [], {d: [] for d in dtypes}
    sizes = dict.fromkeys(dtypes, 0)
    for a in pieces:
        d = numpy.dtype(a.dtype).str
        where.append((dtypes.index(d), sizes[d], sizes[d] + a.size))
        sizes[d] += a.size
        parts[d].append(a)
    if xp is numpy:   # the copies on the rank's threads
        leaf = tuple(_parallel.concatenate(parts[d]) for d in dtypes)
    else:
        leaf = tuple(xp.concatenate([xp.asarray(a).ravel() for a in parts[d]]) for d in dtypes)
    return leaf, _Layout(params, len(stats), keys, leaf, where)

