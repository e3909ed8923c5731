# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables are used by the files that source this one
# Common definitions of the sandbox cluster: names, addresses, pid tracking, entering hosts.
# Sourced by sandbox.sh; every function is prefixed sb_.

SB_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SB_ROOT=${PVSANDBOX_ROOT:-/run/pvsandbox}
SB_USER=pvtest
SB_HOME=/home/$SB_USER
SB_GROUP=$SB_USER
# A second, unprivileged user on the cluster hosts (login, node1, node2): the other user of a
# shared cluster, for the attack suite (tests/attack.rs, tests/sandbox/attack.py). Its home is
# its own folder, shared by those hosts.
SB_ATTACK_USER=pvattack
SB_ATTACK_HOME=/home/$SB_ATTACK_USER
SB_ATTACK_HOSTS=(login node1 node2)
SB_NET=10.77.0
SB_HOSTS=(desk gate login node1 node2)
SB_SSHD_HOSTS=(gate login node1 node2)
SB_NODES=(node1 node2)
declare -A SB_ADDR=([desk]=$SB_NET.10 [gate]=$SB_NET.11 [login]=$SB_NET.12 [node1]=$SB_NET.21 [node2]=$SB_NET.22)
# Debian's own interpreter: a python3 earlier on root's PATH (pyenv, venv) has no paraview module.
SB_PY=/usr/bin/python3
SB_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
SB_USER_PATH="$SB_HOME/bin:/usr/local/bin:/usr/bin:/bin"
SB_DISPLAY=:0
SB_PACKAGES=(openssh-server openssh-client slurm-wlm slurm-client munge paraview python3-paraview
  python3 openmpi-bin nftables iproute2 util-linux procps xvfb xdotool socat)

# Login's sshd starts with OpenSSH's own defaults for these; `sshd-set` changes them.
SB_SSHD_KEYS=(GatewayPorts AllowTcpForwarding AllowStreamLocalForwarding PermitOpen PermitListen
  ClientAliveInterval MaxSessions MaxStartups)
declare -A SB_SSHD_DEFAULTS=([GatewayPorts]=no [AllowTcpForwarding]=yes
  [AllowStreamLocalForwarding]=yes [PermitOpen]=any [PermitListen]=any [ClientAliveInterval]=0
  [MaxSessions]=64 [MaxStartups]=64:30:128)

export PATH="$SB_PATH:$PATH"

sb_die() {
  printf 'sandbox: error: %s\n' "$*" >&2
  exit 1
}

sb_log() {
  printf 'sandbox[%s]: %s\n' "${SB_ID:-?}" "$*" >&2
}

# sb_set_id ID: select an instance; every name below carries the id.
sb_set_id() {
  local id=$1
  [[ $id =~ ^[a-z0-9]{1,8}$ ]] || sb_die "instance id '$id' must be 1-8 characters of [a-z0-9]"
  SB_ID=$id
  SB_DIR=$SB_ROOT/$id
  SB_NS_PREFIX=pvsb-$id
  SB_BRIDGE_NS=$SB_NS_PREFIX-net
  SB_BRIDGE=br-$id
  SB_LOCK=$SB_ROOT/$id.lock
}

sb_ns() { printf '%s-%s\n' "$SB_NS_PREFIX" "$1"; }

sb_is_host() {
  local h
  for h in "${SB_HOSTS[@]}"; do [[ $h == "$1" ]] && return 0; done
  return 1
}

sb_is_attack_host() {
  local h
  for h in "${SB_ATTACK_HOSTS[@]}"; do [[ $h == "$1" ]] && return 0; done
  return 1
}

sb_now() { date +%s.%N; }

sb_elapsed() { awk -v a="$1" -v b="$(sb_now)" 'BEGIN { printf "%.2f", b - a }'; }

# Take the instance lock (fd 9). Children started while it is held must close fd 9.
sb_lock() {
  mkdir -p "$SB_ROOT"
  chmod 755 "$SB_ROOT"
  exec 9>"$SB_LOCK"
  if ! flock -w "${1:-120}" 9; then
    sb_die "another command holds $SB_LOCK"
  fi
}

# --- pid tracking: pids/NAME holds "pid starttime" so a recycled pid is never killed -----------

# sb_starttime PID: the process's start time (field 22 of /proc/PID/stat); fails for a process
# that is gone or a zombie.
sb_starttime() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  # after "pid (comm) ": field 1 is the state, field 20 the start time
  awk '$1 != "Z" && $1 != "X" { print $20; ok = 1 } END { exit !ok }' <<<"$stat"
}

sb_pid_record() {
  local name=$1 pid=$2 st
  st=$(sb_starttime "$pid") || return 1
  mkdir -p "$SB_DIR/pids"
  printf '%s %s\n' "$pid" "$st" >"$SB_DIR/pids/$name"
}

# sb_pid NAME: print the pid if that process is still the one recorded.
sb_pid() {
  local f=$SB_DIR/pids/$1 pid st now
  [[ -r $f ]] || return 1
  read -r pid st <"$f" || return 1
  now=$(sb_starttime "$pid") || return 1
  [[ $now == "$st" ]] || return 1
  printf '%s\n' "$pid"
}

