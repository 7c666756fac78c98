#!/usr/bin/env bash
# The test suite, exactly as CI runs it: formatting, lints, the model fetch
# (first run only; later runs find the models cached), then every test.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
# Optional backends that need no external toolchain must at least build.
cargo clippy -p kb-embeddings --features fastembed --all-targets --locked -- -D warnings

step "fetching models (cached after the first run)"
cargo run --quiet --locked -p kb-cli -- models fetch --all

step "fetching tokenizer test vocabularies (cached after the first run)"
./scripts/fetch-vocab-fixtures.sh >/dev/null
export KB_REQUIRE_VOCAB=1

step "building llama.cpp's quantizer for the requantized-model tests (cached after the first run)"
if bin=$(scripts/llamacpp.sh --avx2 llama-quantize); then
    export KB_LLAMA_QUANTIZE="$bin/llama-quantize"
else
    echo "could not build llama-quantize: the requantized-model tests will say they skipped" >&2
fi

step "Python clients for the interoperability tests (cached after the first run)"
if py=$(scripts/python-clients.sh); then
    export KB_PYTHON_CLIENTS="$py"
else
    echo "could not install the Python clients: their interoperability test will say it skipped" >&2
fi

step "cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "\ntests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
