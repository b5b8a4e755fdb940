#!/usr/bin/env bash
# Two hives on one etcd (Debian's etcd-server), SmolLM2-135M Q4_1 on B's llama-server
# (scripts/fetch-llama-server.sh, or $RBEE_LLAMA_SERVER), 2 threads:
# - a warm stream at A, passed on to B, against the same client straight at B
#   (time to first token, generation tokens/s; median of RUNS, three rounds
#   alternating);
# - etcd writes per hive per minute, at rest and while 20 streams run through A
#   (etcd's own etcd_mvcc_put_total);
# - from a kill -9 of B to A's last request routed to it (B leaving A's view), with
#   the default lease TTL of 10 s.
#   usage: [THREADS=2] benches/fleet.sh [RUNS] [REST_SECS]  (THREADS: the worker's)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10}" rest="${2:-60}" threads="${THREADS:-2}"
bin="${RBEE_BIN_DIR:-target/release}"
[ -x "$bin/rbee-hive" ] || cargo build -q --release -p hive -p cli
server="${RBEE_LLAMA_SERVER:-$(scripts/fetch-llama-server.sh)}"
model="$(scripts/fetch-test-model.sh)"
tmp=$(mktemp -d)
trap 'kill ${etcd:-} ${a:-} ${b:-} 2>/dev/null || true; rm -rf "$tmp"' EXIT
etcd --name bench --data-dir "$tmp/etcd" \
  --listen-client-urls http://127.0.0.1:23791 --advertise-client-urls http://127.0.0.1:23791 \
  --listen-peer-urls http://127.0.0.1:23801 --initial-advertise-peer-urls http://127.0.0.1:23801 \
  --initial-cluster bench=http://127.0.0.1:23801 --logger zap --log-level error >/dev/null 2>&1 &
etcd=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:23791/health >/dev/null && break; sleep 0.1; done
puts() { curl -s http://127.0.0.1:23791/metrics | awk '/^etcd_mvcc_put_total/ {print $2}'; }
RBEE_HOME="$tmp/b" "$bin/rbee-hive" --port 17997 --no-find-engines --etcd http://127.0.0.1:23791 >/dev/null 2>&1 &
b=$!
RBEE_HOME="$tmp/a" "$bin/rbee-hive" --port 17998 --no-find-engines --etcd http://127.0.0.1:23791 >/dev/null 2>&1 &
a=$!
A=http://127.0.0.1:17998 B=http://127.0.0.1:17997
for url in $A $B; do
  for _ in $(seq 100); do curl -sf "$url/health" >/dev/null && break; sleep 0.1; done
done
export RBEE_HIVE_URL=$B
"$bin/rbee" worker-binaries add "$server" >/dev/null
id=$("$bin/rbee" --json models import "$model" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
"$bin/rbee" workers spawn "$id" --threads "$threads" >/dev/null
# A sees B's model
for _ in $(seq 100); do
  RBEE_HIVE_URL=$A "$bin/rbee" --json fleet models | grep -q '"loaded": *true' && break; sleep 0.1
done

# three rounds, alternating, so that the machine's drift falls on both alike
for round in 1 2 3; do
  python3 benches/stream_speed.py "round $round: client straight at B" "$B/v1" "$id" "$runs"
  python3 benches/stream_speed.py "round $round: client at A, passed on to B" "$A/v1" "$id" "$runs"
done

before=$(puts); sleep "$rest"; after=$(puts)
python3 -c "print(f'etcd writes at rest: {($after - $before) / 2 / ($rest / 60):.1f} per hive per minute ({$rest} s, 2 hives)')"
before=$(puts); start=$(date +%s.%N)
python3 benches/concurrent_speed.py "20 streams through A" "$A/v1" "$id" 20 64 3
after=$(puts); end=$(date +%s.%N)
python3 -c "print(f'etcd writes under 20 streams: {($after - $before) / 2 / (($end - $start) / 60):.1f} per hive per minute ({$end - $start:.0f} s, 2 hives)')"

# kill -9 of B: how long A still routes to it (B leaves A's view at its lease's end)
kill -9 $b
killed=$(date +%s.%N)
until ! curl -s "$A/v1/fleet" | grep -q "\"url\":\"$B\""; do sleep 0.05; done
gone=$(date +%s.%N)
python3 -c "print(f'from kill -9 of B to its last routing at A: {$gone - $killed:.2f} s (lease TTL 10 s)')"
