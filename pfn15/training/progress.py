"""Where the trainer is, told by the parts that know: the stall watchdog's ticks.

The updater, the evaluator and the checkpointer take a `progress=` object and
call it at their own boundaries; `Progress` (the default) does nothing, and
`WatchdogProgress` turns each call into one `Watchdog.tick(phase, iteration,
slow=...)`. A phase is slow (the watchdog allows it longer) in the first two
iterations after the start, the first evaluation and the first checkpoint.
`iteration` is the one the phase belongs to: the iteration being computed in
the updater, the last completed one in the extensions.
"""
from chainer.training import extension


class Progress(object):
    """Told where the trainer is; does nothing."""

    def microbatch(self, iteration, index, count):
        """Microbatch `index` of `count` (1-based) is in hand: forward, backward."""

    def gradient_allreduce(self, iteration):
        """The gradient all-reduce starts."""

    def update(self, iteration):
        """The optimizer's step starts (the all-reduce is done)."""

    def extensions(self, iteration):
        """The extensions after the update start (log, evaluation, checkpoint, checks)."""

    def evaluation_batch(self, iteration, index):
        """Validation batch `index` (1-based) is in hand."""

    def evaluation_allreduce(self, iteration):
        """The validation sums' all-reduce starts."""

    def evaluation_done(self, iteration):
        """The evaluation ended."""

    def checkpoint_start(self, iteration):
        """The collective checkpoint save starts."""

    def checkpoint_done(self, iteration):
        """The checkpoint save ended."""


NONE = Progress()


class WatchdogProgress(Progress):
    """Each boundary as a tick of `watchdog` (pfn15.training.watchdog.Watchdog)."""

    def __init__(self, watchdog):
        self.watchdog = watchdog
        self.start = None        # the first iteration computed by this process
        self.evaluations = 0
        self.checkpoints = 0

    def _first_iterations(self, iteration):
        if self.start is None:
            self.start = iteration
        return iteration < self.start + 2

    def microbatch(self, iteration, index, count):
        self.watchdog.tick('microbatch %d/%d (data, forward, backward)' % (index, count),
                           iteration, slow=self._first_iterations(iteration))

    def gradient_allreduce(self, iteration):
        self.watchdog.tick('gradient all-reduce', iteration,
                           slow=self._first_iterations(iteration))

    def update(self, iteration):
        self.watchdog.tick('update', iteration, slow=self._first_iterations(iteration))

    def extensions(self, iteration):
        self.watchdog.tick('extensions (log, evaluation, checkpoint, stop check)', iteration,
                           slow=self._first_iterations(iteration - 1))

    def evaluation_batch(self, iteration, index):
        self.watchdog.tick('evaluation batch %d' % index, iteration,
                           slow=self.evaluations == 0)

    def evaluation_allreduce(self, iteration):
        self.watchdog.tick('evaluation all-reduce', iteration, slow=self.evaluations == 0)

    def evaluation_done(self, iteration):
        self.evaluations += 1

    def checkpoint_start(self, iteration):
        self.watchdog.tick('checkpoint', iteration, slow=self.checkpoints == 0)

    def checkpoint_done(self, iteration):
        self.checkpoints += 1
        self.watchdog.tick('after the checkpoint', iteration)


class AfterUpdate(extension.Extension):
    """First of the extensions: what follows (log, evaluation, checkpoint, the
    stop check) shows as this iteration's extensions."""

    trigger = 1, 'iteration'
    priority = extension.PRIORITY_WRITER + 100
    name = 'watchdog'

    def __init__(self, progress):
        self.progress = progress

    def __call__(self, trainer):
        self.progress.extensions(trainer.updater.iteration)


class UpdateStart(object):
    """Optimizer hook: the step starts. ChainerMN's multi-node optimizer calls its
    wrapped optimizer's update -- and so this hook -- after the all-reduce."""

    name = 'pfn15_progress'
    call_for_each_param = False
    timing = 'pre'

    def __init__(self, progress, updater):
        self.progress = progress
        self.updater = updater

    def __call__(self, optimizer):
        self.progress.update(self.updater.iteration + 1)
