"""Nothing pfn15 reads runs code, and no damaged checkpoint gets a traceback;
a resumed run's plots equal the uninterrupted run's.

One real short demo run on 2 ranks writes the checkpoints at iterations 5 and 8.
Most mutations of them are judged in-process by the same functions a resume
calls (`checkpoint.read`, `checkpoint.validate` against `checkpoint.expected`
of a real trainer of this config): each is refused with one line, or accepted
with exactly the original arrays. A few are resumed for real under mpiexec:
exit 0 with the uninterrupted run's figures, or exit 2 with one line; never a
traceback, never the planted pickle's marker file.
"""
import glob
import io
import json
import os
import pickle
import random
import shutil
import socket
import struct
import zipfile

import numpy
import pytest

from helpers import ROOT, read_summary, train

from pfn15.training import checkpoint

DEMO = 'configs/demo.yaml'
BASE = ['data.classes=3', 'model.width=8', 'train.iterations=8', 'checkpoint.every_iterations=5',
        'checkpoint.keep=3', 'train.progress_bar=false']
HOST = socket.gethostname()
TIMING = ('elapsed_time', 'images/s')


class Planted(object):
    """Unpickling this runs os.system: the object array of a crafted checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ('touch %s' % self.marker,))


def npy_bytes(value, allow_pickle=False):
    buf = io.BytesIO()
    numpy.lib.format.write_array(buf, numpy.asanyarray(value), allow_pickle=allow_pickle)
    return buf.getvalue()


def write_zip(path, members, compression=zipfile.ZIP_STORED):
    """{member name: bytes} -> a zip file, as an attacker or a broken tool would write it."""
    with zipfile.ZipFile(path, 'w', compression=compression) as zf:
        for name, data in members:
            zf.writestr(name, data)


def raw_members(path):
    with zipfile.ZipFile(path) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def crafted(path, identity_from, marker):
    """An attacker's checkpoint: a real pfn15/identity record and one object
    array whose pickle calls os.system."""
    identity = dict(raw_members(identity_from))['pfn15/identity.npy']
    planted = numpy.empty((), dtype=object)
    planted[()] = Planted(marker)
    write_zip(path, [('pfn15/identity.npy', identity),
                     ('updater/iteration.npy', npy_bytes(planted, allow_pickle=True))])


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope='module')
def straight(tmp_path_factory):
    """The uninterrupted run: checkpoints at 5 and 8, summary, log."""
    out = str(tmp_path_factory.mktemp('straight') / 'run')
    r = train(2, DEMO, 'out=' + out, *BASE, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert sorted(os.listdir(os.path.join(out, 'checkpoints'))) == [
        'iter_00000005.npz', 'iter_00000008.npz']
    return out


@pytest.fixture(scope='module')
def spec():
    """What a checkpoint of this config must hold, from a real trainer built here."""
    os.environ.setdefault('MPLBACKEND', 'Agg')
    from pfn15 import comm as comm_module
    from pfn15 import config, train as train_module
    cfg = config.load(os.path.join(ROOT, DEMO), BASE + ['out=unused'])
    run = train_module.build(cfg, comm_module.create(cfg))
    return checkpoint.expected(run.trainer)


def ck(out, it):
    return os.path.join(out, 'checkpoints', 'iter_%08d.npz' % it)


def judge(path, spec, iteration):
    """None if refused (after checking the message is one line), else the arrays."""
    try:
        arrays, identity = checkpoint.read(path)
        checkpoint.validate(arrays, identity, spec, iteration)
    except checkpoint.Unusable as e:
        message = str(e)
        assert message and '\n' not in message and len(message) < 400, message
        return None
    return arrays


def same_arrays(a, b):
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and
        (numpy.array_equal(a[k], b[k]) if a[k].dtype.kind != 'f'
         else numpy.array_equal(a[k], b[k], equal_nan=False)) for k in a)


# ------------------------------------------------------------------ in-process fuzz

def test_the_good_checkpoints_are_accepted(straight, spec):
    for it in (5, 8):
        arrays = judge(ck(straight, it), spec, it)
        assert arrays is not None
        with numpy.load(ck(straight, it), allow_pickle=False) as f:   # pickle-free
            assert not any(f[k].dtype.hasobject for k in f.files)
    # The name must match the contents.
    assert judge(ck(straight, 8), spec, 5) is None


def zip_regions(data):
    """(start, end) of the byte ranges that are zip or .npy headers."""
    regions = []
    for magic, length in ((b'PK\x03\x04', 30), (b'PK\x01\x02', 46), (b'PK\x05\x06', 22),
                          (b'PK\x06\x06', 56), (b'PK\x06\x07', 20), (b'\x93NUMPY', 128)):
        start = data.find(magic)
        while start >= 0:
            regions.append((start, min(start + length + 40, len(data))))
            start = data.find(magic, start + 1)
    return regions


def test_bit_flips_and_truncations_are_refused_or_harmless(straight, spec, tmp_path):
    good_path = ck(straight, 8)
    good = open(good_path, 'rb').read()
    original = judge(good_path, spec, 8)
    rng = random.Random(23)
    regions = zip_regions(good)
    positions = [rng.randrange(*rng.choice(regions)) for _ in range(240)]
    positions += [rng.randrange(len(good)) for _ in range(60)]   # mostly array data
    mutants = []
    for pos in positions:
        b = bytearray(good)
        b[pos] ^= 1 << rng.randrange(8)
        mutants.append(('flip at %d' % pos, bytes(b)))
    cuts = [0, 1, 4, 21, 22, 100, len(good) // 2, len(good) - 22, len(good) - 1]
    cuts += [rng.randrange(len(good)) for _ in range(25)]
    mutants += [('cut at %d' % n, good[:n]) for n in cuts]
    mutants += [('appended junk', good + b'\0' * 100), ('random bytes', os.urandom(5000)),
                ('a text file', b'iteration: 8\n'), ('empty', b'')]
    path = str(tmp_path / 'iter_00000008.npz')
    accepted = refused = 0
    for what, data in mutants:
        with open(path, 'wb') as f:
            f.write(data)
        arrays = judge(path, spec, 8)
        if arrays is None:
            refused += 1
        else:   # a flip in a field nothing reads: then it must be the same checkpoint
            assert same_arrays(arrays, original), what
            accepted += 1
    assert refused > 0.6 * len(mutants), (refused, accepted)


def rezipped(tmp_path, good_path, change):
    """The good checkpoint's members, changed by `change` (a list of (name, bytes))."""
    members = change(raw_members(good_path))
    path = str(tmp_path / 'iter_00000008.npz')
    write_zip(path, members)
    return path


