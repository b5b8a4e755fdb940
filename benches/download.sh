#!/usr/bin/env bash
# The download engine against curl, aria2c -x8 and huggingface_hub.hf_hub_download,
# on a 1 GiB file served by nginx on loopback: once with `limit_rate 8m` per
# connection (as CDNs cap a connection), once unthrottled. Ours runs with and
# without sha256 verification. Needs nginx, aria2 and curl (apt) and .venv with
# huggingface_hub (pip install -r requirements-test.txt).
#   benches/download.sh [SIZE_MIB]     # default 1024
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib="${1:-1024}"
work="${RBEE_BENCH_CACHE:-$HOME/.cache/rbee-bench}/download"
mkdir -p "$work/data" "$work/out"
data="$work/data/model.gguf"
if [ ! -f "$data" ] || [ "$(stat -c %s "$data")" != $((size_mib << 20)) ]; then
  head -c $((size_mib << 20)) /dev/urandom > "$data"
fi
sha=$(sha256sum "$data" | cut -d' ' -f1)
size=$(stat -c %s "$data")
commit=0123456789abcdef0123456789abcdef01234567
cargo build -q --release -p download --example fetch
fetch=target/release/examples/fetch
py=.venv/bin/python

source benches/nginx.sh
nginx_start "$work/nginx" 2 "  access_log off;
  sendfile on;
  tcp_nopush on;
  server {
    listen 127.0.0.1:18081;
    limit_rate 8m;
    location ~ ^/bench/model/resolve/main/(.+)$ {
      alias $work/data/\$1;
      add_header X-Repo-Commit $commit always;
      add_header X-Linked-Etag \"\\\"$sha\\\"\" always;
      add_header X-Linked-Size $size always;
    }
  }
  server {
    listen 127.0.0.1:18082;
    location ~ ^/bench/model/resolve/main/(.+)$ {
      alias $work/data/\$1;
      add_header X-Repo-Commit $commit always;
      add_header X-Linked-Etag \"\\\"$sha\\\"\" always;
      add_header X-Linked-Size $size always;
    }
  }"
nginx_pid=$NGINX_PID
trap 'kill $nginx_pid 2>/dev/null; rm -rf "$work/out"' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:18082/bench/model/resolve/main/model.gguf" -r 0-0 && break; sleep 0.1; done

timeit() { # name, command...: runs once after clearing the output, prints seconds
  local name=$1; shift
  rm -rf "$work/out"; mkdir -p "$work/out"
  local t0 t1
  t0=$(date +%s.%N)
  "$@" > /dev/null 2>&1 || { echo "$name failed" >&2; return 1; }
  t1=$(date +%s.%N)
  local got
  got=$(sha256sum "$(find "$work/out" -name model.gguf -type f -o -name 'model.gguf' -type l | head -1)" | cut -d' ' -f1)
  [ "$got" = "$sha" ] || { echo "$name: wrong bytes" >&2; return 1; }
  awk -v a="$t0" -v b="$t1" -v n="$name" -v s="$size" 'BEGIN { printf "%-34s %7.2f s %8.1f MiB/s\n", n, b - a, s / (b - a) / 1048576 }'
}

run_all() {
  local port=$1 url="http://127.0.0.1:$1/bench/model/resolve/main/model.gguf"
  timeit "curl" curl -s -o "$work/out/model.gguf" "$url"
  timeit "aria2c -x8 -s8 -k1M" aria2c -q -x8 -s8 -k1M --file-allocation=falloc -d "$work/out" -o model.gguf "$url"
  timeit "hf_hub_download" env HF_ENDPOINT="http://127.0.0.1:$port" HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_XET=1 \
    "$py" -c "import sys; from huggingface_hub import hf_hub_download; hf_hub_download('bench/model', 'model.gguf', cache_dir=sys.argv[1])" "$work/out"
  timeit "rbee fetch -x8 (no hash)" "$fetch" --no-hash "$url" "$work/out/model.gguf"
  timeit "rbee fetch -x8 (sha256 verified)" "$fetch" --sha256 "$sha" "$url" "$work/out/model.gguf"
}

echo "== $size_mib MiB, nginx limit_rate 8m per connection"
run_all 18081
echo "== $size_mib MiB, unthrottled (best of 3)"
for i in 1 2 3; do echo "-- run $i"; run_all 18082; done
