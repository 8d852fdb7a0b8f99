#!/usr/bin/env python
"""Do the cluster job scripts agree with the configs they launch?

    python tools/check_jobs.py jobs/*/*.sh

For each script: reads it the way its scheduler does (the #SBATCH or #PBS
directives up to the first command), finds every MPI launch in it (mpiexec,
mpirun, srun; backslash continuations and quotes over several lines
followed), and loads the launched config with the launch line's key=value
overrides and the launched rank count as the worker count. Then checks that
every launch runs nodes x ranks per node ranks, that the global batch is
workers x per-worker batch x microbatches, one GPU per rank on a GPU run and
none on a CPU run, resume=auto on the launch, and the preemption handling
(SLURM: --signal=B:USR1@SECONDS, --requeue, `scontrol requeue`; PBS: -r y,
the walltime timer and the qsub resubmission; both: a `trap ... USR1`).
Prints one line per problem. tests/jobs/test_jobs.py runs it on every script
in jobs/ and on edited copies, to show that it reports a mismatch.

Configs that take data.root from ${IMAGENET_ROOT} load without it: the
paths are not checked.
"""
import os
import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pfn15 import cli, errors  # noqa: E402
from pfn15 import config as config_mod  # noqa: E402
from pfn15.data import order  # noqa: E402

EXIT_STATUS = ('exit status:\n'
               '  0    every script agrees with the configs it launches\n'
               '  1    a script does not (each problem on its own line)\n'
               '  2    user error (command line, a script that cannot be read): one line')

LAUNCHERS = ('mpiexec', 'mpirun', 'srun')
CONTROL = {'&', '&&', '||', '|', ';', ';;'}


def relative(path):
    """`path` relative to the repository when it is inside it, else as given."""
    try:
        return str(Path(path).relative_to(REPO))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- parsing

