#!/usr/bin/env bash
# The main job on a fresh machine, all against the embedded sandbox (no Medplum account needed):
# validate the examples, seed demo data, plan, apply, and plan again (which shows No changes).
set -euo pipefail
cd "$(dirname "$0")/.."
R=".venv/bin/reconciler"
export -n MEDPLUM_BASE_URL 2>/dev/null || true
unset MEDPLUM_BASE_URL
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
step reconciler validate examples/tenants
$R validate examples/tenants
step reconciler sandbox seed --reset --patients 12
$R sandbox seed --reset --patients 12
step reconciler plan examples/tenants --sandbox
$R plan examples/tenants --sandbox
step reconciler apply examples/tenants --sandbox --auto-approve
$R apply examples/tenants --sandbox --auto-approve -q
step reconciler plan examples/tenants --sandbox --detailed-exitcode
$R plan examples/tenants --sandbox --detailed-exitcode -q
step reconciler verify examples/tenants --sandbox --access
$R verify examples/tenants --sandbox --access -q
