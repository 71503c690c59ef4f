#!/usr/bin/env bash
# The composite action's run step: one reconciler command from the action's inputs (passed in
# the environment, never pasted into this script). Exit 0 and, with detailed-exitcode, 2 are
# outputs; anything else fails the step. A job summary only ever gets redacted markdown.
set -euo pipefail
read -r -a command <<< "$INPUT_COMMAND"
read -r -a manifests <<< "$INPUT_MANIFESTS"
read -r -a extra <<< "$INPUT_ARGS"
if [ "${#command[@]}" -eq 0 ]; then
  echo "::error::the action needs a command (validate, plan, show, apply, verify, diff, ...)"
  exit 1
fi
if [ "$INPUT_SUMMARY" = "true" ] && [ "$INPUT_REDACT" != "true" ]; then
  echo "::error::summary: true needs redact: true (job summaries are kept 90 days and readable by anyone who can read the repository)"
  exit 1
fi
args=("${command[@]}")
case "${command[0]}" in
  plan)
    args+=("${manifests[@]}")
    if [ -n "$INPUT_PLAN_FILE" ]; then args+=(--out "$INPUT_PLAN_FILE"); fi ;;
  show)
    args+=("$INPUT_PLAN_FILE") ;;
  apply)
    if [ -n "$INPUT_PLAN_FILE" ]; then args+=("$INPUT_PLAN_FILE"); else args+=("${manifests[@]}"); fi ;;
  validate | verify | diff | import | report)
    args+=("${manifests[@]}") ;;
esac
if [ "$INPUT_REDACT" = "true" ]; then args+=(--redact); fi
if [ "$INPUT_DETAILED_EXITCODE" = "true" ]; then
  case "${command[0]}" in
    plan | verify | diff | report) args+=(--detailed-exitcode) ;;
    *) echo "::error::detailed-exitcode goes with plan, verify, diff or report"; exit 1 ;;
  esac
fi
markdown=false
saved_plan=false
if [ "${command[0]}" = "plan" ] && [ -n "$INPUT_PLAN_FILE" ]; then saved_plan=true; fi
if [ "$INPUT_SUMMARY" = "true" ] && [ "$saved_plan" = "false" ]; then
  case "${command[0]}" in
    plan | show | verify | diff | history) args+=(--format markdown); markdown=true ;;
  esac
fi
args+=("${extra[@]}")
out="${INPUT_OUTPUT:-$RUNNER_TEMP/reconciler-stdout-$$}"
set +e
reconciler "${args[@]}" > "$out"
code=$?
set -e
if [ "$markdown" = "true" ]; then cat "$out" >> "$GITHUB_STEP_SUMMARY"; fi
if [ -z "$INPUT_OUTPUT" ]; then cat "$out"; rm -f "$out"; fi
# A saved plan: the log got its counts; the summary gets the whole plan, redacted — what the
# reviewers approve.
if [ "$INPUT_SUMMARY" = "true" ] && [ "$saved_plan" = "true" ] && [ -f "$INPUT_PLAN_FILE" ]; then
  reconciler show "$INPUT_PLAN_FILE" --redact --format markdown >> "$GITHUB_STEP_SUMMARY"
fi
echo "exit-code=$code" >> "$GITHUB_OUTPUT"
if [ "$code" -eq 2 ] && [ "$INPUT_DETAILED_EXITCODE" = "true" ]; then
  echo "changes=true" >> "$GITHUB_OUTPUT"
  exit 0
fi
echo "changes=false" >> "$GITHUB_OUTPUT"
exit "$code"
