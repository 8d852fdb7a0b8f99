"""Data tools:

    python -m pfn15.data synth OUT_DIR --classes N --train N --val N --size S
                               [--seed K] [--list-files] [--overwrite]
    python -m pfn15.data pack SRC OUT [--val-labels F | --train-list F --val-list F]
                              [--shard-mb MB] [--workers N] [--max-side PX]
    python -m pfn15.data verify OUT [--decode]

synth writes a synthetic ImageNet-layout tree of real JPEG files (see
pfn15/data/synthetic.py), ready for `data.root=OUT_DIR`; pack and verify make
and check the packed format (pfn15/data/packed.py), ready for `data.root=OUT`.
"""
import os
import shutil
import sys
import time

from pfn15 import cli, errors
from pfn15.data import synthetic


def main(argv=None):
    parser = cli.ArgumentParser(prog='python -m pfn15.data', description='Data tools of pfn15.',
                                epilog=cli.epilog(tool=True))
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('synth', help='write a synthetic ImageNet-layout tree of JPEG files',
                       description='Write OUT_DIR/train/<class>/*.JPEG and OUT_DIR/val/<class>/'
                                   '*.JPEG: learnable classes (shape x colour x texture x '
                                   'background), random placement, scale and noise.')
    p.add_argument('out_dir', metavar='OUT_DIR')
    p.add_argument('--classes', type=int, default=10,
                   help='number of classes (1..%d; default 10)' % synthetic.max_classes())
    p.add_argument('--train', type=int, default=100, help='training images per class (100)')
    p.add_argument('--val', type=int, default=20, help='validation images per class (20)')
    p.add_argument('--size', type=int, default=128,
                   help='typical image side in pixels; sides vary by x0.78..x1.28 (128)')
    p.add_argument('--seed', type=int, default=0, help='the tree is a function of the seed (0)')
    p.add_argument('--list-files', action='store_true',
                   help='also write OUT_DIR/train.txt and val.txt ("path label" lines)')
    p.add_argument('--overwrite', action='store_true',
                   help='OUT_DIR may hold an earlier tree: its train/, val/, train.txt and '
                        'val.txt are deleted first (without it, a non-empty OUT_DIR is refused)')

    k = sub.add_parser('pack', help='pack an image tree or list files into shards + an index',
                       description='Pack the training and validation images of SRC (as '
                                   'training would list them: class folders, list files, or '
                                   'a flat val/ with --val-labels) into OUT: a few large '
                                   'shard files, a NumPy index and manifest.json. Train from '
                                   'it with data.root=OUT. Run again to resume.')
    k.add_argument('src', metavar='SRC')
    k.add_argument('out', metavar='OUT')
    k.add_argument('--train-list', default='', help='list file ("path label"), as data.train_list')
    k.add_argument('--val-list', default='', help='list file, as data.val_list')
    k.add_argument('--val-labels', default='', help='labels of a flat val/, as data.val_labels')
    k.add_argument('--shard-mb', type=float, default=1024, help='shard size in MiB (1024)')
    k.add_argument('--workers', type=int, default=os.cpu_count() or 1,
                   help='packing processes (default: the CPUs, %d)' % (os.cpu_count() or 1))
    k.add_argument('--max-side', type=int, default=0, metavar='PX',
                   help='re-encode images whose longer side exceeds PX to PX (JPEG, '
                        '--quality); 0 = keep the bytes as they are (default)')
    k.add_argument('--quality', type=int, default=90, help='JPEG quality of --max-side (90)')

    v = sub.add_parser('verify', help='check a pack: shards whole, every checksum',
                       description='Check OUT: the manifest, the indexes, every shard there '
                                   'and whole, every sample\'s checksum (--decode: and its '
                                   'header). Exit 0 if sound, 2 with one line per problem.')
    v.add_argument('out', metavar='OUT')
    v.add_argument('--decode', action='store_true', help='also read each image header')
    args = parser.parse_args(argv)
    if args.command == 'pack':
        return _pack(parser, args)
    if args.command == 'verify':
        return _verify(args)

    if not 1 <= args.classes <= synthetic.max_classes():
        parser.error('--classes must be in 1..%d' % synthetic.max_classes())
    for name in ('train', 'val'):
        if getattr(args, name) < 0:
            parser.error('--%s must be >= 0' % name)
    if args.size < 8:
        parser.error('--size must be >= 8')
    if not 0 <= args.seed < 2 ** 32:
        parser.error('--seed must be in 0..2**32-1')
    error = _prepare(args.out_dir, args.overwrite)
    if error:
        raise errors.UserError('synth: %s' % error)

    start = time.time()
    synthetic.write_tree(args.out_dir, args.classes, args.train, args.val, args.size,
                         seed=args.seed, list_files=args.list_files)
    n = args.classes * (args.train + args.val)
    print('wrote %d JPEG files (%d classes x %d train + %d val, ~%dpx) to %s in %.1f s'
          % (n, args.classes, args.train, args.val, args.size, args.out_dir, time.time() - start))
    print('train on it with: data.root=%s%s' % (
        args.out_dir, ' (or data.train_list=train.txt data.val_list=val.txt)'
        if args.list_files else ''))
    return 0


