#!/bin/bash
# To run on your cluster, edit the block marked "EDIT HERE" below (account,
# partition or queue, modules or container, venv); nothing else needs editing.
# The paper's optimization (configs/32k.yaml: global batch 32,768, 90 epochs)
# on one node with 8 GPUs. Gradient accumulation makes the 8 workers run the
# same updates as the paper's 1,024: each accumulates 32768 / (8 x 32) = 128
# microbatches of 32 images per update, and BN still normalizes over 32.
# Expect days, not minutes: the job checkpoints and resubmits itself before
# every walltime until the 90 epochs are done.
#
# Submit from the repository root (PBS Pro; Torque: see the resource lines):
#   qsub -v IMAGENET_ROOT=/data/ILSVRC2012 jobs/pbs/32k-single-node.sh
# Checkpoints, logs and summary.json go to results/32k-8gpu (add PFN15_OUT=...
# to -v to change it). tools/check_jobs.py checks that nodes x ranks per node
# equals the rank count launched below and divides the global batch into
# whole microbatches.
#
# Walltime and preemption: PBS gives no warning before the walltime, so this
# script sends itself SIGUSR1 300 s before it and passes it to the training
# processes, which finish the current iteration, let rank 0 write the
# checkpoint (one file) and exit 0; the script then submits itself again, to
# start when this job has ended and continue from that checkpoint
# (resume=auto). Any other failure ends the job without a resubmission.
#
#PBS -N pfn15-32k-1node
# One node, 8 GPUs and 8 MPI ranks (one per GPU), 6 cores per rank for
# data.loader_workers=6 JPEG decoders. Torque: -l nodes=1:ppn=8:gpus=8 and -n
# for the whole node.
#PBS -l select=1:ncpus=48:ngpus=8:mpiprocs=8
#PBS -l place=excl
# A common site maximum; the job resubmits itself until training is done.
#PBS -l walltime=24:00:00
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
JOB_SCRIPT=jobs/pbs/32k-single-node.sh
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
# configs/32k.yaml reads data.root from ${IMAGENET_ROOT}: train/<wnid>/*.JPEG
# and val/<wnid>/*.JPEG (or list files). A node-local copy (NVMe) helps here:
# 8 GPUs read all of ImageNet every epoch.
export IMAGENET_ROOT="${IMAGENET_ROOT:-/path/to/ILSVRC2012}"
# Not per job id, so the next job finds the checkpoints of this one.
OUT_DIR="${PFN15_OUT:-results/32k-8gpu}"
# One OpenMP/BLAS thread per process: the GPUs do the arithmetic, and 8 ranks
# x 6 decoders already share the node's cores.
export OMP_NUM_THREADS=1
# NCCL errors and warnings only (INFO to see which NVLink/PCIe paths it uses).
# All traffic stays inside the node, so no InfiniBand or interface settings.
export NCCL_DEBUG=WARN
# An uncaught exception on any rank calls MPI_Abort, so the other ranks do not
# wait forever in an all-reduce. pfn15.train installs the same hook itself;
# the variable installs it at `import chainermn`, so it also covers the
# communicator's set-up (NCCL) that comes before. Harmless twice.
export CHAINERMN_FORCE_ABORT_ON_EXCEPTION=1
# No variable for the multiprocessing start method: pfn15.train sets
# 'forkserver' itself before it creates the communicator (ChainerMN's advice
# for InfiniBand), so the data-loading processes start from a clean process.

# ---------------------------------------------------------------- launch
# The stack this node gives the run, checked against the config first
# (python -m pfn15.env: GPU, CuPy, NCCL, cuDNN, MPI): a broken node fails
# here in seconds, one line per problem, instead of after the queue wait.
"${PY[@]}" -m pfn15.env configs/32k.yaml || exit 2

# mpiexec takes the node from $PBS_NODEFILE (Open MPI through its tm support,
# MPICH/Intel MPI's Hydra through its PBS support). Every rank sees all 8 GPUs
# and picks its own by its rank within the node.
# A checkpoint every 100 updates (under an hour on 8 P100s) instead of the
# config's 500, so a crash that is not a preemption loses less.
mpiexec -n 8 "${PY[@]}" -m pfn15.train configs/32k.yaml out="$OUT_DIR" resume=auto checkpoint.every_iterations=100 &
TRAIN_PID=$!

# ---------------------------------------------------------------- preemption
# SIGUSR1 (the timer below, or `qsig -s USR1 JOBID`): pass it on, and submit
# the next job once the training has checkpointed. It is passed as SIGUSR1
# because mpiexec forwards SIGUSR1 to every rank unchanged, while Open MPI's
# mpirun turns SIGTERM into SIGTERM + SIGKILL a second later, too soon to write
# a checkpoint; pfn15.train treats SIGUSR1 and SIGTERM alike.
# SIGTERM (qdel, the walltime itself, the scheduler's preemption, which reruns
# the job by itself since it is rerunnable): pass it on and keep waiting until
# PBS's kill_delay runs out, but do not resubmit. (qrerun would keep the job
# id, but PBS allows it to operators and managers only.)
WARN_S=300
MAX_RESUBMITS="${MAX_RESUBMITS:-20}"
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
        -v "PFN15_RESUBMITS=$((done_before + 1)),PFN15_OUT=$OUT_DIR,IMAGENET_ROOT=$IMAGENET_ROOT" \
        "$JOB_SCRIPT" || exit 1
    exit 0
fi
exit "$rc"
