#!/usr/bin/env bash
# Prometheus, promtool and Alertmanager without a daemon install: Debian's `prometheus` (2.42: prometheus, promtool)
# and `prometheus-alertmanager` (0.25) packages, downloaded and unpacked into .tools/prometheus/usr/bin/. Needs apt
# (Debian/Ubuntu) and a reachable package mirror. `stocktrend monitoring` runs the two servers; the alert-rule tests
# use promtool (they fall back to parsing the expressions with promql-parser where it is missing), the live-stack test
# needs all three. Usage: bash deploy/prometheus/get-prometheus.sh [DIR]; prints where the binaries are.
set -euo pipefail
DIR="${1:-$(cd "$(dirname "$0")/../.." && pwd)/.tools/prometheus}"
BIN="$DIR/usr/bin"
if [ -x "$BIN/promtool" ] && [ -x "$BIN/prometheus" ] && [ -x "$BIN/prometheus-alertmanager" ] && \
   [ -f /usr/share/prometheus/alertmanager/default.tmpl ] && [ -f /usr/share/prometheus/alertmanager/email.tmpl ]; then
  echo "$BIN"; exit 0
fi
command -v apt-get >/dev/null || { echo "no apt-get here: Prometheus not installed" >&2; exit 0; }
mkdir -p "$DIR" && cd "$DIR"
if [ "$(id -u)" = 0 ]; then timeout 300 apt-get update -qq >/dev/null || true; fi
for pkg in prometheus prometheus-alertmanager; do
  if timeout 300 apt-get download -qq -o APT::Sandbox::User=root "$pkg" >/dev/null 2>&1; then
    case "$pkg" in
      prometheus) dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x -C "$DIR" ./usr/bin/promtool ./usr/bin/prometheus ;;
      *) dpkg-deb --fsys-tarfile "$pkg"_*.deb | tar -x -C "$DIR" ./usr/bin/prometheus-alertmanager \
           ./usr/share/prometheus/alertmanager/default.tmpl ./usr/share/prometheus/alertmanager/email.tmpl ;;
    esac
    rm -f "$pkg"_*.deb
  else
    echo "apt-get download $pkg failed: not installed" >&2
  fi
done
# Debian's Alertmanager reads its notification templates from this fixed folder (no flag changes it).
TMPL=/usr/share/prometheus/alertmanager
for t in default.tmpl email.tmpl; do
  if [ ! -f "$TMPL/$t" ] && [ -f "$DIR$TMPL/$t" ]; then
    if mkdir -p "$TMPL" 2>/dev/null && cp "$DIR$TMPL/$t" "$TMPL/$t" 2>/dev/null; then
      echo "installed Alertmanager's template $TMPL/$t" >&2
    else
      echo "Alertmanager needs $TMPL/$t: copy $DIR$TMPL/$t there (as root)" >&2
    fi
  fi
done
echo "$BIN"
