#!/usr/bin/env bash
# Pulls from an OCI registry (Debian's docker-registry on loopback): rbee models pull
# against the oras Python client's pull and skopeo copy of the same artifact (pushed
# by oras as a ModelPack raw weight layer), ABBA order; then with nginx in front of
# the registry capping each connection at 8 MiB/s (as CDNs do), rbee against
# aria2c -x8 on the blob URL. Needs docker-registry, skopeo, nginx, aria2 (apt) and
# .venv with oras (pip install -r requirements-test.txt).
#   benches/oci.sh [SIZE_MIB]     # default 512
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib="${1:-512}"
work="${RBEE_BENCH_CACHE:-$HOME/.cache/rbee-bench}/oci"
rm -rf "$work/registry" "$work/out" "$work/home"
mkdir -p "$work/data" "$work/out" "$work/nginx/logs" "$work/registry"
data="$work/data/bench.Q4_0.gguf"
want=$(( (size_mib << 20) + 39040 ))
if [ ! -f "$data" ] || [ "$(stat -c %s "$data")" != "$want" ]; then
  { cat crates/gguf/tests/fixtures/llama-q4_0.gguf; head -c $((size_mib << 20)) /dev/urandom; } > "$data"
fi
sha=$(sha256sum "$data" | cut -d' ' -f1)
size=$(stat -c %s "$data")
cargo build -q --release -p hive -p cli --bin rbee-hive --bin rbee
py=.venv/bin/python
reg=127.0.0.1:18090
capped=127.0.0.1:18091

cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: $reg}
YML
docker-registry serve "$work/registry.yml" > /dev/null 2>&1 &
pids=($!)
source benches/nginx.sh
nginx_start "$work/nginx" 2 "  access_log off;
  proxy_http_version 1.1;
  server {
    listen $capped;
    limit_rate 8m;
    client_max_body_size 0;
    location / { proxy_pass http://$reg; proxy_set_header Host \$host:18091; }
  }"
pids+=("$NGINX_PID")
RBEE_HOME="$work/home" RUST_LOG=warn target/release/rbee-hive --port 18843 --oci-insecure "$reg,$capped" > /dev/null &
pids+=($!)
trap 'kill ${pids[*]} 2>/dev/null; rm -rf "$work/out" "$work/home" "$work/registry"' EXIT
for _ in $(seq 100); do curl -sf "http://$reg/v2/" > /dev/null && curl -sf http://127.0.0.1:18843/health > /dev/null && break; sleep 0.1; done
"$py" crates/hive/tests/oras_client.py push "$reg/bench/model:v1" "$data:application/vnd.cncf.model.weight.v1.raw" > /dev/null
export RBEE_HIVE_URL=http://127.0.0.1:18843
rbee=target/release/rbee

check() { # name, file: the bytes are the artifact's
  local got; got=$(sha256sum "$2" | cut -d' ' -f1)
  [ "$got" = "$sha" ] || { echo "$1: wrong bytes" >&2; exit 1; }
}
timeit() { # name, command...: prints seconds and MiB/s
  local name=$1; shift
  local t0 t1; t0=$(date +%s.%N)
  "$@" > /dev/null 2>&1 || { echo "$name failed" >&2; exit 1; }
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" -v n="$name" -v s="$size" 'BEGIN { printf "%-40s %7.2f s %8.1f MiB/s\n", n, b - a, s / (b - a) / 1048576 }'
}
rbee_pull() { # host: pulls oci://HOST/bench/model:v1, checks it, removes it
  local ref="oci://$1/bench/model:v1"
  timeit "rbee models pull ($2)" "$rbee" models pull "$ref"
  local path; path=$("$rbee" --json models show "$ref" | "$py" -c 'import json,sys; v=json.load(sys.stdin); print(v.get("artifact", v)["path"])')
  check rbee "$path"
  "$rbee" models rm "$ref" > /dev/null
}
oras_pull() {
  rm -rf "$work/out"; mkdir -p "$work/out"
  timeit "oras pull (oras-py)" "$py" crates/hive/tests/oras_client.py pull "$reg/bench/model:v1" "$work/out"
  check oras "$work/out/bench.Q4_0.gguf"
}
skopeo_copy() {
  rm -rf "$work/out"; mkdir -p "$work/out"
  timeit "skopeo copy docker:// dir:" skopeo copy -q --src-tls-verify=false "docker://$reg/bench/model:v1" "dir:$work/out/skopeo"
  check skopeo "$work/out/skopeo/$sha"
}

echo "== $size_mib MiB on loopback, ABBA"
rbee_pull "$reg" "loopback"; oras_pull; skopeo_copy
skopeo_copy; oras_pull; rbee_pull "$reg" "loopback"
echo "== $size_mib MiB behind nginx limit_rate 8m per connection"
rm -rf "$work/out"; mkdir -p "$work/out"
timeit "aria2c -x8 -s8 -k1M (blob URL)" aria2c -q -x8 -s8 -k1M --file-allocation=falloc -d "$work/out" -o blob "http://$capped/v2/bench/model/blobs/sha256:$sha"
check aria2c "$work/out/blob"
rbee_pull "$capped" "nginx-capped"
