#!/usr/bin/env bash
# The one endpoint's cost, on SmolLM2-135M Q4_1 with the llama-server that
# scripts/fetch-llama-server.sh builds (or $RBEE_LLAMA_SERVER), 2 threads:
# - warm: streamed completions through the hive's /openai/v1 against the same worker
#   straight, alternating, median of 5 each (benches/stream_speed.py);
# - cold: the first token of a first request when no worker runs, through the hive
#   against llama.cpp's own router mode (llama-server --models-dir, same binary, same
#   model and settings), five cold starts each, unloading in between.
#   usage: benches/gateway.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${RBEE_BIN_DIR:-target/release}"
[ -x "$bin/rbee-hive" ] || cargo build -q --release -p hive -p cli
server="${RBEE_LLAMA_SERVER:-$(scripts/fetch-llama-server.sh)}"
model="$(scripts/fetch-test-model.sh)"
home=$(mktemp -d)
models="$home/router-models"
mkdir -p "$models"
ln -s "$model" "$models/smollm2.gguf"
trap 'kill $hive ${router:-} 2>/dev/null || true; rm -rf "$home"' EXIT
RBEE_HOME="$home/hive" "$bin/rbee-hive" --port 17998 >/dev/null 2>&1 &
hive=$!
export RBEE_HIVE_URL=http://127.0.0.1:17998
for _ in $(seq 100); do curl -sf "$RBEE_HIVE_URL/health" >/dev/null && break; sleep 0.1; done
"$bin/rbee" worker-binaries add "$server" >/dev/null
id=$("$bin/rbee" --json models import "$model" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

echo "cold: first request, no worker running"
for _ in 1 2 3 4 5; do
  python3 benches/stream_speed.py "hive /openai/v1 (cold)" "$RBEE_HIVE_URL/openai/v1" "$id" 1
  "$bin/rbee" models unload "$id" >/dev/null
done
"$server" --models-dir "$models" --host 127.0.0.1 --port 18770 -c 4096 -t 2 -tb 2 \
  --metrics --jinja -ngl 0 >/dev/null 2>&1 &
router=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:18770/health >/dev/null && break; sleep 0.1; done
for _ in 1 2 3 4 5; do
  python3 benches/stream_speed.py "llama.cpp router mode (cold)" http://127.0.0.1:18770/v1 smollm2 1
  curl -sf -X POST http://127.0.0.1:18770/models/unload -H 'content-type: application/json' \
    -d '{"model": "smollm2"}' >/dev/null
  for _ in $(seq 100); do
    curl -sf http://127.0.0.1:18770/models | grep -q '"loaded"' || break; sleep 0.1
  done
done
kill $router; wait $router 2>/dev/null || true
router=

echo "warm: the same worker, through the hive and straight"
spawned=$("$bin/rbee" --json workers spawn "$id" --threads 2)
url=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])' <<<"$spawned")
# the worker takes only its own key, which its user reads from its environment
API_KEY=$(tr '\0' '\n' < "/proc/$(python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])' <<<"$spawned")/environ" \
  | sed -n 's/^LLAMA_API_KEY=//p')
export API_KEY
for _ in 1 2; do
  python3 benches/stream_speed.py "hive /openai/v1 (warm)" "$RBEE_HIVE_URL/openai/v1" "$id" 5
  python3 benches/stream_speed.py "straight to the worker (warm)" "$url/v1" "$id" 5
done
