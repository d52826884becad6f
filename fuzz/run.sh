#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) and reports, per
# target, the executions and the coverage libFuzzer reached.
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]
#
# Stable Rust is enough: RUSTC_BOOTSTRAP=1 lets it take the -Z flags
# cargo-fuzz passes (AddressSanitizer, coverage instrumentation). Seed corpora
# are made from fixtures/ by make_seeds.py into fuzz/corpus/TARGET (kept
# between runs, git-ignored); crashes go to fuzz/artifacts/TARGET. Builds are
# release with debug assertions (overflow checks on). Exit status: 0 when
# every target ran its time without a crash, timeout (10 s for one input) or
# out-of-memory; 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")"

secs="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(decode_frame capture_reader protocol_chunks reassembly_model flow_table suricata_flow)
fi
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install --locked cargo-fuzz || exit 1
fi

echo "== seed corpora from ../fixtures"
python3 make_seeds.py ../fixtures corpus || exit 1
# suricata_flow reads protocol_chunks' input format: same seeds.
mkdir -p corpus/suricata_flow && { cp -n corpus/protocol_chunks/* corpus/suricata_flow/ 2>/dev/null || true; }

echo "== build (release, debug assertions, AddressSanitizer)"
cargo fuzz build --debug-assertions || exit 1

mkdir -p logs
status=0
summary=()
for t in "${targets[@]}"; do
  echo "== $t: ${secs}s"
  log="logs/$t.log"
  cargo fuzz run --debug-assertions "$t" "corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  final=$(grep -E '^#[0-9]+.* cov: ' "$log" | tail -n 1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$final")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$final")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9A-Za-z]*\).*/\1/p' <<<"$final")
  if [ "$rc" -eq 0 ]; then
    result=ok
  else
    result="FAILED (exit $rc)"
    status=1
    grep -E '^(==[0-9]+==ERROR|thread .* panicked|.*deadly signal|.*Test unit written to|SUMMARY)' "$log" | head -n 8
    echo "   full log: fuzz/$log"
  fi
  summary+=("$(printf '%-17s %-14s execs %-10s cov %-6s ft %-6s corpus %s' \
    "$t" "$result" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}")")
done

echo "== summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
exit "$status"
