"""loss.png and accuracy.png of a run: Chainer's PlotReport, drawn for a reader.

The points are collected as PlotReport collects them (the same `_data`; the
pending observations and the trigger are checkpointed too, reporting.PlotReport,
so a resumed run draws the uninterrupted run's points), but x is the job's fractional epoch (samples
seen by all workers / training-set size), and a short run gets several
points per epoch, so even a one-epoch run draws a line. The figure has a
title, labelled axes and whole-epoch ticks.
"""
import os

from pfn15.training.reporting import PlotReport

# A run shorter than this many epochs gets this many training points in all.
MIN_POINTS = 8

LABELS = {'main/loss': 'training', 'validation/main/loss': 'validation',
          'main/accuracy': 'training', 'validation/main/accuracy': 'validation'}


def point_period(total_epochs):
    """Epochs between two training points: one per epoch, or MIN_POINTS in a short run."""
    return 1.0 if total_epochs >= MIN_POINTS else total_epochs / float(MIN_POINTS)


class AnyOf(object):
    """A trigger that fires when any of `triggers` fires (each is asked every time)."""

    def __init__(self, *triggers):
        self.triggers = triggers

    def __call__(self, trainer):
        return any([t(trainer) for t in self.triggers])

    def serialize(self, serializer):
        for i, t in enumerate(self.triggers):
            if hasattr(t, 'serialize'):
                t.serialize(serializer['trigger_%d' % i])


class TrainingPlot(PlotReport):

    """PlotReport of `y_keys` against the global epoch, with a title and labels.

    `trigger`: when to add a point (a callable of the trainer, e.g. an
    EpochTrigger); `plan`: the run's BatchPlan (its epochs are x).
    """

    # The trainer's names for it (PlotReport, PlotReport_1) and so its keys in a
    # checkpoint stay those of Chainer's PlotReport.
    default_name = 'PlotReport'

    def __init__(self, y_keys, trigger, plan, filename, ylabel, title):
        super().__init__(list(y_keys), 'epoch', trigger=trigger, filename=filename)
        self._plan = plan
        self.ylabel = ylabel
        self.title = title

    def __call__(self, trainer):
        if not self.available():
            return
        observation = trainer.observation
        self._summary.add({k: observation[k] for k in self._y_keys if k in observation})
        if trainer.is_before_training or not self._trigger(trainer):
            return
        stats = {k: float(v) for k, v in self._summary.compute_mean().items()}
        x = round(self._plan.epochs_at(trainer.updater.iteration), 6)
        for k in self._y_keys:
            if k in stats:
                self._data[k].append((x, stats[k]))
        self._init_summary()
        self.draw(os.path.join(trainer.out, self._file_name))

    def draw(self, path):
        """Write the figure of the points so far to `path`; returns what it drew."""
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        drawn = []
        for n, k in enumerate(self._y_keys):
            xy = self._data[k]
            if not xy:
                continue
            xs, ys = [p[0] for p in xy], [p[1] for p in xy]
            label = LABELS.get(k, k)
            # Validation often has one point per epoch (one in all in a one-epoch
            # run): big markers keep a lone point visible.
            ax.plot(xs, ys, '-', marker='o', ms=3 if len(xs) > 20 else 5, lw=1.6,
                    label='%s (%s)' % (label, k), zorder=3 + n)
            drawn.append(k)
        if not drawn:
            plt.close(fig)
            return None
        ax.set_xlabel('epoch (samples seen by all workers / training images)')
        ax.set_ylabel(self.ylabel)
        ax.set_title(self.title, fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        lo = min(p[0] for k in drawn for p in self._data[k])
        hi = max(p[0] for k in drawn for p in self._data[k])
        ax.set_xlim(min(0.0, lo), max(1.0, hi) * 1.02)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc='upper center', bbox_to_anchor=(0.5, -0.16), ncol=2,
                  frameon=False)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        what = {'x_ticks': [t.get_text() for t in ax.get_xticklabels()],
                'xlabel': ax.get_xlabel(), 'ylabel': ax.get_ylabel(), 'title': ax.get_title(),
                'lines': {k: len(self._data[k]) for k in drawn}}
        plt.close(fig)
        return what
