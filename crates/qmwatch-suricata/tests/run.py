#!/usr/bin/env python3
"""Suricata with the qmwatch plugin against `qmwatch replay`, on every fixture.

Usage (from the repository root, after `cargo build --release` and the
plugin's build.sh):

    SURICATA=/opt/suricata-8.0.6/bin/suricata \
    PLUGIN=crates/qmwatch-suricata/target/release/libqmwatch_suricata.so \
    python3 crates/qmwatch-suricata/tests/run.py [--variants DIR] [--out DIR]

For each fixtures/*.pcap / *.pcapng (with its .labels.json):

- transactions: Suricata's qmtp/qmqp EVE records and qmwatch's
  `qmwatch.transaction` events must be the same multiset of (client,
  server, protocol, sender, [(recipient, code, text)]);
- the example rules (rules/qmwatch.rules) must fire exactly where the
  labels say: open relay, refused relay, probe, unexpected service; on
  neg-* captures nothing at all;
- a derived capture (neg-smtp with port 25 rewritten to 209 by this
  script) must fire the "SMTP spoken to a QMTP/QMQP port"
  rule on every flow, and no other rule.

--variants DIR: also run every capture in DIR (evasion variants named
FIXTURE-VARIANT.pcap, as tests/fragroute.rs keeps them with
QMWATCH_KEEP_VARIANTS) and print a table: `same` (the fixture's
transactions), `anomaly` (different, with an app-layer anomaly on the
flow), `MISSED` (different, no anomaly). Variants never fail the run; the
table is the result.

Prints `N passed, M failed` last; exits non-zero on any failure.
"""

import ipaddress
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
CRATE = HERE.parent
ROOT = CRATE.parent.parent
FIXTURES = ROOT / "fixtures"
RULES = CRATE / "rules" / "qmwatch.rules"

SURICATA = os.environ.get("SURICATA", "suricata")
PLUGIN = os.environ.get(
    "PLUGIN", str(CRATE / "target" / "release" / "libqmwatch_suricata.so"))
QMWATCH = os.environ.get("QMWATCH", str(ROOT / "target" / "release" / "qmwatch"))

# The labels' policy: trusted 127.0.0.0/24 and ::1, local domain example.net;
# sanctioned servers: the standard ports on 127.0.0.1 and ::1.
YAML = """%YAML 1.1
---
plugins:
  - {plugin}
vars:
  address-groups:
    HOME_NET: "[127.0.0.0/8,::1]"
    EXTERNAL_NET: "!$HOME_NET"
    QM_TRUSTED: "[127.0.0.0/24,::1]"
    QMTP_SERVERS: "[127.0.0.1,::1]"
    QMQP_SERVERS: "[127.0.0.1,::1]"
  port-groups:
    QMTP_PORTS: "209"
    QMQP_PORTS: "628"
default-log-dir: .
stats:
  enabled: no
app-layer:
  protocols:
    qmtp:
      enabled: yes
      detection-ports:
        dp: 209
    qmqp:
      enabled: yes
      detection-ports:
        dp: 628
    smtp:
      enabled: yes
stream:
  midstream: true
  reassembly:
    # Two contents for the same stream bytes (evasion): a stream event.
    check-overlap-different-data: true
outputs:
  - eve-log:
      enabled: yes
      filetype: regular
      filename: eve.json
      types:
        - alert
        - anomaly:
            enabled: yes
            types:
              decode: yes
              stream: yes
              applayer: yes
        - qmtp
        - qmqp
        - flow
logging:
  outputs:
    - console:
        enabled: yes
        level: warning
"""

SID_OPEN = {9209010, 9209011}
SID_REFUSED = {9209020, 9209021}
SID_PROBE = {9209040, 9209041}
SID_SMTP = {9209030, 9209031, 9209032}
SID_UNEXPECTED = {9209001, 9209002, 9209003, 9209004}
SID_ANOMALY = {9209031, 9209032, 9209050, 9209051, 9209052, 9209053, 9209054}


def endpoint(ip, port):
    ip = str(ipaddress.ip_address(ip))
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def run_suricata(capture, outdir, yaml_path, checksums="none", rules=RULES):
    outdir.mkdir(parents=True, exist_ok=True)
    for old in outdir.iterdir():
        if old.is_file():
            old.unlink()  # Suricata appends to an existing eve.json
    cmd = [SURICATA, "-r", str(capture), "-c", str(yaml_path), "-S", str(rules),
           "-l", str(outdir), "--runmode", "single", "-k", checksums]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"suricata failed on {capture}: {p.stderr[-2000:]}")
    eve = outdir / "eve.json"
    events = []
    if eve.exists():
        for line in eve.read_text().splitlines():
            if line.strip():
                events.append(json.loads(line))
    return events, p.stderr


