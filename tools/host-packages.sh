#!/usr/bin/env bash
# The Debian packages the test suite runs for real (tcpdump, tshark and
# tcpreplay on network namespaces, xfs on loop devices, shellcheck,
# systemd-analyze, debootstrap for the boot lab, openssl for its S3 certificate): installed once, as root;
# checked in well under a second when they are there. Not root and something
# missing: one line naming it and the command that installs it, exit 1.
set -euo pipefail
PACKAGES=(tcpdump tshark wireshark-common tcpreplay shellcheck xfsprogs iproute2 util-linux mount systemd procps
          e2fsprogs jq curl debootstrap packer openssl)

command -v dpkg-query >/dev/null || { echo "make test: needs a Debian or Ubuntu machine (dpkg-query not found) with: ${PACKAGES[*]}" >&2; exit 1; }
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "make test: missing Debian packages: ${missing[*]}; install them with: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
echo "make test: installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
