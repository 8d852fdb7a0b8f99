#!/bin/bash
# To run on your cluster, edit the block marked "EDIT HERE" below (account,
# partition or queue, modules or container, venv); nothing else needs editing.
# The paper's optimization (configs/32k.yaml: global batch 32,768, 90 epochs)
# on one node with 8 GPUs. Gradient accumulation makes the 8 workers run the
# same updates as the paper's 1,024: each accumulates 32768 / (8 x 32) = 128
# microbatches of 32 images per update, and BN still normalizes over 32.
# Expect days, not minutes: the job checkpoints and requeues itself at every
# time limit until the 90 epochs are done.
#
# Submit from the repository root (the script activates the environment
# named in the block below itself):
#   IMAGENET_ROOT=/data/ILSVRC2012 sbatch jobs/slurm/32k-single-node.sh
# Checkpoints, logs and summary.json go to results/32k-8gpu (PFN15_OUT=... to
# change it). tools/check_jobs.py checks that nodes x ranks per node equals the
# rank count launched below and divides the global batch into whole
# microbatches.
#
# Time limit and preemption: SLURM sends this script SIGUSR1 300 s before the
# limit; the script passes it to the training processes, which finish the
# current iteration, let rank 0 write the checkpoint (one file) and exit 0;
# the script then requeues the job, which continues from that checkpoint (resume=auto).
# Any other failure ends the job without a requeue.
#
#SBATCH --job-name=pfn15-32k-1node
#SBATCH --nodes=1
# One MPI rank per GPU.
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
# data.loader_workers=6 JPEG-decoding processes per rank.
#SBATCH --cpus-per-task=6
#SBATCH --exclusive
# A common site maximum; the job requeues itself until training is done.
#SBATCH --time=24:00:00
# SIGUSR1 to this batch script (B:) 300 s before the time limit.
#SBATCH --signal=B:USR1@300
#SBATCH --requeue
# A requeued job appends to the same log.
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

# ============================ EDIT HERE: your cluster ============================
# Account and partition: delete one '#' to turn a line on. (sbatch reads the
# #SBATCH lines up to the first command: keep them above the settings below.)
##SBATCH --account=YOUR_ACCOUNT
##SBATCH --partition=YOUR_PARTITION
# The software, the same in every job script: modules to load (empty: none);
# an Apptainer/Singularity image to run pfn15 in (empty: none); else the
# virtual environment where pfn15 is installed (relative to the directory you
# submit from, or absolute). Each can also be set when submitting.
PFN15_MODULES="${PFN15_MODULES:-}"        # e.g. "cuda/12.2 openmpi/4.1.5"
PFN15_CONTAINER="${PFN15_CONTAINER:-}"    # e.g. /images/pfn15.sif
PFN15_VENV="${PFN15_VENV:-.venv}"
# ============================= end of the block to edit =============================

set -uo pipefail   # not -e: the training step's exit status is handled below
cd "${SLURM_SUBMIT_DIR:-.}" || exit 1
# Until the training runs, a time-limit warning (SIGUSR1) or a SIGTERM must not
# kill this script (bash's default): note it; it is acted on before the launch.
MAX_REQUEUES="${MAX_REQUEUES:-20}"
EARLY_SIGNAL=
trap 'EARLY_SIGNAL=USR1' USR1
trap 'EARLY_SIGNAL=TERM' TERM
if [ -z "${SLURM_JOB_ID:-}" ]; then
    echo "pfn15: not under SLURM (no SLURM_JOB_ID): running as a local job here, with no time limit and no requeue; submit it with sbatch"
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

# Requeue this job (it continues from the checkpoint); outside SLURM, say so.
requeue_job() {
    if [ -z "${SLURM_JOB_ID:-}" ]; then
        echo "pfn15: not under SLURM: no requeue; run this script again to continue from the checkpoint"
        return 0
    fi
    scontrol requeue "$SLURM_JOB_ID"
}

