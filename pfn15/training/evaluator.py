"""Validation metrics of the whole validation set, the same for every worker count.

Chainer's Evaluator averages per-batch means (a short last batch weighs as
much as a full one) and ChainerMN's multi-node evaluator then averages each
rank's mean (a rank with one image fewer weighs the same), so the numbers
moved with the worker count and the batch size. Here each rank evaluates its
contiguous share of the validation set (pfn15.data.order.validation_share),
sums loss x images, correct top-1 and top-5 counts, and one all-reduce of
those sums gives the sample-weighted mean over every validation image --
what a paper's "74.94% top-1" means. Reported under the usual keys:
validation/main/loss, validation/main/accuracy, validation/main/top5.

With `canonical` (comm.reduction=canonical: (validation-set size, batch)),
the set is cut into fixed batches (pfn15.data.order.validation_batches),
each batch's sums are one leaf, and pfn15.reduction's tree adds them over
all ranks: the same bits on every worker count.

`progress` (pfn15.training.progress) is told each batch, the all-reduce and the end.
"""
import numpy

import chainer
from chainer import reporter as reporter_module
from chainer.dataset import convert
from chainer.training import extension

from pfn15.training import progress as progress_module

KEYS = ('loss', 'accuracy', 'top5')


class WholeSetEvaluator(extension.Extension):

    priority = extension.PRIORITY_WRITER
    name = 'validation'

    def __init__(self, iterator, model, comm, trigger, device=-1, top5=True,
                 converter=convert.concat_examples, canonical=None, progress=None):
        self.iterator = iterator
        self.canonical = canonical
        self.top5 = top5   # the classifier reports top-5 only with more than 5 classes
        self.model = model
        self.comm = comm
        self.trigger = trigger
        self.device = device
        self.converter = converter
        self.progress = progress or progress_module.NONE

    def evaluate(self, iteration=-1):
        """{'validation/main/loss': ..., ...}: sums over this rank's share, all-reduced
        (`iteration`: the trainer's, for the progress calls)."""
        sums = numpy.zeros(1 + len(KEYS), numpy.float64)   # images, then loss/acc/top5 sums
        acc = None
        if self.canonical is not None:
            from pfn15 import reduction
            from pfn15.data import order
            size, batch = self.canonical
            ranges = order.validation_batches(size, batch, self.comm.size)
            leaves = ranges[-1][1]
            acc = reduction.Accumulator(*ranges[self.comm.rank], leaves)
        it = self.iterator
        it.reset()
        reporter = reporter_module.Reporter()
        reporter.add_observer('main', self.model)
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            for index, batch in enumerate(it if len(it.dataset) else (), 1):
                self.progress.evaluation_batch(iteration, index)
                x, t = self.converter(batch, self.device)
                observation = {}
                with reporter.scope(observation):
                    self.model(x, t)
                n = len(batch)
                leaf = numpy.zeros_like(sums)
                leaf[0] = n
                for i, key in enumerate(KEYS):
                    v = observation.get('main/' + key)
                    if v is not None:
                        leaf[1 + i] = float(chainer.backend.CpuDevice().send(
                            getattr(v, 'array', v))) * n
                if acc is None:
                    sums += leaf
                else:
                    acc.add((leaf,))
        self.progress.evaluation_allreduce(iteration)
        if acc is None:
            total = self.comm.mpi_comm.allreduce(sums)
        else:
            from pfn15 import reduction
            total, = reduction.allreduce(self.comm.mpi_comm, acc.nodes(), ranges, leaves,
                                         (sums,))
        result = {}
        for i, key in enumerate(KEYS):
            if key != 'top5' or self.top5:
                result['validation/main/' + key] = total[1 + i] / max(total[0], 1.0)
        self.progress.evaluation_done(iteration)
        return result

    def __call__(self, trainer=None):
        result = self.evaluate(trainer.updater.iteration if trainer is not None else -1)
        reporter_module.report(result)
        return result
