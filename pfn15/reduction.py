"""The canonical summation order: one fixed tree over a global batch's BN groups.

Floating-point addition is not associative, so a sum over the G BN groups of
a global batch depends on the order of its additions -- and that order moved
with the worker count: one rank accumulated ((g0 + g1) + g2) + g3, an MPI
all-reduce over four ranks added (g0 + g1) + (g2 + g3). Here every sum over
groups (gradients, BN statistics, training and validation metrics) is the
value of one tree that depends on G alone:

* the tree over leaves [0, G): a node [a, b) with b - a > 1 has the children
  [a, a + s) and [a + s, b), s the largest power of two below b - a. For G a
  power of two it is the balanced binary tree, and every aligned block of
  2^j leaves is a subtree.
* a rank owns a contiguous range of leaves (its k microbatches, or its share
  of the validation batches). `Accumulator` sums the leaves as they come into
  the range's `cover`: the maximal tree nodes inside the range (one node when
  the range is aligned; at most about 2 log2(range) otherwise), holding
  O(log k) partial sums, never k.
* `allreduce` finishes the tree across ranks: the covers of all ranks
  partition [0, G) into tree nodes; each buffer is cut into one chunk per
  rank, every rank sends chunk j of each of its cover-node sums to rank j
  (all-to-all), rank j evaluates the tree's upper nodes on its chunk, and an
  all-gather gives every rank the whole, identical, sum. Every node's value
  is `left + right` of the same two operands wherever it is computed, so the
  result is bit-identical for every split of [0, G) into contiguous ranges --
  any worker count and any k, powers of two or not. Only moved bytes travel
  through MPI/NCCL; all arithmetic is here.

The cost: a rank sends (its cover size) x (W-1)/W of each buffer and receives
(W-1)/W of it, then the same again in the all-gather -- when every range is a
subtree (e.g. W and k powers of two) exactly a ring all-reduce's volume; a
rank whose range is not a subtree sends one chunk per cover node. See
docs/reduction.md.

Pure NumPy and mpi4py (the CuPy/NCCL path imports CuPy only when used).
"""
import numpy


# ---------------------------------------------------------------- the tree (pure)

def split(n):
    """Size of the left child of a node of n >= 2 leaves: the largest power of two below n."""
    s = 1
    while s * 2 < n:
        s *= 2
    return s


def cover(lo, hi, leaves):
    """The maximal tree nodes [a, b) of the tree over [0, leaves) inside [lo, hi), in order."""
    out = []

    def walk(a, b):
        if b <= lo or a >= hi or a >= b:
            return
        if lo <= a and b <= hi:
            out.append((a, b))
            return
        m = a + split(b - a)
        walk(a, m)
        walk(m, b)
    walk(0, leaves)
    return out


