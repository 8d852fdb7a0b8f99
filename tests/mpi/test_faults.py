"""No silent hangs, no silent garbage (docs/faults.md): a stopped rank, data
missing on one rank or one node, an output path too long, a flood of corrupt
images, a full disk, Ctrl-C once and twice, SIGUSR1 during start-up,
checkpoint trouble. Each for real: mpiexec from the venv, real ranks stopped,
signalled or given broken data (per rank with -env / -wdir), a real full tmpfs.

Every run has a deadline: a job that hangs fails the test instead of hanging it.
"""
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import ROOT, child_env, mpiexec_path, rank_pids, train

from pfn15.data import synthetic
from pfn15.training import checkpoint

DEMO = os.path.join(ROOT, 'configs', 'demo.yaml')
HOST = socket.gethostname()


def launch(*segments, session=False):
    """mpiexec -n 1 [-env K V] [-wdir D] python -m pfn15.train ARGS : ...; each segment
    is (args, env dict, wdir)."""
    cmd = [mpiexec_path()]
    for i, (args, env, wdir) in enumerate(segments):
        if i:
            cmd.append(':')
        cmd += ['-n', '1']
        for k, v in (env or {}).items():
            cmd += ['-env', k, v]
        if wdir:
            cmd += ['-wdir', wdir]
        cmd += [sys.executable, '-m', 'pfn15.train'] + list(args)
    return subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=session)


def finish(proc, timeout):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL) if _own_group(proc) else proc.kill()
        out, err = proc.communicate()
        pytest.fail('the job hung for %d s:\n%s\n%s' % (timeout, out[-2000:], err[-2000:]))
    return proc.returncode, out, err


def _own_group(proc):
    try:
        return os.getpgid(proc.pid) == proc.pid
    except OSError:
        return False


def wait_ranks(marker, n, proc, timeout=60):
    t0 = time.time()
    while len(rank_pids(marker)) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, 'the ranks never started'
        time.sleep(0.05)
    return sorted(rank_pids(marker))


def wait_file(pattern, proc, timeout=120):
    t0 = time.time()
    while not glob.glob(pattern):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, 'timed out waiting for %s' % pattern
        time.sleep(0.05)


def one_error(err, rc=None, out=''):
    seen = 'exit %s; stderr:\n%s\nstdout (tail):\n%s' % (rc, err, out[-3000:])
    assert 'Traceback' not in err, seen
    lines = [l for l in err.splitlines() if l.startswith('pfn15: error:')]
    assert len(lines) == 1, seen
    return lines[0]


def leftovers(marker):
    time.sleep(0.5)
    return rank_pids(marker)


# ---------------------------------------------------------------- a stalled rank

@pytest.mark.slow
@pytest.mark.parametrize('victim', [1, 0], ids=['rank1', 'rank0'])
def test_a_stopped_rank_is_named_and_the_job_ends(tmp_path, victim):
    """kill -STOP one rank of 3 (a node stuck on NFS): the watchdog names it and its
    host, says where the others wait, and aborts with exit 4 within stall_timeout + 60 s.
    A SIGUSR1 (SLURM's time-limit warning) to the others while stalled is answered."""
    out = str(tmp_path / 'stall')
    # No scheduled checkpoint to coincide with the stall (the last completed
    # iteration's would already be on disk, and nothing written while stalled):
    # training is under way once the first epoch's log line is out.
    proc = launch(*[([DEMO, 'out=' + out, 'train.epochs=2000', 'batch.global=192',
                      'train.progress_bar=false', 'train.stall_timeout=8',
                      'checkpoint.every_iterations=100000'], None, None)] * 3)
    pids = wait_ranks(out, 3, proc)
    wait_file(os.path.join(out, 'log'), proc)
    time.sleep(1.0)
    os.kill(pids[victim], signal.SIGSTOP)
    stopped = time.time()
    time.sleep(1.0)
    for i, pid in enumerate(pids):
        if i != victim:
            os.kill(pid, signal.SIGUSR1)
    rc, out, err = finish(proc, 8 * 3 + 60)
    took = time.time() - stopped
    line = one_error(err, rc, out)
    assert rc == 4, err
    assert took < 8 + 60, took
    assert 'stalled' in line and 'rank %d on %s stopped answering' % (victim, HOST) in line
    assert 'wait' in line and 'iteration' in line, line
    # One healthy rank holds the whole state (one-file checkpoints): it writes the
    # last completed iteration, which loads and records how it was written.
    assert 'SIGUSR1 came while stalled' in line, line
    m = re.search(r'checkpoint of iteration (\d+) written to (\S+\.npz)', line)
    assert m, line
    arrays, identity = checkpoint.read(m.group(2))
    assert identity['iteration'] == int(m.group(1)) and identity['written_while_stalled']
    assert identity['written_by_rank'] == (1 if victim == 0 else 0)
    assert leftovers(out) == []


