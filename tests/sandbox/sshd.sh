# shellcheck shell=bash
# sshd on gate, login and the compute nodes: key-only login for the test user.
# `sshd-set HOST KEY=VALUE...` rewrites one host's settings and restarts its sshd; `otp HOST on`
# (otp.sh) adds one-time codes on top of them.

# sb_sshd_value HOST KEY: the current value (override or default).
sb_sshd_value() {
  local host=$1 key=$2 f=$SB_DIR/hosts/$1/sshd-settings line
  if [[ -r $f ]]; then
    while IFS= read -r line; do
      if [[ ${line%%=*} == "$key" ]]; then
        printf '%s\n' "${line#*=}"
        return 0
      fi
    done <"$f"
  fi
  printf '%s\n' "${SB_SSHD_DEFAULTS[$key]}"
}

sb_write_sshd_config() {
  local host=$1 d=$SB_DIR/hosts/$1 k
  # One-time codes (`otp HOST on`, otp.sh): PAM asks for them through keyboard-interactive.
  local pam=no kbd=no methods=publickey otp_methods=""
  if [[ -r $d/otp-methods ]]; then
    otp_methods=$(<"$d/otp-methods")
    pam=yes kbd=yes methods=$otp_methods
  fi
  {
    cat <<EOF
# sshd of sandbox host $host ($SB_ID). Change with: scripts/sandbox --id $SB_ID sshd-set $host KEY=VALUE
Port 22
AddressFamily inet
ListenAddress 0.0.0.0
HostKey $d/ssh/ssh_host_ed25519_key
PidFile none
UsePAM $pam
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication $kbd
AuthenticationMethods $methods
AuthorizedKeysFile .ssh/authorized_keys
AllowUsers $SB_USER $SB_ATTACK_USER
StrictModes yes
X11Forwarding no
PrintMotd no
PrintLastLog no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel VERBOSE
EOF
    for k in "${SB_SSHD_KEYS[@]}"; do
      printf '%s %s\n' "$k" "$(sb_sshd_value "$host" "$k")"
    done
    if [[ -n $otp_methods ]]; then
      # A batch job's own ssh from a compute node is not asked for a code, as at real sites.
      printf 'Match Address %s,%s\n\tAuthenticationMethods publickey\n' \
        "${SB_ADDR[node1]}" "${SB_ADDR[node2]}"
    fi
  } >"$d/sshd_config"
  chmod 644 "$d/sshd_config"
}

sb_start_sshd() {
  local host=$1 log=$SB_DIR/log/sshd-$1.log
  SB_STEP_LOGS+=("$log")
  sb_write_sshd_config "$host"
  sb_root "$host" /usr/sbin/sshd -t -f "$SB_DIR/hosts/$host/sshd_config" >>"$log" 2>&1
  sb_daemon "sshd-$host" "$host" "$log" /usr/sbin/sshd -D -e -f "$SB_DIR/hosts/$host/sshd_config"
  sb_wait "sshd on $host listening on 22" 10 sb_listening "$host" 22
}

sb_start_all_sshd() {
  local h
  SB_STEP_LOGS=()
  for h in "${SB_SSHD_HOSTS[@]}"; do
    sb_start_sshd "$h"
  done
}

