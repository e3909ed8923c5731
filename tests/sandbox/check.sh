# shellcheck shell=bash
# `status`, `list`, `health` and `leaks`.

SB_DAEMONS=(munged:login sshd-gate:gate sshd-login:login sshd-node1:node1 sshd-node2:node2
  slurmctld:login slurmd-node1:node1 slurmd-node2:node2 xvfb:desk)

sb_status() {
  if [[ ! -d $SB_DIR ]]; then
    printf 'sandbox %s: down\n' "$SB_ID"
    return 3
  fi
  local state=incomplete rc=1 h d name host pid
  if sb_is_up; then
    state=up
    rc=0
  fi
  printf 'sandbox %s: %s (since %s), firewall %s, state in %s\n' "$SB_ID" "$state" \
    "$(cat "$SB_DIR/ready" 2>/dev/null || echo -)" "$(cat "$SB_DIR/firewall-mode" 2>/dev/null || echo -)" "$SB_DIR"
  for h in "${SB_HOSTS[@]}"; do
    pid=$(sb_pid "host-$h") || pid="-"
    printf '  %-6s %-15s pid1=%-8s' "$h" "${SB_ADDR[$h]}" "$pid"
    for d in "${SB_DAEMONS[@]}"; do
      name=${d%%:*}
      host=${d#*:}
      [[ $host == "$h" ]] || continue
      if pid=$(sb_pid "$name"); then
        printf ' %s=%s' "$name" "$pid"
      else
        printf ' %s=DEAD' "$name"
      fi
    done
    printf '\n'
  done
  if [[ $state == up ]]; then
    local k
    printf '  sshd login:'
    for k in GatewayPorts AllowTcpForwarding AllowStreamLocalForwarding; do
      printf ' %s=%s' "$k" "$(sb_sshd_value login "$k")"
    done
    printf '\n'
    sb_root login sinfo -N -o '  %N %P %T %c' 2>&1 || true
    sb_root login squeue -o '  %i %u %T %N %j' 2>&1 || true
  fi
  return "$rc"
}

sb_list() {
  local id
  for id in $(sb_instances); do
    (
      sb_set_id "$id"
      if sb_is_up; then echo "$id up"; else echo "$id incomplete"; fi
    )
  done
}

# --- leaks: what a test may have left behind ----------------------------------------------------

# Listening sockets the sandbox itself owns.
sb_expected_listener() {
  local host=$1 port=$2
  case $host:$port in
  gate:22 | login:22 | node1:22 | node2:22 | login:6817 | node1:6818 | node2:6818) return 0 ;;
  esac
  return 1
}

