#!/usr/bin/env bash
# promtool without a Prometheus daemon: Debian's `prometheus` package, downloaded and unpacked into .tools/ (only the
# promtool binary is kept). Needs apt (Debian/Ubuntu) and a reachable package mirror; tests fall back to parsing the
# expressions with promql-parser where it is missing. Usage: bash deploy/prometheus/get-promtool.sh [DIR]
set -euo pipefail
DIR="${1:-$(cd "$(dirname "$0")/../.." && pwd)/.tools/promtool}"
if [ -x "$DIR/usr/bin/promtool" ]; then echo "$DIR/usr/bin/promtool"; exit 0; fi
command -v apt-get >/dev/null || { echo "no apt-get here: promtool not installed (tests use promql-parser)" >&2; exit 0; }
mkdir -p "$DIR" && cd "$DIR"
if [ "$(id -u)" = 0 ]; then timeout 300 apt-get update -qq >/dev/null || true; fi
if timeout 300 apt-get download -qq -o APT::Sandbox::User=root prometheus >/dev/null 2>&1; then
  dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x -C "$DIR" ./usr/bin/promtool
  rm -f prometheus_*.deb
  echo "$DIR/usr/bin/promtool"
else
  echo "apt-get download prometheus failed: promtool not installed (tests use promql-parser)" >&2
fi
