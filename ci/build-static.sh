#!/usr/bin/env bash
# Optional: a static build of the wedge binaries a guest image holds (wedge, wedge-init,
# wedge-subject, wedge-run and wedge-agent, linked statically against glibc and libseccomp), for
# guests that must not share the host's libraries. By default the VM backend packs the host's
# own build with the libraries it links, so this is not needed; to use it, set
# WEDGE_GUEST_BIN_DIR=target/x86_64-unknown-linux-gnu/release. `--target` keeps build scripts
# and proc macros dynamic, and puts the output there.
set -euo pipefail
cd "$(dirname "$0")/.."
# Without debug info: the binaries are copied into every guest image, whose size is boot time.
export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C strip=debuginfo"
export CARGO_PROFILE_RELEASE_DEBUG=false
export LIBSECCOMP_LINK_TYPE=static
export LIBSECCOMP_LIB_PATH="${LIBSECCOMP_LIB_PATH:-/usr/lib/x86_64-linux-gnu}"
exec cargo build --release --all-features --target x86_64-unknown-linux-gnu \
  -p wedge -p wedge-runtime --bins "$@"
