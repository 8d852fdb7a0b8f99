"""The stall watchdog's decisions and lines (pfn15.training.stall), and the phases the
trainer's parts tell it (pfn15.training.progress): pure, no MPI, no threads."""
import signal
import types

import pytest

from pfn15 import errors
from pfn15.training import progress, stall
from pfn15.training.watchdog import Watchdog

HOSTS = ['node1', 'node2', 'node3', 'node4']
NOW = 1000.0
END = '. Aborting the job (exit %d)' % errors.STALLED


def seen(phase, position, heard=NOW, slow=False, sig=None, ticks=10):
    return stall.Seen(ticks, position, phase, slow, sig, heard)


def test_a_silent_rank_is_named_with_its_host_and_the_others_wait():
    view = {0: seen('iteration 5: gradient all-reduce', (5, 3)),
            1: seen('iteration 5: microbatch 1/2 (data, forward, backward)', (5, 1),
                    heard=NOW - 20),
            2: seen('iteration 5: gradient all-reduce', (5, 3)),
            3: seen('iteration 5: gradient all-reduce', (5, 3))}
    line = stall.report(view, HOSTS, NOW, 12.4, 8, 0.8)
    assert line == (
        'stalled: no progress for 12 s (train.stall_timeout=8): rank 1 on node2 stopped '
        'answering 20 s ago (last heard at iteration 5: microbatch 1/2 (data, forward, '
        'backward)); ranks 0, 2-3 on node1, node3, node4 wait at iteration 5: gradient '
        'all-reduce' + END)


def test_a_rank_is_silent_after_three_heartbeats_but_never_under_two_seconds():
    assert stall.silent_after(0.1) == 2.0
    assert stall.silent_after(2.0) == 6.0
    view = {0: seen('a', (1, 1)), 1: seen('a', (1, 1), heard=NOW - 1.9)}
    assert 'stopped answering' not in stall.report(view, HOSTS[:2], NOW, 9, 8, 0.1)
    view[1] = seen('a', (1, 1), heard=NOW - 2.1)
    assert 'rank 1 on node2 stopped answering' in stall.report(view, HOSTS[:2], NOW, 9, 8, 0.1)


def test_when_all_answer_the_rank_behind_is_named():
    view = {0: seen('iteration 7: gradient all-reduce', (7, 3)),
            1: seen('iteration 7: gradient all-reduce', (7, 3)),
            2: seen('iteration 7: microbatch 2/2 (data, forward, backward)', (7, 2))}
    line = stall.report(view, HOSTS[:3], NOW, 30, 8, 0.8)
    assert line == (
        'stalled: no progress for 30 s (train.stall_timeout=8): rank 2 on node3 is behind '
        'the others, still at iteration 7: microbatch 2/2 (data, forward, backward); '
        'ranks 0-1 on node1, node2 wait at iteration 7: gradient all-reduce' + END)


def test_the_waiting_ranks_are_grouped_by_phase_the_first_three_groups():
    # Nobody behind (same position), four phases: groups ordered by their first rank.
    view = {0: seen('d', (3, 1)), 1: seen('a', (3, 1)), 2: seen('b', (3, 1)),
            3: seen('a', (3, 1)), 4: seen('c', (3, 1))}
    hosts = ['h0', 'h1', 'h2', 'h1', 'h4']
    line = stall.report(view, hosts, NOW, 10, 8, 0.8)
    assert line == ('stalled: no progress for 10 s (train.stall_timeout=8): rank 0 on h0 '
                    'waits at d; ranks 1, 3 on h1 wait at a; rank 2 on h2 waits at b' + END)


def test_a_signal_while_stalled_says_what_the_emergency_save_did():
    view = {0: seen('iteration 3: extensions', (3, 4)),
            1: seen('iteration 3: extensions', (3, 4), heard=NOW - 10)}
    saved = 'checkpoint of iteration 3 written to OUT/checkpoints/iter_00000003.npz'
    line = stall.report(view, HOSTS[:2], NOW, 9, 8, 0.8, signal.SIGUSR1, saved)
    assert line.endswith('rank 0 on node1 waits at iteration 3: extensions. SIGUSR1 came '
                         'while stalled: %s%s' % (saved, END)), line
    assert stall.report(view, HOSTS[:2], NOW, 9, 8, 0.8).endswith(
        'waits at iteration 3: extensions' + END)


