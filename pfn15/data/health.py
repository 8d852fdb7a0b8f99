"""The data's health on this rank: bad images replaced, the first missing file.

A transform (pfn15.data.transforms) runs in the training process and in
MultiprocessIterator's decoding processes (forkserver: no shared memory), so
the transforms a process makes share its `Tally` (`tally()`): a small folder
in the temp directory that their decoding processes write to and the process
that made them reads.

* `count`: one byte per image replaced (O_APPEND: writers never interleave);
* `error`: the first missing file's message (created exclusively: the first
  writer wins);
* `bad/<sha1 of the path>`: one file per distinct bad image, holding its path
  and the reason. Created exclusively, so the process that creates it is the
  one that warns: one warning per bad file however many processes and epochs
  meet it.

"Replaced" is what data.bad_images=skip does: the sample keeps its label
and its place in the batch, and the mean image (all zeros after
normalization) stands in for its pixels.
"""
import atexit
import hashlib
import os
import shutil
import sys
import tempfile

_tallies = []       # this process's tally (a list: a forked child makes its own)
_own_error = None   # the first data error met in this process itself


def tally():
    """This process's Tally, made on first use (a forked child makes its own)."""
    for t in _tallies:
        if t.creator == os.getpid():
            return t
    return Tally()


class Tally:
    """Where one transform's processes record bad and missing images."""

    def __init__(self):
        self.creator = os.getpid()
        self.path = tempfile.mkdtemp(prefix='pfn15-health-%d-' % os.getpid())
        os.mkdir(os.path.join(self.path, 'bad'))
        _tallies.append(self)

    def replaced(self, path, reason, warn=True):
        """An image replaced by the mean image; warns once per file (all processes)."""
        with open(os.path.join(self.path, 'count'), 'ab') as f:
            f.write(b'.')
        # A file's absolute path; a packed sample names its shard and source.
        name = os.path.abspath(path) if isinstance(path, str) else str(path)
        key = hashlib.sha1(os.fsencode(name)).hexdigest()
        try:
            with open(os.path.join(self.path, 'bad', key), 'x') as f:
                f.write('%s\t%s' % (name, reason))
        except FileExistsError:
            return
        except OSError:
            pass   # the tally folder is gone (the creator exited): still warn
        if warn:
            print('pfn15: warning: bad image %s (%s): replaced by the mean image, its label '
                  'kept (data.bad_images=skip)' % (path, reason), file=sys.stderr, flush=True)

    def missing(self, message):
        """Record the first data error (a missing file) of this tally."""
        global _own_error
        if os.getpid() == self.creator:
            if _own_error is None:
                _own_error = message
            return
        try:
            with open(os.path.join(self.path, 'error'), 'x') as f:
                f.write(message)
        except (FileExistsError, OSError):
            pass

    def count(self):
        try:
            return os.path.getsize(os.path.join(self.path, 'count'))
        except OSError:
            return 0

    def error(self):
        try:
            with open(os.path.join(self.path, 'error')) as f:
                return f.read()
        except OSError:
            return None

    def bad_files(self):
        """{absolute path: reason} of the distinct bad images recorded."""
        out = {}
        try:
            names = os.listdir(os.path.join(self.path, 'bad'))
        except OSError:
            return out
        for name in names:
            try:
                with open(os.path.join(self.path, 'bad', name)) as f:
                    p, _, reason = f.read().partition('\t')
                out[p] = reason
            except OSError:
                pass
        return out


def _remove_tallies():
    for t in _tallies:
        if t.creator == os.getpid():
            shutil.rmtree(t.path, ignore_errors=True)


atexit.register(_remove_tallies)


def _mine():
    return [t for t in _tallies if t.creator == os.getpid()]


def bad_image_count():
    """Images replaced so far by this process's transforms and their decoding processes."""
    return sum(t.count() for t in _mine())


def bad_files():
    """{path: reason} of the distinct bad images met so far (see bad_image_count)."""
    out = {}
    for t in _mine():
        out.update(t.bad_files())
    return out


def first_data_error():
    """The first data error (a missing file) met by this process or by the decoding
    processes of the transforms it made; None if none. Missing is not corrupt:
    a file listed but absent means the data on this node is not the data listed,
    so the trainer stops every rank with exit 2 (DataCheck) instead of training
    on stand-in images."""
    if _own_error is not None:
        return _own_error
    for t in _mine():
        e = t.error()
        if e is not None:
            return e
    return None


class Reporter:
    """Names each bad image once for the whole job, from rank 0.

    `report(mpi_comm)` is collective: every rank sends the bad files it met
    and no rank has reported yet; rank 0 prints one warning per new file. The
    trainer calls it when the all-reduced count of replaced images has grown,
    so it costs nothing while the data is clean.
    """

    def __init__(self):
        self.reported = set()

    def report(self, mpi_comm):
        mine = {p: r for p, r in bad_files().items() if p not in self.reported}
        every = mpi_comm.allgather(mine)
        new = {}
        for rank, files in enumerate(every):
            for p, reason in files.items():
                new.setdefault(p, (reason, rank))
        if mpi_comm.Get_rank() == 0:
            for p in sorted(new):
                reason, rank = new[p]
                print('pfn15: warning: bad image %s (%s; met on rank %d): replaced by the mean '
                      'image, its label kept (data.bad_images=skip)' % (p, reason, rank),
                      file=sys.stderr, flush=True)
        self.reported.update(new)
        return len(new)


def clear_error():
    """Forget this process's recorded data errors (tests, benchmarks)."""
    global _own_error
    _own_error = None
    for t in _mine():
        try:
            os.remove(os.path.join(t.path, 'error'))
        except OSError:
            pass
