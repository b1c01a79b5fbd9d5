#!/usr/bin/env bash
# Builds wedge-agent-latest: wedge-agent against libcontainer's current release
# (runtime/libcontainer-latest, a package and workspace of its own; see its Cargo.toml for why),
# into the main target directory beside wedge-agent, where `wedge-agent serve --builder
# libcontainer-latest` looks for it. Release profile, failpoints compiled in (as CI's main build).
#
#   ci/build-libcontainer-latest.sh [-q]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
quiet=()
[ "${1:-}" = "-q" ] && quiet=(-q)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
cargo build "${quiet[@]}" --release --locked --manifest-path "$root/runtime/libcontainer-latest/Cargo.toml" --bins
bin="$CARGO_TARGET_DIR/release/wedge-agent-latest"
[ -x "$bin" ] || { echo "ci/build-libcontainer-latest.sh: $bin was not built" >&2; exit 1; }
echo "built $bin"
