#!/usr/bin/env bash
# Installs what the browser tests (tests/browser.rs) need, from Debian's packages only (no
# browser download): Chromium, its ChromeDriver, and a CJK font so screenshots show the Chinese
# text. Does nothing when they are already there. .ci/run calls it.
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
if ! fc-list 2>/dev/null | grep -qiE "wenquanyi|noto (sans|serif) cjk"; then
  need+=(fonts-wqy-zenhei)
fi
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
echo "browser-setup: installing ${need[*]}" >&2
if ! $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; then
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