ANOMALY_BUFFER = re.compile(r'(qmtp|qmqp)\.anomaly; content:"(\w+)"; startswith; endswith;')


def event_form(rules_text):
    """The example rules with each `anomaly` buffer match written as the
    app-layer event of the same name: the two must fire alike."""
    return ANOMALY_BUFFER.sub(r"app-layer-event:\1.\2;", rules_text)


def anomaly_alerts(events):
    """(sid, flow) of every alert of an anomaly rule, with its count."""
    out = Counter()
    for e in events:
        if e.get("event_type") == "alert" and e["alert"]["signature_id"] in SID_ANOMALY:
            a = endpoint(e["src_ip"], e["src_port"])
            b = endpoint(e["dest_ip"], e["dest_port"])
            out[(e["alert"]["signature_id"], a, b)] += 1
    return out


def suricata_transactions(events):
    out = Counter()
    for e in events:
        proto = e.get("event_type")
        if proto not in ("qmtp", "qmqp"):
            continue
        r = e[proto]
        if r.get("record") != "transaction" or "from" not in r:
            continue
        replies = tuple((x["recipient"], x.get("code"), x.get("text"))
                        for x in r.get("replies", []))
        out[(endpoint(e["src_ip"], e["src_port"]), endpoint(e["dest_ip"], e["dest_port"]),
             r.get("protocol", proto), r["from"], replies)] += 1
    return out


def suricata_anomaly_flows(events):
    flows = set()
    for e in events:
        proto = e.get("event_type")
        if proto in ("qmtp", "qmqp") and e[proto].get("anomalies"):
            flows.add((endpoint(e["src_ip"], e["src_port"]),
                       endpoint(e["dest_ip"], e["dest_port"])))
        if proto == "anomaly" and "src_port" in e:
            a = endpoint(e["src_ip"], e["src_port"])
            b = endpoint(e["dest_ip"], e["dest_port"])
            flows.add((a, b))
            flows.add((b, a))
    return flows


def qmwatch_transactions(capture):
    p = subprocess.run([QMWATCH, "replay", str(capture)], capture_output=True, text=True)
    if p.returncode not in (0, 1):
        raise RuntimeError(f"qmwatch replay failed on {capture}: {p.stderr[-2000:]}")
    out = Counter()
    for line in p.stdout.splitlines():
        e = json.loads(line)
        if e.get("event", {}).get("dataset") != "qmwatch.transaction":
            continue
        sender = e.get("email", {}).get("from", {}).get("address")
        if sender is None:
            continue  # a reply with no request, or a request with no sender
        replies = tuple((x["recipient"], x.get("code"), x.get("text"))
                        for x in e["qmwatch"].get("replies", []))
        out[(endpoint(e["source"]["ip"], e["source"]["port"]),
             endpoint(e["destination"]["ip"], e["destination"]["port"]),
             e["network"]["protocol"], sender, replies)] += 1
    return out


def portmap(src, dst, old, new):
    """Copies a classic pcap, moving TCP port `old` to `new` (IPv4 over
    Ethernet, Linux cooked v1/v2 or raw IP; checksums are not fixed:
    Suricata runs with -k none)."""
    data = bytearray(Path(src).read_bytes())
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    l2 = {1: 14, 113: 16, 276: 20, 101: 0, 12: 0}[linktype]
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack(endian + "I", data[off + 8:off + 12])[0]
        pkt = off + 16
        ip = pkt + l2
        if ip < len(data) and data[ip] >> 4 == 4 and data[ip + 9] == 6:
            tcp = ip + (data[ip] & 0x0F) * 4
            for at in (tcp, tcp + 2):
                if struct.unpack(">H", data[at:at + 2])[0] == old:
                    data[at:at + 2] = struct.pack(">H", new)
        off = pkt + incl
    Path(dst).write_bytes(bytes(data))


def label_endpoint(s):
    # "127.0.0.1:209" or "[::1]:209" / "::1:209"
    if s.startswith("["):
        host, port = s[1:].split("]:")
    else:
        host, port = s.rsplit(":", 1)
    return endpoint(host, int(port))


