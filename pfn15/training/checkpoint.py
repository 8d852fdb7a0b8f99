"""Elastic checkpoints: one file per checkpoint, readable by any number of workers.

After every update all ranks hold identical parameters and optimizer state,
so rank 0 alone writes OUT/checkpoints/iter_NNNNNNNN.npz: the trainer as
Chainer serializes it (model, optimizer state with RMSprop and momentum
buffers, the updater's iteration, LogReport's history and pending summary,
PlotReport's data) -- but no iterator position (the position in the global
sample order is a function of the iteration) and BN statistics saved as their
mean over all workers (the live ones are left alone) -- plus
`pfn15/identity`, a JSON record of the run: the config it was written under,
the dataset fingerprint and sizes, the iteration and the worker count.
One self-describing file, so a checkpoint and its identity can never
disagree. Written to a temporary name, fsynced and renamed: a crash while
writing never destroys the last good checkpoint. The newest `keep` are kept.

A write that fails (a full disk, a quota, an I/O error) removes its temporary
file, keeps every earlier checkpoint, and raises CheckpointWriteError on every
rank with one line naming the file, the host, the file system's complaint and
the size needed (pfn15.train exits 5).

Because one rank holds the whole state, a healthy rank can also write a
checkpoint while another rank is stalled (`save_emergency`, called by the
watchdog thread when a stop signal comes during a stall).

Resuming (pfn15.training.resume) reads the newest usable file on rank 0 and
broadcasts it, so only rank 0's disk needs the checkpoints.

Checkpoints hold numeric arrays and JSON text only, written and read with
allow_pickle=False: reading one never runs code, whoever wrote it. A value
Chainer serializes as None is listed in `pfn15/none`; the LogReport and
PlotReport states are JSON. `read` parses the zip and every .npy header
itself and turns anything damaged or foreign into `Unusable` (one clause
saying what is wrong); `validate` checks the arrays against what this model
and optimizer need (`expected`) before anything is loaded. A file that
needs pickle (an older pfn15's, or a crafted one) is refused with the
command that converts it (pfn15/checkpoint.py), for the user to run on a
file they trust. docs/trust.md says what pfn15 trusts.
"""
import copy
import errno
import json
import math
import os
import re
import zipfile

import numpy

from chainer import serializers
from chainer.training import extension

from pfn15 import bn, errors
from pfn15.errors import CheckpointWriteError
from pfn15.training import progress as progress_module
from pfn15.training.finite import NonFiniteError

FORMAT = 3          # 3: no pickle, PlotReport's pending state; 2 is read too
IDENTITY_KEY = 'pfn15/identity'
NONE_KEY = 'pfn15/none'   # JSON list of the keys whose value is None
CONVERT = 'python -m pfn15.checkpoint convert'
_FILE = re.compile(r'^iter_(\d{8,})\.npz$')
_OLD_DIR = re.compile(r'^iter_(\d{8,})$')   # the per-rank layout of format 1


def write_atomically(path, arrays):
    """Write `arrays` as an .npz at `path`: temporary file, fsync, rename.

    Returns None, or what went wrong as a short phrase; the temporary file is
    removed either way, and an existing file at `path` is never touched.
    """
    tmp = path + '.tmp-%d' % os.getpid()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, 'wb') as f:
            _savez(f, arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)   # atomic: readers see the old set or the new file, whole
        return None
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if e.errno == errno.ENOSPC:
            return 'no space left on device'
        if e.errno == errno.EDQUOT:
            return 'disk quota exceeded'
        return '%s (%s)' % (e.strerror or e, e.filename or tmp)


