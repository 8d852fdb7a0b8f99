"""The one config object: a YAML file plus dotted `key=value` overrides, validated.

Every part of pfn15 takes the `Config` (or one of its sections) built here; no
other module reads YAML. Validation happens before any heavy work (no Chainer
import here) and every problem raises `ConfigError` naming the dotted key, so
`train.py` can print one readable line from rank 0 and exit with status 2.

Strings may hold `${VAR}` (or `${VAR:-default}`) environment references, so a
config can take its data path from the job's environment.

Every key, with its default, choices and bounds, is a field below; `python -m
pfn15.train --show-config CONFIG [key=value ...]` prints a resolved config.
"""
import dataclasses
import difflib
import os
import re
import typing
from dataclasses import dataclass, field
from typing import List

import yaml

from pfn15 import errors
from pfn15 import optimizers as _optimizers   # the registry only; no Chainer
from pfn15.data import order                  # the batch arithmetic; no Chainer



class ConfigError(errors.UserError, ValueError):
    """A config problem, with the dotted key it concerns (exit 2)."""

    def __init__(self, key, message):
        self.key = key
        self.detail = message
        super().__init__('config: %s: %s' % (key, message) if key else 'config: ' + message)


def _choices(*names):
    return {'choices': names}


# Each field's rule when a run resumes from a checkpoint (pfn15/training/resume.py),
# in its metadata as 'resume' beside its choices and bounds:
#   free   never blocks: where the run writes, how it reports, decodes or talks, when
#          it checkpoints -- not what it computes
#   same   changes the trajectory: a change refuses to resume unless
#          resume.allow_changed names the key
#   fixed  cannot change within a run, override or not: an iteration count means
#          samples under that batch plan, and the arrays have that model's shapes
RESUME_RULES = ('free', 'same', 'fixed')


def _free(meta=None):
    return dict(meta or {}, resume='free')


def _same(meta=None):
    return dict(meta or {}, resume='same')


def _fixed(meta=None):
    return dict(meta or {}, resume='fixed')


@dataclass
class ModelConfig:
    arch: str = field(default='resnet50', metadata=_fixed(_choices('resnet50', 'resnet_small')))
    # resnet_small: the 32x32-input ResNet (3x3 stem, three stages) built from
    # the same bottleneck blocks as ResNet-50.
    blocks_per_stage: int = field(default=2, metadata=_fixed({'min': 1}))
    width: int = field(default=16, metadata=_fixed({'min': 1}))
    # Goyal et al.: gamma of each residual block's last BN starts at 0 [paper].
    zero_init_last_bn_gamma: bool = field(default=True, metadata=_same())
    # On CPU: 'onednn' runs pfn15/functions/onednn (oneDNN's convolutions, BN+ReLU,
    # pooling; docs/onednn.md), falling back to 'pfn15' where oneDNN does not load;
    # 'pfn15' runs pfn15/functions (channels-last convolution as matrix products,
    # fused BN+ReLU); 'chainer' keeps Chainer's own functions, for comparison. GPU
    # always uses Chainer's (cuDNN).
    cpu_functions: str = field(default='onednn',
                               metadata=_free(_choices('onednn', 'pfn15', 'chainer')))


