"""`resume`: continue a run on any number of workers, and refuse to mix runs.

`start(cfg, comm, run)` is called by every rank after `build`. Rank 0 looks at
OUT/checkpoints and decides; every rank hears the verdict:

* resume.mode=none and checkpoints present: refuse (exit 2) -- a fresh run
  never deletes or continues another run's checkpoints.
* resume.mode=auto, no checkpoint: start fresh.
* a checkpoint that is damaged or foreign (pfn15.training.checkpoint.read
  and validate: not a zip, truncated, pickled objects, missing keys, wrong
  shapes or dtypes for this model and optimizer, non-finite values, a
  malformed identity) is named by rank 0 and passed over for the next older
  one; if none is usable: refuse (exit 2) with what was tried, never a fresh
  start over them.
* the newest usable checkpoint was written under a config whose
  trajectory-changing keys differ from this one, or on other data: refuse
  (exit 2) with one line naming each key and both values, and the
  `resume.allow_changed=...` that would accept the changes that can be
  accepted. Keys whose rule (config.py, each field's metadata) is 'free'
  never block; 'fixed' ones no override accepts.
* the run is already finished (the checkpoint's iteration reaches this
  config's last iteration) and its summary.json exists: say so (exit 0) and
  leave everything alone.
* otherwise rank 0 broadcasts the checkpoint's arrays and every rank loads
  them: the run continues exactly where it stopped, on any worker count whose
  per-worker batch and microbatches divide the global batch.

The comparison itself (`differences`, `refusal`) is pure and unit-tested.
"""
import os

from pfn15 import config as config_module
from pfn15 import errors
from pfn15.training import checkpoint

# Each config key's rule lives in its field's metadata (pfn15/config.py): 'free'
# keys never block, 'same' keys block unless resume.allow_changed names them,
# 'fixed' keys cannot change within a run.
_RULES = config_module.resume_rules()
NOT_TRAJECTORY = tuple(sorted(k for k, r in _RULES.items() if r == 'free'))
# The data's own: its class count gives the arrays' shapes, its size what an
# iteration's samples mean.
DATASET_FIXED = ('dataset.classes', 'dataset.train_size')
CANNOT_CHANGE = tuple(sorted(k for k, r in _RULES.items() if r == 'fixed')) + DATASET_FIXED


class Refused(errors.UserError):
    """Resuming here would mix runs: exit 2 with this one line."""


class Finished(errors.Stop):
    """The run in `out` is complete: exit 0 with this one line."""


def dataset_identity(meta):
    return {'fingerprint': meta['fingerprint'], 'train_size': meta['train_size'],
            'val_size': meta['val_size'], 'classes': meta['classes']}


def identity(cfg, meta):
    """What a checkpoint records about the run that wrote it."""
    return {'config': cfg.to_dict(), 'dataset': dataset_identity(meta)}


def differences(saved, current):
    """[(key, saved value, current value)] of trajectory-changing differences.

    A key the saved config lacks (written by an older pfn15) counts as the
    current default, so adding a config key does not orphan old checkpoints.
    """
    defaults = config_module.dotted_keys(config_module.Config())
    # A checkpoint of an older pfn15 may spell keys by their old names.
    old = {config_module.stored_key(k): v
           for k, v in config_module.dotted_keys(saved['config']).items()}
    new = config_module.dotted_keys(current['config'])
    out = []
    for key in sorted(set(old) | set(new)):
        if _RULES.get(key) == 'free':   # a key gone from the config still compares
            continue
        a = old.get(key, defaults.get(key))
        b = new.get(key, defaults.get(key))
        if _normal(a) != _normal(b):
            out.append((key, a, b))
    da, db = saved['dataset'], current['dataset']
    for key in ('classes', 'train_size'):   # shapes, and what an iteration's samples mean
        if da[key] != db[key]:
            out.append(('dataset.' + key, da[key], db[key]))
    if da['fingerprint'] != db['fingerprint']:
        out.append((config_module.DATASET_KEY, _describe(da), _describe(db)))
    return out


def _normal(v):
    # 8 and 8.0 are the same epochs; [[0, 128]] and [[0.0, 128]] the same schedule.
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [_normal(x) for x in v]
    return v


def _describe(d):
    return '%d train / %d val images, %d classes, sha256 %s' % (
        d['train_size'], d['val_size'], d['classes'], d['fingerprint'][:12])


