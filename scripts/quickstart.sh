#!/usr/bin/env bash
# Runs a real local sqd cluster on this machine: builds sqd, starts a leader and two workers on
# 127.0.0.1 with the embedded store, adds a client and prints `sqdctl status`.
#
#   scripts/quickstart.sh          start (or restart) the cluster and show its status
#   scripts/quickstart.sh stop     stop it gracefully
#
# Everything lives under ./.quickstart (state, stores, logs); delete it to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD/.quickstart"
port="${SQD_QUICKSTART_PORT:-7070}"
leader="127.0.0.1:$port"
sqd="$PWD/target/release/sqd"
sqdctl="$PWD/target/release/sqdctl"

stop_all() {
  for w in w1 w2; do
    [ -f "$root/store-$w/worker.pid" ] && "$sqd" --mode worker stop --store "$root/store-$w" 2>/dev/null || true
  done
  [ -f "$root/leader/leader.pid" ] && "$sqd" --mode leader stop --state-dir "$root/leader" 2>/dev/null || true
}

if [ "${1:-}" = "stop" ]; then
  stop_all
  echo "quickstart cluster stopped"
  exit 0
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "quickstart: cargo is required (https://rustup.rs)" >&2
  exit 1
fi

echo "==> building sqd (release)"
cargo build --release --locked --bins

mkdir -p "$root"
stop_all

echo "==> starting leader on $leader"
"$sqd" --mode leader start --listen "$leader" --state-dir "$root/leader" --cluster quickstart \
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
    >"$root/worker-$w.log" 2>&1 &
done
for _ in $(seq 1 100); do
  alive=$("$sqdctl" --leader "$leader" status --json | grep -c '"state": "alive"' || true)
  [ "$alive" -ge 2 ] && break
  sleep 0.1
done

if ! "$sqdctl" --leader "$leader" status --json | grep -q '"name": "demo-host"'; then
  echo "==> adding client demo-host"
  "$sqdctl" --leader "$leader" add-client demo-host --ssh "${USER:-$(id -un)}@127.0.0.1:22" --path /var/tmp/sqd-demo-stats
fi

echo
"$sqdctl" --leader "$leader" status
echo
echo "The cluster keeps running. Logs: $root/*.log"
echo "Try:  $sqdctl --leader $leader status --json"
echo "Stop: scripts/quickstart.sh stop"
