#!/usr/bin/env bash
# Installs the test dependencies (Debian 12) and runs the whole test suite: formatting,
# lints, unit tests, integration tests against the real daemon, interop tests against
# Debian's sasl2-bin, Postfix + swaks, and the packaging checks (man pages, units, init
# scripts, socket activation, the .deb, in private mount namespaces only). Run as root.
# Every peer's system service is left enabled or disabled at boot as it was found.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
require_root

TEST_PACKAGES=(
    sasl2-bin libsasl2-modules postfix swaks                      # real peers
    libpam-modules libpam-modules-bin libpam-runtime               # PAM stacks in tests
    whois openssl procps python3 util-linux                        # lab tools (mkpasswd, crypt via ctypes, setpriv, prlimit)
    dovecot-imapd                                                  # rimap's IMAP server
    krb5-kdc krb5-admin-server                                     # kerberos5's private KDC (krb5kdc, kdb5_util, kadmin.local)
    dovecot-core                                                   # the reference Dovecot auth server (--dovecot-socket)
    slapd ldap-utils                                               # ldap's directory (private slapd), ldappasswd
    mandoc groff-base man-db shellcheck systemd openrc strace dpkg-dev lintian  # packaging checks
)
# The system services of the peers above (and of those later tests add): installing a
# package enables its service at boot, so the test command records whether each one is
# enabled before it installs anything and puts that back right after (and on any exit).
# Add a peer's service here when you add the peer to TEST_PACKAGES.
PEER_SERVICES=(postfix dovecot saslauthd krb5-kdc krb5-admin-server slapd)

# apt-get update + apt-get install -y (apt_install in scripts/lib.sh), with
# DEBIAN_FRONTEND=noninteractive and a temporary policy-rc.d so no daemon starts.
echo "== installing build and test dependencies"
boot_state=$(mktemp)
service_links "${PEER_SERVICES[@]}" >"$boot_state"
echo "   services at boot before the installs:"
service_states "${PEER_SERVICES[@]}" | sed 's/^/     /'
trap 'service_links_restore "$boot_state" "${PEER_SERVICES[@]}"; rm -f "$boot_state"' EXIT
apt_install "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
service_links_restore "$boot_state" "${PEER_SERVICES[@]}"
echo "   services at boot after the installs (as before):"
service_states "${PEER_SERVICES[@]}" | sed 's/^/     /'

# Debian's sasl2-bin as a package file, for the .deb tests (tests/packaging.rs), which
# install it only inside private mount namespaces: no network during the tests.
test_debs="${CARGO_TARGET_DIR:-$PWD/target}/test-debs"
echo "== downloading sasl2-bin's package file into $test_debs"
mkdir -p "$test_debs"
rm -f "$test_debs"/sasl2-bin_*.deb
(cd "$test_debs" && apt-get -q -o APT::Sandbox::User=root download \
    "sasl2-bin=$(dpkg-query -W -f='${Version}' sasl2-bin)")
ensure_rust
# Exim 4.96 for the Dovecot front end's interop tier: downloaded, never installed (an
# exim4-daemon package would remove Postfix); tests/common/exim.rs unpacks it with dpkg-deb.
deb_cache="${SASLAUTHD_TEST_DEB_CACHE:-$PWD/target/test-debs}"
mkdir -p "$deb_cache"
for pkg in exim4-daemon-heavy libidn12 libmariadb3 libspf2-2; do
    if ! compgen -G "$deb_cache/${pkg}_*.deb" >/dev/null; then
        echo "== downloading $pkg (not installed) into $deb_cache"
        (cd "$deb_cache" && apt-get download -q "$pkg")
    fi
done
export SASLAUTHD_TEST_DEB_CACHE="$deb_cache"
if ! cargo deb --version >/dev/null 2>&1; then
    echo "== installing cargo-deb"
    cargo install cargo-deb --locked --version 3.8.0
fi

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== unit tests of the pure-Rust hash fallback (--features pure-rust-hash)"
cargo clippy --lib --features pure-rust-hash -- -D warnings
cargo test --lib --features pure-rust-hash
# The suite runs with the secrets scan on (tests/common/secrets.rs): our daemons log all
# they can (-d, else -V, syslog captured in daemon mode), and the harness keeps every log of
# ours and every password it sends here. tests/secrets_scan.rs then searches the logs.
secrets_dir="$PWD/target/secrets-scan"
rm -rf "$secrets_dir"
mkdir -p "$secrets_dir"
chmod 700 "$secrets_dir"
echo "== cargo test (verbose daemons; logs and passwords kept in $secrets_dir)"
SASLAUTHD_TEST_SECRETS_DIR="$secrets_dir" cargo test --all-targets --no-fail-fast -- --test-threads="${TEST_THREADS:-4}"
echo "== secrets scan: no password or stored hash in any log of ours"
SASLAUTHD_TEST_SECRETS_DIR="$secrets_dir" cargo test --test secrets_scan -- --ignored
# Coverage-guided fuzzing (fuzz/README.md): every target for FUZZ_SECONDS (30) on the
# nightly toolchain; fails on a crash. Crashes found are replayed by `cargo test` above.
echo "== fuzzing (scripts/fuzz.sh)"
scripts/fuzz.sh
echo "== benchmark smoke run (ours vs upstream, 1 s per scenario; no assertion on the numbers)"
cargo bench --bench compare -- --smoke --out target/bench/compare-smoke.md
