"""python -m pfn15.report OUT_DIR: the reproduction report, a small fixed grid on CPU.

    python -m pfn15.report results/report            (about 20-40 min on 2 cores)
    python -m pfn15.report results/report-smoke --smoke   (1 epoch, 1 seed, 2 variants)
    python -m pfn15.report results/r --epochs 3 --seeds 2 --max-seeds 3 --variants small_sgd,large_sgd

Runs each variant of the grid below with 2 MPI ranks (`mpiexec -n 2 python -m
pfn15.train configs/demo.yaml ...overrides`) for every seed, then writes
OUT_DIR/report.md with PNG plots (validation accuracy and training loss
against epoch, one line per variant: the mean over seeds, the band the seeds
span) and a table of final accuracies (mean, standard deviation, every
seed). Every variant uses the same data (scikit-learn's digits), the same
small ResNet, the same epochs and the same seeds; only the technique named
changes.

The text is computed from the numbers: each comparison is the difference of
the means with its 95% interval over the seeds (Welch's t, the accuracy's
resolution of one validation image included). A comparison whose interval
excludes 0 is a difference; one whose interval lies within +-EQUIVALENT
points is "no difference"; any other cannot be told from these seeds. Such
a comparison gets more seeds (both its variants, one at a time, up to
--max-seeds); what is still open at the end is reported as such.

Each run's own output (log, summary.json, plots) stays in OUT_DIR/runs/.
A run already finished there (summary.json present) is reused, so an
interrupted report can be continued by running the same command again.
"""
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

from pfn15 import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CONFIG = os.path.join(ROOT, 'configs', 'demo.yaml')

# ------------------------------------------------------------------ the grid
# Scale: scikit-learn's digits, 1,438 training images. "Large" = 512 images
# per update (2.8 updates per epoch, 36% of the data per step), "small" = 32
# (45 updates per epoch). Epoch points of the ImageNet recipes are scaled by
# EPOCHS / 90.
EPOCHS = 15
SEEDS = (0, 1, 2)       # every variant starts with these
MAX_SEEDS = 5           # more, one at a time, where a comparison cannot yet be told
SMALL_BATCH = 32
LARGE_BATCH = 512
LR_PER_256 = 0.4        # SGD, all variants: linear scaling from 0.05 at 32 to 0.8 at 512
LARS_LR_PER_256 = 15.0  # LARS global rate (trust 0.001 makes local rates ~1e-3); tried 2, 5, 15


def _scaled(epochs_of_90, epochs):
    return round(epochs_of_90 * epochs / 90.0, 4)


def _list(xs):
    return '[%s]' % ','.join('%g' % x for x in xs)