@dataclass
class DataConfig:
    dataset: str = field(default='imagenet', metadata=_same(_choices('imagenet', 'digits')))
    # imagenet: a directory with train/ and val/ class folders (train/<wnid>/*.JPEG),
    # or, with train_list/val_list, the root the list files' paths are relative to.
    root: str = field(default='', metadata=_free())
    train_list: str = field(default='', metadata=_free())
    val_list: str = field(default='', metadata=_free())
    # ILSVRC2012 as downloaded: train/ class folders and a flat val/, labelled by
    # this file (relative to root unless absolute): Kaggle's LOC_val_solution.csv,
    # "filename wnid" lines, or the devkit's ground truth (with its meta.mat beside
    # it). See pfn15/data/val_labels.py and docs/data.md.
    val_labels: str = field(default='', metadata=_free())
    # imagenet: 'files' (folders or list files), 'packed' (data.root made by
    # python -m pfn15.data pack: shards read by offset), or 'auto' (packed if
    # data.root holds a pack's manifest.json).
    format: str = field(default='auto', metadata=_free(_choices('auto', 'files', 'packed')))
    # Use the first `classes` classes (sorted); 0 = all the data has.
    classes: int = field(default=0, metadata=_same({'min': 0}))
    crop_size: int = field(default=224, metadata=_same({'min': 1}))
    val_resize: int = field(default=256, metadata=_same({'min': 1}))
    # Random-size crop (Goyal et al. / Inception): area fraction and aspect ratio.
    min_area: float = field(default=0.08, metadata=_same({'min': 0.0, 'max': 1.0}))
    min_aspect: float = field(default=3.0 / 4.0, metadata=_same({'min': 0.0}))
    max_aspect: float = field(default=4.0 / 3.0, metadata=_same({'min': 0.0}))
    mean: List[float] = field(default_factory=lambda: [123.675, 116.28, 103.53], metadata=_same())
    std: List[float] = field(default_factory=lambda: [58.395, 57.12, 57.375], metadata=_same())
    # Who decodes: 'pil' (decoding processes, scaled JPEG decode) or 'dali' (NVIDIA
    # DALI: nvJPEG on the GPU with train.device=gpu, its CPU-only mode otherwise),
    # fed the same samples, crop windows and flips; see pfn15/data/dali.py. A
    # trajectory key: the two decode the same windows to slightly different pixels.
    decoder: str = field(default='pil', metadata=_same(_choices('pil', 'dali')))
    # Decoding processes per rank (MultiprocessIterator; with data.decoder=dali,
    # DALI's threads, at least 1); 0 = decode in the main process.
    loader_workers: int = field(default=4, metadata=_free({'min': 0}))
    # A corrupt or unreadable image: 'skip' (counted in the log) or 'error' (stop).
    # A file that does not exist is never skipped: missing data stops the job (exit 2).
    bad_images: str = field(default='skip', metadata=_free(_choices('skip', 'error')))
    # More skipped images than this fraction of the training images seen is a data
    # error (exit 2), judged once 10 / max_bad_fraction images or an epoch are seen;
    # 0 = no limit.
    max_bad_fraction: float = field(default=0.001, metadata=_free({'min': 0.0, 'max': 1.0}))
    # digits only: fraction held out for validation, and upscaling of the 8x8 images.
    val_fraction: float = field(default=0.2, metadata=_same({'min': 0.0, 'max': 0.9}))
    image_size: int = field(default=8, metadata=_same({'min': 8}))

    @property
    def decodes_files(self):
        """Whether samples are image files to decode (ImageNet: folders, list files or a
        pack) rather than arrays held in memory (the digits)."""
        return self.dataset == 'imagenet'


@dataclass
class BatchConfig:
    # The global batch (all workers, all microbatches of one update), and the
    # microbatch each worker normalizes BN over. With fewer workers than
    # global / per_worker, each worker accumulates gradients over microbatches.
    global_: int = field(default=256, metadata=_fixed({'min': 1, 'name': 'global'}))
    per_worker: int = field(default=32, metadata=_same({'min': 1}))
    # Batch-size control (Mikami et al.): [[epoch, global_batch], ...], epochs
    # increasing from 0; from each epoch on, updates use that global batch
    # (more microbatches per worker). Empty: batch.global throughout. The
    # first entry must be [0, batch.global]. The learning rate follows the
    # current batch (lr_per_256 x batch / 256).
    schedule: List[List[float]] = field(default_factory=list, metadata=_fixed())


@dataclass
class _OptimizerShared:
    # One of the registered optimizers (pfn15/optimizers/__init__.py); its own
    # keys are in the section of its name, optimizer.<name>.*.
    name: str = field(default='rmsprop_warmup', metadata=_same(_choices(*_optimizers.names())))
    momentum: float = field(default=0.9, metadata=_same({'min': 0.0, 'max': 1.0}))  # mu1
    weight_decay: float = field(default=1e-4, metadata=_same({'min': 0.0}))
    # Apply weight decay to BN gamma/beta and biases too (Goyal et al. do).
    decay_bn_and_bias: bool = field(default=True, metadata=_same())
    label_smoothing: float = field(default=0.0, metadata=_same({'min': 0.0, 'max': 1.0}))


# optimizer.*: the shared keys above, then one section per registered optimizer
# (optimizer.rmsprop_warmup.eps, optimizer.lars.trust, ...).
OptimizerConfig = dataclasses.make_dataclass(
    'OptimizerConfig',
    [(e.name, e.section, field(default_factory=e.section)) for e in _optimizers.REGISTRY],
    bases=(_OptimizerShared,))
