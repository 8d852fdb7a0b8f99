"""The recipe's per-iteration extensions: the schedule driver (learning rate, the
optimizer's scheduled hyperparameters, batch-size control) and the BN
statistics of the global batch before each evaluation."""
from chainer.training import extension

from pfn15 import bn
from pfn15 import optimizers
from pfn15 import schedules


class ScheduleDriver(extension.Extension):

    """Sets `lr` and the optimizer's other scheduled hyperparameters every iteration.

    Which ones, and their schedules, come from the optimizer's registry entry
    (pfn15.optimizers: `scheduled`, e.g. RMSprop warm-up's `alpha_sgd`).

    The schedules are functions of the fractional epoch, computed as samples
    seen by all workers / training-set size: the same number on every rank
    and for every worker count (an accumulating run of the 32k config on 8
    workers sees the same epochs as the 1,024-worker run).
    It reports the values used by the iteration that just ran under their
    names (and `global_batch` under batch-size control).

    Batch-size control (batch.schedule): before each update it sets the
    updater's microbatches for the batch the schedule asks for, and the
    linear-scaling base rate follows that batch; both come from the run's
    BatchPlan (pfn15.data.order), which also counts the samples actually seen.
    """

    trigger = 1, 'iteration'
    priority = extension.PRIORITY_WRITER + 2   # report before LogReport reads

    def __init__(self, cfg, plan):
        self.cfg = cfg
        self.scheduled = optimizers.entry(cfg.optimizer.name).scheduled
        self.schedule = cfg.schedule
        self.total_epochs = cfg.train.epochs     # for schedule.lr 'poly'
        self.plan = plan
        self.batch_control = bool(cfg.batch.schedule)

    def initialize(self, trainer):
        self._set(trainer.updater.get_optimizer('main'), trainer.updater.iteration)
        self._set_batch(trainer.updater)

    def __call__(self, trainer):
        optimizer = trainer.updater.get_optimizer('main')
        iteration = trainer.updater.iteration
        trainer.observation['lr'] = optimizer.lr
        for name in self.scheduled:   # the multi-node wrapper forwards attributes
            trainer.observation[name] = getattr(optimizer, name)
        if self.batch_control:   # the batch of the update that just ran
            trainer.observation['global_batch'] = self.plan.batch(iteration - 1)
        self._set(optimizer, iteration)
        self._set_batch(trainer.updater)

    def _set_batch(self, updater):
        if self.batch_control:
            updater.microbatches = self.plan.microbatches(updater.iteration)

    def _set(self, optimizer, iteration):
        e = self.plan.epochs_at(iteration)
        optimizer.lr = schedules.learning_rate(e, self.schedule, self.plan.base_lr(iteration),
                                               self.total_epochs)
        for name, schedule in self.scheduled.items():
            setattr(optimizer, name, schedule(e, self.cfg))


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
