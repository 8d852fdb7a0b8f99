"""The recipe's schedules against hand-computed values (docs/recipe.md)."""
import math

import numpy
import pytest

from pfn15 import schedules
from pfn15.config import ScheduleConfig


def test_alpha_sgd_hand_computed():
    c, p = 10.0, 5.0
    assert schedules.alpha_sgd(0.0, c, p) == pytest.approx(0.5 * math.exp(-4.0))   # 0.5 e^(2(0-10)/5)
    assert schedules.alpha_sgd(5.0, c, p) == pytest.approx(0.5 * math.exp(-2.0))
    assert schedules.alpha_sgd(10.0, c, p) == pytest.approx(0.5)
    assert schedules.alpha_sgd(11.0, c, p) == pytest.approx(0.7)                    # 0.5 + 1/5
    assert schedules.alpha_sgd(12.0, c, p) == pytest.approx(0.9)
    assert schedules.alpha_sgd(12.5, c, p) == 1.0                                    # c + p/2
    assert schedules.alpha_sgd(50.0, c, p) == 1.0


@pytest.mark.parametrize('c,p', [(10.0, 5.0), (2.0, 1.0), (3.0, 8.0)])
def test_alpha_sgd_continuous_with_continuous_slope_at_center(c, p):
    h = 1e-6
    left, mid, right = (schedules.alpha_sgd(c - h, c, p), schedules.alpha_sgd(c, c, p),
                        schedules.alpha_sgd(c + h, c, p))
    assert abs(mid - left) < 1e-5 and abs(right - mid) < 1e-5
    slope_left = (mid - schedules.alpha_sgd(c - 2 * h, c, p)) / (2 * h)
    slope_right = (schedules.alpha_sgd(c + 2 * h, c, p) - mid) / (2 * h)
    assert slope_left == pytest.approx(1.0 / p, rel=1e-4)
    assert slope_right == pytest.approx(1.0 / p, rel=1e-4)


@pytest.mark.parametrize('c,p', [(10.0, 5.0), (2.0, 1.0)])
def test_alpha_sgd_reaches_one_exactly_and_stays_in_unit_interval(c, p):
    end = c + p / 2
    assert schedules.alpha_sgd(end, c, p) == 1.0
    assert schedules.alpha_sgd(end - 1e-3, c, p) < 1.0
    # continuous at c + p/2 too: the linear branch arrives at 1
    assert schedules.alpha_sgd(end - 1e-9, c, p) == pytest.approx(1.0, abs=1e-8)
    es = numpy.linspace(0, 3 * end, 20001)
    values = numpy.array([schedules.alpha_sgd(e, c, p) for e in es])
    assert values.min() >= 0.0 and values.max() <= 1.0
    assert numpy.all(numpy.diff(values) >= 0)          # monotone
    alpha_rms_factor = 1 - values                       # (1 - alpha_sgd) never negative
    assert alpha_rms_factor.min() >= 0.0


def test_slow_start_phases_at_32k():
    base = 0.1 * 32768 / 256
    assert base == 12.8
    assert schedules.slow_start(0.0, base) == pytest.approx(6.4)
    assert schedules.slow_start(39.99, base) == pytest.approx(6.4)
    assert schedules.slow_start(40.0, base) == pytest.approx(0.96)
    assert schedules.slow_start(69.9, base) == pytest.approx(0.96)
    assert schedules.slow_start(70.0, base) == pytest.approx(0.128)
    assert schedules.slow_start(85.0, base) == pytest.approx(0.0128)
    assert schedules.slow_start(90.0, base) == pytest.approx(0.0128)


def test_linear_warmup_and_config_driven_rate():
    assert schedules.linear_warmup(0.0, 3.2, 5, 0.1) == pytest.approx(0.1)
    assert schedules.linear_warmup(2.5, 3.2, 5, 0.1) == pytest.approx(1.65)
    assert schedules.linear_warmup(5.0, 3.2, 5, 0.1) == pytest.approx(3.2)
    s = ScheduleConfig(lr='step', boundaries=[30, 60, 80], factors=[1, 0.1, 0.01, 0.001],
                       warmup_epochs=5, warmup_start_lr=0.1)
    base = 0.1 * 8192 / 256
    assert schedules.learning_rate(0.0, s, base) == pytest.approx(0.1)
    assert schedules.learning_rate(10.0, s, base) == pytest.approx(3.2)
    assert schedules.learning_rate(30.0, s, base) == pytest.approx(0.32)
    with pytest.raises(ValueError):
        schedules.step(0, 1.0, [1, 2], [1.0])


def test_schedules_module_does_not_import_chainer():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, '-c', 'import sys, pfn15.schedules; '
                          'print("chainer" in sys.modules)'], capture_output=True, text=True)
    assert out.stdout.strip() == 'False', out.stderr