# Print one line per leftover: test-user processes on every host, jobs in the queue, listening
# sockets other than the sandbox's daemons. Status 1 when there is any.
sb_leaks_once() {
  local h line found=0 port
  for h in "${SB_HOSTS[@]}"; do
    while IFS= read -r line; do
      [[ -n $line ]] || continue
      printf 'process %s: %s\n' "$h" "$line"
      found=1
    done < <(sb_root "$h" ps -u "$SB_USER" -o pid=,stat=,args= 2>/dev/null | awk '$2 !~ /^Z/' || true)
    # The second user's (an attack left running would skew the next test).
    while IFS= read -r line; do
      [[ -n $line ]] || continue
      printf 'process %s: [%s] %s\n' "$h" "$SB_ATTACK_USER" "$line"
      found=1
    done < <(sb_root "$h" ps -u "$SB_ATTACK_USER" -o pid=,stat=,args= 2>/dev/null | awk '$2 !~ /^Z/' || true)
    while IFS= read -r line; do
      [[ -n $line ]] || continue
      port=$(awk '{ print $5 }' <<<"$line")
      port=${port##*:}
      sb_expected_listener "$h" "$port" && continue
      printf 'socket %s: %s\n' "$h" "$line"
      found=1
    done < <(sb_root "$h" ss -Hltnup 2>/dev/null || true)
  done
  while IFS= read -r line; do
    [[ -n $line ]] || continue
    printf 'job: %s\n' "$line"
    found=1
  done < <(sb_root login squeue -h -o '%i %u %T %N %j' 2>/dev/null || true)
  return $((found))
}

# sb_leaks [--wait SECONDS]: leftovers may take a moment to exit; report what remains after that.
sb_leaks() {
  local wait=0
  if [[ ${1:-} == --wait ]]; then
    wait=${2:?--wait needs seconds}
  fi
  [[ -e $SB_DIR/ready ]] || sb_die "sandbox $SB_ID is not up"
  local t0 out
  t0=$(sb_now)
  while true; do
    if out=$(sb_leaks_once); then
      return 0
    fi
    if awk -v a="$t0" -v b="$(sb_now)" -v s="$wait" 'BEGIN { exit !(b - a >= s) }'; then
      printf '%s\n' "$out"
      return 1
    fi
    sleep 0.25
  done
}

# --- health ------------------------------------------------------------------------------------

SB_HEALTH_FAILS=0

sb_check() {
  local name=$1 t0 out rc=0
  shift
  t0=$(sb_now)
  out=$("$@" 2>&1) || rc=$?
  if ((rc == 0)); then
    printf '  ok    %-46s %6ss\n' "$name" "$(sb_elapsed "$t0")"
  else
    printf '  FAIL  %-46s %6ss\n' "$name" "$(sb_elapsed "$t0")"
    printf '%s\n' "$out" | sed 's/^/        | /'
    SB_HEALTH_FAILS=$((SB_HEALTH_FAILS + 1))
  fi
}

sb_health_daemons() {
  local d bad=0
  for d in "${SB_DAEMONS[@]}"; do
    if ! sb_pid "${d%%:*}" >/dev/null; then
      echo "${d%%:*} on ${d#*:} is not running"
      bad=1
    fi
  done
  return $bad
}

sb_health_ssh_login() {
  local out
  out=$(sb_user desk ssh -o BatchMode=yes -o ConnectTimeout=5 login hostname 2>&1) || {
    echo "$out"
    return 1
  }
  [[ $out == login ]] || {
    echo "expected 'login', got: $out"
    return 1
  }
}

sb_health_ssh_node_blocked() {
  local out rc=0
  out=$(sb_user desk ssh -o BatchMode=yes -o ConnectTimeout=3 node1 true 2>&1) || rc=$?
  if ((rc == 0)); then
    echo "desk reached node1 over ssh"
    return 1
  fi
  if ! grep -qiE 'no route to host|timed out|refused|unreachable' <<<"$out"; then
    echo "unexpected failure: $out"
    return 1
  fi
  echo "$out"
}

sb_health_node_to_desk_blocked() {
  local port=7391 outer lpid out rc=0 init
  init=$(sb_init_pid desk)
  nsenter -t "$init" --net --uts --mount --pid -- "$SB_PY" "$SB_DIR/share/probe.py" listen --seconds 10 "$port" \
    >"$SB_DIR/log/health-listen.out" 2>&1 &
  outer=$!
  lpid=$(sb_child_of "$outer") || return 1
  if sb_wait "listener on desk" 5 grep -q listening "$SB_DIR/log/health-listen.out"; then
    out=$(sb_user node1 "$SB_PY" sandbox/probe.py connect --timeout 2 "desk:$port")
    out+=$'\n'$(sb_user login "$SB_PY" sandbox/probe.py connect --timeout 2 "desk:$port")
    echo "$out"
    if [[ $(sed -n 1p <<<"$out") != "desk:$port "@(unreachable|timeout) ]]; then
      echo "node1 should not reach desk"
      rc=1
    fi
    if [[ $(sed -n 2p <<<"$out") != "desk:$port open" ]]; then
      echo "control failed: login should reach desk"
      rc=1
    fi
  else
    rc=1
  fi
  kill "$lpid" 2>/dev/null || true
  wait "$outer" 2>/dev/null || true
  rm -f "$SB_DIR/log/health-listen.out"
  return "$rc"
}

sb_health_srun() {
  local out
  out=$(sb_user desk ssh -o BatchMode=yes login srun -N1 -w node2 hostname 2>&1) || {
    echo "$out"
    return 1
  }
  [[ $out == node2 ]] || {
    echo "expected 'node2', got: $out"
    return 1
  }
}

sb_health_pvserver_job() {
  local id out f
  id=$(sb_user login "sbatch --parsable -N1 -n2 -w node1 -J health-pvserver -o health-pvserver-%j.out --wrap 'mpiexec -np 2 pvserver --server-port=11111'" 2>&1) || {
    echo "$id"
    return 1
  }
  [[ $id =~ ^[0-9]+$ ]] || {
    echo "sbatch said: $id"
    return 1
  }
  f=$SB_DIR/home/cluster/health-pvserver-$id.out
  local ok=0
  if sb_wait "pvserver in job $id accepting connections" 30 grep -q 'Accepting connection(s): node1:11111' "$f"; then
    ok=1
  fi
  sb_user login scancel "$id" || true
  sb_wait "job $id gone from squeue" 20 sb_job_gone "$id" || ok=0
  cat "$f" 2>/dev/null || true
  rm -f "$f"
  ((ok))
}

sb_job_gone() {
  [[ -z $(sb_root login squeue -h -j "$1" 2>/dev/null) ]]
}

sb_health() {
  [[ -e $SB_DIR/ready ]] || sb_die "sandbox $SB_ID is not up"
  local t0
  t0=$(sb_now)
  printf 'sandbox[%s]: health\n' "$SB_ID"
  SB_HEALTH_FAILS=0
  sb_check "daemons running" sb_health_daemons
  sb_check "ssh desk -> login works" sb_health_ssh_login
  sb_check "ssh desk -> node1 refused or times out" sb_health_ssh_node_blocked
  sb_check "node1 -> desk blocked (login -> desk open)" sb_health_node_to_desk_blocked
  sb_check "srun hostname on node2 (from desk via login)" sb_health_srun
  sb_check "pvserver (2 ranks) starts in a job on node1" sb_health_pvserver_job
  sb_check "nothing left behind" sb_leaks --wait 10
  printf '  %-52s %6ss\n' "total" "$(sb_elapsed "$t0")"
  if ((SB_HEALTH_FAILS > 0)); then
    printf 'sandbox[%s]: %d health check(s) FAILED\n' "$SB_ID" "$SB_HEALTH_FAILS"
    return 1
  fi
  printf 'sandbox[%s]: healthy\n' "$SB_ID"
}

# --- reset: end whatever a (failed) test left running ----------------------------------------

sb_reset() {
  [[ -e $SB_DIR/ready ]] || sb_die "sandbox $SB_ID is not up"
  local h pids n=0
  sb_root login scancel -u "$SB_USER" 2>/dev/null || true
  sb_root login scancel -u "$SB_ATTACK_USER" 2>/dev/null || true
  for h in "${SB_HOSTS[@]}"; do
    # pids as the host's own pid namespace numbers them, so kill them from inside it
    pids=$(sb_root "$h" ps -u "$SB_USER,$SB_ATTACK_USER" -o pid= 2>/dev/null | tr -s ' \n' ' ' || true)
    pids=${pids# }
    pids=${pids% }
    if [[ -n $pids ]]; then
      # shellcheck disable=SC2086 # a list of pids
      sb_root "$h" kill -KILL $pids 2>/dev/null || true
      n=$((n + $(wc -w <<<"$pids")))
    fi
  done
  sb_wait "the queue to empty" 30 sb_queue_empty || true
  sb_log "reset: killed $n process(es) of $SB_USER and $SB_ATTACK_USER, cancelled their jobs"
}

sb_queue_empty() {
  [[ -z $(sb_root login squeue -h 2>/dev/null) ]]
}
