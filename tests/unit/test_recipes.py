"""The record recipes: label smoothing, linear warm-up, polynomial decay, batch-size
control against hand-computed values; the recipe configs against docs/recipe.md.
A batch that grows in a real 2-rank run: tests/mpi/test_recipes_run.py."""
import glob
import math
import os

import numpy
import pytest

import chainer

from pfn15 import config as config_module
from pfn15 import schedules
from pfn15.config import ConfigError, ScheduleConfig
from pfn15.models import Classifier
from pfn15.data.order import BatchPlan

from helpers import ROOT


# ------------------------------------------------------------ label smoothing

class _Identity(chainer.Link):
    def forward(self, x):
        return x


def _loss(logits, t, eps):
    model = Classifier(_Identity(), label_smoothing=eps)
    x = numpy.array(logits, numpy.float64)
    with chainer.using_config('train', True):
        return float(model(x, numpy.array(t, numpy.int32)).array)


def test_label_smoothing_hand_computed():
    ln2 = math.log(2.0)
    # logits log(1), log(1), log(2): p = 1/4, 1/4, 1/2; true class 2.
    # nll = ln 2; mean over classes of -log p = (2 ln2 + 2 ln2 + ln2) / 3 = 5 ln2 / 3
    logits = [[0.0, 0.0, ln2]]
    assert _loss(logits, [2], 0.0) == pytest.approx(ln2, rel=1e-12)
    assert _loss(logits, [2], 0.1) == pytest.approx(0.9 * ln2 + 0.1 * 5 * ln2 / 3, rel=1e-12)
    # true class 0 (p = 1/4): nll = 2 ln2
    assert _loss(logits, [0], 0.2) == pytest.approx(0.8 * 2 * ln2 + 0.2 * 5 * ln2 / 3,
                                                    rel=1e-12)
    # uniform logits: the loss is ln(K) whatever the smoothing
    assert _loss([[3.0, 3.0, 3.0, 3.0]], [1], 0.3) == pytest.approx(math.log(4.0), rel=1e-12)
    # a batch: the mean of the rows
    both = _loss([[0.0, 0.0, ln2], [0.0, 0.0, ln2]], [2, 0], 0.1)
    assert both == pytest.approx(0.5 * ((0.9 * ln2 + 0.1 * 5 * ln2 / 3)
                                        + (0.9 * 2 * ln2 + 0.1 * 5 * ln2 / 3)), rel=1e-12)


def test_label_smoothing_zero_is_softmax_cross_entropy():
    rng = numpy.random.RandomState(0)
    x, t = rng.randn(6, 5), rng.randint(0, 5, 6)
    ref = float(chainer.functions.softmax_cross_entropy(x, t.astype(numpy.int32)).array)
    assert _loss(x, t, 0.0) == pytest.approx(ref, rel=1e-12)
    # and eps -> 0 is continuous
    assert _loss(x, t, 1e-9) == pytest.approx(ref, rel=1e-6)


# ------------------------------------------------------------ warm-up and poly

def test_linear_warmup_hand_computed():
    # Goyal: 0.1 -> 3.2 over 5 epochs
    assert schedules.linear_warmup(0.0, 3.2, 5.0, 0.1) == pytest.approx(0.1)
    assert schedules.linear_warmup(2.5, 3.2, 5.0, 0.1) == pytest.approx(1.65)
    assert schedules.linear_warmup(1.0, 3.2, 5.0, 0.1) == pytest.approx(0.1 + 3.1 / 5)
    assert schedules.linear_warmup(5.0, 3.2, 5.0, 0.1) == 3.2
    assert schedules.linear_warmup(40.0, 3.2, 5.0, 0.1) == 3.2
    assert schedules.linear_warmup(0.0, 3.2, 0.0, 0.1) == 3.2     # no warm-up


def test_goyal_schedule_hand_computed():
    s = ScheduleConfig(lr='step', lr_per_256=0.1, boundaries=[30, 60, 80],
                       factors=[1.0, 0.1, 0.01, 0.001], warmup_epochs=5, warmup_start_lr=0.1)
    base = 0.1 * 8192 / 256
    assert base == pytest.approx(3.2)
    lr = lambda e: schedules.learning_rate(e, s, base)  # noqa: E731
    assert lr(0) == pytest.approx(0.1)
    assert lr(2.5) == pytest.approx(1.65)
    assert lr(5) == pytest.approx(3.2)
    assert lr(29.9) == pytest.approx(3.2)
    assert lr(30) == pytest.approx(0.32)
    assert lr(60) == pytest.approx(0.032)
    assert lr(85) == pytest.approx(0.0032)


