"""Atomic multi-node checkpoints and `resume=auto`.

Each rank writes its own file, OUT/checkpoints/iter_NNNNNNNN/rank_R.npz: the
whole trainer (model, optimizer state with RMSprop and momentum buffers,
updater and iterator positions, extension state) plus the random states the
run depends on. A file is written to a temporary name and renamed, so a crash
while writing never destroys the last good checkpoint. Only the newest `keep`
are kept.

Resuming needs a checkpoint that *every* rank has and can read. Ranks may sit
on node-local disks, so each rank lists its own files, the lists are
intersected over MPI, and the newest candidate that every rank can read wins;
a rank that lacks it or cannot read it is named, with its file and the reason.

A write that fails on any rank (a full disk, a quota, an I/O error) fails on
all: every rank removes its temporary file and its part of the new set, the
earlier checkpoints stay, and CheckpointWriteError carries one line naming
the rank, the file system's complaint and the size needed (exit 5). The
kept sets are chosen from the sets every rank has, so they stay the same on
all ranks.
"""
import errno
import os
import re
import zipfile

from mpi4py import MPI
import numpy

from chainer import serializers
from chainer.training import extension

from pfn15.training.extensions import NonFiniteError

_DIR = re.compile(r'^iter_(\d{8,})$')
EXIT_CHECKPOINT_FAILED = 5


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written on some rank (raised on every rank)."""


def _host():
    return MPI.Get_processor_name()


def _where(rank, host):
    return 'rank %d on %s' % (rank, host)


class Checkpointer(object):

    def __init__(self, out, comm, keep=3, random_states=()):
        self.root = os.path.join(out, 'checkpoints')
        self.comm = comm
        self.keep = keep
        # numpy RandomStates whose state must survive a restart (e.g. the
        # shuffling order sampler of the training iterator).
        self.random_states = list(random_states)
        self.last_saved = None

    def _path(self, iteration, rank=None):
        return os.path.join(self.root, 'iter_%08d' % iteration, 'rank_%d.npz'
                            % (self.comm.rank if rank is None else rank))

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
        error = self._write(path, arrays)
        # One all-gather instead of a barrier: every rank learns whether all wrote
        # their part, and which sets each has (for the garbage collection).
        results = self.comm.mpi_comm.allgather((error, _host(), self._own_iterations()))
        failed = [(r, e, h) for r, (e, h, _) in enumerate(results) if e]
        if failed:
            self._remove(iteration)   # an incomplete set is no checkpoint: free its space
            r, e, h = failed[0]
            nbytes = sum(a.nbytes for a in arrays.values() if hasattr(a, 'nbytes'))
            kept = ('the checkpoint at iteration %d is kept' % self.last_saved
                    if self.last_saved is not None else 'no earlier checkpoint was written')
            raise CheckpointWriteError(
                '%s while writing %s (needs about %.1f MB per rank; %s%s); %s'
                % (e, os.path.dirname(path), nbytes / 1e6, _where(r, h),
                   ' and %d other rank(s)' % (len(failed) - 1) if len(failed) > 1 else '',
                   kept))
        self.last_saved = iteration
        # Old ones go only once every rank has the new one; the sets to keep are
        # the newest that *every* rank has, so all ranks keep the same ones.
        common = set(results[0][2])
        for _, _, its in results[1:]:
            common &= set(its)
        keep = set(sorted(common)[-self.keep:])
        for it in self._own_iterations():
            if it not in keep and it < iteration:
                self._remove(it)

    def _write(self, path, arrays):
        """Write `path` through a temporary file; None, or what went wrong (the
        temporary file removed)."""
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

    def _remove(self, iteration):
        path = self._path(iteration)
        for p in [path] + [os.path.join(os.path.dirname(path), n)
                           for n in _listdir(os.path.dirname(path))
                           if n.startswith(os.path.basename(path) + '.tmp-')]:
            try:
                os.remove(p)
            except OSError:
                pass
        try:   # the last rank out removes the folder (ranks may share it)
            os.rmdir(os.path.dirname(path))
        except OSError:
            pass

    def save_emergency(self):
        """Called by the watchdog thread when a stop signal comes while the job is
        stalled: write the last completed iteration if this format allows, and
        say what happened (one clause).

        Today's format has one file per rank, so a healthy rank cannot write the
        part of a stuck one: nothing new can be written. A world-size-independent
        format (one state, written by one rank) would save a copy of the state
        taken at the end of the last iteration here.
        """
        newest = self.last_saved
        if newest is None:
            its = self._own_iterations()
            newest = its[-1] if its else None
        return ('no checkpoint could be written (every rank writes its own part, and a '
                'stalled rank cannot); %s'
                % ('the checkpoint at iteration %d is kept' % newest if newest is not None
                   else 'none was written before'))

    def _own_iterations(self):
        found = []
        if os.path.isdir(self.root):
            for name in os.listdir(self.root):
                m = _DIR.match(name)
                if m and os.path.isfile(self._path(int(m.group(1)))):
                    found.append(int(m.group(1)))
        return sorted(found)

    # ------------------------------------------------------------ resuming
    def latest_common(self):
        """Iterations (newest first) that every rank has a file for."""
        lists = self.comm.mpi_comm.allgather(self._own_iterations())
        common = set(lists[0])
        for lst in lists[1:]:
            common &= set(lst)
        return sorted(common, reverse=True)

    def _unreadable(self, iteration):
        """None if this rank's file of `iteration` reads whole, else why not."""
        try:
            with numpy.load(self._path(iteration)) as npz:
                for key in npz.files:
                    npz[key]   # reads and CRC-checks every array
            return None
        except Exception as e:
            return '%s: %s' % (type(e).__name__, str(e).splitlines()[0] if str(e) else '')

    def _say(self, text):
        if self.comm.rank == 0:
            print('pfn15: %s' % text, flush=True)

    def resume(self, trainer):
        """Load the newest checkpoint every rank can read; return its iteration or None."""
        lists = self.comm.mpi_comm.allgather((_host(), self._own_iterations()))
        everyone = set().union(*(set(its) for _, its in lists))
        for iteration in sorted(everyone, reverse=True):
            lacking = [r for r, (_, its) in enumerate(lists) if iteration not in its]
            if lacking:
                r = lacking[0]
                self._say('checkpoint at iteration %d is incomplete: %s has no %s%s; trying '
                          'an older one' % (iteration, _where(r, lists[r][0]),
                                            self._path(iteration, r),
                                            ' (nor have %d more ranks theirs)' % (len(lacking) - 1)
                                            if len(lacking) > 1 else ''))
                continue
            problems = self.comm.mpi_comm.allgather((self._unreadable(iteration),
                                                     self._path(iteration)))
            bad = [(r, p) for r, p in enumerate(problems) if p[0]]
            if bad:
                r, (why, path) = bad[0]
                self._say('checkpoint at iteration %d is unreadable on %s: %s: %s%s; trying '
                          'an older one' % (iteration, _where(r, lists[r][0]), path, why,
                                            ' (and on %d more ranks)' % (len(bad) - 1)
                                            if len(bad) > 1 else ''))
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


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def _savez(f, arrays):
    """numpy.savez, with the zip archive closed (not left to the garbage collector)
    when a write fails: a full disk then gives one error, not a second one from
    ZipFile.__del__ after the file is gone."""
    with zipfile.ZipFile(f, mode='w', compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in arrays.items():
            with zf.open(key + '.npy', 'w', force_zip64=True) as member:
                numpy.lib.format.write_array(member, numpy.asanyarray(value),
                                             allow_pickle=True)
