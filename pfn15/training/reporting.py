"""What the log and summary.json report beyond Chainer's own: throughput,
corrupt images summed over ranks, and the summary file."""
import json
import os
import time

import numpy

import chainer
import chainer.training.extensions
from chainer.training import extension


class Throughput(extension.Extension):

    """Reports `images/s`: global images per second of wall time between iterations
    (the batch of the iteration that just ran, which grows under batch-size control)."""

    trigger = 1, 'iteration'
    priority = extension.PRIORITY_WRITER + 2

    def __init__(self, plan):
        self.plan = plan
        self._last = None

    def __call__(self, trainer):
        now = time.perf_counter()
        if self._last is not None:
            batch = self.plan.batch(trainer.updater.iteration - 1)
            trainer.observation['images/s'] = batch / max(now - self._last, 1e-9)
        self._last = now


class BadImageCount(extension.Extension):

    """Reports `bad_images`: corrupt images replaced by the mean image so far
    (each use counts), summed over all ranks.

    A collective, so it runs on every rank with a global trigger (the log's).
    """

    priority = extension.PRIORITY_WRITER + 2

    def __init__(self, comm, trigger):
        self.comm = comm
        self.trigger = trigger

    def __call__(self, trainer):
        from pfn15.data import health
        mine = numpy.array([health.bad_image_count()], numpy.float64)
        trainer.observation['bad_images'] = float(self.comm.allreduce(mine)[0])


def write_summary(path, summary):
    """Write summary.json atomically (outside checks read it)."""
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write('\n')
    os.replace(tmp, path)


class PlotReport(chainer.training.extensions.PlotReport):

    """Chainer's PlotReport with its whole state in the checkpoint: the points
    (which Chainer saves), the observations since the last point and where its
    trigger stands (which it does not: a resumed run plotted an extra point
    right after the resume and a mean of the resumed part only at the next
    epoch). All of it numbers and JSON."""

    def serialize(self, serializer):
        super().serialize(serializer)
        if (isinstance(serializer, chainer.serializer.Deserializer)
                and serializer['_summary']('_names', None) is None):
            return   # a checkpoint written before this state was saved
        self._summary.serialize(serializer['_summary'])
        if hasattr(self._trigger, 'serialize'):
            self._trigger.serialize(serializer['_trigger'])
