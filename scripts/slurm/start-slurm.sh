#!/usr/bin/env bash
# Start a single-node SLURM cluster on this host (loopback only).
# Idempotent: installs packages if missing, (re)writes /etc/slurm/slurm.conf,
# starts munged, slurmctld and slurmd unless already running, then waits
# until the node is idle. Needs root. Debian 12 (Slurm 22.05).
#
# Env knobs: SLURM_CPUS (default: nproc), SLURM_MEM_MB (default: MemTotal - 1 GiB),
#            SLURM_START_TIMEOUT (seconds to wait for the node, default 60).
set -euo pipefail

t0=$(date +%s.%N)
STATE_DIR=/run/slurm-local          # pid bookkeeping for stop-slurm.sh
CONF=/etc/slurm/slurm.conf
export SLURM_CONF=$CONF

[ "$(id -u)" = 0 ] || { echo "start-slurm.sh: must run as root" >&2; exit 1; }

# --- 1. packages -------------------------------------------------------------
need=()
for p in slurmctld slurmd slurm-client munge; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  log=$(mktemp)
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2; exit 1
  fi
  rm -f "$log"
fi

# --- 2. config ---------------------------------------------------------------
# (GNU nproc obeys OMP_NUM_THREADS: a test runner setting it must not shrink the node)
cpus=${SLURM_CPUS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}
mem_mb=${SLURM_MEM_MB:-$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) - 1024 ))}
mkdir -p /etc/slurm /run/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm "$STATE_DIR"
chown slurm:slurm /run/slurm /var/lib/slurm/slurmctld /var/log/slurm
new_conf=$(cat <<EOF
# single-node cluster, loopback only (written by start-slurm.sh)
ClusterName=localcluster
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# start batch jobs right at submit (default delay 3 s)
SchedulerParameters=batch_sched_delay=0
# trust the CPUs= below even if it exceeds the real core count (SLURM_CPUS)
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
# keep finished jobs visible to squeue/scontrol (the sacct shim reads them)
MinJobAge=86400
KillWait=5
InactiveLimit=0
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
# slurmd listens on 127.0.0.1 only (slurmctld 22.05 still binds 0.0.0.0)
CommunicationParameters=NoInAddrAny
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Default=YES Nodes=localhost MaxTime=INFINITE State=UP
EOF
)
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$new_conf" ]; then
  printf '%s\n' "$new_conf" > "$CONF"
  conf_changed=1
else
  conf_changed=0
fi

alive() {  # alive PIDFILE NAME -> 0 if the pid in PIDFILE is a running NAME
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ]
}
started() { grep -qsx "$1" "$STATE_DIR/started" || echo "$1" >> "$STATE_DIR/started"; }
stop_daemon() {  # stop_daemon NAME PIDFILE: TERM, wait up to 10 s
  local pid; pid=$(cat "$2" 2>/dev/null) || return 0
  [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$1" ] || return 0
  kill -TERM "$pid"
  for _ in $(seq 100); do [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 0; sleep 0.1; done
  kill -KILL "$pid"
}

# --- 3. munge ----------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge && chown munge:munge /run/munge && chmod 0755 /run/munge
if ! alive /run/munge/munged.pid munged; then
  runuser -u munge -- /usr/sbin/munged --force
  started munged
fi
for _ in $(seq 50); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.1; done

# --- 4. slurmctld / slurmd ---------------------------------------------------
if alive /run/slurm/slurmctld.pid slurmctld; then
  # Node changes (CPUs=, RealMemory=) cannot be reconfigured live: restart both daemons then.
  if [ "$conf_changed" = 1 ] && ! scontrol reconfigure 2>/dev/null; then
    echo "slurm.conf changed (node definition): restarting slurmctld and slurmd"
    stop_daemon slurmd /run/slurm/slurmd.pid
    stop_daemon slurmctld /run/slurm/slurmctld.pid
    /usr/sbin/slurmctld
    started slurmctld
  fi
else
  /usr/sbin/slurmctld
  started slurmctld
fi
if ! alive /run/slurm/slurmd.pid slurmd; then
  /usr/sbin/slurmd -N localhost
  started slurmd
fi

# --- 5. wait for the node ----------------------------------------------------
deadline=$(( $(date +%s) + ${SLURM_START_TIMEOUT:-60} ))
while :; do
  state=$(sinfo -h -n localhost -o %T 2>/dev/null || true)
  case "$state" in
    idle|mixed|allocated) break ;;
    *drain*|down*) scontrol update NodeName=localhost State=RESUME 2>/dev/null || true ;;
  esac
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "start-slurm.sh: node not ready (state='$state'); see /var/log/slurm/" >&2
    exit 1
  fi
  sleep 0.2
done
t1=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" -v s="$state" -v c="$cpus" -v m="$mem_mb" \
  'BEGIN { printf "slurm ready: node localhost %s, %s CPUs, %s MB (%.1f s)\n", s, c, m, b - a }'
