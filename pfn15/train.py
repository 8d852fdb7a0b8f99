"""python -m pfn15.train CONFIG.yaml [key=value ...]: one data-parallel training run.

    mpiexec -n 1024 python -m pfn15.train configs/32k.yaml
    mpiexec -n 2 python -m pfn15.train configs/demo.yaml out=results/try train.epochs=3
    python -m pfn15.train --show-config configs/demo.yaml train.epochs=3

Reads top to bottom like the ChainerMN ImageNet example's main(): config,
communicator, data (rank 0 lists and broadcasts), model, optimizer wrapped
by the multi-node optimizer, the global sample order and its iterator, the
accumulating updater, the trainer and its extensions, resume, run, summary.
The recipe pieces live in their own modules (schedules, optimizers, bn,
data/order.py, training/).

Every stop is an errors.Stop raised on the ranks that meet it and one line
from rank 0, with the exit status of pfn15/errors.py (`--help` lists them).
Any other error aborts all ranks (MPI_Abort).
"""
if __name__ == '__main__':
    # The very first thing a rank does (pfn15/__init__ is light, so NumPy,
    # Chainer, CuPy, the CUDA libraries and MPI are not loaded yet): from here
    # on a stop signal (Ctrl-C, the SLURM time-limit warning) is caught, not
    # fatal. main() installs them too, for callers that import this module.
    from pfn15.training import signals as _signals
    _signals.install()

import atexit  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402

os.environ.setdefault('MPLBACKEND', 'Agg')   # PlotReport on nodes without a display

from pfn15 import cli, errors  # noqa: E402  (standard library only)
from pfn15.training import signals, startup  # noqa: E402  (standard library and PyYAML)

PROG = 'python -m pfn15.train'
USAGE = '%s CONFIG.yaml [key=value ...]  (or --show-config CONFIG.yaml [key=value ...])' % PROG


def _dashed_override(argv, i):
    """'--train.epochs=3' (or '--train.epochs 3') written for the override train.epochs=3:
    what to write instead, or None."""
    arg = argv[i]
    name = arg[2:].split('=', 1)[0]
    if not arg.startswith('--') or name in ('help', 'show-config') or '.' not in name \
            and '=' not in arg:
        return None
    if '=' in arg:
        return arg[2:]
    following = argv[i + 1] if i + 1 < len(argv) else ''
    return '%s=%s' % (name, following or '...') if not following.startswith('-') else name + '=...'


def parse_args(argv):
    p = cli.ArgumentParser(prog=PROG, usage=USAGE, description=__doc__.split('\n\n')[0],
                           epilog=cli.epilog(keys=True))
    p.add_argument('config', nargs='?', help='YAML config, e.g. configs/demo.yaml')
    p.add_argument('overrides', nargs='*', metavar='key=value',
                   help='optional dotted overrides, e.g. out=results/x train.epochs=3 '
                        'batch.per_worker=16')
    p.add_argument('--show-config', action='store_true',
                   help='print the resolved config (YAML) and exit: no MPI, no data read')
    for i in range(len(argv)):
        instead = _dashed_override(argv, i)
        if instead:
            raise errors.UserError('%s: overrides are written without dashes: %s (see %s --help)'
                                   % (argv[i], instead, PROG))
    args = p.parse_args(argv)
    if args.config is None:
        raise errors.UserError('usage: %s: no config file given, e.g. %s configs/demo.yaml '
                               '(the key=value overrides are optional)' % (USAGE, PROG))
    return args


def show_config(args):
    """The config CONFIG and the overrides resolve to, as YAML (rank 0)."""
    import yaml
    from pfn15 import config as config_module
    cfg = config_module.load(args.config, args.overrides, check_paths=False)
    if errors.launcher_rank() == 0:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None), end='',
              flush=True)
    return 0


def use_forkserver():
    """ChainerMN guidance: forking after InfiniBand is initialized crashes, so decoding
    processes come from a forkserver started *before* MPI is initialized."""
    multiprocessing.set_start_method('forkserver', force=True)
    p = multiprocessing.Process()
    p.start()
    p.join()


