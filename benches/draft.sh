#!/usr/bin/env bash
# A draft model through the hive against the same llama-server started by hand with
# the same draft: SmolLM2-135M Q4_1 drafting for a copy of itself (the same
# vocabulary; the point is the hive's way of running it, not a faster model), on
# the llama-server that scripts/fetch-llama-server.sh builds (or $RBEE_LLAMA_SERVER),
# 2 threads. Streamed completions, greedy (benches/stream_speed.py), and the
# acceptance rate each reports; the hive without a draft beside them.
#   usage: benches/draft.sh [RUNS] [DRAFT_MAX]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10}" n_max="${2:-8}"
bin="${RBEE_BIN_DIR:-target/release}"
[ -x "$bin/rbee-hive" ] || cargo build -q --release -p hive -p cli
server="${RBEE_LLAMA_SERVER:-$(scripts/fetch-llama-server.sh)}"
model="$(scripts/fetch-test-model.sh)"
home=$(mktemp -d)
trap 'kill $hive ${by_hand:-} 2>/dev/null || true; rm -rf "$home"' EXIT
RBEE_HOME="$home/hive" "$bin/rbee-hive" --port 17995 --no-find-engines >/dev/null 2>&1 &
hive=$!
export RBEE_HIVE_URL=http://127.0.0.1:17995
for _ in $(seq 100); do curl -sf "$RBEE_HIVE_URL/health" >/dev/null && break; sleep 0.1; done
"$bin/rbee" worker-binaries add "$server" >/dev/null
cp "$model" "$home/draft.gguf"
id=$("$bin/rbee" --json models import "$model" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
draft=$("$bin/rbee" --json models import "$home/draft.gguf" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
acceptance() { "$bin/rbee" --json workers ls | python3 -c 'import json,sys; w=json.load(sys.stdin)["data"][0]; print("  acceptance", w.get("draft_acceptance"))'; }

"$bin/rbee" workers spawn "$id" --threads 2 >/dev/null
python3 benches/stream_speed.py "hive, no draft" "$RBEE_HIVE_URL/v1" "$id" "$runs"
"$bin/rbee" models unload "$id" >/dev/null
"$bin/rbee" models set "$id" --draft "$draft" --draft-max "$n_max" --draft-min 1 >/dev/null
"$bin/rbee" workers spawn "$id" --threads 2 >/dev/null
python3 benches/stream_speed.py "hive, with the draft" "$RBEE_HIVE_URL/v1" "$id" "$runs"
sleep 3   # one health check scrapes the worker's counters
acceptance
"$bin/rbee" models unload "$id" >/dev/null

"$server" -m "$model" -md "$home/draft.gguf" --spec-type draft-simple \
  --spec-draft-n-max "$n_max" --spec-draft-n-min 1 \
  --host 127.0.0.1 --port 18772 -c 4096 -t 2 -tb 2 -np 4 --kv-unified \
  --metrics --jinja -ngl 0 >/dev/null 2>&1 &
by_hand=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:18772/health >/dev/null && break; sleep 0.1; done
python3 benches/stream_speed.py "llama-server by hand, the same draft" http://127.0.0.1:18772/v1 smollm2 "$runs"
curl -s http://127.0.0.1:18772/metrics | awk '/^llamacpp:spec_decode_num_draft_tokens_total/ {d=$2} /^llamacpp:spec_decode_num_accepted_tokens_total/ {a=$2} END {if (d > 0) printf "  acceptance %.3f\n", a / d}'
