#!/usr/bin/env bash
# A static build (linked statically against glibc and libseccomp) of wedge's binaries.
#
#   ci/build-static.sh [CARGO ARGS...]     wedge, wedge-init, wedge-subject, wedge-run and
#       wedge-agent, for guests that must not share the host's libraries. By default the VM
#       backend packs the host's own build with the libraries it links, so this is not needed; to
#       use it, set WEDGE_GUEST_BIN_DIR=target/x86_64-unknown-linux-gnu/release.
#   ci/build-static.sh --keeper [-q]      only the keeper, installed beside the ordinary build as
#       target/release/wedge-init-static. wedge starts it for every trial process instead of the
#       dynamically linked wedge-init when it was built from the same sources (its --fingerprint;
#       see harness/src/engine/keeper.rs): its start-up maps no shared library, which took 9-14 % off
#       the wall time of trivial trials (reports/bench.md, "Trials per second: the tree's
#       bookkeeping, and a static keeper").
#
# `--target` keeps build scripts and proc macros dynamic, and puts the output there.
set -euo pipefail
cd "$(dirname "$0")/.."
# Without debug info: the binaries are copied into every guest image, whose size is boot time.
export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C strip=debuginfo"
export CARGO_PROFILE_RELEASE_DEBUG=false
export LIBSECCOMP_LINK_TYPE=static
export LIBSECCOMP_LIB_PATH="${LIBSECCOMP_LIB_PATH:-/usr/lib/x86_64-linux-gnu}"
target=x86_64-unknown-linux-gnu
if [ "${1:-}" = --keeper ]; then
  shift
  cargo build --release --locked --all-features --target "$target" -p wedge --bin wedge-init "$@"
  mkdir -p target/release
  # A new file, then a rename: a running wedge may be starting the old one this very moment.
  cp "target/$target/release/wedge-init" target/release/.wedge-init-static.tmp
  mv -f target/release/.wedge-init-static.tmp target/release/wedge-init-static
  exit 0
fi
exec cargo build --release --all-features --target "$target" \
  -p wedge -p wedge-runtime --bins "$@"
