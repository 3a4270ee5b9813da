#!/usr/bin/env bash
# Render the wave-deploy HTML index for DIR... and screenshot it with headless Chromium, with name
# resolution disabled: a page that needed anything from the network would show broken images.
# Not part of the test suite (CI has no browser); see docs/reports.md.
#
#   scripts/screenshot_report.sh OUT.png DIR...          e.g. scripts/screenshot_report.sh index.png artifacts/*
#
# Environment: WAVE_DEPLOY (default: wave-deploy), CHROMIUM (default: chromium on PATH),
# HEIGHT (window height in px, default 1000; width is 1400), KEEP_HTML=path to keep the rendered page.
set -euo pipefail

if [ "$#" -lt 2 ]; then
    echo "usage: $0 OUT.png DIR..." >&2
    exit 2
fi
out=$(realpath -m "$1")
shift
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}
if [ -z "$browser" ]; then
    echo "error: no Chromium found (Debian/Ubuntu: apt-get install -y chromium)" >&2
    exit 4
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

${WAVE_DEPLOY:-wave-deploy} -q report "$@" --html "$work/index.html"
if [ -n "${KEEP_HTML:-}" ]; then
    cp "$work/index.html" "$KEEP_HTML"
fi

mkdir -p "$(dirname "$out")"
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --user-data-dir="$work/profile" \
    --host-resolver-rules="MAP * ~NOTFOUND" \
    --hide-scrollbars --screenshot="$out" --window-size="1400,${HEIGHT:-1000}" \
    "file://$work/index.html" 2>"$work/chromium.log" || {
    cat "$work/chromium.log" >&2
    exit 6
}
if [ ! -s "$out" ]; then
    cat "$work/chromium.log" >&2
    echo "error: Chromium wrote no screenshot" >&2
    exit 6
fi
echo "screenshot: $out"
