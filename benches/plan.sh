#!/usr/bin/env bash
# Fit before fetch: the bytes and wall time of `rbee models pull --dry-run` (the
# remote GGUF header, read with Range requests in growing windows) against a full
# `rbee models pull` of the same file, from nginx on loopback (its access log counts
# the bytes sent). Models: Gemma 3 270M (a 262k-token vocabulary, several MiB of
# header) and SmolLM2 135M, from the test cache (scripts/fetch-gemma.sh,
# scripts/fetch-test-model.sh). Needs nginx (apt).
#   benches/plan.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${RBEE_TEST_MODEL_DIR:-$HOME/.cache/rbee-test}"
work=$(mktemp -d)
pids=()
trap 'kill ${pids[*]} 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/www"
ln "$cache/gemma-3-270m-q4_k_m.gguf" "$work/www/gemma-3-270m-Q4_K_M.gguf" 2>/dev/null \
  || cp "$cache/gemma-3-270m-q4_k_m.gguf" "$work/www/gemma-3-270m-Q4_K_M.gguf"
ln "$cache/SmolLM2-135M-Instruct.Q4_1.gguf" "$work/www/SmolLM2-135M-Instruct.Q4_1.gguf" 2>/dev/null \
  || cp "$cache/SmolLM2-135M-Instruct.Q4_1.gguf" "$work/www/SmolLM2-135M-Instruct.Q4_1.gguf"
cargo build -q --release -p hive -p cli --bin rbee-hive --bin rbee
www=127.0.0.1:18095
source benches/nginx.sh
nginx_start "$work/nginx" 1 "  log_format bytes '\$body_bytes_sent';
  access_log $work/nginx/logs/access.log bytes;
  server { listen $www; root $work/www; }"
pids+=("$NGINX_PID")
export RBEE_HIVE_URL=http://127.0.0.1:18844
RBEE_HOME="$work/home" RUST_LOG=warn target/release/rbee-hive --port 18844 > /dev/null &
pids+=($!)
for _ in $(seq 100); do curl -sf "$RBEE_HIVE_URL/health" > /dev/null && break; sleep 0.1; done
rbee=target/release/rbee
sent() { awk '{ s += $1 } END { print s + 0 }' "$work/nginx/logs/access.log"; }
run() { # name, then the command: wall seconds and bytes nginx sent for it
  local name=$1; shift
  : > "$work/nginx/logs/access.log"
  local a b; a=$(date +%s.%N); "$@" > /dev/null; b=$(date +%s.%N)
  sleep 0.2  # nginx writes its log line as the response ends
  awk -v a="$a" -v b="$b" -v n="$name" -v s="$(sent)" \
    'BEGIN { printf "%-48s %8.3f s %12d bytes (%.1f MiB)\n", n, b - a, s, s / 1048576 }'
}
for f in gemma-3-270m-Q4_K_M.gguf SmolLM2-135M-Instruct.Q4_1.gguf; do
  size=$(stat -c %s "$work/www/$f")
  echo "$f: $size bytes ($(( size >> 20 )) MiB)"
  run "  rbee models pull --dry-run (plan)" "$rbee" models pull "http://$www/$f" --dry-run
  run "  rbee models pull (the whole file)" "$rbee" models pull "http://$www/$f"
done
"$rbee" models pull "http://$www/gemma-3-270m-Q4_K_M.gguf" --dry-run | head -4
