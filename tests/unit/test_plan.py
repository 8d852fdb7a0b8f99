"""pfn15.plan: the all-reduce formulas against hand-computed values, the model's
invariants, the presets, the CLI and --calibrate. Pure and fast (no Chainer)."""
import dataclasses
import json
import math
import subprocess
import sys

import pytest

from pfn15 import plan


def test_plan_does_not_import_chainer():
    code = 'import sys, pfn15.plan; print("chainer" in sys.modules)'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == 'False'


# ------------------------------------------------------------------ all-reduce

def test_ring_matches_hand_computed():
    # p = 4 nodes of one GPU: 2(p-1) alpha + 2(p-1)/p n beta
    t = plan.allreduce_time(1e6, 4, alpha=1e-5, beta=1e-9, algo='ring', gpus_per_node=1)
    assert t == pytest.approx(6 * 1e-5 + 1.5 * 1e6 * 1e-9)      # 1.56 ms


def test_ring_inside_one_node_uses_intra_link():
    t = plan.allreduce_time(1e6, 4, alpha=1e-5, beta=1e-9, algo='ring', gpus_per_node=8,
                            alpha_intra=1e-6, beta_intra=1e-10)
    assert t == pytest.approx(6 * 1e-6 + 1.5 * 1e6 * 1e-10)


def test_hierarchical_matches_hand_computed():
    # p = 16, g = 4 per node, m = 4 nodes
    t = plan.allreduce_time(1e6, 16, alpha=1e-5, beta=1e-9, algo='hierarchical',
                            gpus_per_node=4, alpha_intra=1e-6, beta_intra=1e-10)
    intra = 2 * (3 * 1e-6 + 1e6 * 1e-10)              # reduce to the leader + broadcast
    inter = 2 * 3 * 1e-5 + 2 * 3 / 4 * 1e6 * 1e-9      # ring among 4 leaders
    assert t == pytest.approx(intra + inter)           # 1.766 ms


def test_torus2d_matches_hand_computed():
    t = plan.allreduce_time(1e6, 16, alpha=1e-5, beta=1e-9, algo='torus2d',
                            gpus_per_node=4, alpha_intra=1e-6, beta_intra=1e-10)
    intra = 2 * (3 * 1e-6 + 3 / 4 * 1e6 * 1e-10)      # reduce-scatter + all-gather
    inter = 2 * 3 * 1e-5 + 2 * 3 / 4 * 1e6 * 1e-9
    assert t == pytest.approx(intra + inter)           # 1.716 ms
    # with the same links, 2D torus beats one flat ring at scale (latency 2(m-1), not 2(p-1))
    flat = plan.allreduce_time(1e6, 1024, 1e-5, 1e-9, 'ring', 8, 1e-6, 1e-10)
    torus = plan.allreduce_time(1e6, 1024, 1e-5, 1e-9, 'torus2d', 8, 1e-6, 1e-10)
    assert torus < flat


def test_calls_multiply_latency_only():
    one = plan.allreduce_time(1e6, 3, 1e-5, 1e-9, 'ring', calls=1)
    ten = plan.allreduce_time(1e6, 3, 1e-5, 1e-9, 'ring', calls=10)
    assert ten - one == pytest.approx(9 * 2 * 2 * 1e-5)


def test_one_worker_has_no_allreduce_and_bad_inputs_raise():
    for algo in plan.ALGOS:
        assert plan.allreduce_time(1e8, 1, 1e-5, 1e-9, algo, 8) == 0.0
    with pytest.raises(ValueError):
        plan.allreduce_time(1e6, 4, 1e-5, 1e-9, 'butterfly')
    with pytest.raises(ValueError):
        plan.allreduce_time(1e6, 0, 1e-5, 1e-9)


def test_fp16_halves_bytes_and_bandwidth_term():
    s32 = plan.Setup(fp16_allreduce=False, inter_alpha=0.0, intra_alpha=0.0)
    s16 = dataclasses.replace(s32, fp16_allreduce=True)
    assert s16.grad_bytes() == s32.grad_bytes() / 2 == 25.6e6 * 2
    r32, r16 = plan.plan_one(s32, 64), plan.plan_one(s16, 64)
    assert r16['allreduce_s'] == pytest.approx(r32['allreduce_s'] / 2)


def test_fit_alpha_beta_recovers_ring_parameters():
    alpha, beta, p = 2e-5, 1e-9, 3
    sizes = [4096, 65536, 1 << 20, 1 << 23]
    times = [plan.allreduce_time(n, p, alpha, beta, 'ring') for n in sizes]
    fit = plan.fit_alpha_beta(sizes, times, p)
    assert fit['alpha_s'] == pytest.approx(alpha, rel=1e-6)
    assert fit['beta_s_per_byte'] == pytest.approx(beta, rel=1e-6)


# ------------------------------------------------------------------ iteration / plan

