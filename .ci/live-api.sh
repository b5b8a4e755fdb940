#!/usr/bin/env bash
# Checks of a live daemon's API with tools nobody here wrote:
# - openapi-spec-validator on its /openapi.json;
# - schemathesis against that document: no 5xx, and every answer in the status codes,
#   content types and shapes the document declares;
# - promtool check metrics on its /metrics, after schemathesis has exercised it.
# Runs inside a fresh network namespace (root): the daemon, a stand-in hub that
# answers 404 to everything, and the tools see only their own loopback, so no
# generated URL can reach any other host.
#   .ci/live-api.sh        # needs .venv (requirements-test.txt), promtool, a built rbee-hive
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${SCHEMATHESIS_MAX_EXAMPLES:-40}"
hive="${RBEE_HIVE_BIN:-target/debug/rbee-hive}"
[ -x "$hive" ] || cargo build -q -p hive
command -v promtool >/dev/null || { echo "promtool is missing (apt-get install prometheus)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/hub" "$work/home"
exec unshare --net bash -c '
  set -euo pipefail
  ip link set lo up
  .venv/bin/python -m http.server 18999 --bind 127.0.0.1 --directory "'"$work"'/hub" >/dev/null 2>&1 &
  hub=$!
  RBEE_HOME="'"$work"'/home" RBEE_HF_ENDPOINT=http://127.0.0.1:18999 RUST_LOG=warn \
    "'"$hive"'" --port 18835 --worker-source-dir "'"$work"'/no-source" >/dev/null &
  daemon=$!
  trap "kill $hub $daemon 2>/dev/null" EXIT
  fetch() { .venv/bin/python -c "import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1]).read())" "$1"; }
  for _ in $(seq 200); do
    fetch http://127.0.0.1:18835/health >/dev/null 2>&1 && break
    sleep 0.05
  done
  echo "-- openapi-spec-validator"
  fetch http://127.0.0.1:18835/openapi.json > "'"$work"'/openapi.json"
  .venv/bin/openapi-spec-validator "'"$work"'/openapi.json"
  echo "-- schemathesis"
  .venv/bin/schemathesis run http://127.0.0.1:18835/openapi.json \
    --exclude-path /v1/heartbeats/stream \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples '"$examples"' --workers 2 --no-color
  echo "-- promtool check metrics"
  fetch http://127.0.0.1:18835/metrics | promtool check metrics
'
