#!/usr/bin/env bash
# Debian's Chromium, which the pxpool browser test (tests/integration/test_panel_browser.py)
# drives headless through Playwright.
#   infra/chromium.sh check   headless Chromium runs a page's JavaScript and prints its DOM
# There is nothing to start: the test starts its own browser.
set -euo pipefail

INFRA_DIR="${PXPOOL_INFRA_DIR:-/tmp/pxpool-infra}"
STATE="$INFRA_DIR/chromium"
LOG="$STATE/check.log"
# The path the browser test launches.
CHROMIUM="${PXPOOL_INFRA_CHROMIUM:-/usr/bin/chromium}"

log() { echo "infra: chromium: $*" >&2; }
die() {
    echo "infra: chromium: ERROR: $*" >&2
    if [[ -s "$LOG" ]]; then
        echo "infra: chromium: last lines of $LOG:" >&2
        tail -n 15 "$LOG" >&2 || true
    fi
    exit 1
}

cmd_check() {
    mkdir -p "$STATE"
    : >"$LOG"
    [[ -x "$CHROMIUM" ]] || die "$CHROMIUM not found; infra/install.sh installs Debian's chromium"
    local profile="$STATE/profile"
    rm -rf "$profile"
    log "$CHROMIUM --headless --dump-dom of a page whose script writes the answer"
    local dom
    dom="$(timeout 60 "$CHROMIUM" --headless --no-sandbox --disable-gpu \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$profile" \
        --dump-dom "data:text/html,<script>document.write('pxpool-chromium-' + 6 * 7)</script>" \
        2>>"$LOG")" || die "headless Chromium failed or timed out after 60s (exit $?)"
    rm -rf "$profile"
    echo "$dom" >>"$LOG"
    [[ "$dom" == *pxpool-chromium-42* ]] ||
        die "headless Chromium did not run the page's script (no pxpool-chromium-42 in its DOM)"
    log "ok ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))"
}

case "${1:-}" in
check) cmd_check ;;
*)
    echo "usage: $0 check" >&2
    exit 2
    ;;
esac
