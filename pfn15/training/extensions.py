"""The trainer extensions and hooks of a pfn15 run, one import away (as
chainer.training.extensions gathers Chainer's); each lives in the module of
its job:

  recipe.py     ScheduleDriver, AllreduceBNStatistics
  triggers.py   GlobalEpochs, StopTrigger, EpochTrigger
  reporting.py  Throughput, BadImageCount, PlotReport, write_summary
  finite.py     FiniteGradientCheck, NonFiniteError
  checks.py     the collective per-iteration checks (CollectiveChecks, CHECKS)
"""
from pfn15.training.finite import FiniteGradientCheck, NonFiniteError  # noqa: F401
from pfn15.training.recipe import AllreduceBNStatistics, ScheduleDriver  # noqa: F401
from pfn15.training.reporting import (  # noqa: F401
    BadImageCount, PlotReport, Throughput, write_summary)
from pfn15.training.triggers import EpochTrigger, GlobalEpochs, StopTrigger  # noqa: F401