def replace(name, data):
    return lambda ms: [(n, data if n == name else d) for n, d in ms]


def array_of(members, name):
    return numpy.lib.format.read_array(io.BytesIO(dict(members)[name]))


def identity_edit(edit):
    def change(ms):
        ident = json.loads(str(array_of(ms, 'pfn15/identity.npy')))
        ident = edit(ident)
        text = ident if isinstance(ident, str) else json.dumps(ident)
        return replace('pfn15/identity.npy', npy_bytes(numpy.array(text)))(ms)
    return change


W = 'updater/model:main/predictor/fc/W.npy'
M = 'updater/optimizer:main/predictor/fc/W/m.npy'
LOG = 'extensions/LogReport/_log.npy'
PLOT = 'extensions/PlotReport/_plot_loss.png.npy'
NAMES = 'extensions/PlotReport/_summary/_names.npy'


def _w(ms):
    return array_of(ms, W)


def _dropped(name):
    return lambda ms: [(n, d) for n, d in ms if n != name]


def _set(ident, key, value):
    ident = dict(ident)
    if value is KeyError:
        del ident[key]
    else:
        ident[key] = value
    return ident


def _nan(ms):
    w = _w(ms).copy()
    w.flat[3] = numpy.nan
    return replace(W, npy_bytes(w))(ms)


def _huge_header(ms):
    header = npy_bytes(numpy.zeros(1, numpy.float32))
    fake = header.replace(b"(1,)", b"(1099511627776,)")
    fake = fake[:8] + struct.pack('<H', len(fake) - 10) + fake[10:]
    return replace(W, fake)(ms)


