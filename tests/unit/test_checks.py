"""Collective per-iteration checks (pfn15/training/checks.py): the judging logic
alone. A new check added as one class + one entry, in a real 2-rank run:
tests/mpi/test_checks_on_ranks.py."""
import numpy
import pytest

from pfn15.data import DataError
from pfn15.training import checks
from pfn15.data.order import BatchPlan


class _Sums(object):
    """A communicator whose all-reduce returns given sums (the judging is under test)."""

    def __init__(self, totals):
        self.totals = numpy.asarray(totals, numpy.float64)
        self.sent = None

    def allreduce(self, x):
        self.sent = x
        return self.totals


class Fixed(checks.Check):
    def __init__(self, numbers, fail_if=None):
        self.numbers, self.size, self.fail_if, self.seen = numbers, len(numbers), fail_if, None

    def local(self):
        return self.numbers

    def judge(self, totals, at):
        self.seen = list(totals)
        if self.fail_if is not None and self.fail_if(totals):
            raise checks.CheckFailed('failed on %s' % list(totals))


class _Trainer(object):
    class updater(object):
        iteration = 5


def test_one_all_reduce_carries_every_check_and_each_judges_its_slice():
    a, b = Fixed([1.0, 2.0]), Fixed([3.0])
    comm = _Sums([10.0, 20.0, 30.0])
    checks.CollectiveChecks(comm, [a, b])(_Trainer())
    assert list(comm.sent) == [1.0, 2.0, 3.0]
    assert a.seen == [10.0, 20.0] and b.seen == [30.0]


def test_the_first_failing_check_stops_and_carries_its_status():
    class Bad(checks.CheckFailed):
        status = 9
    first = Fixed([0.0], fail_if=lambda t: t[0] > 0)
    later = Fixed([0.0])
    ext = checks.CollectiveChecks(_Sums([1.0, 0.0]), [first, later])
    with pytest.raises(checks.CheckFailed) as e:
        ext(_Trainer())
    assert e.value.status == 1 and later.seen is None
    assert Bad('x').status == 9 and Bad('x').collective


def test_a_check_giving_the_wrong_count_is_a_bug_not_a_verdict():
    wrong = Fixed([1.0])
    wrong.size = 2
    with pytest.raises(ValueError, match='gave 1 numbers, its size is 2'):
        checks.CollectiveChecks(_Sums([0.0, 0.0]), [wrong]).gather()


def test_data_check_judges_the_bad_fraction_once_enough_is_seen():
    epochs = BatchPlan(100, 10000)    # global batch 100, 10,000 images
    check = checks.DataCheck(0.01, epochs, lookahead=0)
    # 10 / 0.01 = 1,000 images must be seen first: iteration 9 has seen 900
    assert check.too_many_bad(50, 9) is None
    assert check.too_many_bad(10, 20) is None            # 10 of 2,000: 0.5%
    line = check.too_many_bad(21, 20)                     # 21 of 2,000: above 1%
    assert '21 times a corrupt image was replaced by the mean image, out of about 2000' in line
    assert checks.DataCheck(0.0, epochs).too_many_bad(10 ** 6, 50) is None
    # the images decoded ahead of training count as seen
    assert checks.DataCheck(0.01, epochs, lookahead=200).too_many_bad(21, 20) is None


def test_data_check_failure_is_a_data_error_with_status_2():
    epochs = BatchPlan(100, 10000)
    check = checks.DataCheck(0.01, epochs)
    at = checks._At(20, None, None)
    with pytest.raises(DataError) as e:
        check.judge(numpy.array([0.0, 500.0]), at)
    assert isinstance(e.value, checks.CheckFailed) and e.value.status == 2
    check.judge(numpy.array([0.0, 0.0]), at)             # healthy: no verdict


def test_the_checks_list_builds_what_applies():
    from pfn15 import config
    import types
    parts = types.SimpleNamespace(checkpointer='ckpt', plan=BatchPlan(32, 320),
                                  meta={'train_size': 320}, comm=None)
    digits = config.load(None, ['data.dataset=digits'])
    assert [type(c) for c in checks.build(digits, parts)] == [checks.StopSignal]
    jpeg = config.load(None, ['data.dataset=imagenet'], check_paths=False)
    made = checks.build(jpeg, parts)
    assert [type(c) for c in made] == [checks.DataCheck, checks.StopSignal]
    assert made[1].checkpointer == 'ckpt' and made[0].lookahead == 2 * jpeg.batch.global_
