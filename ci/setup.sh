#!/usr/bin/env bash
# Installs what wedge needs on a Debian 12 machine, only what is missing, with no prompts.
# Safe to run any number of times. Needs root (or sudo) only when something must be installed.
set -euo pipefail

packages=(
  binutils          # objcopy: the guest images carry wedge's binaries without debug info
  bubblewrap        # the default sandbox of wedge-run
  busybox-static    # the root filesystem of wedge-agent --builder libcontainer's container
  cpio              # an independent reader of wedge's initramfs, in its tests
  libseccomp-dev    # the libseccomp crate links against it
  pkg-config
  protobuf-compiler # protoc, for wedge-agent's gRPC definitions
  qemu-system-x86   # the VM backend's guests
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "ci/setup.sh: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq </dev/null
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi

# The guest kernels the VM tests boot (kernels.toml), fetched into wedge's cache outside the repo
# (apt-get download + dpkg-deb -x; a kernel already cached is not fetched again).
if [ "${WEDGE_SKIP_KERNELS:-}" != 1 ]; then
  cargo build --release -q -p wedge --bin wedge
  ./target/release/wedge kernels fetch
fi