def ranges(leaves, parts, sizes=None):
    """[(lo, hi)] of `parts` contiguous ranges of [0, leaves): `sizes` each if given,
    else as even as possible (sizes differing by at most one)."""
    if sizes is None:
        return [(leaves * r // parts, leaves * (r + 1) // parts) for r in range(parts)]
    out, lo = [], 0
    for s in sizes:
        out.append((lo, lo + s))
        lo += s
    if lo != leaves:
        raise ValueError('ranges of sizes %s do not add up to %d leaves' % (sizes, leaves))
    return out


def evaluate(known, leaves, add):
    """The root of the tree over [0, leaves), from `known` {node: value} that
    partition it; `add(left, right)` makes a node (lower index first)."""
    def value(a, b):
        if (a, b) in known:
            return known[(a, b)]
        m = a + split(b - a)
        return add(value(a, m), value(m, b))
    return value(0, leaves)


def _add(left, right):
    """left + right for tuples of arrays; `left` is a partial sum we own: reused."""
    for x, y in zip(left, right):
        x += y          # the same bits as x + y, without a new buffer
    return left


class Accumulator(object):

    """Sums leaves lo, lo+1, ..., hi-1 (tuples of arrays) into the cover of
    [lo, hi) in the tree over [0, leaves). Holds only unfinished partial sums:
    a stack of completed subtrees, merged as soon as both children are in."""

    def __init__(self, lo, hi, leaves):
        self.lo, self.hi, self.leaves = lo, hi, leaves
        self.next = lo
        self.stack = []      # [((a, b), tuple of arrays)]
        inside = set()

        def walk(a, b):
            if a >= lo and b <= hi:
                inside.add((a, b))
            if b - a > 1 and a < hi and b > lo:
                m = a + split(b - a)
                walk(a, m)
                walk(m, b)
        if leaves > 0:
            walk(0, leaves)
        self._nodes = inside

    def add(self, leaf):
        """Add the next leaf (a tuple of arrays; it is kept, not copied: pass copies)."""
        if self.next >= self.hi:
            raise ValueError('leaf %d is outside [%d, %d)' % (self.next, self.lo, self.hi))
        self.stack.append(((self.next, self.next + 1), tuple(leaf)))
        self.next += 1
        while len(self.stack) >= 2:
            (a, m), left = self.stack[-2]
            (m2, b), right = self.stack[-1]
            if m != m2 or (a, b) not in self._nodes:
                break
            self.stack[-2:] = [((a, b), _add(left, right))]

    def nodes(self):
        """[(node, values)]: the cover of the range, once every leaf is in."""
        if self.next != self.hi:
            raise ValueError('%d of %d leaves added' % (self.next - self.lo, self.hi - self.lo))
        got = [node for node, _ in self.stack]
        assert got == cover(self.lo, self.hi, self.leaves), (got, self.lo, self.hi)
        return list(self.stack)


def tree_sum(leaves_values):
    """The canonical sum of a list of leaves (tuples of arrays) on one process."""
    acc = Accumulator(0, len(leaves_values), len(leaves_values))
    for v in leaves_values:
        acc.add(tuple(numpy.array(x, copy=True) for x in v))
    return acc.nodes()[0][1]


# ---------------------------------------------------------------- across ranks (MPI)

def _chunks(n, parts):
    return [(n * j // parts, n * (j + 1) // parts) for j in range(parts)]


_workspace = {}


def _buffer(purpose, n, dtype):
    """A reused host buffer: fresh ones of this size cost more in page faults than
    the transfer itself."""
    key = (purpose, n, numpy.dtype(dtype).str)
    if key not in _workspace:
        for old in [k for k in _workspace if k[0] == purpose and k[2] == key[2]]:
            del _workspace[old]
        _workspace[key] = numpy.empty(n, dtype)
    return _workspace[key]


_private_comms = {}


def _private(mpi_comm):
    """A duplicate of `mpi_comm` for the exchange (made once, collectively, at the
    first all-reduce): its messages never meet ChainerMN's ANY_TAG receives."""
    key = id(mpi_comm)
    if key not in _private_comms:
        _private_comms[key] = (mpi_comm, mpi_comm.Dup())
    return _private_comms[key][1]


def _exchange(p2p, rank, sends, recvs):
    """Post every receive and send at once (non-blocking point-to-point), then wait:
    far faster than MPICH's Allgatherv of the same buffers on oversubscribed ranks
    (docs/performance.md). Messages to itself are copies."""
    from mpi4py import MPI
    mine = dict((peer, buf) for peer, buf in recvs if peer == rank)
    reqs = [p2p.Irecv(buf, source=peer, tag=TAG) for peer, buf in recvs if peer != rank]
    for peer, buf in sends:
        if peer == rank:
            mine[rank][0][...] = buf[0]
        else:
            reqs.append(p2p.Isend(buf, dest=peer, tag=TAG))
    MPI.Request.Waitall(reqs)


TAG = 22


def _in_place(left, right):
    numpy.add(left, right, out=left)   # left is a receive-buffer slice of this call
    return left


def allreduce(mpi_comm, partials, all_ranges, leaves, template):
    """The canonical sum over [0, leaves), identical on every rank.

    partials: this rank's [(node, tuple of 1-D arrays)] (Accumulator.nodes());
    all_ranges: every rank's (lo, hi), the same list on every rank;
    template: a tuple of 1-D arrays with the buffers' sizes and dtypes (for
    ranks owning no leaf, and for leaves == 0, which sums to zeros).
    Returns a tuple of arrays, one per buffer: reused workspace, valid until
    the next call.
    """
    size, rank = mpi_comm.Get_size(), mpi_comm.Get_rank()
    if leaves == 0:
        return tuple(numpy.zeros_like(t) for t in template)
    covers = [cover(lo, hi, leaves) for lo, hi in all_ranges]
    if size == 1:
        return tuple(partials[0][1])
    from mpi4py import MPI
    p2p = _private(mpi_comm)
    out = []
    for i, t in enumerate(template):
        n, dtype = t.size, t.dtype
        chunks = _chunks(n, size)
        mine = len(partials)
        # To rank j: chunk j of each of my cover nodes, in node order (one node:
        # the node's own buffer already is that layout).
        if mine == 1:
            send = numpy.ascontiguousarray(partials[0][1][i])
            scounts = [hi - lo for lo, hi in chunks]
            sdispls = [lo for lo, _ in chunks]
        else:
            send = _buffer(('send', i), max(1, mine * n), dtype)
            scounts, sdispls, pos = [], [], 0
            for lo, hi in chunks:
                sdispls.append(pos)
                for _, values in partials:
                    send[pos:pos + hi - lo] = values[i][lo:hi]
                    pos += hi - lo
                scounts.append(pos - sdispls[-1])
        my_lo, my_hi = chunks[rank]
        width = my_hi - my_lo
        rcounts = [len(c) * width for c in covers]
        rdispls = [sum(rcounts[:r]) for r in range(size)]
        recv = _buffer(('recv', i), max(1, sum(rcounts)), dtype)
        mtype = MPI._typedict[numpy.dtype(dtype).char]
        _exchange(p2p, rank, [(j, [send[d:d + c], mtype]) for j, (c, d)
                              in enumerate(zip(scounts, sdispls)) if c],
                  [(r, [recv[d:d + c], mtype]) for r, (c, d)
                   in enumerate(zip(rcounts, rdispls)) if c])
        known = {}
        for r, c in enumerate(covers):
            for j, node in enumerate(c):
                at = rdispls[r] + j * width
                known[node] = recv[at:at + width]
        # The tree's upper nodes on my chunk, each into its left operand's slice.
        total = evaluate(known, leaves, _in_place)
        result = _buffer(('result', i), n, dtype)
        _exchange(p2p, rank, [(j, [total, mtype]) for j in range(size) if width],
                  [(r, [result[lo:hi], mtype]) for r, (lo, hi) in enumerate(chunks) if hi > lo])
        out.append(result)
    return tuple(out)


# ---------------------------------------------------------------- across GPUs (NCCL)
#
# NOT RUN: written and reviewed without a GPU (docs/reduction.md). The same
# algorithm as `allreduce`: NCCL only moves bytes (grouped send/recv for the
# all-to-all, allGather), CuPy adds at the same tree nodes in the buffer's
# dtype -- float16 buffers are summed in float16, so their rounding is the
# same for every worker count too.

def _nccl_type(dtype):
    from cupy.cuda import nccl
    return {numpy.dtype(numpy.float16): nccl.NCCL_FLOAT16,
            numpy.dtype(numpy.float32): nccl.NCCL_FLOAT32,
            numpy.dtype(numpy.float64): nccl.NCCL_FLOAT64}[numpy.dtype(dtype)]


def allreduce_nccl(nccl_comm, size, rank, partials, all_ranges, leaves, template, stream=None):
    """`allreduce` for CuPy arrays over a cupy.cuda.nccl.NcclCommunicator (NOT RUN)."""
    import cupy
    from cupy.cuda import nccl
    if leaves == 0:
        return tuple(cupy.zeros_like(t) for t in template)
    if size == 1:
        return tuple(x.copy() for x in partials[0][1])
    stream = stream or cupy.cuda.get_current_stream()
    covers = [cover(lo, hi, leaves) for lo, hi in all_ranges]
    out = []
    for i, t in enumerate(template):
        n = t.size
        width = -(-n // size)                 # equal chunks (allGather needs them), padded
        dtype, ntype = t.dtype, _nccl_type(t.dtype)
        padded = [cupy.zeros(width * size, dtype) for _ in partials]
        for buf, (_, values) in zip(padded, partials):
            buf[:n] = values[i]
        send = (cupy.stack([b.reshape(size, width) for b in padded], axis=1)   # [j][node]
                if partials else cupy.empty((size, 0, width), dtype))
        send = cupy.ascontiguousarray(send)
        recv = [cupy.empty((len(c), width), dtype) for c in covers]
        nccl.groupStart()
        for j in range(size):
            if partials:
                nccl_comm.send(send[j].data.ptr, send[j].size, ntype, j, stream.ptr)
            if covers[j]:
                nccl_comm.recv(recv[j].data.ptr, recv[j].size, ntype, j, stream.ptr)
        nccl.groupEnd()
        known = {}
        for r, c in enumerate(covers):
            for j, node in enumerate(c):
                known[node] = recv[r][j]
        with stream:
            total = cupy.ascontiguousarray(evaluate(known, leaves, lambda a, b: a + b))
            result = cupy.empty(width * size, dtype)
        nccl_comm.allGather(total.data.ptr, result.data.ptr, width, ntype, stream.ptr)
        out.append(result[:n])
    return tuple(out)
