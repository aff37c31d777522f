#!/usr/bin/env bash
# The side-by-side benchmark: builds the load generator (benches/compare.rs) and our
# daemon, then runs ours and Debian's saslauthd (sasl2-bin) on the same fixture users, each
# in a private mount namespace (the host's /etc is never touched), and writes a markdown
# table with ours/upstream ratios and the issue's targets to stdout and
# target/bench/compare.md. Run as root on a quiet machine.
#
#   scripts/bench.sh [--duration SECS] [--warmup SECS] [--smoke] [--out PATH] [--only TEXT]
#
# Default: 2 s warm-up + 10 s per scenario and daemon (about 4 minutes in all, plus the
# build); --smoke: 0.2 + 1 s and at most 16 clients (about 25 s, for CI; the numbers mean
# nothing); --only 'yescrypt miss c=512' runs the scenarios whose name contains the text.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
require_root

# apt-get update + install (scripts/lib.sh), with a temporary policy-rc.d so that
# sasl2-bin's package scripts start no saslauthd.
echo "== installing the build dependencies, Debian's saslauthd (sasl2-bin) and strace"
apt_install "${BUILD_PACKAGES[@]}" sasl2-bin strace
ensure_rust

echo "== cargo bench --bench compare -- $*"
cargo bench --bench compare -- "$@"
