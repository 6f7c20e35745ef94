#!/usr/bin/env bash
# Times `assay sweep` over an inventory of N entries whose directories do not exist (issue 17:
# error entries must be cheap; the target is 10,000 in under 10 s). Each repeat starts from a
# fresh SQLite history; prints every run's wall time and the median.
#
#   Benchmarks/sweep-errors.sh [N=10000] [REPEATS=3]     ASSAY=path/to/assay (default .build/debug/assay)
set -euo pipefail
n=${1:-10000}
repeats=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
assay=${ASSAY:-$root/.build/debug/assay}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
{
    echo "entries:"
    for ((i = 0; i < n; i++)); do
        echo "  - {id: missing-$i, base: missing/base-$i, tuned: missing/tuned-$i}"
    done
} > "$dir/inventory.yaml"
times=()
TIMEFORMAT='%R %U %S'
for ((r = 0; r < repeats; r++)); do
    rm -f "$dir/h.sqlite"
    status=0
    # bash's `time`: wall, user and system seconds (CPU is what the machine's load cannot inflate).
    t=$( { time "$assay" sweep "$dir/inventory.yaml" --db "$dir/h.sqlite" --threads 1 > "$dir/out.txt" 2> "$dir/err.txt" || status=$?; } 2>&1 )
    read -r wall user sys <<< "$t"
    errors=$(grep -c '^ERROR ' "$dir/out.txt" || true)
    echo "run $((r + 1)): ${wall} s wall, $(echo "$user + $sys" | bc) s CPU ($errors error entries)"
    times+=("$wall")
done
median=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}')
echo "median of $repeats: ${median} s wall for $n missing-directory entries"
