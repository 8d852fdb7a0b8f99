"""The SLURM job scripts on a real SLURM (tests/slurm/slurm_cluster.py: munged, slurmctld,
two slurmd on this machine). Root with apt (as CI runs) installs slurm-wlm and
munge if missing; elsewhere these tests skip with the reason.

* `sbatch jobs/slurm/cpu-check.sh`, the README's cluster check, as written
  (2 nodes x 2 ranks; mpiexec starts its proxies through SLURM), to completion;
* the time-limit path: `scancel --batch --signal=USR1` while it trains (what
  `--signal=B:USR1@120` does at the limit): the script passes the signal on,
  the ranks checkpoint and exit 0, the script runs `scontrol requeue`, the
  requeued job resumes from the checkpoint and finishes with the same
  summary.json figures as the uninterrupted job;
* the same signal while the script still runs its stack check (`python -m
  pfn15.env`, before any rank starts): the script's early trap notes it, it
  requeues without training, and the requeued job trains from the start to
  the uninterrupted job's figures.

Only the output paths are set from outside (PFN15_OUT, sbatch --output).
"""
import json
import os
import shlex
import sys
import time

import pytest

from helpers import ROOT
import slurm_cluster

pytestmark = pytest.mark.slow
SCRIPT = 'jobs/slurm/cpu-check.sh'
JOB_TIMEOUT = 600


@pytest.fixture(scope='module')
def slurm(tmp_path_factory):
    reason = slurm_cluster.why_not()
    if reason:
        pytest.skip('no real SLURM: %s' % reason)
    cluster = slurm_cluster.SlurmCluster(tmp_path_factory.mktemp('slurm'))
    t0 = time.time()
    try:
        cluster.start()
    except Exception as e:
        cluster.stop()
        pytest.fail('could not start SLURM: %s' % e)
    print('SLURM up in %.1f s' % (time.time() - t0))
    yield cluster
    cluster.stop()


def submit(slurm, out_dir, bin_first=None, **extra_env):
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ['PATH']
    env = dict(slurm.env, PFN15_OUT=out_dir,
               PATH=(bin_first + os.pathsep + path) if bin_first else path, **extra_env)
    log = os.path.join(out_dir + '-slurm.out')
    r = slurm.run(['sbatch', '--parsable', '--output=' + log, SCRIPT], cwd=ROOT, env=env)
    return r.stdout.strip().split(';')[0], log


def wait_done(slurm, job_id, log, restarts=0, timeout=JOB_TIMEOUT):
    t0 = time.time()
    released = False
    while True:
        job = slurm.job(job_id)
        state = job.get('JobState')
        if (state == 'PENDING' and job.get('Reason') == 'BeginTime'
                and int(job.get('Restarts', 0)) >= 1 and not released):
            # slurmctld holds a requeued job for two minutes before it may start
            # again; a site's queue would too. Let it start now.
            slurm.run(['scontrol', 'update', 'JobId=%s' % job_id, 'StartTime=now'])
            released = True
        if state in ('COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY'):
            if state != 'COMPLETED' or int(job.get('Restarts', 0)) >= restarts:
                return job, read(log)
        if time.time() - t0 > timeout:
            slurm.run(['scancel', job_id], check=False)
            pytest.fail('job %s not done in %d s (%s)\n%s\n%s'
                        % (job_id, timeout, state, read(log)[-3000:], slurm.logs()))
        time.sleep(0.5)


def read(path):
    try:
        with open(path, errors='replace') as f:
            return f.read()
    except OSError:
        return ''


def summary(out_dir):
    with open(os.path.join(out_dir, 'summary.json')) as f:
        return json.load(f)


@pytest.fixture(scope='module')
def uninterrupted(slurm, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('cpu-check') / 'straight')
    t0 = time.time()
    job_id, log = submit(slurm, out)
    job, text = wait_done(slurm, job_id, log)
    return job, text, out, time.time() - t0


def test_cpu_check_runs_to_completion(uninterrupted):
    job, text, out, took = uninterrupted
    print('cpu-check.sh on SLURM: %.1f s' % took)
    assert job['JobState'] == 'COMPLETED' and job['ExitCode'] == '0:0', text[-3000:]
    assert job['NumNodes'] == '2' and job['NumTasks'] == '4', job
    for rank in range(4):   # step 1: mpi4py talks to this mpiexec across both nodes
        assert 'rank %d of 4 on' % rank in text, text[-3000:]
    assert 'pfn15: done:' in text and 'preempted' not in text, text[-3000:]
    s = summary(out)
    assert s['workers'] == 4 and s['iterations'] > 0 and s['val_top1'] > 0.9, s


