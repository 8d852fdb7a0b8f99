"""python -m pfn15.report OUT_DIR: the reproduction report, a small fixed grid on CPU.

    python -m pfn15.report results/report            (about 15-25 min on 2 cores)
    python -m pfn15.report results/report-smoke --smoke   (1 epoch, 1 seed, 2 variants)

Runs each variant of the grid below with 2 MPI ranks (`mpiexec -n 2 python -m
pfn15.train configs/demo.yaml ...overrides`) for every seed, then writes
OUT_DIR/report.md with PNG plots (validation accuracy and training loss
against epoch, one line per variant, mean over seeds) and a table of final
accuracies (mean over seeds, spread shown). Every variant uses the same data
(scikit-learn's digits), the same small ResNet, the same epochs and the same
seeds; only the technique named changes. The text compares the numbers it
got -- it is generated from them, so it says so when a technique does not
help at this scale.

Each run's own output (log, summary.json, plots) stays in OUT_DIR/runs/.
A run already finished there (summary.json present) is reused, so an
interrupted report can be continued by running the same command again.
"""
import json
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
SEEDS = (0, 1)
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
           'train.eval_every=1', 'train.progress_bar=false', 'checkpoint.every=0',
           'checkpoint.keep=1', 'bn.moving_average=false'] + list(overrides)
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

def aggregate(runs):
    """Per-variant statistics from a list of read_run results (one per seed)."""
    finals = [r['final'] for r in runs]
    n = min(len(r['val_acc']) for r in runs)
    mean_curve = lambda k: [statistics.mean(r[k][i] for r in runs) for i in range(n)]  # noqa
    return {
        'finals': finals,
        'mean': statistics.mean(finals),
        'std': statistics.stdev(finals) if len(finals) > 1 else 0.0,
        'spread': max(finals) - min(finals),
        'loss': statistics.mean(r['final_loss'] for r in runs),
        'epochs': runs[0]['epochs'][:n],
        'val_acc': mean_curve('val_acc'),
        'train_loss': mean_curve('train_loss'),
        'wall': sum(r['wall'] for r in runs),
    }


def compare(a, b, name_a, name_b):
    """One sentence: does a beat b, by how much, and is it beyond the seed spread?"""
    d = 100.0 * (a['mean'] - b['mean'])
    noise = 100.0 * max(a['spread'], b['spread'])
    if min(len(a['finals']), len(b['finals'])) < 2:
        return ('%s vs %s: %+.2f points from one seed: no spread to judge it by, '
                'no conclusion.' % (name_a, name_b, d))
    if abs(d) <= noise or abs(d) < 0.05:
        return ('%s vs %s: %+.2f points, within the seed spread (%.2f points): '
                'no clear difference at this scale.' % (name_a, name_b, d, noise))
    verdict = 'helps' if d > 0 else 'hurts'
    return ('%s vs %s: %+.2f points (seed spread %.2f): %s here.'
            % (name_a, name_b, d, noise, verdict))


def findings(stats):
    """The report's statements, each computed from the numbers in `stats`."""
    out = []
    have = lambda *ks: all(k in stats for k in ks)  # noqa: E731
    if have('small_sgd', 'large_sgd'):
        out.append('Large batch without warm-up against the small-batch baseline. '
                   + compare(stats['large_sgd'], stats['small_sgd'],
                             'large batch, no warm-up', 'small batch'))
    for key, name in (('large_goyal', "Goyal's warm-up"),
                      ('large_pfn', "PFN's RMSprop warm-up + slow start"),
                      ('large_lars', 'LARS')):
        if have(key, 'large_sgd'):
            out.append('%s on the large batch. ' % name + compare(
                stats[key], stats['large_sgd'], name, 'plain SGD without warm-up'))
        if have(key, 'small_sgd'):
            gap = 100.0 * (stats[key]['mean'] - stats['small_sgd']['mean'])
            noise = 100.0 * max(stats[key]['spread'], stats['small_sgd']['spread'])
            out.append('  %s against the small-batch baseline: %+.2f points, %s.'
                       % (name, gap, 'within the seed spread (%.2f): not distinguishable '
                          'from the small batch here' % noise if abs(gap) <= noise else
                          'beyond the seed spread (%.2f): %s' % (
                              noise, 'a gap remains' if gap < 0 else 'better than it')))
    if have('large_pfn_bn_ma', 'large_pfn'):
        out.append('BN statistics for evaluation. ' + compare(
            stats['large_pfn'], stats['large_pfn_bn_ma'],
            'last-minibatch statistics (all-reduced)', 'moving averages'))
    if stats:
        best = max(stats, key=lambda k: stats[k]['mean'])
        worst = min(stats, key=lambda k: stats[k]['mean'])
        out.append('Best: %s (%.2f%%); worst: %s (%.2f%%).'
                   % (best, 100 * stats[best]['mean'], worst, 100 * stats[worst]['mean']))
    return out


