"""A new user's first hour, in processes that start no MPI: every mistake is one line
and exit 2, the signal handlers are in place before any heavy import, and
`python -m pfn15.env` runs on a broken install. Mistakes met once MPI starts, and
signals at every instant of start-up: tests/mpi/test_first_hour_launch.py."""
import pytest
import yaml

from helpers import ROOT, assert_one_line, child_env, run

from pfn15 import config as config_module
from pfn15 import errors

DEMO = 'configs/demo.yaml'


# ---------------------------------------------------------------- python -m pfn15.train

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


def test_tool_help_lists_exit_codes():
    for prog in ('plan', 'bench', 'report', 'data'):
        r = run('-m', 'pfn15.' + prog, '--help')
        assert r.returncode == 0, (prog, r.stderr)
        assert 'exit status:' in r.stdout and '2    user error' in r.stdout, (prog, r.stdout)
