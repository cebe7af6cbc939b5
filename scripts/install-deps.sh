#!/usr/bin/env bash
# Install the Debian packages Director needs (as root, on Debian 12). Idempotent:
# apt is only touched when at least one package of the list is missing.
set -euo pipefail

# One package per word; later work may append to this list.
DIRECTOR_APT_PACKAGES="docker.io nginx redis-server pebble postgresql mariadb-server mariadb-client
debootstrap openssh-client sshpass expect wrk tmux zstd ca-certificates curl iproute2 procps
chromium rsync git iptables systemd restic util-linux"
# The dashboard's front end builds with Node.js and npm. The machine image has Node 20 (with
# npm); elsewhere, Debian's packages do (esbuild needs Node 18 or later).
if ! command -v npm >/dev/null 2>&1; then
    DIRECTOR_APT_PACKAGES="$DIRECTOR_APT_PACKAGES nodejs npm"
fi

export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: must run as root" >&2
    exit 1
fi

missing=()
for pkg in $DIRECTOR_APT_PACKAGES; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    if [ "$status" != "install ok installed" ]; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-deps: all $(echo $DIRECTOR_APT_PACKAGES | wc -w) packages already installed"
    exit 0
fi

apt-get update -qq
# shellcheck disable=SC2086  # word splitting of the list is intended
apt-get install -y -qq --no-install-recommends $DIRECTOR_APT_PACKAGES
echo "install-deps: installed missing packages: ${missing[*]}"
