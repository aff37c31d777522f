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

# Boot-time enablement of system services, as symbolic links: systemd's (wants/requires
# links and masks below /etc/systemd/system) and sysvinit's (/etc/rc?.d/[SK]NNname). Both
# work without a running systemd, and together they are what `systemctl is-enabled` and
# update-rc.d report.

# service_links SERVICE...: "link<TAB>target" for every such link of the services.
service_links() {
    local service
    for service in "$@"; do
        find /etc/systemd/system /etc/rc0.d /etc/rc1.d /etc/rc2.d /etc/rc3.d /etc/rc4.d \
            /etc/rc5.d /etc/rc6.d /etc/rcS.d -maxdepth 2 -type l \
            \( -name "$service.service" -o -name "$service.socket" -o -name "$service@*.service" \
            -o -name "$service.path" -o -name "$service.timer" -o -name "[SK][0-9][0-9]$service" \) \
            -printf '%p\t%l\n' 2>/dev/null
    done | LC_ALL=C sort
}

# service_links_restore FILE SERVICE...: makes the services' links what FILE (from
# service_links) recorded: links added since are removed, links removed or changed since
# are put back.
service_links_restore() {
    local saved=$1 link target
    shift
    while IFS=$'\t' read -r link target; do
        if ! grep -qxF "$link"$'\t'"$target" "$saved"; then
            echo "   restoring boot state: removing $link -> $target"
            rm -f "$link"
        fi
    done < <(service_links "$@")
    while IFS=$'\t' read -r link target; do
        if [ "$(readlink "$link" 2>/dev/null)" != "$target" ]; then
            echo "   restoring boot state: $link -> $target"
            mkdir -p "$(dirname "$link")"
            ln -sfn "$target" "$link"
        fi
    done <"$saved"
}

# service_states SERVICE...: "service: enabled/disabled/..." as systemctl sees it (offline).
service_states() {
    local service
    for service in "$@"; do
        printf '%s: %s\n' "$service" "$(systemctl is-enabled "$service" 2>/dev/null || true)"
    done
}
