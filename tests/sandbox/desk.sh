# shellcheck shell=bash
# Variants of desk's ssh setup, for the tests of what a person sees at the terminal:
#   desk-key --passphrase PASS | --plain   the test user's key encrypted (no agent runs), or not
#   forget-host-key [HOST...]              known_hosts without those hosts' keys (or with all)

# sb_desk_key --passphrase PASS | --plain
sb_desk_key() {
  local mode=${1:-} pass=""
  case $mode in
  --passphrase)
    pass=${2:-}
    [[ -n $pass ]] || sb_die "desk-key --passphrase needs a non-empty passphrase"
    ;;
  --passphrase=*)
    pass=${mode#--passphrase=}
    [[ -n $pass ]] || sb_die "desk-key --passphrase needs a non-empty passphrase"
    mode=--passphrase
    ;;
  --plain) ;;
  *) sb_die "usage: desk-key --passphrase PASS | --plain" ;;
  esac
  sb_lock
  [[ -e $SB_DIR/ready ]] || sb_die "sandbox $SB_ID is not up"
  local key=$SB_DIR/home/desk/.ssh/id_ed25519 plain=$SB_DIR/hosts/desk/id_ed25519.plain
  # The unencrypted original, kept the first time (the same pair the cluster accepts).
  if [[ ! -s $plain ]]; then
    ssh-keygen -y -P '' -f "$key" >/dev/null 2>&1 ||
      sb_die "desk's $key is already encrypted and no unencrypted copy was kept"
    (umask 077 && cp "$key" "$plain")
  fi
  local tmp=$key.new
  rm -f "$tmp"
  (umask 077 && cp "$plain" "$tmp")
  if [[ $mode == --passphrase ]]; then
    ssh-keygen -q -p -P '' -N "$pass" -f "$tmp" >/dev/null ||
      sb_die "could not encrypt desk's key"
  fi
  chown "$SB_USER:$SB_GROUP" "$tmp"
  chmod 600 "$tmp"
  mv "$tmp" "$key"
  if [[ $mode == --passphrase ]]; then
    sb_log "desk's ~/.ssh/id_ed25519 of $SB_USER is encrypted (ssh asks: Enter passphrase for key)"
  else
    sb_log "desk's ~/.ssh/id_ed25519 of $SB_USER is unencrypted"
  fi
}

# sb_forget_host_key [HOST...]: desk's ~/.ssh/known_hosts becomes the site's list of host keys
# without those of HOSTs (ssh then asks "The authenticity of host ... can't be established").
sb_forget_host_key() {
  local h ok ok_h
  for h in "$@"; do
    ok=0
    for ok_h in "${SB_SSHD_HOSTS[@]}"; do [[ $h == "$ok_h" ]] && ok=1; done
    ((ok)) || sb_die "forget-host-key: '$h' has no sshd (${SB_SSHD_HOSTS[*]})"
  done
  sb_lock
  [[ -e $SB_DIR/ready ]] || sb_die "sandbox $SB_ID is not up"
  local kh=$SB_DIR/home/desk/.ssh/known_hosts
  awk -v forget="$*" '
    BEGIN { n = split(forget, f, " "); for (i = 1; i <= n; i++) skip[f[i]] = 1 }
    { split($1, names, ","); if (!(names[1] in skip)) print }
  ' "$SB_DIR/etc/known_hosts" >"$kh.new"
  chown "$SB_USER:$SB_GROUP" "$kh.new"
  chmod 600 "$kh.new"
  mv "$kh.new" "$kh"
  if (($# > 0)); then
    sb_log "desk's known_hosts lacks the host keys of: $*"
  else
    sb_log "desk's known_hosts lists every host key"
  fi
}
