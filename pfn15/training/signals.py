"""Stop signals, caught from the first line of main(): SIGTERM, SIGUSR1, SIGINT.

Imports nothing but the standard library (and pfn15/__init__ is light), so
`python -m pfn15.train` calls `install()` before NumPy, Chainer, CuPy, the
CUDA libraries or MPI load, and a scheduler's signal is never lost to a
default handler that kills the rank.

* SIGTERM / SIGUSR1 (preemption, the SLURM time-limit warning) and a first
  SIGINT (Ctrl-C; mpiexec forwards it to every rank) only set a flag: the
  trainer stops at the end of the iteration with a checkpoint
  (`checks.StopSignal`), or, before the first iteration, start-up stops
  with exit 0.
* A second SIGINT stops at once: one line from rank 0, exit 130
  (errors.INTERRUPTED), no traceback.

A Python handler runs only when the main thread executes bytecode; a rank
blocked in an MPI call would not see the signal until the call returns --
never, if the job is stalled. So the C-level handler also writes the signal
number to a socket (`signal.set_wakeup_fd`), which the watchdog thread reads
(`wakeup_socket()`): it learns of the preemption while the main thread waits.
"""
import _thread
import os
import signal
import sys

from pfn15 import errors   # standard library, loaded lazily there

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

received = None                 # the first stop signal's number, or None
# SIGINTs counted by each path separately: the Python handler and the wakeup
# socket see the same signal, so adding them up would count one Ctrl-C twice.
_interrupts = {'handler': 0, 'wakeup': 0}
_wakeup_read = None
_rank = None                    # set once MPI is up; before, the launcher's rank


def rank():
    return _rank if _rank is not None else errors.launcher_rank()


def set_rank(r):
    global _rank
    _rank = r


def name(signum):
    try:
        return signal.Signals(signum).name
    except ValueError:
        return 'signal %d' % signum


def note(signum, source='handler'):
    """Record a stop signal seen by `source` ('handler', or 'wakeup': the watchdog
    thread reading the wakeup socket)."""
    global received
    if signum not in STOP_SIGNALS:
        return
    if received is None:
        received = signum
    if signum == signal.SIGINT:
        _interrupts[source] += 1
        if _interrupts[source] >= 2:
            stop_now()


def _handler(signum, frame):
    note(signum, 'handler')


_stopping = _thread.allocate_lock()


def stop_now():
    """The second Ctrl-C: no checkpoint, no traceback, exit 130 on every rank it reaches.

    Both the main thread's handler and the watchdog thread (reading the wakeup
    socket) count interrupts; whichever gets here first speaks and exits.
    """
    if not _stopping.acquire(blocking=False):
        return   # the other thread is already exiting
    if rank() == 0:
        try:
            print('pfn15: interrupted twice: stopped at once without a checkpoint',
                  file=sys.stderr, flush=True)
        except Exception:
            pass
    else:
        # The launcher kills every rank once one exits: leave rank 0 the moment it
        # needs to say why, or its line is lost.
        import time
        time.sleep(0.5)
    try:   # decoding processes would otherwise outlive us
        import multiprocessing
        for child in multiprocessing.active_children():
            child.terminate()
    except Exception:
        pass
    os._exit(errors.INTERRUPTED)


def install():
    """Catch the stop signals and open the wakeup socket. Main thread, first thing."""
    global _wakeup_read
    for s in STOP_SIGNALS:
        signal.signal(s, _handler)
    if _wakeup_read is None:
        import socket   # after the handlers: its import takes milliseconds
        r, w = socket.socketpair()
        r.setblocking(False)
        w.setblocking(False)
        signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
        _wakeup_read, _wakeup_write = r, w
        install._keep = w          # the write end must stay open
    return _wakeup_read


def wakeup_socket():
    """The read end: one byte (the signal number) per signal caught, even while the
    main thread is blocked in C code."""
    return _wakeup_read


def drain_wakeup():
    """Note the signals written to the wakeup socket since the last call (the watchdog
    thread's view) and return their numbers."""
    if _wakeup_read is None:
        return []
    out = []
    while True:
        try:
            data = _wakeup_read.recv(64)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break
        if not data:
            break
        out.extend(data)
    for signum in out:
        note(signum, 'wakeup')
    return out


def pending():
    """Whether a stop signal has been caught on this rank."""
    return received is not None
