"""The stall watchdog: a job that stops making progress ends, naming the rank that stopped.

A rank blocked in an all-reduce cannot run Python code, and a rank stopped
by the kernel (SIGSTOP, a node stuck on NFS) cannot run anything. So the
watching happens in a daemon thread on every rank, with point-to-point
messages of its own (non-blocking, on a duplicate of MPI_COMM_WORLD; MPI_THREAD_MULTIPLE
lets them run while the main thread sits in a collective), as Horovod's stall
check and PyTorch's NCCL watchdog do:

* the main thread only records progress: `tick(phase)` at microbatch,
  all-reduce, evaluation-batch and checkpoint boundaries (an attribute write;
  the updater, evaluator and checkpointer say where they are through
  pfn15.training.progress);
* every `interval` each rank's thread sends rank 0 a heartbeat (progress
  count, iteration and phase, e.g. 'iteration 12: gradient all-reduce', and
  any stop signal it caught); rank 0's thread answers every rank with a pulse;
* when no rank has progressed for `train.stall_timeout` seconds (up to
  `startup_factor` x, but at most 45 s more, during start-up, the first
  iterations, the first evaluation and the first checkpoint; at most 60 s
  once a stop signal is pending), rank 0 prints one line naming the ranks that stopped answering
  (or, if all answer, those behind the others) with their hosts, and where
  the others wait (pfn15.training.stall words it), and calls MPI_Abort with
  errors.STALLED: the launcher ends every rank, the stopped ones included;
* if rank 0 itself goes silent, rank 1 (failing it, rank 2, ...) says so.

A stop signal caught while the job is stalled reaches the thread through the
wakeup socket (pfn15.training.signals); the job then ends within a minute,
after `emergency_save()` (a checkpoint of the last completed iteration, if
the checkpoint format lets a healthy rank write one) or a line saying why
none could be written.
"""
import socket
import sys
import threading
import time

from pfn15 import errors
from pfn15.training import stall

HEARTBEAT_TAG = 31415
PULSE_TAG = 31416


