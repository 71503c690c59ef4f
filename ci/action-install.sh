#!/usr/bin/env bash
# The composite action's install step: the tool from the action's own checkout (the pinned
# commit), once per job — later steps of the same job find it installed.
set -euo pipefail
if [ "${RECONCILER_INSTALLED_FROM:-}" = "$ACTION_PATH" ] && command -v reconciler >/dev/null; then
  exit 0
fi
python -m pip install --disable-pip-version-check --quiet "$ACTION_PATH"
echo "RECONCILER_INSTALLED_FROM=$ACTION_PATH" >> "$GITHUB_ENV"
reconciler --version