def test_poly_hand_computed():
    assert schedules.poly(0.0, 2.0, 10.0, 2) == 2.0
    assert schedules.poly(5.0, 2.0, 10.0, 2) == pytest.approx(0.5)      # 2 x 0.5^2
    assert schedules.poly(2.5, 2.0, 10.0, 2) == pytest.approx(1.125)    # 2 x 0.75^2
    assert schedules.poly(9.0, 2.0, 10.0, 2) == pytest.approx(0.02)     # 2 x 0.1^2
    assert schedules.poly(10.0, 2.0, 10.0, 2) == 0.0
    assert schedules.poly(12.0, 2.0, 10.0, 2) == 0.0
    assert schedules.poly(5.0, 2.0, 10.0, 1) == pytest.approx(1.0)      # power 1: linear


def test_poly_with_warmup_hand_computed():
    s = ScheduleConfig(lr='poly', power=2.0, warmup_epochs=2.0, warmup_start_lr=0.1)
    lr = lambda e: schedules.learning_rate(e, s, 2.0, total_epochs=10.0)  # noqa: E731
    assert lr(0.0) == pytest.approx(0.1)
    # epoch 1: poly target 2 x 0.9^2 = 1.62; halfway from 0.1: 0.1 + 1.52 / 2 = 0.86
    assert lr(1.0) == pytest.approx(0.86)
    assert lr(2.0) == pytest.approx(2.0 * 0.8 ** 2)      # continuous at the end of warm-up
    assert lr(5.0) == pytest.approx(0.5)
    assert lr(10.0) == 0.0
    with pytest.raises(ValueError):
        schedules.learning_rate(1.0, s, 2.0)              # poly needs the run's length


# ------------------------------------------------------------ batch-size control

SCHED = [[0, 10], [0.25, 20], [0.5, 40]]   # train_size 100


def test_batch_size_by_epoch():
    assert schedules.batch_size(0.0, SCHED) == 10
    assert schedules.batch_size(0.2499, SCHED) == 10
    assert schedules.batch_size(0.25, SCHED) == 20
    assert schedules.batch_size(3.0, SCHED) == 40


def test_batch_control_counts_samples_seen_hand_computed():
    # Updates of 10 until 25 samples are passed: 3 updates (30 samples, epoch 0.3);
    # then 20 until 50: 1 update (50, epoch 0.5); then 40 each: 90, 130, 170...
    at = lambda i: schedules.batch_epoch_at(i, 100, SCHED)  # noqa: E731
    assert [at(i) for i in range(8)] == pytest.approx([0, 0.1, 0.2, 0.3, 0.5, 0.9, 1.3, 1.7])
    b = lambda i: schedules.batch_at_iteration(i, 100, SCHED)  # noqa: E731
    assert [b(i) for i in range(7)] == [10, 10, 10, 20, 40, 40, 40]
    # the next update's batch is always the schedule's batch at the current epoch
    for i in range(20):
        assert b(i) == schedules.batch_size(at(i), SCHED)
    it = lambda e: schedules.batch_iterations_for(e, 100, SCHED)  # noqa: E731
    assert it(0.3) == 3 and it(0.25) == 3 and it(0.5) == 4
    assert it(1.0) == 6            # 50 + 40 + 40 = 130 >= 100
    assert it(1.3) == 6 and it(1.31) == 7
    assert it(0.0) == 0


def test_batch_control_switch_on_an_exact_boundary():
    # 25 samples of batch 5 end exactly at epoch 0.25: the switch is at iteration 5
    s = [[0, 5], [0.25, 50]]
    assert schedules.batch_epoch_at(5, 100, s) == pytest.approx(0.25)
    assert schedules.batch_at_iteration(4, 100, s) == 5
    assert schedules.batch_at_iteration(5, 100, s) == 50
    assert schedules.batch_epoch_at(7, 100, s) == pytest.approx(1.25)


