"""A new user's first hour where MPI starts (under mpiexec, or pfn15.train alone as
one rank): every mistake is one line, printed once for all ranks, and exit 2; a
signal at any instant of start-up ends the job cleanly. What is caught before
MPI starts: tests/unit/test_first_hour.py."""
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import ROOT, assert_one_line, child_env, mpiexec_path, mpirun, run

from pfn15 import errors

DEMO = 'configs/demo.yaml'


# ---------------------------------------------------------------- python -m pfn15.train

def test_no_arguments_is_a_one_line_usage_error_printed_once():
    r = mpirun(2, ['-m', 'pfn15.train'], timeout=120)
    line = assert_one_line(r, errors.USER_ERROR, 'usage: python -m pfn15.train CONFIG.yaml',
                           'no config file given', 'overrides are optional')
    assert 'required' not in line


def test_dashed_override_says_how_to_write_it_once():
    r = mpirun(2, ['-m', 'pfn15.train', DEMO, '--train.epochs=3'], timeout=120)
    assert_one_line(r, errors.USER_ERROR, '--train.epochs=3', 'without dashes', 'train.epochs=3')
    r = run('-m', 'pfn15.train', DEMO, '--train.epochs', '3')
    assert_one_line(r, errors.USER_ERROR, 'train.epochs=3')
    r = run('-m', 'pfn15.train', DEMO, '--bogus')
    assert_one_line(r, errors.USER_ERROR, 'unrecognized arguments: --bogus')


def test_misspelt_section_suggests_the_key_once(tmp_path):
    r = mpirun(2, ['-m', 'pfn15.train', DEMO, 'trian.epochs=3', 'out=%s' % tmp_path],
               timeout=120)
    assert_one_line(r, errors.USER_ERROR, 'trian: unknown key', 'did you mean train.epochs?')


def test_out_an_existing_file_is_named_clearly(tmp_path):
    existing = tmp_path / 'results.txt'
    existing.write_text('not a directory')
    r = run('-m', 'pfn15.train', DEMO, 'out=%s' % existing)
    assert_one_line(r, errors.USER_ERROR, 'out: %s is a file, not a directory' % existing)
    assert existing.read_text() == 'not a directory'


# ---------------------------------------------------------------- signals from the first instant

@pytest.mark.parametrize('sig,delay', [(signal.SIGINT, 0.1), (signal.SIGINT, 0.5),
                                       (signal.SIGINT, 1.0), (signal.SIGTERM, 0.1),
                                       (signal.SIGTERM, 1.0)])
def test_a_signal_at_any_instant_of_start_up_ends_cleanly(sig, delay, tmp_path):
    """Ctrl-C / SIGTERM to mpiexec 0.1-1 s after launch: the ranks are starting Python,
    importing NumPy/Chainer or initializing MPI. Every case: exit 0, one line."""
    cmd = [mpiexec_path(), '-n', '2', sys.executable, '-m', 'pfn15.train', DEMO,
           'out=%s' % tmp_path, 'train.progress_bar=false']
    p = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(delay)
    p.send_signal(sig)
    try:
        out, err = p.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail('hung after %s at %.1f s:\n%s\n%s' % (sig.name, delay, out, err))
    text = out + err
    if p.returncode != 0 and ('Fatal Python error: init_' in text or 'TERMINATED WITH THE EXIT '
                              'STRING: %s' % {signal.SIGINT: 'Interrupt',
                                              signal.SIGTERM: 'Terminated'}[sig] in text):
        text = ('the signal came while a rank\'s interpreter was still starting, before any '
                'line of pfn15 could run (a loaded machine?):\n' + text)
    assert p.returncode == 0, text
    assert out.count('pfn15: preempted before training started (%s' % sig.name) == 1, text
    for bad in ('Traceback', 'BAD TERMINATION', 'Segmentation', 'KeyboardInterrupt'):
        assert bad not in text, text
    assert not os.path.exists(os.path.join(str(tmp_path), 'checkpoints')) or \
        not os.listdir(os.path.join(str(tmp_path), 'checkpoints'))


# ---------------------------------------------------------------- the other tools

def test_tool_error_under_mpiexec_is_printed_once():
    r = mpirun(2, ['-m', 'pfn15.bench', 'allreduce', '--repeat', 'many'], timeout=120)
    assert_one_line(r, errors.USER_ERROR, "--repeat: invalid int value: 'many'",
                    prog='pfn15.bench')