def expected_alerts(labels):
    """(open, refused, probe, unexpected) flow sets from the labels."""
    local = [d.lower() for d in labels["policy"]["local_domains"]]
    opened, refused, probe = set(), set(), set()
    for s in labels["sessions"]:
        if s.get("protocol") not in ("qmtp", "qmqp"):
            continue
        key = (label_endpoint(s["client"]), label_endpoint(s["server"]))
        trusted = s.get("client_trusted", False)
        if s.get("scanner_probe"):
            probe.add(key)
        for t in s.get("transactions", []):
            for r in t.get("recipients", []):
                addr = r["address"].lower()
                foreign = "@" in addr and not any(addr.endswith("@" + d) for d in local)
                code = (r.get("reply") or {}).get("code")
                if trusted or not foreign:
                    continue
                if code == "K":
                    opened.add(key)
                elif code == "D":
                    refused.add(key)
    unexpected = set()
    for svc in labels["services"]:
        if svc.get("detect") != "required":
            continue
        std = {"qmtp": 209, "qmqp": 628}[svc["protocol"]]
        ip = str(ipaddress.ip_address(svc["ip"]))
        if svc["port"] != std or ip not in ("127.0.0.1", "::1"):
            unexpected.add(endpoint(ip, svc["port"]))
    return opened, refused, probe, unexpected


def alerts_by_sid(events):
    by = defaultdict(set)
    for e in events:
        if e.get("event_type") != "alert":
            continue
        sid = e["alert"]["signature_id"]
        # The rule headers name the client first; alerts may be raised on
        # either direction's packet: orient by the flow's server port.
        a = endpoint(e["src_ip"], e["src_port"])
        b = endpoint(e["dest_ip"], e["dest_port"])
        if e.get("direction") == "to_client":
            a, b = b, a
        by[sid].add((a, b))
    return by


def flows_of(by, sids):
    out = set()
    for sid in sids:
        out |= by.get(sid, set())
    return out


class Result:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, name, detail=""):
        if ok:
            self.passed += 1
            print(f"ok   {name}")
        else:
            self.failed += 1
            print(f"FAIL {name} {detail}")


def captures():
    return sorted(p for p in FIXTURES.iterdir()
                  if p.suffix in (".pcap", ".pcapng") and
                  (FIXTURES / (p.name.split(".")[0] + ".labels.json")).exists())


