"""The reproduction report: the smoke run end to end (CI), and the text it derives."""
import os

import pytest

from pfn15 import report


def _stats(finals):
    return {'finals': finals, 'n': len(finals), 'mean': sum(finals) / len(finals),
            'spread': max(finals) - min(finals)}


def test_compare_states_what_the_numbers_show():
    a, b = _stats([0.90, 0.92, 0.91]), _stats([0.80, 0.81, 0.805])
    assert 'helps' in report.compare(a, b, 'A', 'B') and '+10.50 points' in \
        report.compare(a, b, 'A', 'B')
    assert 'hurts' in report.compare(b, a, 'B', 'A')
    close, same = _stats([0.910, 0.912, 0.911]), _stats([0.910, 0.911, 0.909])
    assert 'no difference larger than' in report.compare(close, same, 'A', 'C')
    assert 'cannot tell' in report.compare(a, same, 'A', 'C')   # a's 2-point spread
    one = _stats([0.95])
    assert 'no conclusion' in report.compare(one, _stats([0.5]), 'A', 'B')


def test_two_seeds_rarely_decide_and_within_the_spread_is_said_only_when_it_is():
    # 2 seeds each: Welch's t has 1-2 degrees of freedom, the interval is wide.
    a, b = _stats([0.90, 0.92]), _stats([0.80, 0.81])
    assert report.verdict(a, b) == 'open'
    text = report.compare(a, b, 'A', 'B')
    assert 'cannot tell' in text and 'beyond it' in text        # 10.5 > 2 points of spread
    c, d = _stats([0.90, 0.94]), _stats([0.91, 0.95])
    assert 'within it' in report.compare(c, d, 'C', 'D')        # 1 point < 4 points of spread


def test_identical_seeds_still_have_the_accuracy_resolution():
    # Every seed the same value: the interval is not zero wide (one image = 0.28 points).
    d, lo, hi = report.difference(_stats([0.9833] * 3), _stats([0.9833] * 3))
    assert d == 0 and lo < 0 < hi and hi - lo > 0.2


def test_findings_cover_every_comparison_and_say_when_nothing_helps():
    same = _stats([0.90, 0.901, 0.899])
    stats = {k: dict(same) for k in ('small_sgd', 'large_sgd', 'large_goyal', 'large_pfn',
                                     'large_lars', 'large_pfn_bn_ma')}
    text = '\n'.join(report.findings(stats))
    for word in ("Goyal's warm-up", 'RMSprop warm-up', 'LARS', 'moving averages'):
        assert word in text
    assert text.count('no difference larger than') == 8
    concl = report.conclusion(stats, 15)
    assert concl.count('is the same as') == 8 and 'cannot be told' not in concl


def test_open_comparisons_ask_for_seeds_and_the_conclusion_says_so():
    stats = {'small_sgd': _stats([0.98, 0.99, 0.97]), 'large_sgd': _stats([0.95, 0.99, 0.93])}
    assert report.verdict(stats['large_sgd'], stats['small_sgd']) == 'open'
    assert report.undecided(stats, 5) == ['large_sgd', 'small_sgd']
    assert report.undecided(stats, 3) == []          # at the cap: it stays open
    concl = report.conclusion(stats, 15)
    assert 'not distinguishable, with these seeds' in concl
    assert '1 of these 1 comparisons cannot be told apart' in concl


def test_plot_draws_bands_and_identical_curves_once_with_both_names(tmp_path):
    def agg(finals, curve):
        runs = [{'final': f, 'final_loss': 0.1, 'wall': 1.0, 'epochs': [1, 2, 3],
                 'val_acc': [c + 0.01 * i for c in curve], 'train_loss': [1.0, 0.5, 0.2]}
                for i, f in enumerate(finals)]
        return report.aggregate(runs)
    stats = {'large_pfn': agg([0.9, 0.91], [0.5, 0.8, 0.9]),
             'large_pfn_bn_ma': agg([0.9, 0.91], [0.5, 0.8, 0.9]),
             'large_sgd': agg([0.8, 0.82], [0.4, 0.6, 0.8])}
    assert stats['large_sgd']['val_acc_lo'] == [0.4, 0.6, 0.8]
    assert stats['large_sgd']['val_acc_hi'] == pytest.approx([0.41, 0.61, 0.81])
    labels = {k: k for k in stats}
    drawn = report.plot(stats, labels, str(tmp_path / 'v.png'), 'val_acc', 'top-1')
    assert drawn == [['large_pfn', 'large_pfn_bn_ma'], ['large_sgd']]
    assert os.path.getsize(tmp_path / 'v.png') > 1000


def test_grid_holds_data_epochs_seeds_fixed_across_variants():
    keys = [k for k, _, _ in report.grid()]
    assert keys == ['small_sgd', 'large_sgd', 'large_goyal', 'large_pfn', 'large_lars',
                    'large_pfn_bn_ma']
    for _, _, ov in report.grid():
        assert not any(o.startswith(('seed=', 'train.epochs=', 'data.')) for o in ov)
    assert len(report.SEEDS) >= 3 and report.MAX_SEEDS > len(report.SEEDS) and set(report.SMOKE_VARIANTS) <= set(keys)


@pytest.mark.slow
def test_report_smoke_end_to_end(tmp_path):
    out = str(tmp_path / 'report')
    assert report.main([out, '--smoke']) == 0
    text = open(os.path.join(out, 'report.md')).read()
    assert '| variant |' in text and 'What the runs show' in text
    for png in ('val_accuracy.png', 'train_loss.png'):
        assert os.path.getsize(os.path.join(out, png)) > 1000
    for key in report.SMOKE_VARIANTS:
        assert os.path.exists(os.path.join(out, 'runs', key + '-seed0', 'log'))
