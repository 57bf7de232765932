#!/usr/bin/env bash
# A real single-node SLURM cluster on this (Debian 12) machine, for CI and
# the sbatch integration test. Runs the daemons directly: there is no
# systemd here. Needs root.
#
#   scripts/slurm_local.sh start|stop|status
#
# The config goes to /etc/slurm/slurm.conf, the path the Debian clients read
# by default, so sbatch/squeue/sinfo work without SLURM_CONF.
set -eEuo pipefail  # -E: the ERR trap of start also fires in functions

CONF=/etc/slurm/slurm.conf
RUN=/run/slurm-local        # our pid files
SPOOL=/var/spool/slurm-local
LOGS=/var/log/slurm-local
MUNGE_PID=/run/munge/munged.pid
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}

# Logs of all daemons, for when something fails.
dump_logs() {
  echo "slurm_local: logs are in $LOGS and /var/log/munge:" >&2
  for f in /var/log/munge/munged.log "$LOGS"/*.log; do
    [[ -f $f ]] && { echo "==== $f" >&2; tail -n 40 "$f" >&2; }
  done
  return 0
}

# The pid of a pid file if that process is alive and is the named daemon:
# a stale file may name a reused pid, and a killed daemon can linger as a
# zombie (kill -0 succeeds on it) until init, here not systemd, reaps it.
pid_of() {
  local pid stat comm
  pid=$(cat "$1" 2>/dev/null) || return 1
  read -r _ comm stat _ 2>/dev/null <"/proc/$pid/stat" || return 1
  [[ $stat != Z && $comm == "($2)" ]] && echo "$pid"
}

fail() {
  trap - ERR
  echo "slurm_local: start failed" >&2
  dump_logs
  stop || true
  exit 1
}

# Kill the daemon of a pid file and wait for it to go, so a restart does
# not race the old one for its port or socket.
kill_pidfile() {
  local pid
  if pid=$(pid_of "$1" "$2"); then
    kill "$pid" 2>/dev/null || true  # it may just have exited
    for _ in $(seq 50); do pid_of "$1" "$2" >/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

# "idle" or "mixed"/"allocated": the node takes or runs jobs. A "*" suffix
# (not responding), drain or down do not match.
node_usable() { sinfo -h -N -o '%t' 2>/dev/null | grep -qE '^(idle|mix|mixed|alloc|allocated)$'; }

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
    command -v sbatch >/dev/null && command -v munged >/dev/null && return 0
  # The lock timeout: another apt-get may still run on a fresh machine.
  # Without recommends: only slurm, munge, hwloc and lua get installed.
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
    --no-install-recommends munge slurmctld slurmd slurm-client >/dev/null
}

write_config() {
  local host node
  host=$(hostname -s)
  # slurmd -C reports this machine's real topology and memory; a node
  # declared bigger than it is gets drained ("Low RealMemory"/socket count).
  node=$(slurmd -C | head -n 1)
  mkdir -p /etc/slurm "$RUN" "$LOGS" "$SPOOL/ctld" "$SPOOL/d"
  # 127.0.0.1 addresses: the host name need not resolve, and all stays local.
  # linuxproc/task/none and no accounting: cgroups may not work in a
  # container (cgroup.conf is then not read at all). ReturnToService=2: a node
  # that was down (an unclean stop) comes back as soon as it registers.
  cat >"$CONF" <<EOF
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  # A munged from an earlier run (or the package's init script) is reused
  # if it answers.
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  kill_pidfile "$MUNGE_PID" munged
  # /run is fresh on a new machine; the key normally comes with the package.
  install -d -o munge -g munge -m 0755 /run/munge
  [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  # As the munge user: munged refuses a key owned by another user. --force:
  # start even if a stale socket of a killed munged is left over.
  runuser -u munge -- munged --force
}

start() {
  [[ $EUID -eq 0 ]] || { echo "slurm_local: must run as root" >&2; exit 1; }
  # A daemon that refuses to start fails the script here (set -e): say why,
  # and leave nothing half-started behind.
  trap fail ERR
  if pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null &&
     pid_of "$RUN/slurmd.pid" slurmd >/dev/null && node_usable; then
    echo "slurm_local: already running"; return 0
  fi
  install_packages
  # Restarting from scratch is simpler than patching up a half-started or
  # crashed cluster: the controller starts without saved state (-c) so old
  # jobs and a node marked DOWN do not come back. slurmd's spool is kept: it
  # finds the steps of a crashed run there, and the controller, not knowing
  # those jobs, has them killed.
  stop_slurm
  rm -rf "$SPOOL/ctld" "$LOGS"  # fresh logs: a failure shows this run's
  write_config
  start_munge
  slurmctld -c
  slurmd
  local t=0
  until node_usable; do
    if (( t >= TIMEOUT )); then
      echo "slurm_local: node not idle after ${TIMEOUT}s; sinfo says:" >&2
      sinfo -N -l >&2 || true
      fail
    fi
    sleep 1; t=$((t + 1))
  done
  echo "slurm_local: up after ${t}s (node $(hostname -s), logs in $LOGS)"
}

stop_slurm() {
  # Jobs first: slurmstepd and the job's processes outlive slurmd, so cancel
  # them while the daemons can still clean up, and wait until they are gone
  # (completing jobs stay in squeue until their processes are).
  if pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null &&
     pid_of "$RUN/slurmd.pid" slurmd >/dev/null; then
    squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null || true
    for _ in $(seq 50); do
      [[ -z $(squeue -h 2>/dev/null) ]] && break; sleep 0.2
    done
  fi
  kill_pidfile "$RUN/slurmd.pid" slurmd
  kill_pidfile "$RUN/slurmctld.pid" slurmctld
}

stop() {
  stop_slurm
  kill_pidfile "$MUNGE_PID" munged
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  # The pid files first: with no controller sinfo retries for ~10s.
  status) pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null &&
    pid_of "$RUN/slurmd.pid" slurmd >/dev/null && node_usable ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
