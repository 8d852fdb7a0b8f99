"""python -m pfn15.bench {step,ranks,data,allreduce}: measured against a baseline in the same run.

    python -m pfn15.bench step --arch resnet50 --batch 32 --size 224 --device cpu --json step.json
    mpiexec -n 2 python -m pfn15.bench step --arch resnet50 --batch 16 --peer none
    python -m pfn15.bench ranks --ranks 2 --arch resnet50 --batch 16
    python -m pfn15.bench data --root /data/imagenet --workers 4
    mpiexec -n 2 python -m pfn15.bench allreduce --bytes 4096,1048576,16777216 --json ar.json

step       images/s of (a) a bare Chainer forward/backward/MomentumSGD loop on one
           fixed batch, with the same model and so the same CPU functions as (b)
           (model.cpu_functions: pfn15's on CPU by default), and (b) a full pfn15 training iteration (iterator, updater,
           multi-node optimizer, recipe extensions, reporting) at the same batch,
           interleaved in blocks (a, b, a, b, ...) in one process; medians; ratio b/a.
           On a GPU (or with --peer torch) also a PyTorch ResNet-50 peer
           (channels-last, AMP when (b) runs mixed16) and the ratio (b)/peer; on
           CPU the peer's blocks join the rotation (a, b, peer, a, b, peer, ...).
           Under mpiexec -n N: (b) alone on every rank at --batch each (global batch
           --batch x N, gradients all-reduced by ChainerMN), the ranks starting each
           block together; images/s of the whole job and per rank, on rank 0.
ranks      `step` on 1 rank x N threads at batch --batch x N, then on N ranks x 1
           thread at --batch each: the same global batch, the two ways to spend N
           cores; both images/s and the ratio (N ranks / 1 rank).
data       decoded + augmented images/s of pfn15's train transform vs a plain PIL
           decode (pfn15.data.bench).
allreduce  ChainerMN's gradient all-reduce (comm.multi_node_mean_grad, the call the
           multi-node optimizer makes) of N bytes vs a raw mpi4py Allreduce of the
           same buffers; alpha/beta fitted over the sizes, for `pfn15.plan --calibrate`.
           With --reduction canonical: pfn15's canonical-order all-reduce (the
           gradient mean of comm.reduction=canonical: pack, tree, divide, unpack)
           vs ChainerMN's (comm.reduction=fast), e.g. at ResNet-50's gradients:
             mpiexec -n 4 python -m pfn15.bench allreduce --reduction canonical \
               --bytes 102228128 --arrays 161
"""
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from pfn15 import cli, errors, report

os.environ.setdefault('MPLBACKEND', 'Agg')


def _write_json(path, data):
    if not path:
        return
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with open(path, 'w') as f:
        json.dump(data, f, indent=1)


# ------------------------------------------------------------------ step

def _step_config(args, out_dir, workers=1):
    from pfn15 import config
    overrides = [
        'model.arch=%s' % args.arch,
        # In-memory data with no decoding: scikit-learn's digits upscaled to
        # --size (1 channel; the stem convolution is the only difference from RGB).
        'data.dataset=digits', 'data.image_size=%d' % args.size, 'data.loader_workers=0',
        'data.val_fraction=0.1',
        'batch.per_worker=%d' % args.batch, 'batch.global=%d' % (args.batch * workers),
        'optimizer.name=%s' % args.optimizer,
        'train.device=%s' % ('cpu' if args.device == 'cpu' else 'gpu'),
        # The benchmark drives the loop; the run it configures is as long as the
        # benchmark (its triggers, plots and iterator sized like that training run's).
        'train.iterations=%d' % (max(1, args.warmup) + args.blocks * args.iters + 2),
        'train.eval_every_epochs=0',     # no evaluation inside the timed iterations
        'train.progress_bar=false',
        'checkpoint.every_iterations=0', 'resume=none', 'out=%s' % out_dir,
    ]
    return config.load(None, overrides=overrides + list(args.set), check_paths=False)


class _TrainerDriver(object):
    """One iteration of `chainer.training.Trainer.run`'s loop at a time: the
    updater's update, then every extension whose trigger fires, in priority
    order, inside the trainer's reporter scope -- what `trainer.run()` does,
    without its stop condition, so blocks can interleave with the baseline."""

    # The run's outputs per epoch or per point, not per iteration: the console
    # table (the benchmark prints its own) and the plots (PlotReport, PlotReport_1:
    # in a run as short as the benchmark, drawn every few iterations).
    SILENT = ('PrintReport', 'PlotReport')

    def __init__(self, trainer):
        self.trainer = trainer
        order = sorted((n for n in trainer._extensions
                        if not n.startswith(self.SILENT)),
                       key=lambda n: trainer._extensions[n].priority, reverse=True)
        self.extensions = [trainer._extensions[n] for n in order]
        from chainer.training import trainer as trainer_module
        trainer._start_at = trainer_module._get_time()
        for entry in self.extensions:
            init = getattr(entry.extension, 'initialize', None)
            if init and not getattr(entry.trigger, 'finished', False):
                init(trainer)

    def step(self):
        t = self.trainer
        t.observation = {}
        with t.reporter.scope(t.observation):
            t.updater.update()
            for entry in self.extensions:
                if entry.trigger(t):
                    entry.extension(t)

    def finalize(self):
        for entry in self.extensions:
            fin = getattr(entry.extension, 'finalize', None)
            if fin:
                fin()
        self.trainer.updater.finalize()


