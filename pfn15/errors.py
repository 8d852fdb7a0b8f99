"""Exit statuses, and the exceptions that carry them: every stop of pfn15 and its tools.

    0    done; or stopped by SIGTERM, SIGUSR1 or a first Ctrl-C (with a
         checkpoint, or before training started); or the run in `out` is
         already complete
    2    a user error: the command line, the config, the data (missing files,
         too many corrupt images), no room for checkpoints, `out` holding a
         different run
    3    a non-finite loss or gradient (the last good checkpoint is kept)
    4    stalled: a rank stopped making progress (the watchdog names it)
    5    a checkpoint could not be written (a full disk, a quota...)
    130  a second Ctrl-C: stopped at once, without a checkpoint

A stop is raised as a `Stop` (or one of the `Error`s below) on the ranks
that meet it; the entry point's one handler prints its line from rank 0 and
exits with its status. Only the standard library is imported here (what is
not loaded at interpreter start, lazily), so `python -m pfn15.train` imports
it before installing its signal handlers.
"""
import os
import sys

OK = 0
USER_ERROR = 2
NON_FINITE = 3
STALLED = 4
CHECKPOINT_FAILED = 5
INTERRUPTED = 130          # the shell's status for a process ended by Ctrl-C

# The table --help prints (and the docs quote).
EXIT_CODES = (
    (OK, 'done, or stopped by SIGTERM/SIGUSR1/a first Ctrl-C (with a checkpoint, or '
         'before training started)'),
    (USER_ERROR, 'user error: command line, config, data, no room for checkpoints, '
                 'out holding another run'),
    (NON_FINITE, 'non-finite loss or gradients (the last good checkpoint is kept)'),
    (STALLED, 'stalled: a rank stopped making progress (named)'),
    (CHECKPOINT_FAILED, 'a checkpoint could not be written'),
    (INTERRUPTED, 'a second Ctrl-C: stopped at once, without a checkpoint'),
)


def exit_codes_text(indent='  ', width=79):
    """The table as text lines of at most `width` characters."""
    import textwrap
    lead = indent + ' ' * 5
    return '\n'.join(textwrap.fill(meaning, width, initial_indent='%s%-4d ' % (indent, status),
                                   subsequent_indent=lead) for status, meaning in EXIT_CODES)


class Stop(Exception):
    """A planned end: one line from rank 0 (`line()`), exit with `status`.

    `collective`: raised on every rank at once (else the handler must end the
    job from the one rank that met it, the others waiting in a collective)."""

    status = OK
    collective = True
    stream = 'stdout'

    def line(self, prog='pfn15'):
        return '%s: %s' % (prog, self)


class Error(Stop):
    """A stop that is an error: printed to stderr as 'PROG: error: ...'."""

    status = 1              # a stop no class below describes
    stream = 'stderr'

    def line(self, prog='pfn15'):
        return '%s: error: %s' % (prog, self)


class UserError(Error):
    """Bad command line, config or data: fix the input and run again."""

    status = USER_ERROR


class NonFiniteError(Error, RuntimeError):
    """A non-finite loss or gradient: training stops before it reaches the weights."""

    status = NON_FINITE


class CheckpointWriteError(Error, RuntimeError):
    """A checkpoint could not be written (raised on every rank)."""

    status = CHECKPOINT_FAILED


def say(stop, rank=None, prog='pfn15'):
    """Print `stop`'s line once (rank 0) and return its exit status."""
    if (launcher_rank() if rank is None else rank) == 0:
        print(stop.line(prog), file=getattr(sys, stop.stream), flush=True)
    return stop.status


ABORT_GRACE_S = 1.0


def abort_job(line, status):
    """Print `line` to stderr and end every rank of the job with `status` (MPI_Abort).

    The launcher forwards a rank's output through its node's proxy; a line
    written just before MPI_Abort can be dropped when the abort reaches the
    proxy first (MPICH hydra under load), so the line gets a moment to go out.
    """
    import time
    from mpi4py import MPI
    print(line, file=sys.stderr, flush=True)
    time.sleep(ABORT_GRACE_S)
    MPI.COMM_WORLD.Abort(status)


# ---------------------------------------------------------------- where am I

_RANK_VARS = ('PMI_RANK', 'OMPI_COMM_WORLD_RANK', 'PMIX_RANK', 'MV2_COMM_WORLD_RANK',
              'SLURM_PROCID')


def launcher_rank():
    """This process's rank as the launcher (mpiexec, srun) says, before MPI starts; 0 alone."""
    for var in _RANK_VARS:
        if os.environ.get(var, '').isdigit():
            return int(os.environ[var])
    return 0


def host():
    """The name of this node: MPI's processor name once MPI is up, else the OS's."""
    import platform
    mpi = sys.modules.get('mpi4py.MPI')
    if mpi is not None:
        try:
            if mpi.Is_initialized() and not mpi.Is_finalized():
                return mpi.Get_processor_name()
        except Exception:
            pass
    return platform.node()


# ---------------------------------------------------------------- suggestions

def did_you_mean(word, candidates):
    """' (did you mean X?)' for the closest candidate(s), or ''."""
    import difflib
    near = difflib.get_close_matches(str(word), list(candidates), n=3, cutoff=0.6)
    if not near:
        return ''
    return ' (did you mean %s?)' % ' or '.join(near)
