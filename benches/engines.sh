#!/usr/bin/env bash
# llama-server spawned by the hive against the same binary started by hand with the
# same command line, on SmolLM2-135M (llama) and Gemma 3 270M, one server at a time,
# same requests (benches/completion_speed.py), 2 threads each, in the order hive, by
# hand, by hand, hive, so that neither always runs first. llama-server is the one
# scripts/fetch-llama-server.sh builds (or $RBEE_LLAMA_SERVER).
#   usage: benches/engines.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${RBEE_BIN_DIR:-target/release}"   # the hive only spawns: its own build does not matter
[ -x "$bin/rbee-hive" ] || cargo build -q --release -p hive -p cli
server="${RBEE_LLAMA_SERVER:-$(scripts/fetch-llama-server.sh)}"
smollm2="$(scripts/fetch-test-model.sh)"
gemma="$(scripts/fetch-gemma.sh)"
home=$(mktemp -d)
trap 'kill $hive 2>/dev/null || true; rm -rf "$home"' EXIT
RBEE_HOME="$home" "$bin/rbee-hive" --port 17999 >/dev/null 2>&1 &
hive=$!
export RBEE_HIVE_URL=http://127.0.0.1:17999
for _ in $(seq 100); do curl -sf "$RBEE_HIVE_URL/health" >/dev/null && break; sleep 0.1; done
"$bin/rbee" worker-binaries add "$server" >/dev/null
"$server" --version 2>&1 | grep '^version' || true
hive_run() { # name id
  local spawned url key
  spawned=$("$bin/rbee" --json workers spawn "$2" --threads 2)
  url=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])' <<<"$spawned")
  # the worker takes only its own key, which its user reads from its environment
  key=$(tr '\0' '\n' < "/proc/$(python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])' <<<"$spawned")/environ" \
    | sed -n 's/^LLAMA_API_KEY=//p')
  API_KEY="$key" python3 benches/completion_speed.py "$1: hive-spawned" "$url"
  "$bin/rbee" models unload "$2" >/dev/null
}
hand_run() { # name id model
  local port=18767 pid
  "$server" -m "$3" --host 127.0.0.1 --port $port -c 4096 -t 2 -tb 2 -np 1 --alias "$2" \
    --metrics --jinja -ngl 0 >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
  python3 benches/completion_speed.py "$1: by hand" "http://127.0.0.1:$port"
  kill $pid; wait $pid 2>/dev/null || true
}
for model in "$smollm2" "$gemma"; do
  name=$(basename "$model" .gguf)
  id=$("$bin/rbee" --json models import "$model" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  hive_run "$name" "$id"
  hand_run "$name" "$id" "$model"
  hand_run "$name" "$id" "$model"
  hive_run "$name" "$id"
done