def test_global_epochs_follows_the_batch_schedule():
    fixed = BatchPlan(10, 100)
    assert fixed.epochs_at(5) == 0.5 and fixed.batch(5) == 10 and fixed.iterations_for(1) == 10
    g = BatchPlan(10, 100, SCHED)
    assert g.epochs_at(5) == pytest.approx(0.9) and g.batch(3) == 20 and g.iterations_for(1) == 6


def test_batch_schedule_validation():
    load = lambda *ov, workers=2: config_module.load(  # noqa: E731
        None, ['data.dataset=digits', 'batch.per_worker=16'] + list(ov), workers=workers)
    cfg = load('batch.global=64', 'batch.schedule=[[0,64],[2,128],[5,256]]')
    assert cfg.batch.schedule == [[0, 64], [2, 128], [5, 256]]
    bad = [
        (['batch.global=64', 'batch.schedule=[[1,64]]'], 'batch.schedule[0]'),
        (['batch.global=64', 'batch.schedule=[[0,64],[2,128],[2,256]]'], 'batch.schedule[2]'),
        (['batch.global=64', 'batch.schedule=[[0,64],[2,48]]'], 'batch.schedule[1]'),  # 48 % 32
        (['batch.global=64', 'batch.schedule=[[0,64,1]]'], 'batch.schedule[0]'),
        (['batch.global=64', 'batch.schedule=[[0,64.5]]'], 'batch.schedule[0]'),
        (['batch.global=32', 'batch.schedule=[[0,64]]'], 'batch.global'),
        (['batch.global=64', 'batch.schedule=[0,64]'], 'batch.schedule[0]'),
    ]
    for overrides, key in bad:
        with pytest.raises(ConfigError) as e:
            load(*overrides)
        assert e.value.key == key, (overrides, str(e.value))


def test_lars_and_poly_config_choices():
    cfg = config_module.load(None, ['data.dataset=digits', 'optimizer.name=lars',
                                    'optimizer.lars_trust=0.002', 'schedule.lr=poly',
                                    'schedule.power=1'])
    assert cfg.optimizer.name == 'lars' and cfg.optimizer.lars.trust == 0.002
    assert cfg.schedule.lr == 'poly' and cfg.schedule.power == 1.0
    with pytest.raises(ConfigError) as e:
        config_module.load(None, ['data.dataset=digits', 'optimizer.lars_trust=-1'])
    assert e.value.key == 'optimizer.lars_trust'


# ------------------------------------------------------------ the recipe configs

def _recipe(name, workers=None):
    os.environ.setdefault('IMAGENET_ROOT', '/nonexistent')
    return config_module.load(os.path.join(ROOT, 'configs', name), workers=workers,
                              check_paths=False)


def test_goyal_8k_against_recipes_md():
    c = _recipe('goyal-8k.yaml', workers=256)
    assert (c.batch.global_, c.batch.per_worker) == (8192, 32)
    assert BatchPlan.from_config(c, 1281167, 256).base_lr(0) == pytest.approx(3.2)
    assert c.optimizer.name == 'momentum_sgd' and c.optimizer.momentum == 0.9
    assert c.optimizer.weight_decay == 1e-4
    assert c.schedule.lr == 'step' and c.schedule.boundaries == [30, 60, 80]
    assert c.schedule.factors == [1.0, 0.1, 0.01, 0.001]
    assert c.schedule.warmup_epochs == 5 and c.schedule.warmup_start_lr == 0.1
    assert c.model.zero_init_last_bn_gamma and c.train.epochs == 90


def test_lars_32k_against_recipes_md():
    c = _recipe('lars-32k.yaml', workers=1024)
    assert c.batch.global_ == 32768 and c.optimizer.name == 'lars'
    assert c.optimizer.lars.trust == 0.001 and c.optimizer.weight_decay == 5e-4
    assert c.schedule.lr == 'poly' and c.schedule.power == 2 and c.schedule.warmup_epochs > 0


def test_fujitsu_81k_against_recipes_md():
    c = _recipe('fujitsu-81k.yaml', workers=2048)
    assert (c.batch.global_, c.batch.per_worker) == (81920, 40)
    assert c.optimizer.name == 'lars' and c.optimizer.label_smoothing > 0
    assert c.train.dtype == 'mixed16' and c.train.device == 'gpu'
    assert c.schedule.warmup_epochs > 0


