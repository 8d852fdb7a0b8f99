#!/usr/bin/env python
"""Does `pfn15.plan`, calibrated on this machine, predict `pfn15.train`? (`make plan-check`)

    python tools/plan_check.py [--workers 1,2,3] [--iterations 40] [--json plan_check.json]

1. `python -m pfn15.bench step` on the demo's model (one rank): images/s of the
   full pfn15 iteration, gradient bytes and arrays, cores.
2. `mpiexec -n 2 python -m pfn15.bench allreduce`: alpha and beta of ChainerMN's
   all-reduce on this machine.
3. `python -m pfn15.plan --calibrate STEP --calibrate ALLREDUCE --workers 1,2,3`:
   the predicted iteration time at each rank count (same global batch).
4. `mpiexec -n K python -m pfn15.train configs/demo.yaml` for each K: the measured
   median iteration time (summary.json's `iteration_seconds_median`).

Prints predicted vs measured and the ratio; exit 0 when every prediction is
within --tolerance (20%) of the measurement, 1 otherwise -- unless the machine
was busy with other work: the check measures what other processes used of
the CPUs while it ran (/proc/stat less its own processes' CPU time), the load
average and a short CPU probe before and after, and when others used more
than --max-other-load of the cores its verdict cannot hold: it says so and
exits 3 (rerun on an idle machine). Everything runs with
one BLAS thread per rank (OMP_NUM_THREADS=1), so the step benchmark measures
a worker as the training ranks run it. A few minutes on a 2-core machine.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from pfn15 import cpu, report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIEXEC = report.mpiexec_path() or 'mpiexec'   # the venv's (PyPI's mpich), else PATH's
# The demo's model and data (configs/demo.yaml), as bench step overrides.
MODEL = ['model.arch=resnet_small', 'model.blocks_per_stage=1', 'model.width=16',
         'data.val_fraction=0.2']


# ------------------------------------------------------------------ the machine's load

def _machine_busy_seconds():
    """CPU seconds all processes of the machine have run (user+nice+system+irq+softirq)."""
    with open('/proc/stat') as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf('SC_CLK_TCK')
    user, nice, system, idle, iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / float(hz)


def _own_seconds():
    """CPU seconds of this process and its finished children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def loadavg():
    with open('/proc/loadavg') as f:
        return float(f.read().split()[0])


