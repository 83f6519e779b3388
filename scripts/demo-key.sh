#!/usr/bin/env bash
# Creates (once) a demo partner, workspace and data import key on a running platform, and prints how to use them.
# The partner API key and client secret are shown once by KeyService, so they are kept in .local/demo.txt.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="$HOME_DIR/demo.txt"
if [ -s "$out" ]; then
  # Keep the saved key only while it still works (the data may have been removed since it was made).
  saved_key=$(grep -m1 'partner_api_key ' "$out" | awk '{print $2}')
  saved_secret=$(grep -m1 'client_secret ' "$out" | awk '{print $2}')
  status=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' http://127.0.0.1:5080/partners/demo/cohorts/users \
    -d "{\"partner_api_key\":\"$saved_key\",\"client_secret\":\"$saved_secret\",\"cohort_id\":\"demo\",\"cohort_changes\":[]}")
  [ "$status" = 202 ] && exit 0
  rm -f "$out"
fi
keys=http://127.0.0.1:5081
auth=(-H "Authorization: Bearer $ADMIN_TOKEN" -H "Content-Type: application/json")
json() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

partner_key=$(curl -fsS "${auth[@]}" -d '{"partner":"demo","display_name":"Demo partner"}' "$keys/admin/partners" | json partner_api_key)
curl -fsS "${auth[@]}" -d '{"workspace_id":"demo","name":"Demo workspace"}' "$keys/admin/workspaces" >/dev/null
secret=$(curl -fsS "${auth[@]}" -X POST "$keys/admin/workspaces/demo/partners/demo/import-keys" | json client_secret)
cat > "$out" <<DEMO
  Demo partner    partner=demo workspace=demo
    partner_api_key  $partner_key
    client_secret    $secret
    try: curl -s -H 'Content-Type: application/json' http://127.0.0.1:5080/partners/demo/cohorts/users \\
           -d '{"partner_api_key":"$partner_key","client_secret":"$secret","cohort_id":"spring","cohort_changes":[]}'
DEMO
chmod 600 "$out"
