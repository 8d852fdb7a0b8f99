"""When things happen: the stop trigger, and a trigger every N global epochs.
Stateless functions of the iteration, counted by the run's BatchPlan
(pfn15.data.order), so the same on every rank."""
import math


class StopTrigger(object):

    """Stop after `iterations` (if > 0) else once `epochs` global epochs of `plan` are done."""

    def __init__(self, epochs, iterations, plan):
        self.iterations = iterations if iterations > 0 else plan.iterations_for(epochs)

    def get_training_length(self):
        return self.iterations, 'iteration'

    def __call__(self, trainer):
        return trainer.updater.iteration >= self.iterations


class EpochTrigger(object):

    """Fires every `period` global epochs (as `plan` counts them), and at the last iteration.

    Stateless (a function of the iteration), so it can be shared and needs no
    checkpointing; a run whose length is not a multiple of the period still
    ends with a validation result.
    """

    def __init__(self, period, plan, stop_trigger):
        self.period = period
        self.plan = plan
        self.stop = stop_trigger

    def __call__(self, trainer):
        it = trainer.updater.iteration
        if self.stop(trainer):
            return True
        if self.period <= 0:
            return False
        return (math.floor(self.plan.epochs_at(it) / self.period + 1e-9)
                > math.floor(self.plan.epochs_at(it - 1) / self.period + 1e-9))