def _savez(f, arrays):
    """numpy.savez, with the zip archive closed (not left to the garbage collector)
    when a write fails: a full disk then gives one error, not a second one from
    ZipFile.__del__ after the file is gone."""
    with zipfile.ZipFile(f, mode='w', compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in arrays.items():
            with zf.open(key + '.npy', 'w', force_zip64=True) as member:
                numpy.lib.format.write_array(member, numpy.asanyarray(value),
                                             allow_pickle=False)


def checkpoint_dir(out):
    return os.path.join(out, 'checkpoints')


def list_checkpoints(root):
    """(iterations of format-2 files, newest first; iterations of format-1 folders)."""
    files, old = [], []
    if os.path.isdir(root):
        for name in os.listdir(root):
            m = _FILE.match(name)
            if m:
                files.append(int(m.group(1)))
            m = _OLD_DIR.match(name)
            if m and os.path.isdir(os.path.join(root, name)):
                old.append(int(m.group(1)))
    return sorted(files, reverse=True), sorted(old, reverse=True)


def checkpoint_path(root, iteration):
    return os.path.join(root, 'iter_%08d.npz' % iteration)


class Unusable(Exception):
    """A checkpoint that cannot be used here -- damaged, foreign, or needing
    pickle; the message is one clause saying what is wrong."""


class NeedsPickle(Unusable):
    """A checkpoint holding pickled objects: never loaded; `CONVERT` rewrites it."""


_KINDS = 'biufU'   # numbers and text: nothing that needs pickle


def read(path):
    """({key: array}, identity dict) of the checkpoint at `path`, read without
    pickle: every member's .npy header is parsed and checked before its data
    is read, every byte CRC-checked. Raises Unusable (NeedsPickle for object
    arrays) for anything damaged or foreign; never anything else."""
    try:
        arrays = _read_members(path)
    except Unusable:
        raise
    except Exception as e:   # whatever the bytes make zipfile or NumPy say
        raise Unusable('damaged (%s)' % _clause(e))
    identity = _identity(arrays.pop(IDENTITY_KEY, None))
    none = arrays.pop(NONE_KEY, None)
    if none is not None:
        keys = _json(none, NONE_KEY)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise Unusable('its %s record is not a list of keys' % NONE_KEY)
        for key in keys:
            if key in arrays:
                raise Unusable('%s is listed as None and also holds an array' % key)
            arrays[key] = numpy.array(None, dtype=object)   # made here, not read
    return arrays, identity


def _clause(e):
    text = ' '.join(str(e).split())
    return '%s: %s' % (type(e).__name__, text[:200]) if text else type(e).__name__


def _read_members(path):
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise Unusable('not a zip archive (truncated, or not an .npz file)')
    except OSError as e:
        raise Unusable('cannot be opened (%s)' % (e.strerror or e))
    arrays = {}
    with zf:
        for info in zf.infolist():
            if not info.filename.endswith('.npy'):
                raise Unusable('it holds %r, which is not an array' % info.filename[:80])
            key = info.filename[:-len('.npy')]
            if key in arrays:
                raise Unusable('it holds %s twice' % key)
            with zf.open(info) as f:
                arrays[key] = _read_npy(f, key, info.file_size)
    return arrays


def _read_npy(f, key, member_size):
    version = numpy.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = numpy.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = numpy.lib.format.read_array_header_2_0(f)
    else:
        raise Unusable('%s is in .npy format %d.%d, which pfn15 does not write' % (
            key, version[0], version[1]))
    if dtype.hasobject:
        raise NeedsPickle('%s is a pickled object array, which pfn15 never loads' % key)
    if dtype.kind not in _KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise Unusable('%s has dtype %s, not numbers or text' % (key, dtype.str))
    nbytes = math.prod(shape) * dtype.itemsize
    # The declared size is checked before anything is allocated.
    if f.tell() + nbytes != member_size:
        raise Unusable('%s: its header says %s %s (%d bytes), its zip entry holds %d' % (
            key, dtype.str, shape, nbytes, member_size - f.tell()))
    buf = bytearray(nbytes)
    if f.readinto(buf) != nbytes or f.read(1):   # reading to the end checks the CRC
        raise Unusable('%s is truncated' % key)
    return numpy.frombuffer(buf, dtype).reshape(shape, order='F' if fortran else 'C')


def _json(array, key):
    if array.dtype.kind != 'U' or array.shape != ():
        raise Unusable('its %s record is not text' % key)
    try:
        return json.loads(str(array[()]))
    except ValueError:
        raise Unusable('its %s record is not valid JSON' % key)


def _identity(array):
    if array is None:
        raise Unusable('it has no %s record (not a pfn15 checkpoint)' % IDENTITY_KEY)
    ident = _json(array, IDENTITY_KEY)

    def need(ok, what):
        if not ok:
            raise Unusable('its %s record is malformed: %s' % (IDENTITY_KEY, what))

    def integer(d, name, low):
        v = d.get(name)
        need(isinstance(v, int) and not isinstance(v, bool) and v >= low,
             '%s must be an integer >= %d, not %r' % (name, low, v))

    need(isinstance(ident, dict), 'not a JSON object')
    need(ident.get('format') in (2, FORMAT), 'format %r (this pfn15 reads 2 and %d)'
         % (ident.get('format'), FORMAT))
    integer(ident, 'iteration', 0)
    integer(ident, 'workers', 1)
    need(isinstance(ident.get('config'), dict), 'no config')
    data = ident.get('dataset')
    need(isinstance(data, dict), 'no dataset')
    need(isinstance(data.get('fingerprint'), str), 'dataset.fingerprint must be text')
    for name in ('train_size', 'val_size', 'classes'):
        integer(data, name, 0)
    return ident


# ---------------------------------------------------------------- what this run needs

class _Spec(serializers.DictionarySerializer):
    """Records what serializing a trainer would write -- (shape, dtype), 'text'
    or 'none' per key -- without copying any array."""

    def __getitem__(self, key):
        return _Spec(self.target, self.path + key.strip('/') + '/')

    def __call__(self, key, value):
        key = self.path + key.lstrip('/')
        if value is None:
            self.target[key] = 'none'
        elif isinstance(value, str):
            self.target[key] = 'text'
        elif hasattr(value, 'shape') and hasattr(value, 'dtype'):
            self.target[key] = (tuple(value.shape), numpy.dtype(value.dtype))
        else:
            a = numpy.asarray(value)
            self.target[key] = (a.shape, a.dtype)
        return value


def expected(trainer):
    """{key: (shape, dtype) | 'text' | 'none'}: what a checkpoint of `trainer`
    holds, optimizer states included before they exist (the first update makes them)."""
    spec = _Spec()
    trainer.updater.serialize(spec['updater'])
    if hasattr(trainer.stop_trigger, 'serialize'):
        trainer.stop_trigger.serialize(spec['stop_trigger'])
    for name, entry in trainer._extensions.items():   # as Trainer.serialize does
        if hasattr(entry.extension, 'serialize'):
            entry.extension.serialize(spec['extensions'][name])
        if hasattr(entry.trigger, 'serialize'):
            entry.trigger.serialize(spec['extension_triggers'][name])
    spec('_snapshot_elapsed_time', 0.0)
    for opt_name, optimizer in trainer.updater.get_all_optimizers().items():
        for name, param in optimizer.target.namedparams():
            rule = getattr(param, 'update_rule', None)
            if rule is None or param.array is None:
                continue
            prefix = 'updater/optimizer:%s%s/' % (opt_name, name)
            for slot, shape, dtype in _slots(rule, param):
                spec.target[prefix + slot] = (shape, dtype)
    return spec.target


def _slots(rule, param):
    """(name, shape, dtype) of the optimizer state of one parameter."""
    if rule.state is not None:
        return [(k, tuple(v.shape), numpy.dtype(v.dtype)) for k, v in rule.state.items()]
    # The names, from a one-element stand-in (how Chainer's deserializer finds them).
    probe = copy.copy(rule)
    probe._state = {}
    one = numpy.zeros(1, numpy.float32)
    import chainer
    probe.init_state(chainer.Variable(one, grad=one))
    dtype = numpy.dtype(param.dtype)
    if getattr(rule, '_use_fp32_update', False) and dtype == numpy.float16:
        dtype = numpy.dtype(numpy.float32)   # the state of the float32 master copy
    return [(k, tuple(param.shape) if v.shape == (1,) else tuple(v.shape),
             dtype if v.shape == (1,) else numpy.dtype(v.dtype))
            for k, v in probe.state.items()]


_SUMMARY = re.compile(r'^(.*/_summary)/_summaries/(\d+)/(_x|_x2|_n)$')
_TRIGGER = re.compile(r'^extension_triggers/[^/]+/previous_(iteration|epoch_detail)$')
# Added in format 3: a format-2 checkpoint resumes without them.
_SINCE_FORMAT_3 = re.compile(r'^extensions/PlotReport[^/]*/_(summary|trigger)/')


def validate(arrays, identity, spec, iteration):
    """Raise Unusable unless `arrays` (from `read`) fit the run `spec` describes
    (from `expected`) and the file name's `iteration`: every key it needs, of
    its shape and dtype, finite, the JSON records well formed. Nothing is
    loaded anywhere before this passes."""
    if identity['iteration'] != iteration:
        raise Unusable('its identity says iteration %d, its name %d'
                       % (identity['iteration'], iteration))
    missing = [k for k in sorted(spec) if k not in arrays and not _TRIGGER.match(k)
               and not (identity['format'] == 2 and _SINCE_FORMAT_3.match(k))]
    if missing:
        raise Unusable('it lacks %d of the %d arrays this model and optimizer need (%s%s)'
                       % (len(missing), len(spec), ', '.join(missing[:2]),
                          ', ...' if len(missing) > 2 else ''))
    summaries = {}
    for key in sorted(arrays):
        a = arrays[key]
        want = spec.get(key)
        if want is None:
            m = _SUMMARY.match(key)
            if m and (m.group(1) + '/_names') in spec:
                summaries.setdefault(m.group(1), set()).add(int(m.group(2)))
                want = 'number'
            elif _TRIGGER.match(key):
                want = 'number'
            else:
                raise Unusable('it holds %s, which this model and optimizer do not have '
                               '(written for another model?)' % key)
        _check(key, a, want)
    for names_key in [k for k in arrays if k.endswith('/_summary/_names')]:
        prefix = names_key[:-len('/_names')]
        indices = summaries.get(prefix, set())
        names = _json(arrays[names_key], names_key)
        if sorted(indices) != list(range(len(names))) or any(
                '%s/_summaries/%d/%s' % (prefix, i, part) not in arrays
                for i in indices for part in ('_x', '_x2', '_n')):
            raise Unusable('%s does not match its %d names' % (prefix, len(names)))
    if int(arrays['updater/iteration']) != iteration:
        raise Unusable('its updater/iteration is %d, its name says %d'
                       % (int(arrays['updater/iteration']), iteration))


def _check(key, a, want):
    if want == 'none':
        return
    if isinstance(a, numpy.ndarray) and a.dtype.hasobject:   # a None from pfn15/none
        raise Unusable('%s is None, but this run needs %s' % (key, _show(want)))
    if want == 'text':
        if a.dtype.kind != 'U' or a.shape != ():
            raise Unusable('%s is %s, but this run needs text' % (key, _show((a.shape, a.dtype))))
        value = _json(a, key)
        if not _json_fits(key, value):
            raise Unusable('%s is not the JSON record it should be' % key)
        return
    if want == 'number':
        ok = a.shape == () and a.dtype.kind in 'iuf'
    else:
        ok = (a.shape, a.dtype) == want
    if not ok:
        raise Unusable('%s is %s, but this model and optimizer need %s'
                       % (key, _show((a.shape, a.dtype)), _show(want)))
    if a.dtype.kind == 'f' and not numpy.isfinite(a).all():
        raise Unusable('%s holds NaN or inf' % key)
    if a.dtype.kind in 'iu' and a.shape == () and int(a) < 0:
        raise Unusable('%s is negative (%d)' % (key, int(a)))


def _show(want):
    if want == 'number':
        return 'a number'
    if isinstance(want, str):
        return want
    shape, dtype = want
    return '%s %s' % (dtype.name, 'scalar' if shape == () else 'x'.join(map(str, shape)))


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) or v is None


