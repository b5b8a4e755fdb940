#!/usr/bin/env bash
# The time to adopt a store of 1,000 models without hashing them: a Hugging Face hub
# cache (snapshots symlinked into sha256-named blobs) and an Ollama store (manifests
# naming sha256-* blobs), 1,000 models each, every blob a real GGUF header; the
# sha256 comes from the blob names. `rbee models scan` against a running hive, first
# scan and second (nothing new), and `du -sh` of the same tree as a floor for
# walking it.
#   benches/scan.sh [N]     # default 1000
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000}"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
cargo build -q --release -p hive -p cli --bin rbee-hive --bin rbee
.venv/bin/python - "$work" "$n" <<'PY'
import hashlib, json, os, sys
root, n = sys.argv[1], int(sys.argv[2])
head = open("crates/gguf/tests/fixtures/llama-q4_0.gguf", "rb").read()
hub = os.path.join(root, "hub")
olm = os.path.join(root, "ollama")
os.makedirs(os.path.join(olm, "blobs"))
for i in range(n):
    data = head + i.to_bytes(8, "little")  # a distinct blob each
    sha = hashlib.sha256(data).hexdigest()
    repo = os.path.join(hub, f"models--org--model-{i:04d}-GGUF")
    snap = os.path.join(repo, "snapshots", "0" * 40)
    os.makedirs(os.path.join(repo, "blobs"))
    os.makedirs(snap)
    open(os.path.join(repo, "blobs", sha), "wb").write(data)
    os.symlink(os.path.join("..", "..", "blobs", sha), os.path.join(snap, f"model-{i:04d}.Q4_0.gguf"))
    open(os.path.join(olm, "blobs", f"sha256-{sha}"), "wb").write(data)
    d = os.path.join(olm, "manifests", "registry.ollama.ai", "library", f"model-{i:04d}")
    os.makedirs(d)
    json.dump({"schemaVersion": 2, "layers": [{"mediaType": "application/vnd.ollama.image.model",
              "digest": f"sha256:{sha}", "size": len(data)}]}, open(os.path.join(d, "latest"), "w"))
PY
export RBEE_HIVE_URL=http://127.0.0.1:18870
env HOME="$work" RBEE_HOME="$work/rbee" HF_HUB_CACHE="$work/none" OLLAMA_MODELS="$work/none" LLAMA_CACHE="$work/none" \
  RUST_LOG=warn target/release/rbee-hive --port 18870 > /dev/null &
for _ in $(seq 100); do curl -sf "$RBEE_HIVE_URL/health" > /dev/null && break; sleep 0.1; done
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
t() { local name=$1; shift; local a b; a=$(date +%s.%N); "$@" > /dev/null 2>&1; b=$(date +%s.%N); awk -v a="$a" -v b="$b" -v n="$name" 'BEGIN { printf "%-44s %7.3f s\n", n, b - a }'; }
t "du -sh (both stores, cold cache)" du -shL "$work/hub" "$work/ollama"
t "rbee models scan, $n hub + $n ollama, first" target/release/rbee models scan "$work/hub" "$work/ollama"
t "rbee models scan, again (nothing new)" target/release/rbee models scan "$work/hub" "$work/ollama"
echo "models in the catalog: $(curl -s -o /dev/null -D - "$RBEE_HIVE_URL/v1/models?limit=1" | grep -i x-total-count | tr -d '\r')"