# ---------------------------------------------------------------- start-up checks

@pytest.mark.parametrize('bad_rank', [1, 0])
def test_data_root_missing_on_one_rank(tmp_path, bad_rank):
    root = str(tmp_path / 'synth')
    synthetic.write_tree(root, classes=2, train=4, val=2, size=40, seed=0)
    args = [DEMO, 'out=%s' % (tmp_path / 'out'), 'data.root=${DROOT}', 'data.dataset=imagenet',
            'data.crop_size=32', 'data.val_resize=36', 'data.loader_workers=1',
            'batch.global=64']
    roots = [root, '/nonexistent']
    if bad_rank == 0:
        roots.reverse()
    t0 = time.time()
    proc = launch((args, {'DROOT': roots[0]}, None), (args, {'DROOT': roots[1]}, None))
    rc, _, err = finish(proc, 120)
    line = one_error(err)
    assert rc == 2, err
    assert 'rank %d on %s' % (bad_rank, HOST) in line and '/nonexistent does not exist' in line
    assert time.time() - t0 < 60


def test_output_path_too_long_is_refused_at_start_up(tmp_path):
    out = str(tmp_path)
    while len(out) < 4060:
        out = os.path.join(out, 'd' * min(200, 4060 - len(out) - 1))
    out = out[:4060]
    r = train(2, DEMO, 'out=' + out, timeout=120)
    line = one_error(r.stderr)
    assert r.returncode == 2, r.stderr
    assert 'out: the output path is too long' in line and 'PATH_MAX' in line


# ---------------------------------------------------------------- data

def _jpeg_args(root, out, *extra):
    return [DEMO, 'out=' + out, 'data.dataset=imagenet', 'data.root=' + root,
            'data.crop_size=32', 'data.val_resize=36', 'data.loader_workers=1',
            'batch.global=32', 'batch.per_worker=16', 'model.width=8',
            'train.progress_bar=false'] + list(extra)


@pytest.mark.slow
def test_images_missing_on_one_node_stop_every_rank(tmp_path):
    """An empty mount over train/ on rank 1's node: rank 0 lists the files, rank 1
    finds them missing. Exit 2 naming rank 1, its host and the first missing file."""
    node0, node1 = tmp_path / 'node0', tmp_path / 'node1'
    synthetic.write_tree(str(node0 / 'synth'), classes=2, train=8, val=4, size=40, seed=0)
    shutil.copytree(node0 / 'synth' / 'val', node1 / 'synth' / 'val')
    for d in os.listdir(node0 / 'synth' / 'train'):
        os.makedirs(node1 / 'synth' / 'train' / d)      # the folders, no files
    args = _jpeg_args('synth', str(tmp_path / 'out'), 'train.epochs=3')
    proc = launch((args, None, str(node0)), (args, None, str(node1)))
    rc, out, err = finish(proc, 180)
    line = one_error(err)
    assert rc == 2, err
    assert 'rank 1 on %s' % HOST in line and 'does not exist' in line, line
    assert str(node1 / 'synth' / 'train') in line, line
    assert 'bad image' not in err
    assert not os.path.exists(tmp_path / 'out' / 'summary.json')


