#!/usr/bin/env bash
# Coverage-guided fuzzing with cargo-fuzz (libFuzzer) on the nightly toolchain: builds the
# targets in fuzz/ and runs each one for FUZZ_SECONDS seconds (default 30), starting from
# its checked-in seeds (fuzz/corpus/NAME/). Exits non-zero as soon as a target crashes
# (panic, failed check, hang over 10 s, over 2 GiB), naming the input that did it.
#
#   scripts/fuzz.sh [NAME...]      default: every target in TARGETS below
#   FUZZ_SECONDS=600 scripts/fuzz.sh imap_responses     a longer run of one target
#
# Adding a target (fuzz/README.md has the whole recipe): its entry point in src/fuzz.rs,
# fuzz/fuzz_targets/NAME.rs, a [[bin]] in fuzz/Cargo.toml, seeds in fuzz/corpus/NAME/,
# and one line here:
TARGETS=(
    mux_codec        # the mux request/reply codec (src/protocol.rs)
    rimap_address    # rimap's -O address parser (src/mech/rimap/address.rs)
    imap_responses   # rimap's handling of IMAP server responses (src/mech/rimap.rs)
    conf_file        # the saslauthd.conf parser (src/mech/conf_file.rs)
    dovecot_lines    # the Dovecot authentication protocol's lines (src/protocol/dovecot.rs)
)
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
seconds=${FUZZ_SECONDS:-30}
toolchain=${FUZZ_TOOLCHAIN:-nightly}
if [ $# -gt 0 ]; then
    TARGETS=("$@")
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    echo "fuzz: no '$toolchain' Rust toolchain (rustup toolchain list); libFuzzer needs one" >&2
    exit 1
fi
if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

# No sanitizer: the targets reach no unsafe code of ours (that lives in src/sys/, behind
# the parsers), and Rust's own checks turn memory errors into panics; debug assertions add
# the overflow checks. Half the build time and twice the executions of AddressSanitizer.
flags=(--sanitizer none --debug-assertions)
# The fuzz crate builds the package with the versions it is tested with: its lock file
# starts as a copy of the package's (libfuzzer-sys is pinned in fuzz/Cargo.toml).
cp Cargo.lock fuzz/Cargo.lock
echo "== fuzz: building the targets ($toolchain)"
cargo "+$toolchain" fuzz build "${flags[@]}"
work=target/fuzz
for target in "${TARGETS[@]}"; do
    # New inputs go to a scratch corpus; the checked-in seeds are only read.
    mkdir -p "$work/corpus/$target" "$work/artifacts/$target"
    echo "== fuzz: $target for $seconds s"
    if ! cargo "+$toolchain" fuzz run "${flags[@]}" "$target" \
        "$work/corpus/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$work/artifacts/$target/" -print_final_stats=1 \
        >"$work/$target.log" 2>&1; then
        tail -n 60 "$work/$target.log" >&2
        echo "fuzz: $target crashed; the input is in $work/artifacts/$target/." >&2
        echo "fuzz: replay it with: cargo +$toolchain fuzz run ${flags[*]} $target <file>" >&2
        echo "fuzz: once fixed, keep it as a regression test: copy it to fuzz/regressions/$target/" >&2
        exit 1
    fi
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb):' \
        "$work/$target.log" | tr '\n' ' ' || true
    echo
done
echo "== fuzz: ${#TARGETS[@]} targets, $seconds s each, no crash"
