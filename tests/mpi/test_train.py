"""End to end: python -m pfn15.train under mpiexec on the digits demo config."""
import glob
import os
import signal
import subprocess
import sys
import time

import numpy
import pytest

from helpers import ROOT, child_env, mpiexec_path, rank_pids, read_summary, train

DEMO = 'configs/demo.yaml'


# ------------------------------------------------------------ config errors

@pytest.mark.parametrize('overrides,needle', [
    (['train.epochz=3'], 'train.epochz: unknown key'),
    (['train.epochs=abc'], 'train.epochs: expected a number'),
    (['data.dataset=imagenet', 'data.root=/nonexistent/imagenet'],
     'data.root: directory /nonexistent/imagenet does not exist'),
    (['batch.global=100'], 'batch.global: global batch 100 is not a multiple of'),
    (['batch.global=96'], 'batch.global: global batch 96 does not divide into 2 workers'),
    (['optimizer.name=adam'], "optimizer.name: 'adam' is not one of"),
    (['optimizer.momentum=1.5'], 'optimizer.momentum: must be <= 1.0'),
    (['out=/etc/passwd/sub'], 'out: output directory /etc/passwd/sub is not writable'),
    (['data.classes=12'], 'data.classes=12, but the digits have only 10 classes'),
])
def test_config_errors_exit_2_with_one_message(overrides, needle, tmp_path):
    extra = [] if any(o.startswith('out=') for o in overrides) else ['out=%s' % tmp_path]
    r = train(2, DEMO, *(overrides + extra), timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert needle in r.stderr, r.stderr
    assert r.stderr.count('pfn15: error:') == 1, r.stderr      # once, from rank 0
    assert 'Traceback' not in r.stderr


def test_missing_config_file_and_bad_override_syntax(tmp_path):
    r = train(2, 'configs/nope.yaml', timeout=120)
    assert r.returncode == 2 and 'configs/nope.yaml does not exist' in r.stderr
    r = train(2, DEMO, 'train.epochs', timeout=120)
    assert r.returncode == 2 and 'key=value' in r.stderr


# ------------------------------------------------------------ the demo

@pytest.mark.slow
def test_demo_trains_to_95_percent_and_writes_its_outputs(tmp_path):
    out = str(tmp_path / 'demo')
    r = train(2, DEMO, 'out=' + out, 'train.progress_bar=false')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = read_summary(out)
    for key in ('workers', 'global_batch', 'epochs', 'iterations', 'val_top1', 'val_top5',
                'train_images_per_sec', 'wall_seconds'):
        assert s.get(key) is not None, key
    assert s['workers'] == 2 and s['global_batch'] == 128 and s['microbatches'] == 2
    assert s['iterations'] == int(numpy.ceil(18 * 1438 / 128))
    assert s['val_top1'] >= 0.95, s
    assert s['val_top5'] >= s['val_top1']
    for name in ('log', 'loss.png', 'accuracy.png'):
        assert os.path.getsize(os.path.join(out, name)) > 0
    # The recipe really ran: the per-epoch table shows the schedule moving.
    assert 'alpha_sgd' in r.stdout and 'validation/main/accuracy' in r.stdout
    import json
    log = json.load(open(os.path.join(out, 'log')))
    assert len(log) == 18
    assert log[0]['alpha_sgd'] < 0.5 and log[-1]['alpha_sgd'] == 1.0
    assert log[0]['lr'] == pytest.approx(0.5 * 0.1 * 128 / 256)
    assert log[-1]['lr'] == pytest.approx(0.001 * 0.1 * 128 / 256)


# ------------------------------------------------------------ failures

def start(n, *args):
    cmd = [mpiexec_path(), '-n', str(n), sys.executable, '-m', 'pfn15.train'] + list(args)
    return subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path, proc, timeout=240):
    t0 = time.time()
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, 'timed out waiting for %s' % path
        time.sleep(0.05)


def final_params(out):
    ckpts = sorted(glob.glob(os.path.join(out, 'checkpoints', 'iter_*.npz')))
    with numpy.load(ckpts[-1], allow_pickle=False) as f:
        return {k: f[k] for k in f.files if '/model:main/' in k and 'avg_' not in k}