def refusal(diffs, allowed, where):
    """The one line for the differences not in `allowed`, or None if all are allowed."""
    blocking = [d for d in diffs if d[0] not in allowed or d[0] in CANNOT_CHANGE]
    if not blocking:
        return None
    listed = '; '.join('%s: %s (checkpoint) -> %s (now)' % (k, _show(a), _show(b))
                       for k, a, b in blocking)
    fixed = [k for k, _, _ in blocking if k in CANNOT_CHANGE]
    allowable = [k for k, _, _ in blocking if k not in CANNOT_CHANGE]
    override = 'resume.allow_changed=%s' % ','.join(list(allowed) + allowable)
    if fixed:
        advice = ('%s cannot change within a run: use another out (or the run\'s own value%s)'
                  % (', '.join(fixed), 's' if len(fixed) > 1 else ''))
        if allowable:
            advice += '; the other changes would need %s' % override
    else:
        advice = 'To continue it on purpose anyway, add %s; or use another out' % override
    return '%s holds a run written under a different config: %s. %s.' % (where, listed, advice)


def _show(v):
    return '%g' % v if isinstance(v, float) else str(v)


# ---------------------------------------------------------------- the collective part

def _find(cfg, current, spec):
    """Rank 0: the decision as (kind, payload); kinds: fresh, refused, load.

    A checkpoint that is damaged or foreign is named and passed over for the
    next older one; when none is usable, refuse (never start fresh over them).
    """
    root = checkpoint.checkpoint_dir(cfg.out)
    files, old = checkpoint.list_checkpoints(root)
    if cfg.resume.mode == 'none':
        if files or old:
            newest = (files or old)[0]
            return 'refused', (
                'out %s already holds checkpoints of a run (newest: iteration %d); resume=none '
                'never continues or deletes them: use another out, continue that run with '
                'resume=auto, or remove %s yourself' % (cfg.out, newest, root))
        return 'fresh', None
    if not files and old:
        return 'refused', (
            '%s holds checkpoints in the per-rank layout of an older pfn15 (iter_%08d/rank_*.npz), '
            'which this version cannot resume; use another out' % (root, old[0]))
    tried = []
    for it in files:
        path = checkpoint.checkpoint_path(root, it)
        try:
            arrays, saved = checkpoint.read(path)
            try:
                diffs = differences(saved, current)
            except (TypeError, ValueError, AttributeError, KeyError) as e:
                raise checkpoint.Unusable('its config record cannot be compared with this '
                                          'config (%s)' % checkpoint._clause(e))
            # Another run's checkpoint is refused by name (its arrays would not
            # fit either); this run's must fit this model before anything loads.
            line = refusal(diffs, cfg.resume.allow_changed,
                           'out %s (checkpoint at iteration %d)' % (cfg.out, it))
            if line:
                return 'refused', line
            checkpoint.validate(arrays, saved, spec, it)
        except checkpoint.Unusable as e:
            why = str(e)
            if isinstance(e, checkpoint.NeedsPickle):
                why += '; if you trust the file, convert it with: %s %s' % (
                    checkpoint.CONVERT, path)
            print('pfn15: warning: checkpoint %s is unreadable on rank 0 on %s (%s); %s'
                  % (path, errors.host(), why,
                     'trying an older one' if it != files[-1] else 'no older one'),
                  flush=True)
            tried.append('%s: %s' % (os.path.basename(path), why))
            continue
        return 'load', (it, arrays)
    if files:
        return 'refused', (
            'no usable checkpoint in %s on %s (tried %s); nothing was changed: start '
            'fresh with another out, or move these files away yourself'
            % (root, errors.host(), '; '.join(tried)))
    return 'fresh', None


def start(cfg, comm, run):
    """Resume `run` (built by pfn15.train.build) if `cfg` says so; return the
    iteration resumed from, or None for a fresh start. Raises Refused / Finished."""
    from chainer import serializers
    from pfn15 import data

    current = run.checkpointer.identity
    decision = (_find(cfg, current, checkpoint.expected(run.trainer))
                if comm.rank == 0 else None)
    kind, detail = comm.mpi_comm.bcast(
        (decision[0], decision[1] if decision[0] != 'load' else decision[1][0])
        if comm.rank == 0 else None, root=0)
    if kind == 'refused':
        raise Refused(detail)
    if kind == 'fresh':
        return None
    iteration = detail
    stop = run.trainer.stop_trigger.iterations
    summary = os.path.join(cfg.out, 'summary.json')
    finished = iteration >= stop and (os.path.exists(summary) if comm.rank == 0 else None)
    if comm.mpi_comm.bcast(finished, root=0):
        raise Finished(
            'the run in %s is finished: its checkpoint is at iteration %d, the last of this '
            'config (%.4g epochs); %s is kept. To train longer, raise train.epochs and add '
            'resume.allow_changed=train.epochs' % (cfg.out, iteration,
                                                     run.plan.epochs_at(iteration), summary))
    arrays = decision[1][1] if comm.rank == 0 else None
    arrays, _ = data.bcast_arrays(comm.mpi_comm, (arrays, None) if comm.rank == 0 else None)
    serializers.NpzDeserializer(arrays, strict=False).load(run.trainer)
    run.checkpointer.last_saved = iteration
    return iteration
