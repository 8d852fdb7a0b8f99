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

Resuming (pfn15.training.resume) reads the newest readable file on rank 0
and broadcasts it, so only rank 0's disk needs the checkpoints.
"""
import json
import os
import re

import numpy

from chainer import serializers
from chainer.training import extension

from pfn15 import bn
from pfn15.training.extensions import NonFiniteError

FORMAT = 2
IDENTITY_KEY = 'pfn15/identity'
_FILE = re.compile(r'^iter_(\d{8,})\.npz$')
_OLD_DIR = re.compile(r'^iter_(\d{8,})$')   # the per-rank layout of format 1


def write_atomically(path, arrays):
    """Write `arrays` as an .npz at `path`: temporary file, fsync, rename."""
    tmp = path + '.tmp-%d' % os.getpid()
    with open(tmp, 'wb') as f:
        numpy.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)   # atomic: readers see the old set or the new file, whole


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

    def save(self, trainer):
        iteration = trainer.updater.iteration
        if self.last_saved == iteration:
            return
        # Collective: the BN statistics of every worker, averaged (not written back).
        averaged = bn.averaged_statistics(self.model, self.comm)
        ok = True
        if self.comm.rank == 0:
            state = serializers.DictionarySerializer()
            state.save(trainer)
            arrays = dict(state.target)
            key = self._bn_keys()
            for link, mean, var in averaged:
                arrays[key(link, 'avg_mean')] = _to_numpy(mean)
                arrays[key(link, 'avg_var')] = _to_numpy(var)
            # Never replace a good checkpoint with a non-finite state (weights, or
            # BN statistics that overflowed).
            ok = all(numpy.isfinite(a).all() for a in arrays.values()
                     if isinstance(a, numpy.ndarray) and a.dtype.kind == 'f')
        if not self.comm.mpi_comm.bcast(ok, root=0):
            raise NonFiniteError('non-finite model state at iteration %d (weights or BN '
                                 'statistics overflowed); not checkpointed' % iteration)
        if self.comm.rank == 0:
            identity = dict(self.identity, format=FORMAT, iteration=iteration,
                            workers=self.comm.size)
            arrays[IDENTITY_KEY] = numpy.array(json.dumps(identity, sort_keys=True))
            os.makedirs(self.root, exist_ok=True)
            write_atomically(checkpoint_path(self.root, iteration), arrays)
            self._collect_garbage()
        self.last_saved = iteration

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
