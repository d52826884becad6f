//! What an operator meets: one-line errors and exit status 2 for every
//! subcommand; the HTML audit report, escaped and self-contained, as a real
//! browser renders it (headless Chromium); the man pages and completions
//! the package ships; and, live, the idle alarm of a sensor gone blind.
//!
//! The browser tests skip (saying so) without `chromium`, but fail when the
//! environment variable CI is set: CI installs it. The idle-alarm test needs
//! root, iproute2 and tcpreplay, as tests/live.rs does.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::Value;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_qmwatch")
}

fn qmwatch(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The command failed with exactly one line on stderr, `qmwatch: WANT…`,
/// and nothing on stdout.
fn one_line_error(o: &Output, want: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(
        err.starts_with(&format!("qmwatch: {want}")),
        "want `qmwatch: {want}…`, got: {err}"
    );
    assert!(!err.contains("os error"), "{err}");
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

fn fixture(name: &str) -> String {
    fixtures().join(name).to_string_lossy().into_owned()
}

// ---- errors ---------------------------------------------------------------

#[test]
fn a_missing_file_is_one_line_like_tcpdump_and_no_summary() {
    for sub in ["replay", "audit"] {
        let o = qmwatch(&[sub, "/nonexistent/missing.pcap"]);
        one_line_error(&o, "/nonexistent/missing.pcap: No such file or directory");
    }
    // A report file is only written when there is a report: an earlier
    // file stays as it was, and none is left behind.
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("kept.html");
    std::fs::write(&kept, "earlier report").unwrap();
    let new = dir.path().join("new.html");
    for out in [&kept, &new] {
        let o = qmwatch(&[
            "audit",
            "-o",
            &out.to_string_lossy(),
            "/nonexistent/missing.pcap",
        ]);
        one_line_error(&o, "/nonexistent/missing.pcap: No such file or directory");
    }
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "earlier report");
    assert!(!new.exists());
}

#[test]
fn a_directory_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_string_lossy().into_owned();
    for sub in ["replay", "audit"] {
        let o = qmwatch(&[sub, &d]);
        one_line_error(&o, &format!("{d}: Is a directory"));
    }
}

#[test]
fn not_a_capture_is_one_line_naming_the_byte() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.txt");
    std::fs::write(&p, b"this is not a capture file at all").unwrap();
    let p = p.to_string_lossy().into_owned();
    for sub in ["replay", "audit"] {
        let o = qmwatch(&[sub, &p]);
        one_line_error(&o, &format!("{p}: byte 0: not a capture file"));
    }
}

#[test]
fn a_truncated_file_keeps_its_summary_and_the_error_follows_it() {
    let full = std::fs::read(fixtures().join("qmtp-pipelined.pcap")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cut.pcap");
    std::fs::write(&p, &full[..full.len() - 30]).unwrap();
    let p = p.to_string_lossy().into_owned();

    let o = qmwatch(&["replay", &p]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.starts_with("qmwatch replay summary\n"), "{err}");
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with(&format!("qmwatch: error: {p}: byte ")) && last.contains("truncated"),
        "{err}"
    );
    assert_eq!(err.matches("error").count(), 1, "{err}");
    assert!(
        !o.stdout.is_empty(),
        "the events before the cut are written"
    );

    // The audit writes its report and says the same on stderr.
    let o = qmwatch(&["audit", &p]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("qmwatch: error: {p}")), "{err}");
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(report.contains("QMTP/QMQP servers seen: 2"), "{report}");
}

#[test]
fn an_output_that_cannot_be_written_is_one_line_before_anything_is_read() {
    let dir = tempfile::tempdir().unwrap();
    // A path under a regular file cannot be created, even by root.
    let file = dir.path().join("plain");
    std::fs::write(&file, b"").unwrap();
    let bad = file.join("out.json").to_string_lossy().into_owned();
    let cap = fixture("qmtp-open-relay-2209.pcap");

    let o = qmwatch(&["replay", "-o", &bad, &cap]);
    one_line_error(&o, &format!("cannot open output {bad}: Not a directory"));

    let o = qmwatch(&["audit", "--format", "html", "-o", &bad, &cap]);
    one_line_error(
        &o,
        &format!("{bad}: cannot write the report: Not a directory"),
    );
}

