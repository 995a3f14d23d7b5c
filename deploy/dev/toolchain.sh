#!/usr/bin/env bash
# Makes the toolchain pinned in rust-toolchain.toml available without a download: when rustup
# lacks it but the installed stable toolchain is that very version, links it under the pinned
# name (a symbolic link in rustup's toolchains folder, as rustup's own install would name it:
# `rustup toolchain link` refuses names of official releases such as 1.95.0). Otherwise leaves everything as it is (rustup then installs
# the pinned toolchain itself where it can download). Without rustup, does nothing.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
pinned="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$repo/rust-toolchain.toml")"
command -v rustup >/dev/null 2>&1 || exit 0
if rustup toolchain list | grep -q "^$pinned-"; then
  exit 0
fi
stable="$(rustc +stable --version 2>/dev/null | awk '{print $2}' || true)"
if [ "$stable" = "$pinned" ]; then
  host="$(rustc +stable -vV | sed -n 's/^host: //p')"
  ln -s "$(rustc +stable --print sysroot)" "${RUSTUP_HOME:-$HOME/.rustup}/toolchains/$pinned-$host"
  echo "linked the installed stable toolchain ($stable) as $pinned"
else
  echo "toolchain $pinned (rust-toolchain.toml) is not installed and stable is ${stable:-missing}: rustup will try to install it" >&2
fi
