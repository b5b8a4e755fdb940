#!/usr/bin/env bash
# What a kill -9 costs: a 256 MiB pull at 128 MiB/s (nginx on loopback, 16 MiB/s per
# connection, 8 connections) killed 0.8 s in (about 40 %), then run again to the
# end; the bytes nginx sent beyond the file's size are what the restart fetched
# again. rbee's engine (examples/fetch) against aria2c -x8, which resumes from its
# .aria2 control file. Three runs each; the output's sha256 is checked. Needs nginx
# and aria2 (apt).
#   benches/crash_resume.sh [SIZE_MIB]     # default 256
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib="${1:-256}"
work="${RBEE_BENCH_CACHE:-$HOME/.cache/rbee-bench}/crash"
mkdir -p "$work/data"
data="$work/data/model.gguf"
if [ ! -f "$data" ] || [ "$(stat -c %s "$data")" != $((size_mib << 20)) ]; then
  head -c $((size_mib << 20)) /dev/urandom > "$data"
fi
sha=$(sha256sum "$data" | cut -d' ' -f1)
size=$(stat -c %s "$data")
cargo build -q --release -p download --example fetch
fetch=target/release/examples/fetch
source benches/nginx.sh
nginx_start "$work/nginx" 2 "  log_format bytes '\$body_bytes_sent';
  access_log $work/nginx/logs/access.log bytes;
  server { listen 127.0.0.1:18083; limit_rate 16m; root $work/data; }"
nginx_pid=$NGINX_PID
trap 'kill $nginx_pid 2>/dev/null; rm -rf "$work/out"' EXIT
url=http://127.0.0.1:18083/model.gguf
for _ in $(seq 100); do curl -s -o /dev/null -r 0-0 "$url" && break; sleep 0.1; done

crash() { # name, command...: killed -9 after 0.8 s, then run to the end
  local name=$1; shift
  rm -rf "$work/out"; mkdir -p "$work/out"
  : > "$work/nginx/logs/access.log"
  "$@" > /dev/null 2>&1 &
  local pid=$!
  sleep 0.8
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  "$@" > /dev/null 2>&1
  sleep 0.3  # nginx logs a response as it ends
  local got
  got=$(sha256sum "$work/out/model.gguf" | cut -d' ' -f1)
  [ "$got" = "$sha" ] || { echo "$name: wrong bytes" >&2; return 1; }
  awk -v n="$name" -v size="$size" '{ s += $1 } END {
    again = s - size; printf "%-28s sent %6.1f MiB for %6.1f MiB: %6.1f MiB (%5.1f %%) fetched again\n",
      n, s / 1048576, size / 1048576, again / 1048576, 100 * again / size }' "$work/nginx/logs/access.log"
}
for i in 1 2 3; do
  echo "-- run $i"
  crash "rbee fetch -x8" "$fetch" "$url" "$work/out/model.gguf"
  crash "aria2c -x8 -s8 -k1M" aria2c -q -x8 -s8 -k1M --file-allocation=falloc -d "$work/out" -o model.gguf "$url"
done
