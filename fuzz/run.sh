#!/usr/bin/env bash
# Fuzzes the GGUF reader, seeded with every fixture. Needs nightly and cargo-fuzz:
#   rustup toolchain install nightly && cargo install cargo-fuzz
#   fuzz/run.sh 300        # seconds; default 60
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
mkdir -p corpus/gguf_read
cp ../crates/gguf/tests/fixtures/*.gguf ../crates/gguf/tests/fixtures/bad/*.gguf corpus/gguf_read/
cargo +nightly fuzz run gguf_read corpus/gguf_read -- \
  -max_total_time="$seconds" -rss_limit_mb=1024 -malloc_limit_mb=512 -timeout=5 -max_len=1048576
