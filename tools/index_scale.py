"""The ImageNet-scale index path at W ranks: list, broadcast, order (issue 12).

    mpiexec -n 8 python tools/index_scale.py [--entries 1281167] [--dir /tmp/pfn15-index]

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

Steps are separated by barriers; prints the slowest rank's seconds for each,
each rank's resident memory before and after (VmRSS) and its peak (VmHWM),
the index's bytes, and the pickled size of the index (what each decoding
process of a MultiprocessIterator receives).
"""
import argparse
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--entries', type=int, default=1281167)
    ap.add_argument('--dir', default='/tmp/pfn15-index')
    ap.add_argument('--per-worker', type=int, default=32)
    ap.add_argument('--global-batch', type=int, default=32768)
    args = ap.parse_args()
    world = MPI.COMM_WORLD
    from pfn15 import data
    from pfn15.data import imagenet, order

    path = os.path.join(args.dir, 'train_%d.txt' % args.entries)
    if world.rank == 0 and not os.path.exists(path):
        os.makedirs(args.dir, exist_ok=True)
        write_list(path + '.tmp', args.entries)
        os.replace(path + '.tmp', path)
    quiet_barrier(world)
    before = rss_mb()

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
    t2 = time.perf_counter()
    plan = order.BatchPlan(args.global_batch, len(train))
    sample_order = order.SampleOrder(0, len(train))
    stream = order.RankStream(plan, world.size, world.rank, args.per_worker)
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
        print('index of %d entries at %d ranks: %.1f MB (paths %s, labels int32); pickled '
              'ImageList %.1f MB' % (len(train), world.size, nbytes / 2 ** 20,
                                     arrays['train_paths'].dtype, pickled / 2 ** 20))
        print('slowest rank: list %.2f s, broadcast %.2f s, order %.2f s, total %.2f s'
              % (tuple(slowest) + (slowest.sum(),)))
        print('resident memory per rank (MB, before -> after, peak): %s' % ', '.join(
            '%.0f -> %.0f, %.0f' % r for r in rss))
        print('rank 0 first sample: %s' % first[0])


if __name__ == '__main__':
    main()
