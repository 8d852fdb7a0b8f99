"""What rank 0 prints while training: Chainer's table and progress bar on a
terminal, plain lines (no cursor codes) in a job log or a pipe.

Chainer's PrintReport writes ESC[J before every row and its ProgressBar moves
the cursor up (ESC[4A); in a file these are noise. Under mpiexec a rank's
stdout is always a pipe to the launcher, so "a terminal" means: this
process's stdout, or that of the MPI launcher processes above it, is one.
"""
import os
import re
import sys
import time

from chainer.training import extension

CURSOR_CODES = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')
# Processes that forward a rank's output unchanged (MPICH hydra, Open MPI, SLURM).
LAUNCHERS = ('hydra_pmi_proxy', 'mpiexec', 'mpiexec.hydra', 'mpirun', 'orted', 'prted',
             'prterun', 'srun', 'slurmstepd')


def _proc(pid, what):
    try:
        if what == 'fd1':
            return os.readlink('/proc/%d/fd/1' % pid)
        with open('/proc/%d/%s' % (pid, what)) as f:
            return f.read()
    except OSError:
        return None


def on_terminal(stream=None):
    """True if what `stream` (stdout) gets ends up on a terminal."""
    stream = stream or sys.stdout
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):
        return False
    if stream is not sys.stdout and stream is not sys.__stdout__:
        return False
    pid = os.getppid()
    for _ in range(6):
        name = (_proc(pid, 'comm') or '').strip()
        if not name or not name.startswith(LAUNCHERS):
            return False
        link = _proc(pid, 'fd1') or ''
        if link.startswith(('/dev/pts/', '/dev/tty')):
            return True
        stat = _proc(pid, 'stat')
        if not stat:
            return False
        pid = int(stat.rsplit(')', 1)[1].split()[1])   # the parent's pid
    return False


class PlainLines(object):
    """A stream for PrintReport: what it writes, without the cursor codes."""

    def __init__(self, out=None):
        self.out = sys.stdout if out is None else out

    def write(self, text):
        text = CURSOR_CODES.sub('', text)
        if text:
            self.out.write(text)

    def flush(self):
        self.out.flush()


class PlainProgress(extension.Extension):
    """The progress bar's figures as one plain line, at most every `seconds`."""

    trigger = 1, 'iteration'
    priority = extension.PRIORITY_READER

    def __init__(self, total_iterations, plan, every=5, seconds=30.0, out=None):
        self.total = total_iterations
        self.plan = plan
        self.every = max(1, every)
        self.seconds = seconds
        self.out = sys.stdout if out is None else out
        self._last = None
        self._start = None

    def __call__(self, trainer):
        it = trainer.updater.iteration
        now = time.time()
        if self._start is None:
            self._start = self._last = now
            self._start_it = it - 1
        if it < self.total and (it % self.every or now - self._last < self.seconds):
            return
        rate = (it - self._start_it) / max(now - self._start, 1e-9)
        left = (self.total - it) / rate if rate > 0 else float('nan')
        self.out.write('pfn15: iteration %d/%d (%.0f%%), epoch %.2f, %.2f iterations/s, '
                       '%s left\n' % (it, self.total, 100.0 * it / max(self.total, 1),
                                      self.plan.epochs_at(it), rate, _duration(left)))
        self.out.flush()
        self._last = now


def _duration(sec):
    if sec != sec:
        return '?'
    sec = int(round(sec))
    h, m, s = sec // 3600, sec // 60 % 60, sec % 60
    return '%d:%02d:%02d' % (h, m, s) if h else '%d:%02d' % (m, s)
