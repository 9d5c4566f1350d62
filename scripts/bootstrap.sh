# Sourced by scripts/test and scripts/dwasm (not run on its own).
#
# Makes sure <repo>/.venv exists and holds an editable install of dwasm with its test extras, so
# that a fresh clone on any Linux machine with Python >= 3.11 needs no manual setup. The install
# is redone only when pyproject.toml (or the interpreter) changed, tracked by a stamp file, which
# keeps repeated runs fast. Progress messages go to stderr so that stdout stays the program's.

DWASM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DWASM_VENV="${DWASM_VENV:-$DWASM_ROOT/.venv}"
DWASM_VENV_PY="$DWASM_VENV/bin/python"

_dwasm_say() { echo "dwasm-bootstrap: $*" >&2; }

# Prints the first interpreter that is Python >= 3.11 ($PYTHON if set, else the newest found).
_dwasm_find_python() {
    local candidates
    if [ -n "${PYTHON:-}" ]; then
        candidates="$PYTHON"
    else
        candidates="python3.13 python3.12 python3.11 python3"
    fi
    local py
    for py in $candidates; do
        if command -v "$py" >/dev/null 2>&1 &&
            "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            command -v "$py"
            return 0
        fi
    done
    return 1
}

_dwasm_make_venv() {
    local py
    if ! py="$(_dwasm_find_python)"; then
        _dwasm_say "error: need Python >= 3.11 (tried: ${PYTHON:-python3.13 python3.12 python3.11 python3})."
        _dwasm_say "Install it (Debian/Ubuntu: apt-get install python3 python3-venv) or set PYTHON=/path/to/python3.11."
        return 1
    fi
    if ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
        _dwasm_say "error: $py has no working 'venv'/'ensurepip' module."
        _dwasm_say "On Debian/Ubuntu install it with: apt-get install python3-venv  (or python3.X-venv for your version)."
        return 1
    fi
    _dwasm_say "creating $DWASM_VENV with $py ($("$py" --version 2>&1))"
    rm -rf "$DWASM_VENV"
    "$py" -m venv "$DWASM_VENV"
}

# The stamp records what the current install was made from.
_dwasm_stamp_value() {
    {
        cat "$DWASM_ROOT/pyproject.toml"
        "$DWASM_VENV_PY" -c 'import sys; print(sys.version)'
    } | sha256sum | cut -d' ' -f1
}

_dwasm_bootstrap() {
    if [ ! -x "$DWASM_VENV_PY" ] || ! "$DWASM_VENV_PY" -c 'import sys' 2>/dev/null; then
        _dwasm_make_venv || return 1
    fi
    local stamp="$DWASM_VENV/.dwasm-install-stamp"
    local want
    want="$(_dwasm_stamp_value)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        _dwasm_say "installing dwasm and its test tools into $DWASM_VENV (pip install -e '.[test]')"
        if ! "$DWASM_VENV_PY" -m pip install --quiet --disable-pip-version-check \
            -e "$DWASM_ROOT[test]" >&2; then
            _dwasm_say "error: pip install failed (see above). Delete $DWASM_VENV to start over."
            return 1
        fi
        echo "$want" >"$stamp"
    fi
}

# Two scripts started at once in a fresh clone must not build the venv twice.
dwasm_bootstrap() {
    mkdir -p "$(dirname "$DWASM_VENV")"
    if command -v flock >/dev/null 2>&1; then
        (
            flock 9
            _dwasm_bootstrap
        ) 9>"$DWASM_VENV.lock"
    else
        _dwasm_bootstrap
    fi
}

# The console's browser test drives Debian's chromium through Playwright (which never downloads
# a browser here). Installed with apt when missing and we are root (or have password-less sudo);
# otherwise the test skips with its reason, or fails under DWASM_REQUIRE_BROWSER=1.
dwasm_ensure_chromium() {
    if command -v chromium >/dev/null 2>&1 || [ "${DWASM_SKIP_BROWSER_INSTALL:-0}" = 1 ]; then
        return 0
    fi
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo="sudo -n"
        else
            _dwasm_say "chromium is not installed and apt needs root: the browser test will skip"
            return 0
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        _dwasm_say "chromium is not installed and there is no apt-get: the browser test will skip"
        return 0
    fi
    _dwasm_say "installing chromium with apt-get for the console's browser test"
    local pkgs=(chromium fonts-dejavu-core)
    export DEBIAN_FRONTEND=noninteractive
    if ! $sudo apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1; then
        $sudo apt-get update -q >/dev/null 2>&1 || true
        $sudo apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null ||
            _dwasm_say "warning: apt-get could not install chromium: the browser test will skip"
    fi
}