class Run(object):
    """What `build` assembles: the trainer plus the pieces the summary reads."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def build(cfg, comm, progress=None):
    """Data, model, optimizer, updater, trainer and extensions for `cfg` on `comm`;
    the updater, evaluator and checkpointer tell `progress` where they are
    (pfn15.training.progress)."""
    import chainer
    from chainer import training
    from chainer.training import extensions as E
    import numpy

    from pfn15 import cpu
    from pfn15 import comm as comm_module
    from pfn15 import data, models, optimizers
    from pfn15.data import order
    from pfn15.data.iterator import GlobalOrderIterator
    from pfn15.training import checkpoint, checks, console, plot, resume
    from pfn15.training.finite import FiniteGradientCheck
    from pfn15.training.plot import TrainingPlot
    from pfn15.training.recipe import AllreduceBNStatistics, ScheduleDriver
    from pfn15.training.reporting import BadImageCount, Throughput
    from pfn15.training.triggers import EpochTrigger, StopTrigger
    from pfn15.training.evaluator import WholeSetEvaluator
    from pfn15.training.progress import AfterUpdate
    from pfn15.training.updater import AccumulatingUpdater

    numpy.random.seed(cfg.seed + comm.rank)
    device = -1
    if cfg.train.device == 'gpu':
        device = comm.intra_rank   # one rank per GPU
        chainer.cuda.get_device_from_id(device).use()
        from pfn15.env import check_cudnn
        check_cudnn(cfg, comm)   # im2col instead of cuDNN: say so once, or stop
    else:
        # With pfn15's functions the rank's threads split the products (BLAS: one);
        # oneDNN gets the same count for its OpenMP team. Before cpu_choice: loading
        # oneDNN fixes OpenMP's wait policy, which depends on these threads fitting
        # the node (oneDNN's fallback, pfn15's functions, splits the products too).
        cpu.set_threads(cfg.train.cpu_threads, comm.intra_size,
                        split_products=cfg.model.cpu_functions != 'chainer',
                        loader_processes=cfg.data.loader_workers if cfg.data.decodes_files
                        else 0)
        functions, _, notice = models.cpu_choice(cfg)
        if notice and comm.rank == 0:
            print('pfn15: %s' % notice, flush=True)
        if cfg.train.keep_freed_memory:
            cpu.keep_freed_memory()   # before the model and data allocate
    gpu_mixed16 = cfg.train.dtype == 'mixed16' and device >= 0
    if gpu_mixed16:   # on CPU the model computes bf16 itself (models.cpu_choice)
        chainer.global_config.dtype = chainer.mixed16

    # Data: rank 0 lists and broadcasts; every rank holds the whole training
    # index (the global order may give it any sample) and its share of validation.
    train, val, meta = data.build(cfg, comm)
    decoders = (None, None)
    if cfg.data.decoder == 'dali':
        from pfn15.data import dali
        decoders = data.dali_decoders(cfg, device if device >= 0 else None)
        val_iter = dali.Batches(val, decoders[1], cfg.batch.per_worker)
    elif cfg.data.loader_workers > 0 and cfg.data.decodes_files:
        val_iter = chainer.iterators.MultiprocessIterator(
            val, cfg.batch.per_worker, repeat=False, shuffle=False,
            n_processes=cfg.data.loader_workers)
    else:
        val_iter = chainer.iterators.SerialIterator(val, cfg.batch.per_worker,
                                                    repeat=False, shuffle=False)

    # Model: every rank builds it from its own seed; the multi-node optimizer
    # broadcasts rank 0's parameters before the first update.
    predictor = models.build(cfg, meta['classes'], meta['in_channels'])
    model = models.Classifier(predictor, label_smoothing=cfg.optimizer.label_smoothing)
    if device >= 0:
        model.to_gpu(device)

    # The batch arithmetic (global batch, microbatches, base rate, epochs of every
    # update), which everything below asks.
    plan = order.BatchPlan.from_config(cfg, meta['train_size'], comm.size)
    optimizer = optimizers.build(cfg.optimizer, model, lr=plan.base_lr(0))
    if gpu_mixed16:
        optimizer.loss_scaling()      # dynamic loss scaling for float16 gradients
        optimizer.use_fp32_update()   # float32 master weights
    if cfg.train.check_finite:
        optimizer.add_hook(FiniteGradientCheck())
    optimizer = comm_module.multi_node_optimizer(optimizer, comm, model)

    # The global sample order: update i, worker w, microbatch m always trains on
    # the same BN group of the same samples, whatever the worker count.
    stop = StopTrigger(cfg.train.epochs, cfg.train.iterations, plan)
    train_iter = GlobalOrderIterator(
        train, cfg.seed, plan, comm.rank, stop.iterations,
        transform=data.train_transform(cfg),
        loader_workers=cfg.data.loader_workers if cfg.data.decodes_files else 0,
        decoder=decoders[0])
    updater = AccumulatingUpdater(train_iter, optimizer, plan.microbatches(0), device=device,
                                  comm=comm, plan=plan,
                                  average_bn_statistics=not cfg.bn.moving_average,
                                  canonical=cfg.comm.reduction == 'canonical',
                                  progress=progress)
    train_iter.follow(updater)
    trainer = training.Trainer(updater, stop, out=cfg.out)
    if progress is not None:
        trainer.extend(AfterUpdate(progress))

    # The recipe: schedule every iteration; before each evaluation, BN
    # statistics of the last global batch (its groups' mean, over workers).
    trainer.extend(ScheduleDriver(cfg, plan))
    eval_trigger = EpochTrigger(cfg.train.eval_every_epochs, plan, stop)
    if not cfg.bn.moving_average:
        trainer.extend(AllreduceBNStatistics(predictor, comm, eval_trigger))
    # Sample-weighted mean over the whole validation set (pfn15/training/evaluator.py).
    trainer.extend(WholeSetEvaluator(val_iter, model, comm, eval_trigger, device=device,
                                     top5=meta['classes'] > 5,
                                     canonical=(meta['val_size'], cfg.batch.per_worker)
                                     if cfg.comm.reduction == 'canonical' else None,
                                     progress=progress),
                   trigger=eval_trigger, name='validation')
    trainer.extend(Throughput(plan))

    checkpointer = checkpoint.Checkpointer(cfg.out, comm, model, resume.identity(cfg, meta),
                                           keep=cfg.checkpoint.keep, progress=progress)
    trainer.extend(checkpoint.CheckpointExtension(checkpointer, cfg.checkpoint.every_iterations,
                                                  stop))
    # Missing files, too many corrupt images, stop signals: the collective checks
    # (pfn15/training/checks.py), one all-reduce per iteration, so every rank
    # stops together (before the checkpoint).
    collective_checks = checks.build(cfg, types.SimpleNamespace(
        comm=comm, checkpointer=checkpointer, plan=plan, meta=meta))
    trainer.extend(checks.CollectiveChecks(comm, collective_checks))
    data_check = next((c for c in collective_checks if isinstance(c, checks.DataCheck)), None)

    log_trigger = EpochTrigger(1, plan, stop)
    if cfg.data.decodes_files:
        trainer.extend(BadImageCount(comm, log_trigger))
    log_report = None
    if comm.rank == 0:   # reporting on rank 0 only
        log_report = E.LogReport(trigger=log_trigger)
        trainer.extend(log_report)
        # A job log or a pipe gets plain lines; a terminal, Chainer's table and bar.
        terminal = console.on_terminal()
        trainer.extend(E.PrintReport(
            ['epoch', 'iteration', 'main/loss', 'main/accuracy', 'validation/main/loss',
             'validation/main/accuracy']
            + list(optimizers.entry(cfg.optimizer.name).columns())
            + ['images/s', 'elapsed_time'],
            out=sys.stdout if terminal else console.PlainLines()))
        total = plan.epochs_at(stop.iterations)
        title = '%s: %d worker(s), global batch %d' % (cfg.name, comm.size, cfg.batch.global_)
        for keys, name, what in ((['main/loss', 'validation/main/loss'], 'loss.png', 'loss'),
                                 (['main/accuracy', 'validation/main/accuracy'],
                                  'accuracy.png', 'top-1 accuracy')):
            trainer.extend(TrainingPlot(
                keys, plot.AnyOf(EpochTrigger(plot.point_period(total), plan, stop),
                                 eval_trigger),   # validation points sit at their epoch
                plan, name, what, '%s -- %s' % (what, title)))
        if cfg.train.progress_bar and terminal:
            trainer.extend(E.ProgressBar(update_interval=cfg.train.progress_every))
        elif cfg.train.progress_bar:
            trainer.extend(console.PlainProgress(stop.iterations, plan, cfg.train.progress_every))

    return Run(trainer=trainer, updater=updater, optimizer=optimizer, model=model,
               meta=meta, checkpointer=checkpointer, log_report=log_report, plan=plan,
               data_check=data_check)


def freeze_setup_objects():
    """Leave what start-up built (model, data, trainer, libraries) out of Python's
    full garbage collections. Chainer's graphs make enough objects that one
    runs every ~10 iterations, and each walked all ~140 k of them: 85 ms, in a
    1.4 s ResNet-50 CPU iteration. Objects still die by reference count."""
    import gc
    gc.collect()
    gc.freeze()


def build_trainer(cfg, comm):
    """The trainer alone (for benchmarks that drive it themselves)."""
    return build(cfg, comm).trainer


def summarize(cfg, comm, run, wall_seconds, resumed_from, health=None):
    """The figures of a finished run, for summary.json (rank 0)."""
    updater = run.updater
    last_val = {}
    for entry in (run.log_report.log if run.log_report else []):
        if 'validation/main/accuracy' in entry:
            last_val = entry
    last = run.log_report.log[-1] if run.log_report and run.log_report.log else {}
    epochs = run.plan.epochs_at(updater.iteration)
    images = run.plan.samples_before(updater.iteration)   # the batch may have grown
    summary = {
        'name': cfg.name,
        'workers': comm.size,
        'global_batch': cfg.batch.global_,
        'per_worker_batch': cfg.batch.per_worker,
        'microbatches': run.plan.microbatches(0),
        'epochs': epochs,
        'iterations': updater.iteration,
        'val_top1': last_val.get('validation/main/accuracy'),
        'val_loss': last_val.get('validation/main/loss'),
        'train_loss': last.get('main/loss'),
        'train_top1': last.get('main/accuracy'),
        'train_images_per_sec': images / updater.update_seconds if updater.update_seconds else None,
        # Median seconds of one update (all microbatches, the all-reduce), the first
        # one (allocations, the first all-reduce) left out: what pfn15.plan predicts.
        'iteration_seconds_median': (statistics.median(updater.update_durations[1:])
                                     if len(updater.update_durations) > 1 else None),
        'wall_seconds': wall_seconds,
        'resumed_from_iteration': resumed_from,
        'config': cfg.to_dict(),
    }
    if run.meta['classes'] > 5:
        summary['val_top5'] = last_val.get('validation/main/top5')
    # Corrupt images replaced by the mean image (label kept), each use counted,
    # and the distinct files (this run's part, when resumed).
    summary['bad_images'] = health['bad_images'] if health else 0
    summary['bad_files'] = health['bad_files'][:100] if health else []
    return summary


def main(argv=None):
    """The whole run; every stop ends here: its one line from rank 0, its exit status."""
    signals.install()   # first: from here on a stop signal is never lost
    try:
        return train(sys.argv[1:] if argv is None else argv)
    except errors.Stop as e:
        if not e.collective and 'mpi4py.MPI' in sys.modules:
            # Met by this rank alone (data.bad_images=error): the others wait in
            # a collective, so name this rank and end the job from here.
            errors.abort_job('pfn15: error: rank %d on %s: %s'
                             % (signals.rank(), errors.host(), e), e.status)
        return errors.say(e, signals.rank())


def train(argv):
    start = time.time()
    args = parse_args(argv)
    if args.show_config:
        return show_config(args)
    # Every start-up check gives a verdict instead of exiting, so no rank leaves
    # the others waiting: the verdicts meet in startup.agree (exit 2, one line).
    cfg, error = startup.load_config(args)
    if (cfg is not None and cfg.data.decodes_files and cfg.data.loader_workers > 0
            and cfg.data.decoder == 'pil'):   # DALI decodes in threads
        use_forkserver()   # before MPI starts
    # Not imported at the top: the forkserver imports this module, and must
    # not initialize MPI.
    from mpi4py import MPI
    from pfn15.training.progress import WatchdogProgress
    from pfn15.training.watchdog import Watchdog
    world = MPI.COMM_WORLD
    signals.set_rank(world.rank)
    # Its own communicator: its messages never meet the trainer's (ChainerMN
    # receives with MPI.ANY_TAG on COMM_WORLD). The first collective after MPI_Init.
    watchdog = Watchdog(world.Dup(), MPI.Get_processor_name(),
                        cfg.train.stall_timeout if cfg else 300.0).start()
    atexit.register(watchdog.stop)   # before MPI_Finalize, on every way out
    hosts = world.allgather(MPI.Get_processor_name())
    local_rank, _ = startup.local_ranks(hosts, world.rank)
    startup.agree(world, error or startup.check_world(cfg, world.size, local_rank), hosts)

    import chainermn
    from pfn15 import comm as comm_module
    from pfn15.data import DataError
    from pfn15.training import resume
    from pfn15.training.finite import NonFiniteError
    from pfn15.training.reporting import write_summary
    # Any other uncaught exception on any rank: print it once, MPI_Abort the
    # job -- never leave 1,023 ranks waiting in an all-reduce. (ChainerMN has
    # already added the hook at import if CHAINERMN_FORCE_ABORT_ON_EXCEPTION is set.)
    if not os.environ.get('CHAINERMN_FORCE_ABORT_ON_EXCEPTION'):
        chainermn.global_except_hook.add_hook()
    comm = comm_module.create(cfg)

    watchdog.tick('start-up: data listing, model', -1, slow=True)
    run, error = None, None
    try:
        run = build(cfg, comm, WatchdogProgress(watchdog))
    except DataError as e:
        error = str(e)
    # Room for two checkpoints in out (an estimate: optimizer states appear later).
    file_bytes = startup.checkpoint_file_bytes(run.model, cfg.optimizer.name) if run else 0
    error = error or startup.check_room(world, hosts, cfg.out, file_bytes)
    startup.agree(world, error, hosts)

    # Elastic resume on any worker count; refuses to mix runs (resume.Refused,
    # exit 2), and leaves a finished run alone (resume.Finished, exit 0).
    watchdog.tick('start-up: resume', -1, slow=True)
    resumed_from = resume.start(cfg, comm, run)
    if comm.rank == 0:
        print('pfn15: resumed from the checkpoint at iteration %d' % resumed_from
              if resumed_from is not None else
              'pfn15: no checkpoint found in %s; starting fresh' % run.checkpointer.root
              if cfg.resume.mode == 'auto' else 'pfn15: starting fresh (resume=none)',
              flush=True)
    # A stop signal during start-up: exit 0 now (the job script requeues).
    startup.agree(world, None, hosts, 'nothing to save' if resumed_from is None else
                  'the checkpoint at iteration %d is kept' % resumed_from)
    if comm.rank == 0:
        print('pfn15: %s on %d worker(s): global batch %d = %d workers x %d per worker x %d '
              'microbatch(es); %d training images, %d classes'
              % (cfg.name, comm.size, cfg.batch.global_, comm.size, cfg.batch.per_worker,
                 run.plan.microbatches(0), run.meta['train_size'], run.meta['classes']),
              flush=True)

    watchdog.emergency_save = lambda: run.checkpointer.save_emergency(run.trainer)
    freeze_setup_objects()
    try:
        # Expected stops (errors.Stop: preempted, non-finite, data, checkpoint
        # write) end in main(); anything else is printed by the except hook
        # before MPI_Abort.
        run.trainer.run(show_loop_exception_msg=False)
    except NonFiniteError as e:
        saved = run.checkpointer.last_saved
        raise NonFiniteError('%s. The last good checkpoint (%s) is kept.' % (
            e, 'iteration %d' % saved if saved is not None else 'none written yet')) from None
    finally:
        watchdog.stop()

    # Every rank: the bad files not named yet, and the total of replaced images.
    health = run.data_check.final(comm) if run.data_check is not None else None
    if comm.rank == 0:
        summary = summarize(cfg, comm, run, time.time() - start, resumed_from, health)
        write_summary(os.path.join(cfg.out, 'summary.json'), summary)
        print('pfn15: done: %d iterations, %.2f epochs, val top-1 %s, %.1f train images/s, '
              '%.1f s; results in %s'
              % (summary['iterations'], summary['epochs'],
                 '%.4f' % summary['val_top1'] if summary['val_top1'] is not None else 'n/a',
                 summary['train_images_per_sec'] or 0.0, summary['wall_seconds'], cfg.out),
              flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
