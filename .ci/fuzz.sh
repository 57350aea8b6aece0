#!/usr/bin/env bash
# CI: fuzz smoke test. For each target in fuzz/: replay the committed corpus
# (fuzz/corpus/<target>, as a regression test), then fuzz for
# ${LANELOG_FUZZ_SECONDS:-60} seconds. Exits non-zero on any crash, panic,
# timeout, out-of-memory or oversized allocation; the input that did it is in
# fuzz/artifacts/<target>/ (reproduce with the command printed).
#
# Why RUSTC_BOOTSTRAP=1: cargo-fuzz builds with AddressSanitizer by default,
# which needs `-Zsanitizer=address`, a nightly-only flag; CI has only the
# stable toolchain. RUSTC_BOOTSTRAP=1 lets stable rustc accept -Z flags for
# this build only. ASan is worth it here even though lanelog's own code is
# safe Rust: it checks the one unsafe module, the dependencies, and (with
# -malloc_limit_mb) that no length read from bytes drives an allocation.
# `cargo fuzz run -s none` would work without RUSTC_BOOTSTRAP, without those
# checks.
#
# Environment:
#   LANELOG_FUZZ_SECONDS       fuzzing time per target (default 60; 0 = only
#                              replay the corpus)
#   LANELOG_FUZZ_TARGETS       targets to run (default: all five)
#
# fuzz/regressions/<target>/ holds the inputs of bugs the fuzzers found (all
# fixed, each also a test in tests/fuzz_regressions.rs); they are replayed
# with the corpus.
#
# The committed corpus is only read: new inputs go to a scratch directory.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
export RUSTC_BOOTSTRAP=1

seconds="${LANELOG_FUZZ_SECONDS:-60}"
targets="${LANELOG_FUZZ_TARGETS:-decode_record decode_entry decode_checkpoint decode_attributes open_image ops_with_crashes}"
start=$(date +%s)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
cargo fuzz --version

# The fuzz crate is its own workspace, so the root's `cargo fmt --all` and
# clippy do not see it.
cargo fmt --manifest-path fuzz/Cargo.toml -- --check

echo "== building all targets (AddressSanitizer)"
cargo fuzz build

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# -rss_limit_mb / -malloc_limit_mb: a corrupt length must never turn into a
# huge allocation. The two queue targets create 1 MiB segments and may run
# hundreds of operations per input, so they get a longer per-input timeout.
limits() {
    case "$1" in
        open_image | ops_with_crashes) echo "-timeout=30 -rss_limit_mb=2048 -malloc_limit_mb=256" ;;
        *) echo "-timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=256" ;;
    esac
}

failed=""
for t in $targets; do
    # shellcheck disable=SC2046
    set -- $(limits "$t")
    echo "== $t: replay fuzz/corpus/$t"
    if ! cargo fuzz run "$t" "fuzz/corpus/$t" -- -runs=0 "$@"; then
        failed="$failed $t(corpus)"
        continue
    fi
    if [ -d "fuzz/regressions/$t" ]; then
        echo "== $t: replay fuzz/regressions/$t (bugs found and fixed)"
        if ! cargo fuzz run "$t" "fuzz/regressions/$t" -- -runs=0 "$@"; then
            failed="$failed $t(regressions)"
        fi
    fi
    if [ "$seconds" -gt 0 ]; then
        echo "== $t: fuzz for ${seconds}s"
        mkdir -p "$scratch/$t"
        if ! cargo fuzz run "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
            -max_total_time="$seconds" -print_final_stats=1 "$@"; then
            failed="$failed $t"
            echo "!! $t failed; reproduce with:"
            echo "   RUSTC_BOOTSTRAP=1 cargo fuzz run $t fuzz/artifacts/$t/<file>"
        fi
    fi
done

echo "== fuzz.sh took $(( $(date +%s) - start ))s"
if [ -n "$failed" ]; then
    echo "FAILED:$failed"
    exit 1
fi
echo "all fuzz targets passed"
