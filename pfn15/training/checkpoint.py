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

Resuming (pfn15.training.resume) reads the newest readable file on rank 0
and broadcasts it, so only rank 0's disk needs the checkpoints.
"""
import errno
import json
import os
import re
import zipfile

import numpy

from chainer import serializers
from chainer.training import extension

from pfn15 import bn, errors
from pfn15.errors import CheckpointWriteError
from pfn15.training.extensions import NonFiniteError

FORMAT = 2
IDENTITY_KEY = 'pfn15/identity'
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
                                             allow_pickle=True)


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


def read(path):
    """{key: array} of the checkpoint at `path`, every array read (CRC-checked),
    and its identity dict. Raises on an unreadable or foreign file."""
    with numpy.load(path, allow_pickle=True) as npz:   # a None is an object array
        arrays = {key: npz[key] for key in npz.files}
    if IDENTITY_KEY not in arrays:
        raise ValueError('no %s record (not a pfn15 checkpoint)' % IDENTITY_KEY)
    return arrays, json.loads(str(arrays.pop(IDENTITY_KEY)))


def _finite(arrays):
    return all(numpy.isfinite(a).all() for a in arrays.values()
               if isinstance(a, numpy.ndarray) and a.dtype.kind == 'f')


class Checkpointer(object):

    """Collective `save(trainer)`: every rank calls it, rank 0 writes.

    `identity`: the run's record (config, dataset) stored in every checkpoint.
    """

    def __init__(self, out, comm, model, identity, keep=3):
        self.root = checkpoint_dir(out)
        self.comm = comm
        self.model = model
        self.identity = identity
        self.keep = keep
        self.last_saved = None

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
        return arrays

    def save(self, trainer):
        iteration = trainer.updater.iteration
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
