#!/usr/bin/env bash
# Builds the static wedge binaries the VM backend packs into its guest images (the guest has no
# shared libraries of its own): wedge, wedge-init, wedge-subject, wedge-run and wedge-agent, linked
# statically against glibc and libseccomp. `--target` keeps build scripts and proc macros dynamic,
# and puts the output in target/x86_64-unknown-linux-gnu/release, where wedge looks for it.
set -euo pipefail
cd "$(dirname "$0")/.."
# Without debug info: the binaries are copied into every guest image, whose size is boot time.
export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C strip=debuginfo"
export CARGO_PROFILE_RELEASE_DEBUG=false
export LIBSECCOMP_LINK_TYPE=static
export LIBSECCOMP_LIB_PATH="${LIBSECCOMP_LIB_PATH:-/usr/lib/x86_64-linux-gnu}"
exec cargo build --release --all-features --target x86_64-unknown-linux-gnu \
  -p wedge -p wedge-runtime --bins "$@"
