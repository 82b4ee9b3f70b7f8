#!/usr/bin/env bash
# Create .venv and install labctl into it, reproducibly.
#   bash tools/bootstrap.sh          runtime only
#   bash tools/bootstrap.sh --test   runtime + test tools + system packages the tests need
# torch goes first, pinned: an unpinned torch (or a package that pulls one) would
# fetch a multi-GB CUDA build instead of the CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

# Display tests need Xvfb; the live-view browser test needs Chromium and its driver.
if [ "$want_test" = 1 ]; then
    missing=()
    for tool in Xvfb xdpyinfo chromium chromedriver; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            echo "bootstrap: installing Debian packages for the tests (missing: ${missing[*]})"
            apt-get update -qq >/dev/null
            apt-get install -y -qq xvfb x11-utils chromium chromium-driver >/dev/null
        else
            echo "bootstrap: missing ${missing[*]} and cannot apt-get them; display/browser tests will fail" >&2
        fi
    fi
fi

python3 -m venv .venv
pip=".venv/bin/pip"
quiet=(-q --disable-pip-version-check)
"$pip" install "${quiet[@]}" -c constraints.txt torch
if [ "$want_test" = 1 ]; then
    "$pip" install "${quiet[@]}" -c constraints.txt -e '.[test]'
else
    "$pip" install "${quiet[@]}" -c constraints.txt -e .
fi
