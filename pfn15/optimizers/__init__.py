"""The optimizers of the record recipes: one registry entry each.

An `Entry` is everything the rest of pfn15 knows about an optimizer:

  name         `optimizer.name` in the config
  module       where its Chainer optimizer lives, with `build(opt_cfg, section,
               model, lr)` and `KERNELS` (kernels.KernelCase, the CUDA kernels
               a GPU run of it launches); imported on first use
  section      its own config section, `optimizer.<name>.*` (a dataclass whose
               fields carry choices, bounds and resume rules like config.py's)
  state_slots  optimizer state arrays per parameter, each the parameter's size
               (the checkpoint-size estimate at start-up)
  scheduled    {hyperparameter: f(epoch, cfg)} set every iteration besides `lr`,
               reported to the log and printed as columns
  moved        {old key: key in `section`}: keys of `optimizer.*` from before
               the sections, still accepted

config.py (names, sections), `build` (train.py), startup's size estimate,
bench.py's `--optimizer`, the ScheduleDriver and the printed columns, the
kernel tests (NVRTC, host) and tools/gpu_check.py all read `REGISTRY`, so an
optimizer is its module and one entry here.

Importing this package imports no Chainer: config.py reads the registry
before any heavy work.
"""
import dataclasses
import importlib
import sys
from dataclasses import dataclass, field
from typing import Dict

from pfn15 import schedules


@dataclass(frozen=True)
class Entry:
    name: str
    module: str
    section: type
    state_slots: int
    scheduled: Dict[str, object] = field(default_factory=dict)
    moved: Dict[str, str] = field(default_factory=dict)

    def load(self):
        return importlib.import_module(self.module)

    def build(self, opt_cfg, model, lr):
        """The optimizer set up on `model` from `opt_cfg` (an OptimizerConfig)."""
        return self.load().build(opt_cfg, getattr(opt_cfg, self.name), model, lr)

    def kernels(self):
        """The kernels.KernelCase of every kernel a GPU run of it launches."""
        return tuple(getattr(self.load(), 'KERNELS', ()))

    def columns(self):
        """The hyperparameters the log reports and the table prints."""
        return ('lr',) + tuple(self.scheduled)


REGISTRY = []


def register(entry):
    """Add `entry`. Before pfn15.config is imported: its sections are built from here."""
    if any(e.name == entry.name for e in REGISTRY):
        raise ValueError('optimizer %r is registered already' % entry.name)
    if hasattr(sys.modules.get('pfn15.config'), 'OptimizerConfig'):
        raise RuntimeError('register optimizer %r before importing pfn15.config (the '
                           'config builds optimizer.%s from the registry)'
                           % (entry.name, entry.name))
    if not dataclasses.is_dataclass(entry.section):
        raise TypeError('optimizer %r: section must be a dataclass' % entry.name)
    REGISTRY.append(entry)
    return entry


def names():
    return tuple(e.name for e in REGISTRY)


def entry(name):
    for e in REGISTRY:
        if e.name == name:
            return e
    raise ValueError('unknown optimizer %r (registered: %s)' % (name, ', '.join(names())))


def build(opt_cfg, model, lr):
    """The optimizer `opt_cfg.name` names, set up on `model` with learning rate `lr`."""
    return entry(opt_cfg.name).build(opt_cfg, model, lr)


def is_bn_or_bias(name):
    """True for BN gamma/beta and biases (named by Chainer's links)."""
    leaf = name.rsplit('/', 1)[-1]
    return leaf in ('b', 'gamma', 'beta')


def add_weight_decay(opt, opt_cfg, model):
    """Weight decay as a per-parameter hook, so it composes with every rule and
    can leave BN and bias parameters out (optimizer.decay_bn_and_bias)."""
    from pfn15.optimizers.weight_decay import WeightDecay
    if opt_cfg.weight_decay > 0:
        for name, param in model.namedparams():
            if opt_cfg.decay_bn_and_bias or not is_bn_or_bias(name):
                param.update_rule.add_hook(WeightDecay(opt_cfg.weight_decay))


# ---------------------------------------------------------------- the entries
# Section fields: `resume` is the field's rule when a run resumes (see
# pfn15/config.py): 'same' -- a change refuses unless resume.allow_changed names it.

def _same(**meta):
    return dict(meta, resume='same')


@dataclass
class MomentumSGDSection:
    """momentum_sgd has no keys of its own (optimizer.momentum, weight_decay)."""


@dataclass
class RMSpropWarmupSection:
    # RMSprop warm-up (Akiba et al.): see pfn15/optimizers/rmsprop_warmup.py.
    lr_rmsprop: float = field(default=3e-4, metadata=_same(min=0.0))
    decay: float = field(default=0.99, metadata=_same(min=0.0, max=1.0))   # mu2
    eps: float = field(default=1e-8, metadata=_same(min=0.0))


@dataclass
class LARSSection:
    # LARS (You et al.): local rate = trust x ||w|| / (||g|| + wd x ||w|| + eps),
    # weight decay inside the rule; see pfn15/optimizers/lars.py.
    trust: float = field(default=0.001, metadata=_same(min=0.0))
    eps: float = field(default=0.0, metadata=_same(min=0.0))
    # BN gamma/beta and biases: plain momentum SGD (local rate 1) instead of LARS.
    skip_bn_and_bias: bool = field(default=True, metadata=_same())


def _alpha_sgd(epoch, cfg):
    return schedules.alpha_sgd(epoch, cfg.schedule.alpha_center, cfg.schedule.alpha_period)


register(Entry('rmsprop_warmup', 'pfn15.optimizers.rmsprop_warmup', RMSpropWarmupSection,
               state_slots=2, scheduled={'alpha_sgd': _alpha_sgd},
               moved={'lr_rmsprop': 'lr_rmsprop', 'rmsprop_decay': 'decay', 'eps': 'eps'}))
register(Entry('momentum_sgd', 'pfn15.optimizers.momentum_sgd', MomentumSGDSection,
               state_slots=1))
register(Entry('lars', 'pfn15.optimizers.lars', LARSSection, state_slots=1,
               moved={'lars_trust': 'trust', 'lars_eps': 'eps',
                      'lars_skip_bn_and_bias': 'skip_bn_and_bias'}))


_CLASSES = {'LARS': 'lars', 'LARSRule': 'lars',
            'RMSpropWarmup': 'rmsprop_warmup', 'RMSpropWarmupRule': 'rmsprop_warmup'}


def __getattr__(name):
    # The Chainer classes, imported when first asked for (this package stays light).
    if name in _CLASSES:
        return getattr(importlib.import_module('pfn15.optimizers.' + _CLASSES[name]), name)
    raise AttributeError('module %r has no attribute %r' % (__name__, name))