def test_iteration_time_overlap_hand_computed():
    # 64 images over 2 workers at 32 img/s: 1 s of compute, one microbatch;
    # backward = 2/3 s can hide at most 2/3 s of a 0.9 s all-reduce.
    full = plan.iteration_time(64, 2, 32.0, 0.9, batch_per_worker=32, overlap=1.0)
    assert full['compute_s'] == pytest.approx(1.0)
    assert full['iteration_s'] == pytest.approx(1.0 + 0.9 - 2.0 / 3.0)
    half = plan.iteration_time(64, 2, 32.0, 0.9, batch_per_worker=32, overlap=0.5)
    assert half['iteration_s'] == pytest.approx(1.0 + 0.45)
    none = plan.iteration_time(64, 2, 32.0, 0.9, batch_per_worker=32, overlap=0.0)
    assert none['iteration_s'] == pytest.approx(1.9)
    # 4 microbatches: only the last one's backward (1/4 of compute) can overlap
    acc = plan.iteration_time(256, 2, 32.0, 0.9, batch_per_worker=32, overlap=1.0)
    assert acc['microbatches'] == 4
    assert acc['iteration_s'] == pytest.approx(4.0 + 0.9 - 2.0 / 3.0)


def test_data_loading_ceiling():
    r = plan.iteration_time(64, 2, 32.0, 0.0, data_img_per_s=16.0)
    assert r['compute_s'] == pytest.approx(2.0) and r['data_bound']
    assert not plan.iteration_time(64, 2, 32.0, 0.0, data_img_per_s=64.0)['data_bound']


def test_eval_and_totals_hand_computed():
    s = plan.Setup(img_per_s=100.0, batch_per_worker=10, global_batch=40, epochs=2,
                   train_images=400, val_images=300, eval_every=1, inter_alpha=0.0,
                   intra_alpha=0.0, params=0)
    r = plan.plan_one(s, 4)
    assert r['iteration_s'] == pytest.approx(0.1)         # 10 images at 100 img/s
    assert r['iterations'] == 20
    assert r['eval_s'] == pytest.approx(75 / 300.0)        # 300/4 images at 3 x 100 img/s
    assert r['epoch_s'] == pytest.approx(10 * 0.1 + 0.25)
    assert r['total_s'] == pytest.approx(20 * 0.1 + 2 * 0.25)
    assert r['efficiency'] == pytest.approx(1.0)


WORKERS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]


@pytest.mark.parametrize('name', ['pfn', 'goyal', 'fujitsu'])
def test_presets_monotone_finite_and_efficiency_at_most_one(name):
    s = plan.presets()[name]
    rows = plan.plan(s, WORKERS)
    compute = [r['compute_s'] for r in rows]
    assert all(b < a for a, b in zip(compute, compute[1:]))   # more workers, less compute
    epoch = [r['epoch_s'] for r in rows]
    assert all(b < a for a, b in zip(epoch, epoch[1:]))
    for r in rows:
        assert 0 < r['efficiency'] <= 1 + 1e-12
        for k in ('iteration_s', 'epoch_s', 'total_s', 'train_s'):
            assert math.isfinite(r[k]) and r[k] > 0


def test_compare_presets_ratios():
    rows = plan.compare_presets(['pfn', 'goyal', 'fujitsu'])
    pub = {r['preset']: r['published_s'] for r in rows}
    assert pub == {'pfn': 900.0, 'goyal': 3600.0, 'fujitsu': 74.7}
    for r in rows:
        assert r['ratio'] == pytest.approx(r['predicted_total_s'] / r['published_s'])
        assert math.isfinite(r['ratio']) and r['ratio'] > 0


# ------------------------------------------------------------------ CLI

def test_cli_prints_published_times_and_ratios(capsys):
    assert plan.main(['--preset', 'all']) == 0
    out = capsys.readouterr().out
    for label in ('15 min', '1 h', '74.7 s'):
        assert label in out
    for r in plan.compare_presets(['pfn', 'goyal', 'fujitsu']):
        assert '%.2f' % r['ratio'] in out


def test_cli_table_plot_and_flags(tmp_path, capsys):
    png, js = tmp_path / 'plan.png', tmp_path / 'plan.json'
    assert plan.main(['--preset', 'pfn', '--workers', '8,64,1024', '--algo', 'torus2d',
                      '--fp32-allreduce', '--overlap', '0.5', '--plot', str(png),
                      '--json', str(js)]) == 0
    out = capsys.readouterr().out
    assert 'torus2d' in out and '15 min' in out
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b'\x89PNG'
    d = json.loads(js.read_text())
    assert [r['workers'] for r in d['rows']] == [8, 64, 1024]
    assert d['setup']['fp16_allreduce'] is False and d['setup']['overlap'] == 0.5