REFUSED = {
    'a parameter removed': _dropped(W),
    'an optimizer state removed': _dropped(M),
    'the iteration removed': _dropped('updater/iteration.npy'),
    'the log removed': _dropped(LOG),
    'the plot data removed': _dropped(PLOT),
    'the identity removed': _dropped('pfn15/identity.npy'),
    'the pending summary removed': _dropped(NAMES),
    'a parameter transposed': lambda ms: replace(W, npy_bytes(_w(ms).T.copy()))(ms),
    'a parameter cut short': lambda ms: replace(W, npy_bytes(_w(ms)[:1]))(ms),
    'a parameter in float64': lambda ms: replace(W, npy_bytes(_w(ms).astype('f8')))(ms),
    'a parameter in float16': lambda ms: replace(W, npy_bytes(_w(ms).astype('f2')))(ms),
    'a parameter as complex': lambda ms: replace(W, npy_bytes(_w(ms).astype('c8')))(ms),
    'a parameter as text': lambda ms: replace(W, npy_bytes(numpy.array('[1, 2]')))(ms),
    'a parameter with NaN': _nan,
    'a state with inf': lambda ms: replace(M, npy_bytes(
        numpy.full_like(array_of(ms, M), numpy.inf)))(ms),
    'the iteration as a vector': replace('updater/iteration.npy', npy_bytes(numpy.arange(2))),
    'the iteration changed': replace('updater/iteration.npy', npy_bytes(numpy.int64(5))),
    'the optimizer step negative': replace('updater/optimizer:main/t.npy',
                                      npy_bytes(numpy.int64(-3))),
    'the log not JSON': replace(LOG, npy_bytes(numpy.array('[{"main/loss": '))),
    'the log a number': replace(LOG, npy_bytes(numpy.float64(3.0))),
    'the log of the wrong shape': replace(LOG, npy_bytes(numpy.array('{"a": 1}'))),
    'the plot data of the wrong shape': replace(PLOT, npy_bytes(
        numpy.array('{"main/loss": [[1, 2, 3]]}'))),
    'summary names and summaries disagree': replace(NAMES, npy_bytes(
        numpy.array('["main/loss", "x", "y"]'))),
    'a key of another model': lambda ms: ms + [(
        'updater/model:main/predictor/fc2/W.npy', npy_bytes(numpy.zeros(3, 'f4')))],
    'a member that is not an array': lambda ms: ms + [('README', b'hello')],
    'a member twice': lambda ms: ms + [ms[0]],
    'a structured dtype': lambda ms: replace(W, npy_bytes(
        numpy.zeros(3, [('a', 'f4'), ('b', 'i4')])))(ms),
    'a header claiming a terabyte': _huge_header,
    'an .npy of format 3': lambda ms: replace(W, b'\x93NUMPY\x03' + dict(ms)[W][7:])(ms),
    'a parameter listed as None': lambda ms: ms + [
        ('pfn15/none.npy', npy_bytes(numpy.array('["updater/model:main/predictor/fc/W"]')))],
    'the None list malformed': lambda ms: ms + [('pfn15/none.npy', npy_bytes(numpy.array('7')))],
    'identity not JSON': identity_edit(lambda i: '{"config": '),
    'identity a list': identity_edit(lambda i: [i]),
    'identity without config': identity_edit(lambda i: _set(i, 'config', KeyError)),
    'identity without dataset': identity_edit(lambda i: _set(i, 'dataset', KeyError)),
    'identity of format 1': identity_edit(lambda i: _set(i, 'format', 1)),
    'identity of another iteration': identity_edit(lambda i: _set(i, 'iteration', 99)),
    'identity iteration as text': identity_edit(lambda i: _set(i, 'iteration', '8')),
    'identity with 0 workers': identity_edit(lambda i: _set(i, 'workers', 0)),
    'identity dataset sizes as text': identity_edit(
        lambda i: _set(i, 'dataset', dict(i['dataset'], classes='3'))),
    'identity as a number': replace('pfn15/identity.npy', npy_bytes(numpy.int64(1))),
}


