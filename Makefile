# The two commands of the README: `make demo` and `make test`. Each creates
# .venv and installs the pinned dependencies first (once; again when setup.py
# or the constraints change, or the venv is of another Python).
#
# Which Python: PYTHON=... if given (e.g. `make demo PYTHON=python3.13`), else
# Python 3.11 (the record runs' stack: NumPy 1.x, CuPy 13 with cuDNN), else
# the newest of 3.13, 3.12 and `python3`. The pins follow that interpreter:
# constraints.txt for 3.11 and older, constraints-py312.txt (NumPy 2; checked
# to resolve on 3.12 and 3.13) for 3.12 and newer.
RANKS  ?= 2
# One BLAS thread per MPI rank: ranks share the cores, oversubscription thrashes.
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

# The real executable behind a command, or nothing. A pyenv shim named python3.12
# can exist without 3.12 selected; PYENV_VERSION picks it then.
python_exe = $(shell $(1) -c 'import sys; print(sys.executable)' 2>/dev/null || \
                     PYENV_VERSION=$(2) $(1) -c 'import sys; print(sys.executable)' 2>/dev/null)
PYTHON311 := $(call python_exe,python3.11,3.11)
ifndef PYTHON312
PYTHON312 := $(call python_exe,python3.12,3.12)
endif
PYTHON313 := $(call python_exe,python3.13,3.13)

