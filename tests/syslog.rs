//! Syslog output against a real collector: rsyslog, started by each test
//! with its own configuration and working directory in a temporary
//! directory, listening on loopback ports the test picked (never any other
//! address). The tests skip (and say why) when `rsyslogd` is not installed;
//! `.ci/run` installs it, so CI runs them.
//!
//! The tests run in parallel; a port is chosen by binding port 0 and
//! closing, so it is free only until something else binds it. Choosing
//! ports and binding them happen under one lock ([`lock_ports`]).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rsyslogd() -> Option<PathBuf> {
    let found = [
        "/usr/sbin/rsyslogd",
        "/sbin/rsyslogd",
        "/usr/local/sbin/rsyslogd",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists());
    if found.is_none() {
        eprintln!("skipping: rsyslogd is not installed (apt-get install rsyslog; .ci/run does)");
    }
    found
}

/// Held by a test from choosing its loopback ports until its collector has
/// bound them (a dead collector's port: until the test ends). rsyslogd
/// binds a port the test chose only after the test closed it, and a
/// restarted one binds it again; meanwhile another test's choice could
/// land on it (a "dead" collector then reached a live one, and a collector
/// got another test's events too). Under the lock nothing else in this
/// binary picks or binds a port.
static PORTS: Mutex<()> = Mutex::new(());

/// A test that failed holding the lock does not fail the others.
fn lock_ports() -> MutexGuard<'static, ()> {
    PORTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes the guard: a port is chosen only under the lock.
fn free_tcp_port(_ports: &MutexGuard<'_, ()>) -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port(_ports: &MutexGuard<'_, ()>) -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An rsyslogd in the foreground with its own config and work directory.
struct Rsyslog {
    bin: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

impl Rsyslog {
    fn start(bin: &Path, dir: &Path, config: &str) -> Rsyslog {
        std::fs::write(dir.join("rsyslog.conf"), config).unwrap();
        let mut r = Rsyslog {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            child: None,
        };
        r.restart();
        r
    }

    fn restart(&mut self) {
        assert!(self.child.is_none());
        let _ = std::fs::remove_file(self.dir.join("rsyslogd.pid"));
        let child = Command::new(&self.bin)
            .arg("-n")
            .arg("-f")
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join("rsyslogd.err"))
                    .unwrap(),
            ))
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGTERM (rsyslog flushes its outputs), then wait for it to exit.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(self.dir.join("rsyslogd.err")).unwrap_or_default()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until `cond` holds (polling), at most `secs`.
fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Sends an octet-counted message until rsyslog has written it to `file`:
/// TCP is listening and messages go through.
fn wait_tcp(port: u16, file: &Path) {
    assert!(
        wait_for(10, || {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let m = "<134>1 - - probe - - - READY";
                let _ = s.write_all(format!("{} {m}", m.len()).as_bytes());
                std::thread::sleep(Duration::from_millis(100));
            }
            lines(file).iter().any(|l| l == "READY")
        }),
        "rsyslog did not listen on TCP {port}"
    );
}

/// Sends a datagram until rsyslog has written it: UDP is listening.
fn wait_udp(port: u16, file: &Path) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(
        wait_for(10, || {
            let _ = s.send_to(b"<134>1 - - probe - - - READY", ("127.0.0.1", port));
            std::thread::sleep(Duration::from_millis(50));
            lines(file).iter().any(|l| l == "READY")
        }),
        "rsyslog did not listen on UDP {port}"
    );
}

fn policy() -> Vec<&'static str> {
    vec![
        "--local-domain",
        "example.net",
        "--trusted-net",
        "127.0.0.0/24",
        "--trusted-net",
        "::1/128",
    ]
}

