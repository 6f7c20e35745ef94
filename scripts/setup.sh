#!/usr/bin/env bash
# Installs what Assay needs on a fresh Debian machine that has Swift: OpenBLAS, LAPACKE and SQLite (the sweep history store),
# and GNU time (the hostile-input tests measure each command's peak RSS with it).
# Idempotent: installs nothing when the packages are already there.
set -euo pipefail
need=()
for p in libopenblas-dev liblapacke-dev libsqlite3-dev time; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "setup: swift is not on PATH" >&2; exit 2; }