@pytest.mark.parametrize('what', sorted(REFUSED))
def test_damaged_and_foreign_checkpoints_are_refused_in_one_line(straight, spec, tmp_path,
                                                                  what):
    path = rezipped(tmp_path, ck(straight, 8), REFUSED[what])
    assert judge(path, spec, 8) is None, what


def test_harmless_rewrites_are_the_same_checkpoint(straight, spec, tmp_path):
    good_path = ck(straight, 8)
    original = judge(good_path, spec, 8)
    # The same members deflated; in another order; a different worker count recorded.
    path = str(tmp_path / 'iter_00000008.npz')
    write_zip(path, raw_members(good_path), compression=zipfile.ZIP_DEFLATED)
    assert same_arrays(judge(path, spec, 8), original)
    path = rezipped(tmp_path, good_path, lambda ms: list(reversed(ms)))
    assert same_arrays(judge(path, spec, 8), original)
    path = rezipped(tmp_path, good_path, identity_edit(lambda i: _set(i, 'workers', 7)))
    assert same_arrays(judge(path, spec, 8), original)


def test_object_arrays_never_run_and_say_how_to_convert(straight, spec, tmp_path):
    marker = str(tmp_path / 'ran')
    planted = numpy.empty((), dtype=object)
    planted[()] = Planted(marker)
    evil = npy_bytes(planted, allow_pickle=True)
    for name in (W, LOG, 'pfn15/identity.npy', 'extra.npy'):
        path = rezipped(tmp_path, ck(straight, 8),
                        (lambda ms: ms + [(name, evil)]) if name == 'extra.npy'
                        else replace(name, evil))
        with pytest.raises(checkpoint.NeedsPickle, match='pickled object array'):
            checkpoint.read(path)
    crafted(str(tmp_path / 'iter_00000099.npz'), ck(straight, 8), marker)
    with pytest.raises(checkpoint.NeedsPickle):
        checkpoint.read(str(tmp_path / 'iter_00000099.npz'))
    assert not os.path.exists(marker)
    # The pickle really would run: the marker is what unpickling it writes.
    pickle.loads(pickle.dumps(Planted(marker)))
    assert os.path.exists(marker)


def test_convert_rewrites_an_old_checkpoint_with_a_none(straight, spec, tmp_path):
    """What an older pfn15 wrote (a None as an object array) becomes numbers and JSON."""
    from pfn15 import checkpoint as cli
    path = str(tmp_path / 'iter_00000008.npz')
    none = npy_bytes(numpy.array(None), allow_pickle=True)
    write_zip(path, raw_members(ck(straight, 8)) + [('updater/something.npy', none)])
    with pytest.raises(checkpoint.NeedsPickle):
        checkpoint.read(path)
    assert cli.check(path)[0] == 2 and 'convert it with: python -m pfn15.checkpoint ' \
        'convert %s' % path in cli.check(path)[1]
    status, line = cli.convert(path)
    assert status == 0 and 'kept as %s.pickled' % path in line, line
    arrays, identity = checkpoint.read(path)
    assert arrays['updater/something'][()] is None and identity['iteration'] == 8
    del arrays['updater/something']
    assert same_arrays(arrays, judge(ck(straight, 8), spec, 8))
    assert os.path.exists(path + '.pickled')
    assert cli.check(path)[0] == 0 and 'iteration 8' in cli.check(path)[1]