def cpu_probe(seconds=0.1, repeats=3):
    """Seconds one core takes for a fixed piece of pure-Python work (best of `repeats`);
    slower at the end than at the start: the check's processes had company."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:   # size the work once, on this core
        sum(i * i for i in range(10000))
        n += 1
    best = float('inf')
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            sum(i * i for i in range(10000))
        best = min(best, time.perf_counter() - t0)
    return best / n


class LoadMeter(object):
    """CPU time other processes used while the check ran, in cores.

    start()/stop() around the check: the machine's busy CPU time from
    /proc/stat, less what this process and its children (waited for by then)
    used, over the wall time."""

    def start(self):
        self.cores = cpu.node_cores()
        self.load_before = loadavg()
        self.probe_before = cpu_probe()
        self._t, self._busy, self._own = time.time(), _machine_busy_seconds(), _own_seconds()
        return self

    def stop(self):
        wall = max(time.time() - self._t, 1e-9)
        busy = _machine_busy_seconds() - self._busy
        own = _own_seconds() - self._own
        self.wall = wall
        self.other_cores = max(0.0, (busy - own) / wall)
        self.load_after = loadavg()
        self.probe_after = cpu_probe()
        return self

    def describe(self):
        return ('other processes used %.2f of %d cores during the check (load average %.2f '
                'before, %.2f after; CPU probe %.1f ms before, %.1f ms after)'
                % (self.other_cores, self.cores, self.load_before, self.load_after,
                   self.probe_before * 1e3, self.probe_after * 1e3))


def loaded(other_cores, cores, max_other_load):
    """Was the machine too busy for a timing verdict? `max_other_load`: a fraction of the cores."""
    return other_cores > max(0.1, max_other_load * cores)


def call(cmd, env, log):
    print('+ ' + ' '.join(cmd), flush=True)
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    with open(log, 'a') as f:
        f.write('+ %s\n%s%s\n' % (' '.join(cmd), p.stdout, p.stderr))
    if p.returncode != 0:
        sys.exit('plan_check: %s exited %d; see %s' % (cmd[:4], p.returncode, log))
    return p.stdout


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--workers', default='1,2,3')
    ap.add_argument('--global-batch', type=int, default=192,
                    help='a multiple of 32 x each worker count (192 = 6 x 32)')
    ap.add_argument('--iterations', type=int, default=40, help='training iterations per run')
    ap.add_argument('--tolerance', type=float, default=0.20)
    ap.add_argument('--out', help='working directory (default: a temporary one)')
    ap.add_argument('--json', help='write the table as JSON')
    ap.add_argument('--max-other-load', type=float, default=0.15,
                    help='fraction of the cores other processes may use during the check '
                         'before its verdict cannot hold (default 0.15)')
    args = ap.parse_args(argv)
    meter = LoadMeter().start()
    workers = [int(w) for w in args.workers.split(',')]
    out = args.out or tempfile.mkdtemp(prefix='pfn15-plan-check-')
    os.makedirs(out, exist_ok=True)
    log = os.path.join(out, 'log.txt')
    env = dict(os.environ, OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1', MKL_NUM_THREADS='1',
               PYTHONUNBUFFERED='1')
    py = sys.executable
    sets = [a for kv in MODEL for a in ('--set', kv)]

    step_json = os.path.join(out, 'step.json')
    call([py, '-m', 'pfn15.bench', 'step', '--arch', 'resnet_small', '--size', '8',
          '--batch', '32', '--iters', '20', '--blocks', '7', '--json', step_json] + sets,
         env, log)
    with open(step_json) as f:
        step = json.load(f)
    ar_json = os.path.join(out, 'allreduce.json')
    call([MPIEXEC, '-n', '2', py, '-m', 'pfn15.bench', 'allreduce',
          '--bytes', '4096,65536,1048576', '--json', ar_json], env, log)
    with open(ar_json) as f:
        allreduce = json.load(f)

    runs = {}
    for k in workers:
        run_dir = os.path.join(out, 'train-%d' % k)
        shutil.rmtree(run_dir, ignore_errors=True)   # ours: resume=none refuses old checkpoints
        call([MPIEXEC, '-n', str(k), py, '-m', 'pfn15.train', 'configs/demo.yaml',
              'out=%s' % run_dir, 'batch.global=%d' % args.global_batch,
              'train.iterations=%d' % args.iterations, 'train.eval_every_epochs=0',
              'checkpoint.every_iterations=0', 'resume=none', 'train.progress_bar=false'],
             env, log)
        with open(os.path.join(run_dir, 'summary.json')) as f:
            runs[k] = json.load(f)

    plan_json = os.path.join(out, 'plan.json')
    first = runs[workers[0]]   # the training set's size, from the run's own accounting
    train_images = int(round(first['iterations'] * args.global_batch / first['epochs']))
    print(call([py, '-m', 'pfn15.plan', '--calibrate', step_json, '--calibrate', ar_json,
                '--workers', args.workers, '--global-batch', str(args.global_batch),
                '--batch-per-worker', '32', '--train-images', str(train_images),
                '--epochs', '1', '--eval-every', '0', '--json', plan_json], env, log))
    with open(plan_json) as f:
        predicted = {r['workers']: r for r in json.load(f)['rows']}

    rows, ok = [], True
    print('ranks  predicted   measured   predicted/measured')
    for k in workers:
        p = predicted[k]['iteration_s']
        m = runs[k]['iteration_seconds_median']
        ratio = p / m
        good = abs(ratio - 1) <= args.tolerance
        ok = ok and good
        rows.append({'workers': k, 'predicted_s': p, 'measured_s': m, 'ratio': ratio,
                     'within_tolerance': good})
        print('%5d  %8.1f ms %8.1f ms   %.3f %s' % (k, p * 1e3, m * 1e3, ratio,
                                                    '' if good else '  <- off by more than %d%%'
                                                    % round(args.tolerance * 100)))
    print('step: %.1f images/s per rank (bench step, %s); all-reduce: alpha %.1f us, '
          '%.2f GB/s (bench allreduce, 2 ranks); %d cores'
          % (step['pfn15_img_per_s'], step['arch'], allreduce['alpha_s'] * 1e6,
             1e-9 / allreduce['beta_s_per_byte'], step['cpu_count']))
    meter.stop()
    busy = loaded(meter.other_cores, meter.cores, args.max_other_load)
    print('load: %s' % meter.describe())
    if busy:
        verdict = 'INCONCLUSIVE'
        print('plan_check: %s: the machine was loaded (other processes used more than %d%% '
              'of its cores), so the measured times are not this machine\'s and the %s above '
              'cannot hold; rerun on an idle machine. Files in %s'
              % (verdict, round(args.max_other_load * 100), 'PASS' if ok else 'FAIL', out))
    else:
        verdict = 'PASS' if ok else 'FAIL'
        print('plan_check: %s (tolerance %d%%); files in %s'
              % (verdict, round(args.tolerance * 100), out))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'rows': rows, 'step': step_json, 'allreduce': ar_json, 'ok': ok,
                       'verdict': verdict, 'other_cores': meter.other_cores,
                       'cores': meter.cores, 'load_before': meter.load_before,
                       'load_after': meter.load_after, 'probe_before_s': meter.probe_before,
                       'probe_after_s': meter.probe_after}, f, indent=1)
    return 3 if busy else 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
