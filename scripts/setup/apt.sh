#!/usr/bin/env bash
# Install the Debian packages listed in apt-packages.txt that are not installed yet.
# Idempotent: when everything is present it only runs dpkg-query (well under a second).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mapfile -t wanted < <(grep -Ev '^\s*(#|$)' "$here/apt-packages.txt")
missing=()
for pkg in "${wanted[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then
  echo "setup: debian packages present (${#wanted[@]})"
  exit 0
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
echo "setup: installing debian packages: ${missing[*]}"
# Never let the packages start their own daemons: the local stack runs its own on chosen ports.
policy=/usr/sbin/policy-rc.d
restore_policy=false
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  restore_policy=true
fi
trap '$restore_policy && $sudo rm -f "$policy"' EXIT
daemons=(redis-server prometheus prometheus-alertmanager sshd)
# pgrep matches the kernel's process name, which is cut at 15 characters (and warns about a
# longer pattern), so match the cut names.
daemon_pids() {
  local names=() name
  for name in "${daemons[@]}"; do names+=("${name:0:15}"); done
  pgrep -x "$(IFS='|'; echo "${names[*]}")" || true
}
before=$(daemon_pids)
# The packages' maintainer scripts chatter on stderr (debconf, their own pgrep warnings): keep
# it in a log and show it only when the install fails.
log=$(mktemp)
trap '$restore_policy && $sudo rm -f "$policy"; rm -f "$log"' EXIT
if ! { $sudo apt-get update -qq &&
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "setup: installing debian packages failed (output above)" >&2
  exit 1
fi
# Some postinst scripts start daemons even with policy-rc.d on non-systemd hosts: stop the
# ones this install started (never ones that were already running).
for pid in $(daemon_pids); do
  grep -qx "$pid" <<<"$before" || $sudo kill "$pid" 2>/dev/null || true
done
echo "setup: debian packages installed"
