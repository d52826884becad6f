#!/usr/bin/env bash
# Times qmwatch against the tools a user would reach for instead, on one
# capture file:
#
#   qmwatch replay --output /dev/null FILE                  (1 worker, then 2,
#                                                            each mapping or
#                                                            reading the file
#                                                            as its probe
#                                                            chooses (counted
#                                                            under the table);
#                                                            then 1 always
#                                                            reading the file
#                                                            (--no-mmap), 1
#                                                            always mapping it
#                                                            (--mmap), these
#                                                            two --quiet)
#   tcpdump -r FILE -w /dev/null                            (libpcap just reading)
#   cat FILE > /dev/null                                    (the floor: reading it)
#   flow_floor FILE            (a floor for flow tracking: examples/flow_floor.rs
#                               reads the file the same way and keeps its TCP
#                               flows in a table built as a tuned sensor's
#                               would be, open addressing with prefetched
#                               slots, nothing more)
#   flow_floor FILE --split    (the same with the table on a second thread,
#                               a block's segments handed over in one batch:
#                               a capture thread and one flow worker at the
#                               least cost)
#   flow_floor FILE --checked  (the flow floor with the checks a sensor that
#                               must not be blinded makes on every packet's
#                               common path: checksums, TTL, timestamps, SYNs,
#                               RSTs, loss books, first-bytes sniffing; still
#                               no linger of closed flows, reassembly or
#                               events. On one thread: the least CPU a packet
#                               such a sensor spends, no hand-over between
#                               cores)
#   flow_floor FILE --split --checked
#                              (the same on two threads, as --split)
#   tshark -r FILE -Y 'tcp.payload matches "^[1-9][0-9]*:[KZD]"'   (K/Z/D replies)
#
# Runs alternate (the order rotates every round) so that drift in machine
# load cancels; prints the CPU model and load first, then each tool's median
# wall time, Gbit/s and packets/s of the file, its speed relative to tcpdump,
# its time relative to cat's, its median CPU time (user + system) in all and
# per packet, and peak RSS (CPU and RSS from /usr/bin/time -v when
# installed); then, round by round, each tool's speed and CPU time against
# tcpdump's in the same round, their median and quartiles (the figures to
# quote on a machine whose load drifts), and qmwatch's against the checked
# floor's on two threads in the same way. CPU per packet is what a busy
# sensor pays: compare it with tcpdump's, not only the wall time, which a
# second core can hide.
#
# Works on any capture, not only qmwatch-gen's.
#
# Usage: benches/compare.sh FILE [RUNS]      (RUNS defaults to 5)
# Environment: COPIES (default 3): copies of qmwatch and the flow floor the
# rounds take turns among (why: below); QMWATCH_ARGS adds arguments to the
# qmwatch runs (e.g. the policy flags from a qmwatch-gen truth file);
# NO_BUILD=1 skips the build;
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
  cargo build --release --quiet --bin qmwatch --example flow_floor
fi
qmwatch=$target/release/qmwatch
[ -x "$qmwatch" ] || { echo "$0: $qmwatch not built" >&2; exit 2; }
floor=$target/release/examples/flow_floor

have_py=0
if command -v python3 >/dev/null && python3 -c 'import resource' 2>/dev/null; then
  have_py=1
fi
have_time=0
if [ -x /usr/bin/time ] && /usr/bin/time -v true >/dev/null 2>&1; then
  have_time=1
else
  [ $have_py = 1 ] || echo "note: neither python3 nor /usr/bin/time (apt package 'time'): no CPU time, no peak RSS" >&2
fi

# qmwatch and the flow floor run from copies made now, three (COPIES) of
# each, the rounds taking turns ($QW and $FF in the commands): on the AMD
# machine one binary replayed a capture of dense QMTP up to a quarter
# faster or slower from one file holding it to another (how its pages sit
# in memory; docs/performance-history.md, twenty-third round), so no
# figure rests on one file. tcpdump and cat run as installed.
ncopies=${COPIES:-3}
[[ "$ncopies" =~ ^[1-9][0-9]*$ ]] || { echo "$0: COPIES must be a positive number" >&2; exit 2; }
bins=$(mktemp -d)
trap 'rm -rf "$bins"' EXIT
for ((c = 0; c < ncopies; c++)); do
  cp "$qmwatch" "$bins/qmwatch.$c"
  if [ -x "$floor" ]; then cp "$floor" "$bins/flow_floor.$c"; fi
