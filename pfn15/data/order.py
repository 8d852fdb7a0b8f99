"""The global sample order: which sample each (update, worker, microbatch) slot trains on.

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
  are samples / train_size exactly as `GlobalEpochs` counts them. The same
  choice for every worker count.
* A global batch splits into BN groups of `per_worker` consecutive samples.
  Group g goes to worker w = g // k as its microbatch m = g % k (k microbatches
  per worker). Every worker count processes exactly the same groups; only the
  slot a group sits in changes.

A rank reads its share as one "rank stream": its k microbatches of update 0,
then of update 1, ... `RankStream.global_position(q)` maps the rank stream's
position q to the global stream position, and `SampleOrder.key(p)` maps that
to (dataset index, epoch).
"""
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


class BatchPlan(object):

    """Global batch and cumulative samples per update (batch-size control included).

    samples_before(i): samples taken by the first i updates (exact integers).
    """

    def __init__(self, global_batch, train_size, batch_schedule=()):
        self.global_batch = int(global_batch)
        self.train_size = int(train_size)
        self.batch_schedule = [tuple(p) for p in batch_schedule]

    def batch(self, iteration):
        if self.batch_schedule:
            return schedules.batch_at_iteration(iteration, self.train_size, self.batch_schedule)
        return self.global_batch

    def samples_before(self, iteration):
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

    With W workers and per-worker batch b, update i has k_i = B_i / (W b)
    microbatches per worker; rank r's microbatch m of update i is group
    g = r k_i + m of the global batch, i.e. global positions
    samples_before(i) + g b .. + b - 1. The rank stream holds B_i / W samples
    per update, so its position q belongs to the update holding global
    position q W.
    """

    def __init__(self, plan, workers, rank, per_worker):
        self.plan = plan
        self.workers = int(workers)
        self.rank = int(rank)
        self.per_worker = int(per_worker)

    def start(self, iteration):
        """Rank stream position of the first sample of update `iteration`."""
        return self.plan.samples_before(iteration) // self.workers

    def global_position(self, q):
        i = self.plan.iteration_of(q * self.workers)
        within = q - self.start(i)
        k = self.plan.batch(i) // (self.workers * self.per_worker)
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
