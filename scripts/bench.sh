#!/usr/bin/env bash
# Side-by-side benchmark on this machine: sqd against rsync over the same private sshd, key
# and cipher, on 127.0.0.1. Prints a markdown table and writes bench-results.json.
# It reports; it checks and fails nothing on speed.
#
#   scripts/bench.sh            small files: 20,000 x 4 KiB, 3 runs each
#   scripts/bench.sh --quick    2,000 x 4 KiB, 1 run each
#
# Contenders (each: pull, durable at the destination, source removed):
#   sqd            one client, one worker: claim -> transfer -> group commit (fsync) -> delete
#   rsync_remove   rsync -a --remove-source-files over an open ControlMaster (no fsync)
#   rsync_fsync    the same with --fsync (rsync >= 3.2.4), when available
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
files=20000
runs=3
if [ "${1:-}" = "--quick" ]; then files=2000; runs=1; fi
files="${BENCH_FILES:-$files}"   # overrides, for profiling one contender at another size
runs="${BENCH_RUNS:-$runs}"
size=4096

for tool in rsync python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool is required (apt-get install $tool)" >&2; exit 1; }
done
cargo build --release --locked --bins >/dev/null
sqd="$repo/target/release/sqd"
sqdctl="$repo/target/release/sqdctl"

work=$(mktemp -d /tmp/sqd-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${ctl:-}" ] && ssh -S "$ctl" -O exit x 2>/dev/null || true
  sqd_sshd_stop "$work/sshd" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=scripts/lib/sshd.sh
source "$repo/scripts/lib/sshd.sh"
sqd_sshd_start "$work/sshd" >/dev/null
# Every contender uses OpenSSH's default cipher (chacha20-poly1305 on OpenSSH 9), the same key
# and the same sshd.
ssh_opts=(-o BatchMode=yes -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$SQD_SSHD_KNOWN_HOSTS"
  -o IdentitiesOnly=yes -i "$SQD_SSHD_KEY" -p "$SQD_SSHD_PORT")

produce() { # DIR: $files random files of $size bytes
  python3 - "$1" "$files" "$size" <<'PY'
import os, sys
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(d, exist_ok=True)
for i in range(n):
    with open(os.path.join(d, f"stats-{i:06d}.jsonl"), "wb") as f:
        f.write(os.urandom(size))
PY
}
remaining() { find "$1" -maxdepth 1 -type f | wc -l; }
now() { date +%s.%N; }

run_sqd() { # prints seconds
  local dir="$work/sqd-src" state="$work/leader" store="$work/store"
  rm -rf "$dir" "$state" "$store"; produce "$dir"; sync
  "$sqd" --mode leader start --listen 127.0.0.1:0 --state-dir "$state" >"$work/leader.log" 2>&1 &
  pids+=($!)
  until [ -s "$state/leader.addr" ]; do sleep 0.05; done
  local addr; addr=$(cat "$state/leader.addr")
  "$sqd" --mode worker start --id bench --leader "$addr" --store "$store" \
    --ssh-key "$SQD_SSHD_KEY" --known-hosts "$SQD_SSHD_KNOWN_HOSTS" --settle-ms 0 --poll-ms 50 \
    ${BENCH_WORKER_CONFIG:+--config "$BENCH_WORKER_CONFIG"} \
    >"$work/worker.log" 2>&1 &
  pids+=($!)
  until "$sqdctl" --leader "$addr" status --json 2>/dev/null | grep -q '"state": "alive"'; do sleep 0.05; done
  local t0; t0=$(now)
  "$sqdctl" --leader "$addr" add-client bench --ssh "$SQD_SSHD_USER@127.0.0.1:$SQD_SSHD_PORT" --path "$dir" >/dev/null
  until [ "$(remaining "$dir")" -eq 0 ] && [ "$(find "$dir/.sqd/claim" -type f 2>/dev/null | wc -l)" -eq 0 ]; do sleep 0.02; done
  local t1; t1=$(now)
  "$sqd" --mode worker stop --store "$store" >/dev/null
  "$sqd" --mode leader stop --state-dir "$state" >/dev/null
  if [ -n "${BENCH_LOGS:-}" ]; then mkdir -p "$BENCH_LOGS" && cp "$work/worker.log" "$work/leader.log" "$BENCH_LOGS/"; fi
  local stored; stored=$(find "$store/files" -type f | wc -l)
  [ "$stored" -eq "$files" ] || echo "bench: sqd stored $stored of $files files" >&2
  python3 -c "print(f'{$t1 - $t0:.3f}')"
}

run_rsync() { # EXTRA_FLAGS... ; prints seconds
  local dir="$work/rsync-src" dst="$work/rsync-dst"
  rm -rf "$dir" "$dst"; produce "$dir"; mkdir -p "$dst"; sync
  ctl="$work/ctl"
  ssh "${ssh_opts[@]}" -M -S "$ctl" -f -N "$SQD_SSHD_USER@127.0.0.1"
  local t0; t0=$(now)
  rsync -a --remove-source-files "$@" -e "ssh ${ssh_opts[*]} -S $ctl" \
    "$SQD_SSHD_USER@127.0.0.1:$dir/" "$dst/"
  local t1; t1=$(now)
  ssh -S "$ctl" -O exit x 2>/dev/null || true
  python3 -c "print(f'{$t1 - $t0:.3f}')"
}

declare -A results
contenders=(sqd rsync_remove)
# (grep -q would close the pipe early; with pipefail rsync's SIGPIPE would hide the match)
if rsync --help 2>&1 | grep -c -- '--fsync' >/dev/null; then contenders+=(rsync_fsync); fi
if [ -n "${BENCH_ONLY:-}" ]; then read -r -a contenders <<<"$BENCH_ONLY"; fi
for c in "${contenders[@]}"; do
  times=()
  for _ in $(seq 1 "$runs"); do
    case $c in
      sqd) times+=("$(run_sqd)") ;;
      rsync_remove) times+=("$(run_rsync)") ;;
      rsync_fsync) times+=("$(run_rsync --fsync)") ;;
    esac
  done
  results[$c]="${times[*]}"
done

python3 - "$files" "$repo/bench-results.json" "${contenders[@]}" <<PY
import json, statistics, sys
files = int(sys.argv[1]); out = sys.argv[2]; names = sys.argv[3:]
raw = {$(for c in "${contenders[@]}"; do printf '"%s": [%s],' "$c" "$(echo "${results[$c]}" | tr ' ' ',')"; done)}
small = {}
for n in names:
    rates = [files / t for t in raw[n]]
    small[n] = {"files_per_s": statistics.median(rates), "min": min(rates), "max": max(rates), "runs": len(rates)}
print(f"| small files ({files} x 4 KiB) | files/s (median) | min | max | sqd / this |")
print("|---|---|---|---|---|")
for n in names:
    r = small[n]
    ratio = small["sqd"]["files_per_s"] / r["files_per_s"]
    print(f"| {n} | {r['files_per_s']:.0f} | {r['min']:.0f} | {r['max']:.0f} | {ratio:.2f} |")
json.dump({"small_files": small}, open(out, "w"), indent=2)
print(f"\nwrote {out}")
PY
