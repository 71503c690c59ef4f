#!/usr/bin/env bash
# The main job on a fresh machine: validate the example manifests (plan/apply join as they land).
set -euo pipefail
cd "$(dirname "$0")/.."
R=.venv/bin/reconciler
$R validate examples/tenants