done

# Tools: name, command. A missing tool is said clearly and skipped.
names=()
cmds=()
add() {
  names+=("$1")
  cmds+=("$2")
}
# shellcheck disable=SC2086
# These two keep their summary (on standard error, a few lines): its
# "capture files:" line says whether the run mapped the file or read it,
# counted under the table. The probe's choice moves their times: on the
# AMD machine, before the touch of mapped windows was fixed, mapping took
# 1.35x reading's time on mixed and the probe chose it in 7 runs of 18.
add "qmwatch-1w" "\"\$QW\" replay --output /dev/null --workers 1 ${QMWATCH_ARGS:-} $(printf %q "$file")"
add "qmwatch-2w" "\"\$QW\" replay --output /dev/null --workers 2 ${QMWATCH_ARGS:-} $(printf %q "$file")"
# Each way of getting the file's bytes on its own (the runs above probe a
# file of 128 MiB or more and take the cheaper): which costs less depends on
# the machine.
add "qmwatch-1w-read" "\"\$QW\" replay --quiet --output /dev/null --workers 1 --no-mmap ${QMWATCH_ARGS:-} $(printf %q "$file")"
add "qmwatch-1w-map" "\"\$QW\" replay --quiet --output /dev/null --workers 1 --mmap ${QMWATCH_ARGS:-} $(printf %q "$file")"
if command -v tcpdump >/dev/null; then
  add "tcpdump" "tcpdump -r $(printf %q "$file") -w /dev/null"
else
  echo "MISSING: tcpdump is not installed (apt-get install tcpdump): no baseline, no ratios" >&2
fi
add "cat" "cat $(printf %q "$file") >/dev/null"
if [ ! -x "$floor" ]; then
  echo "MISSING: $floor is not built (cargo build --release --example flow_floor): skipped" >&2
elif ! floor_err=$("$floor" "$file" 2>&1); then
  # Its last line says why (the first gives its counts).
  echo "flow-floor: skipped, it cannot read this file: ${floor_err##*$'\n'}" >&2
else
  add "flow-floor" "\"\$FF\" $(printf %q "$file") 2>/dev/null"
  add "flow-floor-2t" "\"\$FF\" $(printf %q "$file") --split 2>/dev/null"
  add "flow-floor-chk" "\"\$FF\" $(printf %q "$file") --checked 2>/dev/null"
  add "flow-floor-chk-2t" "\"\$FF\" $(printf %q "$file") --split --checked 2>/dev/null"
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
cpu_model=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
l3=$(lscpu 2>/dev/null | sed -n 's/^L3 cache: *//p' | head -n 1)
echo "CPU: ${cpu_model:-unknown}, $(nproc) cores, L3 ${l3:-unknown}; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "file $file: $bytes bytes, $packets packets; $runs runs per tool, order rotating" >&2

tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$bins"' EXIT

