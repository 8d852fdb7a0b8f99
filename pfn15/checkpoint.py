"""python -m pfn15.checkpoint {check,convert} FILE: look at a checkpoint, or rewrite an old one.

    python -m pfn15.checkpoint check results/demo/checkpoints/iter_00000050.npz
    python -m pfn15.checkpoint convert results/demo/checkpoints/iter_00000050.npz

`check` reads FILE the way a resume does -- without pickle, every header and
CRC checked -- and prints the run it holds, or what is wrong (exit 2).

`convert` rewrites a checkpoint that holds pickled object arrays (a None
written by an older pfn15) as numbers and JSON only, keeping the original
as FILE.pickled. It unpickles FILE to do so, which runs whatever code the
file's author put there: run it only on a file you trust (one your own run
wrote). pfn15 itself never unpickles a checkpoint (docs/trust.md).

Exit status: 0 done, 2 the file cannot be used or converted.
"""
import json
import os
import sys

from pfn15 import cli, errors


def check(path):
    from pfn15.training import checkpoint
    try:
        arrays, identity = checkpoint.read(path)
    except checkpoint.Unusable as e:
        hint = ('; if you trust the file, convert it with: %s %s' % (checkpoint.CONVERT, path)
                if isinstance(e, checkpoint.NeedsPickle) else '')
        return 2, 'pfn15: error: checkpoint %s: %s%s' % (path, e, hint)
    data = identity['dataset']
    return 0, ('pfn15: %s: a pfn15 checkpoint (format %d) of run %r at iteration %d, written '
               'by %d worker(s); %d arrays; %d train / %d val images, %d classes'
               % (path, identity['format'], identity['config'].get('name'),
                  identity['iteration'], identity['workers'], len(arrays),
                  data['train_size'], data['val_size'], data['classes']))


def _plain(key, value):
    """An object array's content as numbers or text, or None for a None."""
    import numpy
    if value.shape == ():
        item = value[()]
        if item is None:
            return None
        if isinstance(item, str):
            return numpy.array(item)
        if isinstance(item, (bool, int, float)) or isinstance(item, numpy.generic):
            return numpy.asarray(item)
        if isinstance(item, (list, dict)):
            return numpy.array(json.dumps(item))
        raise ValueError('%s holds a %s, which has no array or JSON form'
                         % (key, type(item).__name__))
    plain = numpy.array(value.tolist())
    if plain.dtype.hasobject:
        raise ValueError('%s is an array of Python objects with no numeric form' % key)
    return plain


def convert(path):
    import numpy
    from pfn15.training import checkpoint
    try:
        checkpoint.read(path)
        return 0, 'pfn15: %s holds no pickled objects; nothing to convert' % path
    except checkpoint.NeedsPickle:
        pass
    except checkpoint.Unusable as e:
        return 2, 'pfn15: error: checkpoint %s cannot be converted: %s' % (path, e)
    try:
        # The one place pfn15 unpickles: the user asked for it, on a file they trust.
        with numpy.load(path, allow_pickle=True) as npz:
            arrays = {key: npz[key] for key in npz.files}
        out, none = {}, []
        for key, value in arrays.items():
            if value.dtype.hasobject:
                value = _plain(key, value)
                if value is None:
                    none.append(key)
                    continue
            out[key] = value
    except Exception as e:   # a file that is not what an older pfn15 wrote
        return 2, 'pfn15: error: checkpoint %s cannot be converted: %s: %s' % (
            path, type(e).__name__, ' '.join(str(e).split())[:200])
    if none:
        out[checkpoint.NONE_KEY] = numpy.array(json.dumps(sorted(none)))
    kept = path + '.pickled'
    tmp = path + '.converted'
    error = checkpoint.write_atomically(tmp, out)
    if error:
        return 2, 'pfn15: error: %s while writing %s' % (error, tmp)
    try:
        checkpoint.read(tmp)
    except checkpoint.Unusable as e:
        os.remove(tmp)
        return 2, 'pfn15: error: checkpoint %s cannot be converted: %s' % (path, e)
    os.replace(path, kept)
    os.replace(tmp, path)
    return 0, ('pfn15: converted %s (%d arrays, %d None value(s) listed in %s); the original '
               'is kept as %s' % (path, len(out), len(none), checkpoint.NONE_KEY, kept))


def main(argv=None):
    p = cli.ArgumentParser(prog='python -m pfn15.checkpoint',
                           description=__doc__.split('\n\n')[0],
                           epilog=__doc__.split('\n\n', 2)[2])
    p.add_argument('command', choices=('check', 'convert'))
    p.add_argument('file', help='a checkpoint, OUT/checkpoints/iter_NNNNNNNN.npz')
    args = p.parse_args(argv)
    if not os.path.isfile(args.file):
        raise errors.UserError('%s is not a file' % args.file)
    status, line = (check if args.command == 'check' else convert)(args.file)
    print(line, file=sys.stderr if status else sys.stdout)
    return status


if __name__ == '__main__':
    sys.exit(cli.run(main, 'python -m pfn15.checkpoint'))
