"""The ImageNet-scale index path at W ranks: list, broadcast, order.

    mpiexec -n 8 python tools/index_scale.py [--entries 1281167] [--dir /tmp/pfn15-index]
                                             [--format both|files|packed]

Both formats in one command (the default), the list-file path first:

Writes (once) a synthetic ImageNet-style list file of `--entries` lines over
1,000 class folders (`train/nXXXXXXXX/nXXXXXXXX_N.JPEG label`; the image
files themselves are not created), then times what `pfn15.data.build` and
the global order do with it:

  list        rank 0 parses the list file into the NumPy index (paths as one
              fixed-width bytes array, int32 labels) -- imagenet._read_list
              and ImageList, as `load` does, minus the per-folder existence
              check (there are no files) -- and fingerprints it (sha256);
  broadcast   pfn15.data.bcast_arrays to every rank (one MPI Bcast per array);
  order       every rank draws epoch 0's permutation (pfn15.data.order) and
              looks up its first microbatch's samples.

With the packed format (pfn15.data.packed) it writes (once) a pack's
manifest, a `--entries`-record index and sparse shard files of the indexed
sizes (~110 KB a sample, ImageNet's mean; no bytes written), then times

  list        rank 0 reads the manifest and the index (numpy.load,
              allow_pickle=False), stats the shards, takes the fingerprint
              from the manifest -- pfn15.data.packed.load, as training does;
  broadcast   the same pfn15.data.bcast_arrays of the index columns;
  order       as above, on the PackedSplit.

Steps are separated by barriers; prints the slowest rank's seconds for each,
each rank's resident memory before and after (VmRSS) and its peak (VmHWM),
the index's bytes, and the pickled size of the index (what each decoding
process of a MultiprocessIterator receives).
"""
import argparse
import json
import os
import pickle
import time

import numpy
from mpi4py import MPI


