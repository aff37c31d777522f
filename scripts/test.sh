#!/usr/bin/env bash
# Installs the test dependencies (Debian 12) and runs the whole test suite: formatting,
# lints, unit tests, integration tests against the real daemon, interop tests against
# Debian's sasl2-bin, Postfix + swaks, and the packaging checks. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
require_root

TEST_PACKAGES=(
    sasl2-bin libsasl2-modules postfix swaks                      # real peers
    whois openssl procps                                           # lab tools
)
echo "== installing build and test dependencies"
apt_install "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
ensure_rust

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== unit tests of the pure-Rust hash fallback (--features pure-rust-hash)"
cargo clippy --lib --features pure-rust-hash -- -D warnings
cargo test --lib --features pure-rust-hash
echo "== cargo test"
cargo test --all-targets -- --test-threads="${TEST_THREADS:-4}"