def grid(epochs=EPOCHS):
    """[(key, label, overrides)] of the report, in table order."""
    e = epochs
    sgd = ['optimizer.name=momentum_sgd', 'schedule.lr=step',
           'schedule.lr_per_256=%g' % LR_PER_256,
           'schedule.boundaries=' + _list([_scaled(x, e) for x in (30, 60, 80)]),
           'schedule.factors=[1,0.1,0.01,0.001]']
    small = ['batch.global=%d' % SMALL_BATCH, 'batch.per_worker=%d' % (SMALL_BATCH // 2)]
    large = ['batch.global=%d' % LARGE_BATCH, 'batch.per_worker=32']
    # Goyal: warm up over 5 of 90 epochs, from the small-batch rate.
    warmup = ['schedule.warmup_epochs=%g' % max(_scaled(5, e), 1.0),
              'schedule.warmup_start_lr=%g' % (LR_PER_256 * SMALL_BATCH / 256.0)]
    pfn = ['optimizer.name=rmsprop_warmup', 'schedule.lr=slow_start',
           'schedule.lr_per_256=%g' % LR_PER_256,
           'schedule.boundaries=' + _list([_scaled(x, e) for x in (40, 70, 85)]),
           'schedule.factors=[0.5,0.075,0.01,0.001]',
           'schedule.alpha_center=%g' % _scaled(10, e),
           'schedule.alpha_period=%g' % _scaled(5, e)]
    lars = ['optimizer.name=lars', 'optimizer.weight_decay=0.0005', 'optimizer.lars.trust=0.001',
            'optimizer.decay_bn_and_bias=false', 'schedule.lr=poly', 'schedule.power=2',
            'schedule.lr_per_256=%g' % LARS_LR_PER_256,
            'schedule.warmup_epochs=%g' % max(_scaled(5, e), 1.0),
            'schedule.warmup_start_lr=0.1']
    return [
        ('small_sgd', 'small batch %d, momentum SGD' % SMALL_BATCH, small + sgd),
        ('large_sgd', 'large batch %d, momentum SGD, linear scaling, no warm-up'
         % LARGE_BATCH, large + sgd),
        ('large_goyal', 'large batch, + Goyal gradual warm-up', large + sgd + warmup),
        ('large_pfn', 'large batch, PFN RMSprop warm-up + slow start', large + pfn),
        ('large_lars', 'large batch, LARS + poly(2) decay + warm-up', large + lars),
        ('large_pfn_bn_ma', 'large batch, PFN recipe, BN with moving averages',
         large + pfn + ['bn.moving_average=true']),
    ]


SMOKE_VARIANTS = ('large_sgd', 'large_pfn')


# ------------------------------------------------------------------ running

def mpiexec_path():
    here = os.path.join(os.path.dirname(sys.executable), 'mpiexec')
    return here if os.path.exists(here) else shutil.which('mpiexec')


def _env():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1', MKL_NUM_THREADS='1',
               MPLBACKEND='Agg', PYTHONUNBUFFERED='1')
    env['PATH'] = os.path.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    return env


def run_one(out, overrides, seed, epochs, ranks=2, log=print):
    """One training run into `out` (reused if its summary.json exists); returns wall seconds."""
    if os.path.exists(os.path.join(out, 'summary.json')):
        return None
    # An unfinished run of ours (a crash, Ctrl-C): start it over -- resume=none
    # refuses an out that still holds its checkpoints.
    shutil.rmtree(os.path.join(out, 'checkpoints'), ignore_errors=True)
    exe = mpiexec_path()
    if exe is None:
        raise SystemExit('pfn15.report: mpiexec not found (pip install -e .[mpich])')
    cmd = [exe, '-n', str(ranks), sys.executable, '-m', 'pfn15.train', BASE_CONFIG,
           'out=' + out, 'seed=%d' % seed, 'resume=none', 'train.epochs=%g' % epochs,
           'train.eval_every_epochs=1', 'train.progress_bar=false',
           'checkpoint.every_iterations=0', 'checkpoint.keep=1',
           'bn.moving_average=false'] + list(overrides)
    start = time.time()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'stdout.txt'), 'w') as f:
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(), stdout=f, stderr=subprocess.STDOUT)
    wall = time.time() - start
    if proc.returncode != 0:
        with open(os.path.join(out, 'stdout.txt')) as f:
            tail = f.read()[-2000:]
        raise RuntimeError('run %s failed (exit %d):\n%s\n%s'
                           % (out, proc.returncode, ' '.join(cmd), tail))
    return wall


def read_run(out):
    """{'epochs': [...], 'val_acc': [...], 'train_loss': [...], 'final': ..., 'wall': ...}."""
    with open(os.path.join(out, 'summary.json')) as f:
        summary = json.load(f)
    with open(os.path.join(out, 'log')) as f:
        log = json.load(f)
    per_iter = summary['epochs'] / summary['iterations'] if summary['iterations'] else 0.0
    xs, acc, loss = [], [], []
    for entry in log:
        if 'validation/main/accuracy' not in entry:
            continue
        xs.append(entry['iteration'] * per_iter)       # global epochs, not a rank's count
        acc.append(entry['validation/main/accuracy'])
        loss.append(entry.get('main/loss', float('nan')))
    return {'epochs': xs, 'val_acc': acc, 'train_loss': loss,
            'final': summary['val_top1'], 'final_loss': summary['train_loss'],
            'wall': summary['wall_seconds']}


# ------------------------------------------------------------------ analysis

# Validation accuracy moves in steps of one image: 1 / 359 of digits' validation set.
RESOLUTION = 1.0 / 359
# Differences smaller than this (points of accuracy) count as "no difference".
EQUIVALENT = 0.5
# Two-sided 95% quantiles of Student's t by degrees of freedom (rounded down).
T95 = ((1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571), (6, 2.447), (7, 2.365),
       (8, 2.306), (9, 2.262), (10, 2.228), (12, 2.179), (15, 2.131), (20, 2.086),
       (30, 2.042), (60, 2.000), (10 ** 9, 1.960))


