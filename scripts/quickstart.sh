#!/usr/bin/env bash
# Runs a real local sqd pipeline on this machine: a private sshd on 127.0.0.1 (own host key,
# own client key), a leader, two workers with the embedded store, and two "producing hosts"
# (directories served by that sshd) writing sample stats files (JSON lines with `cpu`); then
# prints `sqdctl status` showing the files committed, and a cluster query over every worker's
# shard: the average cpu per host, minute by minute. One alert rule is installed (average cpu of
# a host over 20 s above 90 for 10 s); host-b's producer runs hot for a minute every two, so
# `sqdctl alerts --follow` shows it pending, firing and resolved.
#
#   scripts/quickstart.sh          start (or restart) everything and show status
#   scripts/quickstart.sh stop     stop it all gracefully
#
# Everything lives under ./.quickstart (state, stores, keys, logs); delete it to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
# What this script writes must be readable by the private sshd's login user.
umask 022
repo="$PWD"
root="$repo/.quickstart"
port="${SQD_QUICKSTART_PORT:-7070}"
leader="127.0.0.1:$port"
sqd="$repo/target/release/sqd"
sqdctl="$repo/target/release/sqdctl"
# shellcheck source=scripts/lib/sshd.sh
source "$repo/scripts/lib/sshd.sh"

stop_all() {
  [ -f "$root/producers.pid" ] && kill "$(cat "$root/producers.pid")" 2>/dev/null || true
  rm -f "$root/producers.pid"
  for w in w1 w2; do
    [ -f "$root/store-$w/worker.pid" ] && "$sqd" --mode worker stop --store "$root/store-$w" 2>/dev/null || true
  done
  [ -f "$root/leader/leader.pid" ] && "$sqd" --mode leader stop --state-dir "$root/leader" 2>/dev/null || true
  [ -d "$root/sshd" ] && sqd_sshd_stop "$root/sshd" 2>/dev/null || true
}

if [ "${1:-}" = "stop" ]; then
  stop_all
  echo "quickstart stopped"
  exit 0
fi

