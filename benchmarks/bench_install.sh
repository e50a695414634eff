#!/bin/bash
# Fresh-virtualenv size and install time of the core and of [all], and `import embed_assets`
# in a fresh process (issue 28). Run it under the shared lock:
#   flock /work/bench.lock benchmarks/bench_install.sh [WORKDIR]
# It installs a copy of HEAD (git archive), so uncommitted changes are not measured, and
# deletes the venvs afterwards.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=${1:-$(mktemp -d)}
mkdir -p "$W" && cd "$W"
rm -rf src && mkdir src && git -C "$ROOT" archive HEAD | tar -x -C src
echo "python: $(python3 --version); uptime: $(uptime)"
for kind in core all; do
  V="$W/venv-$kind"; rm -rf "$V"
  spec="./src"; [ "$kind" = all ] && spec="./src[all]"
  t0=$(date +%s.%N)
  python3 -m venv "$V"
  "$V/bin/python" -m pip install --quiet --no-cache-dir -c src/constraints.txt "$spec" > "pip-$kind.log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  echo "$kind: rc=$rc install_s=$(echo "$t1 - $t0" | bc) size_MB=$(du -sm "$V" | cut -f1)" \
       "packages=$("$V/bin/python" -m pip list --format=freeze 2>/dev/null | wc -l) uptime: $(uptime)"
  for i in 1 2 3 4 5 6 7; do
    (cd /tmp && HF_HUB_OFFLINE=1 "$V/bin/python" -c \
      "import time; t=time.perf_counter(); import embed_assets; print(f'{time.perf_counter()-t:.3f}')")
  done | tr '\n' ' ' | sed "s/^/$kind import_s: /"; echo
  du -sm "$V"/lib/python3*/site-packages/* 2>/dev/null | sort -rn | head -12
  rm -rf "$V"
done
echo "uptime: $(uptime)"
