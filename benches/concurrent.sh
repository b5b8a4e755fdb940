#!/usr/bin/env bash
# Eight clients at once on one model, SmolLM2-135M Q4_1 on the llama-server that
# scripts/fetch-llama-server.sh builds (or $RBEE_LLAMA_SERVER), 2 threads: aggregate
# streamed tokens/s through the hive's /v1 (its default slots, then the model's
# preset set to one slot, as every worker had before), against llama-server started
# by hand with its own defaults (no -np: auto, 4 slots on a unified KV cache).
#   usage: benches/concurrent.sh [CLIENTS] [TOKENS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
clients="${1:-8}" tokens="${2:-64}" runs="${3:-5}"
bin="${RBEE_BIN_DIR:-target/release}"
[ -x "$bin/rbee-hive" ] || cargo build -q --release -p hive -p cli
server="${RBEE_LLAMA_SERVER:-$(scripts/fetch-llama-server.sh)}"
model="$(scripts/fetch-test-model.sh)"
home=$(mktemp -d)
trap 'kill $hive ${by_hand:-} 2>/dev/null || true; rm -rf "$home"' EXIT
RBEE_HOME="$home/hive" "$bin/rbee-hive" --port 17996 --no-find-engines >/dev/null 2>&1 &
hive=$!
export RBEE_HIVE_URL=http://127.0.0.1:17996
for _ in $(seq 100); do curl -sf "$RBEE_HIVE_URL/health" >/dev/null && break; sleep 0.1; done
"$bin/rbee" worker-binaries add "$server" >/dev/null
id=$("$bin/rbee" --json models import "$model" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
"$bin/rbee" workers spawn "$id" --threads 2 >/dev/null
python3 benches/concurrent_speed.py "hive /v1 (default: 4 slots)" "$RBEE_HIVE_URL/v1" "$id" "$clients" "$tokens" "$runs"
# the same worker straight, with its key, to tell the proxy from the worker
pid=$("$bin/rbee" --json workers ls | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["pid"])')
port=$("$bin/rbee" --json workers ls | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["port"])')
API_KEY=$(tr '\0' '\n' < "/proc/$pid/environ" | sed -n 's/^LLAMA_API_KEY=//p') \
  python3 benches/concurrent_speed.py "its worker straight (4 slots)" "http://127.0.0.1:$port/v1" "$id" "$clients" "$tokens" "$runs"
"$bin/rbee" models unload "$id" >/dev/null
"$bin/rbee" models set "$id" --slots 1 >/dev/null
"$bin/rbee" workers spawn "$id" --threads 2 >/dev/null
python3 benches/concurrent_speed.py "hive /v1 (1 slot, as before)" "$RBEE_HIVE_URL/v1" "$id" "$clients" "$tokens" "$runs"
"$bin/rbee" models unload "$id" >/dev/null

"$server" -m "$model" --host 127.0.0.1 --port 18771 -c 4096 -t 2 -tb 2 \
  --metrics --jinja -ngl 0 >/dev/null 2>&1 &
by_hand=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:18771/health >/dev/null && break; sleep 0.1; done
python3 benches/concurrent_speed.py "llama-server by hand (its defaults)" http://127.0.0.1:18771/v1 smollm2 "$clients" "$tokens" "$runs"