ifdef PYTHON
PY := $(call python_exe,$(PYTHON),$(patsubst python%,%,$(notdir $(PYTHON))))
else
PYTHON := $(firstword $(PYTHON311) $(PYTHON313) $(PYTHON312) $(shell command -v python3))
PY := $(PYTHON)
endif
PY_VERSION  := $(if $(PY),$(shell $(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null))
CONSTRAINTS := $(if $(filter 3.6 3.7 3.8 3.9 3.10 3.11,$(PY_VERSION)),constraints.txt,constraints-py312.txt)
VENV   := .venv
BIN    := $(VENV)/bin
VENV_VERSION := $(shell $(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)

# The Python 3.12 + NumPy 2 leg (CI runs it so the current stack cannot rot):
# the fast CPU tests and the demo in .venv312, pinned by constraints-py312.txt.
VENV312   := .venv312
BIN312    := $(VENV312)/bin

# The kernel-compile venvs (tests/kernels/test_kernels_nvrtc.py): CuPy + NVIDIA's NVRTC
# and CUDA-runtime wheels only (0.2-0.25 GB to download, 0.6 GB installed each; no
# GPU needed), one per stack: CuPy 13 on Python 3.11, CuPy 14 on Python 3.12.
# Pinned by constraints-kernels.txt. A dedicated venv, not the main one: CuPy there
# would add ~1.4 s to every `import chainer` of the CPU tests' MPI ranks.
KVENV     := .venv-kernels
KVENV312  := .venv312-kernels
KERNEL_PKGS := numpy cupy-cuda12x nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12
empty :=
comma := ,
KERNEL_STACKS := $(subst $(empty) $(empty),$(comma),$(strip $(if $(PYTHON311),cupy13) $(if $(PYTHON312),cupy14)))

.PHONY: demo test test-py312 test-kernels plan-check install install-dali install-py312 install-kernels clean

install: $(VENV)/.installed

# chainer 7.8.1 is an sdist whose setup.py imports pkg_resources: its build
# must see setuptools<70. pip >= 25.3 no longer applies PIP_CONSTRAINT to build
# dependencies, so PIP_BUILD_CONSTRAINT says it again. The editable install is
# a plain path (editable_mode=compat): setuptools' import-hook finder would add
# tens of milliseconds to every interpreter start, before pfn15.train can
# install its signal handlers.
$(VENV)/.installed: setup.py pfn15/optimizers/cpu_update.c $(CONSTRAINTS) $(if $(filter-out $(PY_VERSION),$(VENV_VERSION)),FORCE)
	@test -n "$(PY_VERSION)" || { echo "make: cannot run Python '$(PYTHON)'; give PYTHON=python3.11 (or 3.12, 3.13)" >&2; exit 2; }
ifneq ($(filter-out $(PY_VERSION),$(VENV_VERSION)),)
	@echo "make: $(VENV) is Python $(VENV_VERSION); making it anew for Python $(PY_VERSION)"
	rm -rf $(VENV)
endif
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade 'pip' 'setuptools==69.5.1' wheel
	PIP_CONSTRAINT=$(CURDIR)/$(CONSTRAINTS) PIP_BUILD_CONSTRAINT=$(CURDIR)/$(CONSTRAINTS) \
	  $(BIN)/pip install -q -e '.[mpich,test]' --config-settings editable_mode=compat
	touch $@

# NVIDIA DALI for tests/unit/test_dali.py and tests/mpi/test_dali_runs.py (its CPU-only
# mode; ~1 GB installed), on top of the demo's install: `make demo` does not need it.
install-dali: $(VENV)/.installed-dali

$(VENV)/.installed-dali: $(VENV)/.installed
	PIP_CONSTRAINT=$(CURDIR)/$(CONSTRAINTS) PIP_BUILD_CONSTRAINT=$(CURDIR)/$(CONSTRAINTS) \
	  $(BIN)/pip install -q -e '.[mpich,test,dali]' --config-settings editable_mode=compat
	touch $@

FORCE:

demo: install
	$(BIN)/mpiexec -n $(RANKS) $(BIN)/python -m pfn15.train configs/demo.yaml

# Calibrate pfn15.plan here, then check it against pfn15.train at 1, 2, 3 ranks (~1 min).
plan-check: install
	$(BIN)/python tools/plan_check.py

test: install install-dali install-kernels
	PFN15_KERNEL_STACKS=$(KERNEL_STACKS) PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q tests
	@$(MAKE) --no-print-directory test-py312

# The GPU kernels alone (tests/kernels/): NVRTC compiles (both CuPy stacks),
# host-compiled kernel bodies against the NumPy rules, float16 optimizers, the
# ChainerMN patches, tools/gpu_check.py's budgeting.
test-kernels: install install-kernels
	PFN15_KERNEL_STACKS=$(KERNEL_STACKS) PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q \
	  tests/kernels

install-kernels:
ifneq ($(strip $(PYTHON311)),)
install-kernels: $(KVENV)/.installed
endif
ifneq ($(strip $(PYTHON312)),)
install-kernels: $(KVENV312)/.installed
endif

$(KVENV)/.installed: constraints-kernels.txt
	$(PYTHON311) -m venv $(KVENV)
	PIP_CONSTRAINT=$(CURDIR)/constraints-kernels.txt $(KVENV)/bin/pip install -q $(KERNEL_PKGS)
	touch $@

$(KVENV312)/.installed: constraints-kernels.txt
	$(PYTHON312) -m venv $(KVENV312)
	PIP_CONSTRAINT=$(CURDIR)/constraints-kernels.txt $(KVENV312)/bin/pip install -q $(KERNEL_PKGS)
	touch $@

install-py312: $(VENV312)/.installed

$(VENV312)/.installed: setup.py pfn15/optimizers/cpu_update.c constraints-py312.txt
	@test -n "$(PYTHON312)" || { echo 'python3.12 not found' >&2; exit 1; }
	$(PYTHON312) -m venv $(VENV312)
	$(BIN312)/pip install -q --upgrade 'pip' 'setuptools==69.5.1' wheel
	PIP_CONSTRAINT=$(CURDIR)/constraints-py312.txt \
	PIP_BUILD_CONSTRAINT=$(CURDIR)/constraints-py312.txt \
	  $(BIN312)/pip install -q -e '.[mpich,test]' --config-settings editable_mode=compat
	touch $@

# The stack's own leg: the fast in-process tests (tests/unit, tests/kernels),
# then two real runs on this interpreter: the demo (it trains to its bar and
# writes its outputs) and a SIGTERM checkpoint resumed to the uninterrupted
# run's figures. The MPI, job and SLURM tests exercise launchers and schedulers,
# not NumPy: they run once, on the first leg.
test-py312:
ifeq ($(strip $(PYTHON312)),)
	@echo 'SKIPPED: python3.12 not found: the Python 3.12 + NumPy 2 leg (make test-py312) did not run'
else
	@$(MAKE) --no-print-directory install-py312
	PFN15_KERNEL_STACKS=$(KERNEL_STACKS) PATH=$(CURDIR)/$(BIN312):$$PATH $(BIN312)/python -m pytest -q -m "not slow" tests/unit tests/kernels
	PATH=$(CURDIR)/$(BIN312):$$PATH $(BIN312)/python -m pytest -q \
	  tests/mpi/test_train.py::test_demo_trains_to_95_percent_and_writes_its_outputs \
	  tests/mpi/test_train.py::test_sigterm_checkpoint_and_resume_match_uninterrupted_run
endif

clean:
	rm -rf $(VENV) $(VENV312) $(KVENV) $(KVENV312) results