def _bare_loop(cfg, classes, in_channels, batch, device, lr):
    """(a): the same predictor, chainer.links.Classifier, MomentumSGD with Chainer's
    WeightDecay hook -- the loop of Chainer's ImageNet example -- on one fixed batch."""
    import chainer
    import chainer.links as L
    from chainer import optimizer_hooks
    from pfn15 import models
    model = L.Classifier(models.build(cfg, classes, in_channels))
    if device >= 0:
        model.to_gpu(device)
    opt = chainer.optimizers.MomentumSGD(lr=lr, momentum=cfg.optimizer.momentum)
    opt.setup(model)
    opt.add_hook(optimizer_hooks.WeightDecay(cfg.optimizer.weight_decay))
    x, t = chainer.dataset.concat_examples(batch, device if device >= 0 else None)

    def step():
        model.cleargrads()
        loss = model(x, t)
        loss.backward()
        opt.update()
    return step, model


def _sync(device):
    if device >= 0:
        import cupy
        cupy.cuda.Device(device).synchronize()


def _run_peer(args, cfg, device, classes, in_channels, lr):
    """The PyTorch ResNet-50 peer (pfn15.bench_torch) on the same device and batch,
    with mixed precision when (b) runs mixed16; None when not asked for."""
    from pfn15 import bench_torch
    if args.peer == 'none' or (args.peer == 'auto' and device < 0):
        return None
    if args.arch != 'resnet50':
        return {'status': 'skipped', 'reason': 'the peer is a ResNet-50; --arch is %s'
                % args.arch}
    if args.peer == 'auto':
        ok, why = bench_torch.available()
        if not ok:
            return {'status': 'skipped', 'reason': why}
    if device >= 0:   # hand CuPy's cached blocks back before PyTorch allocates
        import cupy
        cupy.get_default_memory_pool().free_all_blocks()
    return bench_torch.run_peer(
        args.batch, args.size, device if device >= 0 else 'cpu', args.iters, args.blocks,
        max(1, args.warmup), amp=(cfg.train.dtype == 'mixed16') if device >= 0 else False,
        channels_last=True, classes=classes, in_channels=in_channels,
        lr=lr, momentum=cfg.optimizer.momentum,
        weight_decay=cfg.optimizer.weight_decay, seed=cfg.seed)


def _cpu_peer_session(args, cfg, classes, in_channels, lr):
    """On CPU the peer is built up front and timed in the same rotation as (a) and (b)
    (a, b, peer, a, b, peer, ...), so a change in the machine's load hits all three
    alike; None when no peer is asked for, or the 'skipped' dict."""
    from pfn15 import bench_torch
    if args.peer != 'torch':     # 'auto' means no peer on CPU
        return None
    if args.arch != 'resnet50':
        return {'status': 'skipped', 'reason': 'the peer is a ResNet-50; --arch is %s'
                % args.arch}
    return bench_torch.cpu_session(
        args.batch, args.size, classes=classes, in_channels=in_channels, lr=lr,
        momentum=cfg.optimizer.momentum, weight_decay=cfg.optimizer.weight_decay,
        seed=cfg.seed, channels_last=True, amp=_cpu_bf16(cfg))


def _cpu_bf16(cfg):
    """Whether (a) and (b) compute in bf16 on this CPU (then the peer autocasts to bf16)."""
    from pfn15 import models
    return models.cpu_choice(cfg)[1]


