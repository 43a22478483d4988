#!/usr/bin/env bash
# A real SLURM check on one machine: install slurm-wlm and munge (Debian, as root), configure a one-node cluster on
# this host (all its CPUs, no cgroups: proctrack/linuxproc, task/none), start munged, slurmctld and slurmd, then run
# a benchmark spec through `nnunet-ext benchmark run --executor slurm` (submitit job arrays via sbatch).
#
#   bash benchmarks/slurm/local_slurm.sh [SPEC] [RESULTS_DIR] [WORKDIR]
#
# Defaults: SPEC benchmarks/specs/slurm_local.yaml (2 jobs), RESULTS_DIR benchmarks/results (-> slurm_local.{md,json}
# written by `nnunet-ext benchmark report`, with jobs_submitted, jobs_succeeded, sbatch_version, commit and the
# provenance block), WORKDIR a fresh temporary folder. Daemons already running are reused; the script leaves them
# running (stop: scontrol shutdown; kill the munged pid in /run/munge/munged.pid).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SPEC="${1:-$REPO/benchmarks/specs/slurm_local.yaml}"
RESULTS="${2:-$REPO/benchmarks/results}"
WORKDIR="${3:-$(mktemp -d /tmp/nnunet_ext_slurm_local.XXXXXX)}"
NNUNET_EXT="$REPO/.venv/bin/nnunet-ext"
step() { echo "[local_slurm] $*"; }

if [ "$(id -u)" != 0 ]; then echo "local_slurm.sh: needs root (apt-get, daemons)" >&2; exit 2; fi
if [ ! -x "$NNUNET_EXT" ]; then echo "local_slurm.sh: $NNUNET_EXT missing: run 'make setup' first" >&2; exit 2; fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  step "installing slurm-wlm and munge"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge
fi

HOST="$(hostname -s)"
CPUS="$(nproc)"
MEM_MB="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"

if ! pgrep -x munged >/dev/null; then
  step "starting munged"
  mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  fi
  chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
  chmod 0700 /etc/munge /var/lib/munge /var/log/munge
  chmod 0755 /run/munge
  chmod 0400 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged
fi
munge -n | unmunge >/dev/null

if ! pgrep -x slurmctld >/dev/null || ! pgrep -x slurmd >/dev/null; then
  step "configuring a one-node cluster: $HOST, $CPUS CPUs, $MEM_MB MB"
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  cat > /etc/slurm/slurm.conf <<EOF
ClusterName=nnunetext
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
  # no cgroup plugins are configured above; slurmd still reads this file
  cat > /etc/slurm/cgroup.conf <<EOF
CgroupPlugin=autodetect
IgnoreSystemd=yes
ConstrainCores=no
ConstrainRAMSpace=no
EOF
  step "starting slurmctld and slurmd"
  pgrep -x slurmctld >/dev/null || slurmctld
  pgrep -x slurmd >/dev/null || slurmd
fi

for _ in $(seq 1 30); do
  state="$(sinfo -h -n "$HOST" -o %T 2>/dev/null || true)"
  case "$state" in idle*|mix*|alloc*) break ;; esac
  scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
  sleep 1
done
step "sinfo: $(sinfo -h -o '%P %a %D %T %C' 2>&1)"
step "$(sbatch --version)"
srun -n 1 true  # one trivial job end to end before the benchmark

step "nnunet-ext benchmark run $SPEC --executor slurm (workdir $WORKDIR)"
cd "$REPO"
"$NNUNET_EXT" benchmark run "$SPEC" --executor slurm --workdir "$WORKDIR" --results "$RESULTS" --no_progress
