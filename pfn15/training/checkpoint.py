"""Atomic multi-node checkpoints and `resume=auto`.

Each rank writes its own file, OUT/checkpoints/iter_NNNNNNNN/rank_R.npz: the
whole trainer (model, optimizer state with RMSprop and momentum buffers,
updater and iterator positions, extension state) plus the random states the
run depends on. A file is written to a temporary name and renamed, so a crash
while writing never destroys the last good checkpoint. Only the newest `keep`
are kept.

Resuming needs a checkpoint that *every* rank has and can read. Ranks may sit
on node-local disks, so each rank lists its own files, the lists are
intersected over MPI, and the newest candidate that every rank can read wins.
"""
import os
import re

from mpi4py import MPI
import numpy

from chainer import serializers
from chainer.training import extension

from pfn15.training.extensions import NonFiniteError

_DIR = re.compile(r'^iter_(\d{8,})$')


class Checkpointer(object):

    def __init__(self, out, comm, keep=3, random_states=()):
        self.root = os.path.join(out, 'checkpoints')
        self.comm = comm
        self.keep = keep
        # numpy RandomStates whose state must survive a restart (e.g. the
        # shuffling order sampler of the training iterator).
        self.random_states = list(random_states)
        self.last_saved = None

    def _path(self, iteration):
        return os.path.join(self.root, 'iter_%08d' % iteration, 'rank_%d.npz' % self.comm.rank)

    # ------------------------------------------------------------ saving
    def save(self, trainer):
        iteration = trainer.updater.iteration
        if self.last_saved == iteration:
            return
        state = serializers.DictionarySerializer()
        state.save(trainer)
        arrays = dict(state.target)
        # Never replace a good checkpoint with a non-finite state (weights, or BN
        # statistics that overflowed): every rank must agree before anyone writes.
        finite = all(numpy.isfinite(a).all() for a in arrays.values()
                     if isinstance(a, numpy.ndarray) and a.dtype.kind == 'f')
        if not self.comm.mpi_comm.allreduce(int(finite), op=MPI.MIN):
            raise NonFiniteError('non-finite model state at iteration %d (weights or BN '
                                 'statistics overflowed); not checkpointed' % iteration)
        for i, rs in enumerate(self.random_states):
            kind, keys, pos, has_gauss, cached = rs.get_state()
            arrays['pfn15_rng/%d/keys' % i] = keys
            arrays['pfn15_rng/%d/misc' % i] = numpy.array([pos, has_gauss, cached], numpy.float64)
        path = self._path(iteration)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + '.tmp-%d' % os.getpid()
        with open(tmp, 'wb') as f:
            numpy.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)   # atomic: readers see the old set or the new file, whole
        self.last_saved = iteration
        # Old ones go only once every rank has the new one.
        self.comm.mpi_comm.Barrier()
        self._collect_garbage()

    def _own_iterations(self):
        found = []
        if os.path.isdir(self.root):
            for name in os.listdir(self.root):
                m = _DIR.match(name)
                if m and os.path.isfile(self._path(int(m.group(1)))):
                    found.append(int(m.group(1)))
        return sorted(found)

    def _collect_garbage(self):
        for it in self._own_iterations()[:-self.keep]:
            path = self._path(it)
            os.remove(path)
            try:   # the last rank out removes the folder (ranks may share it)
                os.rmdir(os.path.dirname(path))
            except OSError:
                pass

    # ------------------------------------------------------------ resuming
    def latest_common(self):
        """Iterations (newest first) that every rank has a file for."""
        lists = self.comm.mpi_comm.allgather(self._own_iterations())
        common = set(lists[0])
        for lst in lists[1:]:
            common &= set(lst)
        return sorted(common, reverse=True)

    def _readable(self, iteration):
        try:
            with numpy.load(self._path(iteration)) as npz:
                for key in npz.files:
                    npz[key]   # reads and CRC-checks every array
            return True
        except Exception:
            return False

    def resume(self, trainer):
        """Load the newest checkpoint every rank can read; return its iteration or None."""
        for iteration in self.latest_common():
            ok = self.comm.mpi_comm.allreduce(int(self._readable(iteration)), op=MPI.MIN)
            if not ok:
                if self.comm.rank == 0:
                    print('pfn15: checkpoint at iteration %d is unreadable on some rank; '
                          'trying an older one' % iteration, flush=True)
                continue
            with numpy.load(self._path(iteration)) as npz:
                serializers.NpzDeserializer(npz).load(trainer)
                for i, rs in enumerate(self.random_states):
                    keys = npz['pfn15_rng/%d/keys' % i]
                    pos, has_gauss, cached = npz['pfn15_rng/%d/misc' % i]
                    rs.set_state(('MT19937', keys, int(pos), int(has_gauss), float(cached)))
            self.last_saved = iteration
            return iteration
        return None


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
