#!/usr/bin/env bash
# Debian packages the test suite needs: PostgreSQL (the loom's store on a real server) and
# Chromium (the loom's browser tests). Installed only when missing; without root (or sudo) the
# tests that need them are skipped with the reason shown.
set -uo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
  echo "system-deps: ${need[*]} missing and no root to install them; their tests will be skipped" >&2
  exit 0
fi
echo "system-deps: installing ${need[*]} from Debian..." >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq "${need[@]}" >/dev/null \
  || echo "system-deps: apt-get could not install ${need[*]}; their tests will be skipped" >&2
exit 0