/// The output line of the replay summary for `output`: (written, dropped).
fn summary_counts(stderr: &str, output: &str) -> (u64, u64) {
    let prefix = format!("  output {output}: ");
    let l = stderr
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no summary line for {output} in:\n{stderr}"));
    let num = |word: &str| -> u64 {
        let rest = &l[l.find(word).unwrap() + word.len()..];
        rest.trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (num("written "), num("dropped "))
}

/// The summary's count of drops the outage lines reported, for `output`.
fn summary_outage_drops(stderr: &str, output: &str) -> u64 {
    let prefix = format!("  output {output}: ");
    let l = stderr
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no summary line for {output} in:\n{stderr}"));
    l.split(" dropped during them)")
        .next()
        .and_then(|head| head.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no outage drops in {l}"))
}

/// RFC 5424 severity the docs promise for an event.
fn expected_severity(e: &Value) -> u64 {
    let ev = &e["event"];
    if ev["kind"] == "alert" {
        match ev["severity"].as_u64() {
            Some(s) if s >= 73 => 2,
            Some(s) if s >= 47 => 3,
            Some(s) if s >= 21 => 4,
            _ => 5,
        }
    } else if ev["dataset"] == "qmwatch.anomaly" {
        5
    } else {
        6
    }
}

#[test]
fn every_event_arrives_over_udp_tcp_and_unix_and_matches_the_file() {
    let Some(bin) = rsyslogd() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let ports = lock_ports();
    let (udp, tcp) = (free_udp_port(&ports), free_tcp_port(&ports));
    let sock = d.join("log.sock");
    let config = format!(
        r#"global(workDirectory="{dir}" maxMessageSize="256k")
module(load="imudp")
module(load="imtcp")
module(load="imuxsock" SysSock.Use="off")
template(name="msgonly" type="string" string="%msg%\n")
template(name="header" type="string" string="%syslogfacility%|%syslogseverity%|%hostname%|%app-name%|%procid%|%msgid%|%timereported:::date-rfc3339%|%msg%\n")
ruleset(name="u") {{ action(type="omfile" file="{dir}/udp.log" template="msgonly") }}
ruleset(name="t") {{
  action(type="omfile" file="{dir}/tcp.log" template="msgonly")
  action(type="omfile" file="{dir}/tcp-header.log" template="header")
}}
ruleset(name="x") {{ action(type="omfile" file="{dir}/unix.log" template="msgonly") }}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="u")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="t")
input(type="imuxsock" socket="{sock}" useSpecialParser="off" parseHostname="on" ruleset="x" rateLimit.interval="0")
"#,
        dir = d.display(),
        sock = sock.display()
    );
    let mut rs = Rsyslog::start(&bin, d, &config);
    wait_tcp(tcp, &d.join("tcp.log"));
    wait_udp(udp, &d.join("udp.log"));
    assert!(wait_for(10, || sock.exists()), "{}", rs.errors());
    // rsyslogd holds both ports now, until the end.
    drop(ports);

    let file = d.join("events.json");
    let (u, t, x) = (
        format!("syslog+udp://127.0.0.1:{udp}"),
        format!("syslog+tcp://127.0.0.1:{tcp}"),
        format!("syslog+unix://{}", sock.display()),
    );
    let mut args: Vec<String> = vec!["replay".into()];
    args.extend(policy().iter().map(|s| s.to_string()));
    for o in [&u, &t, &x] {
        args.push("--output".into());
        args.push(o.clone());
    }
    args.extend([
        "--output".to_string(),
        file.display().to_string(),
        "--syslog-facility".into(),
        "daemon".into(),
        "--syslog-app-name".into(),
        "qmw-test".into(),
    ]);
    let mut captures: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.to_string_lossy();
            n.ends_with(".pcap") || n.ends_with(".pcapng")
        })
        .collect();
    captures.sort();
    args.extend(captures.iter().map(|p| p.display().to_string()));
    let out = Command::new(env!("CARGO_BIN_EXE_qmwatch"))
        .args(&args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    let want = lines(&file);
    assert!(want.len() > 50, "{}", want.len());
    let n = want.len();
    let got = |name: &str| -> Vec<String> {
        lines(&d.join(name))
            .into_iter()
            .filter(|l| l != "READY")
            .collect()
    };
    assert!(
        wait_for(20, || ["udp.log", "tcp.log", "unix.log"]
            .iter()
            .all(|f| got(f).len() >= n)),
        "not everything arrived: udp {} tcp {} unix {} of {n}\n{stderr}\n{}",
        got("udp.log").len(),
        got("tcp.log").len(),
        got("unix.log").len(),
        rs.errors()
    );
    rs.stop();
    // Intact: byte for byte what the file output wrote, in the same order.
    for f in ["udp.log", "tcp.log", "unix.log"] {
        assert_eq!(got(f), want, "{f} differs from the file output");
    }
    for o in [&u, &t, &x] {
        assert_eq!(summary_counts(&stderr, o), (n as u64, 0), "{o}\n{stderr}");
    }
    // The RFC 5424 header: facility, severity from the event, HOSTNAME =
    // observer.hostname, APP-NAME, PROCID, MSGID = dataset, TIMESTAMP.
    let headers: Vec<String> = got("tcp-header.log")
        .into_iter()
        .filter(|h| !h.ends_with("|READY"))
        .collect();
    assert_eq!(headers.len(), n);
    for (h, line) in headers.iter().zip(&want) {
        let e: Value = serde_json::from_str(line).unwrap();
        let f: Vec<&str> = h.splitn(8, '|').collect();
        assert_eq!(f.len(), 8, "{h}");
        assert_eq!(f[0], "3", "facility daemon: {h}");
        assert_eq!(f[1], expected_severity(&e).to_string(), "severity: {h}");
        assert_eq!(f[2], e["observer"]["hostname"].as_str().unwrap());
        assert_eq!(f[3], "qmw-test");
        assert!(f[4].parse::<u32>().is_ok(), "procid: {h}");
        assert_eq!(f[5], e["event"]["dataset"].as_str().unwrap());
        let ts = e["@timestamp"].as_str().unwrap();
        assert!(f[6].starts_with(&ts[..19]), "timestamp {} vs {ts}", f[6]);
        assert_eq!(f[7], line);
    }
}