# run INDEX: one timed run; appends microseconds of wall and of CPU (user +
# system) and KB of peak RSS to files. python3's getrusage gives CPU to the
# microsecond; /usr/bin/time only to the hundredth of a second.
run() {
  local i=$1 t0 t1 rc=0
  # Warm the page cache first, every time: a machine's memory reclaim
  # (DAMON's, say) can evict pages of a large file between two runs, and
  # a run that reads from the disk measures the disk.
  cat "$file" >/dev/null
  t0=$(date +%s%N)
  if [ $have_py = 1 ]; then
    python3 -c '
import resource, subprocess, sys, time
cpu = lambda r: r.ru_utime + r.ru_stime
before = resource.getrusage(resource.RUSAGE_CHILDREN)
t = time.perf_counter()
# Peak RSS from GNU time when there is one: a child of python starts
# with python'"'"'s own RSS on the books.
timer = ["/usr/bin/time", "-f", "%M", "-o", sys.argv[2]] if sys.argv[3] == "1" else []
rc = subprocess.call(timer + ["bash", "-c", sys.argv[1]], stdout=subprocess.DEVNULL)
wall = time.perf_counter() - t
after = resource.getrusage(resource.RUSAGE_CHILDREN)
rss = open(sys.argv[2]).read().split()[-1] if timer else "-"
print(int(wall * 1e6), int((cpu(after) - cpu(before)) * 1e6), rss)
sys.exit(rc)' "${cmds[$i]}" "$tmp/rss1.$i" "$have_time" >"$tmp/ru.$i" 2>"$tmp/err.$i" || rc=$?
  elif [ $have_time = 1 ]; then
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
  # How a run that chose for itself got the file: "mapped" or "read".
  sed -n 's/^ *capture files: mapped \([0-9]*\), read \([0-9]*\).*/\1 \2/p' "$tmp/err.$i" |
    awk '{print ($1 > 0 ? "mapped" : "read")}' >>"$tmp/access.$i"
  if [ $have_py = 1 ]; then
    # Wall time from python too: its own start-up is not the tool's.
    awk '{print $1 >> "'"$tmp/us.$i"'"; print $2 >> "'"$tmp/cpu.$i"'"; if ($3 != "-") print $3 >> "'"$tmp/rss.$i"'"}' "$tmp/ru.$i"
  else
    echo "$(( (t1 - t0) / 1000 ))" >>"$tmp/us.$i"
  fi
  if [ $have_py = 1 ]; then
    :
  elif [ $have_time = 1 ]; then
    sed -n 's/.*Maximum resident set size (kbytes): *//p' "$tmp/time.$i" >>"$tmp/rss.$i"
    awk -F': *' '/User time \(seconds\)/ {u = $2} /System time \(seconds\)/ {s = $2}
      END {printf "%d\n", (u + s) * 1e6}' "$tmp/time.$i" >>"$tmp/cpu.$i"
  fi
}