def t95(df):
    return [t for d, t in T95 if d <= max(1.0, df)][-1]


def aggregate(runs):
    """Per-variant statistics from a list of read_run results (one per seed)."""
    finals = [r['final'] for r in runs]
    n = min(len(r['val_acc']) for r in runs)
    curves = lambda k: [[r[k][i] for r in runs] for i in range(n)]  # noqa: E731
    return {
        'finals': finals,
        'n': len(finals),
        'mean': statistics.mean(finals),
        'std': statistics.stdev(finals) if len(finals) > 1 else 0.0,
        'spread': max(finals) - min(finals),
        'loss': statistics.mean(r['final_loss'] for r in runs),
        'epochs': runs[0]['epochs'][:n],
        'val_acc': [statistics.mean(c) for c in curves('val_acc')],
        'val_acc_lo': [min(c) for c in curves('val_acc')],
        'val_acc_hi': [max(c) for c in curves('val_acc')],
        'train_loss': [statistics.mean(c) for c in curves('train_loss')],
        'train_loss_lo': [min(c) for c in curves('train_loss')],
        'train_loss_hi': [max(c) for c in curves('train_loss')],
        'wall': sum(r['wall'] for r in runs),
    }


def difference(a, b):
    """a - b in points of accuracy, and its 95% interval: (d, lo, hi), or None with < 2 seeds."""
    na, nb = len(a['finals']), len(b['finals'])
    d = 100.0 * (statistics.mean(a['finals']) - statistics.mean(b['finals']))
    if min(na, nb) < 2:
        return None
    va = statistics.variance(a['finals']) + RESOLUTION ** 2 / 12.0   # quantization floor
    vb = statistics.variance(b['finals']) + RESOLUTION ** 2 / 12.0
    se2 = va / na + vb / nb
    df = se2 ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))   # Welch
    half = 100.0 * t95(df) * math.sqrt(se2)
    return d, d - half, d + half


def verdict(a, b):
    """'better', 'worse', 'same' (within +-EQUIVALENT), 'open' (cannot tell) or 'one seed'."""
    r = difference(a, b)
    if r is None:
        return 'one seed'
    d, lo, hi = r
    if lo > 0:
        return 'better'
    if hi < 0:
        return 'worse'
    if -EQUIVALENT <= lo and hi <= EQUIVALENT:
        return 'same'
    return 'open'


def compare(a, b, name_a, name_b):
    """One sentence: a against b, with the interval and what it allows one to say."""
    r = difference(a, b)
    spread = 'seed spread %.2f and %.2f points' % (100 * a['spread'], 100 * b['spread'])
    if r is None:
        d = 100.0 * (a['mean'] - b['mean'])
        return ('%s vs %s: %+.2f points from one seed: no spread to judge it by, '
                'no conclusion.' % (name_a, name_b, d))
    d, lo, hi = r
    n = '%d and %d seeds' % (len(a['finals']), len(b['finals']))
    v = verdict(a, b)
    if v in ('better', 'worse'):
        return ('%s vs %s: %+.2f points (95%% interval %+.2f to %+.2f, %s; %s): %s here.'
                % (name_a, name_b, d, lo, hi, n, spread,
                   'helps' if v == 'better' else 'hurts'))
    if v == 'same':
        return ('%s vs %s: %+.2f points (95%% interval %+.2f to %+.2f, %s; %s): no '
                'difference larger than %.1f points at this scale.'
                % (name_a, name_b, d, lo, hi, n, spread, EQUIVALENT))
    within = 'within' if abs(d) <= 100.0 * max(a['spread'], b['spread']) else 'beyond'
    return ('%s vs %s: %+.2f points (95%% interval %+.2f to %+.2f, %s; %s, the difference '
            '%s it): these seeds cannot tell -- no conclusion.'
            % (name_a, name_b, d, lo, hi, n, spread, within))


NAMES = {'small_sgd': 'the small batch', 'large_sgd': 'the large batch without warm-up',
         'large_goyal': "Goyal's warm-up", 'large_pfn': "PFN's RMSprop warm-up + slow start",
         'large_lars': 'LARS', 'large_pfn_bn_ma': 'moving-average BN'}