#[test]
fn a_bad_policy_entry_is_one_line_naming_file_line_and_entry() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("site.toml");
    std::fs::write(
        &p,
        "local-domain = [\"example.net\"]\ntrusted-net = [\"192.0.2.0/24\", \"198.51.100.300/24\"]\n",
    )
    .unwrap();
    let p = p.to_string_lossy().into_owned();
    let cap = fixture("qmtp-open-relay-2209.pcap");
    for sub in ["replay", "audit"] {
        let o = qmwatch(&[sub, "--policy", &p, &cap]);
        one_line_error(&o, &p);
        let err = stderr(&o);
        assert!(err.contains("198.51.100.300/24"), "{err}");
        let o = qmwatch(&[sub, "--trusted-net", "300.0.0.0/8", &cap]);
        one_line_error(&o, "--trusted-net");
    }
}

#[test]
fn a_bad_flag_is_one_line_with_the_usage() {
    let o = qmwatch(&["replay", "--bogus", "x.pcap"]);
    one_line_error(
        &o,
        "unexpected argument '--bogus' found (usage: qmwatch replay",
    );
    let o = qmwatch(&["audit", "--format", "pdf", "x.pcap"]);
    one_line_error(&o, "invalid value 'pdf' for '--format <FORMAT>'");
    let o = qmwatch(&["replay"]);
    one_line_error(&o, "the following required arguments were not provided");
    let o = qmwatch(&["live", "-i", "eth0", "--idle-alarm", "0s"]);
    one_line_error(&o, "invalid value '0s' for '--idle-alarm <DURATION>'");
    let o = qmwatch(&[]);
    one_line_error(&o, "a subcommand is required: replay, audit, live");
    let o = qmwatch(&["frobnicate"]);
    one_line_error(&o, "unrecognized subcommand 'frobnicate'");
    // Help is not an error.
    let o = qmwatch(&["audit", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("--format"));
}

// ---- packaging assets -----------------------------------------------------

#[test]
fn generate_assets_writes_man_pages_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let o = qmwatch(&["generate-assets", &dir.path().to_string_lossy()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for page in [
        "qmwatch",
        "qmwatch-replay",
        "qmwatch-audit",
        "qmwatch-live",
        "qmwatch-check",
    ] {
        let p = dir.path().join("man").join(format!("{page}.1"));
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        assert!(text.starts_with(".ie \\n(.g .ds Aq"), "{p:?} is not roff");
    }
    let live = std::fs::read_to_string(dir.path().join("man/qmwatch-live.1")).unwrap();
    assert!(live.contains("idle\\-alarm"), "{live}");
    for c in ["qmwatch.bash", "_qmwatch", "qmwatch.fish"] {
        let text = std::fs::read_to_string(dir.path().join("completions").join(c)).unwrap();
        assert!(
            text.contains("audit") && text.contains("local-domain"),
            "{c}"
        );
        assert!(
            !text.contains("generate-assets"),
            "{c}: hidden command listed"
        );
    }
    let o = qmwatch(&["generate-assets"]);
    one_line_error(&o, "usage: qmwatch generate-assets DIR");
}

// ---- the HTML report --------------------------------------------------------

/// `chromium`, or why not: skipping is allowed outside CI only.
fn chromium() -> Option<&'static str> {
    let found = Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some("chromium");
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but chromium is not installed (apt-get install chromium)"
    );
    eprintln!("skipped: chromium is not installed (apt-get install chromium)");
    None
}

