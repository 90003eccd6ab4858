#!/usr/bin/env bash
# Side-by-side benchmark on this machine: sqd against rsync, tar over ssh and raw ssh, all over
# the same private sshd on 127.0.0.1, the same key and the same cipher (the sshd offers only
# aes128-gcm@openssh.com, so every contender negotiates it). Prints markdown tables and writes
# bench-results.json. It reports; it checks and fails nothing on speed.
#
#   scripts/bench.sh            small 20,000 x 4 KiB, medium 2,000 x 256 KiB, large 4 x 256 MiB; 3 runs;
#                               latency 1,000 files; failover 20 workers + 2,000 clients, 5 kills;
#                               leader scale 1,000 workers + 10,000 agents, 3 runs
#   scripts/bench.sh --quick    2,000 x 4 KiB, 200 x 256 KiB, 2 x 64 MiB, 200 latency files,
#                               5 workers + 200 clients, 100 workers + 1,000 agents; 1 run (< 3 min)
#
# Contenders (pull from the producing directory; "remove" ones also delete the sources):
#   sqd                 one client, one worker: claim -> transfer -> group commit (fsync) -> delete;
#                       measured from a worker already connected to the idle client (as rsync
#                       runs over an open ControlMaster): the files are renamed into the watched
#                       directory when the clock starts, and those renames count against sqd
#   rsync_remove        rsync -a --remove-source-files over an open ControlMaster (no fsync)
#   rsync_remove_fsync  the same with --fsync (rsync >= 3.2.4), when available
#   ssh_tar             ssh 'tar cf - .' | tar xf -   (no removal, no fsync)
#   ssh_cat             large files only: ssh cat FILE > /dev/null, the transport ceiling
# CPU: core-seconds of the whole machine during the run (both ends together), and of the
# producing side alone (everything under the private sshd).
#
# Cluster sets, run by the Rust bench binary benches/cluster.rs (real sqd processes, real gRPC):
#   latency       client agent + worker + leader over the private sshd; files written at a steady
#                 rate; close -> durable commit (store catalog), p50/p99; worker defaults
#                 (poll 1 s, settle 1 s)
#   failover      leader + real workers + clients (all but one with an unreachable SSH target);
#                 kill -9 the real client's worker: time until all its clients are on live
#                 workers (p50/p99 over the kills) and until the real client's new file is
#                 committed and removed (resume_s)
#   leader_scale  simulated workers and agents heartbeating at 1 Hz, one TCP connection each;
#                 leader CPU (% of one core), RSS, heartbeat round trip p99, failover time; each
#                 run is a pair: without host metrics, then with every node sending host values
#                 every 10 s (no failover in that one): the leader's CPU and RSS cost of them
#   query         (benches/query.rs; not in the default sets) 3 workers with pre-filled shards,
#                 1,000 series x 24 h at 10 s; 50 cluster queries of 24 h at 1 min: p50/p99,
#                 leader RSS growth; time to answer with one shard SIGSTOPped (deadline 2 s)
#   alerts        (benches/alerts.rs; not in the default sets) 500 rules x 100 series each on
#                 3 workers (shards filled with the last 10 min below the threshold), every 10 s:
#                 each rule's round (read + durable evaluation) p50/p99/max over 60 s, the
#                 leader's CPU over that window (% of one core), and 20 threshold crossings
#                 (firing and resolved) from the producer file's rename to `sqdctl alerts
#                 --follow`: p50/p99 (includes the pull: settle 300 ms, poll 100 ms). --quick:
#                 50 rules x 20 series, 20 s window, 3 crossings.
#
# Stats ingest (set `ingest`): benches/ingest.rs on a real store (commit rate per format in
# samples/s per core, bytes per sample after sealing 24 h of 60 series at 10 s, one-shard query
# of 1,000 series over 24 h at 1 min), then the small-file set on JSON-lines content with the
# client added `--format none` (sqd_none) and `--format auto` (sqd_auto), interleaved.
#
# Env overrides: BENCH_ONLY="sqd rsync_remove" (contenders),
# BENCH_SETS="small medium large latency failover leader_scale ingest",
# BENCH_FILES (small-file count), BENCH_RUNS, BENCH_WORKER_CONFIG (worker TOML), BENCH_LOGS
# (copy the sqd logs there).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
# What this script writes must be readable by the private sshd's login user.
umask 022
quick=0
[ "${1:-}" = "--quick" ] && quick=1
quick_flag=""
[ $quick = 1 ] && quick_flag=--quick
if [ $quick = 1 ]; then
  small_n=2000 medium_n=200 large_n=2 large_size=$((64 << 20)) runs=1
  latency_args=(--files 200 --rate 50)
  failover_args=(--workers 5 --clients 200 --repeats 3)
  scale_args=(--workers 100 --agents 1000 --warmup-s 3 --window-s 5 --kills 1)
