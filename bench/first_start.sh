#!/usr/bin/env bash
# First start of fastpex's vs the builtin's packed PEX, alternating, several runs each.
#
# Usage: bench/first_start.sh [REPO] [RUNS]
#   REPO  the scratch repo bench/pack_bench.py wrote (default /tmp/fastpex-bench/pack4/repo)
#   RUNS  start measurements per PEX (default 3)
# Builds src/app:fastpex-packed and src/app:builtin-packed once with fresh Pants caches (not
# timed), then runs each with an empty PEX_ROOT, alternating, and prints the wall time of each.
# One run per number in pack_bench.py could not tell these two apart (the builtin alone varied
# by 20% between two runs), hence the repetition.
set -u
REPO="${1:-/tmp/fastpex-bench/pack4/repo}"
RUNS="${2:-3}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
C="$(mktemp -d /tmp/first-start-caches.XXXXXX)"
ROOT="$(mktemp -d /tmp/first-start-root.XXXXXX)"
trap 'rm -rf "$C" "$ROOT"' EXIT
mkdir -p "$C/home"
PY="${PY311:-/root/.pyenv/versions/3.11.7/bin/python3.11}"
cd "$REPO"
env -u PIP_CONFIG_FILE "$HERE/pants" --no-pantsd --named-caches-dir="$C/named" --local-store-dir="$C/store" \
  "--subprocess-environment-env-vars=+[\"HOME=$C/home\"]" \
  package src/app:fastpex-packed src/app:builtin-packed > "$C/build.log" 2>&1 \
  || { echo "build failed:"; tail -20 "$C/build.log"; exit 1; }
for i in $(seq 1 "$RUNS"); do
  for v in fastpex-packed builtin-packed; do
    rm -rf "$ROOT"; mkdir -p "$ROOT"; sync
    s=$(date +%s.%N)
    out="$(env -i PATH=/usr/bin:/bin PEX_ROOT="$ROOT" "$PY" "dist/src.app/$v.pex" 2>&1)"; rc=$?
    e=$(date +%s.%N)
    echo "$v run $i: $(echo "$e - $s" | bc) s rc=$rc $(echo "$out" | tail -1)"
  done
done
