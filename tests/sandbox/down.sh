# shellcheck shell=bash
# `down`: stop every process of the instance (by recorded pid, then whatever is still inside its
# namespaces), remove namespaces and the state folder. Safe on a half-built or already removed
# instance.

sb_down() {
  sb_lock 600
  sb_down_locked
}

sb_down_locked() {
  local t0 n ns pid
  t0=$(sb_now)
  # Daemons first, gently, so slurmd/slurmctld/sshd can end their children.
  sb_stop --grace 3 slurmd-node1 slurmd-node2 slurmctld sshd-gate sshd-login sshd-node1 sshd-node2 munged xvfb
  # Killing a host's pid 1 makes the kernel kill everything else in that host.
  local -a hosts=() rest=()
  while read -r n; do
    case $n in
    host-*) hosts+=("$n") ;;
    *) rest+=("$n") ;;
    esac
  done < <(sb_pid_names)
  ((${#hosts[@]} == 0)) || sb_stop --grace 0 "${hosts[@]}"
  ((${#rest[@]} == 0)) || sb_stop --grace 1 "${rest[@]}"
  # Anything that entered a namespace of this instance without being tracked.
  while read -r ns; do
    [[ -n $ns ]] || continue
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      kill -KILL "$pid" 2>/dev/null || true
    done
  done < <(sb_netns_of_instance)
  while read -r ns; do
    [[ -n $ns ]] || continue
    local i
    for ((i = 0; i < 50; i++)); do
      [[ -z $(ip netns pids "$ns" 2>/dev/null) ]] && break
      sleep 0.1
    done
    ip netns del "$ns" 2>/dev/null || sb_log "could not remove network namespace $ns"
  done < <(sb_netns_of_instance)
  if [[ -n $SB_DIR && $SB_DIR == "$SB_ROOT/$SB_ID" && -d $SB_DIR ]]; then
    rm -rf --one-file-system "$SB_DIR"
  fi
  rm -f "$SB_LOCK"
  sb_remove_shared_leftovers
  printf 'sandbox[%s]: down in %ss\n' "$SB_ID" "$(sb_elapsed "$t0")" >&2
}

# The test user, its mount point and /run/sshd are shared by all instances: the last instance to
# go removes what the sandbox created.
sb_remove_shared_leftovers() {
  [[ -d $SB_ROOT ]] || return 0
  exec 8>"$SB_ROOT/.shared.lock"
  flock -w 120 8 || return 0
  sb_remove_shared_leftovers_locked
  exec 8>&-
  rmdir "$SB_ROOT" 2>/dev/null || true
}

sb_remove_shared_leftovers_locked() {
  [[ -z $(sb_instances) ]] || return 0
  local other
  other=$(ip netns list 2>/dev/null | awk '{ print $1 }' | grep -E '^pvsb-[a-z0-9]+-' || true)
  [[ -z $other ]] || return 0
  if [[ -e $SB_ROOT/.created-user ]] && getent passwd "$SB_USER" >/dev/null; then
    if [[ -z $(pgrep -u "$SB_USER" 2>/dev/null || true) ]]; then
      userdel "$SB_USER" 2>/dev/null || sb_log "could not remove user $SB_USER"
    fi
  fi
  if [[ -e $SB_ROOT/.created-home ]]; then
    rmdir "$SB_HOME" 2>/dev/null || true
  fi
  if [[ -e $SB_ROOT/.created-attack-user ]] && getent passwd "$SB_ATTACK_USER" >/dev/null; then
    if [[ -z $(pgrep -u "$SB_ATTACK_USER" 2>/dev/null || true) ]]; then
      userdel "$SB_ATTACK_USER" 2>/dev/null || sb_log "could not remove user $SB_ATTACK_USER"
    fi
  fi
  if [[ -e $SB_ROOT/.created-attack-home ]]; then
    rmdir "$SB_ATTACK_HOME" 2>/dev/null || true
  fi
  if [[ -e $SB_ROOT/.created-run-sshd ]]; then
    rmdir /run/sshd 2>/dev/null || true
  fi
  rm -f "$SB_ROOT"/.created-user "$SB_ROOT"/.created-home "$SB_ROOT"/.created-run-sshd "$SB_ROOT"/apt.log \
    "$SB_ROOT"/.created-attack-user "$SB_ROOT"/.created-attack-home \
    "$SB_ROOT"/.shared.lock
}

# `down --all`: every instance with a state folder, and orphaned namespaces.
sb_down_all() {
  local id
  local -A ids=()
  for id in $(sb_instances); do ids[$id]=1; done
  for id in $(ip netns list 2>/dev/null | awk '{ print $1 }' | sed -nE 's/^pvsb-([a-z0-9]+)-(net|desk|gate|login|node1|node2)$/\1/p'); do
    ids[$id]=1
  done
  for id in "${!ids[@]}"; do
    (
      sb_set_id "$id"
      sb_down
    )
  done
}