def test_rank1_speaks_for_a_silent_rank0():
    line = stall.rank0_silent(HOSTS[:3], 1, 14.6, 'iteration 2: update',
                              'iteration 2: gradient all-reduce')
    assert line == ('stalled: rank 0 on node1 stopped answering 15 s ago (last heard at '
                    'iteration 2: update); rank 1 on node2 waits at iteration 2: gradient '
                    'all-reduce' + END)
    line = stall.rank0_silent(HOSTS[:3], 1, 14.6, 'p', 'q', signal.SIGTERM,
                              'no checkpoint could be written')
    assert line.endswith('waits at q. SIGTERM came while stalled: no checkpoint could be '
                         'written' + END)
    # Rank 2 waits longer, so that rank 1 speaks first.
    assert stall.standby_delay(1, 0.8) == 0
    assert stall.standby_delay(2, 0.8) == 5.0
    assert stall.standby_delay(3, 4.0) == 16.0


@pytest.mark.parametrize('timeout, factor, slow, sig, expected', [
    (8, 3.0, False, None, 8),
    (8, 3.0, True, None, 24),             # startup_factor x
    (300, 3.0, True, None, 345),          # but at most 45 s more
    (300, 3.0, False, signal.SIGUSR1, 60),   # a pending stop signal: at most 60 s
    (300, 3.0, True, signal.SIGUSR1, 60),
    (8, 3.0, True, signal.SIGUSR1, 24),   # never longer than without it
    (20, 1.0, True, None, 20),
])
def test_allowance_bounds(timeout, factor, slow, sig, expected):
    assert stall.allowance(timeout, factor, slow, sig) == expected


def test_a_job_stalled_anywhere_ends_within_stall_timeout_plus_a_minute():
    for timeout in (1, 8, 45, 300, 3600):
        for slow in (False, True):
            for sig in (None, signal.SIGTERM):
                assert stall.allowance(timeout, 10.0, slow, sig) <= timeout + 60


# ---------------------------------------------------------------- the phases told

def _watchdog():
    return Watchdog(types.SimpleNamespace(rank=0, size=1), 'node1', 8)


def test_progress_phases_and_slow_marks():
    wd = _watchdog()
    p = progress.WatchdogProgress(wd)
    told = []

    def say(call, *args):
        getattr(p, call)(*args)
        told.append((wd.phase, wd.slow))

    for it in (11, 12, 13):   # resumed at 10: the first two iterations are slow
        say('microbatch', it, 1, 2)
        say('microbatch', it, 2, 2)
        say('gradient_allreduce', it)
        say('update', it)
        say('extensions', it)
    assert told[:5] == [('iteration 11: microbatch 1/2 (data, forward, backward)', True),
                        ('iteration 11: microbatch 2/2 (data, forward, backward)', True),
                        ('iteration 11: gradient all-reduce', True),
                        ('iteration 11: update', True),
                        ('iteration 11: extensions (log, evaluation, checkpoint, stop '
                         'check)', True)]
    assert [slow for _, slow in told[5:10]] == [True] * 5
    assert [slow for _, slow in told[10:]] == [False] * 4 + [True]   # extensions: it - 1
    assert wd.position == (13, 5)

    told.clear()
    for _ in range(2):
        say('evaluation_batch', 13, 1)
        say('evaluation_allreduce', 13)
        p.evaluation_done(13)
        say('checkpoint_start', 13)
        say('checkpoint_done', 13)
    assert told == [('iteration 13: evaluation batch 1', True),
                    ('iteration 13: evaluation all-reduce', True),
                    ('iteration 13: checkpoint', True),
                    ('iteration 13: after the checkpoint', False),
                    ('iteration 13: evaluation batch 1', False),
                    ('iteration 13: evaluation all-reduce', False),
                    ('iteration 13: checkpoint', False),
                    ('iteration 13: after the checkpoint', False)]


def test_the_default_progress_does_nothing():
    p = progress.NONE
    for call, args in (('microbatch', (1, 1, 1)), ('gradient_allreduce', (1,)),
                       ('update', (1,)), ('extensions', (1,)), ('evaluation_batch', (1, 1)),
                       ('evaluation_allreduce', (1,)), ('evaluation_done', (1,)),
                       ('checkpoint_start', (1,)), ('checkpoint_done', (1,))):
        assert getattr(p, call)(*args) is None