@pytest.mark.slow
def test_sigterm_checkpoint_and_resume_match_uninterrupted_run(tmp_path):
    common = ['train.epochs=6', 'checkpoint.every_iterations=1000', 'train.progress_bar=false']
    a, b = str(tmp_path / 'straight'), str(tmp_path / 'interrupted')
    r = train(2, DEMO, 'out=' + a, *common)
    assert r.returncode == 0, r.stderr[-3000:]

    proc = start(2, DEMO, 'out=' + b, *common)
    wait_for(os.path.join(b, 'log'), proc)        # the first epoch is logged: mid-run
    time.sleep(0.3)                               # land mid-epoch
    pids = rank_pids(b)
    assert len(pids) == 2, pids
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    assert 'preempted' in stdout
    assert not os.path.exists(os.path.join(b, 'summary.json'))
    stopped = glob.glob(os.path.join(b, 'checkpoints', 'iter_*.npz'))
    assert len(stopped) == 1
    stopped_at = int(stopped[0].rsplit('_', 1)[1][:-len('.npz')])
    assert 0 < stopped_at < read_summary(a)['iterations']

    r = train(2, DEMO, 'out=' + b, 'resume=auto', *common)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'resumed from the checkpoint at iteration %d' % stopped_at in r.stdout
    sa, sb = read_summary(a), read_summary(b)
    assert sb['resumed_from_iteration'] == stopped_at
    for key in ('iterations', 'epochs', 'val_top1', 'val_top5', 'val_loss', 'train_loss'):
        assert sb[key] == pytest.approx(sa[key], rel=1e-6), key
    pa, pb = final_params(a), final_params(b)
    assert pa.keys() == pb.keys() and len(pa) > 10
    for k in pa:
        numpy.testing.assert_allclose(pb[k], pa[k], rtol=1e-6, atol=1e-8, err_msg=k)


@pytest.mark.slow
def test_a_killed_rank_ends_the_job_within_60_seconds(tmp_path):
    out = str(tmp_path / 'killed')
    proc = start(3, DEMO, 'out=' + out, 'train.epochs=100', 'batch.global=96',
                 'train.progress_bar=false')
    t0 = time.time()
    while len(rank_pids(out)) < 3 and time.time() - t0 < 60:
        time.sleep(0.1)
    time.sleep(5)                                   # well into training
    assert proc.poll() is None
    victim = sorted(rank_pids(out))[1]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.time()
    try:
        proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail('the job hung for 60 s after a rank was killed')
    assert proc.returncode != 0
    assert time.time() - killed_at < 60
    assert rank_pids(out) == []


@pytest.mark.parametrize('dtype,bad,stops', [
    ('float32', float('nan'), True),
    ('float32', float('inf'), True),
    ('float16', -float('inf'), True),
    ('float64', float('nan'), True),
    # Finite, but their float32 (float16) sum overflows to inf: not a stop.
    ('float32', 3.0e38, False),
    ('float16', 6.0e4, False),
])
def test_finite_gradient_check_stops_on_nan_and_inf_only(dtype, bad, stops):
    import chainer
    from pfn15.training import finite as X
    link = chainer.Link()
    with link.init_scope():
        link.a = chainer.Parameter(numpy.zeros(1000, dtype))
        link.b = chainer.Parameter(numpy.zeros((4, 5), dtype))
        link.unused = chainer.Parameter(numpy.zeros(3, dtype))   # grad None
    link.a.grad = numpy.full(1000, bad if not stops else 0.5, dtype)
    link.b.grad = numpy.ones((4, 5), dtype)
    if stops:
        link.b.grad[2, 3] = bad
    opt = chainer.optimizers.SGD(0.1)
    opt.setup(link)
    opt.add_hook(X.FiniteGradientCheck())
    before = link.a.array.copy()
    if stops:
        with pytest.raises(X.NonFiniteError, match='non-finite gradient at iteration 1'):
            opt.update()
        assert (link.a.array == before).all()   # the weights were not touched
    else:
        opt.update()
        assert numpy.isfinite(link.a.array).all() and (link.a.array != before).all()


def test_nan_loss_stops_with_message_and_keeps_the_last_good_checkpoint(tmp_path):
    out = str(tmp_path / 'nan')
    r = train(2, DEMO, 'out=' + out, 'optimizer.name=momentum_sgd', 'schedule.lr=constant',
              'schedule.lr_per_256=1.0e+6', 'checkpoint.every_iterations=1', 'checkpoint.keep=2',
              'train.epochs=2', 'train.progress_bar=false', timeout=180)
    assert r.returncode == 3, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stderr.count('pfn15: error: non-finite') == 1, r.stderr
    assert 'at iteration' in r.stderr and 'The last good checkpoint (iteration' in r.stderr
    assert 'Traceback' not in r.stderr
    ckpts = sorted(glob.glob(os.path.join(out, 'checkpoints', 'iter_*.npz')))
    assert ckpts, 'no good checkpoint was kept'
    for path in ckpts:
        with numpy.load(path, allow_pickle=False) as f:
            for k in f.files:
                if f[k].dtype.kind == 'f':
                    assert numpy.isfinite(f[k]).all(), (path, k)
    assert not os.path.exists(os.path.join(out, 'summary.json'))