def _pack(parser, args):
    from pfn15.config import DataConfig
    from pfn15.data import DataError, packed
    if args.shard_mb <= 0 or args.workers < 1 or args.max_side < 0 or not 1 <= args.quality <= 100:
        parser.error('--shard-mb must be > 0, --workers >= 1, --max-side >= 0, '
                     '--quality in 1..100')
    cfg = DataConfig(root=args.src, train_list=args.train_list, val_list=args.val_list,
                     val_labels=args.val_labels)
    start = time.time()
    try:
        m = packed.pack(cfg, args.out, shard_mb=args.shard_mb, workers=args.workers,
                        max_side=args.max_side, quality=args.quality)
    except DataError as e:
        raise errors.UserError('pack: %s' % e)
    print('packed %d train + %d val images (%d classes, %.1f MB in %d shards) into %s in %.1f s'
          % (m['counts']['train'], m['counts']['val'], len(m['classes']), m['bytes'] / 1e6,
             sum(len(v) for v in m['shards'].values()), args.out, time.time() - start))
    print('train on it with: data.root=%s' % args.out)
    return 0


def _verify(args):
    from pfn15.data import DataError, packed
    start = time.time()
    try:
        problems = packed.verify(args.out, decode=args.decode)
        m = packed.read_manifest(args.out)
    except DataError as e:
        problems = [str(e)]
    if len(problems) == 1:
        raise errors.UserError('verify: %s' % problems[0])
    for p in problems:
        print('pfn15.data verify: %s' % p, file=sys.stderr)
    if problems:
        raise errors.UserError('verify: %s has %d problems (above)' % (args.out, len(problems)))
    print('%s: sound: %d train + %d val samples in %d shards, every checksum right (%.1f s)'
          % (args.out, m['counts']['train'], m['counts']['val'],
             sum(len(v) for v in m['shards'].values()), time.time() - start))
    return 0


SYNTH_OUTPUTS = ('train', 'val', 'train.txt', 'val.txt')


def _prepare(out_dir, overwrite):
    """Make `out_dir` ready for a fresh tree; an error line, or None."""
    try:
        present = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    except OSError as e:
        return 'cannot list %s: %s' % (out_dir, e.strerror or e)
    if present and not overwrite:
        # A smaller tree written over a larger one would leave the old classes
        # and images in place, partly overwritten: refused, not merged.
        return ('%s is not empty (%d entries: %s%s); choose an empty or new folder, or pass '
                '--overwrite to delete its %s first'
                % (out_dir, len(present), ', '.join(present[:3]),
                   ', ...' if len(present) > 3 else '', ', '.join(SYNTH_OUTPUTS)))
    removed = []
    for name in SYNTH_OUTPUTS if present else ():
        path = os.path.join(out_dir, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
            else:
                continue
        except OSError as e:
            return 'cannot delete %s: %s' % (path, e.strerror or e)
        removed.append(name)
    if removed:
        print('deleted %s in %s (--overwrite)' % (', '.join(removed), out_dir))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        return 'cannot create %s: %s' % (out_dir, e.strerror or e)
    return None


if __name__ == '__main__':
    sys.exit(cli.run(main, 'pfn15.data'))
