# Sourced by the benches: a release hive in a fresh home on PORT ($1), with the
# llama-server that scripts/fetch-llama-server.sh builds (or $RBEE_LLAMA_SERVER)
# added and SmolLM2-135M Q4_1 imported. Sets bin, home (the hive's RBEE_HOME), hive
# (its pid, killed at exit with the home removed), RBEE_HIVE_URL and id (the model).
bin="${RBEE_BIN_DIR:-target/release}"
[ -x "$bin/rbee-hive" ] || cargo build -q --release -p hive -p cli
server="${RBEE_LLAMA_SERVER:-$(scripts/fetch-llama-server.sh)}"
model="$(scripts/fetch-test-model.sh)"
home=$(mktemp -d)
trap 'kill $hive 2>/dev/null || true; rm -rf "$home"' EXIT
RBEE_HOME="$home" "$bin/rbee-hive" --port "$1" >/dev/null 2>&1 &
hive=$!
export RBEE_HIVE_URL="http://127.0.0.1:$1"
for _ in $(seq 100); do curl -sf "$RBEE_HIVE_URL/health" >/dev/null && break; sleep 0.1; done
"$bin/rbee" worker-binaries add "$server" >/dev/null
id=$("$bin/rbee" --json models import "$model" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
