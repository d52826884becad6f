//! Live capture (feature `live`) on a veth pair inside a network namespace
//! each test makes for itself: `qmwatch live` listens on one end, `tcpreplay`
//! sends the fixture captures onto the other, both inside the namespace, so
//! no frame leaves it (no address, no route, no forwarding: nothing in it
//! goes anywhere but across the pair). The namespace is removed whatever
//! happens (a Drop guard), after the sensor is killed (another).
//!
//! Needs root, `ip` (iproute2) and `tcpreplay`; without them each test says
//! why it skipped and passes, unless `QMWATCH_REQUIRE_LIVE=1` or `CI=true`
//! is set: then a skip fails (`.ci/run` sets the first, so a CI machine
//! that cannot run them is noticed).
//!
//! Covered: live gives the same transaction, service, relay and probe
//! events as `qmwatch replay` on the same files (one capture thread with one
//! and two workers, and `--fanout`); SIGTERM in the middle of a session
//! finishes it and writes the final statistics; SIGHUP reopens the output
//! file and no event is lost; a tiny worker queue under a flood counts queue
//! drops and the sensor stays up; `--user` drops root and still captures;
//! a missing interface, a bad filter and no permission are one line and
//! exit status 2.
#![cfg(feature = "live")]

mod common;

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::pcapio::*;
use common::*;
use serde_json::Value;

static SEQ: AtomicU32 = AtomicU32::new(0);

fn qmwatch() -> &'static str {
    env!("CARGO_BIN_EXE_qmwatch")
}

/// Whether a skip must fail: a CI run that cannot do live capture would
/// otherwise pass without testing it.
fn skips_fail() -> bool {
    std::env::var("QMWATCH_REQUIRE_LIVE").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Says why a test (or part of one) did not run; panics instead when
/// skipping is not allowed.
fn skip(why: &str) {
    assert!(
        !skips_fail(),
        "live test could not run ({why}); QMWATCH_REQUIRE_LIVE=1 or CI=true forbids skipping"
    );
    eprintln!("skipped: {why}");
}

/// Why live tests cannot run here, if they cannot.
fn cannot_run() -> Option<String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.as_deref() != Some("0") {
        return Some("not running as root (network namespaces need it)".into());
    }
    for tool in ["ip", "tcpreplay"] {
        if Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            return Some(format!(
                "`{tool}` is not installed (apt-get install iproute2 tcpreplay)"
            ));
        }
    }
    None
}

fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A network namespace holding a veth pair, removed when dropped.
struct Netns {
    name: String,
    /// The end qmwatch captures on.
    capture: String,
    /// The end tcpreplay sends on.
    send: String,
}

impl Netns {
    /// A namespace named for this test process and test; `None` (with the
    /// reason printed) when live tests cannot run on this machine.
    fn new() -> Option<Netns> {
        if let Some(why) = cannot_run() {
            skip(&why);
            return None;
        }
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("qmwatch-test-{pid}-{n}");
        if let Err(e) = sh("ip", &["netns", "add", &name]) {
            skip(&format!("cannot create a network namespace: {e}"));
            return None;
        }
        // From here on the guard removes it, whatever happens.
        let ns = Netns {
            name,
            capture: format!("qmc{}x{n}", pid % 10_000_000),
            send: format!("qms{}x{n}", pid % 10_000_000),
        };
        ns.ip(&[
            "link",
            "add",
            &ns.capture,
            "type",
            "veth",
            "peer",
            "name",
            &ns.send,
        ]);
        for dev in [&ns.capture, &ns.send] {
            // Loopback captures carry frames up to 64 KiB.
            ns.ip(&["link", "set", dev, "mtu", "65535", "up"]);
        }
        // No IPv6 autoconfiguration chatter on the pair.
        let _ = sh(
            "ip",
            &[
                "netns",
                "exec",
                &ns.name,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
            ],
        );
        Some(ns)
    }

    fn ip(&self, args: &[&str]) {
        let mut v = vec!["-n", self.name.as_str()];
        v.extend_from_slice(args);
        sh("ip", &v).unwrap_or_else(|e| panic!("{e}"));
    }

