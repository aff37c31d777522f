# shellcheck shell=bash
# Shared steps of scripts/test.sh and scripts/demo.sh: root check, Debian packages
# (installed without starting any daemon), and a Rust toolchain.

die() { echo "$0: $*" >&2; exit 1; }

require_root() {
    [ "$(id -u)" -eq 0 ] || die "run me as root (the daemon needs root, the tests a private mount namespace)"
}

# Packages every build needs (used by the scripts that source this file).
# shellcheck disable=SC2034
BUILD_PACKAGES=(gcc libc6-dev libcrypt-dev libpam0g-dev libssl-dev libkrb5-dev libdb5.3-dev pkg-config util-linux ca-certificates curl)

# apt_install PKG...: apt-get update + install, with a temporary policy-rc.d so that
# package scripts do not start daemons (Postfix, saslauthd) on public ports. Runs under a
# lock, so that two runs at once can't remove each other's policy-rc.d mid-install.
apt_install() {
    (
        exec 9>/run/lock/saslauthd-rs-apt.lock
        flock 9
        local created=0
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
            chmod 755 /usr/sbin/policy-rc.d
            created=1
        fi
        local rc=0
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=900 update -q || rc=$?
        if [ "$rc" -eq 0 ]; then
            apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "$@" || rc=$?
        fi
        if [ "$created" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
        exit "$rc"
    )
}

# ensure_rust: cargo on PATH, or a stable toolchain from rustup (Debian 12's rustc is too
# old for edition 2024).
ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "== installing a Rust toolchain with rustup"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
}
