#!/usr/bin/env bash
# Run the whole test suite on a Debian machine that has only Rust: install the Debian
# packages the tests need (only those missing), then `cargo test --workspace`.
#
#   scripts/test.sh                       # everything (what .ci/run runs)
#   scripts/test.sh --test write_crash    # extra arguments go to cargo test
#   scripts/test.sh -p vdiskview-core --lib   # the fast unit tier: no qemu, seconds
#
# Installing needs root or password-less sudo; without either the script says which
# packages are missing and which tests will fail, and runs the tests anyway.
# VDISKVIEW_NO_INSTALL=1 skips installing (report only).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export DEBIAN_FRONTEND=noninteractive
# mke2fs, sfdisk, sgdisk, mkntfs, mkfs.fat, mkfs.btrfs live in sbin
for d in /usr/sbin /sbin; do
  case ":$PATH:" in *":$d:"*) ;; *) PATH="$PATH:$d" ;; esac
done
export PATH

# package | a command it provides | the tests that need it
packages=(
  "qemu-utils|qemu-img|almost every integration test (tests/*.rs) and the nbdkit plugin's"
  "e2fsprogs|mke2fs|guest_fs, partitions, fuzz_regressions"
  "fdisk|sfdisk|partitions, guest_fs"
  "gdisk|sgdisk|partitions"
  "python3|python3|scripts/make-demo-image.sh"
  "nbdkit|nbdkit|nbdkit-plugin's nbd tests"
  "libnbd-bin|nbdinfo|nbdkit-plugin's nbd tests, snapshots_bitmaps"
  "tmux|tmux|tui_tmux"
  "ntfs-3g|mkntfs|the NTFS guest filesystem tests"
  "dosfstools|mkfs.fat|the FAT guest filesystem tests"
  "mtools|mcopy|the FAT guest filesystem tests"
  "btrfs-progs|mkfs.btrfs|the btrfs guest filesystem tests"
)

pkg_present() { # package command
  command -v "$2" >/dev/null 2>&1 && return 0
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

missing_packages() {
  local entry p c _
  for entry in "${packages[@]}"; do
    IFS='|' read -r p c _ <<<"$entry"
    pkg_present "$p" "$c" || echo "$p"
  done
}

mapfile -t missing < <(missing_packages)

if ((${#missing[@]})); then
  SUDO=()
  can_install=1
  if [[ -n "${VDISKVIEW_NO_INSTALL:-}" ]]; then
    can_install=0
    echo "test.sh: VDISKVIEW_NO_INSTALL is set: not installing ${missing[*]}"
  elif ! command -v apt-get >/dev/null 2>&1; then
    can_install=0
    echo "test.sh: no apt-get here: cannot install ${missing[*]}"
  elif [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      SUDO=(sudo -n)
    else
      can_install=0
      echo "test.sh: not root and no password-less sudo: cannot install ${missing[*]}"
    fi
  fi
  if ((can_install)); then
    echo "test.sh: installing missing packages: ${missing[*]}"
    if "${SUDO[@]}" apt-get update </dev/null &&
      "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}" </dev/null; then
      :
    else
      echo "test.sh: apt-get failed; going on with what is installed"
    fi
    mapfile -t missing < <(missing_packages)
  fi
fi

if ((${#missing[@]})); then
  echo "test.sh: WARNING: missing Debian packages: ${missing[*]}"
  echo "test.sh: install them with: apt-get install --no-install-recommends ${missing[*]}"
  echo "test.sh: these tests will fail without them:"
  for entry in "${packages[@]}"; do
    IFS='|' read -r p c tests <<<"$entry"
    for m in "${missing[@]}"; do
      [[ "$m" == "$p" ]] && echo "  $p ($c): $tests"
    done
  done
  echo "test.sh: running the tests anyway (cargo test -p vdiskview-core --lib needs none of them)"
else
  echo "test.sh: all required packages present"
fi

if command -v qemu-img >/dev/null 2>&1; then qemu-img --version | sed -n 1p; fi

# `-p PACKAGE` narrows the run; cargo refuses it together with --workspace
scope=(--workspace)
for a in "$@"; do
  case "$a" in -p | --package | --package=* | -p?*) scope=() ;; esac
done

set -x
exec cargo test "${scope[@]}" "$@"
