"""The training iterator: this rank's slots of the global sample order, in order.

`RankStreamDataset` is a Chainer dataset whose item q is the q-th sample of
this rank's stream (pfn15.data.order.RankStream), counted from the update the
run starts (or resumes) at; it looks the sample up in the whole training set
and hands the transform its (epoch, index) key, so augmentation is by sample.
Being an ordinary dataset read front to back, it runs through Chainer's own
`MultiprocessIterator` (parallel decoding, shuffle off) or `SerialIterator`
unchanged; the permutations are computed (and cached) in each decoding
process from (seed, epoch) alone.

`GlobalOrderIterator` creates that inner iterator on the first `next()`, at
the updater's iteration then -- so a run resumed at iteration i on any number
of workers reads exactly the slots the uninterrupted run would. It has no
state of its own to checkpoint: its position is the updater's iteration.
"""
import chainer
from chainer.dataset import DatasetMixin

from pfn15.data import order


class RankStreamDataset(DatasetMixin):

    def __init__(self, base, sample_order, stream, start, length, transform=None):
        self.base = base
        self.sample_order = sample_order
        self.stream = stream
        self.start = start
        self.length = length
        self.transform = transform

    def __len__(self):
        return self.length

    def key(self, i):
        """(dataset index, epoch) of item i."""
        return self.sample_order.key(self.stream.global_position(self.start + i))

    def get_example(self, i):
        index, epoch = self.key(i)
        example = self.base[index]
        if self.transform is None:
            return example
        return self.transform(tuple(example) + ((epoch, index),))


def _keyed(example):
    """(source, label, (epoch, index)) as it is: the DALI decoder draws from the key."""
    return example


class GlobalOrderIterator(chainer.dataset.Iterator):

    """Yields this rank's microbatches (the `plan`'s per_worker samples each) of the
    global order."""

    def __init__(self, base, seed, plan, rank, end_iteration,
                 transform=None, loader_workers=0, decoder=None):
        self.base = base
        self.sample_order = order.SampleOrder(seed, len(base))
        self.stream = order.RankStream(plan, rank)
        self.batch_size = plan.per_worker
        self.end_iteration = end_iteration
        self.transform = transform
        self.loader_workers = loader_workers
        self.decoder = decoder
        self.updater = None          # set by follow(): where the next batch starts
        self._inner = None
        self.started_at = None

    @property
    def dataset(self):
        """The whole training set the order draws from (untransformed)."""
        return self.base

    def follow(self, updater):
        self.updater = updater

    def _start(self):
        iteration = self.updater.iteration if self.updater is not None else 0
        start = self.stream.start(iteration)
        # A few updates past the end: the inner iterator prefetches ahead.
        length = self.stream.start(max(self.end_iteration, iteration) + 2) - start
        dataset = RankStreamDataset(self.base, self.sample_order, self.stream, start, length,
                                    _keyed if self.decoder is not None else self.transform)
        if self.decoder is not None:
            from pfn15.data import dali
            self._inner = dali.Batches(dataset, self.decoder, self.batch_size)
        elif self.loader_workers > 0:
            self._inner = chainer.iterators.MultiprocessIterator(
                dataset, self.batch_size, repeat=False, shuffle=False,
                n_processes=self.loader_workers)
        else:
            self._inner = chainer.iterators.SerialIterator(
                dataset, self.batch_size, repeat=False, shuffle=False)
        self.started_at = iteration

    def __next__(self):
        if self._inner is None:
            self._start()
        return self._inner.next()

    next = __next__

    # The updater reports epochs globally (its BatchPlan); these only keep
    # Chainer's Iterator interface whole.
    @property
    def epoch_detail(self):
        return 0.0

    epoch = 0
    is_new_epoch = False

    def serialize(self, serializer):
        pass   # the position is the updater's iteration

    def finalize(self):
        if self._inner is not None:
            self._inner.finalize()
            self._inner = None