def run_step(args):
    """Measure (a) and (b); returns the figures as a dict."""
    import chainer
    from pfn15 import cpu
    from pfn15 import comm as comm_module
    from pfn15 import train as train_module

    from mpi4py import MPI
    if MPI.COMM_WORLD.size > 1:
        return _run_step_ranks(args, MPI.COMM_WORLD)
    device = -1 if args.device == 'cpu' else int(args.device)
    out_dir = tempfile.mkdtemp(prefix='pfn15-bench-step-')
    cfg = _step_config(args, out_dir)
    comm = comm_module.create(cfg)
    if device >= 0:
        chainer.cuda.get_device_from_id(device).use()

    # (b) the product: build_trainer is what `python -m pfn15.train` runs.
    trainer = train_module.build_trainer(cfg, comm)
    lr = trainer.updater.plan.base_lr(0)   # the run's rate, for (a) and the peer too
    driver = _TrainerDriver(trainer)
    dataset = trainer.updater.get_iterator('main').dataset
    model_b = trainer.updater.get_optimizer('main').target
    classes = int(model_b.predictor.fc.W.shape[0]) if hasattr(model_b.predictor, 'fc') \
        else None
    sample = [dataset[i] for i in range(args.batch)]
    in_channels = sample[0][0].shape[0]
    if classes is None:
        from pfn15.data import digits
        classes = digits.load(cfg.data)[2]['classes']
    bare_step, model_a = _bare_loop(cfg, classes, in_channels, sample, device, lr)

    n_params = sum(p.size for p in model_b.params())
    n_arrays = sum(1 for _ in model_b.params())
    n_bytes = sum(p.array.nbytes for p in model_b.params())

    session = _cpu_peer_session(args, cfg, classes, in_channels, lr) if device < 0 else None
    loops = [(bare_step, []), (driver.step, [])]
    if session is not None and not isinstance(session, dict):
        loops.append((session.step, []))
    for _ in range(max(1, args.warmup)):   # warm up all (allocations, cuDNN autotune)
        for fn, _rates in loops:
            fn()
    train_module.freeze_setup_objects()   # as pfn15.train does before its loop; all three
    _sync(device)
    updater = trainer.updater
    del updater.microbatch_durations[:], updater.update_durations[:]   # the timed blocks'

    for _ in range(args.blocks):
        for fn, rates in loops:
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(args.iters):
                fn()
            _sync(device)
            rates.append(args.batch * args.iters / (time.perf_counter() - t0))
    a_rates, b_rates = loops[0][1], loops[1][1]
    driver.finalize()
    if session is None:
        peer = _run_peer(args, cfg, device, classes, in_channels, lr)
    elif isinstance(session, dict):
        peer = session
    else:
        peer = session.result(loops[2][1], args.iters, args.blocks, max(1, args.warmup))
        peer['interleaved'] = True

    result = {
        'kind': 'step', 'arch': args.arch, 'batch': args.batch, 'size': args.size,
        'device': args.device, 'iters': args.iters, 'blocks': args.blocks,
        'optimizer': args.optimizer, 'in_channels': int(in_channels), 'classes': int(classes),
        'bare_img_per_s': statistics.median(a_rates),
        'pfn15_img_per_s': statistics.median(b_rates),
        'bare_blocks_img_per_s': a_rates, 'pfn15_blocks_img_per_s': b_rates,
        'param_count': int(n_params), 'param_arrays': int(n_arrays), 'param_bytes': int(n_bytes),
        'cpu_count': os.cpu_count(), 'threads_per_worker': cpu.threads_in_force(),
        # pfn15's functions split the products over those threads, BLAS on one each.
        'products_split': bool(cpu.products_split()),
        # Process-wide, so (a) and (b) alike (pfn15/cpu.py; train.keep_freed_memory).
        'keep_freed_memory': bool(cpu.applied()),
        # Both loops' models run these (pfn15/functions on CPU unless 'chainer').
        'cpu_functions': _cpu_functions(cfg) if device < 0 else 'chainer (GPU)',
    }
    if device < 0:
        from pfn15 import blas_kernel
        result['blas'] = blas_kernel.report()   # which OpenBLAS kernel ran, and why
    result['ratio'] = result['pfn15_img_per_s'] / result['bare_img_per_s']
    if peer is not None:
        # The peer's dict keeps its own keys (device, peak memory); its rate goes up.
        result['torch_peer'] = peer
        result['torch_img_per_s'] = peer.get('torch_img_per_s')
        if result['torch_img_per_s']:
            result['ratio_vs_torch'] = result['pfn15_img_per_s'] / result['torch_img_per_s']
    result['step_s'] = args.batch / result['pfn15_img_per_s']
    if device < 0 and updater.microbatch_durations:
        # The update split for pfn15.plan: per microbatch (data, forward, backward) and
        # once per update (all-reduce, optimizer, the iteration's extensions), so a
        # run of k microbatches per update is predicted as k x the first + the second.
        # (Both as the updater times them, as a training run's iteration_seconds_median:
        # the extensions' own time is not in it.)
        micro = statistics.median(updater.microbatch_durations)
        result['microbatch_s'] = micro
        result['update_overhead_s'] = max(
            0.0, statistics.median(updater.update_durations) - updater.microbatches * micro)
    # One process is the whole job: the keys `bench ranks` reads off either kind of run.
    result.update(ranks=1, job_img_per_s=result['pfn15_img_per_s'],
                  per_rank_img_per_s=result['pfn15_img_per_s'])
    if device >= 0:
        import cupy
        pool = cupy.get_default_memory_pool()
        result['peak_memory_mb'] = pool.total_bytes() / 2 ** 20
        result['peak_memory_what'] = 'cupy memory pool total bytes (GPU)'
    else:
        result['peak_memory_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        result['peak_memory_what'] = 'max resident set size of the process (both loops)'
    return result


def _run_step_ranks(args, world):
    """(b) alone on the MPI ranks `world` holds, each at --batch (the global batch is
    --batch x ranks, the gradients all-reduced by the real ChainerMN communicator).
    (a) and the PyTorch peer are one-process baselines and do not run here.
    Returns the figures on rank 0, None on the others."""
    import chainer
    from mpi4py import MPI
    from pfn15 import cpu
    from pfn15 import comm as comm_module
    from pfn15 import train as train_module

    ranks = world.size
    if args.peer == 'torch':
        raise errors.UserError(
            'step: --peer torch times one process against one process; run it without '
            'mpiexec (%d ranks were started)' % ranks)
    # One out dir for the job, as `mpiexec ... pfn15.train` has: rank 0 makes it.
    out_dir = world.bcast(tempfile.mkdtemp(prefix='pfn15-bench-step-')
                          if world.rank == 0 else None, root=0)
    cfg = _step_config(args, out_dir, workers=ranks)
    comm = comm_module.create(cfg)
    device = -1 if args.device == 'cpu' else comm.intra_rank   # one rank per GPU, as train
    if device >= 0:
        chainer.cuda.get_device_from_id(device).use()
    trainer = train_module.build_trainer(cfg, comm)
    driver = _TrainerDriver(trainer)
    model = trainer.updater.get_optimizer('main').target

    for _ in range(max(1, args.warmup)):
        driver.step()
    _sync(device)
    block_s = []
    for _ in range(args.blocks):
        comm.mpi_comm.Barrier()   # every rank times the same interval
        t0 = time.perf_counter()
        for _ in range(args.iters):
            driver.step()
        _sync(device)
        # The job's block ends when its slowest rank's does.
        block_s.append(comm.mpi_comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
    driver.finalize()
    if comm.rank != 0:
        return None

    job_rates = [ranks * args.batch * args.iters / s for s in block_s]
    job = statistics.median(job_rates)
    result = {
        'kind': 'step', 'arch': args.arch, 'batch': args.batch, 'size': args.size,
        'device': args.device, 'iters': args.iters, 'blocks': args.blocks,
        'optimizer': args.optimizer, 'ranks': ranks, 'global_batch': args.batch * ranks,
        'job_img_per_s': job, 'per_rank_img_per_s': job / ranks,
        'pfn15_img_per_s': job / ranks,   # one process's rate, as in a one-rank run
        'job_blocks_img_per_s': job_rates, 'block_s': block_s,
        'param_count': int(sum(p.size for p in model.params())),
        'param_arrays': int(sum(1 for _ in model.params())),
        'cpu_count': os.cpu_count(), 'threads_per_worker': cpu.threads_in_force(),
        'products_split': bool(cpu.products_split()),
        'keep_freed_memory': bool(cpu.applied()),
        'cpu_functions': _cpu_functions(cfg) if device < 0 else 'chainer (GPU)',
        'peak_memory_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        'peak_memory_what': 'max resident set size of rank 0',
    }
    result['step_s'] = args.batch / result['per_rank_img_per_s']
    return result


def print_step_ranks(r):
    print('bench step: %s, batch %d per rank x %d ranks, %dx%d, device %s, '
          '%d blocks x %d iterations (medians)'
          % (r['arch'], r['batch'], r['ranks'], r['size'], r['size'], r['device'],
             r['blocks'], r['iters']))
    print('  %-44s %10s' % ('', 'images/s'))
    print('  %-44s %10.2f' % ('(b) full pfn15 iteration, whole job', r['job_img_per_s']))
    print('  %-44s %10.2f' % ('(b) per rank', r['per_rank_img_per_s']))
    print('  %d ranks x %d thread(s) each (%s); CPU functions: %s'
          % (r['ranks'], r['threads_per_worker'],
             'products split by pfn15' if r['products_split'] else "products on BLAS's threads",
             r['cpu_functions']))
    print('  (a) and the PyTorch peer time one process: run without mpiexec for them')


def _cpu_functions(cfg):
    from pfn15 import models
    functions, bf16, _ = models.cpu_choice(cfg)
    return functions + (' (bf16)' if bf16 else '')


def print_step(r):
    print('bench step: %s, batch %d, %dx%d, device %s, %d blocks x %d iterations (medians)'
          % (r['arch'], r['batch'], r['size'], r['size'], r['device'], r['blocks'], r['iters']))
    print('  %-44s %10s' % ('', 'images/s'))
    print('  %-44s %10.2f' % ('(a) bare Chainer loop, one fixed batch', r['bare_img_per_s']))
    print('  %-44s %10.2f' % ('(b) full pfn15 iteration (%s)' % r['optimizer'],
                              r['pfn15_img_per_s']))
    print('  ratio b/a %.3f (bar on CPU: >= 0.95); peak memory %.0f MB (%s)'
          % (r['ratio'], r['peak_memory_mb'], r['peak_memory_what']))
    if r['device'] == 'cpu':
        print('  glibc malloc keeps freed memory (train.keep_freed_memory): %s'
              % ('yes' if r['keep_freed_memory'] else 'no'))
        print('  CPU functions of (a) and (b) (model.cpu_functions): %s; %d thread(s), %s'
              % (r['cpu_functions'], r['threads_per_worker'],
                 'products split over them by pfn15, BLAS on one each'
                 if r.get('products_split') else 'products on BLAS\'s threads'))
        b = r.get('blas') or {}
        print('  OpenBLAS %s kernel: %s (%s; this CPU: %s, core type %s)'
              % (b.get('version'), b.get('architecture'), b.get('why'),
                 b.get('cpu_level'), b.get('cpu_best')))
        if b.get('problem'):
            print('  problem: %s' % b['problem'])
    print('  model: %d parameters in %d arrays (%.1f MB of float32 gradients)'
          % (r['param_count'], r['param_arrays'], r['param_bytes'] / 1e6))
    if r.get('torch_peer') is not None:
        from pfn15 import bench_torch
        print('  ', end='')
        bench_torch.print_peer(r['torch_peer'], ours=r['pfn15_img_per_s'])


# ------------------------------------------------------------------ ranks

def _step_child(args, launcher, batch, threads, json_path):
    """The command line and environment of one `bench step` run of `bench ranks`."""
    cmd = launcher + [sys.executable, '-m', 'pfn15.bench', 'step',
                      '--arch', args.arch, '--batch', str(batch), '--size', str(args.size),
                      '--device', args.device, '--iters', str(args.iters),
                      '--blocks', str(args.blocks), '--warmup', str(args.warmup),
                      '--optimizer', args.optimizer, '--peer', 'none', '--json', json_path]
    # The thread count is what is compared, so it has the last word over --set.
    for kv in list(args.set) + ['train.cpu_threads=%d' % threads]:
        cmd += ['--set', kv]
    env = dict(os.environ)
    from pfn15 import cpu
    env.update({var: str(threads) for var in cpu.THREAD_VARS})
    return cmd, env


def _run_child(name, cmd, env, json_path):
    """Run one `bench step`; its JSON, or one line naming the run that failed."""
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0 or not os.path.exists(json_path):
        last = ([l for l in (p.stderr + p.stdout).splitlines() if l.strip()] or ['no output'])[-1]
        last = last.strip()
        if last.startswith('pfn15.bench: error: '):   # the child's own one line
            last = last[len('pfn15.bench: error: '):]
        raise errors.Error('ranks: the %s run failed (exit %d): %s' % (name, p.returncode, last))
    with open(json_path) as f:
        return json.load(f)


def run_ranks(args):
    """`bench step` on 1 rank x N threads, then on N ranks x 1 thread each, at the same
    global batch (batch x N on the one rank, batch on each of the N): the two ways to
    spend a node's N cores on the same training run."""
    n = args.ranks
    if n < 2:
        raise errors.UserError('ranks: --ranks must be 2 or more (got %d)' % n)
    tmp = tempfile.mkdtemp(prefix='pfn15-bench-ranks-')
    try:
        one_json, many_json = os.path.join(tmp, 'one.json'), os.path.join(tmp, 'many.json')
        one = _run_child('1 rank x %d threads' % n,
                         *_step_child(args, [], args.batch * n, n, one_json), one_json)
        many = _run_child('%d ranks x 1 thread' % n,
                          *_step_child(args, [report.mpiexec_path() or 'mpiexec', '-n', str(n)], args.batch, 1,
                                       many_json), many_json)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        'kind': 'ranks', 'arch': args.arch, 'size': args.size, 'device': args.device,
        'ranks': n, 'batch_per_rank': args.batch, 'global_batch': args.batch * n,
        'iters': args.iters, 'blocks': args.blocks,
        'one_rank_img_per_s': one['job_img_per_s'],
        'one_rank_threads': one['threads_per_worker'],
        'ranks_img_per_s': many['job_img_per_s'],
        'ranks_threads': many['threads_per_worker'],
        'ratio': many['job_img_per_s'] / one['job_img_per_s'],
        'one_rank': one, 'several_ranks': many,
    }


def print_ranks(r):
    n = r['ranks']
    print('bench ranks: %s, %dx%d, device %s, global batch %d, %d blocks x %d iterations '
          '(medians)' % (r['arch'], r['size'], r['size'], r['device'], r['global_batch'],
                         r['blocks'], r['iters']))
    print('  %-44s %10s' % ('', 'images/s'))
    print('  %-44s %10.2f' % ('1 rank x %d threads, batch %d' % (r['one_rank_threads'],
                                                                 r['global_batch']),
                              r['one_rank_img_per_s']))
    print('  %-44s %10.2f' % ('%d ranks x %d thread, batch %d each'
                              % (n, r['ranks_threads'], r['batch_per_rank']),
                              r['ranks_img_per_s']))
    print('  ratio %d ranks x 1 thread / 1 rank x %d threads: %.3f' % (n, n, r['ratio']))


# ------------------------------------------------------------------ data

def run_data(args):
    try:
        from pfn15.data import bench as data_bench
    except ImportError as e:
        raise RuntimeError('pfn15.data.bench is not available (%s)' % e)
    root, tmp = args.root, None
    if not root:
        from pfn15.data import synthetic
        tmp = tempfile.mkdtemp(prefix='pfn15-bench-data-')
        root = tmp
        synthetic.write_tree(root, args.classes, args.train, args.val, args.image_size, seed=0)
    result = dict(data_bench.run(root, workers=args.workers, images=args.images,
                                 crop_size=args.crop_size, seed=0))
    result.update({'kind': 'data', 'root': args.root or '(synthetic %d classes x %d, %dpx)'
                   % (args.classes, args.train, args.image_size),
                   'workers': args.workers})   # 'images': those timed (bad ones left out)
    if tmp:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return result


# Labels of bench data's further figures, in print order: (key, label, format).
DATA_FIGURES = (
    ('ours_full_decode_img_per_s', 'ours without scaled decode', '%10.1f img/s'),
    ('baseline_fused_norm_img_per_s', 'baseline with our fused normalization', '%10.1f img/s'),
    ('node_img_per_s', 'ours, all workers together', '%10.1f img/s'),
    ('mean_abs_diff_vs_baseline', 'mean |ours - baseline| per pixel', '%10.2f of 255 levels'),
    ('mean_image_size', 'mean image size (px)', None),
    ('crop_size', 'crop size (px)', '%10d'),
    ('repeats', 'passes per image (the best counts)', '%10d'),
)


def _figure(v, fmt=None):
    """A value as a reader wants it: rounded, lists as WxH, no 16-digit floats."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, (list, tuple)):
        return ' x '.join(_figure(x) for x in v)
    if isinstance(v, dict):
        return ', '.join('%s %s' % (k, _figure(x)) for k, x in v.items())
    if fmt:
        return fmt % v
    if isinstance(v, float):
        return '%.3g' % v if abs(v) < 100 else '%.0f' % v
    return str(v)


def _label(key):
    """A readable label for a figure this table does not name (e.g. added later)."""
    for suffix, unit in (('_img_per_s', ' (img/s)'), ('_s', ' (s)'), ('_mb', ' (MB)')):
        if key.endswith(suffix):
            return key[:-len(suffix)].replace('_', ' ') + unit
    return key.replace('_', ' ')


def print_data(r):
    print('bench data: %s, %d worker(s), %d images' % (r['root'], r['workers'], r['images']))
    row = '  %-46s %10.1f img/s'
    print(row % ('ours (pfn15 train transform)', r['ours_img_per_s']))
    print(row % ('baseline (PIL full decode + crop)', r['baseline_img_per_s']))
    if 'ours_packed_img_per_s' in r:
        print(row % ('ours on packed shards (PIL on packed)', r['ours_packed_img_per_s']))
    for key, what in (('dali_cpu_img_per_s', 'DALI CPU-only (1 thread)'),
                      ('dali_cpu_node_img_per_s', 'DALI CPU-only (%d threads, all)' % r['workers']),
                      ('dali_mixed_img_per_s', 'DALI mixed (nvJPEG, GPU 0)')):
        if r.get(key):
            print(row % (what, r[key]))
    for key, what in (('dali_cpu_not_run', 'DALI CPU'), ('dali_mixed_not_run', 'DALI mixed')):
        if r.get(key):
            print('  %s: not run (%s)' % (what, r[key]))
    print('  ratio %.2f (bar: >= 1.3)' % r['ratio'])
    if r.get('cores_needed'):
        print('  cores (one process or DALI thread each) to feed one GPU:')
        for gpu, paths in r['cores_needed'].items():
            mixed = r['gpu_decoders_needed'].get(gpu)
            print('    %-44s %s%s' % (gpu, ', '.join('%s %s' % (p, n if n else '-')
                                                     for p, n in paths.items()),
                                      ', DALI mixed %.2f GPU' % mixed if mixed else ''))
    shown = {'kind', 'root', 'workers', 'images', 'ours_img_per_s', 'baseline_img_per_s',
             'ratio', 'workers_needed', 'ours_packed_img_per_s', 'cores_needed',
             'gpu_decoders_needed', 'dali_cpu_img_per_s', 'dali_cpu_node_img_per_s',
             'dali_mixed_img_per_s', 'dali_cpu_not_run', 'dali_mixed_not_run'}
    for key, label, fmt in DATA_FIGURES:
        if key in r:
            print('  %-46s %10s' % (label, _figure(r[key], fmt)))
            shown.add(key)
    for key in sorted(set(r) - shown):
        print('  %-46s %10s' % (_label(key), _figure(r[key])))
    for gpu, n in sorted((r.get('workers_needed') or {}).items()):
        print('  %-46s %10d' % ('decoding workers to feed one ' + gpu, n))


# ------------------------------------------------------------------ allreduce

def _sizes(text):
    sizes = [int(float(x)) for x in str(text).split(',') if x.strip()]
    if len(sizes) == 1:   # one size: also a 1/64 and 1/8 of it, to fit alpha and beta
        n = sizes[0]
        sizes = sorted({max(4, n // 64), max(4, n // 8), n})
    if min(sizes) < 4:
        raise ValueError('--bytes must be >= 4 (one float32)')
    return sizes


class _GradLink(object):
    """A chainer.Link whose float32 parameters total `nbytes` over `arrays` arrays,
    gradients set (what a model holds after backward)."""

    @staticmethod
    def make(nbytes, arrays, xp, seed):
        import chainer
        import numpy
        n = max(1, nbytes // 4)
        arrays = max(1, min(arrays, n))
        counts = [n // arrays + (1 if i < n % arrays else 0) for i in range(arrays)]
        link = chainer.Link()
        rng = numpy.random.RandomState(seed)
        with link.init_scope():
            for i, c in enumerate(counts):
                p = chainer.Parameter(xp.asarray(rng.randn(c).astype(numpy.float32)))
                p.grad = xp.asarray(rng.randn(c).astype(numpy.float32))
                setattr(link, 'p%04d' % i, p)
        return link


def _canonical_mean_grad(comm, link, xp):
    """The gradient mean of comm.reduction=canonical with one microbatch per rank,
    as the updater does it: pack, pfn15.reduction's tree over ranks, / size, unpack."""
    from pfn15 import comm as comm_module
    from pfn15 import reduction
    params = [p for _, p in sorted(link.namedparams())]
    ranges = [(r, r + 1) for r in range(comm.size)]

    def mean_grad():
        leaf = xp.concatenate([p.grad.ravel() for p in params])
        acc = reduction.Accumulator(comm.rank, comm.rank + 1, comm.size)
        acc.add((leaf,))
        total, = comm_module.canonical_allreduce(comm, acc.nodes(), ranges, comm.size, (leaf,))
        offset = 0
        for p in params:
            p.grad[...] = (total[offset:offset + p.grad.size] / comm.size).reshape(p.grad.shape)
            offset += p.grad.size
    return mean_grad


def run_allreduce(args):
    import chainermn
    import numpy
    from mpi4py import MPI
    from pfn15 import plan

    gpu = args.comm in ('pure_nccl', 'flat', 'hierarchical', 'two_dimensional', 'single_node')
    comm = chainermn.create_communicator(args.comm)
    xp = numpy
    if gpu:
        import chainer
        import cupy
        chainer.cuda.get_device_from_id(comm.intra_rank).use()
        xp = cupy
    mpi = comm.mpi_comm
    sizes = _sizes(args.bytes)

    def timed(fn):
        if gpu:
            xp.cuda.Device().synchronize()
        mpi.Barrier()
        t0 = time.perf_counter()
        fn()
        if gpu:
            xp.cuda.Device().synchronize()
        dt = time.perf_counter() - t0
        return mpi.allreduce(dt, op=MPI.MAX)   # the slowest rank sets the pace

    rows = []
    for n in sizes:
        link = _GradLink.make(n, args.arrays, xp, seed=comm.rank)
        grads = [p.grad for p in link.params()]
        bufs = [xp.array(g) for g in grads]

        def ours():
            comm.multi_node_mean_grad(link)

        def baseline():
            # What the naive communicator does per array, written directly:
            # an in-place MPI Allreduce of the buffer, then divide by the size.
            for b in bufs:
                mpi.Allreduce(MPI.IN_PLACE, b, op=MPI.SUM)
                b /= comm.size

        if args.reduction == 'canonical':
            # (a) pfn15's canonical tree (one leaf per rank: pack, tree, / size,
            # unpack), against (b) ChainerMN's own all-reduce (comm.reduction=fast).
            ours, baseline = _canonical_mean_grad(comm, link, xp), ours
        for _ in range(args.warmup):
            ours()
            baseline()
        t_ours, t_base = [], []
        for _ in range(args.repeat):   # interleaved, so noise hits both alike
            t_ours.append(timed(ours))
            t_base.append(timed(baseline))
        actual = sum(int(g.nbytes) for g in grads)
        rows.append({'bytes': actual, 'ours_s': statistics.median(t_ours),
                     'baseline_s': statistics.median(t_base)})
        for r in rows[-1:]:
            r['ratio'] = r['ours_s'] / r['baseline_s']

    if comm.size < 2:
        fit = fit_b = {'a_s': None, 'b_s_per_byte': None, 'alpha_s': None,
                       'beta_s_per_byte': None}
    else:
        fit = plan.fit_alpha_beta([r['bytes'] for r in rows], [r['ours_s'] for r in rows],
                                  comm.size)
        fit_b = plan.fit_alpha_beta([r['bytes'] for r in rows],
                                    [r['baseline_s'] for r in rows], comm.size)
    result = {
        'kind': 'allreduce', 'comm': args.comm, 'workers': comm.size,
        'reduction': args.reduction,
        'ours': 'canonical' if args.reduction == 'canonical' else 'ChainerMN',
        'baseline': 'ChainerMN' if args.reduction == 'canonical' else 'mpi4py',
        'arrays': args.arrays, 'repeat': args.repeat, 'rows': rows,
        'alpha_s': fit['alpha_s'], 'beta_s_per_byte': fit['beta_s_per_byte'],
        'a_s': fit['a_s'], 'b_s_per_byte': fit['b_s_per_byte'],
        'baseline_alpha_s': fit_b['alpha_s'], 'baseline_beta_s_per_byte': fit_b['beta_s_per_byte'],
        'ratio': statistics.median(r['ratio'] for r in rows),
        'model': 'ring at `workers` ranks: T(n) = 2(p-1) alpha + 2(p-1)/p n beta per call; '
                 'one call per parameter array with the naive communicator',
    }
    return result if comm.rank == 0 else None


def print_allreduce(r):
    print('bench allreduce: %s communicator, %d ranks, %d array(s) per link, median of %d'
          % (r['comm'], r['workers'], r['arrays'], r['repeat']))
    print('  %12s %14s %14s %8s' % ('bytes', '%s (s)' % r.get('ours', 'ChainerMN'),
                                     '%s (s)' % r.get('baseline', 'mpi4py'), 'ratio'))
    for row in r['rows']:
        print('  %12d %14.6f %14.6f %8.3f' % (row['bytes'], row['ours_s'], row['baseline_s'],
                                            row['ratio']))
    if r['alpha_s'] is not None:
        print('  fit (ring model): alpha %.2f us, beta %.3f ns/B (%.2f GB/s); '
              'baseline alpha %.2f us, beta %.3f ns/B; median ratio %.3f'
              % (r['alpha_s'] * 1e6, r['beta_s_per_byte'] * 1e9,
                 1e-9 / r['beta_s_per_byte'] if r['beta_s_per_byte'] else float('inf'),
                 r['baseline_alpha_s'] * 1e6, r['baseline_beta_s_per_byte'] * 1e9, r['ratio']))
    else:
        print('  one rank: no all-reduce to fit (run under mpiexec -n 2 or more)')


# ------------------------------------------------------------------ CLI

def _step_options(p, batch_help=None):
    """The options `step` and `ranks` share (`ranks` passes them on to its `step` runs)."""
    from pfn15 import optimizers
    p.add_argument('--arch', default='resnet50', choices=('resnet50', 'resnet_small'))
    p.add_argument('--batch', type=int, default=32, help=batch_help)
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--device', default='cpu', help="'cpu' or a GPU id")
    p.add_argument('--iters', type=int, default=5, help='iterations per timed block')
    p.add_argument('--blocks', type=int, default=5, help='timed blocks of each (a, b, a, b...)')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--optimizer', default='momentum_sgd',
                   choices=optimizers.names(),
                   help="(b)'s optimizer; momentum_sgd matches (a)")
    p.add_argument('--set', action='append', default=[], metavar='key=value',
                   help='extra config override for (b) (and the model of (a))')