# What a fresh Debian machine lacks: sshd, the ssh client and ssh-keygen.
missing=()
[ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1 || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "quickstart: cargo is required (https://rustup.rs)" >&2
  exit 1
fi

echo "==> building sqd (release)"
cargo build --release --locked --bins

mkdir -p "$root"
stop_all

echo "==> starting a private sshd on 127.0.0.1"
sqd_sshd_start "$root/sshd"
echo "    port $SQD_SSHD_PORT, user $SQD_SSHD_USER, key $SQD_SSHD_KEY"

echo "==> installing one alert rule: average cpu > 90 for 10 s ($root/rules.toml)"
cat >"$root/rules.toml" <<'RULES'
# The quickstart's alert rule (the commented sample of every key: config/rules.toml).
[[rule]]
name = "cpu-high"
metric = "cpu"
agg = "avg"
window = "20s"
by = ["host"]
op = ">"
threshold = 90
for = "10s"
every = "5s"
severity = "warning"
annotation = "{{ $labels.host }}: average cpu {{ $value }} over 20s (threshold {{ $threshold }})"
RULES
"$sqd" --mode leader check-rules "$root/rules.toml"

echo "==> starting leader on $leader"
# Every node reports its host's CPU/RAM/disk each second, under its own name (all run on
# this one machine here).
"$sqd" --mode leader start --listen "$leader" --state-dir "$root/leader" --cluster quickstart \
  --rules-file "$root/rules.toml" --metrics-interval-ms 1000 --host-name quickstart-leader \
  >"$root/leader.log" 2>&1 &
for _ in $(seq 1 100); do
  "$sqdctl" --leader "$leader" status >/dev/null 2>&1 && break
  sleep 0.1
done
if ! "$sqdctl" --leader "$leader" status >/dev/null 2>&1; then
  echo "quickstart: the leader did not start; see $root/leader.log:" >&2
  tail -n 20 "$root/leader.log" >&2
  exit 1
fi

for w in w1 w2; do
  echo "==> starting worker $w"
  "$sqd" --mode worker start --id "$w" --leader "$leader" --store "$root/store-$w" \
    --ssh-key "$SQD_SSHD_KEY" --known-hosts "$SQD_SSHD_KNOWN_HOSTS" --settle-ms 500 --poll-ms 250 \
    --metrics-interval-ms 1000 --host-name "quickstart-$w" >"$root/worker-$w.log" 2>&1 &
done
for _ in $(seq 1 100); do
  alive=$("$sqdctl" --leader "$leader" status --json 2>/dev/null | grep -c '"state": "alive"' || true)
  [ "$alive" -ge 2 ] && break
  sleep 0.1
done

for host in host-a host-b; do
  # The SSH login user claims and removes the files the producers write there.
  sqd_sshd_share "$root/producers/$host"
  if ! "$sqdctl" --leader "$leader" status --json | grep -q "\"name\": \"$host\""; then
    echo "==> adding client $host"
    "$sqdctl" --leader "$leader" add-client "$host" \
      --ssh "$SQD_SSHD_USER@127.0.0.1:$SQD_SSHD_PORT" --path "$root/producers/$host" --pattern '*.jsonl' --format jsonl
  fi
done

echo "==> producers write a stats file per host every second"
(
  i=0
  while true; do
    for host in host-a host-b; do
      f="$root/producers/$host/stats-$(date +%s)-$i.jsonl"
      cpu=$((RANDOM % 100))
      # host-b runs hot (92-99) for a minute every two: the alert rule catches it.
      if [ "$host" = host-b ] && [ $((i % 120)) -ge 20 ] && [ $((i % 120)) -lt 80 ]; then
        cpu=$((92 + RANDOM % 8))
      fi
      printf '{"host":"%s","seq":%d,"cpu":%d,"ts":%d}\n' "$host" "$i" "$cpu" "$(date +%s)" >"$f.tmp"
      mv "$f.tmp" "$f"
    done
    i=$((i + 1))
    sleep 1
  done
) >/dev/null 2>&1 &
echo $! >"$root/producers.pid"

echo "==> waiting for the first files to be committed"
for _ in $(seq 1 150); do
  committed=$("$sqdctl" --leader "$leader" status --json | python3 -c \
    'import json,sys; print(sum(c["files_total"] for c in json.load(sys.stdin)["clients"]))')
  [ "$committed" -ge 4 ] && break
  sleep 0.2
done

echo "==> waiting for the first samples"
for _ in $(seq 1 150); do
  samples=$("$sqdctl" --leader "$leader" status --json | python3 -c \
    'import json,sys; print(sum(c.get("samples_total", 0) for c in json.load(sys.stdin)["clients"]))')
  [ "$samples" -ge 4 ] && break
  sleep 0.2
done

echo
"$sqdctl" --leader "$leader" status
echo
# Each worker's store is one shard; the leader asks every shard and merges their answers.
echo "==> average cpu per host over the last 5 minutes, every shard of the cluster:"
"$sqdctl" --leader "$leader" query cpu --by host --from -5m --step 1m --agg avg
echo
echo "Files land in $root/store-w*/files/<client>/<date>/ (catalog: catalog.sqlite)."
echo "Samples: $sqdctl --leader $leader query cpu --where host=host-a --from -15m --step 1m --json"
echo "One shard, offline: $sqd --mode worker query --store $root/store-w1 cpu --from -15m --step 1m"
echo "The pipeline keeps running. Logs: $root/*.log"
echo "Alerts: $sqdctl --leader $leader alerts --follow   (host-b runs hot a minute every two)"
echo "Try:  $sqdctl --leader $leader status --json"
echo "Stop: scripts/quickstart.sh stop"
echo
echo "==> every node's host (sqdctl emitters; one emitter's last values: sqdctl emitter quickstart-w1):"
for _ in $(seq 1 50); do
  listed=$("$sqdctl" --leader "$leader" emitters --json 2>/dev/null | grep -c '"host"' || true)
  [ "$listed" -ge 3 ] && break
  sleep 0.1
done
"$sqdctl" --leader "$leader" emitters
