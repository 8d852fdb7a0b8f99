#!/bin/bash
# To run on your cluster, edit the block marked "EDIT HERE" below (account,
# partition or queue, modules or container, venv); nothing else needs editing.
# A small CPU job to check a cluster set-up before spending GPU hours: 2 nodes
# x 2 MPI ranks train the demo (configs/demo.yaml: a small ResNet on the
# scikit-learn digits, no downloads, no GPU) for 6 of its 18 epochs, a minute
# or two (past 95% validation accuracy; the demo's own bar). It checks
# that mpi4py talks to this cluster's MPI across nodes, that pfn15 runs in the
# job's environment, that the output directory is writable from every node,
# and (if you signal it, see below) that preemption and resubmission work.
#
# Submit from the repository root (PBS Pro; Torque: see the resource lines):
#   qsub jobs/pbs/cpu-check.sh
# Results go to results/cpu-check-JOBID. To test preemption, while it trains:
#   qsig -s USR1 JOBID
# The log should then show "preempted" and a new job that continues from the
# checkpoint to the same end.
#
#PBS -N pfn15-cpu-check
# 2 nodes, 2 MPI ranks each, 2 cores per rank. Torque: -l nodes=2:ppn=2
# (ppn is the ranks per node: $PBS_NODEFILE lists each node ppn times).
#PBS -l select=2:ncpus=4:mpiprocs=2
#PBS -l place=scatter
#PBS -l walltime=00:15:00
# Rerunnable: PBS may requeue and rerun the job itself (node failure,
# preemption by the scheduler); resume=auto then continues from a checkpoint.
#PBS -r y
#PBS -j oe

# ============================ EDIT HERE: your cluster ============================
# Project (account) and queue: delete one '#' to turn a line on. (qsub reads
# the #PBS lines up to the first command: keep them above the settings below.)
##PBS -A YOUR_ACCOUNT
##PBS -q YOUR_QUEUE
# The software, the same in every job script: modules to load (empty: none);
# an Apptainer/Singularity image to run pfn15 in (empty: none); else the
# virtual environment where pfn15 is installed (relative to the directory you
# submit from, or absolute). Each can also be set when submitting.
PFN15_MODULES="${PFN15_MODULES:-}"        # e.g. "cuda/12.2 openmpi/4.1.5"
PFN15_CONTAINER="${PFN15_CONTAINER:-}"    # e.g. /images/pfn15.sif
PFN15_VENV="${PFN15_VENV:-.venv}"
# ============================= end of the block to edit =============================

set -uo pipefail   # not -e: the training step's exit status is handled below
cd "${PBS_O_WORKDIR:-.}" || exit 1
# This file, relative to the repository root, for the resubmission below
# (PBS runs a copy of it, so $0 is not it).
JOB_SCRIPT=jobs/pbs/cpu-check.sh
if [ -z "${PBS_JOBID:-}" ]; then
    echo "pfn15: not under PBS (no PBS_JOBID): running as a local job here, with no walltime and no resubmission; submit it with qsub"
fi

# ---------------------------------------------------------------- software
# The set-up of the block above (the same in every job script). Every rank
# runs "${PY[@]}": the venv's python by its full path (the ranks on other
# nodes need no PATH from this shell), or python inside the container.
if [ -n "$PFN15_MODULES" ]; then
    if ! command -v module >/dev/null 2>&1; then
        echo "pfn15: error: PFN15_MODULES is set but this shell has no 'module' command" >&2
        exit 2
    fi
    # shellcheck disable=SC2086  # a list of module names
    module load $PFN15_MODULES || { echo "pfn15: error: module load $PFN15_MODULES failed" >&2; exit 2; }
fi
if [ -n "$PFN15_CONTAINER" ]; then
    PY=(apptainer exec --nv "$PFN15_CONTAINER" python)
elif [ -f "$PFN15_VENV/bin/activate" ]; then
    # shellcheck source=/dev/null
    . "$PFN15_VENV/bin/activate"
    PY=("$VIRTUAL_ENV/bin/python")
else
    echo "pfn15: no virtual environment at $PFN15_VENV (PFN15_VENV, in the block at the top); using $(command -v python || echo 'python, not found on PATH')"
    PY=(python)
fi

# ---------------------------------------------------------------- environment
# Per job id, and passed on to the resubmitted job so it continues this run;
# a new submission starts fresh. On a file system every node shares.
OUT_DIR="${PFN15_OUT:-results/cpu-check-${PBS_JOBID:-local}}"
# One OpenMP/BLAS thread per core a rank has (ncpus / mpiprocs = 2); PBS's own
# default is ncpus per chunk, which would oversubscribe.
export OMP_NUM_THREADS=2
# An uncaught exception on any rank calls MPI_Abort, so the other ranks do not
# wait forever in an all-reduce. pfn15.train installs the same hook itself;
# the variable installs it at `import chainermn`, so it also covers the
# communicator's set-up (NCCL) that comes before. Harmless twice.
export CHAINERMN_FORCE_ABORT_ON_EXCEPTION=1
# No NCCL settings (CPU only: the 'naive' MPI communicator) and no variable
# for the multiprocessing start method (pfn15.train sets 'forkserver' itself
# when it starts data-loading processes).

