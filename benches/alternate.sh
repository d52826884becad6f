#!/usr/bin/env bash
# Compares qmwatch builds on one capture: runs `BIN replay -q -o /dev/null
# $QMWATCH_ARGS FILE` for each binary in turn, RUNS rounds (alternating, so
# drift in machine load hits every binary alike), and prints each binary's
# median wall time and median CPU time (user + system, /usr/bin/time).
#
# Usage: benches/alternate.sh FILE RUNS BIN [BIN ...]
# e.g.:  git worktree add /tmp/before OLD && (cd /tmp/before && cargo build --release)
#        benches/alternate.sh big.pcap 9 /tmp/before/target/release/qmwatch target/release/qmwatch
# QMWATCH_ARGS: policy flags, e.g. from a qmwatch-gen truth file.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 FILE RUNS BIN [BIN ...]" >&2; exit 2; }
file=$1 runs=$2
shift 2
[ -x /usr/bin/time ] || { echo "$0: needs /usr/bin/time (Debian package time)" >&2; exit 2; }
read -r -a args <<< "${QMWATCH_ARGS:-}"
declare -A wall cpu
for ((r = 0; r < runs; r++)); do
  for b in "$@"; do
    # Warm the page cache every time: memory reclaim can evict pages of a
    # large file between two runs.
    cat "$file" >/dev/null
    out=$({ /usr/bin/time -f "%e %U %S" "$b" replay -q -o /dev/null "${args[@]}" "$file" >/dev/null; } 2>&1 | tail -n 1)
    read -r w u s <<< "$out"
    wall[$b]+=" $w"
    cpu[$b]+=" $(awk -v u="$u" -v s="$s" 'BEGIN { print u + s }')"
  done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for b in "$@"; do
  echo "$b: median wall $(median <<< "${wall[$b]}") s, CPU $(median <<< "${cpu[$b]}") s over $runs runs"
done
