# shellcheck shell=bash
# `up`: build the sandbox cluster step by step, printing the time of each step.
# A failed step tears down everything already built and shows the daemon's log tail.

SB_STEP=""
SB_STEP_LOGS=()

sb_step() {
  local name=$1 t0
  shift
  SB_STEP=$name
  SB_STEP_LOGS=()
  t0=$(sb_now)
  "$@"
  local took
  took=$(sb_elapsed "$t0")
  printf '  %-40s %7ss\n' "$name" "$took" >&2
  if [[ -d $SB_DIR/log ]]; then
    printf '%s\t%s\n' "$name" "$took" >>"$SB_DIR/log/timings.tsv"
  fi
  SB_STEP=""
}

sb_up_on_exit() {
  local rc=$1 f
  trap - EXIT
  if [[ $rc -eq 0 || -z $SB_STEP ]]; then
    exit "$rc"
  fi
  {
    printf '\nsandbox[%s]: up FAILED at step "%s" (exit %s)\n' "$SB_ID" "$SB_STEP" "$rc"
    for f in "${SB_STEP_LOGS[@]}"; do
      [[ -s $f ]] || continue
      printf -- '--- last lines of %s ---\n' "$f"
      tail -n 25 "$f"
    done
  } >&2
  if [[ ${PVSANDBOX_KEEP_FAILED:-0} == 1 ]]; then
    sb_log "PVSANDBOX_KEEP_FAILED=1: leaving the broken sandbox for inspection; remove it with: scripts/sandbox --id $SB_ID down"
  else
    sb_log "removing what was built"
    SB_STEP=""
    sb_down_locked >/dev/null 2>&1 || sb_log "cleanup after the failure failed too; run: scripts/sandbox --id $SB_ID down"
  fi
  exit "$rc"
}

# Every tracked daemon is alive and the last step completed.
sb_is_up() {
  [[ -e $SB_DIR/ready ]] || return 1
  local n
  while read -r n; do
    sb_pid "$n" >/dev/null || return 1
  done < <(sb_pid_names)
  return 0
}

sb_up() {
  local mode=${1:-direct}
  [[ $mode == direct || $mode == gate || $mode == isolated ]] || sb_die "unknown firewall mode '$mode' (direct, gate or isolated)"
  sb_lock 600
  if sb_is_up; then
    sb_log "already up ($SB_DIR)"
    sb_usage_hint
    return 0
  fi
  if [[ -e $SB_DIR || -n $(sb_netns_of_instance) ]]; then
    sb_log "found an incomplete sandbox '$SB_ID': removing it first"
    sb_down_locked >&2
  fi
  local t0
  t0=$(sb_now)
  trap 'sb_up_on_exit $?' EXIT
  printf 'sandbox[%s]: up\n' "$SB_ID" >&2
  sb_step "packages" sb_ensure_packages
  sb_step "test user $SB_USER" sb_ensure_user
  sb_step "state folder" sb_make_state "$mode"
  sb_step "network namespaces and bridge" sb_make_network
  sb_step "hosts (uts, mount, pid namespaces)" sb_make_hosts
  sb_step "firewalls ($mode)" sb_apply_firewalls
  sb_step "ssh keys and home folders" sb_make_homes
  sb_step "sshd on ${SB_SSHD_HOSTS[*]}" sb_start_all_sshd
  sb_step "munge" sb_start_munge
  sb_step "slurmctld on login" sb_start_slurmctld
  sb_step "slurmd on ${SB_NODES[*]}" sb_start_slurmd
  sb_step "Xvfb on desk" sb_start_xvfb
  date -u +%FT%TZ >"$SB_DIR/ready"
  trap - EXIT
  printf '  %-40s %7ss\n' "total" "$(sb_elapsed "$t0")" >&2
  printf 'sandbox[%s]: up (state in %s)\n' "$SB_ID" "$SB_DIR" >&2
  sb_usage_hint
}

# --- packages and the test user ----------------------------------------------------------------

sb_missing_packages() {
  local p
  for p in "${SB_PACKAGES[@]}"; do
    if [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) != "install ok installed" ]]; then
      printf '%s\n' "$p"
    fi
  done
}