else
  small_n=20000 medium_n=2000 large_n=4 large_size=$((256 << 20)) runs=3
  latency_args=(--files 1000 --rate 50)
  failover_args=(--workers 20 --clients 2000 --repeats 5)
  scale_args=(--workers 1000 --agents 10000 --warmup-s 10 --window-s 20 --kills 3)
fi
small_n="${BENCH_FILES:-$small_n}"
runs="${BENCH_RUNS:-$runs}"
sets="${BENCH_SETS:-small medium large latency failover leader_scale ingest}"
cipher=aes128-gcm@openssh.com

# What a fresh Debian machine lacks: the contenders (rsync), sshd and the ssh client.
missing=()
command -v rsync >/dev/null 2>&1 || missing+=(rsync)
[ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1 || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v tar >/dev/null 2>&1 || missing+=(tar)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: installing ${missing[*]}" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The interpreter itself: a version manager's shim (pyenv) costs ~0.1 s of shell scripts per
# start, some of it inside measured windows.
py=$(python3 -c 'import sys; print(sys.executable)')
cargo build --release --locked --bins >/dev/null
cargo bench --locked --bench cluster --bench ingest --no-run >/dev/null 2>&1 ||
  cargo bench --locked --bench cluster --bench ingest --no-run # show why it failed
# The cluster bench binary, run once per measurement (its JSON on stdout, progress on stderr).
# Each cluster run is bounded (BENCH_SET_TIMEOUT seconds, default 3600) and never stops the
# others; see the loop below.
set_timeout="${BENCH_SET_TIMEOUT:-3600}"
# OUT unchanged when RC is 0 and OUT is not empty; else the JSON of a run that did not finish
# (timeout's 124, or 137 after its --kill-after, is a time-out).
failed_json() {
  local rc=$1 out=$2 timed=false
  if [ "$rc" -eq 0 ] && [ -n "$out" ]; then echo "$out"; return; fi
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then timed=true; fi
  echo "{\"failed\": \"exit code $rc\", \"timed_out\": $timed}"
}
query_bench() { timeout --kill-after=30 "$set_timeout" cargo bench --locked --bench query -q -- "$@"; }
alerts_bench() { timeout --kill-after=30 "$set_timeout" cargo bench --locked --bench alerts -q -- "$@"; }
sqd="$repo/target/release/sqd"
sqdctl="$repo/target/release/sqdctl"

work=$(mktemp -d /tmp/sqd-bench.XXXXXX)
# The private sshd's login user (not root: see scripts/lib/sshd.sh) reaches the sources inside.
chmod 711 "$work"
cleanup() {
  # sqd daemons of an interrupted run
  for pid in $(jobs -p); do kill "$pid" 2>/dev/null || true; done
  [ -n "${ctl:-}" ] && ssh -S "$ctl" -O exit x 2>/dev/null || true
  sqd_sshd_stop "$work/sshd" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# A signal (Ctrl-C, timeout) exits through the EXIT trap too, so nothing is left running.
trap "exit 130" INT
trap "exit 143" TERM
# shellcheck source=scripts/lib/sshd.sh
source "$repo/scripts/lib/sshd.sh"
SQD_SSHD_EXTRA_CONFIG="Ciphers $cipher" sqd_sshd_start "$work/sshd" >/dev/null
sshd_pid=$(tr -dc '0-9' <"$work/sshd/sshd.pid")
ssh_opts=(-o BatchMode=yes -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$SQD_SSHD_KNOWN_HOSTS"
  -o IdentitiesOnly=yes -i "$SQD_SSHD_KEY" -p "$SQD_SSHD_PORT" -c "$cipher")
remote="$SQD_SSHD_USER@127.0.0.1"

produce() { # DIR COUNT SIZE: COUNT files of SIZE random bytes (of JSON lines: produce_kind=jsonl)
  "$py" - "$@" "${produce_kind:-random}" <<'PY'
import os, random, sys, time
d, n, size, kind = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
os.makedirs(d, exist_ok=True)
rng = random.Random(7)
# Recent timestamps (older ones would fall outside the shard's retention), 10 s per file.
start = int(time.time()) - n * 10
def stats(i, size):
    # Host-like JSON lines, as the quickstart's producers write, up to SIZE at a line end.
    lines, total, t = [], 0, start + i * 10
    while True:
        line = (f'{{"ts": {t}, "host": "h{i % 50}", "cpu": {rng.uniform(0, 100):.1f}, '
                f'"mem_mb": {rng.randint(1000, 8000)}, "load1": {rng.uniform(0, 4):.2f}}}\n')
        if total + len(line) > size:
            return "".join(lines) if lines else line
        lines.append(line); total += len(line); t += 1
for i in range(n):
    with open(os.path.join(d, f"stats-{i:06d}.jsonl"), "wb") as f:
        if kind == "jsonl":
            f.write(stats(i, size).encode())
            continue
        left = size
        while left:
            chunk = min(left, 8 << 20)
            f.write(os.urandom(chunk))
            left -= chunk
PY
  sync
  # The login user removes the sources (rsync --remove-source-files, sqd).
  sqd_sshd_share "$1"
}
now() { date +%s.%N; }
# Busy seconds of the whole machine (all cores) so far.
machine_cpu() { awk '/^cpu /{print ($2+$3+$4+$7+$8+$9)/100}' /proc/stat; }
# CPU seconds used by the private sshd and everything under it (sessions, sftp-server, remote
# rsync/tar/cat), including children already reaped.
producer_cpu() {
  "$py" - "$sshd_pid" <<'PY'
import os, sys
root = int(sys.argv[1]); tick = os.sysconf("SC_CLK_TCK")
stats = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            stats[int(p)] = (int(f[1]), sum(int(x) for x in f[11:15]))
        except (OSError, IndexError):
            pass
def under(pid):
    while pid > 1:
        if pid == root:
            return True
        pid = stats.get(pid, (0, 0))[0]
    return False
print(sum(t for pid, (_, t) in stats.items() if under(pid)) / tick)
PY
}
elapsed() { "$py" -c "print(f'{$2 - $1:.3f}')"; }

# Each run_* prints "seconds machine_cpu_s producer_cpu_s" of the transfer only.
# Ordered so that neither the clock nor the machine's CPU count these helpers themselves.
measure_start() { p0=$(producer_cpu); m0=$(machine_cpu); t0=$(now); }
measure_end() {
  local t1 m1 p1
  t1=$(now); m1=$(machine_cpu); p1=$(producer_cpu)
  echo "$(elapsed "$t0" "$t1") $(elapsed "$m0" "$m1") $(elapsed "$p0" "$p1")"
}

run_sqd() { # COUNT SIZE
  local dir="$work/src" state="$work/leader" store="$work/store"
  rm -rf "$dir" "$dir.in" "$state" "$store"; produce "$dir.in" "$1" "$2"; sqd_sshd_share "$dir"
  "$sqd" --mode leader start --listen 127.0.0.1:0 --state-dir "$state" >"$work/leader.log" 2>&1 &
  until [ -s "$state/leader.addr" ]; do sleep 0.05; done
  local addr; addr=$(cat "$state/leader.addr")
  # The worker's ssh reads no config that could change the cipher: the sshd offers only one.
  "$sqd" --mode worker start --id bench --leader "$addr" --store "$store" \
    --ssh-key "$SQD_SSHD_KEY" --known-hosts "$SQD_SSHD_KNOWN_HOSTS" --settle-ms 0 --poll-ms 50 \
    ${BENCH_WORKER_CONFIG:+--config "$BENCH_WORKER_CONFIG"} \
    >"$work/worker.log" 2>&1 &
  until "$sqdctl" --leader "$addr" status --json 2>/dev/null | grep -q '"state": "alive"'; do sleep 0.05; done
  "$sqdctl" --leader "$addr" add-client bench --ssh "$remote:$SQD_SSHD_PORT" --path "$dir" \
    ${sqd_format:+--format "$sqd_format"} >/dev/null
  # Connected and through a first (empty) listing: the steady state of a long-running worker.
  until grep -q 'connected client=bench' "$work/worker.log"; do sleep 0.05; done
  sleep 0.3
  measure_start
  # One process renames the files in, then waits (without a fork per poll) until the source
  # and every claim dir are empty: the end of sqd's run, as rsync's exit is the end of its.
  "$py" - "$dir.in" "$dir" <<'PY'
import os, sys, time
src, dst = sys.argv[1], sys.argv[2]
for name in sorted(os.listdir(src)):
    os.rename(os.path.join(src, name), os.path.join(dst, name))
def has_file(d):
    try:
        with os.scandir(d) as it:
            return any(e.is_file(follow_symlinks=False) for e in it)
    except FileNotFoundError:
        return False
def claims(d):
    try:
        with os.scandir(os.path.join(d, ".sqd", "claim")) as it:
            return [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []
while has_file(dst) or any(has_file(c) for c in claims(dst)):
    time.sleep(0.02)
PY
  measure_end
  "$sqd" --mode worker stop --store "$store" >/dev/null
  "$sqd" --mode leader stop --state-dir "$state" >/dev/null
  if [ -n "${BENCH_LOGS:-}" ]; then mkdir -p "$BENCH_LOGS" && cp "$work/worker.log" "$work/leader.log" "$BENCH_LOGS/"; fi
  local stored; stored=$(find "$store/files" -type f | wc -l)
  [ "$stored" -eq "$1" ] || echo "bench: sqd stored $stored of $1 files" >&2
}

open_master() {
  ctl="$work/ctl"
  ssh "${ssh_opts[@]}" -M -S "$ctl" -f -N -- "$remote"
}
close_master() { ssh -S "$ctl" -O exit x 2>/dev/null || true; ctl=; }

run_rsync() { # COUNT SIZE EXTRA_FLAGS...
  local n=$1 size=$2 dir="$work/src" dst="$work/dst"; shift 2
  rm -rf "$dir" "$dst"; produce "$dir" "$n" "$size"; mkdir -p "$dst"
  open_master
  measure_start
  rsync -a --remove-source-files "$@" -e "ssh ${ssh_opts[*]} -S $ctl" "$remote:$dir/" "$dst/"
  measure_end
  close_master
}

run_tar() { # COUNT SIZE
  local dir="$work/src" dst="$work/dst"
  rm -rf "$dir" "$dst"; produce "$dir" "$1" "$2"; mkdir -p "$dst"
  open_master
  measure_start
  ssh "${ssh_opts[@]}" -S "$ctl" -- "$remote" "tar cf - -C '$dir' ." | tar xf - -C "$dst"
  measure_end
  close_master
}

run_cat() { # COUNT SIZE
  local dir="$work/src"
  rm -rf "$dir"; produce "$dir" "$1" "$2"
  open_master
  measure_start
  for f in "$dir"/*; do ssh "${ssh_opts[@]}" -S "$ctl" -- "$remote" "cat '$f'" >/dev/null; done
  measure_end
  close_master
}

fsync_ok=0
# (grep -q would close the pipe early; with pipefail rsync's SIGPIPE would hide the match)
if rsync --help 2>&1 | grep -c -- '--fsync' >/dev/null; then fsync_ok=1; fi

results="$work/results.txt" cluster_results="$work/cluster.jsonl" failed_runs="$work/failed.txt"
: >"$results"
: >"$cluster_results"
: >"$failed_runs"
for set in $sets; do
  case $set in
    alerts)
      if [ $quick = 1 ]; then
        a_args=(--rules 50 --series 20 --window-s 20 --crossings 3)
      else
        a_args=(--rules 500 --series 100 --window-s 60 --crossings 20)
      fi
      rc=0
      out=$(alerts_bench "${a_args[@]}") || rc=$?
      out=$(failed_json "$rc" "$out")
      echo "{\"set\": \"alerts\", \"run\": $out}" >>"$cluster_results"
      echo "bench: alerts: $out" >&2
      continue
      ;;
    query)
      if [ $quick = 1 ]; then q_args=(--series 300 --hours 6 --queries 20); else q_args=(); fi
      rc=0
      out=$(query_bench "${q_args[@]}") || rc=$?
      out=$(failed_json "$rc" "$out")
      echo "{\"set\": \"query\", \"run\": $out}" >>"$cluster_results"
      echo "bench: query: $out" >&2
      continue
      ;;
    latency | failover | leader_scale)
      case $set in
        latency) args=(latency "${latency_args[@]}") n_runs=$runs ;;
        # One run of several kills: each kill is a sample (p50/p99 over kills).
        failover) args=(failover "${failover_args[@]}") n_runs=1 ;;
        leader_scale) args=(leader-scale "${scale_args[@]}") n_runs=$runs ;;
      esac
      # leader_scale runs in pairs: host metrics off, then on at 10 s (no kills: only the
      # CPU and RSS are compared).
      variants=("")
      [ "$set" = leader_scale ] && variants=("" "--host-metrics-ms 10000 --kills 0")
      for _ in $(seq 1 "$n_runs"); do
        for variant in "${variants[@]}"; do
          # A set that fails, panics or hangs is reported as such and the other sets still run.
          rc=0
          # shellcheck disable=SC2086 # the variant is words on purpose
          out=$(timeout --kill-after=30 "$set_timeout" cargo bench --locked --bench cluster -q -- "${args[@]}" $variant) || rc=$?
          out=$(failed_json "$rc" "$out")
          echo "{\"set\": \"$set\", \"run\": $out}" >>"$cluster_results"
          echo "bench: $set${variant:+ ($variant)}: $out" >&2
        done
      done
      continue
      ;;
    ingest)
      rc=0
      out=$(timeout --kill-after=30 "$set_timeout" cargo bench --locked --bench ingest -q -- ${quick_flag}) || rc=$?
      out=$(failed_json "$rc" "$out")
      echo "{\"set\": \"ingest\", \"run\": $out}" >>"$cluster_results"
      echo "bench: ingest: $out" >&2
      set=ingest_small n=$small_n size=4096; contenders=(sqd_none sqd_auto)
      ;;
    small) n=$small_n size=4096; contenders=(sqd rsync_remove rsync_remove_fsync ssh_tar) ;;
    medium) n=$medium_n size=262144; contenders=(sqd rsync_remove rsync_remove_fsync ssh_tar) ;;
    large) n=$large_n size=$large_size; contenders=(sqd ssh_cat rsync_remove) ;;
    *) echo "bench: unknown set $set (small, medium, large, latency, failover, leader_scale, ingest, query, alerts)" >&2; exit 2 ;;
  esac
  [ -n "${BENCH_ONLY:-}" ] && read -r -a contenders <<<"$BENCH_ONLY"
  # Runs interleave the contenders (sqd, rsync, ..., sqd, rsync, ...) so that the machine's
  # drift over minutes (writeback, discard) weighs on all of them alike.
  for _ in $(seq 1 "$runs"); do
    for c in "${contenders[@]}"; do
      [ "$c" = rsync_remove_fsync ] && [ $fsync_ok = 0 ] && continue
      rc=0
      case $c in
        sqd) out=$(run_sqd "$n" "$size") || rc=$? ;;
        sqd_none | sqd_auto)
          out=$(produce_kind=jsonl sqd_format=${c#sqd_} run_sqd "$n" "$size") || rc=$? ;;
        rsync_remove) out=$(run_rsync "$n" "$size") || rc=$? ;;
        rsync_remove_fsync) out=$(run_rsync "$n" "$size" --fsync) || rc=$? ;;
        ssh_tar) out=$(run_tar "$n" "$size") || rc=$? ;;
        ssh_cat) out=$(run_cat "$n" "$size") || rc=$? ;;
        *) echo "bench: unknown contender $c" >&2; exit 2 ;;
      esac
      if [ $rc -ne 0 ]; then
        echo "bench: $set $c failed (exit code $rc); going on with the others" >&2
        echo "$set $c exit code $rc" >>"$failed_runs"
        continue
      fi
      echo "$set $c $n $size $out" >>"$results"
      echo "bench: $set $c: $out (s, machine cpu s, producer cpu s)" >&2
    done
  done
done

"$py" - "$results" "$repo/bench-results.json" "$cipher" "$cluster_results" "$failed_runs" <<'PY'
import json, math, statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
out, cipher = sys.argv[2], sys.argv[3]
cluster_runs = [json.loads(l) for l in open(sys.argv[4]) if l.strip()]
data = {}
for s, c, n, size, secs, mcpu, pcpu in rows:
    d = data.setdefault(s, {}).setdefault(c, {"n": int(n), "size": int(size), "runs": []})
    d["runs"].append((float(secs), float(mcpu), float(pcpu)))
def summary(set_name, d):
    n, size = d["n"], d["size"]
    secs = [r[0] for r in d["runs"]]
    per = lambda f: [f(r) for r in d["runs"]]
    res = {"runs": len(secs)}
    if set_name in ("small", "ingest_small"):
        rates = per(lambda r: n / r[0])
        res.update(files_per_s=statistics.median(rates), min=min(rates), max=max(rates))
        res["cpu_core_s"] = statistics.median(per(lambda r: r[1] * 1000 / n))
        res["producer_cpu_core_s"] = statistics.median(per(lambda r: r[2] * 1000 / n))
        res["cpu_unit"] = "core-seconds per 1,000 files"
    else:
        gb = n * size / 1e9
        rates = per(lambda r: n * size / 1e6 / r[0])
        res.update(mb_per_s=statistics.median(rates), min=min(rates), max=max(rates))
        res["cpu_core_s"] = statistics.median(per(lambda r: r[1] / gb))
        res["producer_cpu_core_s"] = statistics.median(per(lambda r: r[2] / gb))
        res["cpu_unit"] = "core-seconds per GB"
    return res
report = {"cipher": cipher}
names = {"small": "small_files", "medium": "medium_files", "large": "large_files",
         "ingest_small": "ingest_small_files"}
for s, cs in data.items():
    report[names[s]] = {c: summary(s, d) for c, d in cs.items()}
for s, cs in data.items():
    key = "files_per_s" if s in ("small", "ingest_small") else "mb_per_s"
    first = next(iter(cs.values()))
    print(f"\n### {names[s]}: {first['n']} x {first['size'] // 1024} KiB ({cipher})\n")
    print(f"| contender | {key} (median) | min | max | sqd / this | cpu core-s | producer core-s |")
    print("|---|---|---|---|---|---|---|")
    sqd = report[names[s]].get("sqd") or report[names[s]].get("sqd_auto")
    for c, r in report[names[s]].items():
        ratio = f"{sqd[key] / r[key]:.2f}" if sqd else "-"
        print(f"| {c} | {r[key]:.0f} | {r['min']:.0f} | {r['max']:.0f} | {ratio} | {r['cpu_core_s']:.2f} | {r['producer_cpu_core_s']:.2f} |")
    print(f"\ncpu: {first and summary(s, first)['cpu_unit']}")

def pct(values, p):  # nearest rank
    v = sorted(values)
    return v[max(1, math.ceil(p / 100 * len(v))) - 1]
def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}
report["failed"] = [l.strip() for l in open(sys.argv[5]) if l.strip()]
by_set = {}
for r in cluster_runs:
    by_set.setdefault(r["set"], []).append(r["run"])
# Runs that failed or timed out are listed as such; the figures come from the others (and,
# for failover, from the kills measured before a run stopped).
for s, runs in list(by_set.items()):
    bad = [r for r in runs if r.get("failed") or r.get("timed_out")]
    report["failed"] += [f"{s}: " + (r.get("failed") or "timed out") for r in bad]
    keep = [r for r in runs if not (r.get("failed") or r.get("timed_out"))]
    by_set[s] = keep if s != "failover" else [r for r in runs if r.get("reassign_s")]
    if not by_set[s]:
        del by_set[s]
if "latency" in by_set:
    runs = by_set["latency"]
    lat = {"runs": len(runs), "files": runs[0]["files"], "rate_per_s": runs[0]["rate_per_s"],
           "poll_ms": runs[0]["poll_ms"], "settle_ms": runs[0]["settle_ms"]}
    for k in ("p50_ms", "p99_ms"):
        s = spread([r[k] for r in runs])
        lat[k], lat[k + "_min"], lat[k + "_max"] = s["median"], s["min"], s["max"]
    report["latency"] = lat
if "failover" in by_set:
    runs = by_set["failover"]
    kills = [x for r in runs for x in r["reassign_s"]]
    resume = [x for r in runs for x in r["resume_s_runs"]]
    report["failover"] = {
        "workers": runs[0]["workers"], "clients": runs[0]["clients"], "kills": len(kills),
        "lease_ms": runs[0]["lease_ms"], "grace_ms": runs[0]["grace_ms"],
        "p50_s": pct(kills, 50), "p99_s": pct(kills, 99), "min_s": min(kills), "max_s": max(kills),
        "resume_s": statistics.median(resume), "resume_min_s": min(resume),
        "resume_max_s": max(resume),
    }
if "query" in by_set:
    report["query"] = by_set["query"][-1]
if "alerts" in by_set:
    report["alerts"] = by_set["alerts"][-1]
if "leader_scale" in by_set:
    # Runs with host metrics on are the second half of each pair, reported apart.
    hm_runs = [r for r in by_set["leader_scale"] if r.get("host_metrics_ms", 0) > 0]
    by_set["leader_scale"] = [r for r in by_set["leader_scale"] if r.get("host_metrics_ms", 0) == 0]
    if hm_runs:
        hm = {"runs": len(hm_runs), "host_metrics_ms": hm_runs[0]["host_metrics_ms"]}
        for k in ("cpu_pct_one_core", "rss_mb", "heartbeat_p99_ms"):
            s = spread([r[k] for r in hm_runs])
            hm[k], hm[k + "_min"], hm[k + "_max"] = s["median"], s["min"], s["max"]
        report["leader_scale_host_metrics"] = hm
if by_set.get("leader_scale"):
    runs = by_set["leader_scale"]
    ls = {"runs": len(runs), "workers": runs[0]["workers"], "agents": runs[0]["agents"],
          "connections": runs[0]["connections"]}
    for k in ("cpu_pct_one_core", "rss_mb", "heartbeat_p50_ms", "heartbeat_p99_ms", "failover_s",
              "clients_added_s", "add_client_p50_ms", "add_client_p99_ms"):
        s = spread([r[k] for r in runs])
        ls[k], ls[k + "_min"], ls[k + "_max"] = s["median"], s["min"], s["max"]
    report["leader_scale"] = ls
if "ingest" in by_set:
    # One run: the rates are per core-second of CPU, steadier than wall time.
    ing = by_set["ingest"][0]
    report["ingest"] = ing
    if "rate" in ing:
        print("\n### ingest: committed files -> durable samples (one group commit per batch of files)\n")
        print("| format | samples | samples/s (wall) | samples per core-s |\n|---|---|---|---|")
        for f, r in ing["rate"].items():
            print(f"| {f} | {r['samples']} | {r['samples_per_s']:.0f} | {r['samples_per_core_s']:.0f} |")
    if "size" in ing:
        z = ing["size"]
        print(f"\n### ingest: {z['series']} series x {z['hours']} h at {z['interval_s']} s, sealed\n")
        print(f"| sealed blocks, bytes/sample | whole catalog after VACUUM, bytes/sample |\n|---|---|")
        print(f"| {z['sealed_payload_bytes_per_sample']:.2f} | {z['catalog_bytes_per_sample']:.2f} |")
    if "query" in ing:
        q = ing["query"]
        print(f"\n### ingest: one-shard query, {q['series']} series, {q['hours']} h at {q['step_s']} s step, "
              f"{q['queries']} queries\n")
        print(f"| p50 ms | p99 ms | max ms |\n|---|---|---|")
        print(f"| {q['p50_ms']:.1f} | {q['p99_ms']:.1f} | {q['max_ms']:.1f} |")
if "latency" in report:
    l = report["latency"]
    print(f"\n### latency: close on the client -> durable commit, {l['files']} files at {l['rate_per_s']:.0f}/s "
          f"(poll {l['poll_ms']} ms, settle {l['settle_ms']} ms), {l['runs']} run(s)\n")
    print("| | median | min | max |\n|---|---|---|---|")
    for k in ("p50_ms", "p99_ms"):
        print(f"| {k} | {l[k]:.0f} | {l[k + '_min']:.0f} | {l[k + '_max']:.0f} |")
if "failover" in report:
    f = report["failover"]
    print(f"\n### failover: {f['workers']} workers, {f['clients']} clients, kill -9 x {f['kills']} "
          f"(lease {f['lease_ms']} ms + grace {f['grace_ms']} ms)\n")
    print("| | p50 | p99 | min | max |\n|---|---|---|---|---|")
    print(f"| all clients reassigned (s) | {f['p50_s']:.2f} | {f['p99_s']:.2f} | {f['min_s']:.2f} | {f['max_s']:.2f} |")
    print(f"| files flow again, resume_s (median) | {f['resume_s']:.2f} | | {f['resume_min_s']:.2f} | {f['resume_max_s']:.2f} |")
if "leader_scale" in report:
    l = report["leader_scale"]
    print(f"\n### leader_scale: {l['workers']} workers + {l['agents']} agents at 1 Hz, "
          f"{l['connections']} connections, {l['runs']} run(s); clients_added_s: all but 100 "
          f"clients in one add-clients call, add_client_*: each of the last 100 alone\n")
    print("| | median | min | max |\n|---|---|---|---|")
    for k in ("cpu_pct_one_core", "rss_mb", "heartbeat_p50_ms", "heartbeat_p99_ms", "failover_s",
              "clients_added_s", "add_client_p50_ms", "add_client_p99_ms"):
        print(f"| {k} | {l[k]:.1f} | {l[k + '_min']:.1f} | {l[k + '_max']:.1f} |")
    if "leader_scale_host_metrics" in report:
        h = report["leader_scale_host_metrics"]
        print(f"\n### leader_scale with host metrics: every node every {h['host_metrics_ms'] / 1000:.0f} s, "
              f"{h['runs']} run(s) (goal: <= +3 points of a core, <= +30 MB)\n")
        print("| | off (median) | on (median) | on - off |\n|---|---|---|---|")
        for k in ("cpu_pct_one_core", "rss_mb", "heartbeat_p99_ms"):
            print(f"| {k} | {l[k]:.1f} | {h[k]:.1f} | {h[k] - l[k]:+.1f} |")
if "query" in report:
    q = report["query"]
    print(f"\n### query: {q['workers']} workers, {q['series']} series x {q['hours']} h at {q['interval_s']} s, "
          f"{q['queries']} queries at {q['step_s']} s step\n")
    print(f"p50 {q['p50_ms']:.0f} ms, p99 {q['p99_ms']:.0f} ms, leader RSS growth {q['leader_rss_growth_mb']:.1f} MB; "
          f"one shard hung: answered in {q['hung_shard_answer_s']:.2f} s (deadline {q['hung_shard_timeout_s']:.0f} s), "
          f"partial={q['hung_shard_partial']}")
if "alerts" in report:
    a = report["alerts"]
    print(f"\n### alerts: {a['rules']} rules x {a['series_per_rule']} series on {a['workers']} workers, "
          f"every {a['every_s']} s, {a['rounds']} rounds in {a['window_s']:.0f} s\n")
    print("| round p50 ms | round p99 ms | round max ms | leader CPU % of a core | notification p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    print(f"| {a['round_p50_ms']:.0f} | {a['round_p99_ms']:.0f} | {a['round_max_ms']:.0f} | "
          f"{a['leader_cpu_pct_one_core']:.1f} | {a['latency_p50_ms']:.0f} | {a['latency_p99_ms']:.0f} |")
if report["failed"]:
    print("\n### did not finish\n")
    for f in report["failed"]:
        print(f"- {f}")
json.dump(report, open(out, "w"), indent=2)
print(f"\nwrote {out}")
PY
