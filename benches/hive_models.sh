#!/usr/bin/env bash
# wrk on GET /v1/models with 10,000 catalog entries, and the daemon's RSS.
#   benches/hive_models.sh            # needs wrk (apt)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p hive --example seed_catalog --bin rbee-hive
home=$(mktemp -d); empty=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$home" "$empty"' EXIT
target/release/examples/seed_catalog "$home" 10000
rss() { grep VmRSS "/proc/$1/status" | awk '{printf "%.1f MB\n", $2 / 1024}'; }
RBEE_HOME="$empty" RUST_LOG=warn target/release/rbee-hive --port 18842 > /dev/null & e=$!
RBEE_HOME="$home" RUST_LOG=warn target/release/rbee-hive --port 18841 > /dev/null & d=$!
sleep 1
echo "idle RSS, empty catalog:        $(rss $e)"
echo "idle RSS, 10,000 models:        $(rss $d)"
curl -s -o /dev/null -D - "http://127.0.0.1:18841/v1/models" | grep -iE "x-total-count|content-length"
wrk -t2 -c32 -d10s --latency http://127.0.0.1:18841/v1/models
echo "RSS after the run, 10,000 models: $(rss $d)"