@pytest.mark.slow
def test_a_flood_of_corrupt_images_is_an_error(tmp_path):
    root = str(tmp_path / 'synth')
    synthetic.write_tree(root, classes=2, train=16, val=4, size=40, seed=0)
    files = sorted(glob.glob(os.path.join(root, 'train', '*', '*')))
    for path in files[::3]:                           # a third of them truncated
        with open(path, 'r+b') as f:
            f.truncate(100)
    r = train(2, *_jpeg_args(root, str(tmp_path / 'out'), 'train.epochs=3'), timeout=180)
    line = one_error(r.stderr)
    assert r.returncode == 2, r.stderr
    assert 'replaced by the mean image' in line and 'data.max_bad_fraction=0.001' in line

    # data.bad_images=error: the first one stops every rank (it is met in a
    # decoding process or thread, where an exception would break one rank alone).
    r = train(2, *_jpeg_args(root, str(tmp_path / 'out2'), 'train.epochs=3',
                             'data.bad_images=error'), timeout=180)
    line = one_error(r.stderr)
    assert r.returncode == 2, r.stderr
    assert 'bad image %s' % os.path.join(root, 'train') in line and 'on %s' % HOST in line


# ---------------------------------------------------------------- full disk

@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip('needs root to mount a small tmpfs (mount -t tmpfs)')
    mnt = tmp_path / 'disk'
    mnt.mkdir()
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', str(mnt)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip('cannot mount a tmpfs here: %s' % r.stderr.strip())
    yield str(mnt)
    subprocess.run(['umount', '-l', str(mnt)])


def _fill(mnt, leave):
    """Leave `leave` bytes free on the tmpfs at `mnt`."""
    filler = os.path.join(mnt, 'filler')
    if os.path.exists(filler):
        os.remove(filler)
    st = os.statvfs(mnt)
    size = st.f_bavail * st.f_frsize - int(leave)
    with open(filler, 'wb') as f:
        os.posix_fallocate(f.fileno(), 0, size)


@pytest.mark.slow
def test_full_disk_loses_nothing_and_says_so(small_disk, tmp_path):
    common = ['train.progress_bar=false', 'checkpoint.every_iterations=3', 'checkpoint.keep=3']
    # One checkpoint's size, measured.
    probe = os.path.join(small_disk, 'probe')
    r = train(2, DEMO, 'out=' + probe, 'train.iterations=3', *common, timeout=180)
    assert r.returncode == 0, r.stderr
    one = os.path.getsize(os.path.join(probe, 'checkpoints', 'iter_00000003.npz'))
    shutil.rmtree(probe)

    # Room for one and a half: refused at start-up, nothing written.
    _fill(small_disk, 1.5 * one)
    out = os.path.join(small_disk, 'out')
    r = train(2, DEMO, 'out=' + out, 'train.iterations=9', *common, timeout=180)
    line = one_error(r.stderr)
    assert r.returncode == 2, r.stderr
    assert '2 checkpoints need about' in line and 'MB free' in line, line
    assert not os.path.exists(os.path.join(out, 'checkpoints'))

    # Room for two and a half: start-up passes, the third checkpoint does not fit.
    _fill(small_disk, 2.6 * one)
    r = train(2, DEMO, 'out=' + out, 'train.iterations=9', *common, timeout=180)
    line = one_error(r.stderr)
    assert r.returncode == 5, r.stderr
    assert ('no space left on device while writing %s (needs about'
            % os.path.join(out, 'checkpoints', 'iter_00000009.npz')) in line, line
    assert 'rank 0 on %s' % HOST in line and 'the checkpoint at iteration 6 is kept' in line
    names = [os.path.relpath(p, out) for p in glob.glob(os.path.join(out, '**'), recursive=True)]
    assert not [n for n in names if 'tmp' in n], names
    assert not os.path.exists(os.path.join(out, 'checkpoints', 'iter_00000009.npz'))
    for it in (3, 6):
        _, identity = checkpoint.read(os.path.join(out, 'checkpoints', 'iter_%08d.npz' % it))
        assert identity['iteration'] == it

    # Space freed: the same command resumes from the kept checkpoint and finishes.
    os.remove(os.path.join(small_disk, 'filler'))
    r = train(2, DEMO, 'out=' + out, 'train.iterations=9', *common, timeout=180)
    assert r.returncode == 0, r.stderr
    assert 'resumed from the checkpoint at iteration 6' in r.stdout


# ---------------------------------------------------------------- signals