def _json_fits(key, value):
    """The shapes of the JSON records Chainer's LogReport and PlotReport read back."""
    leaf = key.rsplit('/', 1)[-1]
    if leaf == '_names':
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if leaf == '_log':
        return isinstance(value, list) and all(
            isinstance(row, dict) and all(_number(v) for v in row.values()) for row in value)
    if leaf.startswith('_plot_'):
        return isinstance(value, dict) and all(
            isinstance(points, list) and all(
                isinstance(p, list) and len(p) == 2 and all(_number(v) for v in p)
                for p in points) for points in value.values())
    return True


def _finite(arrays):
    return all(numpy.isfinite(a).all() for a in arrays.values()
               if isinstance(a, numpy.ndarray) and a.dtype.kind == 'f')


class Checkpointer(object):

    """Collective `save(trainer)`: every rank calls it, rank 0 writes.

    `identity`: the run's record (config, dataset) stored in every checkpoint.
    `progress` (pfn15.training.progress) is told when a save starts and ends.
    """

    def __init__(self, out, comm, model, identity, keep=3, progress=None):
        self.root = checkpoint_dir(out)
        self.comm = comm
        self.model = model
        self.identity = identity
        self.keep = keep
        self.last_saved = None
        self.progress = progress or progress_module.NONE

    def _bn_keys(self):
        names = {id(link): name for name, link in self.model.namedlinks()}
        return lambda link, what: 'updater/model:main%s/%s' % (names[id(link)], what)

    def _state(self, trainer, iteration, averaged, **extra):
        """The checkpoint's arrays: the trainer, BN statistics as given, the identity."""
        state = serializers.DictionarySerializer()
        state.save(trainer)
        arrays = dict(state.target)
        key = self._bn_keys()
        for link, mean, var in averaged:
            arrays[key(link, 'avg_mean')] = _to_numpy(mean)
            arrays[key(link, 'avg_var')] = _to_numpy(var)
        identity = dict(self.identity, format=FORMAT, iteration=iteration,
                        workers=self.comm.size, **extra)
        arrays[IDENTITY_KEY] = numpy.array(json.dumps(identity, sort_keys=True))
        return _without_objects(arrays)

    def save(self, trainer):
        iteration = trainer.updater.iteration
        self.progress.checkpoint_start(iteration)
        self._save(trainer, iteration)
        self.progress.checkpoint_done(iteration)

    def _save(self, trainer, iteration):
        if self.last_saved == iteration:
            return
        # Collective: the BN statistics of every worker, averaged (not written back).
        averaged = bn.averaged_statistics(self.model, self.comm)
        verdict = None
        if self.comm.rank == 0:
            arrays = self._state(trainer, iteration, averaged)
            # Never replace a good checkpoint with a non-finite state (weights, or
            # BN statistics that overflowed).
            if not _finite(arrays):
                verdict = ('nonfinite', None)
            else:
                path = checkpoint_path(self.root, iteration)
                error = write_atomically(path, arrays)
                if error:
                    nbytes = sum(a.nbytes for a in arrays.values() if hasattr(a, 'nbytes'))
                    kept = ('the checkpoint at iteration %d is kept' % self.last_saved
                            if self.last_saved is not None else 'no earlier checkpoint '
                            'was written')
                    verdict = ('failed', '%s while writing %s (needs about %.1f MB; rank 0 '
                                         'on %s); %s' % (error, path, nbytes / 1e6, errors.host(),
                                                         kept))
                else:
                    self._collect_garbage()
        verdict = self.comm.mpi_comm.bcast(verdict, root=0)
        if verdict is not None and verdict[0] == 'nonfinite':
            raise NonFiniteError('non-finite model state at iteration %d (weights or BN '
                                 'statistics overflowed); not checkpointed' % iteration)
        if verdict is not None:
            raise CheckpointWriteError(verdict[1])
        self.last_saved = iteration

    def save_emergency(self, trainer):
        """From the watchdog thread, on the healthy rank that reports a stall,
        while the main thread is blocked (in a collective, or waiting for data):
        write the last completed iteration and return one clause saying what
        happened.

        Every rank holds the whole state, and the main thread only changes it
        in the optimizer's step, which never blocks, so a stalled main thread
        sits between two complete iterations. BN statistics cannot be averaged
        over workers now: this rank's own are saved (the next iteration after
        the resume replaces them anyway).
        """
        iteration = trainer.updater.iteration
        if self.last_saved == iteration:
            return 'the checkpoint at iteration %d is already written' % iteration
        averaged = [(link, link.avg_mean, link.avg_var) for link in bn.batch_norms(self.model)]
        arrays = self._state(trainer, iteration, averaged, written_while_stalled=True,
                             written_by_rank=self.comm.rank)
        if not _finite(arrays):
            return 'no checkpoint written (the state at iteration %d is not finite)' % iteration
        path = checkpoint_path(self.root, iteration)
        error = write_atomically(path, arrays)
        if error:
            return 'no checkpoint could be written (%s while writing %s)' % (error, path)
        self.last_saved = iteration
        where = '' if self.comm.rank == 0 else (
            ' by rank %d on %s (on node-local disks, copy it to rank 0\'s)' % (
                self.comm.rank, errors.host()))
        return 'checkpoint of iteration %d written to %s%s; rerun to continue' % (
            iteration, path, where)

    def _collect_garbage(self):
        for it in list_checkpoints(self.root)[0][self.keep:]:
            try:
                os.remove(checkpoint_path(self.root, it))
            except OSError:
                pass