def test_nothing_pfn15_reads_is_unpickled_or_unsafely_parsed():
    """Every numpy.load in pfn15/ and tools/ says allow_pickle=False (the converter,
    which the user runs on a file they trust, is the one exception); no pickle.load,
    no yaml.load, no eval of file contents."""
    import ast
    offenders = []
    for top in ('pfn15', 'tools'):
        for path in glob.glob(os.path.join(ROOT, top, '**', '*.py'), recursive=True):
            rel = os.path.relpath(path, ROOT)
            tree = ast.parse(open(path).read(), path)
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                f = node.func
                name = (f.attr if isinstance(f, ast.Attribute) else
                        f.id if isinstance(f, ast.Name) else '')
                base = f.value.id if isinstance(f, ast.Attribute) and isinstance(
                    f.value, ast.Name) else ''
                kw = {k.arg: k.value for k in node.keywords}
                if name == 'load' and base in ('numpy', 'np'):
                    value = kw.get('allow_pickle')
                    safe = isinstance(value, ast.Constant) and value.value is False
                    if not safe and rel != os.path.join('pfn15', 'checkpoint.py'):
                        offenders.append('%s:%d numpy.load' % (rel, node.lineno))
                if name in ('load', 'loads', 'Unpickler') and base in ('pickle', 'cPickle',
                                                                      'marshal', 'dill'):
                    offenders.append('%s:%d %s.%s' % (rel, node.lineno, base, name))
                if base == 'yaml' and name in ('load', 'unsafe_load', 'full_load', 'load_all'):
                    offenders.append('%s:%d yaml.%s' % (rel, node.lineno, name))
                if name in ('eval', 'exec') and isinstance(f, ast.Name):
                    offenders.append('%s:%d %s' % (rel, node.lineno, name))
                if name == 'read_array' and not (
                        isinstance(kw.get('allow_pickle'), ast.Constant)
                        and kw['allow_pickle'].value is False):
                    offenders.append('%s:%d read_array' % (rel, node.lineno))
    assert offenders == []


# ------------------------------------------------------------------ real resumes

def resumed_copy(straight, tmp_path, keep=(5, 8)):
    """A copy of the run's out holding only the checkpoints `keep`: what a resume
    recomputes (summary, log, plots) is gone."""
    out = str(tmp_path / 'run')
    os.makedirs(os.path.join(out, 'checkpoints'))
    for it in keep:
        shutil.copy(ck(straight, it), ck(out, it))
    return out


def figures(out):
    s = read_summary(out)
    log = [{k: v for k, v in row.items() if k not in TIMING}
           for row in json.load(open(os.path.join(out, 'log')))]
    with numpy.load(ck(out, 8), allow_pickle=False) as f:
        plots = {k: json.loads(str(f[k])) for k in f.files if '_plot_' in k}
        params = {k: f[k] for k in f.files if '/model:main/' in k}
    return s, log, plots, params


def assert_same_figures(a, b):
    sa, la, pa, wa = figures(a)
    sb, lb, pb, wb = figures(b)
    for key in ('iterations', 'epochs', 'val_top1', 'val_loss', 'train_loss', 'train_top1'):
        assert sb[key] == pytest.approx(sa[key], rel=1e-6), key
    assert len(la) == len(lb)
    for ra, rb in zip(la, lb):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert rb[k] == pytest.approx(ra[k], rel=1e-6, abs=1e-9), k
    assert pa.keys() == pb.keys() and len(pa) == 2
    for name in pa:
        assert pa[name].keys() == pb[name].keys()
        for key in pa[name]:
            assert numpy.array(pb[name][key]).shape == numpy.array(pa[name][key]).shape, \
                (name, key, pa[name][key], pb[name][key])
            numpy.testing.assert_allclose(pb[name][key], pa[name][key], rtol=1e-6, atol=1e-9)
    for k in wa:
        numpy.testing.assert_allclose(wb[k], wa[k], rtol=1e-6, atol=1e-8, err_msg=k)


