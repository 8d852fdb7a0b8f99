"""Collective per-iteration checks: one protocol, one all-reduce.

A check is one class and one entry in `CHECKS`:

    class MyCheck(Check):
        size = 2                                   # floats it contributes
        @classmethod
        def create(cls, cfg, parts): ...           # an instance, or None where it does not apply
        def local(self): return [a, b]             # this rank's numbers
        def judge(self, totals, at): ...           # their sums over all ranks

`CollectiveChecks` (a trainer extension, every iteration) concatenates every
check's `local()`, all-reduces them in one call, and hands each check its own
slice of the sums, in list order. Every rank sees the same sums, so every rank
reaches the same verdict and stops together: `judge` raises a `CheckFailed`
carrying the exit status (`status`) and one line for rank 0 to print, or returns.
`at` holds `iteration`, `comm` and `trainer`.

It runs after evaluation and before the checkpoint, so a failed check is never
saved. The data's health is judged before a stop signal: a run stopped for bad
data does not checkpoint the iteration it trained on bad data.
"""
import numpy

from chainer.training import extension

from pfn15 import errors
from pfn15.data import DataError


class CheckFailed(errors.Error):
    """A check's verdict, reached on every rank at once: exit `status`, one line."""

    status = errors.Error.status
    collective = True


class Check(object):
    """The protocol (see the module docstring)."""

    size = 1

    @classmethod
    def create(cls, cfg, parts):
        return cls()

    def local(self):
        raise NotImplementedError

    def judge(self, totals, at):
        raise NotImplementedError


class _At(object):
    def __init__(self, iteration, comm, trainer):
        self.iteration, self.comm, self.trainer = iteration, comm, trainer


class CollectiveChecks(extension.Extension):

    """Every check's numbers in one all-reduce per iteration, then their verdicts."""

    trigger = 1, 'iteration'
    priority = extension.PRIORITY_READER - 40    # after evaluation, before the checkpoint

    def __init__(self, comm, checks):
        self.comm = comm
        self.checks = list(checks)

    def gather(self):
        """This rank's numbers, every check's in order, as one float64 vector."""
        local = []
        for check in self.checks:
            mine = [float(x) for x in check.local()]
            if len(mine) != check.size:
                raise ValueError('%s.local() gave %d numbers, its size is %d'
                                 % (type(check).__name__, len(mine), check.size))
            local += mine
        return numpy.array(local, numpy.float64)

    def judge(self, totals, at):
        """Each check's slice of the sums, in list order; the first failure raises."""
        i = 0
        for check in self.checks:
            check.judge(totals[i:i + check.size], at)
            i += check.size

    def __call__(self, trainer):
        totals = self.comm.allreduce(self.gather())
        self.judge(totals, _At(trainer.updater.iteration, self.comm, trainer))


# ---------------------------------------------------------------- the checks