class Watchdog(object):

    def __init__(self, world, host, stall_timeout, startup_factor=3.0, interval=None):
        self.world = world
        self.rank = world.rank
        self.size = world.size
        # Hosts as the heartbeats tell them (no collective needed to start watching).
        self.hosts = ['?'] * self.size
        self.hosts[self.rank] = host
        self.stall_timeout = float(stall_timeout)
        self.startup_factor = float(startup_factor)
        self.interval = interval or min(max(self.stall_timeout / 10.0, 0.1), 2.0)
        # Written by the main thread, read by the watchdog thread.
        self.progress = 0                # ticks so far
        self.position = (-1, 0)          # (iteration, ticks within it): comparable across ranks
        self.phase = 'start-up'
        self.slow = True                 # a phase that may take startup_factor x longer
        self.emergency_save = None       # callable -> one line, set by train.py
        self._stop = threading.Event()
        self._stop_r, self._stop_w = socket.socketpair()   # wakes the thread to stop
        self._thread = None
        self._out = {}                   # destination -> pending send request
        # Rank 0's view of every rank: progress, phase, slow, signal, last heard.
        now = time.monotonic()
        self._seen = {r: stall.Seen(0, (-1, 0), 'start-up', True, None, now)
                      for r in range(self.size)}
        self._last_change = now
        self._progress_sum = 0
        self._pulse = (now, 0, 'start-up', True)   # others' view of rank 0

    # ------------------------------------------------------------ main thread
    def tick(self, phase, iteration, slow=False):
        self.progress += 1
        if iteration != self.position[0]:
            self.position = (iteration, 1)
        else:
            self.position = (iteration, self.position[1] + 1)
        self.phase = 'iteration %d: %s' % (iteration, phase) if iteration >= 0 else phase
        self.slow = slow

    def start(self):
        from mpi4py import MPI
        if self.size == 1:
            return self   # no one to wait for
        if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
            if self.rank == 0:
                print('pfn15: warning: this MPI gives no MPI_THREAD_MULTIPLE; the stall '
                      'watchdog is off', file=sys.stderr, flush=True)
            return self
        self._thread = threading.Thread(target=self._run, name='pfn15-watchdog', daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=10.0):
        """End the thread (before MPI_Finalize; no MPI call from it after this returns),
        then say goodbye: every rank stops at the same point (the end of training, a
        collective exit), and each receives the others' last messages up to their
        'bye' (messages from one sender arrive in order), so none is left unreceived
        for the MPI library to warn about at finalize. Bounded by `timeout`."""
        self._stop.set()
        try:
            self._stop_w.send(b'x')
        except OSError:
            pass
        thread, self._thread = self._thread, None
        if thread is None or thread is threading.current_thread():
            return
        thread.join()
        deadline = time.monotonic() + timeout
        try:
            if self.rank == 0:
                for r in range(1, self.size):
                    self._send(r, PULSE_TAG, None, wait_until=deadline)
                self._drain(HEARTBEAT_TAG, set(range(1, self.size)), deadline)
            else:
                self._send(0, HEARTBEAT_TAG, None, wait_until=deadline)
                self._drain(PULSE_TAG, {0}, deadline)
            for req in self._out.values():
                while not req.Test() and time.monotonic() < deadline:
                    time.sleep(0.001)
        except Exception:
            pass

    def _drain(self, tag, senders, deadline):
        """Receive on `tag` until every one of `senders` has said bye (None)."""
        while senders and time.monotonic() < deadline:
            got = False
            for src, payload in self._receive(tag):
                got = True
                if payload is None:
                    senders.discard(src)
            if not got:
                time.sleep(0.001)

    # ------------------------------------------------------------ the thread
    def _run(self):
        import select
        from pfn15.training import signals
        wake = signals.wakeup_socket()
        watched = [self._stop_r] + ([wake] if wake is not None else [])
        while not self._stop.is_set():
            ready, _, _ = select.select(watched, [], [], self.interval)
            if wake is not None and wake in ready:
                signals.drain_wakeup()
            if self._stop.is_set():
                break
            try:
                if self.rank == 0:
                    self._monitor(signals.received)
                else:
                    self._heartbeat(signals.received)
            except Exception as e:   # never let the watchdog itself kill or hang a run
                if self._stop.is_set():
                    return
                print('pfn15: warning: watchdog on rank %d: %s' % (self.rank, e),
                      file=sys.stderr, flush=True)
                return

    def _send(self, dest, tag, payload, wait_until=None):
        req = self._out.get(dest)
        while req is not None and not req.Test():
            if wait_until is None or time.monotonic() > wait_until:
                return   # the last one is still in flight (a stopped peer): do not pile up
            time.sleep(0.001)
        self._out[dest] = self.world.isend(payload, dest=dest, tag=tag)

    def _receive(self, tag):
        from mpi4py import MPI
        status = MPI.Status()
        while self.world.Iprobe(source=MPI.ANY_SOURCE, tag=tag, status=status):
            yield status.Get_source(), self.world.recv(source=status.Get_source(), tag=tag)

    def _allowance(self, slow, signal):
        return stall.allowance(self.stall_timeout, self.startup_factor, slow, signal)

    # rank 0 ---------------------------------------------------------------
    def _monitor(self, own_signal):
        now = time.monotonic()
        self._seen[0] = stall.Seen(self.progress, self.position, self.phase, self.slow,
                                   own_signal, now)
        for src, beat in self._receive(HEARTBEAT_TAG):
            if beat is None:
                continue
            self.hosts[src] = beat[0]
            self._seen[src] = stall.Seen(*beat[1:], heard=now)
        for r in range(1, self.size):
            self._send(r, PULSE_TAG, (self.hosts[0], self.progress, self.phase, self.slow))
        total = sum(s.progress for s in self._seen.values())
        if total != self._progress_sum:
            self._progress_sum, self._last_change = total, now
        slow = any(s.slow for s in self._seen.values())
        signal = next((s.signal for s in self._seen.values() if s.signal is not None), None)
        idle = now - self._last_change
        if idle > self._allowance(slow, signal):
            self._abort(stall.report(self._seen, self.hosts, now, idle, self.stall_timeout,
                                     self.interval, signal,
                                     self._save() if signal is not None else None))

    # ranks > 0 ---------------------------------------------------------------
    def _heartbeat(self, own_signal):
        now = time.monotonic()
        self._send(0, HEARTBEAT_TAG, (self.hosts[self.rank], self.progress, self.position,
                                      self.phase, self.slow, own_signal))
        for _, pulse in self._receive(PULSE_TAG):
            if pulse is None:
                continue
            host, progress, phase, slow = pulse
            self.hosts[0] = host
            self._pulse = (now, progress, phase, slow)
        heard, _, phase, slow = self._pulse
        allowance = (self._allowance(slow, own_signal)
                     + stall.standby_delay(self.rank, self.interval))
        if now - heard > allowance:
            self._abort(stall.rank0_silent(self.hosts, self.rank, now - heard, phase, self.phase,
                                           own_signal,
                                           self._save() if own_signal is not None else None))

    # ---------------------------------------------------------------------------
    def _save(self):
        if self.emergency_save is None:
            return 'no checkpoint could be written'
        try:
            return self.emergency_save()
        except Exception as e:
            return 'no checkpoint could be written (%s: %s)' % (type(e).__name__, e)

    def _abort(self, text):
        # On MPI_COMM_WORLD, not our duplicate: MPICH's mpiexec then reliably
        # reports the abort's status (with the duplicate it sometimes reported
        # the SIGKILL it sent the stopped rank, 9).
        errors.abort_job('pfn15: error: %s' % text, errors.STALLED)
