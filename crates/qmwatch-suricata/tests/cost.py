#!/usr/bin/env python3
"""What the plugin costs Suricata: the same capture with and without it.

Usage (from the repository root):

    SURICATA=/opt/suricata-8.0.6/bin/suricata \
    python3 crates/qmwatch-suricata/tests/cost.py [--runs N] CAPTURE...

For each capture, runs alternate: Suricata with the plugin loaded (qmtp and
qmqp enabled and logged, the example rules) and without it (no plugin; the
example rules that need no plugin, i.e. the SMTP one), both `--runmode
single -k none`, same YAML otherwise. Prints a Markdown table of medians
(wall time and CPU time of the Suricata process) and the plugin's share.
"""

import resource
import statistics
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


def one(capture, yaml_path, rules, outdir):
    outdir.mkdir(parents=True, exist_ok=True)
    for old in outdir.iterdir():
        if old.is_file():
            old.unlink()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run([run.SURICATA, "-r", str(capture), "-c", str(yaml_path), "-S", str(rules),
                    "-l", str(outdir), "--runmode", "single", "-k", "none"],
                   check=True, capture_output=True)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main():
    args = sys.argv[1:]
    runs = 5
    if args[:1] == ["--runs"]:
        runs = int(args[1])
        args = args[2:]
    tmp = Path(tempfile.mkdtemp(prefix="qmwatch-suricata-cost-"))
    with_yaml = tmp / "with.yaml"
    with_yaml.write_text(run.YAML.format(plugin=run.PLUGIN))
    without_yaml = tmp / "without.yaml"
    without_yaml.write_text(yaml_without())
    without_rules = tmp / "without.rules"
    without_rules.write_text("".join(
        line + "\n" for line in run.RULES.read_text().splitlines()
        if line.startswith("alert smtp")))
    print("| capture | without plugin: wall, CPU | with plugin: wall, CPU | plugin adds (wall, CPU) |")
    print("|---|---|---|---|")
    for cap in args:
        w = {"with": [], "without": []}
        for _ in range(runs):
            w["without"].append(one(cap, without_yaml, without_rules, tmp / "out"))
            w["with"].append(one(cap, with_yaml, run.RULES, tmp / "out"))
        med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
               for k, v in w.items()}
        a, b = med["without"], med["with"]
        print(f"| {Path(cap).name} | {a[0]:.2f} s, {a[1]:.2f} s | {b[0]:.2f} s, {b[1]:.2f} s "
              f"| {100 * (b[0] / a[0] - 1):+.1f} %, {100 * (b[1] / a[1] - 1):+.1f} % |",
              flush=True)


if __name__ == "__main__":
    main()
