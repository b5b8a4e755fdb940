#!/usr/bin/env bash
# Warm swaps: a 2,000-token conversation's next turn after its worker was unloaded
# and loaded again, with the slot restored, against the live worker and a reload
# with no saved cache (benches/warm_swap.py), on SmolLM2-135M Q4_1 with the
# llama-server that scripts/fetch-llama-server.sh builds (or $RBEE_LLAMA_SERVER).
#   usage: benches/warm.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
. benches/hive_with_smollm2.sh 17995
python3 benches/warm_swap.py "$RBEE_HIVE_URL" "$home" "$id" "$rounds"
