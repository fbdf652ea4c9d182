#!/usr/bin/env bash
# Create .venv and install the project into it; a no-op when the requirement files are unchanged.
# Usage: scripts/bootstrap.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
dev=0
[ "${1:-}" = "--dev" ] && dev=1

"$PYTHON" - <<'PY' || { echo "traffic needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

files="requirements.txt requirements-nodeps.txt pyproject.toml package.json package-lock.json"
[ "$dev" = 1 ] && files="$files requirements-dev.txt"
if [ "$dev" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  # Browser tests drive Debian's Chromium (no browser downloads at test time).
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing chromium for the browser tests…"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null
  else
    echo "warning: chromium is missing; browser tests will fail (apt-get install chromium)" >&2
  fi
fi
if [ "$dev" = 1 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  # The incident database's PostgreSQL tests run a private cluster of Debian's server (stack/postgres_server.py).
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing postgresql for the incident-database tests…"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  else
    echo "warning: postgresql is missing; the incident-database tests will fail (apt-get install postgresql)" >&2
  fi
fi
if [ "$dev" = 1 ] && ! { [ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1; }; then
  # The MQTT output's tests run a private broker of Debian's Mosquitto (stack/mosquitto_server.py); its TLS
  # test makes certificates with openssl.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing mosquitto for the MQTT tests…"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mosquitto openssl >/dev/null
  else
    echo "warning: mosquitto is missing; the MQTT tests will fail (apt-get install mosquitto)" >&2
  fi
fi
if [ "$dev" = 1 ] && ! command -v docker-compose >/dev/null 2>&1; then
  # tests/integration/test_compose.py validates the compose files with `docker-compose config`
  # (Debian's v1 package; no Docker engine needed, so its recommended docker.io is not installed).
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing docker-compose for the compose-file tests…"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
  else
    echo "warning: docker-compose is missing; the compose-file tests will fail (apt-get install docker-compose)" >&2
  fi
fi

stamp=".venv/.bootstrap-$(cat $files | sha1sum | cut -c1-16)-$dev"
if [ -f "$stamp" ]; then
  exit 0
fi

start=$(date +%s)
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
echo "Installing dependencies into .venv (first run: a few minutes; torch is large)…"
"${pip[@]}" install -q -r requirements.txt
"${pip[@]}" install -q --no-deps -r requirements-nodeps.txt
"${pip[@]}" install -q --no-deps --no-build-isolation -e .
if [ "$dev" = 1 ]; then
  "${pip[@]}" install -q -r requirements-dev.txt
fi
# The dashboard serves the official socket.io client from node_modules (no CDN).
if command -v npm >/dev/null 2>&1; then
  npm ci --no-audit --no-fund --loglevel=error
else
  echo "warning: npm not found; the dashboard needs it for socket.io-client (apt-get install npm)" >&2
fi
rm -f .venv/.bootstrap-*
touch "$stamp"
echo "Environment ready in $(( $(date +%s) - start )) s."
