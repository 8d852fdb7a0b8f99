"""A new user's first hour: every mistake is one line and exit 2, signals are safe from
the first instant, and `python -m pfn15.env` runs on a broken install."""
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from helpers import ROOT, child_env, mpiexec_path, mpirun

from pfn15 import config as config_module
from pfn15 import errors

DEMO = 'configs/demo.yaml'


def run(*args, env=None, timeout=120):
    return subprocess.run([sys.executable] + list(args), cwd=ROOT, env=env or child_env(),
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line(r, status, *needles, prog='pfn15'):
    """Exit `status`, exactly one error line (from rank 0), holding every needle; no traceback."""
    text = r.stdout + r.stderr
    assert r.returncode == status, text
    assert 'Traceback' not in text, text
    lines = [line for line in r.stderr.splitlines() if line.startswith(prog + ': error:')]
    assert len(lines) == 1, text
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


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


@pytest.mark.parametrize('override,suggestion', [
    ('trian.epochs=3', 'train.epochs'),        # the section misspelt
    ('train.epohcs=3', 'train.epochs'),        # the key misspelt
    ('trian.epohcs=3', 'train.epochs'),        # both
    ('optimizer.name=rmsprop', 'rmsprop_warmup'),   # a choice
])
def test_did_you_mean_at_every_level(override, suggestion):
    with pytest.raises(config_module.ConfigError) as e:
        config_module.load(DEMO, [override], check_paths=False)
    assert 'did you mean %s?' % suggestion in str(e.value)
    assert e.value.status == errors.USER_ERROR


def test_out_an_existing_file_is_named_clearly(tmp_path):
    existing = tmp_path / 'results.txt'
    existing.write_text('not a directory')
    r = run('-m', 'pfn15.train', DEMO, 'out=%s' % existing)
    assert_one_line(r, errors.USER_ERROR, 'out: %s is a file, not a directory' % existing)
    assert existing.read_text() == 'not a directory'


def test_help_lists_exit_codes_and_where_the_keys_are():
    r = run('-m', 'pfn15.train', '--help')
    assert r.returncode == 0, r.stderr
    for status, _ in errors.EXIT_CODES:
        assert '\n  %-4d ' % status in r.stdout, r.stdout
    assert 'pfn15/config.py' in r.stdout and '--show-config' in r.stdout
    assert '[key=value ...]' in r.stdout


def test_show_config_prints_the_resolved_config(tmp_path):
    r = run('-m', 'pfn15.train', '--show-config', DEMO, 'train.epochs=3', 'batch.per_worker=16')
    assert r.returncode == 0, r.stderr
    shown = yaml.safe_load(r.stdout)
    expected = config_module.load(DEMO, ['train.epochs=3', 'batch.per_worker=16'],
                                  check_paths=False).to_dict()
    assert shown == expected
    assert shown['train']['epochs'] == 3.0 and shown['batch']['per_worker'] == 16
    # what it prints is itself a config that resolves to the same
    (tmp_path / 'resolved.yaml').write_text(r.stdout)
    assert config_module.load(str(tmp_path / 'resolved.yaml'), check_paths=False).to_dict() \
        == expected
    r = run('-m', 'pfn15.train', '--show-config', DEMO, 'trian.epochs=3')
    assert_one_line(r, errors.USER_ERROR, 'did you mean train.epochs?')


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


def test_signal_handlers_come_before_any_heavy_import():
    """What python -m pfn15.train has loaded when its handlers are in place: no NumPy,
    Chainer, CuPy, MPI, nor a shared library of the CUDA wheels."""
    code = ('import sys, runpy, signal\n'
            'import pfn15.training.signals as s\n'
            'orig = s.install\n'
            'def spy():\n'
            '    r = orig()\n'
            '    heavy = [m for m in ("numpy", "chainer", "cupy", "mpi4py", "yaml", '
            '"pfn15._compat", "pfn15.cuda_libs") if m in sys.modules]\n'
            '    print("HEAVY", heavy, signal.getsignal(signal.SIGINT) is s._handler)\n'
            '    raise SystemExit(0)\n'
            's.install = spy\n'
            'sys.argv = ["pfn15.train", "%s"]\n'
            'runpy.run_module("pfn15.train", run_name="__main__")\n' % DEMO)
    r = run('-c', code)
    assert r.returncode == 0, r.stderr
    assert 'HEAVY [] True' in r.stdout, r.stdout


# ---------------------------------------------------------------- python -m pfn15.env, broken install

def _stdlib_only_env():
    env = child_env()
    env['PYTHONPATH'] = ROOT   # pfn15 itself, and nothing else beyond the standard library
    return env


@pytest.mark.parametrize('args', [[], [DEMO]])
def test_env_on_an_install_with_only_the_standard_library(args):
    # -S: no site-packages (the venv's, the user's): NumPy, Chainer, mpi4py... all missing
    r = run('-S', '-m', 'pfn15.env', *args, env=_stdlib_only_env())
    text = r.stdout + r.stderr
    assert r.returncode == errors.USER_ERROR, text
    assert 'Traceback' not in text, text
    problems = [line for line in r.stderr.splitlines() if line.startswith('pfn15.env: problem:')]
    assert len(problems) == len(r.stderr.splitlines()), r.stderr
    for part in ('NumPy', 'Chainer', 'PyYAML', 'Pillow', 'scikit-learn', 'matplotlib', 'MPI'):
        assert sum(line.startswith('pfn15.env: problem: ' + part + ' ') or
                   line.startswith('pfn15.env: problem: ' + part + ':')
                   for line in problems) == 1, (part, r.stderr)
    assert len(problems) == 7, r.stderr
    assert 'MPI       unusable: mpi4py cannot be imported' in r.stdout
    if args:
        assert 'was not checked' in r.stdout


def test_env_help_lists_exit_codes():
    r = run('-m', 'pfn15.env', '--help')
    assert r.returncode == 0 and 'exit status:' in r.stdout and 'pfn15/config.py' in r.stdout


# ---------------------------------------------------------------- the other tools

@pytest.mark.parametrize('prog,args,needles', [
    ('plan', ['--preset', 'pfnn'], ["invalid choice: 'pfnn'", 'did you mean pfn?']),
    ('plan', ['--workrs', '3'], ['unrecognized arguments', 'did you mean --workers']),
    ('plan', ['--workers', 'x'], ['expected a comma-separated list of integers']),
    ('bench', ['stpe'], ["invalid choice: 'stpe'", 'did you mean step?']),
    ('bench', ['step', '--arch', 'resnet5'], ['did you mean resnet50']),
    ('report', [], ['the following arguments are required: out_dir']),
    ('data', ['sytnh', 'x'], ["invalid choice: 'sytnh'", 'did you mean synth?']),
    ('data', ['synth', 'x', '--classes', '0'], ['--classes must be in 1..']),
])
def test_tool_errors_are_one_line_exit_2(prog, args, needles):
    r = run('-m', 'pfn15.' + prog, *args)
    assert_one_line(r, errors.USER_ERROR, *needles, prog='pfn15.' + prog)


def test_tool_error_on_a_path_given_is_one_line(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('')
    r = run('-m', 'pfn15.plan', '--preset', 'pfn', '--json', str(blocker / 'x.json'))
    assert_one_line(r, errors.USER_ERROR, str(blocker), prog='pfn15.plan')


def test_tool_error_under_mpiexec_is_printed_once():
    r = mpirun(2, ['-m', 'pfn15.bench', 'allreduce', '--repeat', 'many'], timeout=120)
    assert_one_line(r, errors.USER_ERROR, "--repeat: invalid int value: 'many'",
                    prog='pfn15.bench')


def test_tool_help_lists_exit_codes():
    for prog in ('plan', 'bench', 'report', 'data'):
        r = run('-m', 'pfn15.' + prog, '--help')
        assert r.returncode == 0, (prog, r.stderr)
        assert 'exit status:' in r.stdout and '2    user error' in r.stdout, (prog, r.stdout)
