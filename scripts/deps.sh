#!/bin/sh
# Checks the Debian packages moeq builds and tests with; installs them with apt-get when run
# as root, otherwise stops with the exact command to run. Usage: scripts/deps.sh [build|test|fuzz]
set -eu
what=${1:-build}
pkgs="build-essential pkg-config libopenblas-dev liblapacke-dev libzstd-dev libhdf5-dev libjansson-dev libxxhash-dev libpcre2-dev libutf8proc-dev libopenmpi-dev openmpi-bin"
case "$what" in
  test) pkgs="$pkgs hdf5-tools python3" ;;
  fuzz) pkgs="$pkgs clang libclang-rt-14-dev libomp-14-dev" ;;
esac
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "moeq: installing missing packages:$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends $missing >&2
else
  echo "moeq: missing Debian packages:$missing" >&2
  echo "moeq: run: sudo apt-get install -y$missing" >&2
  exit 1
fi