def test_calibrate_reads_bench_json(tmp_path, capsys):
    step = {'kind': 'step', 'arch': 'resnet_small', 'batch': 10, 'device': 'cpu',
            'bare_img_per_s': 105.0, 'pfn15_img_per_s': 100.0, 'param_count': 1000,
            'param_arrays': 10, 'cpu_count': 2, 'threads_per_worker': 1}
    ar = {'kind': 'allreduce', 'comm': 'naive', 'workers': 2,
          'alpha_s': 1e-4, 'beta_s_per_byte': 1e-9}
    (tmp_path / 's.json').write_text(json.dumps(step))
    (tmp_path / 'a.json').write_text(json.dumps(ar))
    out = tmp_path / 'plan.json'
    assert plan.main(['--calibrate', str(tmp_path / 's.json'), '--calibrate',
                      str(tmp_path / 'a.json'), '--workers', '1,2,3', '--global-batch', '30',
                      '--batch-per-worker', '10', '--json', str(out)]) == 0
    rows = json.loads(out.read_text())['rows']
    it = [r['iteration_s'] for r in rows]
    assert it[0] == pytest.approx(0.3)                               # 30 images at 100/s
    # 2 ranks: 15 images each; 10 arrays -> 10 calls of 2(p-1) alpha; 4000 bytes
    assert it[1] == pytest.approx(0.15 + 10 * 2 * 1e-4 + 4000 * 1e-9)
    # 3 ranks on 2 cores: one core runs two ranks, and the step waits for them: x2
    assert it[2] == pytest.approx(0.1 * 2 + 10 * 4 * 1e-4 + 4 / 3 * 4000 * 1e-9)
    bad = tmp_path / 'bad.json'
    bad.write_text('{"kind": "data"}')
    with pytest.raises(ValueError):
        plan.main(['--calibrate', str(bad)])


def test_calibrate_splits_microbatch_and_once_per_update(tmp_path):
    # bench step on CPU: 10 images per microbatch in 0.08 s, 0.02 s more once per update
    step = {'kind': 'step', 'arch': 'resnet_small', 'batch': 10, 'device': 'cpu',
            'bare_img_per_s': 105.0, 'pfn15_img_per_s': 100.0, 'microbatch_s': 0.08,
            'update_overhead_s': 0.02, 'param_count': 1000, 'param_arrays': 10,
            'cpu_count': 2, 'threads_per_worker': 1}
    (tmp_path / 's.json').write_text(json.dumps(step))
    out = tmp_path / 'plan.json'
    assert plan.main(['--calibrate', str(tmp_path / 's.json'), '--workers', '1,2',
                      '--global-batch', '60', '--batch-per-worker', '10',
                      '--json', str(out)]) == 0
    rows = json.loads(out.read_text())['rows']
    # 1 rank: 6 microbatches and one optimizer step, not 6 x (0.08 + 0.02)
    assert rows[0]['iteration_s'] == pytest.approx(6 * 0.08 + 0.02)
    assert rows[0]['microbatches'] == 6
    # the step's once-per-update share does not shrink with more ranks
    assert rows[1]['compute_s'] == pytest.approx(3 * 0.08 + 0.02)


def test_plot_reads_as_a_reader_expects(tmp_path):
    rows = plan.plan(plan.presets()['pfn'], plan.default_workers('pfn'))
    drawn = plan.save_plot(plan.plot_series({'pfn': rows}, {'pfn': (1024, 900.0, '15 min')}),
                           str(tmp_path / 'p.png'))
    assert drawn['x_ticks'] == ['1', '2', '4', '8', '16', '32', '64', '128', '256', '512',
                                '1024']                                 # not 2^7..2^10
    assert '15 min' in drawn['y_ticks'] and '1 h' in drawn['y_ticks']  # readable durations
    assert 'published 15 min at 1024' in drawn['legend']
    labels = [name for name, _ in drawn['lines']]
    assert 'total (with eval)' in labels and 'training only' in labels
    # each curve's last value written next to it (11.7 min predicted at 1024)
    assert (tmp_path / 'p.png').stat().st_size > 1000


def test_plot_of_all_presets_and_bad_paths(tmp_path, capsys):
    png = tmp_path / 'all.png'
    assert plan.main(['--preset', 'all', '--plot', str(png)]) == 0
    assert png.read_bytes()[:4] == b'\x89PNG'
    assert 'plot: %s' % png in capsys.readouterr().out
    for bad, why in (('/nonexistent/x.png', 'does not exist'), (str(tmp_path), 'directory'),
                     (str(tmp_path / 'x.txt'), 'unknown image type')):
        assert plan.main(['--preset', 'pfn', '--plot', bad]) == 2
        cap = capsys.readouterr()
        assert cap.out == ''                       # checked before the table
        assert cap.err.count('\n') == 1 and why in cap.err, cap.err


def test_plot_bad_path_from_the_command_line():
    p = subprocess.run([sys.executable, '-m', 'pfn15.plan', '--plot', '/nonexistent/x.png'],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stdout == ''
    assert p.stderr.strip().count('\n') == 0 and 'Traceback' not in p.stderr
