#!/usr/bin/env bash
# Warm swaps: a 2,000-token conversation's next turn after its worker was unloaded
# and loaded again, with the slot restored, against the live worker and a reload
# with no saved cache (benches/warm_swap.py), on SmolLM2-135M Q4_1 with the
# llama-server that scripts/fetch-llama-server.sh builds (or $RBEE_LLAMA_SERVER).
#   usage: benches/warm.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
bin="${RBEE_BIN_DIR:-target/release}"
[ -x "$bin/rbee-hive" ] || cargo build -q --release -p hive -p cli
server="${RBEE_LLAMA_SERVER:-$(scripts/fetch-llama-server.sh)}"
model="$(scripts/fetch-test-model.sh)"
home=$(mktemp -d)
trap 'kill $hive 2>/dev/null || true; rm -rf "$home"' EXIT
RBEE_HOME="$home" "$bin/rbee-hive" --port 17995 >/dev/null 2>&1 &
hive=$!
export RBEE_HIVE_URL=http://127.0.0.1:17995
for _ in $(seq 100); do curl -sf "$RBEE_HIVE_URL/health" >/dev/null && break; sleep 0.1; done
"$bin/rbee" worker-binaries add "$server" >/dev/null
id=$("$bin/rbee" --json models import "$model" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
python3 benches/warm_swap.py "$RBEE_HIVE_URL" "$home" "$id" "$rounds"
