#!/usr/bin/env bash
# Prompt and generation tokens/s of llm-worker-rbee and llama.cpp's llama-server on
# SmolLM2-135M-Instruct Q4_1, 2 threads each, one server at a time, same requests.
# llama-server is Debian sid's llama.cpp-tools, run through sid's own loader and
# libraries (extracted into the cache; nothing is installed).
#   usage: benches/worker.sh [path/to/llm-worker-rbee]   (default target/release)
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${RBEE_BENCH_CACHE:-$HOME/.cache/rbee-bench}"
ours="${1:-target/release/llm-worker-rbee}"
[ -x "$ours" ] || cargo build -q --release -p llm-worker
model="$(scripts/fetch-test-model.sh)"

sid="$cache/llama.cpp-sid"
if [ ! -x "$sid/root/usr/bin/llama-server" ]; then
  mkdir -p "$sid/lists/partial" "$sid/debs" "$sid/root"
  echo "deb [trusted=yes] http://deb.debian.org/debian sid main" > "$sid/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$sid/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$sid/lists" -o APT::Get::List-Cleanup=0)
  apt-get "${apt_opts[@]}" update -qq
  (cd "$sid/debs" && apt-get "${apt_opts[@]}" download -qq llama.cpp-tools libllama0 libggml0 \
      libc6 libgcc-s1 libssl3t64 libstdc++6 libgomp1)
  for d in "$sid"/debs/*.deb; do dpkg-deb -x "$d" "$sid/root"; done
fi
lib="$sid/root/usr/lib/x86_64-linux-gnu"
llama_server() {
  GGML_BACKEND_PATH="$lib/ggml/backends0/libggml-cpu-haswell.so" \
    exec "$lib/ld-linux-x86-64.so.2" --library-path "$lib:$lib/llama:$sid/root/lib/x86_64-linux-gnu" \
    "$sid/root/usr/bin/llama-server" "$@"
}

measure() { # name url
  python3 benches/completion_speed.py "$1" "$2"
}

wait_ready() {
  for _ in $(seq 600); do
    curl -sf "$1/health" | grep -q -e '"ready"' -e '"ok"' && return 0
    sleep 0.1
  done
  echo "server at $1 never became ready" >&2; return 1
}

port=18765
for variant in "" "--keep-quantization"; do
  "$ours" --worker-id bench --model "$model" --port $port --threads 2 $variant >/dev/null 2>&1 &
  pid=$!; trap 'kill $pid 2>/dev/null || true' EXIT
  wait_ready "http://127.0.0.1:$port"
  measure "llm-worker-rbee${variant:+ $variant}" "http://127.0.0.1:$port"
  kill $pid; wait $pid 2>/dev/null || true
done

port=18766
(llama_server -m "$model" --port $port -t 2 -tb 2 -np 1 -c 4096 >/dev/null 2>&1) &
pid=$!
wait_ready "http://127.0.0.1:$port"
measure "llama-server" "http://127.0.0.1:$port"
kill $pid; wait $pid 2>/dev/null || true
