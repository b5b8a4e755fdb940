#!/usr/bin/env bash
# The dashboard's first load in headless Chromium (Debian's, through Playwright):
# bytes and requests, and time until the models page is usable, with 10,000 models
# in the catalog and with a handful. Needs chromium (apt) and .venv with playwright.
#   benches/dashboard.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p hive --example seed_catalog --bin rbee-hive
big=$(mktemp -d); small=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$big" "$small"' EXIT
target/release/examples/seed_catalog "$big" 10000
target/release/examples/seed_catalog "$small" 120
RBEE_HOME="$big" RUST_LOG=warn target/release/rbee-hive --port 18851 > /dev/null &
RBEE_HOME="$small" RUST_LOG=warn target/release/rbee-hive --port 18852 > /dev/null &
for port in 18851 18852; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" > /dev/null && break; sleep 0.1; done
done
echo "== the shell alone: $(curl -s http://127.0.0.1:18851/ | wc -c) + $(curl -s http://127.0.0.1:18851/ui/app.js | wc -c) + $(curl -s http://127.0.0.1:18851/ui/style.css | wc -c) bytes (html + js + css, uncompressed)"
echo "== 10,000 models"
.venv/bin/python benches/dashboard_load.py http://127.0.0.1:18851 5
echo "== 120 models"
.venv/bin/python benches/dashboard_load.py http://127.0.0.1:18852 5
