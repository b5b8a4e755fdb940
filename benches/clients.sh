#!/usr/bin/env bash
# What the hive's clients cost, on SmolLM2-135M Q4_1 with the llama-server that
# scripts/fetch-llama-server.sh builds (or $RBEE_LLAMA_SERVER), $THREADS (2) threads, one loaded
# worker:
# - Anthropic's Messages API streamed through the hive's /v1/messages against the
#   same worker's own /v1/messages, rounds alternating who goes first, median of
#   RUNS each
#   (benches/messages_speed.py);
# - `rbee run MODEL PROMPT` from the command to its first token against the engine's
#   own first token (benches/run_first_token.py).
#   usage: benches/clients.sh [ROUNDS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
runs="${2:-7}"
. benches/hive_with_smollm2.sh 17997
spawned=$("$bin/rbee" --json workers spawn "$id" --threads "${THREADS:-2}")
url=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])' <<<"$spawned")
pid=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])' <<<"$spawned")
# the worker takes only its own key, which its user reads from its environment
key=$(tr '\0' '\n' < "/proc/$pid/environ" | sed -n 's/^LLAMA_API_KEY=//p')
# who goes first alternates, round by round
for round in $(seq "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then
    python3 benches/messages_speed.py "hive /v1/messages" "$RBEE_HIVE_URL" "$id" "$runs"
    API_KEY=$key python3 benches/messages_speed.py "llama-server's own /v1/messages" "$url" "$id" "$runs"
  else
    API_KEY=$key python3 benches/messages_speed.py "llama-server's own /v1/messages" "$url" "$id" "$runs"
    python3 benches/messages_speed.py "hive /v1/messages" "$RBEE_HIVE_URL" "$id" "$runs"
  fi
done
for _ in $(seq "$rounds"); do
  API_KEY=$key python3 benches/run_first_token.py "$bin/rbee" "$url" "$id" "$runs"
done
