"""The global sample order: which sample each (update, worker, microbatch) slot trains on,
and the batch plan it follows.

Pure NumPy (no Chainer), so every rank, every decoding process and the tests
compute the same thing from the same few integers.

* The sample stream is the concatenation of per-epoch permutations of the
  whole training set; the permutation of epoch e is drawn from (seed, e)
  alone (PCG64 seeded by SeedSequence([seed, e])).
* The update after `iteration` done updates takes the next `global_batch`
  positions of the stream; positions are cumulative samples, so batch-size
  control (a global batch that grows) is covered too. A global batch that
  crosses an epoch end continues into the next epoch's permutation ("wrap"):
  nothing is dropped, every sample appears exactly once per epoch, and epochs
  are samples / train_size exactly as `BatchPlan.epochs_at` counts them. The
  same choice for every worker count.
* A global batch splits into BN groups of `per_worker` consecutive samples.
  Group g goes to worker w = g // k as its microbatch m = g % k (k microbatches
  per worker). Every worker count processes exactly the same groups; only the
  slot a group sits in changes.

A rank reads its share as one "rank stream": its k microbatches of update 0,
then of update 1, ... `RankStream.global_position(q)` maps the rank stream's
position q to the global stream position, and `SampleOrder.key(p)` maps that
to (dataset index, epoch).

`BatchPlan` is the run's batch arithmetic -- the global batch, microbatches,
base learning rate and epochs of every update -- which the order and every
part of training read.
"""
import math

import numpy

from pfn15 import schedules


def epoch_permutation(seed, epoch, size):
    """The order of the whole training set in `epoch`: a function of (seed, epoch) alone."""
    rng = numpy.random.Generator(numpy.random.PCG64(numpy.random.SeedSequence([seed, epoch])))
    return rng.permutation(size)


class SampleOrder(object):

    """Global stream position -> (dataset index, epoch), for a training set of `size`.

    Keeps the permutations of the two most recent epochs (a batch may straddle
    an epoch end); computing one is ~20 ms for ImageNet's 1.28 M entries.
    """

    def __init__(self, seed, size):
        if size < 1:
            raise ValueError('the training set is empty')
        self.seed = int(seed)
        self.size = int(size)
        self._cache = {}

    def permutation(self, epoch):
        perm = self._cache.get(epoch)
        if perm is None:
            if len(self._cache) >= 2:
                self._cache.pop(min(self._cache))
            perm = self._cache[epoch] = epoch_permutation(self.seed, epoch, self.size)
        return perm

    def key(self, position):
        """(dataset index, epoch) of global stream position `position`."""
        epoch, j = divmod(int(position), self.size)
        return int(self.permutation(epoch)[j]), epoch

    def keys(self, start, count):
        """(indices, epochs) arrays of positions start .. start + count - 1."""
        positions = numpy.arange(start, start + count, dtype=numpy.int64)
        epochs = positions // self.size
        indices = numpy.empty(count, numpy.int64)
        for e in numpy.unique(epochs):
            sel = epochs == e
            indices[sel] = self.permutation(int(e))[positions[sel] - e * self.size]
        return indices, epochs


def whole_microbatches(batch, per_worker, workers=1):
    """k: the microbatches of `per_worker` samples each of `workers` workers
    accumulates for a global batch of `batch`; None when `batch` does not split
    into whole microbatches (k >= 1) that way."""
    k, rest = divmod(int(batch), int(per_worker) * int(workers))
    return k if k >= 1 and not rest else None


