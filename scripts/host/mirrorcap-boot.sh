#!/bin/bash
# mirrorcap-boot: start capturing with the settings in /etc/mirrorcap/mirrorcap.env.
# Run by the user data on the first boot (the units it enables start by
# themselves on every later boot) and safe to run by hand after changing the
# env file: enables the units for the configured VNIs, and disables capture
# units of VNIs no longer configured.
set -euo pipefail
ENV_FILE=/etc/mirrorcap/mirrorcap.env
# shellcheck source=/dev/null
. "$ENV_FILE"
VNIS=${MIRRORCAP_VNIS:?MIRRORCAP_VNIS missing from $ENV_FILE}

units=(mirrorcap-storage.service mirrorcap-decap.service mirrorcap-retention.timer)
for vni in $VNIS; do units+=("mirrorcap-capture@$vni.service"); done

systemctl daemon-reload
for unit in $(systemctl list-units --all --plain --no-legend 'mirrorcap-capture@*.service' | awk '{ print $1 }'); do
  vni=${unit#mirrorcap-capture@}; vni=${vni%.service}
  if ! grep -qw -- "$vni" <<<"$VNIS"; then
    echo "mirrorcap-boot: VNI $vni is no longer configured: stopping $unit"
    systemctl disable --now "$unit"
  fi
done
# Enabled before anything starts: whatever fails now, the next boot starts them all.
systemctl enable "${units[@]}"
# --no-block: storage waits (up to 5 minutes) for the volume Terraform attaches
# after the instance starts; each capture unit starts once storage and decap
# have succeeded (its Requires= and After=), or fails with them.
systemctl start --no-block "${units[@]}"
echo "mirrorcap-boot: starting capture of VNI(s) $VNIS: mirrorcap-health tells when it runs"
