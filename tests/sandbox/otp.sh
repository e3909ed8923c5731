# shellcheck shell=bash
# One-time codes at sshd (two-factor login), as HPC centres require: `otp HOST on|off` and
# `otp-code HOST`. PAM's pam_oath asks for a TOTP code (RFC 6238: HMAC-SHA1, 30 s steps, 6
# digits) through keyboard-interactive, after the key (`publickey,keyboard-interactive`) or
# instead of it (`keyboard-interactive`).
#
# OpenSSH 9.2 has no PAMServiceName: sshd always uses the PAM service "sshd". The host gets its
# own /etc/pam.d/sshd by a bind mount in its mount namespace only; the machine's own file and the
# other hosts are untouched. The secret and pam_oath's record of the last code used live in
# $SB_DIR/otp/users-HOST.oath (kept across off/on, so a code used once stays used).

SB_OTP_HOSTS=(login gate)
SB_OTP_STEP=30
# pam_oath accepts a code up to this many steps before or after the current one: tests hand out
# successive future steps (each code once), up to 30 minutes ahead.
SB_OTP_WINDOW=60
SB_OTP_DEFAULT_METHODS=publickey,keyboard-interactive
SB_OTP_PACKAGES=(libpam-oath oathtool)

sb_is_otp_host() {
  local h
  for h in "${SB_OTP_HOSTS[@]}"; do [[ $h == "$1" ]] && return 0; done
  return 1
}

sb_otp_usersfile() { printf '%s\n' "$SB_DIR/otp/users-$1.oath"; }

sb_otp_ensure_packages() {
  local -a SB_PACKAGES=("${SB_OTP_PACKAGES[@]}")
  sb_ensure_packages || sb_die "installing ${SB_OTP_PACKAGES[*]} failed (log: $SB_ROOT/apt.log)"
  local m
  for m in /lib/*/security/pam_oath.so /usr/lib/*/security/pam_oath.so; do
    [[ -e $m ]] && return 0
  done
  sb_die "pam_oath.so not found after installing libpam-oath"
}

# The usersfile for HOST: made once per instance with a fresh secret for the test user.
sb_otp_make_usersfile() {
  local host=$1 f secret
  f=$(sb_otp_usersfile "$host")
  [[ -s $f ]] && return 0
  mkdir -p "$SB_DIR/otp"
  chmod 700 "$SB_DIR/otp"
  secret=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
  (
    umask 077
    printf 'HOTP/T%s/6\t%s\t-\t%s\n' "$SB_OTP_STEP" "$SB_USER" "$secret" >"$f"
  )
}

sb_otp_write_pam() {
  local host=$1 f=$SB_DIR/hosts/$1/pam.d-sshd
  cat >"$f" <<EOF
# PAM service "sshd" of sandbox host $host ($SB_ID), bind-mounted over /etc/pam.d/sshd there.
# Made by: scripts/sandbox --id $SB_ID otp $host on. sshd's publickey step is its own; PAM adds
# the one-time code (keyboard-interactive).
auth     requisite  pam_oath.so usersfile=$(sb_otp_usersfile "$host") window=$SB_OTP_WINDOW digits=6
account  required   pam_permit.so
session  required   pam_permit.so
password required   pam_deny.so
EOF
  chmod 644 "$f"
}

# Remove every bind mount over /etc/pam.d/sshd inside HOST.
sb_otp_unmount_pam() {
  local host=$1 i
  for ((i = 0; i < 10; i++)); do
    sb_root "$host" grep -q ' /etc/pam.d/sshd ' /proc/self/mountinfo || return 0
    sb_root "$host" umount /etc/pam.d/sshd
  done
}