/// Runs headless Chromium on `page` with `mode` (`--dump-dom`, or
/// `--screenshot=FILE`): nothing fetched, a profile of its own.
fn headless(browser: &str, page: &Path, mode: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    // A browser that hangs must not hang the suite.
    let out = Command::new("timeout")
        .args(["120", browser])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1200,1500",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(mode)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn audit_html(caps: &[PathBuf], extra: &[&str], out: &Path) -> Output {
    let mut args: Vec<String> = vec!["audit".into(), "--format".into(), "html".into()];
    args.push("-o".into());
    args.push(out.to_string_lossy().into_owned());
    // Every fixture has the same policy.
    args.extend(policy_args(&labels(
        &fixtures().join("qmtp-open-relay-2209.pcap"),
    )));
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(caps.iter().map(|p| p.to_string_lossy().into_owned()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    qmwatch(&a)
}

/// Every server and every open relay (client, foreign recipient) the
/// fixtures' labels list.
fn labelled(caps: &[PathBuf]) -> (Vec<String>, Vec<(String, String)>) {
    let mut servers = Vec::new();
    let mut relays = Vec::new();
    for cap in caps {
        let l = labels(cap);
        for s in l["services"].as_array().unwrap() {
            servers.push(endpoint(&s["ip"], &s["port"]));
        }
        for s in l["sessions"].as_array().unwrap() {
            if s["open_relay"] != true {
                continue;
            }
            let client = s["client"].as_str().unwrap();
            let ip = client.rsplit_once(':').unwrap().0.trim_matches(['[', ']']);
            for t in s["transactions"].as_array().unwrap() {
                for r in t["recipients"].as_array().unwrap() {
                    if r["local"] == false && r["reply"]["code"] == "K" {
                        relays.push((ip.to_string(), r["address"].as_str().unwrap().into()));
                    }
                }
            }
        }
    }
    servers.sort();
    servers.dedup();
    (servers, relays)
}

/// The cells of the table rows of `class` in a DOM dump, as text.
fn rows(dom: &str, class: &str) -> Vec<String> {
    dom.split(&format!("<tr class=\"{class}\""))
        .skip(1)
        .map(|r| {
            let r = r.split("</tr>").next().unwrap_or("");
            // Tags out, cells separated by a bar.
            let mut s = String::new();
            let mut tag = false;
            for c in r.chars() {
                match c {
                    '<' => {
                        tag = true;
                        s.push('|');
                    }
                    '>' => tag = false,
                    c if !tag => s.push(c),
                    _ => {}
                }
            }
            s
        })
        .collect()
}

#[test]
fn the_html_report_is_self_contained_and_a_browser_shows_every_server_and_open_relay() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    let caps = captures();
    let o = audit_html(&caps, &[], &page);
    assert_eq!(o.status.code(), Some(1), "findings: {}", stderr(&o));
    assert!(o.stdout.is_empty());
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing to run, load or fetch.
    for bad in [
        "<script", "<link", "<img", "<iframe", "url(", "@import", "src=",
    ] {
        assert!(!html.contains(bad), "{bad} in the report");
    }
    assert_eq!(html.matches("http").count(), 1, "only http-equiv: no URL");

    let Some(browser) = chromium() else { return };
    let dom = headless(browser, &page, "--dump-dom");
    let (servers, relays) = labelled(&caps);
    assert!(
        servers.len() >= 6 && relays.len() >= 7,
        "{servers:?} {relays:?}"
    );
    let server_rows = rows(&dom, "server");
    assert_eq!(server_rows.len(), servers.len(), "{server_rows:?}");
    for s in &servers {
        assert!(
            server_rows.iter().any(|r| r.contains(&format!("|{s}|"))),
            "server {s} not in the rendered table: {server_rows:?}"
        );
        // And its timeline.
        assert!(
            dom.contains(&format!("aria-label=\"activity of {s}\"")),
            "{s}"
        );
    }
    let relay_rows = rows(&dom, "open-relay");
    assert_eq!(relay_rows.len(), relays.len(), "{relay_rows:?}");
    for (client, rcpt) in &relays {
        assert!(
            relay_rows
                .iter()
                .any(|r| r.contains(&format!("|{client}|")) && r.contains(&format!("|{rcpt}|"))),
            "open relay {client} -> {rcpt} not rendered: {relay_rows:?}"
        );
    }
    assert!(dom.contains("NOT SANCTIONED"));
    // The scanner's probe is named in its evidence row.
    assert!(relay_rows
        .iter()
        .any(|r| r.contains("postmaster@example.com") && r.contains("nessus")));

    let shot = dir.path().join("report.png");
    headless(browser, &page, &format!("--screenshot={}", shot.display()));
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{}",
        png.len()
    );
}

