#!/bin/sh
# azd preprovision hook: the decisions are in preprovision.py (tested in tests/unit/test_preprovision.py).
set -eu
here=$(dirname "$0")
if command -v python3 >/dev/null 2>&1; then
    exec python3 "$here/preprovision.py"
fi
echo "preprovision: python3 is needed (it decides whether Key Vault already holds the secret key)" >&2
exit 1
