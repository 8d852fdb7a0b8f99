"""tools/gpu_check.py --budget: the budgeting runs on CPU (stand-in check functions
that sleep; the GPU checks themselves need a GPU), and the dry run."""
import os
import subprocess
import sys
import time

import gpu_check  # tools/gpu_check.py

from helpers import ROOT


def _args(budget, **kw):
    args = gpu_check.parse_args(['--budget', str(budget)] +
                                [a for k, v in kw.items() for a in ('--' + k, str(v))])
    return args


def test_checks_run_in_order_and_what_does_not_fit_is_skipped_and_named(monkeypatch):
    monkeypatch.setattr(gpu_check, 'STARTED', time.monotonic())
    monkeypatch.setattr(gpu_check, 'RESERVE_S', 0.2)
    monkeypatch.setattr(gpu_check, 'ESTIMATES', {'a': 0.3, 'b': 5.0, 'c': 0.3})
    monkeypatch.setattr(gpu_check, 'estimate', lambda name, args: gpu_check.ESTIMATES[name])
    ran = []

    def check(name, seconds):
        def fn():
            ran.append(name)
            time.sleep(seconds)
            return True, 'ok', {}
        return fn
    report = {'checks': []}
    gpu_check.run_checks([('a', check('a', 0.3)), ('b', check('b', 0)), ('c', check('c', 0))],
                         _args(2), report, out=lambda line: None)
    assert ran == ['a', 'c']              # b (5 s) does not fit in 2 s; c after it does
    status = {c['name']: c['status'] for c in report['checks']}
    assert status == {'a': 'PASS', 'b': 'SKIP', 'c': 'PASS'}
    assert 'budget: needs ~5 s' in report['checks'][1]['detail']


def test_a_check_that_overruns_is_stopped_at_the_budget(monkeypatch):
    monkeypatch.setattr(gpu_check, 'STARTED', time.monotonic())
    monkeypatch.setattr(gpu_check, 'RESERVE_S', 0.0)
    monkeypatch.setattr(gpu_check, 'estimate', lambda name, args: 0.1)

    def hang():
        time.sleep(30)
        return True, 'never', {}
    report = {'checks': []}
    t0 = time.monotonic()
    gpu_check.run_checks([('slow', hang), ('next', lambda: (True, 'ok', {}))], _args(2),
                         report, out=lambda line: None)
    assert time.monotonic() - t0 < 5
    assert [c['status'] for c in report['checks']] == ['TIMEOUT', 'SKIP']


def test_estimates_cover_every_check_and_scale_with_iterations():
    assert set(gpu_check.ESTIMATES) == set(gpu_check.ORDER)
    small, big = _args(600, **{'train-iters': 10}), _args(600, **{'train-iters': 90})
    assert gpu_check.estimate('train_float32', small) < gpu_check.estimate('train_float32', big)
    assert gpu_check.ORDER[0] == 'rmsprop_warmup' and gpu_check.ORDER[-1].startswith('bench_')


def test_dry_run_for_a_ten_minute_allocation():
    p = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'gpu_check.py'),
                        '--budget', '540', '--dry-run'], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    rows = [l.split() for l in p.stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == list(gpu_check.ORDER)
    total = gpu_check.STARTUP_S + sum(float(r[2].lstrip('~')) for r in rows if r[1] == 'RUN')
    assert total <= 540 and any(r[1] == 'RUN' for r in rows)
    assert all('budget: needs' in ' '.join(r) for r in rows if r[1] == 'SKIP')


def test_measured_seconds_of_an_earlier_run_replace_the_estimates(tmp_path):
    import json
    prev = tmp_path / 'prev.json'
    prev.write_text(json.dumps({'checks': [
        {'name': 'train_float32', 'status': 'PASS', 'seconds': 40.0},
        {'name': 'bench_b32_mixed16', 'status': 'SKIP', 'seconds': 0.0}]}))
    args = gpu_check.parse_args(['--budget', '540', '--estimates', str(prev)])
    assert gpu_check.estimate('train_float32', args) == 50.0          # 1.25 x measured
    assert gpu_check.estimate('bench_b32_mixed16', args) == gpu_check.estimate(
        'bench_b32_mixed16', gpu_check.parse_args([]))                # not measured: the table
