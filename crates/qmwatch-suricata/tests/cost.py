#!/usr/bin/env python3
"""What the plugin costs Suricata: the same capture with and without it.

Usage (from the repository root):

    SURICATA=/opt/suricata-8.0.6/bin/suricata \
    python3 crates/qmwatch-suricata/tests/cost.py [--runs N] [--instructions]
        [--set KEY=VALUE]... [--site-rules FILE]... CAPTURE...

For each capture, runs alternate: Suricata with the plugin loaded (qmtp and
qmqp enabled and logged, the example rules) and without it (no plugin; the
example rules that need no plugin, i.e. the SMTP one), both `--runmode
single -k none`, same YAML otherwise. Prints a Markdown table of medians
(wall time and CPU time of the Suricata process) and the plugin's share.

--site-rules FILE adds a rule file to both runs: the plugin's cost on a
Suricata that already loads other rules (e.g. Suricata's own
rules/*-events.rules, which a default install loads). Without it, the run
without the plugin has only the SMTP rule, on ports 209/628, so Suricata
skips detection on every other packet, and the first rule for any port (the
plugin's) pays for starting it on all of them.

--set KEY=VALUE is handed to both Suricata runs (e.g.
stream.reassembly.check-overlap-different-data=false, Suricata's default,
where the harness's YAML has it on).

--instructions counts instructions instead of timing (one run of each under
`valgrind --tool=callgrind`; about 60 times slower): a figure that does not
move with the machine's load. Start-up (YAML, rules, pattern compilation)
is measured on a capture of one packet and taken off, so the table gives
the instructions spent on the capture's packets.
"""

import re
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the harness: YAML, paths)


def yaml_without():
    lines = run.YAML.splitlines()
    out = []
    skip = 0
    for i, line in enumerate(lines):
        if skip:
            skip -= 1
            continue
        if line.strip() == "plugins:":
            skip = 1
            continue
        if line.strip() in ("qmtp:", "qmqp:") and lines[i + 1].strip() == "enabled: yes":
            skip = 3
            continue
        if line.strip() in ("- qmtp", "- qmqp"):
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def suricata_cmd(capture, yaml_path, rules, outdir, sets):
    outdir.mkdir(parents=True, exist_ok=True)
    for old in outdir.iterdir():
        if old.is_file():
            old.unlink()
    cmd = [run.SURICATA, "-r", str(capture), "-c", str(yaml_path), "-S", str(rules),
           "-l", str(outdir), "--runmode", "single", "-k", "none"]
    for kv in sets:
        cmd += ["--set", kv]
    return cmd


def one(capture, yaml_path, rules, outdir, sets=()):
    cmd = suricata_cmd(capture, yaml_path, rules, outdir, sets)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def instructions(capture, yaml_path, rules, outdir, sets=()):
    """Instructions Suricata runs on `capture`, all threads (callgrind)."""
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    cmd += suricata_cmd(capture, yaml_path, rules, outdir, sets)
    p = subprocess.run(cmd, check=True, capture_output=True, text=True)
    m = re.search(r"Collected : (\d+)", p.stderr)
    if not m:
        sys.exit(f"no instruction count from callgrind: {p.stderr[-500:]}")
    return int(m.group(1))


def one_packet_capture(path):
    """A pcap file of one UDP datagram between documentation addresses
    (Suricata refuses a file without packets)."""
    udp = struct.pack("!HHHH", 40000, 9, 8, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     bytes([192, 0, 2, 1]), bytes([198, 51, 100, 1]))
    words = struct.unpack("!10H", ip)
    total = sum(words)
    total = (total & 0xFFFF) + (total >> 16)
    ip = ip[:10] + struct.pack("!H", ~total & 0xFFFF) + ip[12:]
    frame = bytes(6) + bytes([2, 0, 0, 0, 0, 1]) + b"\x08\x00" + ip + udp
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
                     + struct.pack("<IIII", 1, 0, len(frame), len(frame)) + frame)
    return path


def main_instructions(caps, sets, tmp, with_yaml, without_yaml, with_rules, without_rules):
    empty = one_packet_capture(tmp / "one-packet.pcap")
    start = {
        "without": instructions(empty, without_yaml, without_rules, tmp / "out", sets),
        "with": instructions(empty, with_yaml, with_rules, tmp / "out", sets),
    }
    print(f"start-up (a capture of one packet): without plugin {start['without'] / 1e6:.1f} M, "
          f"with it {start['with'] / 1e6:.1f} M instructions")
    print("| capture | without plugin | with plugin | plugin adds |")
    print("|---|---|---|---|")
    for cap in caps:
        a = instructions(cap, without_yaml, without_rules, tmp / "out", sets) - start["without"]
        b = instructions(cap, with_yaml, with_rules, tmp / "out", sets) - start["with"]
        print(f"| {Path(cap).name} | {a / 1e6:,.0f} M | {b / 1e6:,.0f} M "
              f"| {100 * (b / a - 1):+.1f} % |", flush=True)


def main():
    args = sys.argv[1:]
    runs = 5
    count = False
    sets = []
    site = []
    while args and args[0].startswith("--"):
        if args[0] == "--runs" and len(args) > 1:
            runs = int(args[1])
            args = args[2:]
        elif args[0] == "--set" and len(args) > 1:
            sets.append(args[1])
            args = args[2:]
        elif args[0] == "--site-rules" and len(args) > 1:
            site.append(Path(args[1]).read_text().rstrip("\n") + "\n")
            args = args[2:]
        elif args[0] == "--instructions":
            count = True
            args = args[1:]
        else:
            sys.exit(f"unknown option {args[0]} (see the module's docstring)")
    tmp = Path(tempfile.mkdtemp(prefix="qmwatch-suricata-cost-"))
    with_yaml = tmp / "with.yaml"
    with_yaml.write_text(run.YAML.format(plugin=run.PLUGIN))
    without_yaml = tmp / "without.yaml"
    without_yaml.write_text(yaml_without())
    without_rules = tmp / "without.rules"
    without_rules.write_text("".join(site) + "".join(
        line + "\n" for line in run.RULES.read_text().splitlines()
        if line.startswith("alert smtp")))
    with_rules = tmp / "with.rules"
    with_rules.write_text("".join(site) + run.RULES.read_text())
    if count:
        main_instructions(args, sets, tmp, with_yaml, without_yaml, with_rules, without_rules)
        return
    print("| capture | without plugin: wall, CPU | with plugin: wall, CPU | plugin adds (wall, CPU) |")
    print("|---|---|---|---|")
    for cap in args:
        w = {"with": [], "without": []}
        for _ in range(runs):
            w["without"].append(one(cap, without_yaml, without_rules, tmp / "out", sets))
            w["with"].append(one(cap, with_yaml, with_rules, tmp / "out", sets))
        med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
               for k, v in w.items()}
        a, b = med["without"], med["with"]
        print(f"| {Path(cap).name} | {a[0]:.2f} s, {a[1]:.2f} s | {b[0]:.2f} s, {b[1]:.2f} s "
              f"| {100 * (b[0] / a[0] - 1):+.1f} %, {100 * (b[1] / a[1] - 1):+.1f} % |",
              flush=True)


if __name__ == "__main__":
    main()