def directives(text, prefix):
    """The `#SBATCH` / `#PBS` lines' arguments, up to the first command:
    SLURM and PBS both stop reading directives there."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith('#'):
            if s.startswith(prefix + ' '):
                out.extend(shlex.split(s[len(prefix):], comments=True))
            continue
        break
    return out


def _options(tokens):
    """['--nodes=2', '-N', '2', '--requeue', ...] -> {'nodes': '2', 'N': '2', 'requeue': True}."""
    opts = {}
    i = 0
    while i < len(tokens):
        t = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if t.startswith('--'):
            if '=' in t:
                key, value = t[2:].split('=', 1)
            elif nxt is not None and not nxt.startswith('-'):
                key, value = t[2:], nxt
                i += 1
            else:
                key, value = t[2:], True
        elif t.startswith('-') and len(t) > 1:
            key, value = t[1], t[2:]
            if not value:
                if nxt is not None and not nxt.startswith('-'):
                    value = nxt
                    i += 1
                else:
                    value = True
        else:
            key, value = t, True
        opts.setdefault(key, []).append(value)
        i += 1
    return opts


def _count(value, what):
    """'8', '1-1' (a SLURM range, which must be one number), 'gpu:tesla:8' -> int."""
    value = str(value).split(':')[-1]
    if re.fullmatch(r'\d+-\d+', value):
        lo, hi = value.split('-')
        if lo != hi:
            raise ValueError('%s is a range (%s); the rank count needs one number' % (what, value))
        value = lo
    if not value.isdigit():
        raise ValueError('%s is not a number: %r' % (what, value))
    return int(value)


def slurm_resources(text):
    opts = _options(directives(text, '#SBATCH'))
    last = {k: v[-1] for k, v in opts.items()}   # the last one wins, as in sbatch
    nodes = last.get('nodes', last.get('N'))
    if nodes is None:
        raise ValueError('no #SBATCH --nodes / -N before the first command')
    nodes = _count(nodes, '--nodes')
    if 'ntasks-per-node' in last:
        rpn = _count(last['ntasks-per-node'], '--ntasks-per-node')
    elif 'ntasks' in last or 'n' in last:
        ntasks = _count(last.get('ntasks', last.get('n')), '--ntasks')
        if ntasks % nodes:
            raise ValueError('--ntasks=%d does not divide over %d nodes' % (ntasks, nodes))
        rpn = ntasks // nodes
    else:
        raise ValueError('no #SBATCH --ntasks-per-node (or --ntasks) before the first command')
    gpus = 0
    if 'gpus-per-node' in last:
        gpus = _count(last['gpus-per-node'], '--gpus-per-node')
    elif 'gres' in last:
        for item in str(last['gres']).split(','):
            if item.split(':')[0] == 'gpu':
                gpus = _count(item, '--gres')
    return {'scheduler': 'slurm', 'nodes': nodes, 'ranks_per_node': rpn,
            'gpus_per_node': gpus, 'options': opts}


def pbs_resources(text):
    opts = _options(directives(text, '#PBS'))
    resources = {}
    for value in opts.get('l', []):
        for item in str(value).split(','):
            key, _, val = item.partition('=')
            resources[key] = val
    if 'select' in resources:           # PBS Pro: select=N:ncpus=..:ngpus=..:mpiprocs=M
        chunks = resources['select']
        if '+' in chunks:
            raise ValueError('select=%s has several chunk kinds; use one' % chunks)
        fields = chunks.split(':')
        nodes = _count(fields[0], 'select')
        kv = dict(f.split('=', 1) for f in fields[1:])
        rpn = _count(kv.get('mpiprocs', '1'), 'mpiprocs')
        gpus = _count(kv.get('ngpus', '0'), 'ngpus')
    elif 'nodes' in resources:          # Torque: nodes=N:ppn=M:gpus=G
        fields = resources['nodes'].split(':')
        nodes = _count(fields[0], 'nodes')
        kv = dict(f.split('=', 1) for f in fields[1:])
        rpn = _count(kv.get('ppn', '1'), 'ppn')
        gpus = _count(kv.get('gpus', '0'), 'gpus')
    else:
        raise ValueError('no #PBS -l select=... or -l nodes=... before the first command')
    return {'scheduler': 'pbs', 'nodes': nodes, 'ranks_per_node': rpn,
            'gpus_per_node': gpus, 'options': opts, 'resources': resources}


def _commands(text):
    """(line number, tokens) of every command that starts with an MPI launcher.
    Follows backslash continuations and quoted strings over several lines."""
    lines = text.splitlines()
    out = []
    i = 0
    while i < len(lines):
        if not re.match(r'\s*(%s)\s' % '|'.join(LAUNCHERS), lines[i]):
            i += 1
            continue
        start, chunk = i, lines[i]
        while True:
            if chunk.endswith('\\'):
                i += 1
                chunk = chunk[:-1] + ' ' + lines[i]
                continue
            try:
                tokens = shlex.split(chunk, comments=True)
                break
            except ValueError:         # a quote still open: the command goes on
                i += 1
                if i >= len(lines):
                    raise
                chunk += '\n' + lines[i]
        for j, t in enumerate(tokens):
            if t in CONTROL or t.startswith(('>', '<', '2>', '&>')):
                tokens = tokens[:j]
                break
        out.append((start + 1, tokens))
        i += 1
    return out


def _launch(tokens):
    """mpiexec -n N [opts] python -m pfn15.train CONFIG k=v ... -> dict."""
    launcher = tokens[0]
    n = None
    i = 1
    while i < len(tokens) and tokens[i].startswith('-'):
        t = tokens[i]
        key, eq, value = t.partition('=')
        if launcher == 'srun':
            if key in ('-n', '--ntasks'):
                n = value if eq else tokens[i + 1]
            elif re.fullmatch(r'-n\d+', t):
                n = t[2:]
        elif key in ('-n', '-np', '--n', '--np'):
            n = value if eq else tokens[i + 1]
        # Options of the launcher that take a value (--hostfile FILE, ...).
        if not eq and i + 1 < len(tokens) and not tokens[i + 1].startswith('-') \
                and not re.search(r'python', tokens[i + 1]):
            i += 1
        i += 1
    if n is None or not str(n).isdigit():
        raise ValueError('%s: the rank count must be a literal number (-n N), got %r'
                         % (launcher, n))
    program = tokens[i:]
    out = {'launcher': launcher, 'n': int(n), 'program': program,
           'config': None, 'overrides': []}
    if 'pfn15.train' in program:
        k = program.index('pfn15.train')
        if k < 1 or program[k - 1] != '-m' or k + 1 >= len(program):
            raise ValueError('expected `python -m pfn15.train CONFIG [key=value ...]`')
        out['config'] = program[k + 1]
        out['overrides'] = program[k + 2:]
        bad = [a for a in out['overrides'] if '=' not in a]
        if bad:
            raise ValueError('pfn15.train arguments after the config must be key=value: %r' % bad)
    return out


def parse_script(path):
    text = Path(path).read_text()
    has_slurm = bool(directives(text, '#SBATCH'))
    has_pbs = bool(directives(text, '#PBS'))
    if has_slurm == has_pbs:
        raise ValueError('expected #SBATCH or #PBS directives (one kind) before the first command')
    job = slurm_resources(text) if has_slurm else pbs_resources(text)
    job['text'] = text
    job['launches'] = [dict(_launch(tokens), line=line) for line, tokens in _commands(text)]
    return job


# ---------------------------------------------------------------- the checker

def check_script(path, repo=REPO):
    """Every way `path` disagrees with itself or with the config it launches,
    as readable lines; [] when it is consistent."""
    name = relative(path)
    try:
        job = parse_script(path)
    except ValueError as e:
        return ['%s: %s' % (name, e)]
    problems = []
    nodes, rpn = job['nodes'], job['ranks_per_node']
    requested = nodes * rpn
    for launch in job['launches']:
        if launch['n'] != requested:
            problems.append('%s:%d: %s -n %d, but the job requests %d nodes x %d ranks '
                            'per node = %d ranks' % (name, launch['line'], launch['launcher'],
                                                     launch['n'], nodes, rpn, requested))
    train = [l for l in job['launches'] if l['config']]
    code = [l for l in job['text'].splitlines() if not l.lstrip().startswith('#')]
    mentions = sum(l.count('pfn15.train') for l in code)
    if len(train) != 1 or mentions != 1:
        problems.append('%s: expected exactly one `%s ... python -m pfn15.train CONFIG` '
                        'launch; found %d launches and %d mentions'
                        % (name, '/'.join(LAUNCHERS), len(train), mentions))
        return problems
    train = train[0]
    workers = train['n']
    try:
        cfg = config_mod.load(str(repo / train['config']), train['overrides'],
                              workers=workers, check_paths=False)
    except config_mod.ConfigError as e:
        problems.append('%s:%d: %s with %d workers: %s'
                        % (name, train['line'], train['config'], workers, e))
        return problems
    b = cfg.batch
    k = order.whole_microbatches(b.global_, b.per_worker, workers)
    job.update(workers=workers, config=cfg, microbatches=k)
    if b.per_worker * workers * k != b.global_:
        problems.append('%s: %d workers x %d x %d microbatches != global batch %d'
                        % (name, workers, b.per_worker, k, b.global_))
    gpus = job['gpus_per_node']
    if cfg.train.device == 'gpu' and gpus != rpn:
        problems.append('%s: %s trains on GPUs, one rank per GPU, but the job asks for '
                        '%d GPUs per node and %d ranks per node' % (name, train['config'], gpus, rpn))
    if cfg.train.device == 'cpu' and gpus:
        problems.append('%s: a CPU run that holds %d GPUs per node' % (name, gpus))
    if 'resume=auto' not in train['overrides']:
        problems.append('%s: the launch needs resume=auto, so a requeued job continues' % name)
    opts = job['options']
    if job['scheduler'] == 'slurm':
        sig = str(opts.get('signal', [''])[-1])
        if not re.fullmatch(r'B:USR1@\d+', sig):
            problems.append('%s: needs #SBATCH --signal=B:USR1@SECONDS (got %r)' % (name, sig))
        if 'requeue' not in opts:
            problems.append('%s: needs #SBATCH --requeue' % name)
        if 'scontrol requeue' not in job['text']:
            problems.append('%s: never runs `scontrol requeue`' % name)
    else:
        if opts.get('r', [''])[-1] != 'y':
            problems.append('%s: needs #PBS -r y (rerunnable)' % name)
        if 'qsub ' not in job['text'] or 'WARN_S=' not in job['text']:
            problems.append('%s: needs the walltime timer and the qsub resubmission' % name)
    if not re.search(r"^trap .* USR1$", job['text'], re.M):
        problems.append('%s: no `trap ... USR1` to pass the warning signal on' % name)
    return problems


def main(argv=None):
    parser = cli.ArgumentParser(prog='python tools/check_jobs.py',
                                description=__doc__.split('\n\n')[0], epilog=EXIT_STATUS)
    parser.add_argument('scripts', nargs='+', metavar='SCRIPT',
                        help='SLURM or PBS job scripts, e.g. jobs/*/*.sh')
    args = parser.parse_args(argv)
    # check_paths=False never reads data.root; the variable need only be set.
    os.environ.setdefault('IMAGENET_ROOT', '/nonexistent/ILSVRC2012')
    disagree = 0
    for path in args.scripts:
        problems = check_script(path)
        for line in problems:
            print(line)
        disagree += bool(problems)
    if disagree:
        raise errors.Error('%d of %d job scripts disagree with the configs they launch'
                           % (disagree, len(args.scripts)))
    print('check_jobs: all %d job scripts agree with the configs they launch' % len(args.scripts))
    return errors.OK


if __name__ == '__main__':
    sys.exit(cli.run(main, 'check_jobs'))
