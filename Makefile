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

.PHONY: demo test install clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade 'pip' 'setuptools==69.5.1' wheel
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(BIN)/pip install -q -e '.[mpich,test]'
	touch $@

demo: install
	$(BIN)/mpiexec -n $(RANKS) $(BIN)/python -m pfn15.train configs/demo.yaml

test: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) results
