"""How far the job is, and when things happen: epochs as the whole job counts
them (a BatchPlan), the stop trigger, and a trigger every N global epochs.
Stateless functions of the iteration, the same on every rank."""
import math

from pfn15 import schedules
from pfn15.data import order


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
