#!/bin/sh
# test_page.sh — the chat page (server/page.html) in headless Chromium against a
# real `edgeseek serve` on loopback with the default model: tests/page_test.cjs
# (playwright-core from tests/node_deps, which .ci/run installs, as does this
# script when npm is there) asks questions on the page, reads the answers from it
# and saves a screenshot as $ES_BUILD/page_chat.png.  Without server support in
# the build, node, Chromium (Debian: chromium) or playwright-core, the test is
# counted as skipped.
cd "$(dirname "$0")/.." || exit 1
B=${ES_BUILD:-build}
skip() { echo "SKIP $*"; echo "0 passed, 0 failed, 1 skipped"; exit 0; }
timeout 20 "$B/edgeseek" serve -m models/edgeseek-default.gguf --port 1 2>&1 | grep -q "no server support" &&
    skip "this build has no server support (libcivetweb-dev, libcjson-dev)"
command -v node >/dev/null 2>&1 || skip "node is not installed (Debian: nodejs)"
CHROMIUM=${ES_CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] || skip "$CHROMIUM is not installed (Debian: chromium)"
DEPS=${ES_NODE_DEPS:-tests/node_deps}
if [ ! -d "$DEPS/node_modules/playwright-core" ] && command -v npm >/dev/null 2>&1; then
    # with the server test's client, so that neither install removes the other
    timeout 120 npm install --prefix "$DEPS" --no-save --no-package-lock --no-audit --no-fund \
        openai@4 playwright-core@1 >/dev/null 2>&1 || echo "(npm could not install playwright-core)"
fi
ES_CHROMIUM=$CHROMIUM exec timeout 330 node tests/page_test.cjs "$B/edgeseek" models/edgeseek-default.gguf \
    "$B/page_chat.png"
