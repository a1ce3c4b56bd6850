#!/bin/sh
# Print the path of a Python >= 3.12 that actually runs (Django 6.1 needs it), or fail saying what to do.
# pyenv shims answer "command not found" unless a version is selected, so pyenv versions are tried by path.
ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }
for c in "${PYTHON:-}" python3.14 python3.13 python3.12 python3 /usr/bin/python3.13 /usr/bin/python3.12; do
  [ -n "$c" ] || continue
  p=$(command -v "$c" 2>/dev/null) || continue
  if ok "$p"; then
    # a pyenv shim that runs resolves to the real interpreter
    "$p" -c 'import sys; print(sys.executable)'; exit 0
  fi
done
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root)
  for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.[0-9]+\.[0-9]+$' | sort -t. -k1,1nr -k2,2nr -k3,3nr); do
    p="$root/versions/$v/bin/python3"
    if [ -x "$p" ] && ok "$p"; then echo "$p"; exit 0; fi
  done
fi
echo "No Python 3.12 or newer found. Install one (e.g. apt-get install python3.13, or pyenv install 3.13) or set PYTHON=/path/to/python3.12+." >&2
exit 1
