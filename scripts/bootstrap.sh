#!/bin/sh
# Create .venv and install the pinned packages and the front end; each step runs only when its inputs changed.
#   scripts/bootstrap.sh base|test
set -eu
cd "$(dirname "$0")/.."
kind=${1:-base}
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
  py=$(sh scripts/find_python.sh)
  echo "Creating .venv with $py"
  rm -rf .venv
  "$py" -m venv .venv
  rm -f .venv/.installed-*
fi
stamp=.venv/.installed-$kind
if [ ! -f "$stamp" ] || [ requirements/base.txt -nt "$stamp" ] || [ "requirements/$kind.txt" -nt "$stamp" ]; then
  echo "Installing Python packages (requirements/$kind.txt)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "requirements/$kind.txt"
  touch "$stamp"
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "npm is missing: installing Debian's nodejs and npm"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
if [ ! -f node_modules/.installed ] || [ package-lock.json -nt node_modules/.installed ]; then
  echo "Installing front-end packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
  touch node_modules/.installed
fi
if [ ! -f static/css/app.css ] || [ -n "$(find assets -newer static/css/app.css -type f | head -n 1)" ] \
   || [ node_modules/.installed -nt static/css/app.css ]; then
  echo "Building static files (Sass)"
  sh scripts/build_static.sh
fi