#[test]
fn markup_in_a_server_reply_is_shown_as_text_never_run() {
    // The open-relay fixture with its first reply text, 23 bytes, replaced
    // by markup of the same length: the netstring stays well formed.
    let mut cap = std::fs::read(fixtures().join("qmtp-open-relay-2209.pcap")).unwrap();
    let from = b"Kok 1795238265 qp 15824";
    let to = b"K<script>xyz()</script>";
    assert_eq!(from.len(), to.len());
    let at = cap
        .windows(from.len())
        .position(|w| w == from)
        .expect("the reply");
    cap[at..at + to.len()].copy_from_slice(to);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("hostile.pcap");
    std::fs::write(&p, &cap).unwrap();
    let page = dir.path().join("report.html");
    // The edit breaks the TCP checksum, if the capture had real ones.
    let o = audit_html(std::slice::from_ref(&p), &["--checksums", "ignore"], &page);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("<script"), "unescaped");
    assert!(
        html.contains("K&lt;script&gt;xyz()&lt;/script&gt;"),
        "{html}"
    );

    let Some(browser) = chromium() else { return };
    let dom = headless(browser, &page, "--dump-dom");
    assert!(!dom.contains("<script"), "a script element in the DOM");
    let rows = rows(&dom, "open-relay");
    assert!(
        rows.iter()
            .any(|r| r.contains("|K&lt;script&gt;xyz()&lt;/script&gt;|")),
        "the reply is not shown as text: {rows:?}"
    );
}

// ---- live: the idle alarm ---------------------------------------------------

#[cfg(feature = "live")]
mod idle {
    use super::*;
    use std::time::{Duration, Instant};

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

    /// A network namespace with a veth pair and nothing else (no address,
    /// no route, IPv6 off: no chatter), removed when dropped.
    struct Netns(String);

    impl Netns {
        fn new() -> Option<Netns> {
            let root = sh("id", &["-u"]).is_ok_and(|u| u.trim() == "0");
            let tools = ["ip", "tcpreplay"].iter().all(|t| {
                Command::new(t)
                    .arg("-V")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok()
            });
            if !root || !tools {
                eprintln!("skipped: needs root, iproute2 and tcpreplay");
                return None;
            }
            let name = format!("qmwatch-op-{}", std::process::id());
            if let Err(e) = sh("ip", &["netns", "add", &name]) {
                eprintln!("skipped: cannot create a network namespace: {e}");
                return None;
            }
            let ns = Netns(name);
            let ip = |a: &[&str]| {
                let mut v = vec!["-n", ns.0.as_str()];
                v.extend_from_slice(a);
                sh("ip", &v).unwrap_or_else(|e| panic!("{e}"))
            };
            ip(&[
                "link", "add", "opc0", "type", "veth", "peer", "name", "ops0",
            ]);
            let _ = sh(
                "ip",
                &[
                    "netns",
                    "exec",
                    &ns.0,
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1",
                ],
            );
            for dev in ["opc0", "ops0"] {
                ip(&["link", "set", dev, "mtu", "65535", "up"]);
            }
            Some(ns)
        }

