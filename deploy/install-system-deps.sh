#!/usr/bin/env bash
# Install the Debian packages the explorer and its tests use (idempotent).
#
#   chromium          headless browser for the explorer's browser tests (Playwright
#                     drives Debian's /usr/bin/chromium; never `playwright install`)
#   fonts-wqy-microhei  the CJK font embedded in verification-report PDFs
#   poppler-utils     pdftotext, used by the tests to read the PDFs' Chinese text
#
# Runs `apt-get update` at most once, and only if something is missing. Must run as
# root (CI and the development machines run as root); as another user it explains and
# exits 1 without changing anything.
set -euo pipefail

PACKAGES=(chromium fonts-wqy-microhei poppler-utils)

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-system-deps: all present (${PACKAGES[*]})"
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
    echo "install-system-deps: missing ${missing[*]}; run this script as root" >&2
    exit 1
fi

echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-system-deps: done"
