# shellcheck shell=bash
# nftables inside each host's network namespace.
#
# mode direct (default)                     mode gate
#   desk  -> login:22, gate:22                desk -> gate:22 only
#   login -> desk (any port)                  login -> desk blocked
#   gate  -> login (any port)                 gate -> login (any port)
#   node* -> login, node* (any port)          (same)
#   login -> anything                         (same)
#   desk <-> node* blocked, node* -> gate blocked
# mode isolated: as direct, but compute nodes reach login on slurmctld's port (6817) only: no
#   ssh, no forwards, no relay from the nodes (a firewall between compute and login nodes)
# Forbidden connections are rejected where they start (fast, "No route to host") and dropped
# where they arrive (in case the sender's rules are changed by a test).

sb_nft_rules() {
  local host=$1 mode=$2
  local desk=${SB_ADDR[desk]} gate=${SB_ADDR[gate]} login=${SB_ADDR[login]}
  local nodes="${SB_ADDR[node1]}, ${SB_ADDR[node2]}"
  local in="" out=""
  case $host in
  desk)
    if [[ $mode != gate ]]; then
      in="ip saddr $login accept"
      out="ip daddr { $login, $gate } tcp dport 22 accept"
    else
      out="ip daddr $gate tcp dport 22 accept"
    fi
    ;;
  gate)
    in="tcp dport 22 accept
    ip saddr $login accept"
    out="ip daddr $login accept"
    ;;
  login)
    if [[ $mode == isolated ]]; then
      in="ip saddr $gate accept
    ip saddr { $nodes } tcp dport 6817 accept"
    else
      in="ip saddr { $gate, $nodes } accept"
    fi
    if [[ $mode != gate ]]; then
      in+="
    ip saddr $desk tcp dport 22 accept"
    fi
    out="accept"
    ;;
  node1 | node2)
    in="ip saddr { $login, $nodes } accept"
    if [[ $mode == isolated ]]; then
      out="ip daddr $login tcp dport 6817 accept
    ip daddr { $nodes } accept"
    else
      out="ip daddr { $login, $nodes } accept"
    fi
    ;;
  esac
  cat <<EOF
table inet pvsandbox {}
delete table inet pvsandbox
table inet pvsandbox {
  chain input {
    type filter hook input priority filter; policy drop;
    iif "lo" accept
    ct state established,related accept
    ct state invalid drop
    meta nfproto ipv6 drop
    $in
  }
  chain output {
    type filter hook output priority filter; policy accept;
    oif "lo" accept
    ct state established,related accept
    meta nfproto ipv6 reject
    $out
    reject with icmpx type admin-prohibited
  }
}
EOF
}

sb_apply_firewall() {
  local host=$1 mode=$2 f=$SB_DIR/hosts/$1/nftables.conf
  sb_nft_rules "$host" "$mode" >"$f"
  sb_in_netns "$(sb_ns "$host")" nft -f "$f"
}

sb_apply_firewalls() {
  local mode h
  mode=$(cat "$SB_DIR/firewall-mode")
  for h in "${SB_HOSTS[@]}"; do
    sb_apply_firewall "$h" "$mode"
  done
}

sb_firewall_set() {
  local mode=${1:-}
  [[ $mode == direct || $mode == gate || $mode == isolated ]] || sb_die "usage: firewall direct|gate|isolated"
  sb_lock
  [[ -e $SB_DIR/ready ]] || sb_die "sandbox $SB_ID is not up"
  printf '%s\n' "$mode" >"$SB_DIR/firewall-mode"
  sb_apply_firewalls
  sb_log "firewall mode: $mode"
}

# The workstation's link: `down` drops every packet desk sends or receives other than on its
# loopback, connections already open too (no reset: a link gone without a word); `up` ends it.
sb_link_set() {
  local state=${1:-}
  [[ $state == down || $state == up ]] || sb_die "usage: link down|up"
  [[ -e $SB_DIR/ready ]] || sb_die "sandbox $SB_ID is not up"
  local ns
  ns=$(sb_ns desk)
  if [[ $state == down ]]; then
    sb_in_netns "$ns" nft -f - <<'EOF'
table inet pvsandbox_cut {}
delete table inet pvsandbox_cut
table inet pvsandbox_cut {
  chain input {
    type filter hook input priority filter - 10; policy accept;
    iif "lo" accept
    drop
  }
  chain output {
    type filter hook output priority filter - 10; policy accept;
    oif "lo" accept
    drop
  }
}
EOF
  else
    sb_in_netns "$ns" nft delete table inet pvsandbox_cut 2>/dev/null || true
  fi
  sb_log "desk's link: $state"
}