# ---------------------------------------------------------------- environment
# configs/32k.yaml reads data.root from ${IMAGENET_ROOT}: train/<wnid>/*.JPEG
# and val/<wnid>/*.JPEG (or list files). A node-local copy (NVMe) helps here:
# 8 GPUs read all of ImageNet every epoch.
export IMAGENET_ROOT="${IMAGENET_ROOT:-/path/to/ILSVRC2012}"
# Not per job id, so a requeued job finds the checkpoints of the one before.
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

# A signal during the checks above: requeue (USR1) or stop (TERM) before starting.
if [ "$EARLY_SIGNAL" = USR1 ]; then
    if [ "${SLURM_RESTART_COUNT:-0}" -ge "$MAX_REQUEUES" ]; then
        echo "pfn15: SIGUSR1 before the training started, and the job was already requeued $MAX_REQUEUES times; not requeueing" >&2
        exit 1
    fi
    echo "pfn15: SIGUSR1 before the training started; requeueing job $SLURM_JOB_ID"
    requeue_job
    exit 0
elif [ "$EARLY_SIGNAL" = TERM ]; then
    echo "pfn15: SIGTERM before the training started; nothing to save"
    exit 0
fi

# mpiexec, not srun: the same line for SLURM and PBS and for Open MPI, MPICH
# (Hydra) and Intel MPI. `srun --mpi=pmix -n 8 python -m pfn15.train ...` also
# works where the MPI is built with PMIx; the signal handling below is written
# for mpiexec. Do not add --gpus-per-task or --gpu-bind: every rank must see
# all 8 GPUs (it picks its own by its rank within the node).
# A checkpoint every 100 updates (under an hour on 8 P100s) instead of the
# config's 500, so a crash that is not a preemption loses less.
mpiexec -n 8 "${PY[@]}" -m pfn15.train configs/32k.yaml out="$OUT_DIR" resume=auto checkpoint.every_iterations=100 &
TRAIN_PID=$!

# ---------------------------------------------------------------- preemption
# SIGUSR1 (the --signal warning, or `scancel --batch --signal=USR1 JOBID`):
# pass it on, and requeue once the training has checkpointed. It is passed as
# SIGUSR1 because mpiexec forwards SIGUSR1 to every rank unchanged, while Open
# MPI's mpirun turns SIGTERM into SIGTERM + SIGKILL a second later, too soon to
# write a checkpoint; pfn15.train treats SIGUSR1 and SIGTERM alike.
# SIGTERM (scancel, or SLURM's own preemption, which requeues by itself): pass
# it on and keep waiting (if this script exits, SLURM kills the ranks before
# they have written their checkpoint), but do not requeue.
REQUEUE=0
trap 'REQUEUE=1; kill -USR1 "$TRAIN_PID" 2>/dev/null' USR1
trap 'kill -USR1 "$TRAIN_PID" 2>/dev/null' TERM
# One that came between the launch and these traps: pass it on now.
case "$EARLY_SIGNAL" in
    USR1) REQUEUE=1; kill -USR1 "$TRAIN_PID" 2>/dev/null ;;
    TERM) kill -USR1 "$TRAIN_PID" 2>/dev/null ;;
esac

# A trapped signal makes `wait` return early; wait again until mpiexec is
# gone. Bash keeps a background job's exit status, so the last wait gets it.
while kill -0 "$TRAIN_PID" 2>/dev/null; do wait "$TRAIN_PID"; done
wait "$TRAIN_PID"
rc=$?

if [ "$REQUEUE" = 1 ]; then
    if [ "$rc" -ne 0 ]; then
        echo "pfn15: training exited with status $rc after SIGUSR1; not requeueing" >&2
        exit "$rc"
    fi
    if [ "${SLURM_RESTART_COUNT:-0}" -ge "$MAX_REQUEUES" ]; then
        echo "pfn15: checkpoint written, but the job was already requeued $MAX_REQUEUES times; not requeueing" >&2
        exit 1
    fi
    echo "pfn15: checkpoint written; requeueing job $SLURM_JOB_ID"
    requeue_job
    exit 0
fi
exit "$rc"
