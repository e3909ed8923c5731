#!/usr/bin/env bash
# The sandbox cluster: desk, gate, login, node1, node2 as namespaces on this machine.
# See docs/sandbox.md. Entry point: scripts/sandbox.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/sandbox/lib.sh
source "$here/lib.sh"
# shellcheck source=tests/sandbox/up.sh
source "$here/up.sh"
# shellcheck source=tests/sandbox/down.sh
source "$here/down.sh"
# shellcheck source=tests/sandbox/sshd.sh
source "$here/sshd.sh"
# shellcheck source=tests/sandbox/firewall.sh
source "$here/firewall.sh"
# shellcheck source=tests/sandbox/check.sh
source "$here/check.sh"
# shellcheck source=tests/sandbox/otp.sh
source "$here/otp.sh"
# shellcheck source=tests/sandbox/desk.sh
source "$here/desk.sh"

usage() {
  cat <<'EOF'
usage: scripts/sandbox [--id ID] COMMAND [ARGS]

A cluster on this machine: hosts desk, gate, login, node1, node2 (network, UTS, mount and pid
namespaces), firewalls, sshd, Slurm (slurmctld on login, slurmd on node1 and node2), ParaView.
Run as root. ID (1-8 of [a-z0-9], default $PVSANDBOX_ID or "dev") keeps instances apart.

commands:
  up [--firewall MODE]          build the instance (idempotent); prints how to use it
  down [--all]                  stop and remove the instance (--all: every instance)
  status                        what runs; exit 0 up, 1 incomplete, 3 down
  list                          instances on this machine
  exec [--root|--user U] HOST [CMD...]
                                run CMD (a shell command line, words joined like ssh does) on
                                HOST as the test user pvtest (--root: as root; --user pvattack:
                                as the second user, on login, node1, node2); no CMD: a shell
  health                        prove the site: ssh paths, firewall, a job, pvserver in a job
  leaks [--wait SECONDS]        list test-user processes, jobs and extra listening sockets
  reset                         kill every test-user process and cancel every job
  sshd-set HOST [--defaults] [KEY=VALUE...]
                                restart HOST's sshd with settings changed, e.g.
                                GatewayPorts=clientspecified AllowTcpForwarding=no
                                AllowStreamLocalForwarding=no (--defaults: OpenSSH's defaults)
  login-shell HOST SHELL|--default
                                the test user's login shell on HOST (e.g. /usr/bin/tcsh):
                                what sshd runs remote commands with (--default: /bin/bash)
  otp HOST on [--methods publickey,keyboard-interactive|keyboard-interactive]
  otp HOST off                  one-time codes (TOTP, pam_oath) at HOST's sshd (login or gate),
                                after the key (default) or instead of it; compute nodes still
                                reach login with the key alone; off: back to key-only
  otp-code HOST [--step K | --counter N | --last-used]
                                the code of the current 30 s step + K (or of step N) for HOST;
                                --last-used: the step of the last code HOST's sshd accepted
  desk-key --passphrase PASS|--plain
                                desk's key pair of pvtest, encrypted with PASS (no agent), or
                                back to the unencrypted original
  forget-host-key [HOST...]     desk's known_hosts without HOSTs' keys (no HOST: all known)
  link down|up                  cut the workstation's network (desk drops every packet to and
                                from every other host, established connections too: a Wi-Fi
                                or VPN gone without a word), or give it back
  firewall direct|gate|isolated direct: desk reaches login:22 and gate:22, login reaches desk;
                                gate: desk reaches gate:22 only; isolated: as direct, but
                                compute nodes reach login on slurmctld's port 6817 only
  pid HOST                      pid of HOST's process 1 (nsenter -t PID --net --uts --mount --pid)
EOF
}

main() {
  local id=${PVSANDBOX_ID:-dev}
  while (($# > 0)); do
    case $1 in
    --id)
      id=${2:?--id needs a value}
      shift 2
      ;;
    --id=*)
      id=${1#--id=}
      shift
      ;;
    -h | --help | help)
      usage
      return 0
      ;;
    *) break ;;
    esac
  done
  (($# > 0)) || {
    usage >&2
    return 2
  }
  local cmd=$1
  shift
  [[ $EUID -eq 0 ]] || sb_die "must run as root (namespaces, nftables, sshd and Slurm daemons)"
  sb_set_id "$id"
  case $cmd in
  up)
    local mode=direct
    while (($# > 0)); do
      case $1 in
      --firewall) mode=${2:?--firewall needs direct or gate}; shift 2 ;;
      --firewall=*) mode=${1#--firewall=}; shift ;;
      *) sb_die "up: unknown argument '$1'" ;;
      esac
    done
    sb_up "$mode"
    ;;
  down)
    if [[ ${1:-} == --all ]]; then
      sb_down_all
    else
      sb_down
    fi
    ;;
  status) sb_status ;;
  list) sb_list ;;
  exec)
    local as_root=0 user=$SB_USER
    while (($# > 0)); do
      case $1 in
      --root) as_root=1; shift ;;
      --user) user=${2:?--user needs a name}; shift 2 ;;
      --user=*) user=${1#--user=}; shift ;;
      *) break ;;
      esac
    done
    local host=${1:?exec needs a host}
    shift
    [[ ${1:-} == -- ]] && shift
    sb_is_host "$host" || sb_die "unknown host '$host' (${SB_HOSTS[*]})"
    [[ $user == "$SB_USER" || $user == "$SB_ATTACK_USER" ]] ||
      sb_die "exec --user: '$user' is neither $SB_USER nor $SB_ATTACK_USER"
    if [[ $user == "$SB_ATTACK_USER" ]] && ! sb_is_attack_host "$host"; then
      sb_die "exec --user $SB_ATTACK_USER: that user lives on ${SB_ATTACK_HOSTS[*]} only"
    fi
    if ((as_root)); then
      local init
      init=$(sb_init_pid "$host")
      if (($# == 0)); then
        exec nsenter -t "$init" --net --uts --mount --pid -- bash -i
      fi
      exec nsenter -t "$init" --net --uts --mount --pid -- bash -c "$*"
    fi
    sb_user_argv "$host" "$user"
    if (($# == 0)); then
      # shellcheck disable=SC2016 # expanded by the inner shell
      exec "${SB_ARGV[@]}" bash -c 'cd "$HOME" 2>/dev/null; exec bash -i'
    fi
    # shellcheck disable=SC2016 # expanded by the inner shell
    exec "${SB_ARGV[@]}" bash -c 'cd "$HOME" 2>/dev/null; eval "$1"' bash "$*"
    ;;
  health) sb_health ;;
  leaks) sb_leaks "$@" ;;
  reset) sb_reset ;;
  sshd-set) sb_sshd_set "$@" ;;
  login-shell) sb_login_shell "$@" ;;
  otp) sb_otp "$@" ;;
  otp-code) sb_otp_code "$@" ;;
  desk-key) sb_desk_key "$@" ;;
  forget-host-key) sb_forget_host_key "$@" ;;
  firewall) sb_firewall_set "$@" ;;
  link) sb_link_set "$@" ;;
  pid)
    local host=${1:?pid needs a host}
    sb_is_host "$host" || sb_die "unknown host '$host' (${SB_HOSTS[*]})"
    sb_init_pid "$host"
    ;;
  *)
    usage >&2
    sb_die "unknown command '$cmd'"
    ;;
  esac
}

main "$@"