def comparisons(stats):
    """[(a, b, sentence prefix)]: every statement the report makes, as pairs of variants."""
    out = []
    have = lambda *ks: all(k in stats for k in ks)  # noqa: E731
    if have('small_sgd', 'large_sgd'):
        out.append(('large_sgd', 'small_sgd', 'Large batch without warm-up against the '
                    'small-batch baseline. '))
    for key in ('large_goyal', 'large_pfn', 'large_lars'):
        if have(key, 'large_sgd'):
            out.append((key, 'large_sgd', '%s on the large batch. ' % NAMES[key]))
        if have(key, 'small_sgd'):
            out.append((key, 'small_sgd', '  %s against the small-batch baseline. '
                        % NAMES[key]))
    if have('large_pfn_bn_ma', 'large_pfn'):
        out.append(('large_pfn', 'large_pfn_bn_ma', 'BN statistics for evaluation. '))
    return out


def findings(stats):
    """The report's statements, each computed from the numbers in `stats`."""
    out = []
    for a, b, prefix in comparisons(stats):
        name_a = {'large_sgd': 'large batch, no warm-up',
                  'large_pfn': 'last-minibatch statistics (all-reduced)'
                  if b == 'large_pfn_bn_ma' else NAMES['large_pfn']}.get(a, NAMES[a])
        name_b = {'small_sgd': 'small batch', 'large_sgd': 'plain SGD without warm-up',
                  'large_pfn_bn_ma': 'moving averages'}.get(b, NAMES[b])
        out.append(prefix + compare(stats[a], stats[b], name_a, name_b))
    if stats:
        best = max(stats, key=lambda k: stats[k]['mean'])
        worst = min(stats, key=lambda k: stats[k]['mean'])
        out.append('Highest mean: %s (%.2f%%); lowest: %s (%.2f%%).'
                   % (best, 100 * stats[best]['mean'], worst, 100 * stats[worst]['mean']))
    return out


def conclusion(stats, epochs):
    """One paragraph for the README: each comparison's verdict, with its interval."""
    words = {'better': 'better than', 'worse': 'worse than', 'same': 'the same as',
             'open': 'not distinguishable, with these seeds, from',
             'one seed': 'not judged (one seed) against'}
    parts = []
    for a, b, _ in comparisons(stats):
        r = difference(stats[a], stats[b])
        parts.append('%s is %s %s (%s)' % (
            NAMES[a] if a != 'large_pfn' or b != 'large_pfn_bn_ma'
            else 'last-minibatch BN (PFN recipe)', words[verdict(stats[a], stats[b])],
            NAMES[b] if b != 'large_pfn_bn_ma' else 'moving-average BN',
            '%+.2f points, 95%% interval %+.2f to %+.2f' % r if r else
            '%+.2f points' % (100 * (stats[a]['mean'] - stats[b]['mean']))))
    seeds = sorted({s['n'] for s in stats.values()})
    open_ = sum(verdict(stats[a], stats[b]) == 'open' for a, b, _ in comparisons(stats))
    text = ('On digits at %g epochs (%s seeds per variant): %s.'
            % (epochs, '-'.join(str(n) for n in (seeds[0], seeds[-1])) if len(seeds) > 1
               else seeds[0], '; '.join(parts)))
    if open_:
        text += (' %d of these %d comparisons cannot be told apart with these seeds: they are '
                 'not conclusions.' % (open_, len(parts)))
    return text


def undecided(stats, max_seeds):
    """Variants that need one more seed: in an open comparison and below max_seeds."""
    need = set()
    for a, b, _ in comparisons(stats):
        if verdict(stats[a], stats[b]) == 'open':
            need.update(k for k in (a, b) if stats[k]['n'] < max_seeds)
    return sorted(need)


# ------------------------------------------------------------------ writing