class BatchPlan(object):

    """The batch arithmetic of a run, in one place: the global batch of every
    update (batch-size control included), the microbatches each worker
    accumulates for it, the linear-scaling base learning rate, and epochs as
    the whole job counts them. Every part asks this plan (built once,
    `from_config`), so they cannot disagree.

    Epochs are samples seen by all workers / training-set size. The global
    sample order takes the positions of one stream of per-epoch permutations,
    so this is also exactly how far into that stream the run is; everything
    that must happen on all ranks at once (evaluation, stopping, the log's
    epoch, the schedules) counts with it. With a batch schedule the global
    batch changes between updates, and epochs are the sum over its phases
    (pfn15.schedules.batch_epoch_at).

    `per_worker` x `workers` samples are one round of microbatches, and
    `lr_per_256` the rate of a global batch of 256 (the linear scaling rule);
    a plan built without them (tools and tests of the order alone) answers
    everything but `microbatches` and `base_lr`.
    """

    def __init__(self, global_batch, train_size, batch_schedule=(), per_worker=None,
                 workers=1, lr_per_256=None):
        self.global_batch = int(global_batch)
        self.train_size = int(train_size)
        self.batch_schedule = [tuple(p) for p in batch_schedule]
        self.per_worker = None if per_worker is None else int(per_worker)
        self.workers = int(workers)
        self.lr_per_256 = lr_per_256

    @classmethod
    def from_config(cls, cfg, train_size, workers):
        """The plan of `cfg` (batch.*, schedule.lr_per_256) on `workers` workers."""
        b = cfg.batch
        return cls(b.global_, train_size, b.schedule, per_worker=b.per_worker,
                   workers=workers, lr_per_256=cfg.schedule.lr_per_256)

    def batch(self, iteration):
        """The global batch of update `iteration`."""
        if self.batch_schedule:
            return schedules.batch_at_iteration(iteration, self.train_size, self.batch_schedule)
        return self.global_batch

    def microbatches(self, iteration):
        """k: microbatches each worker accumulates in update `iteration`,
        batch(iteration) // (per_worker x workers)."""
        if self.per_worker is None:
            raise ValueError('this batch plan was built without a per-worker batch')
        k = whole_microbatches(self.batch(iteration), self.per_worker, self.workers)
        if k is None:
            raise ValueError('global batch %d does not split into %d workers x %d per worker '
                             'x whole microbatches'
                             % (self.batch(iteration), self.workers, self.per_worker))
        return k

    def base_lr(self, iteration):
        """The linear scaling rule's rate for update `iteration`'s batch:
        lr_per_256 x batch / 256 (it follows the batch under batch-size control)."""
        if self.lr_per_256 is None:
            raise ValueError('this batch plan was built without schedule.lr_per_256')
        return self.lr_per_256 * self.batch(iteration) / 256.0

    def epochs_at(self, iteration):
        """Epochs done after `iteration` updates: samples seen / training-set size."""
        if self.batch_schedule:
            return schedules.batch_epoch_at(iteration, self.train_size, self.batch_schedule)
        return iteration * self.global_batch / self.train_size

    def iterations_for(self, epochs):
        """The first iteration at which `epochs` epochs are complete."""
        if self.batch_schedule:
            return schedules.batch_iterations_for(epochs, self.train_size, self.batch_schedule)
        return int(math.ceil(epochs * self.train_size / self.global_batch - 1e-9))

    def samples_before(self, iteration):
        """Samples taken by the first `iteration` updates (exact integers)."""
        if self.batch_schedule:
            return schedules.batch_samples_at(iteration, self.train_size, self.batch_schedule)
        return iteration * self.global_batch

    def iteration_of(self, samples):
        """The update whose global batch holds global stream position `samples`."""
        if not self.batch_schedule:
            return samples // self.global_batch
        lo, hi = 0, 1
        while self.samples_before(hi) <= samples:
            lo, hi = hi, hi * 2
        while hi - lo > 1:   # samples_before(lo) <= samples < samples_before(hi)
            mid = (lo + hi) // 2
            if self.samples_before(mid) <= samples:
                lo = mid
            else:
                hi = mid
        return lo


class RankStream(object):

    """This rank's samples in the order its updater consumes them.

    With the plan's W workers and per-worker batch b, update i has
    k_i = plan.microbatches(i) microbatches per worker; rank r's microbatch m
    of update i is group g = r k_i + m of the global batch, i.e. global
    positions samples_before(i) + g b .. + b - 1. The rank stream holds
    B_i / W samples per update, so its position q belongs to the update
    holding global position q W.
    """

    def __init__(self, plan, rank):
        self.plan = plan
        self.workers = plan.workers
        self.rank = int(rank)
        self.per_worker = plan.per_worker

    def start(self, iteration):
        """Rank stream position of the first sample of update `iteration`."""
        return self.plan.samples_before(iteration) // self.workers

    def global_position(self, q):
        i = self.plan.iteration_of(q * self.workers)
        within = q - self.start(i)
        k = self.plan.microbatches(i)
        m, j = divmod(within, self.per_worker)
        group = self.rank * k + m
        return self.plan.samples_before(i) + group * self.per_worker + j


def slot_of_group(group, microbatches):
    """(worker, microbatch) that BN group `group` of a global batch goes to."""
    return divmod(group, microbatches)


def validation_batches(size, batch, workers):
    """[(first, stop)] of the validation batches each rank evaluates: the set cut
    into ceil(size / batch) fixed batches of `batch` consecutive images (the last
    may be short), dealt as contiguous runs whose lengths differ by at most one.
    The batches are the same for every worker count (pfn15.reduction sums them)."""
    n = -(-size // batch) if size else 0
    return [(n * r // workers, n * (r + 1) // workers) for r in range(workers)]


def validation_share(size, workers, rank, batch=1):
    """[start, stop) of the validation set that `rank` evaluates: its run of whole
    `batch`-image batches (validation_batches); every image exactly once over all
    ranks."""
    first, stop = validation_batches(size, batch, workers)[rank]
    return min(first * batch, size), min(stop * batch, size)