/// `copies` copies of a capture's sessions, each 60 s later than the last
/// and with other client ports, as one classic pcap: a long capture.
fn long_capture(src: &Path, copies: u32) -> (Vec<u8>, Vec<usize>) {
    let d = std::fs::read(src).unwrap();
    assert_eq!(&d[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap");
    let mut recs = Vec::new();
    let mut off = 24;
    while off + 16 <= d.len() {
        let u = |i: usize| u32::from_le_bytes(d[off + i..off + i + 4].try_into().unwrap());
        let (s, us, cap, orig) = (u(0), u(4), u(8) as usize, u(12));
        recs.push((s, us, d[off + 16..off + 16 + cap].to_vec(), orig));
        off += 16 + cap;
    }
    let mut out = d[..24].to_vec();
    let mut ends = Vec::new();
    for k in 0..copies {
        for (s, us, frame, orig) in &recs {
            let mut f = frame.clone();
            if f.len() > 34 && f[12..14] == [0x08, 0x00] {
                let t = 14 + usize::from(f[14] & 15) * 4;
                let sp = u16::from_be_bytes([f[t], f[t + 1]]);
                let at = if sp == 2209 { t + 2 } else { t };
                let p = u16::from_be_bytes([f[at], f[at + 1]]).wrapping_add((k * 7) as u16);
                f[at..at + 2].copy_from_slice(&p.to_be_bytes());
            }
            out.extend_from_slice(&(s + k * 60).to_le_bytes());
            out.extend_from_slice(&us.to_le_bytes());
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(&orig.to_le_bytes());
            out.extend_from_slice(&f);
        }
        ends.push(out.len());
    }
    (out, ends)
}

/// Reads a child's stderr into a shared buffer, line by line.
fn collect_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let err = child.stderr.take().unwrap();
    let b = Arc::clone(&buf);
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let mut s = b.lock().unwrap_or_else(|e| e.into_inner());
            s.push_str(&l);
            s.push('\n');
        }
    });
    buf
}

