"""An updater that accumulates gradients over microbatches before the all-reduce.

The config names the global batch and the per-worker (BN) batch. With W
workers, each accumulates k = global / (per_worker x W) microbatches, so
`mpiexec -n 8` runs the same optimization as the 1,024-GPU run (k = 128),
only slower. BN still normalizes over each microbatch of per_worker images.
"""
import time

import chainer
from chainer import reporter as reporter_module
from chainer.dataset import convert
from chainer import training


class AccumulatingUpdater(training.updaters.StandardUpdater):

    """StandardUpdater with k microbatches per update.

    Each microbatch's loss is divided by k before backward, so the summed
    gradient is the mean over the worker's k x per_worker samples; the
    multi-node optimizer then averages over workers: the gradient of the
    mean loss over the global batch. Observations (loss, accuracy) are
    averaged over the k microbatches.
    """

    def __init__(self, iterator, optimizer, microbatches=1, device=None,
                 converter=convert.concat_examples):
        super().__init__(iterator, optimizer, converter=converter, device=device)
        if microbatches < 1:
            raise ValueError('microbatches must be >= 1')
        self.microbatches = microbatches
        self.update_seconds = 0.0   # time spent in updates (for images/s)
        self.update_durations = []  # this process's updates, seconds each (not checkpointed)

    def update_core(self):
        start = time.perf_counter()
        iterator = self._iterators['main']
        optimizer = self._optimizers['main']
        model = optimizer.target
        k = self.microbatches
        loss_scale = getattr(optimizer, '_loss_scale', None)

        model.cleargrads()
        summary = reporter_module.DictSummary()
        for _ in range(k):
            batch = iterator.next()
            x, t = self.converter(batch, self.input_device)
            observation = {}
            with reporter_module.report_scope(observation):
                loss = model(x, t)
            summary.add(observation)
            if k > 1:
                loss = loss / k
            # Chainer adds into existing .grad: the microbatch gradients sum up.
            loss.backward(loss_scale=loss_scale)
            del loss
        chainer.reporter.report(summary.compute_mean())
        optimizer.update()   # the multi-node optimizer all-reduces, then steps
        took = time.perf_counter() - start
        self.update_seconds += took
        self.update_durations.append(took)

    def serialize(self, serializer):
        super().serialize(serializer)
        self.update_seconds = float(serializer('update_seconds', self.update_seconds))
