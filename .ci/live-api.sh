#!/usr/bin/env bash
# schemathesis against the daemon's own /openapi.json: no request may get a 5xx.
# Runs inside a fresh network namespace (root): the daemon, a stand-in hub that
# answers 404 to everything, and schemathesis see only their own loopback, so no
# generated URL can reach any other host.
#   .ci/schemathesis.sh        # needs .venv with schemathesis, and a built rbee-hive
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${SCHEMATHESIS_MAX_EXAMPLES:-40}"
hive="${RBEE_HIVE_BIN:-target/debug/rbee-hive}"
[ -x "$hive" ] || cargo build -q -p hive
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
  for _ in $(seq 200); do
    .venv/bin/python -c "import urllib.request; urllib.request.urlopen(\"http://127.0.0.1:18835/health\")" 2>/dev/null && break
    sleep 0.05
  done
  .venv/bin/schemathesis run http://127.0.0.1:18835/openapi.json \
    --exclude-path /v1/heartbeats/stream \
    --checks not_a_server_error --max-examples '"$examples"' --workers 2 --no-color
'
