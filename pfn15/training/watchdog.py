"""The stall watchdog: a job that stops making progress ends, naming the rank that stopped.

A rank blocked in an all-reduce cannot run Python code, and a rank stopped
by the kernel (SIGSTOP, a node stuck on NFS) cannot run anything. So the
watching happens in a daemon thread on every rank, with point-to-point
messages of its own (non-blocking, on a duplicate of MPI_COMM_WORLD; MPI_THREAD_MULTIPLE
lets them run while the main thread sits in a collective), as Horovod's stall
check and PyTorch's NCCL watchdog do:

* the main thread only records progress: `tick(phase)` at microbatch,
  all-reduce, evaluation-batch and checkpoint boundaries (an attribute write);
* every `interval` each rank's thread sends rank 0 a heartbeat (progress
  count, iteration and phase, e.g. 'iteration 12: gradient all-reduce', and
  any stop signal it caught); rank 0's thread answers every rank with a pulse;
* when no rank has progressed for `train.stall_timeout` seconds (up to
  `startup_factor` x, but at most 45 s more, during start-up, the first
  iterations, the first evaluation and the first checkpoint; at most 60 s
  once a stop signal is pending), rank 0 prints one line naming the ranks that stopped answering
  (or, if all answer, those behind the others) with their hosts, and where
  the others wait, and calls MPI_Abort with errors.STALLED: the launcher ends every rank, the
  stopped ones included;
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
HEARTBEAT_TAG = 31415
PULSE_TAG = 31416
PREEMPT_GRACE = 60.0
SLOW_EXTRA = 45.0


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
        self._seen = {r: (0, (-1, 0), 'start-up', True, None, now) for r in range(self.size)}
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
        # Slow phases get up to startup_factor x, but at most 45 s more: a job
        # stalled anywhere still ends within stall_timeout + 60 s.
        t = self.stall_timeout
        if slow:
            t += min((self.startup_factor - 1.0) * self.stall_timeout, SLOW_EXTRA)
        if signal is not None:
            t = min(t, PREEMPT_GRACE)
        return t

    # rank 0 ---------------------------------------------------------------
    def _monitor(self, own_signal):
        now = time.monotonic()
        self._seen[0] = (self.progress, self.position, self.phase, self.slow, own_signal, now)
        for src, beat in self._receive(HEARTBEAT_TAG):
            if beat is None:
                continue
            self.hosts[src] = beat[0]
            self._seen[src] = tuple(beat[1:]) + (now,)
        for r in range(1, self.size):
            self._send(r, PULSE_TAG, (self.hosts[0], self.progress, self.phase, self.slow))
        total = sum(s[0] for s in self._seen.values())
        if total != self._progress_sum:
            self._progress_sum, self._last_change = total, now
        slow = any(s[3] for s in self._seen.values())
        signal = next((s[4] for s in self._seen.values() if s[4] is not None), None)
        idle = now - self._last_change
        if idle > self._allowance(slow, signal):
            self._abort(self._report(now, idle, signal))

    def _report(self, now, idle, signal):
        from pfn15.training import signals
        from pfn15.training.startup import where
        silent_after = max(3 * self.interval, 2.0)
        silent = [r for r, s in self._seen.items() if now - s[5] > silent_after]
        alive = [r for r in range(self.size) if r not in silent]
        top = max(self._seen[r][1] for r in alive) if alive else (0, 0)
        behind = [r for r in alive if self._seen[r][1] < top]
        parts = []
        if silent:
            for r in silent:
                parts.append('%s stopped answering %.0f s ago (last heard at %s)'
                             % (where([r], self.hosts), now - self._seen[r][5],
                                self._seen[r][2]))
            culprits = silent
        elif behind:
            for r in behind:
                parts.append('%s is behind the others, still at %s'
                             % (where([r], self.hosts), self._seen[r][2]))
            culprits = behind
        else:
            culprits = []
        waiting = {}
        for r in range(self.size):
            if r not in culprits:
                waiting.setdefault(self._seen[r][2], []).append(r)
        for phase, ranks in sorted(waiting.items(), key=lambda kv: kv[1][0])[:3]:
            parts.append('%s wait%s at %s' % (where(ranks, self.hosts),
                                               's' if len(ranks) == 1 else '', phase))
        text = ('stalled: no progress for %.0f s (train.stall_timeout=%g): %s'
                % (idle, self.stall_timeout, '; '.join(parts)))
        if signal is not None:
            text += '. %s came while stalled: %s' % (signals.name(signal), self._save())
        return text + '. Aborting the job (exit %d)' % errors.STALLED

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
        # Rank 1 speaks for a silent rank 0; rank 2 only if rank 1 is silent too...
        allowance = (self._allowance(slow, own_signal)
                     + (self.rank - 1) * max(2 * self.interval, 5.0))
        if now - heard > allowance:
            from pfn15.training import signals
            from pfn15.training.startup import where
            text = ('stalled: %s stopped answering %.0f s ago (last heard at %s); %s waits at %s'
                    % (where([0], self.hosts), now - heard, phase,
                       where([self.rank], self.hosts), self.phase))
            if own_signal is not None:
                text += '. %s came while stalled: %s' % (signals.name(own_signal), self._save())
            self._abort(text + '. Aborting the job (exit %d)' % errors.STALLED)

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
        print('pfn15: error: %s' % text, file=sys.stderr, flush=True)
        from mpi4py import MPI
        MPI.COMM_WORLD.Abort(errors.STALLED)


# ---------------------------------------------------------------- the main thread's ticks

class _TickingConverter(object):
    """Wraps a converter: one tick per batch converted (Converter or old-style function)."""

    def __new__(cls, converter, on_batch):
        from chainer.dataset import convert

        class Ticking(convert.Converter):
            def __call__(self, batch, device=None):
                on_batch()
                return convert._call_converter(converter, batch, _as_device(device))
        return Ticking()


def _as_device(device):
    """A backend.Device for what callers pass a converter (a Device, None, or an
    old-style device id such as pfn15's evaluator's -1)."""
    from chainer import backend
    if device is None or isinstance(device, backend.Device):
        return device
    if isinstance(device, int):
        return backend.CpuDevice() if device < 0 else backend.get_device('@cupy:%d' % device)
    return backend.get_device(device)


def attach(watchdog, trainer, comm, checkpointer, evaluator_name='validation'):
    """Make the trainer report its progress to `watchdog` (no change to the updater,
    the evaluator or the checkpointer: their entry points are wrapped here)."""
    from chainer.training import extension

    updater = trainer.updater
    state = {'start': None, 'iteration': None, 'microbatch': 0, 'evaluations': 0,
             'checkpoints': 0}

    def first_iterations(it):
        if state['start'] is None:
            state['start'] = it
        return it < state['start'] + 2

    def on_microbatch():
        it = updater.iteration + 1
        if state['iteration'] != it:
            state['iteration'], state['microbatch'] = it, 0
        state['microbatch'] += 1
        k = getattr(updater, 'microbatches', 1)
        watchdog.tick('microbatch %d/%d (data, forward, backward)' % (state['microbatch'], k),
                      it, slow=first_iterations(it))
    updater.converter = _TickingConverter(updater.converter, on_microbatch)

    def ticking(mean_grad):
        def ticking_mean_grad(*args, **kw):
            it = updater.iteration + 1
            watchdog.tick('gradient all-reduce', it, slow=first_iterations(it))
            out = mean_grad(*args, **kw)
            watchdog.tick('update', it, slow=first_iterations(it))
            return out
        return ticking_mean_grad
    comm.multi_node_mean_grad = ticking(comm.multi_node_mean_grad)
    if getattr(updater, 'canonical', False):   # comm.reduction=canonical's own all-reduce
        updater.canonical_allreduce = ticking(updater.canonical_allreduce)

    try:
        evaluator = trainer.get_extension(evaluator_name)
    except ValueError:   # no evaluator: the ticks around it say 'extensions'
        evaluator = None
    if evaluator is not None and hasattr(evaluator, 'converter'):
        batches = {'n': 0}

        def on_eval_batch():
            batches['n'] += 1
            watchdog.tick('evaluation batch %d' % batches['n'], updater.iteration,
                          slow=state['evaluations'] == 0)
        evaluator.converter = _TickingConverter(evaluator.converter, on_eval_batch)
        if hasattr(evaluator, 'before_allreduce'):   # pfn15's whole-set evaluator
            evaluator.before_allreduce = lambda: watchdog.tick(
                'evaluation all-reduce', updater.iteration, slow=state['evaluations'] == 0)
        local = getattr(evaluator, '_mn_original_evaluate', None)
        if local is not None:   # ChainerMN's evaluator: local batches, then an all-reduce
            def ticking_local():
                out = local()
                watchdog.tick('evaluation all-reduce', updater.iteration,
                              slow=state['evaluations'] == 0)
                return out
            evaluator._mn_original_evaluate = ticking_local
        evaluate = evaluator.evaluate

        def ticking_evaluate():
            batches['n'] = 0
            out = evaluate()
            state['evaluations'] += 1
            return out
        evaluator.evaluate = ticking_evaluate

    save = checkpointer.save

    def ticking_save(*args, **kw):
        watchdog.tick('checkpoint', updater.iteration, slow=state['checkpoints'] == 0)
        out = save(*args, **kw)
        state['checkpoints'] += 1
        watchdog.tick('after the checkpoint', updater.iteration)
        return out
    checkpointer.save = ticking_save

    class AfterUpdate(extension.Extension):
        # First of the extensions: what follows (log, evaluation, checkpoint,
        # the stop check) shows as this iteration's extensions.
        trigger = 1, 'iteration'
        priority = extension.PRIORITY_WRITER + 100
        name = 'watchdog'

        def __call__(self, trainer):
            it = updater.iteration
            watchdog.tick('extensions (log, evaluation, checkpoint, stop check)', it,
                          slow=first_iterations(it - 1))
    trainer.extend(AfterUpdate())
