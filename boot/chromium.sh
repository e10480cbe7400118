#!/usr/bin/env bash
# A headless Chromium for the browser tests (tracker, dashboard), from Debian's/Ubuntu's own
# package: Playwright drives it through `executable_path` (Playwright's browser download is not
# used, and is not reachable on every machine).
#
#   boot/chromium.sh install   # install the `chromium` package when no Chromium is found
#   boot/chromium.sh path      # print the Chromium executable the tests will use
#
# CHROMIUM_PATH (environment) names an executable to use instead. Where nothing can be installed
# (not Debian/Ubuntu, no root and no sudo), `install` says so and exits 0: the browser tests then
# skip with that reason, and everything else still runs.
set -euo pipefail

say() { printf '[chromium] %s\n' "$*" >&2; }

find_chromium() {
  local c
  for c in "${CHROMIUM_PATH:-}" chromium chromium-browser google-chrome-stable google-chrome; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1; then command -v "$c"; return 0; fi
  done
  return 1
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo "$@"
  else return 1; fi
}

install() {
  if find_chromium >/dev/null; then return 0; fi
  if [ "$(uname -s)" != "Linux" ] || ! command -v apt-get >/dev/null 2>&1; then
    say "not installed: this script installs Chromium with apt (Debian/Ubuntu) only; set"
    say "CHROMIUM_PATH to a Chromium executable to run the browser tests (they skip meanwhile)"
    return 0
  fi
  if ! as_root true; then
    say "not installed: installing the 'chromium' package needs root or password-less sudo;"
    say "run 'sudo apt-get install chromium' once (the browser tests skip meanwhile)"
    return 0
  fi
  say "installing system package: chromium (needed to run the browser tests)"
  as_root apt-get update -qq
  # Debian ships `chromium`; Ubuntu's is `chromium-browser` (a snap wrapper on recent releases).
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium-browser >/dev/null \
    || { say "apt could not install chromium (the browser tests skip)"; return 0; }
  find_chromium >/dev/null || say "chromium was installed but no executable was found on PATH"
}

case "${1:-install}" in
  install) install ;;
  path) find_chromium ;;
  *) echo "usage: $0 install|path" >&2; exit 2 ;;
esac
