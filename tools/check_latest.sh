#!/usr/bin/env bash
# Drift check: install the newest versions pyproject allows (no constraints.txt) into a scratch venv, run the
# tests there, and show what differs from constraints.txt, so a breaking release is seen before users see it.
# Usage: [PYTHON=python3.10] tools/check_latest.sh [pytest args…]   (PYTHON: another interpreter, e.g. a host's;
# the scratch venv lives in a temporary folder, removed at exit)
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"${PYTHON:-python3}" -m venv "$scratch/venv"
pip="$scratch/venv/bin/pip"
# torch is the host's: the same release as the pinned set; everything else as new as pyproject allows
torch_pins=$(grep -E '^(torch|torchvision)==' constraints.txt | tr '\n' ' ')
"$pip" install -q $torch_pins
"$pip" install -q --upgrade --upgrade-strategy eager -e ".[test]"
"$pip" freeze --exclude-editable | sort > "$scratch/latest.txt"
echo "== versions that differ from constraints.txt (pinned -> newest) =="
join -t= -j1 <(grep -E '^[A-Za-z0-9_.-]+==' constraints.txt | sed 's/==/=/' | sort -t= -k1,1) \
             <(sed 's/==/=/' "$scratch/latest.txt" | sort -t= -k1,1) \
  | awk -F= '$2 != $3 {printf "  %-28s %s -> %s\n", $1, $2, $3}'
echo "== tests on the newest versions =="
status=0
"$scratch/venv/bin/python" -m pytest -q -p no:cacheprovider "$@" || status=$?
if [ "$status" -ne 0 ]; then
  echo "check_latest: the newest allowed versions FAIL the tests (exit $status); see above for what changed" >&2
fi
exit "$status"