# ---------------------------------------------------------------- launch
# The stack this node gives the run, checked against the config first
# (python -m pfn15.env: GPU, CuPy, NCCL, cuDNN, MPI): a broken node fails
# here in seconds, one line per problem, instead of after the queue wait.
"${PY[@]}" -m pfn15.env configs/demo.yaml || exit 2

# 1. MPI across nodes. Every rank must print "of 4". If each says "rank 0 of
# 1", mpi4py was built against another MPI than this mpiexec (the PyPI mpich
# wheel, say): MPICC=mpicc pip install --no-binary=mpi4py mpi4py
mpiexec -n 4 "${PY[@]}" -c '
import socket, sys
from mpi4py import MPI
c = MPI.COMM_WORLD
print("rank %d of %d on %s: %s" % (c.rank, c.size, socket.gethostname(),
                                   MPI.Get_library_version().splitlines()[0]), flush=True)
sys.exit(0 if c.size > 1 else "mpi4py sees a world of 1 rank: it does not use this mpiexec")
' || exit 1

# 2. Training; mpiexec takes the nodes from $PBS_NODEFILE (see jobs/pbs/32k.sh).
# 4 ranks x 32 images = demo.yaml's global batch of 128, without accumulation:
# the same global batch and schedule as `make demo` (2 ranks x 2 microbatches),
# so its accuracy should come out close to the demo's.
mpiexec -n 4 "${PY[@]}" -m pfn15.train configs/demo.yaml train.epochs=6 out="$OUT_DIR" resume=auto &
TRAIN_PID=$!

# ---------------------------------------------------------------- preemption
# SIGUSR1 (the timer below, or `qsig -s USR1 JOBID`): pass it on (mpiexec
# forwards SIGUSR1 to every rank unchanged), and submit the next job once the
# training has checkpointed. SIGTERM (qdel, the walltime, the scheduler's
# preemption): pass it on and keep waiting, but do not resubmit.
WARN_S=120
MAX_RESUBMITS="${MAX_RESUBMITS:-3}"
RESUBMIT=0
trap 'RESUBMIT=1; kill -USR1 "$TRAIN_PID" 2>/dev/null' USR1
trap 'kill -USR1 "$TRAIN_PID" 2>/dev/null' TERM

# The timer: SIGUSR1 to this script WARN_S seconds before the walltime that
# qstat reports (PBS Pro and Torque print "Resource_List.walltime = H:M:S").
warn_before_walltime() {
    local sleeper=
    trap '[ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null; exit 0' TERM
    sleep "$1" & sleeper=$!
    wait "$sleeper" && kill -USR1 "$$"
}
WALLTIME_S=$(qstat -f "${PBS_JOBID:-}" 2>/dev/null |
    awk -F' = ' '/Resource_List.walltime/ {n = split($2, t, ":"); print t[n-2]*3600 + t[n-1]*60 + t[n]; exit}')
TIMER_PID=
if [ -n "$WALLTIME_S" ] && [ "$WALLTIME_S" -gt "$WARN_S" ]; then
    # Detached from the job's output: a TERM between the timer's fork of sleep
    # and its noting the PID leaves that sleep behind, and it must not hold
    # the log open.
    warn_before_walltime "$((WALLTIME_S - WARN_S))" </dev/null >/dev/null 2>&1 &
    TIMER_PID=$!
else
    echo "pfn15: walltime unknown (qstat -f); no checkpoint before the walltime" >&2
fi

# A trapped signal makes `wait` return early; wait again until mpiexec is
# gone. Bash keeps a background job's exit status, so the last wait gets it.
while kill -0 "$TRAIN_PID" 2>/dev/null; do wait "$TRAIN_PID"; done
wait "$TRAIN_PID"
rc=$?
if [ -n "$TIMER_PID" ]; then kill "$TIMER_PID" 2>/dev/null; fi

if [ "$RESUBMIT" = 1 ]; then
    if [ "$rc" -ne 0 ]; then
        echo "pfn15: training exited with status $rc after SIGUSR1; not resubmitting" >&2
        exit "$rc"
    fi
    done_before="${PFN15_RESUBMITS:-0}"
    if [ "$done_before" -ge "$MAX_RESUBMITS" ]; then
        echo "pfn15: checkpoint written, but the run was already resubmitted $MAX_RESUBMITS times; not resubmitting" >&2
        exit 1
    fi
    echo "pfn15: checkpoint written; submitting $JOB_SCRIPT to continue after job ${PBS_JOBID:-}"
    qsub -W depend=afterany:"${PBS_JOBID:-}" \
        -v "PFN15_RESUBMITS=$((done_before + 1)),PFN15_OUT=$OUT_DIR" \
        "$JOB_SCRIPT" || exit 1
    exit 0
fi
exit "$rc"