def test_time_limit_signal_checkpoints_requeues_and_resumes(slurm, uninterrupted,
                                                            tmp_path_factory):
    out = str(tmp_path_factory.mktemp('cpu-check') / 'preempted')
    t0 = time.time()
    job_id, log = submit(slurm, out)
    deadline = time.time() + JOB_TIMEOUT
    while not os.path.exists(os.path.join(out, 'log')):     # the first epoch is logged
        assert slurm.job(job_id).get('JobState') in ('PENDING', 'RUNNING', 'CONFIGURING'), \
            read(log)[-3000:]
        assert time.time() < deadline, read(log)[-3000:]
        time.sleep(0.2)
    slurm.run(['scancel', '--batch', '--signal=USR1', job_id])
    job, text = wait_done(slurm, job_id, log, restarts=1)
    print('cpu-check.sh on SLURM, preempted and requeued: %.1f s' % (time.time() - t0))
    assert job['JobState'] == 'COMPLETED' and job['ExitCode'] == '0:0', text[-3000:]
    assert int(job['Restarts']) == 1, job
    assert 'pfn15: preempted: SIGUSR1: checkpoint written at iteration' in text, text[-3000:]
    assert 'pfn15: checkpoint written; requeueing job %s' % job_id in text, text[-3000:]
    stopped_at = int(text.split('checkpoint written at iteration ')[1].split(';')[0])
    assert 'pfn15: resumed from the checkpoint at iteration %d' % stopped_at in text
    a, b = summary(uninterrupted[2]), summary(out)
    assert b['resumed_from_iteration'] == stopped_at
    assert 0 < stopped_at < a['iterations']
    for key in ('iterations', 'epochs', 'val_top1', 'val_loss', 'train_loss', 'workers'):
        assert b[key] == pytest.approx(a[key], rel=1e-6), key


def test_time_limit_signal_during_the_stack_check_requeues_before_training(
        slurm, uninterrupted, tmp_path_factory):
    base = tmp_path_factory.mktemp('cpu-check')
    out = str(base / 'early')
    # The job's venv (PFN15_VENV, the script's edit block) holds a `python` that,
    # on the first run, has the stack check ask SLURM to signal the batch script
    # (real slurmd delivery), and gives the signal time to arrive while the
    # check still runs; then, and for every other call, the real python.
    venv = base / 'venv'
    bin_dir = venv / 'bin'
    bin_dir.mkdir(parents=True)
    (bin_dir / 'activate').write_text(
        'VIRTUAL_ENV=%s\nPATH="$VIRTUAL_ENV/bin:$PATH"\nexport VIRTUAL_ENV PATH\n'
        % shlex.quote(str(venv)))
    wrapper = bin_dir / 'python'
    wrapper.write_text(
        '#!/bin/bash\n'
        'if [ "$1 $2" = "-m pfn15.env" ] && [ "${SLURM_RESTART_COUNT:-0}" = 0 ]; then\n'
        '    scancel --batch --signal=USR1 "$SLURM_JOB_ID"\n'
        '    sleep 3\n'
        'fi\n'
        'exec %s "$@"\n' % shlex.quote(sys.executable))
    wrapper.chmod(0o755)
    t0 = time.time()
    job_id, log = submit(slurm, out, bin_first=str(bin_dir), PFN15_VENV=str(venv))
    job, text = wait_done(slurm, job_id, log, restarts=1)
    print('cpu-check.sh on SLURM, signalled before the launch: %.1f s' % (time.time() - t0))
    assert job['JobState'] == 'COMPLETED' and job['ExitCode'] == '0:0', text[-3000:]
    assert int(job['Restarts']) == 1, job
    assert 'pfn15: SIGUSR1 before the training started; requeueing job %s' % job_id in text, \
        text[-3000:]
    assert 'preempted' not in text and 'resumed from the checkpoint' not in text, text[-3000:]
    assert text.count('pfn15: done:') == 1, text[-3000:]
    a, b = summary(uninterrupted[2]), summary(out)
    assert b['resumed_from_iteration'] is None
    for key in ('iterations', 'epochs', 'val_top1', 'val_loss', 'train_loss', 'workers'):
        assert b[key] == pytest.approx(a[key], rel=1e-6), key
