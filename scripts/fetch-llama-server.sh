#!/usr/bin/env bash
# Builds llama.cpp's llama-server (CPU) from the llama.cpp tree that the PyPI sdist of
# llama-cpp-python carries (vendor/llama.cpp), once, into a cache outside the
# repository. The sdist is pinned by version and sha256. Prints the binary's path.
#   RBEE_TEST_MODEL_DIR  where to keep it (default ~/.cache/rbee-test)
#   needs cmake and a C++ compiler
set -euo pipefail
version=0.3.36
sha=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
url=https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-$version.tar.gz
dir="${RBEE_TEST_MODEL_DIR:-$HOME/.cache/rbee-test}/llama.cpp-$version"
# The build folder and the configure line are the ones `rbee worker-binaries install
# llama.cpp:cpu --source "$dir/src"` uses (crates/worker-provisioner/src/cmake_build.rs),
# with these settings after its defaults; they are written beside the build, so the
# tests can run that install against this tree and find nothing left to compile.
extra=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON)
build="$dir/src/build-rbee-cpu"
bin="$build/bin/llama-server"
stamp="$build/rbee-cmake-args"
if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$(printf '%s\n' "${extra[@]}")" ] \
    && "$bin" --version >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi
command -v cmake >/dev/null || { echo "cmake is missing (apt-get install cmake)" >&2; exit 1; }
mkdir -p "$dir"
sdist="$dir/llama_cpp_python-$version.tar.gz"
if ! echo "$sha  $sdist" | sha256sum -c --status 2>/dev/null; then
  curl -fsS --retry 3 -o "$sdist.part" "$url"
  echo "$sha  $sdist.part" | sha256sum -c --status || { echo "bad sha256 for $url" >&2; exit 1; }
  mv "$sdist.part" "$sdist"
fi
rm -rf "$dir/src" "$dir/build"
mkdir -p "$dir/src"
tar xzf "$sdist" -C "$dir/src" --strip-components=3 "llama_cpp_python-$version/vendor/llama.cpp"
started=$(date +%s)
# AVX2 rather than -march=native: the same cached build runs on any x86-64 machine of
# this kind, and a CPU that reports AMX inside a VM that does not grant it (seen
# here: SIGILL at the first matrix product) is not asked to use it.
cmake -S "$dir/src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  "${extra[@]}" >&2
cmake --build "$build" --config Release --target llama-server -j "$(nproc)" >&2
printf '%s\n' "${extra[@]}" > "$stamp"
echo "built llama-server in $(( $(date +%s) - started )) s" >&2
"$bin" --version >&2
echo "$bin"
