#!/bin/bash
# mirrorcap-boot: capture with the settings in the env file (/etc/mirrorcap), now.
# Run by the user data, and safe to run by hand after changing the env file: it
# converges the running host, no reboot needed.
#  - a VNI no longer configured: its capture is stopped and disabled (then decap
#    removes its interface; its pcaps stay, under retention);
#  - decap runs again (a reload: the captures that require it keep running) and
#    makes the new VNIs' interfaces; a decap still waiting starts over;
#  - every capture that stays reads the settings again (tcpdump restarts only if
#    its command changed: an unchanged VNI captures without a gap);
#  - the target starts whatever is not running, without waiting (storage may
#    wait for its volume, decap for the metadata service).
# Everything is enabled first: whatever fails now, the next boot starts it all.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=mirrorcap-lib.sh
. "$(dirname "$(readlink -f "$0")")/../lib/mirrorcap/mirrorcap-lib.sh"
VNIS=${MIRRORCAP_VNIS:?MIRRORCAP_VNIS missing from $ENV_FILE}

units=(mirrorcap.target mirrorcap-settings.service mirrorcap-storage.service mirrorcap-decap.service mirrorcap-retention.timer
  mirrorcap-recover.path mirrorcap-recover.timer)
for vni in $VNIS; do units+=("mirrorcap-capture@$vni.service"); done

systemctl daemon-reload
mapfile -t known < <({
  systemctl list-units --all --plain --no-legend 'mirrorcap-capture@*.service' | awk '{ print $1 }'
  find /etc/systemd/system -path '*.wants/mirrorcap-capture@*.service' -printf '%f\n'
} | sort -u)
for unit in "${known[@]}"; do
  vni=${unit#mirrorcap-capture@}
  vni=${vni%.service}
  if [[ " $VNIS " != *" $vni "* ]]; then
    say "VNI $vni is no longer configured: stopping and disabling $unit (its pcaps stay, under retention)"
    systemctl disable --now --quiet "$unit"
  fi
done
# reenable: links an older version made elsewhere (WantedBy=multi-user.target) go.
systemctl reenable --quiet "${units[@]}"
case $(systemctl is-active mirrorcap-decap.service || true) in
  active) systemctl reload --no-block mirrorcap-decap.service ;;
  activating) systemctl restart --no-block mirrorcap-decap.service ;;
esac
for vni in $VNIS; do
  if [ "$(systemctl is-active "mirrorcap-capture@$vni.service" || true)" = active ]; then
    systemctl reload --no-block "mirrorcap-capture@$vni.service"
  fi
done
systemctl start --no-block mirrorcap.target
say "capturing VNI(s) $VNIS: mirrorcap-health tells when it runs"