# ------------------------------------------------------------------ writing

def plot(stats, labels, path, key, ylabel):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for k, s in stats.items():
        ax.plot(s['epochs'], s[key], marker='o', markersize=3, label=labels[k])
    ax.set_xlabel('epoch')
    ax.set_ylabel(ylabel)
    if key == 'train_loss':
        ax.set_yscale('log')
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(out_dir, stats, labels, overrides, epochs, seeds, total_wall, command):
    plot(stats, labels, os.path.join(out_dir, 'val_accuracy.png'), 'val_acc',
         'validation top-1 (mean over seeds)')
    plot(stats, labels, os.path.join(out_dir, 'train_loss.png'), 'train_loss',
         'training loss (mean over seeds)')
    lines = [
        '# pfn15 reproduction report', '',
        'Command: `%s`' % command, '',
        'Every run: scikit-learn digits (1,438 training / 359 validation images), the small '
        'ResNet of configs/demo.yaml, 2 MPI ranks on CPU, %g epochs, seeds %s; only the '
        'technique named changes. Final = validation top-1 after the last epoch; mean over '
        'seeds, +- sample standard deviation, and the per-seed values.'
        % (epochs, ', '.join(str(s) for s in seeds)), '',
        '| variant | final val top-1 (mean +- std) | per seed | final train loss | wall s (all seeds) |',
        '|---|---|---|---|---|',
    ]
    for k, s in stats.items():
        lines.append('| %s | %.2f%% +- %.2f | %s | %.4f | %.0f |' % (
            labels[k], 100 * s['mean'], 100 * s['std'],
            ', '.join('%.2f' % (100 * f) for f in s['finals']), s['loss'], s['wall']))
    lines += ['', '## What the runs show', '']
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
    lines += ['', 'Total wall time: %.0f s.' % total_wall, '']
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
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    epochs, seeds, keys = EPOCHS, SEEDS, None
    if args.smoke:
        epochs, seeds, keys = 1, (0,), SMOKE_VARIANTS
    variants = [v for v in grid(epochs) if keys is None or v[0] in keys]
    os.makedirs(args.out_dir, exist_ok=True)
    start = time.time()
    stats, labels, overrides = {}, {}, {}
    for key, label, ov in variants:
        runs = []
        for seed in seeds:
            out = os.path.join(args.out_dir, 'runs', '%s-seed%d' % (key, seed))
            wall = run_one(out, ov, seed, epochs)
            r = read_run(out)
            print('pfn15.report: %-16s seed %d: val top-1 %.4f (%s)'
                  % (key, seed, r['final'], '%.0f s' % wall if wall else 'reused'), flush=True)
            runs.append(r)
        stats[key], labels[key], overrides[key] = aggregate(runs), label, ov
    command = 'python -m pfn15.report %s%s' % (args.out_dir, ' --smoke' if args.smoke else '')
    path = write_report(args.out_dir, stats, labels, overrides, epochs, seeds,
                        time.time() - start, command)
    print('pfn15.report: wrote %s (%.0f s)' % (path, time.time() - start), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(cli.run(main, 'pfn15.report'))
