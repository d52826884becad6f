#!/usr/bin/env bash
# Compares qmwatch builds on one capture: runs `BIN replay -o /dev/null
# $QMWATCH_ARGS FILE` for each binary in turn, RUNS rounds, and prints each
# binary's median wall time and median CPU time (user + system: from
# getrusage through python3, to the microsecond, else from /usr/bin/time,
# to 10 ms, which on runs of a fraction of a second quantizes the CPU
# ratios into steps of several percent), then, for every binary after the first, the median over
# the rounds of its time divided by the first binary's in the same round.
#
# Rounds alternate the order (forward, then backward), so that drift in the
# machine's load hits every binary alike; the per-round ratio is the figure
# to quote on a noisy machine: a neighbour's load that comes and goes moves
# both runs of a round together. Wall time is the replay's own (the
# summary's, in milliseconds), CPU time is the process's.
#
# Usage: benches/alternate.sh FILE RUNS BIN [BIN ...]
# e.g.:  git worktree add /tmp/before OLD && (cd /tmp/before && cargo build --release)
#        benches/alternate.sh big.pcap 21 /tmp/before/target/release/qmwatch target/release/qmwatch
# QMWATCH_ARGS: policy flags, e.g. from a qmwatch-gen truth file, or
# `--workers 2`. Each BIN is copied COPIES times (default 3) before the
# rounds, and the rounds take turns among the copies (KEEP_BINS=1: the
# binaries as they lie; why, below).
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 FILE RUNS BIN [BIN ...]" >&2; exit 2; }
file=$1 runs=$2
shift 2
# A child's CPU time, to the microsecond: "TIME user system" on stderr.
timer=(python3 -c '
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:]).returncode
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print("TIME %.6f %.6f" % (u.ru_utime, u.ru_stime), file=sys.stderr)
sys.exit(r)')
if ! python3 -c 'import resource' 2>/dev/null; then
  [ -x /usr/bin/time ] || { echo "$0: needs python3 or /usr/bin/time (Debian package time)" >&2; exit 2; }
  timer=(/usr/bin/time -f "TIME %U %S")
fi
read -r -a args <<< "${QMWATCH_ARGS:-}"
bins=("$@")
# Each binary runs from copies made now, all in the same way, round r from
# copy r mod COPIES (default 3). On the AMD machine one binary's replay of
# the dense-QMTP capture ran up to a quarter faster or slower from one file
# holding it to another (a fresh copy, another fresh copy, the linker's
# output, pages reclaimed and read back: how its pages sit in memory), so
# a binary is not timed from one file only, and binaries written at
# different times are not timed where they lie. KEEP_BINS=1 runs them in
# place. (A BIN that is a script is copied, not what it runs.)
ncopies=${COPIES:-3}
[ "$ncopies" -ge 1 ] 2>/dev/null || { echo "$0: COPIES must be a positive number" >&2; exit 2; }
declare -A exe
copies=$(mktemp -d)
trap 'rm -rf "$copies"' EXIT
for ((k = 0; k < ${#bins[@]}; k++)); do
  b=${bins[k]}
  for ((c = 0; c < ncopies; c++)); do
    if [ "${KEEP_BINS:-0}" = 1 ]; then
      exe[$b.$c]=$b
    else
      cp "$b" "$copies/$k.$c"
      exe[$b.$c]=$copies/$k.$c
    fi
  done
done
declare -A wall cpu ratio_wall ratio_cpu
# One run of binary $1: prints "WALL CPU".
one() {
  local out w u s
  # Warm the page cache every time: memory reclaim can evict pages of a
  # large file between two runs.
  cat "$file" >/dev/null
  out=$({ "${timer[@]}" "${exe[$1.$((r % ncopies))]}" replay -o /dev/null "${args[@]}" "$file" >/dev/null; } 2>&1)
  w=$(sed -n 's/.* wall \([0-9.]*\) s .*/\1/p' <<< "$out" | head -n 1)
  read -r _ u s <<< "$(grep '^TIME ' <<< "$out" | tail -n 1)"
  [ -n "$w" ] || { echo "$0: no summary from $1:" >&2; echo "$out" >&2; exit 2; }
  echo "$w $(awk -v u="$u" -v s="$s" 'BEGIN { print u + s }')"
}
for ((r = 0; r < runs; r++)); do
  order=("${bins[@]}")
  if ((r % 2)); then
    order=()
    for ((k = ${#bins[@]} - 1; k >= 0; k--)); do order+=("${bins[k]}"); done
  fi
  declare -A this_wall=() this_cpu=()
  for b in "${order[@]}"; do
    read -r w c <<< "$(one "$b")"
    this_wall[$b]=$w this_cpu[$b]=$c
    wall[$b]+=" $w"
    cpu[$b]+=" $c"
  done
  first=${bins[0]}
  for b in "${bins[@]:1}"; do
    ratio_wall[$b]+=" $(awk -v a="${this_wall[$b]}" -v z="${this_wall[$first]}" 'BEGIN { if (z > 0) print a / z }')"
    ratio_cpu[$b]+=" $(awk -v a="${this_cpu[$b]}" -v z="${this_cpu[$first]}" 'BEGIN { if (z > 0) print a / z }')"
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for b in "${bins[@]}"; do
  printf '%s: median wall %s s, CPU %.3f s over %s runs\n' "$b" "$(median <<< "${wall[$b]}")" \
    "$(median <<< "${cpu[$b]}")" "$runs"
done
for b in "${bins[@]:1}"; do
  printf '%s / %s, median of per-round ratios: wall %.3f, CPU %.3f\n' "$b" "${bins[0]}" \
    "$(median <<< "${ratio_wall[$b]}")" "$(median <<< "${ratio_cpu[$b]}")"
done
