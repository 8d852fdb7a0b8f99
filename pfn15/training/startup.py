"""Collective start-up checks: no rank exits alone, no rank waits for one that did.

Each rank reaches its own verdict on what it can see (its config, its paths,
its output directory, its GPU, its free disk space); `agree` all-gathers the
verdicts over MPI_COMM_WORLD, and if any rank found a problem every rank
raises the same errors.UserError (exit 2), whose one line, printed by rank 0,
names the rank(s) and host(s):

    pfn15: error: rank 1 on node7: config: data.root: directory /data/x does not exist

A problem every rank shares (a typo in the config) is printed as it is. A
stop signal caught before training ends the job cleanly with exit 0 at the
same points (an errors.Stop on every rank), so a job script still requeues it.
"""
import os

from pfn15 import config as config_module
from pfn15 import errors, optimizers
from pfn15.training import signals



def _ranks(numbers):
    """[0, 1, 2, 5] -> 'ranks 0-2, 5'."""
    numbers = sorted(numbers)
    parts, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            parts.append(str(start) if start == n else '%d-%d' % (start, n))
            start = None
    return ('rank ' if len(numbers) == 1 else 'ranks ') + ', '.join(parts)


def where(ranks, hosts):
    """'rank 1 on node7', 'ranks 0-3 on node1, node2' (at most 4 hosts named)."""
    names = sorted(set(hosts[r] for r in ranks))
    shown = ', '.join(names[:4]) + (' and %d more hosts' % (len(names) - 4)
                                     if len(names) > 4 else '')
    return '%s on %s' % (_ranks(ranks), shown)


def describe(problems, hosts):
    """{rank: message} -> one line: the message alone if every rank has it, else
    each distinct message (the first three) with the ranks and hosts that have it."""
    by_message = {}
    for r, message in sorted(problems.items()):
        by_message.setdefault(message, []).append(r)
    if len(by_message) == 1 and len(problems) == len(hosts):
        return next(iter(by_message))
    items = sorted(by_message.items(), key=lambda kv: kv[1][0])
    text = '; '.join('%s: %s' % (where(ranks, hosts), message)
                     for message, ranks in items[:3])
    if len(items) > 3:
        text += '; and %d other problems' % (len(items) - 3)
    return text


def agree(world, error, hosts, preempted_message='nothing to save'):
    """All-gather this rank's verdict (None or one line); on any problem raise the
    same errors.UserError on every rank (exit 2), if a stop signal came first an
    errors.Stop (exit 0); else return."""
    verdicts = world.allgather((error, signals.received))
    problems = {r: e for r, (e, _) in enumerate(verdicts) if e}
    if problems:
        raise errors.UserError(describe(problems, hosts))
    stopped = [(r, s) for r, (_, s) in enumerate(verdicts) if s]
    if stopped:
        r, s = stopped[0]
        raise errors.Stop('preempted before training started (%s on %s); %s'
                          % (signals.name(s), where([r], hosts), preempted_message))


# ---------------------------------------------------------------- checks of one rank

def load_config(args):
    """(cfg, None) or (None, one-line error); never exits, so every rank reaches MPI."""
    try:
        return config_module.load(args.config, args.overrides), None
    except config_module.ConfigError as e:
        return None, str(e)


def longest_path(out):
    """The longest path the run writes: a checkpoint's temporary file
    (pfn15.training.checkpoint: OUT/checkpoints/iter_N.npz.tmp-PID)."""
    return os.path.join(out, 'checkpoints', 'iter_%08d.npz.tmp-%d' % (10 ** 9, 4194304))


def _existing_ancestor(path):
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_path_lengths(out):
    """ConfigError('out', ...) if the file system cannot hold the paths the run writes."""
    longest = longest_path(out)
    base = _existing_ancestor(out)
    try:
        name_max = os.pathconf(base, 'PC_NAME_MAX')
        path_max = os.pathconf(base, 'PC_PATH_MAX')
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    for part in longest.split(os.sep):
        if len(part.encode()) > name_max:
            raise config_module.ConfigError(
                'out', 'the name %r has %d characters; this file system allows %d (NAME_MAX)'
                % (part[:40] + '...', len(part.encode()), name_max))
    if len(longest.encode()) >= path_max:
        raise config_module.ConfigError(
            'out', 'the output path is too long: the checkpoint files would be %d characters '
            '(e.g. %s...%s); this file system allows %d (PATH_MAX)'
            % (len(longest.encode()), longest[:30], longest[-40:], path_max - 1))


def check_world(cfg, world_size, local_rank):
    """This rank's verdict on what needs the world: batch over its size, the output
    directory, the paths' lengths, the GPU. None or one line."""
    try:
        config_module.validate(cfg, workers=world_size, check_paths=False)
        check_path_lengths(cfg.out)
        config_module.check_output_dir(cfg.out)
        if cfg.train.device == 'gpu':
            check_gpu(local_rank)
    except config_module.ConfigError as e:
        return str(e)
    return None


def check_gpu(local_rank):
    try:
        import cupy
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:   # no CuPy, no driver, no device: one line, not a traceback
        raise config_module.ConfigError('train.device', 'gpu, but CUDA is not usable here: %s'
                                        % str(e).splitlines()[0] if str(e) else type(e).__name__)
    if local_rank >= count:
        raise config_module.ConfigError(
            'train.device', 'gpu: this is rank %d of its node, one GPU per rank, but CUDA '
            'sees %d GPU(s) here' % (local_rank, count))


def local_ranks(hosts, rank):
    """This rank's index among the ranks on its host, and their count."""
    same = [r for r, h in enumerate(hosts) if h == hosts[rank]]
    return same.index(rank), len(same)


# ---------------------------------------------------------------- checkpoint room

def checkpoint_file_bytes(model, optimizer_name):
    """Estimated size of the run's checkpoint file (one for all ranks): parameters,
    their optimizer state, the persistent values (BN statistics), plus a margin
    for the rest."""
    params = sum(p.array.nbytes for p in model.params() if p.array is not None)
    persistents = 0
    for _, link in model.namedlinks():
        for name in link._persistent:
            value = getattr(link, name)
            persistents += getattr(value, 'nbytes', 8)
    # The optimizer's state arrays are created at the first update, after
    # start-up has to decide: its registry entry says how many per parameter.
    slots = optimizers.entry(optimizer_name).state_slots
    return int(params * (1 + slots) + persistents + 64 * 1024)


def check_room(world, hosts, out, file_bytes, copies=2):
    """The verdict on room in `out` for `copies` checkpoints. Rank 0 alone writes
    them (pfn15.training.checkpoint), so only its file system counts; every rank
    takes part in the collective. None or one line."""
    error = None
    if world.rank == 0:
        try:
            st = os.statvfs(out)
            free = st.f_bavail * st.f_frsize
            need = copies * file_bytes
            if free < need:
                error = ('out: %s has %.1f MB free, but %d checkpoints need about %.1f MB '
                         '(%.1f MB each); free some space or set out= elsewhere'
                         % (out, free / 1e6, copies, need / 1e6, file_bytes / 1e6))
        except OSError as e:
            error = 'out: cannot check the free space of %s: %s' % (out, e.strerror or e)
    return world.bcast(error, root=0)