class DataCheck(Check):

    """The data's health, judged on every rank at once.

    Each rank contributes whether its decoders met a file that does not exist,
    and how many times they replaced a corrupt image by the mean image. (With data.bad_images=error the
    decoder raises at once; the rank that met it names itself and aborts the
    job, see train.py.) A missing file anywhere, or more skipped images than
    `max_bad_fraction` of the training images seen, stops every rank with one
    DataError naming the rank, host and file.
    """

    size = 2

    def __init__(self, max_bad_fraction, plan, lookahead=0):
        self.max_bad_fraction = max_bad_fraction
        self.plan = plan
        # Decoders run ahead of training (the iterators prefetch): up to this many
        # images are decoded -- and counted if corrupt -- before they are trained on.
        self.lookahead = lookahead
        from pfn15.data import health
        self.reporter = health.Reporter()   # names each bad file once, from rank 0
        self._reported_count = 0

    @classmethod
    def create(cls, cfg, parts):
        if not cfg.data.decodes_files:
            return None
        return cls(cfg.data.max_bad_fraction, parts.plan,
                   lookahead=2 * cfg.batch.global_)

    def local(self):
        from pfn15.data import health
        return [1.0 if health.first_data_error() else 0.0,
                float(health.bad_image_count())]

    def final(self, comm):
        """Collective, at the end of a run: names the bad files not yet named and
        returns {'bad_images': replacements on all ranks, 'bad_files': [paths]}."""
        from pfn15.data import health
        self.reporter.report(comm.mpi_comm)
        mine = numpy.array([health.bad_image_count()], numpy.float64)
        return {'bad_images': int(comm.allreduce(mine)[0]),
                'bad_files': sorted(self.reporter.reported)}

    def too_many_bad(self, bad, iteration):
        """The pure verdict on `bad` skipped images after `iteration`: a line or None.

        Judged once 10 / max_bad_fraction images (or an epoch) have been seen, so a
        few bad images early on are not a rate.
        """
        if not (self.max_bad_fraction > 0 and bad > 0):
            return None
        seen = self.plan.samples_before(iteration)
        judged = seen >= min(self.plan.train_size, 10.0 / self.max_bad_fraction)
        if judged and bad > self.max_bad_fraction * (seen + self.lookahead):
            return ('data: %d times a corrupt image was replaced by the mean image, out of '
                    'about %d training images seen (more than data.max_bad_fraction=%g; the '
                    'warnings above name the files): is the data damaged?'
                    % (bad, seen, self.max_bad_fraction))
        return None

    def judge(self, totals, at):
        from pfn15.data import health
        from pfn15.training import startup
        if totals[1] > self._reported_count and at.comm is not None:
            # The same sums on every rank, so this collective runs on all of them.
            self._reported_count = totals[1]
            self.reporter.report(at.comm.mpi_comm)
        if totals[0] > 0:   # every rank knows; each says what it met
            found = at.comm.mpi_comm.allgather(health.first_data_error())
            hosts = at.comm.mpi_comm.allgather(errors.host())
            raise DataCheckFailed('%s (stopped at iteration %d)' % (startup.describe(
                {r: e for r, e in enumerate(found) if e}, hosts), at.iteration))
        line = self.too_many_bad(totals[1], at.iteration)
        if line:
            raise DataCheckFailed(line)


class DataCheckFailed(CheckFailed, DataError):
    """Bad data, found by DataCheck on every rank at once (exit 2)."""

    status = errors.USER_ERROR


class Preempted(CheckFailed):
    """A stop signal: a checkpoint is written, the job exits 0 (to be requeued)."""

    status = errors.OK
    stream = 'stdout'

    def line(self, prog='pfn15'):
        return '%s: preempted: %s; rerun with resume=auto to continue' % (prog, self)


class StopSignal(Check):

    """On SIGTERM, SIGUSR1 or a first Ctrl-C on any rank: finish the iteration,
    checkpoint, stop every rank. Schedulers send the signal to some or all ranks;
    its flag in the all-reduce lets every rank agree to stop after the same
    iteration. The handlers themselves are installed at the very start of
    main() (pfn15.training.signals)."""

    def __init__(self, checkpointer):
        self.checkpointer = checkpointer

    @classmethod
    def create(cls, cfg, parts):
        return cls(parts.checkpointer)

    def local(self):
        from pfn15.training import signals
        return [1.0 if signals.pending() else 0.0]

    def judge(self, totals, at):
        from pfn15.training import signals
        if float(totals[0]) > 0:
            self.checkpointer.save(at.trainer)
            why = (signals.name(signals.received) if signals.received is not None
                   else 'a stop signal on another rank')
            raise Preempted('%s: checkpoint written at iteration %d' % (why, at.iteration))


# The checks of every iteration, judged in this order.
CHECKS = [DataCheck, StopSignal]


def build(cfg, parts, checks=None):
    """The checks that apply to this run: each class's `create(cfg, parts)`;
    `parts` has the run's comm, checkpointer, plan (BatchPlan) and meta."""
    made = [cls.create(cfg, parts) for cls in (CHECKS if checks is None else checks)]
    return [c for c in made if c is not None]

