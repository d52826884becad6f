#!/usr/bin/env bash
# Instructions a packet that `qmwatch replay` spends on one capture, in all
# and per thread, counted by callgrind: a figure that does not move with
# the machine's load, to compare builds and machines with.
#
#   benches/instructions.sh FILE [REPLAY ARGS...]
#   e.g. benches/instructions.sh cg-small-flows.pcap --decode-in capture
#        benches/instructions.sh cg-mixed.pcap --workers 2
#
# Runs `qmwatch replay -q -o /dev/null ARGS FILE` once plainly (for the
# packet count, from its summary) and once under
# `valgrind --tool=callgrind --separate-threads=yes`, then prints each
# thread's instructions divided by the packets, in the order the threads
# were started: the main thread (which reads the capture: the capture
# thread), the output thread, the detect thread, then the workers; and the
# sum with START_UP instructions (default 2.3 million: what a replay of an
# empty capture costs) taken off, and how many of those went to SHA-1 in
# its portable code, where native runs on a CPU with SHA extensions spend
# far fewer (see the note in the loop). Valgrind runs the threads one at a
# time, so `--decode-in capture` or `worker` is what fixes which thread decodes
# (left to `auto`, the split follows valgrind's scheduling, not the
# machine's). Use captures of some tens of MiB: valgrind runs about fifty
# times slower than the machine.
#
# Environment: QMWATCH (default target/release/qmwatch), START_UP.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 FILE [REPLAY ARGS...]" >&2; exit 2; }
file=$1
shift
[ -r "$file" ] || { echo "$0: cannot read $file" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "$0: needs valgrind (apt-get install valgrind)" >&2; exit 2; }
cd "$(dirname "$0")/.."
qmwatch=${QMWATCH:-target/release/qmwatch}
[ -x "$qmwatch" ] || { echo "$0: $qmwatch not built (cargo build --release)" >&2; exit 2; }
start_up=${START_UP:-2300000}
summary=$("$qmwatch" replay -o /dev/null "$@" "$file" 2>&1 >/dev/null) || true
packets=$(sed -n 's/^ *packets \([0-9]*\) .*/\1/p' <<< "$summary" | head -n 1)
[ -n "$packets" ] && [ "$packets" -gt 0 ] || { echo "$0: no packet count from the replay:" >&2; echo "$summary" >&2; exit 2; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$dir/cg" \
  "$qmwatch" replay -q -o /dev/null "$@" "$file" >/dev/null 2>"$dir/log" ||
  { echo "$0: the replay under valgrind failed:" >&2; cat "$dir/log" >&2; exit 2; }
echo "$file: $packets packets; instructions a packet (callgrind), args: ${*:-none}"
total=0
sha=0
n=0
# callgrind numbers the threads' files cg-01, cg-02, ...: the glob's order.
for t in "$dir"/cg-*; do
  c=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$t" | head -n 1)
  [ -n "$c" ] || c=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$t" | head -n 1)
  n=$((n + 1))
  total=$((total + c))
  printf '  thread %d: %d\n' "$n" $((c / packets))
  # Valgrind hides the CPU's SHA extensions, so the event ids' and
  # Community IDs' SHA-1 (the detect thread's) runs here in its portable
  # code, several thousand instructions an event; natively, on a CPU with
  # SHA-NI (AMD Zen, recent Intel), the same blocks take a small fraction.
  s=$(callgrind_annotate --inclusive=yes "$t" 2>/dev/null |
    sed -n 's/^ *\([0-9,]*\) .*sha1::compress::soft::compress \[.*/\1/p' | head -n 1 | tr -d ,)
  sha=$((sha + ${s:-0}))
done
printf '  all threads, start-up (%d) off: %d\n' "$start_up" $(((total - start_up) / packets))
printf '  of which SHA-1 in portable code (valgrind hides SHA-NI): %d\n' $((sha / packets))