# sb_otp HOST on [--methods M] | HOST off
sb_otp() {
  local host=${1:-} state=${2:-} methods=$SB_OTP_DEFAULT_METHODS
  local usage="usage: otp HOST on [--methods publickey,keyboard-interactive|keyboard-interactive] | otp HOST off"
  [[ -n $host && -n $state ]] || sb_die "$usage"
  shift 2
  sb_is_otp_host "$host" || sb_die "otp: host '$host' is not one of ${SB_OTP_HOSTS[*]}"
  while (($# > 0)); do
    case $1 in
    --methods) methods=${2:?--methods needs a value}; shift 2 ;;
    --methods=*) methods=${1#--methods=}; shift ;;
    *) sb_die "otp: unknown argument '$1'; $usage" ;;
    esac
  done
  case $methods in
  publickey,keyboard-interactive | keyboard-interactive) ;;
  *) sb_die "otp: --methods '$methods' is not publickey,keyboard-interactive or keyboard-interactive" ;;
  esac
  [[ $state == on || $state == off ]] || sb_die "$usage"
  [[ $state == on ]] && sb_otp_ensure_packages
  sb_lock
  [[ -e $SB_DIR/ready ]] || sb_die "sandbox $SB_ID is not up"
  local d=$SB_DIR/hosts/$host t0
  t0=$(sb_now)
  sb_otp_unmount_pam "$host"
  if [[ $state == on ]]; then
    sb_otp_make_usersfile "$host"
    sb_otp_write_pam "$host"
    sb_root "$host" mount --bind "$d/pam.d-sshd" /etc/pam.d/sshd
    printf '%s\n' "$methods" >"$d/otp-methods"
  else
    rm -f "$d/otp-methods" "$d/pam.d-sshd"
  fi
  sb_restart_sshd "$host" || return 1
  if [[ $state == on ]]; then
    printf 'sandbox[%s]: sshd on %s restarted in %ss: AuthenticationMethods %s, one-time codes from %s (codes: otp-code %s)\n' \
      "$SB_ID" "$host" "$(sb_elapsed "$t0")" "$methods" "$(sb_otp_usersfile "$host")" "$host" >&2
  else
    printf 'sandbox[%s]: sshd on %s restarted in %ss: no one-time codes\n' \
      "$SB_ID" "$host" "$(sb_elapsed "$t0")" >&2
  fi
}

# sb_otp_code HOST [--step K | --counter N | --last-used]: the code of the current step + K
# (default 0), or of step N (seconds since the epoch / 30); --last-used: the step number of the
# last code pam_oath accepted on HOST (nothing if none yet).
sb_otp_code() {
  local host=${1:-} k=0 counter="" last_used=0 f secret now
  [[ -n $host ]] || sb_die "usage: otp-code HOST [--step K | --counter N | --last-used]"
  shift
  sb_is_otp_host "$host" || sb_die "otp-code: host '$host' is not one of ${SB_OTP_HOSTS[*]}"
  while (($# > 0)); do
    case $1 in
    --step) k=${2:?--step needs a number}; shift 2 ;;
    --step=*) k=${1#--step=}; shift ;;
    --counter) counter=${2:?--counter needs a number}; shift 2 ;;
    --counter=*) counter=${1#--counter=}; shift ;;
    --last-used) last_used=1; shift ;;
    *) sb_die "otp-code: unknown argument '$1'" ;;
    esac
  done
  [[ $k =~ ^-?[0-9]+$ ]] || sb_die "otp-code: --step '$k' is not a whole number"
  [[ -z $counter || $counter =~ ^[0-9]+$ ]] || sb_die "otp-code: --counter '$counter' is not a step number"
  f=$(sb_otp_usersfile "$host")
  [[ -r $f ]] || sb_die "otp-code: no one-time codes on $host yet (scripts/sandbox --id $SB_ID otp $host on)"
  command -v oathtool >/dev/null || sb_die "otp-code: oathtool is missing (scripts/install-deps)"
  secret=$(awk -v u="$SB_USER" '$2 == u { print $4; exit }' "$f")
  [[ -n $secret ]] || sb_die "otp-code: no secret for $SB_USER in $f"
  if ((last_used)); then
    sb_otp_last_used "$f" "$secret"
    return 0
  fi
  if [[ -z $counter ]]; then
    now=$(date +%s)
    counter=$((now / SB_OTP_STEP + k))
  fi
  oathtool --totp -s "${SB_OTP_STEP}s" -d 6 --now "@$((counter * SB_OTP_STEP))" "$secret"
}

# sb_otp_last_used USERSFILE SECRET: pam_oath records the last code accepted and when (local
# time, e.g. 2026-12-01T15:26:34L), not its step; find the step among those it could have been.
sb_otp_last_used() {
  local f=$1 secret=$2 otp when t from
  read -r otp when < <(awk -v u="$SB_USER" '$2 == u && NF >= 7 { print $6, $7; exit }' "$f") || return 0
  [[ -n ${otp:-} && -n ${when:-} ]] || return 0
  when=${when%L}
  t=$(date -d "${when/T/ }" +%s) || sb_die "otp-code: cannot read the time '$when' in $f"
  from=$((t / SB_OTP_STEP - SB_OTP_WINDOW))
  # The latest step with that code: a (rare) second step with the same 6 digits then errs on
  # the safe side, skipping a step rather than handing out a used one.
  oathtool --totp -s "${SB_OTP_STEP}s" -d 6 -w $((2 * SB_OTP_WINDOW)) --now "@$((from * SB_OTP_STEP))" "$secret" |
    awk -v otp="$otp" -v from="$from" '$1 == otp { last = from + NR - 1 } END { if (last != "") print last }'
}