sb_ensure_packages() {
  local -a missing
  mapfile -t missing < <(sb_missing_packages)
  ((${#missing[@]} == 0)) && return 0
  local log=$SB_ROOT/apt.log made_policy=0
  SB_STEP_LOGS=("$log")
  sb_log "installing ${missing[*]} (log: $log)"
  # Do not let the packages start their system-wide daemons: the sandbox runs its own.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local rc=0
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  } >"$log" 2>&1 9>&- || rc=$?
  if ((made_policy)); then
    rm -f /usr/sbin/policy-rc.d
  fi
  return "$rc"
}

# The user, its mount point and /run/sshd are shared by all instances. Under the shared lock the
# state folder is made too, so a parallel `down` of the last other instance sees this one.
sb_ensure_user() {
  exec 8>"$SB_ROOT/.shared.lock"
  flock -w 120 8
  sb_ensure_user_locked
  mkdir -p "$SB_DIR"
  exec 8>&-
}

sb_ensure_user_locked() {
  if ! getent passwd "$SB_USER" >/dev/null; then
    useradd --no-create-home --home-dir "$SB_HOME" --shell /bin/bash --user-group \
      --comment "pvlaunch sandbox test user" "$SB_USER"
    # "*" (not "!"): no password, but not a locked account, so sshd accepts its keys.
    usermod -p '*' "$SB_USER"
    touch "$SB_ROOT/.created-user"
  fi
  [[ $(getent passwd "$SB_USER" | cut -d: -f6) == "$SB_HOME" ]] ||
    sb_die "user $SB_USER exists with a home other than $SB_HOME"
  # Mount point only: each host mounts its own home folder here.
  if [[ ! -d $SB_HOME ]]; then
    mkdir -p "$SB_HOME"
    touch "$SB_ROOT/.created-home"
  fi
  # The second user (the attack suite's), made and removed the same way.
  if ! getent passwd "$SB_ATTACK_USER" >/dev/null; then
    useradd --no-create-home --home-dir "$SB_ATTACK_HOME" --shell /bin/bash --user-group \
      --comment "pvlaunch sandbox second user" "$SB_ATTACK_USER"
    usermod -p '*' "$SB_ATTACK_USER"
    touch "$SB_ROOT/.created-attack-user"
  fi
  [[ $(getent passwd "$SB_ATTACK_USER" | cut -d: -f6) == "$SB_ATTACK_HOME" ]] ||
    sb_die "user $SB_ATTACK_USER exists with a home other than $SB_ATTACK_HOME"
  if [[ ! -d $SB_ATTACK_HOME ]]; then
    mkdir -p "$SB_ATTACK_HOME"
    touch "$SB_ROOT/.created-attack-home"
  fi
  # sshd's privilege separation directory (normally made by the init system).
  if [[ ! -d /run/sshd ]]; then
    mkdir -m 755 /run/sshd
    touch "$SB_ROOT/.created-run-sshd"
  fi
}

# --- state folder ------------------------------------------------------------------------------

sb_make_state() {
  local mode=$1 h
  mkdir -p "$SB_DIR"
  chmod 755 "$SB_DIR"
  mkdir -p "$SB_DIR"/{pids,log,etc,share,hosts,home/desk,home/cluster,home/attack}
  printf '%s\n' "$mode" >"$SB_DIR/firewall-mode"
  {
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'
    for h in "${SB_HOSTS[@]}"; do
      printf '%s\t%s\n' "${SB_ADDR[$h]}" "$h"
    done
  } >"$SB_DIR/etc/hosts"
  printf '# sandbox %s: no DNS inside\n' "$SB_ID" >"$SB_DIR/etc/resolv.conf"
  chmod 644 "$SB_DIR/etc/hosts" "$SB_DIR/etc/resolv.conf"
  cp "$SB_LIB_DIR"/{init.py,probe.py,reverse_client.py,recipe1-job.sh,attack.py} "$SB_DIR/share/"
  chmod 755 "$SB_DIR/share"
  chmod 644 "$SB_DIR"/share/*
  for h in "${SB_HOSTS[@]}"; do
    mkdir -p "$SB_DIR/hosts/$h/tmp"
    chmod 1777 "$SB_DIR/hosts/$h/tmp"
  done
}

# --- network -----------------------------------------------------------------------------------

sb_in_netns() {
  local ns=$1
  shift
  nsenter --net="/run/netns/$ns" -- "$@"
}

sb_make_network() {
  local h ns
  ip netns add "$SB_BRIDGE_NS"
  sb_in_netns "$SB_BRIDGE_NS" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip -n "$SB_BRIDGE_NS" link add "$SB_BRIDGE" type bridge
  ip -n "$SB_BRIDGE_NS" link set "$SB_BRIDGE" up
  for h in "${SB_HOSTS[@]}"; do
    ns=$(sb_ns "$h")
    ip netns add "$ns"
    # IPv6 off on the link (lo keeps ::1): the firewalls speak IPv4 addresses.
    sb_in_netns "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
    ip -n "$SB_BRIDGE_NS" link add "$h" type veth peer name eth0 netns "$ns"
    ip -n "$SB_BRIDGE_NS" link set "$h" master "$SB_BRIDGE" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "${SB_ADDR[$h]}/24" dev eth0
    ip -n "$ns" link set eth0 up
  done
}

# --- hosts: a reaper as pid 1 in new uts, mount and pid namespaces, inside the host's netns ------

sb_make_hosts() {
  local h
  for h in "${SB_HOSTS[@]}"; do
    sb_make_host "$h"
  done
}

sb_make_host() {
  local h=$1 ns log outer init i
  ns=$(sb_ns "$h")
  log=$SB_DIR/log/init-$h.log
  SB_STEP_LOGS=("$log")
  setsid nsenter --net="/run/netns/$ns" -- \
    unshare --uts --mount --pid --fork --kill-child --mount-proc --propagation private -- \
    "$SB_PY" "$SB_DIR/share/init.py" </dev/null >>"$log" 2>&1 9>&- &
  outer=$!
  sb_pid_record "unshare-$h" "$outer"
  init=$(sb_child_of "$outer") || {
    sb_log "host $h: unshare did not start its child"
    return 1
  }
  # Wait for the exec of the reaper: the namespaces and /proc are set up by then.
  for ((i = 0; i < 300; i++)); do
    [[ $(readlink "/proc/$init/exe" 2>/dev/null) == */python3* ]] && break
    sleep 0.01
  done
  sb_pid_record "host-$h" "$init"
  nsenter -t "$init" --uts -- hostname "$h"
  local home=$SB_DIR/home/cluster
  [[ $h == desk ]] && home=$SB_DIR/home/desk
  local -a mounts=(
    "mount --bind $SB_DIR/etc/hosts /etc/hosts"
    "mount --bind $SB_DIR/hosts/$h/tmp /tmp"
    "mount -t tmpfs -o mode=1777,nosuid,nodev,size=1g tmpfs /dev/shm"
    "mount --bind $home $SB_HOME"
  )
  if [[ -e /etc/resolv.conf ]]; then
    mounts+=("mount --bind $SB_DIR/etc/resolv.conf /etc/resolv.conf")
  fi
  case $h in
  login | node1 | node2)
    mounts+=("mount --bind $SB_DIR/slurm/etc /etc/slurm")
    mounts+=("mount --bind $SB_DIR/home/attack $SB_ATTACK_HOME")
    ;;
  esac
  mkdir -p "$SB_DIR/slurm/etc"
  local m
  for m in "${mounts[@]}"; do
    # shellcheck disable=SC2086 # the words of $m are the argv
    nsenter -t "$init" --mount -- $m
  done
}