        fn command(&self, program: &str) -> Command {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.0, program]);
            c
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    struct Child(std::process::Child);

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn events(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn actions(ev: &[Value]) -> Vec<String> {
        ev.iter()
            .filter(|e| dataset(e) == "qmwatch.anomaly")
            .filter_map(|e| e["event"]["action"].as_str().map(String::from))
            .collect()
    }

    fn wait_for(path: &Path, what: &str, done: impl Fn(&[String]) -> bool) {
        let t0 = Instant::now();
        loop {
            if done(&actions(&events(path))) {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}: {:?}",
                actions(&events(path))
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn a_silent_interface_raises_capture_silent_and_traffic_capture_resumed() {
        let Some(ns) = Netns::new() else { return };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("events.json");
        let child = ns
            .command(bin())
            .args(["live", "--quiet", "-i", "opc0", "--idle-alarm", "1s"])
            .args(["--stats-interval", "1h", "-o"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut child = Child(child);
        wait_for(&out, "capture_silent", |a| {
            a.iter().any(|k| k == "capture_silent")
        });
        // One alarm per silence, not one per look.
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(actions(&events(&out)), ["capture_silent"]);

        let cap = fixtures().join("qmtp-open-relay-2209.pcap");
        let st = ns
            .command("tcpreplay")
            .args(["-q", "-i", "ops0", "--pps", "2000"])
            .arg(&cap)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        wait_for(&out, "capture_resumed", |a| {
            a.iter().any(|k| k == "capture_resumed")
        });
        sh("kill", &["-TERM", &child.0.id().to_string()]).unwrap();
        let status = child.0.wait().unwrap();
        assert_eq!(status.code(), Some(0));

        let ev = events(&out);
        let a = actions(&ev);
        assert_eq!(
            a.first().map(String::as_str),
            Some("capture_silent"),
            "{a:?}"
        );
        assert_eq!(
            a.get(1).map(String::as_str),
            Some("capture_resumed"),
            "{a:?}"
        );
        let schema: Value = serde_json::from_str(
            &std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/events.schema.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let v = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        let sensor: Vec<&Value> = ev
            .iter()
            .filter(|e| {
                e["event"]["action"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("capture_"))
            })
            .collect();
        for e in &sensor {
            let errs: Vec<String> = v.iter_errors(e).map(|x| x.to_string()).collect();
            assert!(errs.is_empty(), "{errs:?}\n{e}");
            assert!(e.get("source").is_none());
            assert_eq!(e["observer"]["ingress"]["interface"]["name"], "opc0");
        }
        let silent = &sensor[0]["qmwatch"]["capture_silence"];
        assert_eq!(silent["idle_alarm_seconds"], 1.0);
        assert!(
            silent["silent_seconds"].as_f64().unwrap() >= 1.0,
            "{silent}"
        );
        assert_eq!(silent["last_packet"], Value::Null, "no packet before it");
        let resumed = &sensor[1]["qmwatch"]["capture_silence"];
        assert!(
            resumed["silent_seconds"].as_f64().unwrap() >= 2.5,
            "{resumed}"
        );
        // The traffic itself was seen.
        assert!(ev.iter().any(|e| dataset(e) == "qmwatch.transaction"));
    }
}

#[test]
fn the_packaged_example_policy_is_valid_and_judges() {
    // docs/examples/site.toml is installed as /etc/qmwatch/site.toml, which
    // the unit passes with --policy: a bad entry would keep the sensor down.
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/site.toml");
    let o = qmwatch(&[
        "audit",
        "--format",
        "json",
        "--policy",
        &policy.to_string_lossy(),
        &fixture("qmtp-open-relay-2209.pcap"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = report["policy"].as_str().unwrap();
    assert!(p.contains("site.toml"), "{p}");
    assert!(report["relay_attempts"]["open_relay"].as_u64().unwrap() > 0);
    // The JSON report carries the timelines the HTML page draws: every
    // transaction and relay attempt is in one bucket.
    let t = &report["servers"][0]["timeline"];
    assert_eq!(t["bucket_seconds"], 1, "{t}");
    let sum = |k: &str| -> u64 {
        t["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b[k].as_u64().unwrap())
            .sum()
    };
    assert_eq!(sum("transactions"), report["servers"][0]["transactions"]);
    assert_eq!(sum("open_relay"), report["relay_attempts"]["open_relay"]);
}