#[test]
fn a_collector_restart_loses_only_what_the_summary_counts() {
    let Some(bin) = rsyslogd() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Held until the restarted rsyslogd has the port back (step 3).
    let ports = lock_ports();
    let tcp = free_tcp_port(&ports);
    let config = format!(
        r#"global(workDirectory="{dir}" maxMessageSize="256k")
module(load="imtcp")
template(name="msgonly" type="string" string="%msg%\n")
ruleset(name="t") {{ action(type="omfile" file="{dir}/tcp.log" template="msgonly") }}
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="t")
"#,
        dir = d.display()
    );
    let mut rs = Rsyslog::start(&bin, d, &config);
    wait_tcp(tcp, &d.join("tcp.log"));

    let (cap, ends) = long_capture(&root().join("fixtures/qmtp-open-relay-2209.pcap"), 16);
    let file = d.join("events.json");
    let target = format!("syslog+tcp://127.0.0.1:{tcp}");
    let mut args: Vec<String> = vec!["replay".into(), "--block-size".into(), "512".into()];
    args.extend(policy().iter().map(|s| s.to_string()));
    args.extend([
        "--output".to_string(),
        target.clone(),
        "--output".into(),
        file.display().to_string(),
        "--output-queue".into(),
        "30".into(),
        "--syslog-retry-max".into(),
        "1".into(),
        "-".into(),
    ]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_qmwatch"))
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = collect_stderr(&mut child);
    let mut stdin = child.stdin.take().unwrap();
    let received = || {
        lines(&d.join("tcp.log"))
            .into_iter()
            .filter(|l| l != "READY")
            .collect::<Vec<_>>()
    };
    let produced = || lines(&file);

    // 1. Collector up: copies 0-4 arrive (written a copy at a time, so that
    //    a busy machine cannot make the queue overflow before the outage).
    let mut at = 0;
    for end in &ends[..5] {
        stdin.write_all(&cap[at..*end]).unwrap();
        stdin.flush().unwrap();
        at = *end;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        wait_for(20, || {
            let p = produced().len();
            p > 40 && received().len() == p
        }),
        "before the outage: produced {} received {}, missing at {:?}\n{}\nrsyslog: {}",
        produced().len(),
        received().len(),
        {
            let r = received();
            produced()
                .iter()
                .enumerate()
                .filter(|(_, l)| !r.contains(l))
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        },
        stderr.lock().unwrap(),
        rs.errors()
    );
    let before = received().len();

    // 2. Collector stopped: copies 5-12 (about 100 events) are produced
    //    meanwhile; the queue (30 events) keeps the newest and counts the
    //    rest.
    rs.stop();
    stdin.write_all(&cap[ends[4]..ends[12]]).unwrap();
    stdin.flush().unwrap();
    assert!(
        wait_for(20, || stderr
            .lock()
            .unwrap()
            .contains("collector unreachable")),
        "no outage line:\n{}",
        stderr.lock().unwrap()
    );
    let mut last = 0;
    assert!(wait_for(20, || {
        let p = produced().len();
        let settled = p == last && p > before + 60;
        last = p;
        std::thread::sleep(Duration::from_millis(200));
        settled
    }));
    assert!(child.try_wait().unwrap().is_none(), "qmwatch stopped");

    // 3. Collector back: qmwatch reconnects; copies 13-15 follow.
    rs.restart();
    assert!(
        wait_for(30, || stderr
            .lock()
            .unwrap()
            .contains("collector reachable again")),
        "no reconnect:\n{}\n{}",
        stderr.lock().unwrap(),
        rs.errors()
    );
    // The restarted rsyslogd holds the port again, until the end.
    drop(ports);
    // A copy at a time, each delivered before the next: a queue overflow
    // after the reconnect (a busy machine stalling the sender) would make
    // the summary count more than the outage line, by the test's doing.
    for k in 13..16 {
        let p0 = produced().len();
        stdin.write_all(&cap[ends[k - 1]..ends[k]]).unwrap();
        stdin.flush().unwrap();
        assert!(
            wait_for(20, || {
                let (p, r) = (produced(), received());
                p.len() > p0 && p[p0..].iter().all(|l| r.contains(l))
            }),
            "copy {k} not delivered:\n{}",
            stderr.lock().unwrap()
        );
    }
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("qmwatch hung:\n{}", stderr.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The stderr reader has the whole output once the pipe closes.
    assert!(wait_for(10, || stderr
        .lock()
        .unwrap()
        .contains("qmwatch replay summary")));
    std::thread::sleep(Duration::from_millis(100));
    let err = stderr.lock().unwrap().clone();
    assert_eq!(status.code(), Some(0), "{err}");

    let all = produced();
    let (written, dropped) = summary_counts(&err, &target);
    assert!(wait_for(20, || received().len() as u64 >= written), "{err}");
    rs.stop();
    let got = received();
    // Intact, never twice, and exactly what the summary says was written.
    assert_eq!(got.len() as u64, written, "{err}");
    let mut uniq = got.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), got.len(), "duplicates");
    for l in &got {
        assert!(all.contains(l), "not from the file output: {l}");
    }
    // The drop counter is what did not arrive.
    assert!(
        dropped > 0,
        "the outage should have overflowed the queue\n{err}"
    );
    assert_eq!(got.len() as u64 + dropped, all.len() as u64, "{err}");
    // One line when the outage began, one when it ended, with the count.
    assert_eq!(err.matches("collector unreachable").count(), 1, "{err}");
    assert_eq!(err.matches("collector reachable again").count(), 1, "{err}");
    // The outage line's count is the summary's count of outage drops, by
    // construction; the other drops (if a busy machine let the queue
    // overflow while the collector was up) are in the total only.
    let in_line: u64 = err
        .split(" event(s) dropped during the outage")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no outage count\n{err}"));
    assert!(in_line > 0, "{err}");
    assert_eq!(in_line, summary_outage_drops(&err, &target), "{err}");
    assert!(in_line <= dropped, "{in_line} vs {dropped}\n{err}");
    // Everything produced after the reconnect arrived: copies 13-15.
    let restart_ts = {
        let e: Value = serde_json::from_str(&all[0]).unwrap();
        let first = e["@timestamp"].as_str().unwrap().to_string();
        // Copies are 60 s apart; copy 13 starts 780 s after copy 0.
        let secs: u64 = first[17..19].parse::<u64>().unwrap()
            + 60 * first[14..16].parse::<u64>().unwrap()
            + 3600 * first[11..13].parse::<u64>().unwrap();
        secs + 13 * 60 - 5
    };
    let late: Vec<&String> = all
        .iter()
        .filter(|l| {
            let e: Value = serde_json::from_str(l).unwrap();
            let t = e["@timestamp"].as_str().unwrap();
            let secs: u64 = t[17..19].parse::<u64>().unwrap()
                + 60 * t[14..16].parse::<u64>().unwrap()
                + 3600 * t[11..13].parse::<u64>().unwrap();
            secs >= restart_ts
        })
        .collect();
    assert!(late.len() >= 30, "{}", late.len());
    for l in late {
        assert!(got.contains(l), "lost after the reconnect: {l}");
    }
}