# sb_sshd_set HOST [--defaults] [KEY=VALUE...]
sb_sshd_set() {
  local host=${1:-} arg key val
  [[ -n $host ]] || sb_die "usage: sshd-set HOST [--defaults] [KEY=VALUE...]"
  shift
  local is_sshd_host=0 h
  for h in "${SB_SSHD_HOSTS[@]}"; do [[ $h == "$host" ]] && is_sshd_host=1; done
  ((is_sshd_host)) || sb_die "no sshd on '$host' (sshd runs on ${SB_SSHD_HOSTS[*]})"
  sb_lock
  [[ -e $SB_DIR/ready ]] || sb_die "sandbox $SB_ID is not up"
  local f=$SB_DIR/hosts/$host/sshd-settings
  local -A settings=()
  local line
  if [[ -r $f ]]; then
    while IFS= read -r line; do settings[${line%%=*}]=${line#*=}; done <"$f"
  fi
  for arg in "$@"; do
    if [[ $arg == --defaults ]]; then
      settings=()
      continue
    fi
    [[ $arg == *=* ]] || sb_die "expected KEY=VALUE, got '$arg'"
    key=${arg%%=*}
    val=${arg#*=}
    [[ -v SB_SSHD_DEFAULTS[$key] ]] || sb_die "unknown sshd setting '$key' (known: ${SB_SSHD_KEYS[*]})"
    [[ $val =~ ^[A-Za-z0-9:.,*_-]+$ ]] || sb_die "bad value '$val' for $key"
    if [[ $val == "${SB_SSHD_DEFAULTS[$key]}" ]]; then
      unset "settings[$key]"
    else
      settings[$key]=$val
    fi
  done
  : >"$f.new"
  for key in "${SB_SSHD_KEYS[@]}"; do
    if [[ -v settings[$key] ]]; then
      printf '%s=%s\n' "$key" "${settings[$key]}" >>"$f.new"
    fi
  done
  mv "$f.new" "$f"
  local t0
  t0=$(sb_now)
  sb_restart_sshd "$host" || return 1
  printf 'sandbox[%s]: sshd on %s restarted in %ss with:' "$SB_ID" "$host" "$(sb_elapsed "$t0")" >&2
  for key in "${SB_SSHD_KEYS[@]}"; do
    printf ' %s=%s' "$key" "$(sb_sshd_value "$host" "$key")" >&2
  done
  printf '\n' >&2
}

# sb_restart_sshd HOST: stop HOST's sshd and start it with a freshly written configuration.
sb_restart_sshd() {
  local host=$1
  sb_stop --grace 5 "sshd-$host"
  sb_wait "port 22 on $host released" 10 sb_not_listening "$host" 22
  SB_STEP_LOGS=()
  if ! sb_start_sshd "$host"; then
    sb_log "sshd on $host did not restart; log: $SB_DIR/log/sshd-$host.log"
    tail -n 20 "$SB_DIR/log/sshd-$host.log" >&2
    return 1
  fi
}

sb_not_listening() {
  ! sb_listening "$1" "$2"
}

# sb_login_shell HOST SHELL|--default: the test user's login shell for sshd on HOST (what it
# runs remote commands with: SHELL -c STRING). A copy of /etc/passwd with that shell is
# bind-mounted over /etc/passwd in HOST's mount namespace only; the machine's own file and the
# other hosts keep /bin/bash. --default removes the copy.
sb_login_shell() {
  local host=${1:-} shell=${2:-}
  [[ -n $host && -n $shell ]] || sb_die "usage: login-shell HOST SHELL|--default"
  local is_sshd_host=0 h
  for h in "${SB_SSHD_HOSTS[@]}"; do [[ $h == "$host" ]] && is_sshd_host=1; done
  ((is_sshd_host)) || sb_die "no sshd on '$host' (sshd runs on ${SB_SSHD_HOSTS[*]})"
  if [[ $shell != --default ]]; then
    [[ $shell == /* && -x $shell && ! -d $shell ]] ||
      sb_die "login shell '$shell' is not an absolute path to a program (install it first)"
  fi
  sb_lock
  [[ -e $SB_DIR/ready ]] || sb_die "sandbox $SB_ID is not up"
  local copy=$SB_DIR/hosts/$host/passwd i
  for ((i = 0; i < 10; i++)); do
    sb_root "$host" grep -q ' /etc/passwd ' /proc/self/mountinfo || break
    sb_root "$host" umount /etc/passwd
  done
  rm -f "$copy"
  if [[ $shell != --default ]]; then
    awk -F: -v OFS=: -v u="$SB_USER" -v s="$shell" '$1 == u { $7 = s } { print }' /etc/passwd >"$copy"
    chmod 644 "$copy"
    sb_root "$host" mount --bind "$copy" /etc/passwd
  fi
  printf 'sandbox[%s]: login shell of %s on %s: %s\n' "$SB_ID" "$SB_USER" "$host" \
    "$(sb_root "$host" getent passwd "$SB_USER" | cut -d: -f7)" >&2
}
