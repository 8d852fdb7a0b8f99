"""The reproduction report: the smoke run end to end (CI), and the text it derives."""
import os

import pytest

from pfn15 import report


def _stats(finals):
    return {'finals': finals, 'mean': sum(finals) / len(finals),
            'spread': max(finals) - min(finals)}


def test_compare_states_what_the_numbers_show():
    a, b = _stats([0.90, 0.92]), _stats([0.80, 0.81])
    assert 'helps' in report.compare(a, b, 'A', 'B') and '+10.50 points' in \
        report.compare(a, b, 'A', 'B')
    assert 'hurts' in report.compare(b, a, 'B', 'A')
    close = _stats([0.905, 0.915])
    assert 'no clear difference' in report.compare(a, close, 'A', 'C')   # within the spread
    one = _stats([0.95])
    assert 'no conclusion' in report.compare(one, _stats([0.5]), 'A', 'B')


def test_findings_cover_every_comparison_and_say_when_nothing_helps():
    same = _stats([0.90, 0.91])
    stats = {k: dict(same) for k in ('small_sgd', 'large_sgd', 'large_goyal', 'large_pfn',
                                     'large_lars', 'large_pfn_bn_ma')}
    text = '\n'.join(report.findings(stats))
    for word in ("Goyal's warm-up", 'RMSprop warm-up', 'LARS', 'moving averages'):
        assert word in text
    assert text.count('no clear difference') == 5


def test_grid_holds_data_epochs_seeds_fixed_across_variants():
    keys = [k for k, _, _ in report.grid()]
    assert keys == ['small_sgd', 'large_sgd', 'large_goyal', 'large_pfn', 'large_lars',
                    'large_pfn_bn_ma']
    for _, _, ov in report.grid():
        assert not any(o.startswith(('seed=', 'train.epochs=', 'data.')) for o in ov)
    assert len(report.SEEDS) >= 2 and set(report.SMOKE_VARIANTS) <= set(keys)


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
