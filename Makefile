# The two commands of the README: `make demo` and `make test`. Each creates
# .venv and installs the pinned dependencies first (once; again when
# setup.py or constraints.txt change).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
RANKS  ?= 2
# One BLAS thread per MPI rank: ranks share the cores, oversubscription thrashes.
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

# The Python 3.12 + NumPy 2 leg (CI runs it so the current stack cannot rot):
# the fast CPU tests in .venv312, pinned by constraints-py312.txt. A pyenv shim
# named python3.12 can exist without 3.12 selected; PYENV_VERSION picks it then.
ifndef PYTHON312
PYTHON312 := $(shell python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null || \
                     PYENV_VERSION=3.12 python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null)
endif
VENV312   := .venv312
BIN312    := $(VENV312)/bin

# The kernel-compile venvs (tests/test_kernels_nvrtc.py): CuPy + NVIDIA's NVRTC
# and CUDA-runtime wheels only (0.2-0.25 GB to download, 0.6 GB installed each; no
# GPU needed), one per stack: CuPy 13 on Python 3.11, CuPy 14 on Python 3.12.
# Pinned by constraints-kernels.txt. A dedicated venv, not the main one: CuPy there
# would add ~1.4 s to every `import chainer` of the CPU tests' MPI ranks.
KVENV     := .venv-kernels
KVENV312  := .venv312-kernels
KERNEL_PKGS := numpy cupy-cuda12x nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12
ifeq ($(strip $(PYTHON312)),)
KERNEL_STACKS := cupy13
else
KERNEL_STACKS := cupy13,cupy14
endif

.PHONY: demo test test-py312 test-kernels plan-check install install-py312 install-kernels clean

install: $(VENV)/.installed

# chainer 7.8.1 is an sdist whose setup.py imports pkg_resources: its build
# must see setuptools<70. pip >= 25.3 no longer applies PIP_CONSTRAINT to build
# dependencies, so PIP_BUILD_CONSTRAINT says it again.
$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade 'pip' 'setuptools==69.5.1' wheel
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt PIP_BUILD_CONSTRAINT=$(CURDIR)/constraints.txt \
	  $(BIN)/pip install -q -e '.[mpich,test]'
	touch $@

demo: install
	$(BIN)/mpiexec -n $(RANKS) $(BIN)/python -m pfn15.train configs/demo.yaml

# Calibrate pfn15.plan here, then check it against pfn15.train at 1, 2, 3 ranks (~1 min).
plan-check: install
	$(BIN)/python tools/plan_check.py

test: install install-kernels
	PFN15_KERNEL_STACKS=$(KERNEL_STACKS) PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q tests
	@$(MAKE) --no-print-directory test-py312

# The GPU kernels alone: NVRTC compiles (both CuPy stacks), host-compiled kernel
# bodies against the NumPy rules, float16 optimizers, the ChainerMN patches.
test-kernels: install install-kernels
	PFN15_KERNEL_STACKS=$(KERNEL_STACKS) PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q \
	  tests/test_kernels_nvrtc.py tests/test_kernels_host.py tests/test_optimizers_float16.py \
	  tests/test_chainermn_patches.py

install-kernels: $(KVENV)/.installed
ifneq ($(strip $(PYTHON312)),)
install-kernels: $(KVENV312)/.installed
endif

$(KVENV)/.installed: constraints-kernels.txt
	$(PYTHON) -m venv $(KVENV)
	PIP_CONSTRAINT=$(CURDIR)/constraints-kernels.txt $(KVENV)/bin/pip install -q $(KERNEL_PKGS)
	touch $@

$(KVENV312)/.installed: constraints-kernels.txt
	$(PYTHON312) -m venv $(KVENV312)
	PIP_CONSTRAINT=$(CURDIR)/constraints-kernels.txt $(KVENV312)/bin/pip install -q $(KERNEL_PKGS)
	touch $@

install-py312: $(VENV312)/.installed

$(VENV312)/.installed: setup.py constraints-py312.txt
	@test -n "$(PYTHON312)" || { echo 'python3.12 not found' >&2; exit 1; }
	$(PYTHON312) -m venv $(VENV312)
	$(BIN312)/pip install -q --upgrade 'pip' 'setuptools==69.5.1' wheel
	PIP_CONSTRAINT=$(CURDIR)/constraints-py312.txt \
	PIP_BUILD_CONSTRAINT=$(CURDIR)/constraints-py312.txt \
	  $(BIN312)/pip install -q -e '.[mpich,test]'
	touch $@

test-py312:
ifeq ($(strip $(PYTHON312)),)
	@echo 'SKIPPED: python3.12 not found: the Python 3.12 + NumPy 2 leg (make test-py312) did not run'
else
	@$(MAKE) --no-print-directory install-py312
	PFN15_KERNEL_STACKS=$(KERNEL_STACKS) PATH=$(CURDIR)/$(BIN312):$$PATH $(BIN312)/python -m pytest -q -m "not slow" tests
endif

clean:
	rm -rf $(VENV) $(VENV312) $(KVENV) $(KVENV312) results