def main():
    args = sys.argv[1:]
    variants = None
    keep = None
    while args:
        a = args.pop(0)
        if a == "--variants":
            variants = Path(args.pop(0))
        elif a == "--out":
            keep = Path(args.pop(0))
        else:
            sys.exit(f"unknown argument {a}")
    tmp = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="qmwatch-suricata-"))
    tmp.mkdir(parents=True, exist_ok=True)
    yaml_path = tmp / "suricata.yaml"
    yaml_path.write_text(YAML.format(plugin=PLUGIN))
    res = Result()
    base = {}
    for cap in captures():
        name = cap.name.split(".")[0]
        labels = json.loads((FIXTURES / f"{name}.labels.json").read_text())
        events, _ = run_suricata(cap, tmp / name, yaml_path)
        st = suricata_transactions(events)
        qt = qmwatch_transactions(cap)
        base[name] = qt
        neg = name.startswith("neg-")
        if neg:
            res.check(not st and not any(e.get("event_type") in ("qmtp", "qmqp") for e in events),
                      f"{name}: no qmtp/qmqp records",
                      [e for e in events if e.get("event_type") in ("qmtp", "qmqp")][:3])
        else:
            res.check(sum(st.values()) > 0, f"{name}: Suricata reports transactions")
        diff_s = st - qt
        diff_q = qt - st
        res.check(not diff_s and not diff_q,
                  f"{name}: same {sum(st.values())} transactions as qmwatch replay",
                  f"\n  only Suricata: {list(diff_s.items())[:5]}"
                  f"\n  only qmwatch:  {list(diff_q.items())[:5]}")
        by = alerts_by_sid(events)
        if neg:
            sids = sorted(by)
            res.check(not sids, f"{name}: no alerts", sids)
            continue
        opened, refused, probe, unexpected = expected_alerts(labels)
        got_open = flows_of(by, SID_OPEN)
        got_ref = flows_of(by, SID_REFUSED)
        got_probe = flows_of(by, SID_PROBE)
        got_unexp = {b for (_, b) in flows_of(by, SID_UNEXPECTED)}
        res.check(got_open == opened, f"{name}: open-relay rule fires on {len(opened)} flows",
                  f"got {sorted(got_open)} want {sorted(opened)}")
        res.check(got_ref == refused, f"{name}: refused-relay rule fires on {len(refused)} flows",
                  f"got {sorted(got_ref)} want {sorted(refused)}")
        res.check(got_probe == probe, f"{name}: probe rule fires on {len(probe)} flows",
                  f"got {sorted(got_probe)} want {sorted(probe)}")
        res.check(got_unexp == unexpected,
                  f"{name}: unexpected-service rule fires on {len(unexpected)} servers",
                  f"got {sorted(got_unexp)} want {sorted(unexpected)}")
        res.check(not flows_of(by, SID_SMTP), f"{name}: no SMTP-at-QMTP alert")

    # SMTP spoken to a QMTP port: the negative capture moved to port 209.
    smtp209 = tmp / "smtp-to-209.pcap"
    portmap(FIXTURES / "neg-smtp.pcap", smtp209, 25, 209)
    events, _ = run_suricata(smtp209, tmp / "smtp-to-209", yaml_path)
    labels = json.loads((FIXTURES / "neg-smtp.labels.json").read_text())
    want = {(label_endpoint(s["client"]), label_endpoint(s["server"]).replace(":25", ":209"))
            for s in labels["sessions"]}
    by = alerts_by_sid(events)
    got = flows_of(by, SID_SMTP)
    res.check(got == want, f"smtp-to-209: SMTP-at-QMTP rule fires on {len(want)} flows",
              f"got {sorted(got)} want {sorted(want)}")
    others = set(by) - SID_SMTP
    res.check(not others, "smtp-to-209: no other rule fires", sorted(others))

    if variants is not None:
        table = defaultdict(dict)
        # The anomaly rules as app-layer-event rules, run on every variant:
        # they must fire where the example rules' `anomaly` buffer does.
        event_rules = tmp / "qmwatch-events.rules"
        event_rules.write_text(event_form(RULES.read_text()))
        agree = disagree = 0
        fired = Counter()
        for cap in sorted(variants.glob("*.pcap")):
            fixture, _, variant = cap.stem.partition("-")
            # Fixture names contain dashes: match the longest known prefix.
            for name in sorted(base, key=len, reverse=True):
                if cap.stem.startswith(name + "-"):
                    fixture, variant = name, cap.stem[len(name) + 1:]
                    break
            else:
                continue
            # The variants have valid checksums (tests/fragroute.rs rebuilds
            # them) unless made from the loopback captures as they are.
            checks = "none" if "offloaded" in cap.stem else "all"
            events, _ = run_suricata(cap, tmp / "variants" / cap.stem, yaml_path, checks)
            by_buffer = anomaly_alerts(events)
            by_event = anomaly_alerts(run_suricata(
                cap, tmp / "variants-events" / cap.stem, yaml_path, checks, event_rules)[0])
            if by_buffer == by_event:
                agree += 1
            else:
                disagree += 1
                print(f"  {cap.name}: anomaly buffer {sorted(by_buffer.items())} "
                      f"app-layer events {sorted(by_event.items())}")
            fired.update(sid for (sid, _, _) in by_buffer.elements())
            st = suricata_transactions(events)
            want = base[fixture]
            if st == want:
                cell = "same"
            else:
                flows_diff = {(k[0], k[1]) for k in (st - want) + (want - st)}
                anomalous = suricata_anomaly_flows(events)
                cell = "anomaly" if flows_diff <= anomalous else "MISSED"
            table[variant][fixture] = cell
        fixtures = sorted(base)
        print()
        print("| variant | " + " | ".join(fixtures) + " |")
        print("|---|" + "---|" * len(fixtures))
        counts = Counter()
        for variant in sorted(table):
            cells = [table[variant].get(f, "") for f in fixtures]
            counts.update(c for c in cells if c)
            print(f"| {variant} | " + " | ".join(cells) + " |")
        print()
        print("variant cells: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        res.check(disagree == 0 and sum(fired.values()) > 0,
                  f"variants: the anomaly rules fire alike as `anomaly` buffer and as "
                  f"app-layer-event rules on {agree} captures ({dict(sorted(fired.items()))})",
                  f"{disagree} captures differ")

    print(f"{res.passed} passed, {res.failed} failed")
    sys.exit(1 if res.failed else 0)


if __name__ == "__main__":
    main()
