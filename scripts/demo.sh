#!/usr/bin/env bash
# Installs the build dependencies (Debian 12), builds saslauthd-rs and runs the daemon in
# the foreground on a demo setup: `-a shadow` against a private demo user (demo /
# demo-password), in a private mount namespace so the host's /etc is never touched.
# Run as root; stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
require_root

echo "== installing build dependencies"
apt_install "${BUILD_PACKAGES[@]}"
ensure_rust
echo "== building"
cargo build --release

demo=$(mktemp -d /tmp/saslauthd-demo.XXXXXX)
fixtures=$PWD/scripts/demo
cat <<INFO

== saslauthd-rs is starting in the foreground (-d) with its socket at $demo/run/mux
   In another terminal, try:
     $PWD/target/release/testsaslauthd -f $demo/run/mux -u demo -p demo-password
     $PWD/target/release/testsaslauthd -f $demo/run/mux -u demo -p wrong --show-reply
   Press Ctrl-C to stop.

INFO
# shellcheck disable=SC2016 # expanded by the inner shell
exec unshare --mount --propagation private sh -c '
    mount --bind "$1/passwd" /etc/passwd &&
    mount --bind "$1/shadow" /etc/shadow &&
    mount --bind "$1/nsswitch.conf" /etc/nsswitch.conf &&
    exec "$2" -a shadow -d -m "$3"
' sh "$fixtures" "$PWD/target/release/saslauthd" "$demo/run"