OptimizerConfig.__module__ = __name__


@dataclass
class ScheduleConfig:
    lr: str = field(default='slow_start',
                    metadata=_same(_choices('slow_start', 'step', 'constant', 'poly')))
    # base learning rate = lr_per_256 x global batch / 256 (linear scaling rule).
    lr_per_256: float = field(default=0.1, metadata=_same({'min': 0.0}))
    # slow_start / step: rate = base x factors[i] between boundaries (epochs).
    boundaries: List[float] = field(default_factory=lambda: [40.0, 70.0, 85.0], metadata=_same())
    factors: List[float] = field(default_factory=lambda: [0.5, 0.075, 0.01, 0.001],
                                 metadata=_same())
    # poly: rate = base x (1 - epoch / train.epochs)^power (You et al.: power 2).
    power: float = field(default=2.0, metadata=_same({'min': 0.0}))
    # Linear warm-up from warmup_start_lr to the scheduled rate (Goyal et al.).
    warmup_epochs: float = field(default=0.0, metadata=_same({'min': 0.0}))
    warmup_start_lr: float = field(default=0.1, metadata=_same({'min': 0.0}))
    # RMSprop -> SGD mixing weight alpha_sgd(epoch): center and period (epochs).
    alpha_center: float = field(default=10.0, metadata=_same())
    alpha_period: float = field(default=5.0, metadata=_same({'min': 1e-9}))


@dataclass
class BNConfig:
    # False: the paper's BN without moving averages -- evaluation uses the last
    # training minibatch's statistics, all-reduced over workers. True: classic
    # moving averages (per worker, decay below), for the ablation.
    moving_average: bool = field(default=False, metadata=_same())
    decay: float = field(default=0.9, metadata=_same({'min': 0.0, 'max': 1.0}))


@dataclass
class CommConfig:
    # auto: 'naive' on CPU, 'pure_nccl' on GPU.
    name: str = field(default='auto', metadata=_free(_choices(
        'auto', 'naive', 'flat', 'hierarchical', 'two_dimensional', 'single_node', 'pure_nccl')))
    # All-reduce gradients in float16 to halve communication (Akiba et al. [paper]).
    allreduce_fp16: bool = field(default=False, metadata=_same())
    # canonical: every sum over the global batch's BN groups (gradients, BN
    # statistics, metrics) in one fixed tree, so any worker count computes the
    # same bits (pfn15/reduction.py, docs/reduction.md); fast: ChainerMN's own
    # all-reduce (its order, hence the last bits, move with the worker count).
    reduction: str = field(default='canonical', metadata=_free(_choices('canonical', 'fast')))


@dataclass
class TrainConfig:
    epochs: float = field(default=90.0, metadata=_same({'min': 0.0}))
    iterations: int = field(default=0, metadata=_same({'min': 0}))  # > 0: stop here instead
    # Evaluate every this many global epochs (and at the end); 0 = only at the end.
    eval_every_epochs: float = field(default=1.0, metadata=_free({'min': 0.0}))
    # Iterations between progress-bar updates (or plain progress lines in a job log).
    progress_every: int = field(default=10, metadata=_free({'min': 1}))
    device: str = field(default='cpu', metadata=_free(_choices('cpu', 'gpu')))
    # mixed16: float16 with float32 master weights on GPU; on CPU bfloat16 convolutions
    # and BN through oneDNN (model.cpu_functions=onednn; docs/onednn.md), float32
    # master weights and loss.
    dtype: str = field(default='float32', metadata=_same(_choices('float32', 'mixed16')))
    progress_bar: bool = field(default=True, metadata=_free())
    # Stop on a non-finite loss or gradient (the last good checkpoint is kept).
    check_finite: bool = field(default=True, metadata=_free())
    # CPU: glibc malloc keeps freed activations for the next step instead of
    # returning them to the OS (pfn15/cpu.py; ~20% faster ResNet-50 steps).
    keep_freed_memory: bool = field(default=True, metadata=_free())
    # CPU: threads per rank (BLAS's, or with pfn15's CPU functions pfn15's, which
    # split the products, BLAS on one each); 0 = OMP_NUM_THREADS if set, else the
    # node's cores / its ranks (pfn15/cpu.py).
    cpu_threads: int = field(default=0, metadata=_free({'min': 0}))
    # GPU: stop (exit 2) instead of warning when cuDNN is off and convolutions
    # would run as im2col + GEMM (pfn15/env.py check_cudnn; `python -m pfn15.env`).
    require_cudnn: bool = field(default=False, metadata=_free())
    # Seconds without progress on any rank (no microbatch, all-reduce, evaluation
    # batch or checkpoint step) before the watchdog names the stuck rank(s) and
    # aborts the job (exit 4). Start-up, the first iterations, the first
    # evaluation and the first checkpoint get up to 3x this, at most 45 s more
    # (so any stall ends the job within stall_timeout + 60 s). Sized for a ResNet-50
    # microbatch or evaluation batch on a slow node, with room to spare.
    stall_timeout: float = field(default=300.0, metadata=_free({'min': 1.0}))