#[test]
fn a_dead_collector_does_not_hang_a_replay() {
    // Nothing listens on this loopback port: every connection is refused.
    // The lock stays held to the end, so no other test's collector binds it.
    let ports = lock_ports();
    let port = free_tcp_port(&ports);
    let target = format!("syslog+tcp://127.0.0.1:{port}");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("events.json");
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_qmwatch"))
        .args(["replay", "--output", &target, "--output"])
        .arg(&file)
        .args(["--syslog-drain-timeout", "1"])
        .args(policy())
        .arg(root().join("fixtures/qmtp-open-relay-2209.pcap"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    let n = lines(&file).len() as u64;
    assert!(n > 0);
    assert_eq!(summary_counts(&err, &target), (0, n), "{err}");
    assert_eq!(err.matches("collector unreachable").count(), 1, "{err}");
    assert!(
        err.contains(&format!("{n} event(s) not delivered")),
        "{err}"
    );
    // Down from start to end: every drop is the outage's, on its line and
    // in the summary.
    assert!(
        err.contains(&format!("{n} event(s) dropped during the outage")),
        "{err}"
    );
    assert_eq!(summary_outage_drops(&err, &target), n, "{err}");
}

#[test]
fn bad_outputs_are_rejected_before_anything_runs() {
    let cap = root().join("fixtures/qmtp-open-relay-2209.pcap");
    for (target, says) in [
        ("syslog+tcp://127.0.0.1", "a port is required"),
        ("syslog+udp://::1:514", "brackets"),
        ("syslog+smtp://127.0.0.1:25", "unknown scheme"),
        ("syslog+unix://dev/log", "absolute"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_qmwatch"))
            .args(["replay", "--quiet", "--output", target])
            .arg(&cap)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{target}: {err}");
        assert!(err.contains(says), "{target}: {err}");
        assert!(out.stdout.is_empty());
    }
    let out = Command::new(env!("CARGO_BIN_EXE_qmwatch"))
        .args(["replay", "--syslog-facility", "local9", "-"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("facility"));
}
