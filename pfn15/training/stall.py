"""What the stall watchdog decides and says, from what the heartbeats told it.

Pure: no MPI, no threads. pfn15.training.watchdog gathers each rank's view
(`Seen`) and the hosts, and asks here how long a pause may last and what
line ends the job.
"""
import collections

from pfn15 import errors
from pfn15.training import signals
from pfn15.training.startup import where

PREEMPT_GRACE = 60.0
SLOW_EXTRA = 45.0

# One rank as rank 0 last heard it: ticks so far, (iteration, ticks within it)
# -- comparable across ranks --, its phase line, whether that phase may be
# slow, the stop signal it caught (or None), and when it was heard (monotonic s).
Seen = collections.namedtuple('Seen', 'progress position phase slow signal heard')


def allowance(stall_timeout, startup_factor, slow, signal):
    """Seconds without progress before the job counts as stalled.

    Slow phases get up to startup_factor x, but at most SLOW_EXTRA s more, and
    a pending stop signal at most PREEMPT_GRACE: a job stalled anywhere still
    ends within stall_timeout + 60 s."""
    t = float(stall_timeout)
    if slow:
        t += min((startup_factor - 1.0) * stall_timeout, SLOW_EXTRA)
    if signal is not None:
        t = min(t, PREEMPT_GRACE)
    return t


def silent_after(interval):
    """A rank unheard for this long (heartbeats every `interval` s) stopped answering."""
    return max(3 * interval, 2.0)


def standby_delay(rank, interval):
    """Extra wait of rank `rank` > 0 before it speaks for a silent rank 0: rank 1
    speaks first, rank 2 only if rank 1 is silent too, and so on."""
    return (rank - 1) * max(2 * interval, 5.0)


def report(seen, hosts, now, idle, stall_timeout, interval, signal=None, saved=None):
    """Rank 0's line: the ranks that stopped answering (or, if all answer, those
    behind the others) with their hosts, then where the others wait.

    `seen`: {rank: Seen}; `hosts`: host of each rank; `signal`: a stop signal
    pending (then `saved` says what the emergency checkpoint did)."""
    quiet = silent_after(interval)
    silent = [r for r, s in seen.items() if now - s.heard > quiet]
    alive = [r for r in range(len(hosts)) if r not in silent]
    top = max(seen[r].position for r in alive) if alive else (0, 0)
    behind = [r for r in alive if seen[r].position < top]
    parts = []
    if silent:
        for r in silent:
            parts.append('%s stopped answering %.0f s ago (last heard at %s)'
                         % (where([r], hosts), now - seen[r].heard, seen[r].phase))
        culprits = silent
    elif behind:
        for r in behind:
            parts.append('%s is behind the others, still at %s'
                         % (where([r], hosts), seen[r].phase))
        culprits = behind
    else:
        culprits = []
    waiting = {}
    for r in range(len(hosts)):
        if r not in culprits:
            waiting.setdefault(seen[r].phase, []).append(r)
    for phase, ranks in sorted(waiting.items(), key=lambda kv: kv[1][0])[:3]:
        parts.append('%s wait%s at %s' % (where(ranks, hosts),
                                           's' if len(ranks) == 1 else '', phase))
    text = ('stalled: no progress for %.0f s (train.stall_timeout=%g): %s'
            % (idle, stall_timeout, '; '.join(parts)))
    return _end(text, signal, saved)


def rank0_silent(hosts, rank, heard_ago, rank0_phase, own_phase, signal=None, saved=None):
    """The line of rank `rank` when rank 0 has stopped answering."""
    text = ('stalled: %s stopped answering %.0f s ago (last heard at %s); %s waits at %s'
            % (where([0], hosts), heard_ago, rank0_phase, where([rank], hosts), own_phase))
    return _end(text, signal, saved)


def _end(text, signal, saved):
    if signal is not None:
        text += '. %s came while stalled: %s' % (signals.name(signal), saved)
    return text + '. Aborting the job (exit %d)' % errors.STALLED