def rss_mb(field='VmRSS'):
    """This process's resident memory (VmRSS) or its peak so far (VmHWM), MB."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024.0
    return float('nan')


def quiet_barrier(world):
    """A barrier that sleeps instead of spinning: 8 ranks polling on a 2-core test
    machine would starve rank 0 (on a cluster each rank has its own core)."""
    req = world.Ibarrier()
    while not req.Test():
        time.sleep(0.005)


def write_list(path, entries, classes=1000):
    per = -(-entries // classes)
    with open(path, 'w') as f:
        n = 0
        for c in range(classes):
            wnid = 'n%08d' % (1440764 + c * 997)
            for i in range(per):
                if n == entries:
                    return
                f.write('train/%s/%s_%d.JPEG %d\n' % (wnid, wnid, 10000 + i, c))
                n += 1


def write_pack(root, entries, classes=1000, mean_bytes=110000):
    """A pack of `entries` training samples whose shards are sparse files."""
    from pfn15.data import packed
    os.makedirs(root, exist_ok=True)
    rng = numpy.random.RandomState(0)
    per_shard = 1 << 13          # ~0.9 GB shards
    shards = {}
    for split, n in (('train', entries), ('val', max(1, entries // 25))):
        index = numpy.zeros(n, packed.INDEX_DTYPE)
        index['label'] = numpy.arange(n) * classes // n
        index['length'] = rng.randint(mean_bytes // 2, 3 * mean_bytes // 2, n)
        index['shard'] = numpy.arange(n) // per_shard
        ends = numpy.zeros(n, numpy.uint64)
        for k in range(int(index['shard'][-1]) + 1):
            sl = slice(k * per_shard, min(n, (k + 1) * per_shard))
            cum = numpy.cumsum(index['length'][sl], dtype=numpy.uint64)
            index['offset'][sl] = cum - index['length'][sl]
            ends[sl] = cum
            with open(os.path.join(root, packed.shard_name(split, k)), 'wb') as f:
                f.truncate(int(cum[-1]))
        index['height'], index['width'] = 375, 500
        numpy.save(os.path.join(root, split + '.index.npy'), index, allow_pickle=False)
        shards[split] = [packed.shard_name(split, k) for k in range(int(index['shard'][-1]) + 1)]
    manifest = {'format': packed.FORMAT, 'version': packed.VERSION,
                'classes': ['n%08d' % (1440764 + c * 997) for c in range(classes)],
                'counts': {s: int(len(numpy.load(os.path.join(root, s + '.index.npy'),
                                                 mmap_mode='r', allow_pickle=False))) for s in shards},
                'shards': shards, 'fingerprint': '0' * 64, 'max_side': 0}
    with open(os.path.join(root, packed.MANIFEST), 'w') as f:
        json.dump(manifest, f)


def time_files(world, args):
    from pfn15 import data
    from pfn15.data import imagenet
    path = os.path.join(args.dir, 'train_%d.txt' % args.entries)
    if world.rank == 0 and not os.path.exists(path):
        os.makedirs(args.dir, exist_ok=True)
        write_list(path + '.tmp', args.entries)
        os.replace(path + '.tmp', path)
    quiet_barrier(world)
    t0 = time.perf_counter()
    payload = None
    if world.rank == 0:
        entries = imagenet._read_list(path)
        train = imagenet.ImageList(args.dir, [e[0] for e in entries], [e[1] for e in entries])
        del entries
        arrays = {'train_paths': train.paths, 'train_labels': train.labels}
        names = ['c%d' % c for c in range(int(train.labels.max()) + 1)]
        meta = {'train_size': len(train), 'fingerprint': data.fingerprint(arrays, names)}
        payload = (arrays, meta)
    quiet_barrier(world)
    t1 = time.perf_counter()
    arrays, meta = data.bcast_arrays(world, payload)
    train = imagenet.ImageList.from_arrays(args.dir, arrays['train_paths'],
                                           arrays['train_labels'])
    quiet_barrier(world)
    return train, arrays, t0, t1


def time_packed(world, args):
    from pfn15 import data
    from pfn15.config import DataConfig
    from pfn15.data import packed
    root = os.path.join(args.dir, 'pack_%d' % args.entries)
    if world.rank == 0 and not packed.is_packed(root):
        write_pack(root, args.entries)
    quiet_barrier(world)
    t0 = time.perf_counter()
    payload = packed.load(DataConfig(root=root)) if world.rank == 0 else None
    quiet_barrier(world)
    t1 = time.perf_counter()
    arrays, meta = data.bcast_arrays(world, payload)
    train, _ = packed.datasets(root, arrays)
    quiet_barrier(world)
    return train, arrays, t0, t1


def measure(world, args, fmt):
    from pfn15.data import order
    quiet_barrier(world)
    before = rss_mb()
    train, arrays, t0, t1 = (time_files if fmt == 'files' else time_packed)(world, args)
    t2 = time.perf_counter()
    plan = order.BatchPlan(args.global_batch, len(train), per_worker=args.per_worker,
                           workers=world.size)
    sample_order = order.SampleOrder(0, len(train))
    stream = order.RankStream(plan, world.rank)
    keys = [sample_order.key(stream.global_position(q)) for q in range(args.per_worker)]
    first = [train[i][0] for i, _ in keys]
    quiet_barrier(world)
    t3 = time.perf_counter()
    after, peak = rss_mb(), rss_mb('VmHWM')

    steps = numpy.array([t1 - t0, t2 - t1, t3 - t2])
    slowest = numpy.empty_like(steps)
    world.Allreduce(steps, slowest, op=MPI.MAX)
    rss = world.gather((before, after, peak), root=0)
    if world.rank == 0:
        nbytes = sum(a.nbytes for a in arrays.values())
        pickled = len(pickle.dumps(train, protocol=pickle.HIGHEST_PROTOCOL))
        print('[%s] index of %d entries at %d ranks: %.1f MB (%s); pickled dataset %.1f MB'
              % (fmt, len(train), world.size, nbytes / 2 ** 20,
                 ', '.join('%s %s' % (k, a.dtype) for k, a in sorted(arrays.items())
                           if k.startswith('train')), pickled / 2 ** 20))
        print('[%s] slowest rank: list %.2f s, broadcast %.2f s, order %.2f s, total %.2f s'
              % ((fmt,) + tuple(slowest) + (slowest.sum(),)))
        print('[%s] resident memory per rank (MB, before -> after, peak): %s' % (fmt, ', '.join(
            '%.0f -> %.0f, %.0f' % r for r in rss)))
        print('[%s] rank 0 first sample: %s' % (fmt, first[0]))
    return float(slowest.sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--entries', type=int, default=1281167)
    ap.add_argument('--dir', default='/tmp/pfn15-index')
    ap.add_argument('--per-worker', type=int, default=32)
    ap.add_argument('--global-batch', type=int, default=32768)
    ap.add_argument('--format', default='both', choices=('both', 'files', 'packed'))
    args = ap.parse_args()
    world = MPI.COMM_WORLD
    totals = {}
    for fmt in (('files', 'packed') if args.format == 'both' else (args.format,)):
        totals[fmt] = measure(world, args, fmt)
    if world.rank == 0 and len(totals) == 2:
        print('start-up at %d ranks: list files %.2f s, packed %.2f s (%.1fx faster)'
              % (world.size, totals['files'], totals['packed'],
                 totals['files'] / totals['packed']))


if __name__ == '__main__':
    main()
