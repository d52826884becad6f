#!/usr/bin/env bash
# Times qmwatch against the tools a user would reach for instead, on one
# capture file:
#
#   qmwatch replay --quiet --output /dev/null FILE          (1 worker, then 2)
#   tcpdump -r FILE -w /dev/null                            (libpcap just reading)
#   tshark -r FILE -Y 'tcp.payload matches "^[1-9][0-9]*:[KZD]"'   (K/Z/D replies)
#
# Runs alternate (the order rotates every round) so that drift in machine
# load cancels; prints each tool's median wall time, Gbit/s and packets/s of
# the file, its speed relative to tcpdump, and peak RSS (from /usr/bin/time -v
# when installed).
#
# Usage: benches/compare.sh FILE [RUNS]      (RUNS defaults to 5)
# Environment: QMWATCH_ARGS adds arguments to both qmwatch runs (e.g. the
# policy flags from a qmwatch-gen truth file); NO_BUILD=1 skips the build;
# NO_TSHARK=1 leaves tshark out (its memory and time grow faster than the
# file: on a 1 GiB capture one run takes many minutes and GBs of RAM).
#
# Make a capture with:
#   cargo run --release --bin qmwatch-gen -- --profile mixed --bytes 1G \
#       --out /tmp/mixed.pcap --truth /tmp/mixed.json
set -euo pipefail

usage() {
  echo "usage: $0 FILE [RUNS]" >&2
  exit 2
}
[ $# -ge 1 ] && [ $# -le 2 ] || usage
file=$1
runs=${2:-5}
[ -r "$file" ] || { echo "$0: cannot read $file" >&2; exit 2; }
file=$(cd "$(dirname -- "$file")" && pwd)/$(basename -- "$file")
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || usage

cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
if [ "${NO_BUILD:-0}" != 1 ]; then
  echo "== cargo build --release" >&2
  cargo build --release --quiet --bin qmwatch
fi
qmwatch=$target/release/qmwatch
[ -x "$qmwatch" ] || { echo "$0: $qmwatch not built" >&2; exit 2; }

have_time=0
if [ -x /usr/bin/time ] && /usr/bin/time -v true >/dev/null 2>&1; then
  have_time=1
else
  echo "note: /usr/bin/time (GNU time, apt package 'time') not installed: no peak RSS" >&2
fi

# Tools: name, command. A missing tool is said clearly and skipped.
names=()
cmds=()
add() {
  names+=("$1")
  cmds+=("$2")
}
# shellcheck disable=SC2086
add "qmwatch-1w" "$qmwatch replay --quiet --output /dev/null --workers 1 ${QMWATCH_ARGS:-} $(printf %q "$file")"
add "qmwatch-2w" "$qmwatch replay --quiet --output /dev/null --workers 2 ${QMWATCH_ARGS:-} $(printf %q "$file")"
if command -v tcpdump >/dev/null; then
  add "tcpdump" "tcpdump -r $(printf %q "$file") -w /dev/null"
else
  echo "MISSING: tcpdump is not installed (apt-get install tcpdump): no baseline, no ratios" >&2
fi
if [ "${NO_TSHARK:-0}" = 1 ]; then
  echo "tshark: left out (NO_TSHARK=1)" >&2
elif command -v tshark >/dev/null; then
  add "tshark-KZD" "tshark -r $(printf %q "$file") -Y 'tcp.payload matches \"^[1-9][0-9]*:[KZD]\"'"
else
  echo "MISSING: tshark is not installed (apt-get install tshark): skipped" >&2
fi

bytes=$(stat -c %s "$file")
# Packet count and a warm page cache, from one qmwatch run with its summary.
summary=$("$qmwatch" replay --output /dev/null ${QMWATCH_ARGS:-} "$file" 2>&1 >/dev/null || true)
packets=$(sed -n 's/^ *packets \([0-9]*\) .*/\1/p' <<<"$summary" | head -n1)
packets=${packets:-0}
echo "file $file: $bytes bytes, $packets packets; $runs runs per tool, order rotating" >&2

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# run INDEX: one timed run; appends seconds (and KB of peak RSS) to files.
run() {
  local i=$1 t0 t1 rc=0
  t0=$(date +%s%N)
  if [ $have_time = 1 ]; then
    /usr/bin/time -v -o "$tmp/time.$i" bash -c "${cmds[$i]}" >/dev/null 2>"$tmp/err.$i" || rc=$?
  else
    bash -c "${cmds[$i]}" >/dev/null 2>"$tmp/err.$i" || rc=$?
  fi
  t1=$(date +%s%N)
  if [ $rc != 0 ]; then
    echo "${names[$i]} failed (exit $rc):" >&2
    tail -n 5 "$tmp/err.$i" >&2
    exit 1
  fi
  echo "$(( (t1 - t0) / 1000 ))" >>"$tmp/us.$i"
  if [ $have_time = 1 ]; then
    sed -n 's/.*Maximum resident set size (kbytes): *//p' "$tmp/time.$i" >>"$tmp/rss.$i"
  fi
}

n=${#names[@]}
for ((r = 0; r < runs; r++)); do
  for ((k = 0; k < n; k++)); do
    run $(((k + r) % n))
  done
  printf '.' >&2
done
echo >&2

median() { sort -n "$1" | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
maxof() { sort -n "$1" | tail -n1; }

base_us=""
for ((i = 0; i < n; i++)); do
  if [ "${names[$i]}" = tcpdump ]; then base_us=$(median "$tmp/us.$i"); fi
done

printf '%-12s %10s %10s %10s %12s %10s\n' tool "median s" "Gbit/s" "Mpkt/s" "vs tcpdump" "peak RSS"
for ((i = 0; i < n; i++)); do
  us=$(median "$tmp/us.$i")
  rss="-"
  if [ -s "$tmp/rss.$i" ]; then rss="$(( $(maxof "$tmp/rss.$i") / 1024 )) MiB"; fi
  ratio="-"
  if [ -n "$base_us" ]; then ratio=$(awk -v b="$base_us" -v t="$us" 'BEGIN {printf "%.3gx", b / t}'); fi
  awk -v name="${names[$i]}" -v us="$us" -v bytes="$bytes" -v pk="$packets" -v ratio="$ratio" -v rss="$rss" \
    'BEGIN {s = us / 1e6; printf "%-12s %10.3f %10.2f %10.2f %12s %10s\n", name, s, bytes * 8 / s / 1e9, pk / s / 1e6, ratio, rss}'
done
echo "(vs tcpdump: tcpdump's median time / the tool's; above 1 is faster than libpcap reading the file)"
