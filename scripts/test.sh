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

step "fetching models (cached after the first run)"
cargo run --quiet --locked -p kb-cli -- models fetch

step "cargo test"
cargo test --workspace --locked