def _without_objects(arrays):
    """Numbers and text only: a None is listed in NONE_KEY; anything else that
    would need pickle is a bug here, said before a file is written."""
    out, none = {}, []
    for key, value in arrays.items():
        a = numpy.asanyarray(value)
        if a.dtype.hasobject:
            if a.shape == () and a[()] is None:
                none.append(key)
                continue
            raise TypeError('checkpoint key %s holds a %s; checkpoints hold numbers and '
                            'text only' % (key, type(a[()] if a.shape == () else value).__name__))
        out[key] = value
    if none:
        out[NONE_KEY] = numpy.array(json.dumps(sorted(none)))
    return out


def _to_numpy(a):
    return a.get() if hasattr(a, 'get') else numpy.asarray(a)


class CheckpointExtension(extension.Extension):

    """Trainer extension: save every `every` iterations (0: never in between) and
    at the last one -- from inside the loop, while the iterators still run."""

    name = 'checkpoint'
    priority = extension.PRIORITY_READER - 50   # after this iteration's writers and readers

    def __init__(self, checkpointer, every, stop_trigger):
        self.checkpointer = checkpointer
        self.every = every
        self.stop_trigger = stop_trigger

    def trigger(self, trainer):
        it = trainer.updater.iteration
        return (self.every > 0 and it % self.every == 0) or self.stop_trigger(trainer)

    def __call__(self, trainer):
        self.checkpointer.save(trainer)
