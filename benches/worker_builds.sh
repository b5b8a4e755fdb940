#!/usr/bin/env bash
# Prompt and generation tokens/s of two builds of llm-worker-rbee (say, before and
# after a change) and, as the peer, llama.cpp's llama-server from
# scripts/fetch-llama-server.sh, on SmolLM2-135M-Instruct Q4_1, 2 threads each, one
# server at a time, the same requests (benches/completion_speed.py).
#   usage: benches/worker_builds.sh BEFORE AFTER
#   build one with: git worktree add /tmp/before REV && (cd /tmp/before &&
#     cargo build --release -p llm-worker) && cp target/release/llm-worker-rbee /tmp/a
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 BEFORE AFTER" >&2; exit 2; }
model="$(scripts/fetch-test-model.sh)"
server="${RBEE_LLAMA_SERVER:-$(scripts/fetch-llama-server.sh)}"

wait_ready() {
  for _ in $(seq 600); do
    curl -sf "$1/health" | grep -q -e '"ready"' -e '"ok"' && return 0
    sleep 0.1
  done
  echo "server at $1 never became ready" >&2; return 1
}

run() { # name port command...
  local name=$1 port=$2; shift 2
  "$@" >/dev/null 2>&1 &
  local pid=$!
  wait_ready "http://127.0.0.1:$port"
  python3 benches/completion_speed.py "$name" "http://127.0.0.1:$port"
  kill $pid; wait $pid 2>/dev/null || true
}

before=$1 after=$2
run "llm-worker-rbee (before: $before)" 18771 "$before" --worker-id b --model "$model" --port 18771 --threads 2
run "llm-worker-rbee (after: $after)" 18772 "$after" --worker-id a --model "$model" --port 18772 --threads 2
run "llama-server" 18773 "$server" -m "$model" --port 18773 -t 2 -tb 2 -np 1 -c 4096
