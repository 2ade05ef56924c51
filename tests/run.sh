#!/usr/bin/env bash
# One command for a fresh Debian/Ubuntu machine with Python 3.11+: set up everything, then
#   tests/run.sh            run the whole test suite (extra arguments go to pytest)
#   tests/run.sh demo       run `jackpot-maint demo` (extra arguments go to it)
# Set-up: a virtualenv in .venv with the project and its test dependencies, and the PostgreSQL
# server binaries (installed with apt-get when root on Debian/Ubuntu, else it says what to install).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: Python 3.11 or newer is required (found: $("$python" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 2
fi

have_pg_binaries() {
  [ -n "${PG_BINDIR:-}" ] && [ -x "$PG_BINDIR/initdb" ] && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && return 0
  command -v initdb >/dev/null && command -v pg_ctl >/dev/null
}

if ! have_pg_binaries; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing the PostgreSQL server binaries (apt-get install postgresql)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  else
    echo "error: the PostgreSQL server binaries (initdb, pg_ctl) are missing." >&2
    echo "  Debian/Ubuntu: sudo apt-get install postgresql   (or set PG_BINDIR to their directory)" >&2
    exit 2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[test]"
  rm -f .venv/.installed-* && touch "$stamp"
fi

if [ "${1:-}" = demo ]; then
  shift
  exec .venv/bin/jackpot-maint demo "$@"
fi
exec .venv/bin/python -m pytest "$@"