@pytest.mark.slow
def test_ctrl_c_once_checkpoints_twice_stops_at_once(tmp_path):
    # Once, as a terminal sends it: to mpiexec's whole process group.
    out = str(tmp_path / 'once')
    proc = launch(*[([DEMO, 'out=' + out, 'train.progress_bar=false'], None, None)] * 2,
                  session=True)
    wait_file(os.path.join(out, 'log'), proc)
    os.killpg(proc.pid, signal.SIGINT)
    rc, stdout, err = finish(proc, 120)
    assert rc == 0, err
    assert 'Traceback' not in err and 'pfn15: error' not in err, err
    assert stdout.count('pfn15: preempted: SIGINT: checkpoint written at iteration') == 1
    assert glob.glob(os.path.join(out, 'checkpoints', 'iter_*.npz'))

    # Twice, to the ranks: no checkpoint, exit 130, one line.
    out = str(tmp_path / 'twice')
    proc = launch(*[([DEMO, 'out=' + out, 'train.progress_bar=false'], None, None)] * 2)
    wait_file(os.path.join(out, 'log'), proc)
    pids = rank_pids(out)
    for _ in range(2):
        for pid in pids:
            os.kill(pid, signal.SIGINT)
        time.sleep(0.05)
    rc, stdout, err = finish(proc, 60)
    assert rc == 130, err
    assert 'Traceback' not in err and 'Uncaught exception' not in err, err
    assert err.count('pfn15: interrupted twice: stopped at once without a checkpoint') == 1
    assert not glob.glob(os.path.join(out, 'checkpoints', 'iter_*'))
    assert leftovers(out) == []


def catches(pid, sig):
    """Whether `pid` has a handler for `sig` (the caught-signal mask in /proc)."""
    try:
        with open('/proc/%d/status' % pid) as f:
            mask = [l for l in f if l.startswith('SigCgt:')][0].split()[1]
    except (OSError, IndexError):
        return False
    return bool(int(mask, 16) & (1 << (int(sig) - 1)))


def test_sigusr1_during_start_up_exits_0(tmp_path):
    """As soon as a rank catches SIGUSR1 (the first line of pfn15.train, before
    Chainer, MPI and the data), the signal stops the job cleanly: exit 0."""
    out = str(tmp_path / 'early')
    proc = launch(*[([DEMO, 'out=' + out, 'train.progress_bar=false'], None, None)] * 2)
    for pid in wait_ranks(out, 2, proc):
        t0 = time.time()
        while not catches(pid, signal.SIGUSR1):
            assert time.time() - t0 < 30, 'rank %d never caught SIGUSR1' % pid
            time.sleep(0.001)
        os.kill(pid, signal.SIGUSR1)
    rc, stdout, err = finish(proc, 60)
    assert rc == 0, err
    assert 'Traceback' not in err
    assert stdout.count('pfn15: preempted before training started (SIGUSR1') == 1, stdout
    assert 'nothing to save' in stdout
    assert not os.path.exists(os.path.join(out, 'checkpoints'))


# ---------------------------------------------------------------- checkpoint trouble

@pytest.mark.slow
def test_checkpoint_trouble_is_named(tmp_path):
    """An unreadable newest checkpoint: rank 0 names the file, its host and what is
    wrong, and resumes from the one before."""
    out = str(tmp_path / 'ck')
    common = ['out=' + out, 'train.progress_bar=false', 'checkpoint.every_iterations=5',
              'checkpoint.keep=3']
    r = train(2, DEMO, 'train.iterations=15', *common, timeout=180)
    assert r.returncode == 0, r.stderr
    ck = os.path.join(out, 'checkpoints')
    newest = os.path.join(ck, 'iter_00000015.npz')
    with open(newest, 'r+b') as f:
        f.truncate(1000)
    r = train(2, DEMO, 'train.iterations=20', 'resume.allow_changed=train.iterations',
              *common, timeout=180)
    assert r.returncode == 0, r.stderr
    assert ('checkpoint %s is unreadable on rank 0 on %s' % (newest, HOST)) in r.stdout, r.stdout
    assert 'trying an older one' in r.stdout
    assert 'resumed from the checkpoint at iteration 10' in r.stdout