sb_pid_names() {
  [[ -d $SB_DIR/pids ]] || return 0
  local f
  for f in "$SB_DIR"/pids/*; do
    [[ -e $f ]] && basename "$f"
  done
  return 0
}

# sb_stop [--grace SECONDS] NAME...: SIGTERM all, wait up to the grace period, SIGKILL what is
# left; forget the pids.
sb_stop() {
  local grace=5 name pid i left
  if [[ ${1:-} == --grace ]]; then
    grace=$2
    shift 2
  fi
  for name in "$@"; do
    if pid=$(sb_pid "$name"); then
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for ((i = 0; i <= grace * 20; i++)); do
    left=0
    for name in "$@"; do
      if sb_pid "$name" >/dev/null; then
        left=1
        break
      fi
    done
    ((left)) || break
    sleep 0.05
  done
  for name in "$@"; do
    if pid=$(sb_pid "$name"); then
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 100; i++)); do
        sb_pid "$name" >/dev/null || break
        sleep 0.05
      done
    fi
    rm -f "$SB_DIR/pids/$name"
  done
}

# The child of a process that forked once (nsenter --pid, unshare --fork).
sb_child_of() {
  local parent=$1 i kids
  for ((i = 0; i < 200; i++)); do
    kids=$(cat "/proc/$parent/task/$parent/children" 2>/dev/null) || return 1
    if [[ -n ${kids// /} ]]; then
      printf '%s\n' "${kids%% *}"
      return 0
    fi
    sleep 0.01
  done
  return 1
}

# --- entering hosts ----------------------------------------------------------------------------

# Each host is a pid-1 reaper (init.py) in its own net, UTS, mount and pid namespaces.
sb_init_pid() {
  sb_pid "host-$1" || sb_die "host $1 of sandbox $SB_ID is not running (try: scripts/sandbox --id $SB_ID up)"
}

# sb_root HOST CMD...: run argv as root inside HOST.
sb_root() {
  local host=$1 init
  shift
  init=$(sb_init_pid "$host")
  nsenter -t "$init" --net --uts --mount --pid -- "$@"
}

# sb_user_env HOST [USER]: the clean environment of USER (default the test user) on HOST.
sb_user_env() {
  local host=$1 user=${2:-$SB_USER} home=$SB_HOME path=$SB_USER_PATH
  if [[ $user == "$SB_ATTACK_USER" ]]; then
    home=$SB_ATTACK_HOME
    path="$SB_ATTACK_HOME/bin:/usr/local/bin:/usr/bin:/bin"
  fi
  printf '%s\n' "HOME=$home" "USER=$user" "LOGNAME=$user" "SHELL=/bin/bash" \
    "PATH=$path" "LANG=C.UTF-8" "TERM=${TERM:-dumb}"
  if [[ $host == desk ]]; then
    printf '%s\n' "DISPLAY=$SB_DISPLAY"
  fi
}

# sb_user_argv HOST [USER]: set SB_ARGV to the argv prefix that runs a program as USER (default
# the test user; or the second user, pvattack) inside HOST with a clean environment.
sb_user_argv() {
  local host=$1 user=${2:-$SB_USER} init
  init=$(sb_init_pid "$host")
  local -a envv
  mapfile -t envv < <(sb_user_env "$host" "$user")
  SB_ARGV=(nsenter -t "$init" --net --uts --mount --pid --
    setpriv --reuid="$user" --regid="$user" --init-groups --
    env -i "${envv[@]}")
}

# sb_user HOST CMD...: run a shell command string (the words joined like ssh does) as the test
# user inside HOST, from the home directory.
sb_user() {
  local host=$1
  shift
  sb_user_argv "$host"
  # shellcheck disable=SC2016 # expanded by the inner shell
  "${SB_ARGV[@]}" bash -c 'cd "$HOME" 2>/dev/null; eval "$1"' bash "$*"
}

# sb_daemon NAME HOST LOG CMD...: start CMD inside HOST in the background, record its pid.
sb_daemon() {
  local name=$1 host=$2 log=$3 init outer child
  shift 3
  init=$(sb_init_pid "$host")
  setsid nsenter -t "$init" --net --uts --mount --pid -- "$@" </dev/null >>"$log" 2>&1 9>&- &
  outer=$!
  if ! child=$(sb_child_of "$outer"); then
    wait "$outer" 2>/dev/null || true
    sb_log "$name on $host exited at once"
    return 1
  fi
  sb_pid_record "$name" "$child" || {
    sb_log "$name on $host exited at once"
    return 1
  }
}

# sb_wait DESCRIPTION SECONDS CMD...: poll CMD until it succeeds.
sb_wait() {
  local what=$1 secs=$2 t0
  shift 2
  t0=$(sb_now)
  while true; do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    if awk -v a="$t0" -v b="$(sb_now)" -v s="$secs" 'BEGIN { exit !(b - a > s) }'; then
      sb_log "timed out after ${secs}s waiting for: $what"
      return 1
    fi
    sleep 0.1
  done
}

# A TCP port is listening inside HOST.
sb_listening() {
  local host=$1 port=$2
  [[ -n $(sb_root "$host" ss -Hltn "sport = :$port" 2>/dev/null) ]]
}

sb_instances() {
  local d
  for d in "$SB_ROOT"/*/; do
    [[ -d $d ]] || continue
    d=${d%/}
    d=${d##*/}
    [[ $d =~ ^[a-z0-9]{1,8}$ ]] && printf '%s\n' "$d"
  done
  return 0
}

sb_netns_of_instance() {
  ip netns list 2>/dev/null | awk '{ print $1 }' | grep -E "^${SB_NS_PREFIX}-(net|desk|gate|login|node1|node2)\$" || true
}

sb_usage_hint() {
  local me="scripts/sandbox --id $SB_ID"
  cat <<EOF
Run a command as the test user '$SB_USER' on a host (desk gate login node1 node2):
  $me exec desk 'ssh login sinfo'
  $me exec login 'sbatch --wrap hostname; squeue'
  $me exec desk                      # interactive shell on desk
  $me exec --root node1 ss -ltn      # as root
Change login's sshd:  $me sshd-set login GatewayPorts=clientspecified
Check it:             $me health        Stop it: $me down
EOF
}