STYLES = ('-', '--', '-.', ':', (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
MARKERS = ('o', 's', '^', 'D', 'v', 'P')


def plot(stats, labels, path, key, ylabel, title=''):
    """Mean over seeds as a line, the seeds' range as a band; variants whose curves are
    identical are drawn once, with both names. Returns what it drew (for the tests)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    groups = []   # [(keys, stats)]: identical curves together
    for k, s in stats.items():
        for keys, first in groups:
            if first['epochs'] == s['epochs'] and first[key] == s[key] and \
                    first[key + '_lo'] == s[key + '_lo'] and first[key + '_hi'] == s[key + '_hi']:
                keys.append(k)
                break
        else:
            groups.append(([k], s))
    fig, ax = plt.subplots(figsize=(8, 4.8))
    drawn = []
    colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for n, (keys, s) in enumerate(groups):
        c = colours[n % len(colours)]
        label = ' = '.join(labels[k] for k in keys) + (' (identical)' if len(keys) > 1 else '')
        ax.fill_between(s['epochs'], s[key + '_lo'], s[key + '_hi'], color=c, alpha=0.18,
                        lw=0)
        ax.plot(s['epochs'], s[key], linestyle=STYLES[n % len(STYLES)], color=c, lw=1.6,
                marker=MARKERS[n % len(MARKERS)], markersize=3.5, label=label)
        drawn.append(keys)
    ax.set_xlabel('epoch')
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    if key == 'train_loss':
        from matplotlib.ticker import FuncFormatter
        ax.set_yscale('log')
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: '%g' % y))
        # Between the decades, 2 and 5 only: the labels stay apart.
        ax.yaxis.set_minor_formatter(FuncFormatter(
            lambda y, _: '%g' % y if ('%.0e' % y)[0] in '25' else ''))
        ax.tick_params(axis='y', which='minor', labelsize=7)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    # Below the axes, one variant a line: it never covers a curve or squeezes the axes.
    legend = ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(0.0, -0.12), ncol=1,
                       frameon=False)
    fig.savefig(path, dpi=100, bbox_extra_artists=(legend,), bbox_inches='tight')
    plt.close(fig)
    return drawn


def table(stats, labels):
    lines = ['| variant | final val top-1 (mean +- std) | per seed | final train loss | '
             'wall s (all seeds) |', '|---|---|---|---|---|']
    for k, s in stats.items():
        lines.append('| %s | %.2f%% +- %.2f (%d seeds) | %s | %.4f | %.0f |' % (
            labels[k], 100 * s['mean'], 100 * s['std'], s['n'],
            ', '.join('%.2f' % (100 * f) for f in s['finals']), s['loss'], s['wall']))
    return lines


def write_report(out_dir, stats, labels, overrides, epochs, seeds, total_wall, command):
    n = sorted({s['n'] for s in stats.values()})
    seeds_text = '%d' % n[0] if len(n) == 1 else '%d to %d' % (n[0], n[-1])
    plot(stats, labels, os.path.join(out_dir, 'val_accuracy.png'), 'val_acc',
         'validation top-1', 'validation top-1: mean over %s seeds, band: their range'
         % seeds_text)
    plot(stats, labels, os.path.join(out_dir, 'train_loss.png'), 'train_loss',
         'training loss (log scale)', 'training loss: mean over %s seeds, band: their range'
         % seeds_text)
    date = time.strftime('%Y-%m-%d', time.gmtime())
    lines = [
        '# pfn15 reproduction report', '',
        'Generated %s by `%s`.' % (date, command), '',
        'Every run: scikit-learn digits (1,438 training / 359 validation images), the small '
        'ResNet of configs/demo.yaml, 2 MPI ranks on CPU, %g epochs, seeds %s (%s per '
        'variant); only the technique named changes. Final = validation top-1 after the '
        'last epoch; mean over seeds, +- sample standard deviation, and the per-seed values.'
        % (epochs, ', '.join(str(s) for s in seeds), seeds_text), '',
    ] + table(stats, labels) + [
        '', '## Conclusion', '', conclusion(stats, epochs), '',
        '## What the runs show', '',
        'Each difference with its 95%% interval over the seeds (Welch\'s t; the accuracy\'s '
        'resolution of one validation image included). "Helps"/"hurts": the interval '
        'excludes 0; "no difference": it lies within +-%.1f points; otherwise the seeds '
        'cannot tell.' % EQUIVALENT, '']
    lines += ['- ' + f if not f.startswith('  ') else '  - ' + f.strip()
              for f in findings(stats)]
    lines += [
        '', 'Caveat: a 10-class, 1,438-image problem with a small ResNet is far from ImageNet '
        'at 32k; these runs show the mechanics and the direction of each effect at this '
        'scale, not the size of the effect in the papers.', '',
        '![validation accuracy](val_accuracy.png)', '', '![training loss](train_loss.png)', '',
        '## Variants', '', 'Base config: configs/demo.yaml; overrides per variant:', '']
    for k in stats:
        lines.append('- `%s`: %s' % (k, ' '.join(overrides[k])))
    lines += ['', 'Wall time of the runs, summed: %.0f s (this command: %.0f s; runs already '
              'in %s are reused).' % (sum(s['wall'] for s in stats.values()), total_wall,
                                      os.path.join(out_dir, 'runs')), '']
    path = os.path.join(out_dir, 'report.md')
    with open(path, 'w') as f:
        f.write('\n'.join(lines))
    return path


def main(argv=None):
    p = cli.ArgumentParser(prog='python -m pfn15.report', description=__doc__.split('\n')[0],
                           epilog=cli.epilog(tool=True))
    p.add_argument('out_dir')
    p.add_argument('--smoke', action='store_true',
                   help='1 epoch, 1 seed, 2 variants: checks the report code (CI)')
    p.add_argument('--epochs', type=float, default=EPOCHS)
    p.add_argument('--seeds', type=int, default=len(SEEDS), help='seeds every variant starts with')
    p.add_argument('--max-seeds', type=int, default=MAX_SEEDS,
                   help='seeds a variant may get while a comparison cannot be told')
    p.add_argument('--variants', help='comma-separated keys (default: all): %s'
                   % ', '.join(k for k, _, _ in grid()))
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    epochs, n_seeds, max_seeds = args.epochs, args.seeds, max(args.max_seeds, args.seeds)
    keys = args.variants.split(',') if args.variants else None
    if args.smoke:
        epochs, n_seeds, max_seeds, keys = 1, 1, 1, SMOKE_VARIANTS
    known = [k for k, _, _ in grid()]
    if keys is not None and set(keys) - set(known):
        p.error('--variants: unknown %s (known: %s)'
                % (', '.join(sorted(set(keys) - set(known))), ', '.join(known)))
    if n_seeds < 1 or epochs <= 0:
        p.error('--seeds must be >= 1 and --epochs > 0')
    variants = [v for v in grid(epochs) if keys is None or v[0] in keys]
    os.makedirs(args.out_dir, exist_ok=True)
    start = time.time()
    runs = {key: [] for key, _, _ in variants}
    labels = {key: label for key, label, _ in variants}
    overrides = {key: ov for key, _, ov in variants}

    def add_seed(key):
        seed = len(runs[key])
        out = os.path.join(args.out_dir, 'runs', '%s-seed%d' % (key, seed))
        wall = run_one(out, overrides[key], seed, epochs)
        r = read_run(out)
        print('pfn15.report: %-16s seed %d: val top-1 %.4f (%s)'
              % (key, seed, r['final'], '%.0f s' % wall if wall else 'reused'), flush=True)
        runs[key].append(r)

    for key in runs:
        for _ in range(n_seeds):
            add_seed(key)
    stats = {key: aggregate(rs) for key, rs in runs.items()}
    # More seeds where a comparison cannot be told yet, one round at a time.
    while True:
        more = undecided(stats, max_seeds)
        if not more:
            break
        print('pfn15.report: cannot tell yet: one more seed for %s' % ', '.join(more),
              flush=True)
        for key in more:
            add_seed(key)
            stats[key] = aggregate(runs[key])
    command = 'python -m pfn15.report %s%s' % (
        args.out_dir, ' --smoke' if args.smoke else ''.join(
            ' --%s %s' % (flag, value) for flag, value, default in (
                ('epochs', '%g' % epochs, '%g' % EPOCHS), ('seeds', n_seeds, len(SEEDS)),
                ('max-seeds', max_seeds, MAX_SEEDS), ('variants', args.variants, None))
            if value is not None and str(value) != str(default)))
    seeds = sorted({i for rs in runs.values() for i in range(len(rs))})
    path = write_report(args.out_dir, stats, labels, overrides, epochs, seeds,
                        time.time() - start, command)
    print('pfn15.report: wrote %s (%.0f s)' % (path, time.time() - start), flush=True)
    print(conclusion(stats, epochs), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(cli.run(main, 'pfn15.report'))