    /// `program` run inside the namespace.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Sends the captures onto the pair (inside the namespace).
    fn replay(&self, pcaps: &[PathBuf], opts: &[&str]) {
        let out = self
            .command("tcpreplay")
            .args(["-q", "-i", &self.send])
            .args(opts)
            .args(pcaps)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tcpreplay: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A running `qmwatch live`, killed if still running when dropped.
struct Sensor {
    child: Option<Child>,
    events: PathBuf,
    stderr: PathBuf,
}

impl Sensor {
    /// Starts `qmwatch live -i <capture end> -o <dir>/events.json ARGS`
    /// inside the namespace and waits until it captures.
    fn start(ns: &Netns, dir: &Path, args: &[&str]) -> Sensor {
        let events = dir.join("events.json");
        let stderr = dir.join("stderr.txt");
        let mut cmd = ns.command(qmwatch());
        cmd.args(["live", "-i", &ns.capture, "-o"])
            .arg(&events)
            .args(policy())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).unwrap());
        let mut s = Sensor {
            child: Some(cmd.spawn().unwrap()),
            events,
            stderr,
        };
        let t0 = Instant::now();
        while !s.stderr_text().contains("capturing on") {
            if let Some(st) = s.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("qmwatch live ended at once ({st}): {}", s.stderr_text());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "qmwatch live did not start: {}",
                s.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn pid(&self) -> String {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0).to_string()
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        sh("kill", &["-s", sig, &self.pid()]).unwrap();
    }

    /// The events written so far (a line still being written is left out).
    fn events(&self) -> Vec<Value> {
        read_events(&self.events)
    }

    /// Waits (at most 30 s) until the events written satisfy `done`.
    fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let t0 = Instant::now();
        loop {
            let ev = self.events();
            if done(&ev) {
                return ev;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}; {} events so far; stderr:\n{}",
                ev.len(),
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits for the exit: its status and standard error.
    fn stop(mut self) -> (i32, String) {
        self.signal("TERM");
        let mut child = self.child.take().unwrap();
        let t0 = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!(
                    "qmwatch live did not stop on SIGTERM: {}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status.code().unwrap_or(-1), self.stderr_text())
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn read_events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect()
}

/// The fixtures' site policy (every fixture has the same one).
fn policy() -> Vec<String> {
    policy_args(&labels(&fixtures().join("qmtp-open-relay-2209.pcap")))
}

/// Every labelled fixture, rewritten as Ethernet classic pcap (tcpreplay
/// sends Ethernet frames) into `dir`.
fn as_ethernet(dir: &Path, caps: &[PathBuf]) -> Vec<PathBuf> {
    caps.iter()
        .map(|cap| {
            let name = cap.file_name().unwrap().to_string_lossy().to_string();
            let out = dir.join(format!("{name}.eth.pcap"));
            let mut w = PcapWriter::new(BufWriter::new(File::create(&out).unwrap())).unwrap();
            for f in read_capture(cap) {
                w.frame(&f).unwrap();
            }
            drop(w);
            out
        })
        .collect()
}

/// The findings to compare, without what depends on the capture time or
/// on which worker saw a server first.
fn finding(e: &Value) -> Option<String> {
    let ds = dataset(e);
    if ds == "qmwatch.service" {
        let s = &e["qmwatch"]["service"];
        return Some(format!(
            "service {}:{} {} sanctioned={} {}",
            s["address"], s["port"], s["protocol"], s["sanctioned"], e["event"]["kind"]
        ));
    }
    if !["qmwatch.transaction", "qmwatch.relay", "qmwatch.probe"].contains(&ds) {
        return None;
    }
    let mut e = e.clone();
    let m = e.as_object_mut()?;
    m.remove("@timestamp");
    m.remove("observer");
    m.get_mut("event")?.as_object_mut()?.remove("id");
    serde_json::to_string(&e).ok()
}

fn findings(events: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = events.iter().filter_map(finding).collect();
    v.sort();
    v
}

fn replay_events(caps: &[PathBuf]) -> Vec<Value> {
    let mut args: Vec<String> = vec!["replay".into(), "--quiet".into()];
    args.extend(policy());
    args.extend(caps.iter().map(|p| p.to_string_lossy().into_owned()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let (events, stderr, code) = run_qmwatch(&a, None);
    assert_eq!(code, 0, "{stderr}");
    events
}

fn count(events: &[Value], ds: &str) -> usize {
    events.iter().filter(|e| dataset(e) == ds).count()
}

fn final_stats(events: &[Value]) -> Option<&Value> {
    events
        .iter()
        .rfind(|e| dataset(e) == "qmwatch.stats" && e["qmwatch"]["stats"]["final"] == true)
}

fn same_findings_as_replay(args: &[&str]) {
    let Some(ns) = Netns::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let caps = captures();
    let eth = as_ethernet(dir.path(), &caps);
    let want = replay_events(&caps);
    let want_tx = count(&want, "qmwatch.transaction");
    assert!(want_tx > 40, "{want_tx}");
    let mut a = vec!["--stats-interval", "1h"];
    a.extend_from_slice(args);
    let sensor = Sensor::start(&ns, dir.path(), &a);
    ns.replay(&eth, &["--pps", "5000"]);
    // Sessions that end with a FIN are reported at once; the rest at exit.
    sensor.wait_for("the transactions", |ev| {
        count(ev, "qmwatch.transaction") * 10 >= want_tx * 9
    });
    let (code, stderr) = sensor.stop();
    assert_eq!(code, 0, "{stderr}");
    let got = read_events(&dir.path().join("events.json"));
    assert_eq!(
        findings(&got),
        findings(&want),
        "live {args:?} and replay differ; stderr:\n{stderr}"
    );
    for e in &got {
        if dataset(e) != "qmwatch.stats" {
            assert_eq!(
                e["observer"]["ingress"]["interface"]["name"],
                ns.capture.as_str()
            );
        }
    }
    let s = &final_stats(&got).expect("final stats")["qmwatch"]["stats"];
    let packets: usize = caps.iter().map(|c| read_capture(c).len()).sum();
    assert_eq!(s["capture"]["packets"], packets, "{s}");
    for drop in ["kernel_drops", "queue_drops"] {
        assert_eq!(s["capture"][drop], 0, "{s}");
    }
    assert!(s["latency"]["events"].as_u64().unwrap() > 0, "{s}");
}

#[test]
fn live_finds_what_replay_finds() {
    same_findings_as_replay(&[]);
}

#[test]
fn live_with_two_workers_finds_what_replay_finds() {
    same_findings_as_replay(&["--oversubscribe", "--workers", "2"]);
}

#[test]
fn live_with_fanout_finds_what_replay_finds() {
    same_findings_as_replay(&["--workers", "2", "--fanout"]);
}

/// The frames of `cap` up to (not including) the first server reply of its
/// first QMTP session: the request is in, the session is open.
fn cut_before_first_reply(cap: &Path, out: &Path) -> usize {
    let frames = read_capture(cap);
    let n = frames
        .iter()
        .position(|f| match parse(f) {
            Pkt::Tcp(t) => {
                t.sport == 209
                    && t.payload.len() > 2
                    && t.payload
                        .iter()
                        .skip_while(|b| b.is_ascii_digit())
                        .nth(1)
                        .is_some_and(|c| b"KZD".contains(c))
            }
            _ => false,
        })
        .expect("a reply");
    write_pcap(out, &frames[..n]);
    n
}

#[test]
fn sigterm_mid_session_writes_its_events_and_the_final_stats() {
    let Some(ns) = Netns::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join("partial.pcap");
    let n = cut_before_first_reply(&fixtures().join("qmtp-closed-relay-209.pcap"), &partial);
    let sensor = Sensor::start(&ns, dir.path(), &["--stats-interval", "1s"]);
    ns.replay(std::slice::from_ref(&partial), &["--pps", "1000"]);
    // Wait until the sensor has every packet (a periodic stats event says).
    sensor.wait_for("the packets", |ev| {
        ev.iter()
            .any(|e| e["qmwatch"]["stats"]["capture"]["packets"].as_u64() == Some(n as u64))
    });
    assert_eq!(
        count(&sensor.events(), "qmwatch.transaction"),
        0,
        "the session is still open"
    );
    let (code, stderr) = sensor.stop();
    assert_eq!(code, 0, "{stderr}");
    let got = read_events(&dir.path().join("events.json"));
    let want = replay_events(std::slice::from_ref(&partial));
    assert!(count(&want, "qmwatch.transaction") >= 1);
    assert_eq!(findings(&got), findings(&want), "{stderr}");
    let last = got.last().unwrap();
    assert_eq!(dataset(last), "qmwatch.stats");
    assert_eq!(last["qmwatch"]["stats"]["final"], true);
    assert_eq!(last["qmwatch"]["stats"]["capture"]["packets"], n);
    assert!(stderr.contains("qmwatch live summary"), "{stderr}");
}

#[test]
fn sighup_reopens_the_output_and_no_event_is_lost() {
    let Some(ns) = Netns::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let caps = [
        fixtures().join("qmtp-open-relay-2209.pcap"),
        fixtures().join("qmtp-pipelined.pcap"),
    ];
    let eth = as_ethernet(dir.path(), &caps);
    let sensor = Sensor::start(&ns, dir.path(), &["--stats-interval", "1h"]);
    ns.replay(&eth[..1], &["--pps", "2000"]);
    let first = count(&replay_events(&caps[..1]), "qmwatch.transaction");
    sensor.wait_for("the first capture's transactions", |ev| {
        count(ev, "qmwatch.transaction") >= first
    });
    // What logrotate does: move the file away, then SIGHUP.
    let rotated = dir.path().join("events.json.1");
    std::fs::rename(&sensor.events, &rotated).unwrap();
    sensor.signal("HUP");
    ns.replay(&eth[1..], &["--pps", "2000"]);
    let t0 = Instant::now();
    while count(&read_events(&sensor.events), "qmwatch.transaction") == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "nothing in the reopened file: {}",
            sensor.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, stderr) = sensor.stop();
    assert_eq!(code, 0, "{stderr}");
    let mut got = read_events(&rotated);
    let new = read_events(&dir.path().join("events.json"));
    assert!(!new.is_empty());
    got.extend(new);
    assert_eq!(findings(&got), findings(&replay_events(&caps)), "{stderr}");
    assert!(stderr.contains("reopens 1"), "{stderr}");
}

#[test]
fn a_full_worker_queue_drops_and_counts_and_the_sensor_stays_up() {
    let Some(ns) = Netns::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let caps = [
        fixtures().join("qmqp-postfix-concurrent.pcap"),
        fixtures().join("qmtp-pipelined.pcap"),
    ];
    let eth = as_ethernet(dir.path(), &caps);
    let sensor = Sensor::start(
        &ns,
        dir.path(),
        &["--queue-batches", "1", "--stats-interval", "1s"],
    );
    // A flood: the captures looped at top speed.
    ns.replay(&eth[..1], &["--topspeed", "--loop", "3000"]);
    let ev = sensor.wait_for("queue drops in the stats", |ev| {
        ev.iter()
            .any(|e| e["qmwatch"]["stats"]["capture"]["queue_drops"].as_u64() > Some(0))
    });
    let before = count(&ev, "qmwatch.transaction");
    // Still up: a quiet capture afterwards is processed.
    ns.replay(&eth[1..], &["--pps", "1000"]);
    sensor.wait_for("events after the flood", |ev| {
        ev.iter()
            .any(|e| dataset(e) == "qmwatch.transaction" && e["destination"]["port"] == 8025)
            || count(ev, "qmwatch.transaction") > before + 5
    });
    let (code, stderr) = sensor.stop();
    assert_eq!(code, 0, "{stderr}");
    let got = read_events(&dir.path().join("events.json"));
    let s = &final_stats(&got).expect("final stats")["qmwatch"]["stats"]["capture"];
    assert!(s["queue_drops"].as_u64().unwrap() > 0, "{s}");
    assert!(s["queue_dropped_batches"].as_u64().unwrap() > 0, "{s}");
    assert!(stderr.contains("queue drops"), "{stderr}");
}

#[test]
fn user_drops_root_and_still_captures() {
    let Some(ns) = Netns::new() else { return };
    if sh("id", &["nobody"]).is_err() {
        skip("no user `nobody`");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The output file is opened after the switch: nobody must be able to.
    sh("chmod", &["0777", &dir.path().to_string_lossy()]).unwrap();
    let cap = [fixtures().join("qmtp-open-relay-2209.pcap")];
    let sensor = Sensor::start(&ns, dir.path(), &["--user", "nobody"]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", sensor.pid())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid}"
    );
    ns.replay(&cap, &["--pps", "2000"]);
    let want = count(&replay_events(&cap), "qmwatch.transaction");
    sensor.wait_for("the transactions", |ev| {
        count(ev, "qmwatch.transaction") >= want
    });
    let (code, stderr) = sensor.stop();
    assert_eq!(code, 0, "{stderr}");
}

/// Runs `qmwatch live ARGS` in the namespace to its end (it must fail).
fn fails(ns: &Netns, runner: &[&str], args: &[&str]) -> (i32, String) {
    let mut c = ns.command(runner.first().copied().unwrap_or(qmwatch()));
    if !runner.is_empty() {
        c.args(&runner[1..]).arg(qmwatch());
    }
    let out = c.arg("live").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_interface_a_bad_filter_or_no_permission_is_one_line_and_status_2() {
    let Some(ns) = Netns::new() else { return };
    let (code, err) = fails(&ns, &[], &["-i", "qmwatch-none0"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("qmwatch-none0") && err.contains("No such device"),
        "{err}"
    );

    let (code, err) = fails(&ns, &[], &["-i", &ns.capture, "tcp", "and", "("]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("bad capture filter \"tcp and (\""), "{err}");

    if sh("setpriv", &["--version"]).is_ok() {
        let nobody = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ];
        let (code, err) = fails(&ns, &nobody, &["-i", &ns.capture]);
        assert_eq!(code, 2, "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.to_lowercase().contains("permission"), "{err}");
    } else {
        skip("no-permission case: setpriv (util-linux) is not installed");
    }
}