# --- ssh keys, homes ---------------------------------------------------------------------------

sb_make_homes() {
  local desk=$SB_DIR/home/desk cluster=$SB_DIR/home/cluster h
  for h in "$desk" "$cluster"; do
    cp -a /etc/skel/. "$h/" 2>/dev/null || true
    mkdir -p "$h/.ssh" "$h/bin" "$h/sandbox"
    cp "$SB_DIR"/share/{probe.py,reverse_client.py,recipe1-job.sh} "$h/sandbox/"
  done
  ssh-keygen -q -t ed25519 -N '' -C "$SB_USER@sandbox-$SB_ID" -f "$desk/.ssh/id_ed25519"
  cp "$desk/.ssh/id_ed25519" "$desk/.ssh/id_ed25519.pub" "$cluster/.ssh/"
  cp "$desk/.ssh/id_ed25519.pub" "$cluster/.ssh/authorized_keys"
  : >"$SB_DIR/etc/known_hosts"
  for h in "${SB_SSHD_HOSTS[@]}"; do
    mkdir -p "$SB_DIR/hosts/$h/ssh"
    ssh-keygen -q -t ed25519 -N '' -C "root@$h" -f "$SB_DIR/hosts/$h/ssh/ssh_host_ed25519_key"
    printf '%s,%s %s\n' "$h" "${SB_ADDR[$h]}" \
      "$(cut -d' ' -f1,2 "$SB_DIR/hosts/$h/ssh/ssh_host_ed25519_key.pub")" >>"$SB_DIR/etc/known_hosts"
  done
  cp "$SB_DIR/etc/known_hosts" "$desk/.ssh/known_hosts"
  cp "$SB_DIR/etc/known_hosts" "$cluster/.ssh/known_hosts"
  for h in "$desk" "$cluster"; do
    chown -R "$SB_USER:$SB_GROUP" "$h"
    chmod 700 "$h" "$h/.ssh"
    chmod 600 "$h"/.ssh/*
  done
  # A shared cluster home is usually 0755 (others may look in, not write): what pvlaunch puts
  # there must protect itself. ~/.ssh stays 0700.
  chmod 755 "$cluster"
  sb_make_attack_home
}

# The second user's home on login, node1 and node2: its own key pair, accepted there.
sb_make_attack_home() {
  local a=$SB_DIR/home/attack
  cp -a /etc/skel/. "$a/" 2>/dev/null || true
  mkdir -p "$a/.ssh" "$a/bin" "$a/sandbox"
  cp "$SB_DIR/share/attack.py" "$a/sandbox/"
  ssh-keygen -q -t ed25519 -N '' -C "$SB_ATTACK_USER@sandbox-$SB_ID" -f "$a/.ssh/id_ed25519"
  cp "$a/.ssh/id_ed25519.pub" "$a/.ssh/authorized_keys"
  cp "$SB_DIR/etc/known_hosts" "$a/.ssh/known_hosts"
  chown -R "$SB_ATTACK_USER:$SB_ATTACK_USER" "$a"
  chmod 700 "$a" "$a/.ssh"
  chmod 600 "$a"/.ssh/*
}

# --- munge, Slurm, Xvfb ------------------------------------------------------------------------

sb_start_munge() {
  local d=$SB_DIR/munge log=$SB_DIR/log/munged.log
  SB_STEP_LOGS=("$log")
  mkdir -p "$d/key" "$d/lib"
  head -c 1024 /dev/urandom >"$d/key/munge.key"
  chown -R munge:munge "$d"
  chmod 755 "$d"
  chmod 700 "$d/key" "$d/lib"
  chmod 400 "$d/key/munge.key"
  sb_daemon munged login "$log" setpriv --reuid=munge --regid=munge --init-groups -- \
    munged --foreground --socket="$d/munge.socket" --key-file="$d/key/munge.key" \
    --pid-file="$d/lib/munged.pid" --seed-file="$d/lib/munged.seed" --num-threads=4
  sb_wait "munge socket" 10 sb_root login munge -S "$d/munge.socket" -n
}

sb_write_slurm_conf() {
  local s=$SB_DIR/slurm n
  mkdir -p "$s/etc" "$s/ctld" "$s/spool"
  cat >"$s/etc/slurm.conf" <<EOF
# Sandbox cluster $SB_ID: slurmctld on login, slurmd on ${SB_NODES[*]}.
ClusterName=pvsb$SB_ID
SlurmctldHost=login
AuthType=auth/munge
AuthInfo=socket=$SB_DIR/munge/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$s/ctld
SlurmdSpoolDir=$s/spool/%n
SlurmctldPidFile=$s/slurmctld.pid
SlurmdPidFile=$s/slurmd-%n.pid
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No slurmdbd: finished jobs are read with 'sacct -c' from the job completion file.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$s/jobcomp.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
MessageTimeout=10
MailProg=/bin/true
EOF
  for n in "${SB_NODES[@]}"; do
    printf 'NodeName=%s NodeAddr=%s CPUs=2 State=UNKNOWN\n' "$n" "$n" >>"$s/etc/slurm.conf"
  done
  printf 'PartitionName=batch Nodes=%s Default=YES MaxTime=INFINITE State=UP\n' \
    "$(IFS=,; printf '%s' "${SB_NODES[*]}")" >>"$s/etc/slurm.conf"
  # Extra lines for experiments, e.g. PVSANDBOX_SLURM_CONF_EXTRA='SchedulerParameters=...'.
  if [[ -n ${PVSANDBOX_SLURM_CONF_EXTRA:-} ]]; then
    printf '%s\n' "$PVSANDBOX_SLURM_CONF_EXTRA" >>"$s/etc/slurm.conf"
  fi
  sb_write_cgroup_conf >"$s/etc/cgroup.conf"
  chmod 755 "$s/etc"
  chmod 644 "$s"/etc/*.conf
}

# Always cgroup/v1, even where /sys/fs/cgroup is cgroup2: with proctrack/linuxproc and task/none
# the plugin is loaded but never touches a hierarchy, while cgroup/v2 would want systemd or its
# own scope (measured: slurmd stops with "Hybrid mode is not supported" on a hybrid host).
# Naming it also skips the autodetection that fails in a namespace with another /sys.
sb_write_cgroup_conf() {
  printf '# Sandbox %s: no systemd, no cgroup enforcement inside the hosts.\n' "$SB_ID"
  printf 'CgroupPlugin=cgroup/v1\nIgnoreSystemd=yes\n'
}

sb_start_slurmctld() {
  local log=$SB_DIR/log/slurmctld.log
  SB_STEP_LOGS=("$log")
  sb_write_slurm_conf
  sb_daemon slurmctld login "$log" slurmctld -D
  sb_wait "slurmctld answers" 20 sb_slurmctld_up
  # Accounting is off; 'sacct -c' reads the job completion file instead. Its plugin opens the file
  # for appending even there (and slurmctld resets it to 0644), so let users write it.
  sb_wait "job completion file" 5 test -e "$SB_DIR/slurm/jobcomp.log"
  chmod 666 "$SB_DIR/slurm/jobcomp.log"
}

sb_slurmctld_up() {
  sb_root login scontrol ping 2>/dev/null | grep -q 'is UP'
}

sb_start_slurmd() {
  local n
  SB_STEP_LOGS=()
  for n in "${SB_NODES[@]}"; do
    SB_STEP_LOGS+=("$SB_DIR/log/slurmd-$n.log")
    mkdir -p "$SB_DIR/slurm/spool/$n"
    sb_daemon "slurmd-$n" "$n" "$SB_DIR/log/slurmd-$n.log" slurmd -D
  done
  SB_STEP_LOGS+=("$SB_DIR/log/slurmctld.log")
  sb_wait "${SB_NODES[*]} idle in Slurm" 30 sb_nodes_idle
}

sb_nodes_idle() {
  local out
  out=$(sb_root login sinfo -h -N -o '%N %T' 2>/dev/null) || return 1
  [[ $(grep -c ' idle$' <<<"$out") -eq ${#SB_NODES[@]} ]]
}

sb_start_xvfb() {
  local log=$SB_DIR/log/xvfb.log
  SB_STEP_LOGS=("$log")
  sb_daemon xvfb desk "$log" Xvfb "$SB_DISPLAY" -screen 0 1280x800x24 -nolisten tcp -noreset
  sb_wait "X display $SB_DISPLAY on desk" 15 sb_root desk test -S "/tmp/.X11-unix/X${SB_DISPLAY#:}"
}