n=${#names[@]}
for ((r = 0; r < runs; r++)); do
  export QW=$bins/qmwatch.$((r % ncopies)) FF=$bins/flow_floor.$((r % ncopies))
  for ((k = 0; k < n; k++)); do
    run $(((k + r) % n))
  done
  printf '.' >&2
done
echo >&2

median() { sort -n "$1" | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
maxof() { sort -n "$1" | tail -n1; }

base_us=""
cat_us=""
for ((i = 0; i < n; i++)); do
  if [ "${names[$i]}" = tcpdump ]; then base_us=$(median "$tmp/us.$i"); fi
  if [ "${names[$i]}" = cat ]; then cat_us=$(median "$tmp/us.$i"); fi
done

printf '%-17s %9s %8s %8s %11s %8s %8s %9s %9s\n' \
  tool "median s" "Gbit/s" "Mpkt/s" "vs tcpdump" "vs cat" "CPU s" "CPU/pkt" "peak RSS"
for ((i = 0; i < n; i++)); do
  us=$(median "$tmp/us.$i")
  rss="-"
  if [ -s "$tmp/rss.$i" ]; then rss="$(( $(maxof "$tmp/rss.$i") / 1024 )) MiB"; fi
  cpu="-"
  if [ -s "$tmp/cpu.$i" ]; then cpu=$(median "$tmp/cpu.$i"); fi
  ratio="-"
  if [ -n "$base_us" ]; then ratio=$(awk -v b="$base_us" -v t="$us" 'BEGIN {printf "%.3gx", b / t}'); fi
  vscat="-"
  if [ -n "$cat_us" ]; then vscat=$(awk -v c="$cat_us" -v t="$us" 'BEGIN {printf "%.3gx", t / c}'); fi
  awk -v name="${names[$i]}" -v us="$us" -v bytes="$bytes" -v pk="$packets" -v ratio="$ratio" \
    -v vscat="$vscat" -v cpu="$cpu" -v rss="$rss" \
    'BEGIN {
       s = us / 1e6
       cs = "-"; cp = "-"
       if (cpu != "-") { cs = sprintf("%.3f", cpu / 1e6); if (pk > 0) cp = sprintf("%.0f ns", cpu * 1000 / pk) }
       printf "%-17s %9.3f %8.2f %8.2f %11s %8s %8s %9s %9s\n", name, s, bytes * 8 / s / 1e9, pk / s / 1e6, ratio, vscat, cs, cp, rss
     }'
done
# Against tcpdump round by round: each round runs every tool once, a few
# seconds apart, so a round's ratios are taken under one load. Their median
# moves less with drift in the machine's load than the ratio of the medians
# above; the quartiles show how far the rounds spread.
# round_ratios NUM DEN: the median and quartiles of NUM's lines over DEN's.
round_ratios() {
  paste -d' ' "$1" "$2" | awk '$2 > 0 {printf "%.6f\n", $1 / $2}' | sort -n |
    awk '{v[NR] = $1}
      function q(p,   x, k) { x = 1 + (NR - 1) * p; k = int(x); return v[k] + (x - k) * (v[k < NR ? k + 1 : k] - v[k]) }
      END { if (NR) printf "%.3gx (%.3g-%.3gx)", q(0.5), q(0.25), q(0.75); else printf "-" }'
}
# against BASE PATTERN TITLE: each tool whose name matches PATTERN (a case
# pattern), round by round against the tool named BASE, under TITLE; nothing
# if BASE did not run or there was one round.
against() {
  local base_i="" i cpu_ratio
  for ((i = 0; i < n; i++)); do
    if [ "${names[$i]}" = "$1" ]; then base_i=$i; fi
  done
  [ -n "$base_i" ] && [ "$runs" -ge 2 ] || return 0
  echo "$3"
  for ((i = 0; i < n; i++)); do
    [ "$i" = "$base_i" ] && continue
    # shellcheck disable=SC2254 # a pattern, on purpose
    case "${names[$i]}" in $2) ;; *) continue ;; esac
    cpu_ratio="-"
    if [ -s "$tmp/cpu.$i" ] && [ -s "$tmp/cpu.$base_i" ]; then
      cpu_ratio=$(round_ratios "$tmp/cpu.$i" "$tmp/cpu.$base_i")
    fi
    printf '  %-17s speed %-22s CPU %s\n' "${names[$i]}" "$(round_ratios "$tmp/us.$base_i" "$tmp/us.$i")" "$cpu_ratio"
  done
}
against tcpdump '*' "against tcpdump, round by round: median (quartiles) of speed, and of CPU time over tcpdump's"
# qmwatch against the checked floor on two threads: a ratio between two
# flow trackers on the same cores, which moves less from hour to hour than
# a ratio to tcpdump (whose own speed on small flows moves by half on one
# machine).
against flow-floor-chk-2t 'qmwatch*' "against flow-floor-chk-2t, round by round: median (quartiles) of speed, and of CPU time over the floor's"
for ((i = 0; i < n; i++)); do
  if [ -s "$tmp/access.$i" ]; then
    echo "${names[$i]}: file mapped in $(grep -c mapped "$tmp/access.$i") runs, read in $(grep -c read "$tmp/access.$i") (its own choice: a small file is read, a large one probed)"
  fi
done
echo "(vs tcpdump: tcpdump's median time / the tool's, above 1 is faster than libpcap reading the file;"
echo " vs cat: the tool's median time / cat's, the cost over reading the file's bytes;"
echo " flow-floor: reading the file as qmwatch does and a prefetched flat table of its TCP flows, nothing more;"
echo " flow-floor-2t: the same with the table on a second thread, as qmwatch's one worker;"
echo " flow-floor-chk: flow-floor with a sensor's per-packet checks (--checked), still less than qmwatch does;"
echo " flow-floor-chk-2t: the same on two threads;"
echo " CPU: median user + system time, in all and per packet of the file)"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