def parse_args(argv):
    p = cli.ArgumentParser(prog='python -m pfn15.bench', description=__doc__.split('\n\n')[0],
                           epilog=cli.epilog(keys=True, tool=True))
    sub = p.add_subparsers(dest='cmd', required=True)

    s = sub.add_parser('step', help='bare Chainer loop vs full pfn15 iteration')
    _step_options(s)
    s.add_argument('--peer', default='auto', choices=('auto', 'torch', 'none'),
                   help='PyTorch ResNet-50 peer at the same batch (pfn15.bench_torch): '
                        'auto = on a GPU when torch imports; torch = always; none')
    s.add_argument('--json')

    r = sub.add_parser('ranks', help='N ranks x 1 thread vs 1 rank x N threads, '
                                     'same global batch')
    r.add_argument('--ranks', type=int, default=2, help='N: ranks of the one run, threads of the other')
    _step_options(r, batch_help='batch per rank of the N-rank run; the one rank runs '
                                'batch x N')
    r.add_argument('--json')

    d = sub.add_parser('data', help='our train transform vs plain PIL decode')
    d.add_argument('--root', help='image tree (train/<class>/*.JPEG); default: synthetic')
    d.add_argument('--workers', type=int, default=1)
    d.add_argument('--images', type=int, default=200)
    d.add_argument('--crop-size', type=int, default=224)
    d.add_argument('--classes', type=int, default=4, help='synthetic tree: classes')
    d.add_argument('--train', type=int, default=50, help='synthetic tree: images per class')
    d.add_argument('--val', type=int, default=2, help='synthetic tree: val images per class')
    d.add_argument('--image-size', type=int, default=400, help='synthetic tree: pixels')
    d.add_argument('--json')

    a = sub.add_parser('allreduce', help="ChainerMN's gradient all-reduce vs raw mpi4py")
    a.add_argument('--bytes', default='4096,65536,1048576,8388608',
                   help='message size(s) in bytes, comma-separated')
    a.add_argument('--arrays', type=int, default=1, help='parameter arrays the bytes split into')
    a.add_argument('--repeat', type=int, default=20)
    a.add_argument('--warmup', type=int, default=2)
    a.add_argument('--comm', default='naive',
                   help="ChainerMN communicator: 'naive' (CPU) or 'pure_nccl' (GPU)")
    a.add_argument('--reduction', default='fast', choices=('fast', 'canonical'),
                   help="fast: ChainerMN's all-reduce vs raw mpi4py; canonical: pfn15's "
                        "canonical-order all-reduce (comm.reduction=canonical) vs ChainerMN's")
    a.add_argument('--json')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.cmd == 'step':
        r = run_step(args)
        if r is None:      # ranks other than 0
            return 0
        (print_step_ranks if r['ranks'] > 1 else print_step)(r)
    elif args.cmd == 'ranks':
        r = run_ranks(args)
        print_ranks(r)
    elif args.cmd == 'data':
        try:
            r = run_data(args)
        except ValueError as e:   # no images, or none that decodes: one line
            raise errors.UserError('data: %s' % e)
        print_data(r)
    else:
        r = run_allreduce(args)
        if r is None:      # ranks other than 0
            return 0
        print_allreduce(r)
    _write_json(args.json, r)
    return 0


if __name__ == '__main__':
    sys.exit(cli.run(main, 'pfn15.bench'))
