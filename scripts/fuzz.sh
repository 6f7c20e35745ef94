#!/usr/bin/env bash
# Fuzzes Assay's parsers with libFuzzer + AddressSanitizer (FUZZING.md).
#
#   scripts/fuzz.sh [--runs N] [--time SECONDS] [--no-build] [--merge | --merge-only] [HARNESS...]
#
# Defaults: every harness, 10,000,000 executions or 1,800 s each, whichever comes first.
# Seeds come from Fuzz/corpus/<harness>/ (committed); what the fuzzer adds goes to
# .build-fuzz/corpus/<harness>/ (not committed). `--merge` (after the run) or `--merge-only` (no
# run) adds to Fuzz/corpus/<harness>/ the inputs of at most 16 KiB from there that reach coverage
# the committed corpus does not (libFuzzer's -merge=1), for committing. A crash, leak, timeout or OOM lands in Fuzz/regressions/<harness>/, where
# `swift test` (FuzzCorpusTests) replays it for ever after. One summary line per harness:
#   HARNESS: N runs in S s (R exec/s), cov C, ft F, corpus K, status OK|CRASH
set -euo pipefail
cd "$(dirname "$0")/.."
runs=10000000
build=1
merge=0
fuzz=1
time_limit=1800
all=(safetensors gguf json tokenizer regex template pickle zip suite inventory adapter)
picked=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --time) time_limit="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --merge) merge=1; shift ;;
    --merge-only) merge=1; fuzz=0; shift ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) picked+=("$1"); shift ;;
  esac
done
[ ${#picked[@]} -gt 0 ] || picked=("${all[@]}")

scratch=.build-fuzz
mkdir -p "$scratch"
# swiftc's -sanitize=fuzzer instruments coverage only when it also links, so SwiftPM's separately
# compiled modules need -sanitize-coverage spelled out (without it libFuzzer sees only the C
# code); dead stripping would drop the coverage sections.
flags=(--package-path Fuzz --scratch-path "$scratch" -c release --sanitize fuzzer --sanitize address
       --disable-dead-strip -Xswiftc -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp)
if [ "$build" = 1 ]; then
  swift build "${flags[@]}" >"$scratch/build.log" 2>&1 || { tail -40 "$scratch/build.log" >&2; exit 1; }
fi
bin="$(swift build "${flags[@]}" --show-bin-path)/AssayFuzz"

# Adds the found inputs (≤ 16 KiB) that bring new coverage to the committed corpus.
merge_found() {
  local h="$1" small
  small="$(mktemp -d)"
  find "$scratch/corpus/$h" -type f -size -16385c -exec cp {} "$small/" \;
  local before after
  before="$(ls "Fuzz/corpus/$h" | wc -l)"
  ASSAY_FUZZ_TARGET="$h" ASAN_OPTIONS=detect_leaks=0 "$bin" -merge=1 -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    "Fuzz/corpus/$h" "$small" >"$scratch/$h.merge.log" 2>&1
  after="$(ls "Fuzz/corpus/$h" | wc -l)"
  rm -rf "$small"
  echo "$h: merged $((after - before)) inputs into Fuzz/corpus/$h ($after in all)"
}

status=0
for h in "${picked[@]}"; do
  work="$scratch/corpus/$h"
  crashes="Fuzz/regressions/$h"
  mkdir -p "$work" "$crashes"
  if [ "$fuzz" = 0 ]; then merge_found "$h"; continue; fi
  log="$scratch/$h.log"
  # Each input gets 10 s and 2 GiB; leaks are errors (ASan's LeakSanitizer).
  if ASSAY_FUZZ_TARGET="$h" ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 "$bin" \
      -runs="$runs" -max_total_time="$time_limit" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
      -max_len=65536 -print_final_stats=1 -artifact_prefix="$crashes/" "$work" "Fuzz/corpus/$h" >"$log" 2>&1; then
    result=OK
  else
    result=CRASH; status=1
  fi
  done_line="$(grep -E '^Done [0-9]+ runs' "$log" | tail -1 || true)"
  n="$(echo "$done_line" | awk '{print $2}')"; s="$(echo "$done_line" | awk '{print $5}')"
  last="$(grep -E '^#[0-9]+' "$log" | tail -1 || true)"
  cov="$(echo "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')"; ft="$(echo "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')"
  corp="$(echo "$last" | sed -n 's/.*corp: \([0-9]*\).*/\1/p')"
  if [ -z "$n" ]; then n="$(echo "$last" | sed -n 's/^#\([0-9]*\).*/\1/p')"; s="?"; fi
  rate="?"; [ -n "$n" ] && [ "$s" != "?" ] && [ "$s" -gt 0 ] 2>/dev/null && rate=$((n / s))
  echo "$h: ${n:-0} runs in ${s} s (${rate} exec/s), cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}, status $result"
  [ "$result" = OK ] || grep -E 'ERROR|SUMMARY|Test unit written' "$log" | head -5 >&2
  [ "$merge" = 0 ] || merge_found "$h"
done
exit $status