@dataclass
class CheckpointConfig:
    # Write one every this many iterations, and at the end; 0 = only at the end.
    every_iterations: int = field(default=1000, metadata=_free({'min': 0}))
    keep: int = field(default=3, metadata=_free({'min': 1}))


@dataclass
class ResumeConfig:
    # 'auto': continue from the newest readable checkpoint in out/checkpoints (on
    # any number of workers), else start fresh; 'none': start fresh, and refuse
    # an `out` that already holds checkpoints. `resume: auto` (a plain string)
    # is shorthand for `resume: {mode: auto}`.
    mode: str = field(default='auto', metadata=_free(_choices('auto', 'none')))
    # Trajectory-changing keys allowed to differ from the checkpoint's config,
    # e.g. [train.epochs] to train longer; `resume.allow_changed=a,b` on the
    # command line. Others differing stop the run (exit 2, one line naming them).
    allow_changed: List[str] = field(default_factory=list, metadata=_free())


@dataclass
class Config:
    name: str = field(default='run', metadata=_free())
    out: str = field(default='results/run', metadata=_free())
    seed: int = field(default=0, metadata=_same())
    resume: ResumeConfig = field(default_factory=ResumeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    bn: BNConfig = field(default_factory=BNConfig)
    comm: CommConfig = field(default_factory=CommConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    # The batch arithmetic derived from it (microbatches, base learning rate,
    # epochs) is pfn15.data.order.BatchPlan.from_config(cfg, train_size, workers).

    def to_dict(self):
        return _to_dict(self)


# ---------------------------------------------------------------- loading

def _yaml_name(f):
    return f.metadata.get('name', f.name)


def _to_dict(obj):
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        out[_yaml_name(f)] = _to_dict(v) if dataclasses.is_dataclass(v) else v
    return out


_ENV = re.compile(r'\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}')


def _expand_env(key, s):
    def sub(m):
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(key, 'environment variable %s is not set (the value is %r); '
                               'export it or override %s=...' % (name, s, key))
    return _ENV.sub(sub, s)


def _type_name(t):
    return getattr(t, '__name__', str(t))


def _coerce(key, value, tp, meta):
    """Check `value` against the field type `tp`; return the converted value."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:   # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, args[0], meta)
    if origin in (list, List):
        (item_tp,) = typing.get_args(tp)
        if item_tp is str and isinstance(value, str):   # a,b,c on the command line
            value = [v.strip() for v in value.split(',') if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, 'expected a list of %s, got %r' % (_type_name(item_tp), value))
        return [_coerce('%s[%d]' % (key, i), v, item_tp, {}) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, 'expected true or false, got %r' % (value,))
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(key, 'expected an integer, got %r' % (value,))
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, 'expected a number, got %r' % (value,))
        value = float(value)
        if value != value or value in (float('inf'), float('-inf')):
            raise ConfigError(key, 'expected a finite number, got %r' % (value,))
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, 'expected a string, got %r' % (value,))
        value = _expand_env(key, value)
        if 'choices' in meta and value not in meta['choices']:
            raise ConfigError(key, '%r is not one of: %s%s' % (
                value, ', '.join(meta['choices']), errors.did_you_mean(value, meta['choices'])))
        return value
    if 'min' in meta and value < meta['min']:
        raise ConfigError(key, 'must be >= %s, got %r' % (meta['min'], value))
    if 'max' in meta and value > meta['max']:
        raise ConfigError(key, 'must be <= %s, got %r' % (meta['max'], value))
    return value


# Sections a plain value may stand for: `resume: auto` means `resume: {mode: auto}`.
_SHORTHAND = {'resume': 'mode'}


def _build(cls, data, prefix):
    if not isinstance(data, dict):
        raise ConfigError(prefix.rstrip('.') or '<top>',
                          'expected a mapping of keys, got %r' % (data,))
    fields = {_yaml_name(f): f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for k in data:
        if prefix + str(k) in RENAMED:
            raise ConfigError(prefix + str(k), renamed_message(prefix + str(k)))
        if k not in fields:
            near = _near_keys(cls, str(k), data[k])
            hint = ' (did you mean %s?)' % ' or '.join(prefix + n for n in near) if near else ''
            raise ConfigError(prefix + str(k), 'unknown key%s; known keys here: %s'
                              % (hint, ', '.join(fields)))
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        tp = hints[f.name]
        key = prefix + name
        if dataclasses.is_dataclass(tp):
            value = data[name]
            if key in _SHORTHAND and not isinstance(value, dict):
                value = {_SHORTHAND[key]: value}
            kwargs[f.name] = _build(tp, value, key + '.')
        else:
            kwargs[f.name] = _coerce(key, data[name], tp, f.metadata)
    return cls(**kwargs)


def _near_keys(cls, key, value):
    """The keys of `cls` a typo `key` may stand for (at most 3); for a section, the
    path completed with its one key below: `trian: {epochs: 3}` -> ['train.epochs']."""
    fields = {_yaml_name(f): f for f in dataclasses.fields(cls)}
    near = difflib.get_close_matches(key, list(fields), n=3, cutoff=0.6)
    near += [n for n in fields if n.startswith(key[:3]) and n not in near]
    hints = typing.get_type_hints(cls)
    out = []
    for name in near[:3]:
        tp = hints[fields[name].name]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict) and len(value) == 1:
            (sub, subvalue), = value.items()
            sub_fields = [_yaml_name(f) for f in dataclasses.fields(tp)]
            if sub in sub_fields:
                name += '.' + sub
            else:
                inner = _near_keys(tp, str(sub), subvalue)
                name += '.' + inner[0] if inner else ''
        out.append(name)
    return out


def _set_dotted(tree, key, value):
    parts = key.split('.')
    if key in _SHORTHAND and not isinstance(value, dict):
        parts = [key, _SHORTHAND[key]]       # resume=auto sets resume.mode
    node = tree
    for i, p in enumerate(parts[:-1]):
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        elif i == 0 and p in _SHORTHAND and not isinstance(child, dict):
            child = node[p] = {_SHORTHAND[p]: child}
        elif not isinstance(child, dict):
            raise ConfigError('.'.join(parts[:i + 1]), 'is a value, not a section')
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides):
    """['a.b=1', ...] -> [('a.b', 1), ...]; values are parsed as YAML scalars/lists."""
    out = []
    for item in overrides:
        if '=' not in item:
            raise ConfigError(item, 'an override must look like key=value (e.g. train.epochs=3)')
        key, raw = item.split('=', 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else ''
        except yaml.YAMLError:
            value = raw
        out.append((key, value))
    return out


def load(path=None, overrides=(), workers=None, check_paths=True):
    """Read the YAML file at `path` (optional), apply overrides, validate.

    `workers` (the MPI world size) lets the batch arithmetic be checked before
    the communicator exists. Raises ConfigError.
    """
    tree = {}
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError('', 'config file %s does not exist' % path)
        try:
            with open(path) as f:
                tree = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError('', 'cannot parse %s as YAML: %s' % (path, e))
    renamed = _move_old_keys(tree)
    moved = moved_keys()
    for key, value in parse_overrides(overrides):
        if key in moved:   # an old name on the command line: it wins like any override
            renamed[moved[key]] = key
            key = moved[key]
        _set_dotted(tree, key, value)
    try:
        cfg = _build(Config, tree, '')
    except ConfigError as e:   # name the key as the user wrote it
        if e.key in renamed:
            raise ConfigError(renamed[e.key], '%s (%s is now %s)'
                              % (e.detail, renamed[e.key], e.key)) from None
        raise
    cfg.resume.allow_changed = [moved.get(k, k) for k in cfg.resume.allow_changed]
    validate(cfg, workers=workers, check_paths=check_paths)
    return cfg


# Keys renamed to say what they count. Unlike moved_keys, an old name in a YAML
# file or an override is refused with its new one (its meaning did not move with
# it); a checkpoint's stored config still reads under the new names (stored_key).
RENAMED = {
    'train.log_every': ('train.progress_every', 'iterations between progress updates'),
    'train.eval_every': ('train.eval_every_epochs', 'global epochs between evaluations'),
    'checkpoint.every': ('checkpoint.every_iterations', 'iterations between checkpoints'),
}


def renamed_message(old):
    new, what = RENAMED[old]
    return 'was renamed %s (%s)' % (new, what)


def stored_key(key):
    """The name now of dotted `key` as a config stored by an older pfn15 (a
    checkpoint's record) may spell it: old optimizer keys and renamed keys."""
    if key in RENAMED:
        return RENAMED[key][0]
    return moved_keys().get(key, key)


def moved_keys():
    """{old dotted key: its key now}: optimizer keys from before the per-optimizer
    sections (optimizer.lars_trust -> optimizer.lars.trust), still accepted."""
    return {'optimizer.%s' % old: 'optimizer.%s.%s' % (e.name, new)
            for e in _optimizers.REGISTRY for old, new in e.moved.items()}


def _move_old_keys(tree):
    """Move old-style optimizer keys in the raw `tree` to their sections; return
    {new dotted key: old dotted key} for the ones moved."""
    section = tree.get('optimizer')
    renamed = {}
    if not isinstance(section, dict):
        return renamed
    for old, new in moved_keys().items():
        leaf = old.split('.', 1)[1]
        if leaf not in section:
            continue
        value = section.pop(leaf)
        name, new_leaf = new.split('.')[1:]
        target = section.setdefault(name, {})
        if not isinstance(target, dict):
            raise ConfigError('optimizer.' + name, 'expected a mapping of keys, got %r' % (target,))
        if new_leaf in target and target[new_leaf] != value:
            raise ConfigError(old, 'is the old name of %s, and both are set (%r and %r); '
                                   'keep %s' % (new, value, target[new_leaf], new))
        target[new_leaf] = value
        renamed[new] = old
    return renamed


def dotted_keys(cfg):
    """{'train.epochs': 8.0, ...}: every leaf of the config by its dotted name."""
    flat = {}

    def walk(prefix, d):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(prefix + k + '.', v)
            else:
                flat[prefix + k] = v
    walk('', cfg.to_dict() if not isinstance(cfg, dict) else cfg)
    return flat


def resume_rules(cls=None, prefix=''):
    """{dotted key: its resume rule (RESUME_RULES), or None if it has none} of
    every leaf field of the config (sections included)."""
    rules = {}
    cls = Config if cls is None else cls
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + _yaml_name(f)
        if dataclasses.is_dataclass(hints[f.name]):
            rules.update(resume_rules(hints[f.name], key + '.'))
        else:
            rules[key] = f.metadata.get('resume')
    return rules


# What resume.allow_changed may name besides the config's own keys: the
# training data itself (its listing's fingerprint, see pfn15.data).
DATASET_KEY = 'dataset'


def validate(cfg, workers=None, check_paths=True):
    """Checks that span several keys, or the world outside the config."""
    known = dotted_keys(cfg)
    for key in cfg.resume.allow_changed:
        if key in RENAMED:
            raise ConfigError('resume.allow_changed', '%s %s' % (key, renamed_message(key)))
        if key != DATASET_KEY and key not in known:
            raise ConfigError('resume.allow_changed', '%r is not a config key (e.g. '
                              'train.epochs, or %s for the training data)' % (key, DATASET_KEY))
    b = cfg.batch
    if order.whole_microbatches(b.global_, b.per_worker) is None:
        raise ConfigError('batch.global', 'global batch %d is not a multiple of '
                          'batch.per_worker=%d' % (b.global_, b.per_worker))
    if workers is not None and order.whole_microbatches(b.global_, b.per_worker, workers) is None:
        raise ConfigError('batch.global', 'global batch %d does not divide into %d workers '
                          'x batch.per_worker=%d x whole microbatches'
                          % (b.global_, workers, b.per_worker))
    _validate_batch_schedule(b, workers)
    s = cfg.schedule
    if s.lr in ('slow_start', 'step'):
        if len(s.factors) != len(s.boundaries) + 1:
            raise ConfigError('schedule.factors', 'needs one more entry (%d) than '
                              'schedule.boundaries has (%d)'
                              % (len(s.boundaries) + 1, len(s.boundaries)))
        if list(s.boundaries) != sorted(s.boundaries):
            raise ConfigError('schedule.boundaries', 'must be increasing, got %r' % s.boundaries)
    d = cfg.data
    if len(d.mean) != len(d.std):
        raise ConfigError('data.std', 'needs as many entries as data.mean')
    if any(v <= 0 for v in d.std):
        raise ConfigError('data.std', 'entries must be > 0')
    if d.min_aspect > d.max_aspect:
        raise ConfigError('data.min_aspect', 'must be <= data.max_aspect')
    if d.decoder == 'dali':
        if not d.decodes_files:
            raise ConfigError('data.decoder', 'dali decodes JPEGs; data.dataset=%s has none '
                              '(use data.decoder=pil)' % d.dataset)
        import importlib.util
        if importlib.util.find_spec('nvidia') is None or \
                importlib.util.find_spec('nvidia.dali') is None:
            raise ConfigError('data.decoder', 'dali needs NVIDIA DALI, not installed here: '
                              "pip install -e '.[dali]' (CUDA 12) or '.[dali-cuda13]'")
    if d.decodes_files and check_paths:
        if not d.root:
            raise ConfigError('data.root', 'is empty; point it at the ImageNet directory '
                              '(or set the environment variable the config names)')
        if not os.path.isdir(d.root):
            raise ConfigError('data.root', 'directory %s does not exist' % d.root)
        packed = os.path.isfile(os.path.join(d.root, 'manifest.json'))
        if d.format == 'packed' and not packed:
            raise ConfigError('data.format', 'packed, but %s has no manifest.json (make the '
                              'pack with python -m pfn15.data pack SRC %s)' % (d.root, d.root))
        if packed and d.format != 'files':
            return   # a pack: pfn15.data.packed checks its index and shards
        for key in ('train_list', 'val_list', 'val_labels'):
            p = getattr(d, key)
            if p and not os.path.isfile(_under(d.root, p)):
                raise ConfigError('data.' + key, '%s %s does not exist'
                                  % ('label file' if key == 'val_labels' else 'list file',
                                     _under(d.root, p)))
        if not d.train_list:
            for sub in ('train', 'val'):
                if not os.path.isdir(os.path.join(d.root, sub)):
                    raise ConfigError('data.root', '%s has no %s/ folder (expected %s/<class>/'
                                      '*.JPEG, or set data.train_list and data.val_list)'
                                      % (d.root, sub, sub))


def _validate_batch_schedule(b, workers):
    if not b.schedule:
        return
    last = None
    for i, pair in enumerate(b.schedule):
        key = 'batch.schedule[%d]' % i
        if len(pair) != 2:
            raise ConfigError(key, 'expected [epoch, global_batch], got %r' % (pair,))
        epoch, size = pair
        if epoch < 0 or (last is not None and epoch <= last):
            raise ConfigError(key, 'epochs must start at 0 and increase, got %r' % (epoch,))
        if i == 0 and epoch != 0:
            raise ConfigError(key, 'the first entry must start at epoch 0, got %r' % (epoch,))
        if size < 1 or size != int(size):
            raise ConfigError(key, 'the global batch must be a whole number >= 1, got %r'
                              % (size,))
        if order.whole_microbatches(size, b.per_worker, workers or 1) is None:
            raise ConfigError(key, 'global batch %d is not a multiple of %sbatch.per_worker=%d'
                              % (size, '%d workers x ' % workers if workers else '',
                                 b.per_worker))
        last = epoch
    if int(b.schedule[0][1]) != b.global_:
        raise ConfigError('batch.global', 'must equal the first batch.schedule size (%d), the '
                          'batch the run starts with; got %d' % (b.schedule[0][1], b.global_))


def _under(root, p):
    return p if os.path.isabs(p) else os.path.join(root, p)


def list_path(cfg, key):
    """Absolute path of data.train_list / data.val_list ('' if unset)."""
    p = getattr(cfg.data, key)
    return _under(cfg.data.root, p) if p else ''


def check_output_dir(out):
    """Create `out` and prove it is writable, or raise ConfigError('out', ...)."""
    if os.path.isfile(out):
        raise ConfigError('out', '%s is a file, not a directory: set out= to a directory '
                                 '(a new one, or the run to resume)' % out)
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, '.write-test-%d' % os.getpid())
        with open(probe, 'w') as f:
            f.write('ok')
        os.remove(probe)
    except OSError as e:
        raise ConfigError('out', 'output directory %s is not writable: %s' % (out, e.strerror or e))
