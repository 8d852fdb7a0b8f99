#!/bin/bash
# To run on your cluster, edit the block marked "EDIT HERE" below (account,
# partition or queue, modules or container, venv); nothing else needs editing.
# A small CPU job to check a cluster set-up before spending GPU hours: 2 nodes
# x 2 MPI ranks train the demo (configs/demo.yaml: a small ResNet on the
# scikit-learn digits, no downloads, no GPU) for 6 of its 18 epochs, a minute
# or two (past 95% validation accuracy; the demo's own bar). It checks
# that mpi4py talks to this cluster's MPI across nodes, that pfn15 runs in the
# job's environment, that the output directory is writable from every node,
# and (if you signal it, see below) that preemption and requeue work.
#
# Submit from the repository root (the script activates the environment
# named in the block below itself):
#   sbatch jobs/slurm/cpu-check.sh
# Results go to results/cpu-check-JOBID. To test preemption, while it trains:
#   scancel --batch --signal=USR1 JOBID
# The log should then show "preempted", a requeue, and the requeued job
# continuing from the checkpoint to the same end.
#
#SBATCH --job-name=pfn15-cpu-check
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=2
#SBATCH --time=00:15:00
# SIGUSR1 to this batch script (B:) 120 s before the time limit.
#SBATCH --signal=B:USR1@120
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
MAX_REQUEUES="${MAX_REQUEUES:-3}"
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
# Per job id: a requeue keeps the id and continues; a new submission starts
# fresh. On a file system every node shares (the requeued job's rank 0 reads
# the checkpoints, on whichever node it lands).
OUT_DIR="${PFN15_OUT:-results/cpu-check-${SLURM_JOB_ID:-local}}"
# One OpenMP/BLAS thread per CPU SLURM gave the rank; more would oversubscribe.
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"
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

# 2. Training. mpiexec, not srun, as in the GPU jobs (see jobs/slurm/32k.sh).
# 4 ranks x 32 images = demo.yaml's global batch of 128, without accumulation:
# the same global batch and schedule as `make demo` (2 ranks x 2 microbatches),
# so its accuracy should come out close to the demo's.
mpiexec -n 4 "${PY[@]}" -m pfn15.train configs/demo.yaml train.epochs=6 out="$OUT_DIR" resume=auto &
TRAIN_PID=$!

# ---------------------------------------------------------------- preemption
# SIGUSR1: pass it on (mpiexec forwards SIGUSR1 to every rank unchanged), and
# requeue once the training has checkpointed. SIGTERM (scancel, SLURM's own
# preemption): pass it on and keep waiting for the checkpoint, no requeue.
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