def test_sony_batch_control_grows():
    c = _recipe('sony-batch-control.yaml', workers=1024)
    sizes = [b for _, b in c.batch.schedule]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1] and sizes[0] == c.batch.global_
    assert c.optimizer.name == 'lars' and c.train.dtype == 'mixed16'


@pytest.mark.parametrize('name', ['goyal-8k.yaml', 'lars-32k.yaml', 'fujitsu-81k.yaml',
                                  'sony-batch-control.yaml'])
def test_every_constant_is_sourced(name):
    """Config style: each constant line says where it comes from."""
    with open(os.path.join(ROOT, 'configs', name)) as f:
        text = f.read()
    assert '[paper]' in text
    for line in text.splitlines():
        s = line.split('#')[0].strip()
        if s.endswith(':') or not s or s.startswith(('name:', 'out:', 'seed:', 'root:',
                                                      'eval_every', 'progress_every',
                                                      'every_iterations:', 'keep:',
                                                      'loader_workers', 'dataset:',
                                                      'crop_size', 'val_resize', 'epochs:',
                                                      'device:', 'global:', 'decay:')):
            continue
        assert '[' in line.split('#', 1)[-1] if '#' in line else False, line


SMALL = sorted(glob.glob(os.path.join(ROOT, 'configs', 'small', '*.yaml')))


def test_every_recipe_has_a_small_variant():
    names = {os.path.basename(p) for p in SMALL}
    assert {'goyal.yaml', 'lars.yaml', 'fujitsu.yaml', 'sony.yaml'} <= names


@pytest.mark.parametrize('path', SMALL, ids=os.path.basename)
def test_small_variants_load_for_two_cpu_ranks(path):
    c = config_module.load(path, workers=2)
    assert c.data.dataset == 'digits' and c.train.device == 'cpu'


class _Opt(object):
    lr = None


class _Updater(object):
    def __init__(self):
        self.iteration, self.microbatches, self.opt = 0, 1, _Opt()

    def get_optimizer(self, name):
        return self.opt


class _Trainer(object):
    def __init__(self):
        self.updater, self.observation = _Updater(), {}


def test_schedule_driver_sets_microbatches_and_lr_from_the_current_batch():
    from pfn15.training.recipe import ScheduleDriver
    cfg = config_module.load(None, ['data.dataset=digits', 'batch.per_worker=16',
                                    'batch.global=64', 'batch.schedule=[[0,64],[0.5,128]]',
                                    'schedule.lr=constant', 'schedule.lr_per_256=0.1',
                                    'optimizer.name=momentum_sgd'], workers=2)
    # train_size 256: two updates of 64 reach epoch 0.5, then 128 per update
    driver = ScheduleDriver(cfg, BatchPlan.from_config(cfg, 256, workers=2))
    t = _Trainer()
    driver.initialize(t)
    seen = []
    for it in range(1, 5):
        seen.append((t.updater.microbatches, t.updater.opt.lr))
        t.updater.iteration = it          # the update ran
        driver(t)
        assert t.observation['global_batch'] == seen[-1][0] * 32
    # k = batch / (16 per worker x 2 workers); lr = 0.1 x batch / 256
    assert seen == [(2, pytest.approx(0.025)), (2, pytest.approx(0.025)),
                    (4, pytest.approx(0.05)), (4, pytest.approx(0.05))]


def test_schedule_driver_poly_uses_the_run_length():
    from pfn15.training.recipe import ScheduleDriver
    cfg = config_module.load(None, ['data.dataset=digits', 'batch.per_worker=16',
                                    'batch.global=32', 'schedule.lr=poly', 'schedule.power=2',
                                    'schedule.lr_per_256=0.8', 'train.epochs=4',
                                    'optimizer.name=lars'], workers=2)
    # 2 iterations per epoch
    driver = ScheduleDriver(cfg, BatchPlan.from_config(cfg, 64, workers=2))
    t = _Trainer()
    t.updater.iteration = 4                # epoch 2 of 4: 0.1 x (1 - 1/2)^2
    driver.initialize(t)
    assert t.updater.opt.lr == pytest.approx(0.1 * 0.25)
    assert t.updater.microbatches == 1     # untouched without a batch schedule
