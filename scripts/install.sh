#!/usr/bin/env bash
# Install what the local stack and the tests need, and nothing that is already there.
#
#   scripts/install.sh            # apt packages, Azurite (npm, project-local), Python packages
#
# The browser tests (tests/browser) drive Debian's Chromium (/usr/bin/chromium) with the Python
# `playwright` package; Playwright's own browser download (`playwright install`) is never run.
#
# Safe to run again and again (`make up` and `make test` run it every time): each step first checks
# whether its part is present and only then installs. On a clean Debian 12 machine (CI) it installs
# everything; on a prepared one it prints a few "ok" lines and takes about a second.
#
# Environment:
#   PYTHON           the Python to install into (default python3)
#   AZURITE_PREFIX   npm prefix Azurite is installed under (default <project>/.stack/node);
#                    scripts/stack.py (scripts/local_stack/azurite.py) looks for it there
#   AZURITE_VERSION  npm version spec (default 3.35.0: the last 3.x whose engines allow Node.js 20,
#                    which is what Debian 12 / these machines have; 3.36+ want Node.js >= 21)
set -euo pipefail

PROJECT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
AZURITE_PREFIX="${AZURITE_PREFIX:-$PROJECT/.stack/node}"
AZURITE_VERSION="${AZURITE_VERSION:-3.35.0}"
# The pip stamp lives with the tools, not in STACK_DIR: it describes this project's environment.
STAMP_DIR="$PROJECT/.stack/install"

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: ERROR: %s\n' "$*" >&2; exit 1; }

# Run a noisy command quietly; show its output only when it fails.
quiet() {
    local log
    log="$(mktemp)"
    if ! "$@" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo); fi

# --- apt -------------------------------------------------------------------------------------
# Debian package -> a command it provides (dpkg is the real check; the command catches packages
# installed some other way).
declare -A APT_CMD=(
    [docker-registry]=docker-registry
    [buildah]=buildah
    [busybox-static]=busybox
    [skopeo]=skopeo
    [openssl]=openssl
    [git]=git
    # htpasswd: the local stack's authenticated registry wants bcrypt entries (htpasswd -B).
    [apache2-utils]=htpasswd
    [chromium]=chromium
)
missing=()
for pkg in docker-registry buildah busybox-static skopeo openssl git apache2-utils chromium; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' \
        && ! command -v "${APT_CMD[$pkg]}" >/dev/null 2>&1; then
        missing+=("$pkg")
    fi
done
# Azurite needs Node.js and npm; these machines ship them, a bare Debian does not.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    say "installing ${missing[*]} (apt)…"
    export DEBIAN_FRONTEND=noninteractive
    # One `apt-get update` first: on a fresh machine the package lists are empty.
    quiet "${SUDO[@]}" apt-get update -qq || die "apt-get update failed"
    quiet "${SUDO[@]}" apt-get install -y -qq "${missing[@]}" || die "apt-get install ${missing[*]} failed"
    # docker-registry's package may start a system registry on :5000 (where no policy-rc.d stops it),
    # which would take the port our own registry wants. Stop that one, by its own init script.
    if [[ " ${missing[*]} " == *" docker-registry "* ]] && [ -f /run/docker-registry.pid ] \
        && kill -0 "$(cat /run/docker-registry.pid)" 2>/dev/null; then
        say "stopping the system docker-registry service the package started (it would hold :5000)"
        "${SUDO[@]}" /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
    fi
else
    say "apt packages: ok (docker-registry buildah busybox-static skopeo openssl git apache2-utils chromium node npm)"
fi

# --- Azurite (npm, project-local) --------------------------------------------------------------
if [ -x "$AZURITE_PREFIX/node_modules/.bin/azurite" ]; then
    say "azurite: ok ($(node -p "require('$AZURITE_PREFIX/node_modules/azurite/package.json').version" \
        2>/dev/null || echo '?') in ${AZURITE_PREFIX#"$PROJECT"/})"
else
    say "installing azurite@$AZURITE_VERSION (npm) into ${AZURITE_PREFIX#"$PROJECT"/}…"
    mkdir -p "$AZURITE_PREFIX"
    quiet npm install --prefix "$AZURITE_PREFIX" --no-audit --no-fund --loglevel=error \
        "azurite@$AZURITE_VERSION" || die "npm install azurite@$AZURITE_VERSION failed"
    [ -x "$AZURITE_PREFIX/node_modules/.bin/azurite" ] || die "azurite not found after npm install"
fi

# --- Python packages ---------------------------------------------------------------------------
# `pip install -e .` builds an editable wheel in an isolated environment every time (seconds, and
# index look-ups), so it runs only when the inputs changed: a stamp holds their hash.
mkdir -p "$STAMP_DIR"
inputs_hash="$(
    {
        "$PYTHON" -c 'import sys; print(sys.executable, sys.version)'
        cat "$PROJECT/pyproject.toml" "$PROJECT/requirements.txt" "$PROJECT/requirements-dev.txt"
    } | sha256sum | cut -d' ' -f1
)"
stamp="$STAMP_DIR/pip.sha256"
# Installed, and editable from *this* checkout (another clone's `pip install -e .` re-points it).
installed_here() {
    # -I: not from the project folder, where setuptools leaves a basetrigger.egg-info behind.
    "$PYTHON" -I - "$PROJECT" >/dev/null 2>&1 <<'PY'
import importlib.metadata as m, json, pathlib, sys
url = json.loads(m.distribution("basetrigger").read_text("direct_url.json") or "{}").get("url", "")
sys.exit(0 if url == pathlib.Path(sys.argv[1]).as_uri() else 1)
PY
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs_hash" ] && installed_here; then
    say "python packages: ok"
else
    say "installing python packages (pip: -e . and requirements-dev.txt)…"
    cd "$PROJECT"
    if quiet "$PYTHON" -m pip install -q -e . -r requirements-dev.txt; then
        echo "$inputs_hash" >"$stamp"
    else
        # The editable install fails while pyproject.toml names a package folder nobody has
        # written yet. Install the dependencies anyway so the tests can run (they run from the
        # project root, which puts the packages on sys.path); no stamp, so the next run retries.
        say "WARNING: 'pip install -e .' failed (output above); installed requirements only"
        quiet "$PYTHON" -m pip install -q -r requirements.txt -r requirements-dev.txt \
            || die "pip install -r requirements.txt -r requirements-dev.txt failed"
    fi
fi

say "done"