def one_error_line(r):
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert 'Traceback' not in r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if 'pfn15: error:' in ln]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_resumed_plots_and_log_equal_the_uninterrupted_run(straight, tmp_path):
    """Resumed mid-epoch (iteration 5 of 3.4 per epoch): the plot has no extra
    point after the resume and the next epoch's point is the whole epoch's mean."""
    out = resumed_copy(straight, tmp_path, keep=(5,))
    r = train(2, DEMO, 'out=' + out, *BASE, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert 'resumed from the checkpoint at iteration 5' in r.stdout
    assert_same_figures(straight, out)
    # No extra point after the resume: the same points as the uninterrupted run
    # (assert_same_figures), one per global-epoch step, in order.
    _, _, plots, _ = figures(out)
    _, _, straight_plots, _ = figures(straight)
    points = plots['extensions/PlotReport/_plot_loss.png']['main/loss']
    xs = [x for x, _ in points]
    assert xs == sorted(set(xs)) and len(xs) > 2, xs
    assert points == straight_plots['extensions/PlotReport/_plot_loss.png']['main/loss']


def test_the_crafted_checkpoint_runs_nothing_and_the_run_continues(straight, tmp_path):
    """An attacker's checkpoint (crafted) and a truncated newest one: each named in one
    line from rank 0, the run continues from iteration 5 to the same figures."""
    out = resumed_copy(straight, tmp_path)
    marker = str(tmp_path / 'attacker-was-here')
    evil = ck(out, 99)
    crafted(evil, ck(out, 8), marker)
    with open(ck(out, 8), 'r+b') as f:
        f.truncate(os.path.getsize(ck(out, 8)) // 2)
    r = train(2, DEMO, 'out=' + out, *BASE, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert not os.path.exists(marker)
    assert 'Traceback' not in r.stdout + r.stderr
    warnings = [ln for ln in r.stdout.splitlines() if 'pfn15: warning: checkpoint' in ln]
    assert len(warnings) == 2, r.stdout
    assert ('checkpoint %s is unreadable on rank 0 on %s' % (evil, HOST)) in warnings[0]
    assert 'python -m pfn15.checkpoint convert %s' % evil in warnings[0]
    assert ck(out, 8) in warnings[1] and 'trying an older one' in warnings[1]
    assert 'resumed from the checkpoint at iteration 5' in r.stdout
    assert_same_figures(straight, out)


def test_no_usable_checkpoint_exits_2_and_touches_nothing(straight, tmp_path):
    out = resumed_copy(straight, tmp_path, keep=())
    marker = str(tmp_path / 'attacker-was-here')
    crafted(ck(out, 99), ck(straight, 8), marker)
    shutil.copy(ck(straight, 5), ck(out, 5))
    with open(ck(out, 5), 'r+b') as f:    # one bit of a weight
        f.seek(os.path.getsize(ck(out, 5)) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 4]))
    before = {p: open(p, 'rb').read() for p in glob.glob(os.path.join(out, 'checkpoints', '*'))}
    r = train(2, DEMO, 'out=' + out, *BASE, timeout=300)
    line = one_error_line(r)
    assert not os.path.exists(marker)
    assert 'no usable checkpoint in %s' % os.path.join(out, 'checkpoints') in line
    assert 'iter_00000099.npz: ' in line and 'iter_00000005.npz: ' in line
    assert before == {p: open(p, 'rb').read()
                      for p in glob.glob(os.path.join(out, 'checkpoints', '*'))}
    assert not os.path.exists(os.path.join(out, 'summary.json'))


FULL = {   # mutations of iteration 8 resumed for real: refused -> from 5; foreign config -> 2
    'a header bit flipped': None,
    'a state of the wrong shape': lambda ms: replace(M, npy_bytes(
        array_of(ms, M).reshape(-1)))(ms),
    'another seed in the identity': identity_edit(
        lambda i: _set(i, 'config', dict(i['config'], seed=1))),
}


@pytest.mark.parametrize('what', sorted(FULL))
def test_a_mutated_newest_checkpoint_resumes_from_the_older_or_exits_2(
        straight, tmp_path, what):
    out = resumed_copy(straight, tmp_path)
    if FULL[what] is None:
        data = bytearray(open(ck(out, 8), 'rb').read())
        data[data.find(b'PK\x01\x02') + 16] ^= 0x10   # the CRC of the first entry
        open(ck(out, 8), 'wb').write(bytes(data))
    else:
        os.replace(rezipped(tmp_path, ck(out, 8), FULL[what]), ck(out, 8))
    r = train(2, DEMO, 'out=' + out, *BASE, timeout=300)
    if r.returncode == 2:
        line = one_error_line(r)
        assert 'seed: 1 (checkpoint) -> 0 (now)' in line and what.startswith('another seed')
        return
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert 'Traceback' not in r.stdout + r.stderr
    assert 'checkpoint %s is unreadable on rank 0 on %s' % (ck(out, 8), HOST) in r.stdout
    assert 'resumed from the checkpoint at iteration 5' in r.stdout
    assert_same_figures(straight, out)
