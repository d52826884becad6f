//! `qmwatch check`, the active re-test, against real servers on loopback:
//! Postfix `qmqpd` and `smtpd` (Debian's `postfix`, a private instance the
//! test configures and starts), a QMTP server in this file that answers
//! with the exact reply bytes of the real qmail-qmtpd in `fixtures/` (no
//! QMTP server is packaged in Debian), an HTTP server, a silent port and a
//! closed one; and the passive side reading a capture of the check.
//!
//! Tests that need root, Postfix or tcpdump say so and skip when they are
//! missing, except in CI (the `CI` environment variable set), where they
//! fail. Only loopback addresses are ever contacted.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use qmwatch_proto::request::{RequestEvent, RequestParser};
use qmwatch_proto::{Protocol, RequestState};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn qmwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qmwatch"))
        .args(args)
        .output()
        .unwrap()
}

/// Short waits: every server here answers at once or never.
const FAST: [&str; 6] = [
    "--connect-timeout",
    "1s",
    "--greeting-wait",
    "300ms",
    "--read-timeout",
    "1s",
];

fn check(args: &[&str]) -> Output {
    let mut v = vec!["check"];
    v.extend_from_slice(&FAST);
    v.extend_from_slice(args);
    qmwatch(&v)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `docs/events.schema.json`, with formats (ip, date-time) checked.
fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let schema: Value = serde_json::from_str(
            &std::fs::read_to_string(root().join("docs/events.schema.json")).unwrap(),
        )
        .unwrap();
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|e| panic!("the schema itself is invalid: {e}"))
    })
}

fn schema_errors(e: &Value) -> Vec<String> {
    validator()
        .iter_errors(e)
        .map(|x| format!("{x} at {}", x.instance_path()))
        .collect()
}

/// Every event, as written, is valid against the schema.
fn assert_valid(evs: &[Value]) {
    for e in evs {
        let errs = schema_errors(e);
        assert!(
            errs.is_empty(),
            "{} {}: invalid event:\n{}\n{e:#}",
            e["event"]["dataset"],
            e["qmwatch"]["check"]["result"],
            errs.join("\n")
        );
    }
}

/// The JSON lines of `text`, each checked against the schema.
fn parse_events(text: &str) -> Vec<Value> {
    let evs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l}: {e}")))
        .collect();
    assert_valid(&evs);
    evs
}

/// The events on standard output, each checked against the schema.
fn events(o: &Output) -> Vec<Value> {
    parse_events(&stdout(o))
}

fn dataset<'a>(evs: &'a [Value], name: &str) -> Vec<&'a Value> {
    evs.iter()
        .filter(|e| e["event"]["dataset"] == name)
        .collect()
}

/// The `qmwatch.check` event of `addr`.
fn result_of<'a>(evs: &'a [Value], addr: &str) -> &'a Value {
    let ip_port = |e: &Value| {
        let ip = e["destination"]["ip"].as_str().unwrap_or("");
        let port = e["destination"]["port"].as_u64().unwrap_or(0);
        if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    };
    dataset(evs, "qmwatch.check")
        .into_iter()
        .find(|e| ip_port(e) == addr)
        .unwrap_or_else(|| panic!("no check event for {addr}: {evs:#?}"))
}

/// True when `what` is there; otherwise skips, or fails in CI.
fn available(what: &str, ok: bool) -> bool {
    if ok {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI: {what} is required for this test (.ci/run installs it)");
    }
    eprintln!("skipped: {what} is not available");
    false
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------
// A QMTP server that behaves as notqmail's qmail-qmtpd does in fixtures/.

/// The exact reply netstrings the real qmail-qmtpd sent, from the labels
/// of the fixtures (and, for the unacceptable sender, from
/// fixtures/README.md, which lists the server's texts).
struct QmailReplies {
    ok: Vec<u8>,
    rcpthosts: Vec<u8>,
    unacceptable_sender: Vec<u8>,
    /// Not from a capture: qmail's text when qmail-queue fails for a
    /// reason other than a permanent one (qmail.c, `qmail_close`).
    temporary: Vec<u8>,
}

fn raw_reply(labels: &str, code: &str) -> Vec<u8> {
    let l: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("fixtures").join(labels)).unwrap(),
    )
    .unwrap();
    for s in l["sessions"].as_array().unwrap() {
        for t in s["transactions"].as_array().unwrap() {
            for r in t["recipients"].as_array().unwrap() {
                if r["reply"]["code"] == code {
                    return r["reply"]["raw"].as_str().unwrap().as_bytes().to_vec();
                }
            }
        }
    }
    panic!("no {code} reply in {labels}");
}

fn qmail_replies() -> QmailReplies {
    let readme = std::fs::read_to_string(root().join("fixtures/README.md")).unwrap();
    let text = "Dunacceptable sender (#5.1.7)";
    assert!(
        readme.contains(text),
        "fixtures/README.md lists qmail's text"
    );
    QmailReplies {
        ok: raw_reply("qmtp-open-relay-2209.labels.json", "K"),
        rcpthosts: raw_reply("qmtp-closed-relay-209.labels.json", "D"),
        unacceptable_sender: format!("{}:{text},", text.len()).into_bytes(),
        temporary: b"30:Zqq temporary problem (#4.3.0),".to_vec(),
    }
}

/// How the server writes the replies to one package.
#[derive(Clone, Copy)]
enum Writes {
    /// All in one write, as qmail-qmtpd does when it next needs input.
    Whole,
    /// In pieces of this many bytes, a pause between them.
    Pieces(usize),
}

/// What the QMTP server saw: per package, the sender's length, the
/// message's first bytes, and the reply codes it sent.
#[derive(Clone, Debug)]
struct Seen {
    sender_len: u64,
    prefix: Vec<u8>,
    codes: String,
}

/// What the server does with a package it does not refuse for its sender.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Relaying {
    /// RELAYCLIENT for everyone: every recipient accepted.
    Open,
    /// Only `example.net` recipients accepted, others refused.
    Closed,
    /// qmail-queue failing: every such package deferred.
    Defers,
    /// Never answers such a package (a queue that hangs), and keeps the
    /// connection until the client closes it.
    Hangs,
}

struct QmtpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl QmtpServer {
    /// `open`: RELAYCLIENT for everyone (the open relay on 2209 in the
    /// fixtures); otherwise only `example.net` recipients are accepted.
    fn start(bind: &str, open: bool, writes: Writes) -> QmtpServer {
        let relaying = if open {
            Relaying::Open
        } else {
            Relaying::Closed
        };
        QmtpServer::start_relaying(bind, relaying, writes)
    }

    fn start_relaying(bind: &str, relaying: Relaying, writes: Writes) -> QmtpServer {
        let l = TcpListener::bind(bind).unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (st, se) = (Arc::clone(&stop), Arc::clone(&seen));
        thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let se = Arc::clone(&se);
                        thread::spawn(move || qmtp_session(c, relaying, writes, &se));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break,
                }
            }
        });
        QmtpServer { addr, stop, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for QmtpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One connection, as qmail-qmtpd: packages answered one netstring per
/// recipient; anything that is not a package closes without a byte.
fn qmtp_session(mut c: TcpStream, relaying: Relaying, writes: Writes, seen: &Mutex<Vec<Seen>>) {
    let r = qmail_replies();
    c.set_nonblocking(false).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut parser = RequestParser::new(Protocol::Qmtp, 0);
    let mut buf = [0u8; 2048];
    loop {
        let n = match c.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut out = Vec::new();
        parser.feed(&buf[..n], 0, &mut out);
        for RequestEvent::Request(req) in out {
            if req.state != RequestState::Complete {
                // qmail-qmtpd exits 100: the connection closes, no byte.
                return;
            }
            let sender_len = req.sender.as_ref().map_or(0, |s| s.wire_len);
            if sender_len < 1000 && relaying == Relaying::Hangs {
                continue;
            }
            let mut answer = Vec::new();
            let mut codes = String::new();
            for rcpt in &req.recipients {
                let local = rcpt.text().to_ascii_lowercase().ends_with("@example.net");
                let reply = if sender_len >= 1000 {
                    &r.unacceptable_sender
                } else if relaying == Relaying::Defers {
                    &r.temporary
                } else if relaying == Relaying::Open || local {
                    &r.ok
                } else {
                    &r.rcpthosts
                };
                codes.push(char::from(
                    reply[reply.iter().position(|&b| b == b':').unwrap() + 1],
                ));
                answer.extend_from_slice(reply);
            }
            seen.lock().unwrap().push(Seen {
                sender_len,
                prefix: req.message_prefix.clone(),
                codes,
            });
            let ok = match writes {
                Writes::Whole => c.write_all(&answer).is_ok(),
                Writes::Pieces(k) => answer.chunks(k).all(|p| {
                    thread::sleep(Duration::from_millis(15));
                    c.write_all(p).is_ok()
                }),
            };
            if !ok {
                return;
            }
        }
        if parser.failed() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// Other servers.

/// Answers any request with a 400, as web servers answer garbage.
fn http_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            thread::spawn(move || {
                c.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let mut got = Vec::new();
                let mut b = [0u8; 512];
                while !got.contains(&b'\n') {
                    match c.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&b[..n]),
                    }
                }
                let _ = c.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            });
        }
    });
    addr
}

/// Speaks first with `banner`, then closes.
fn banner_server(banner: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let _ = c.write_all(banner);
        }
    });
    addr
}

/// Accepts connections and never sends a byte (nor closes them).
fn silent_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming() {
            match c {
                Ok(c) => held.push(c),
                Err(_) => return,
            }
        }
    });
    addr
}

/// Closes every connection without a byte: at once (as tcpserver refusing
/// a client), or once the client has sent something.
fn closing_server(at_once: bool) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            if !at_once {
                c.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let _ = c.read(&mut [0u8; 64]);
            }
        }
    });
    addr
}

// ---------------------------------------------------------------------------
// Tests that need nothing but loopback.

#[test]
fn bad_targets_are_one_line_errors_and_nothing_is_sent() {
    let watch = TcpListener::bind("127.0.0.1:0").unwrap();
    watch.set_nonblocking(true).unwrap();
    let good = watch.local_addr().unwrap().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["no-such-host.invalid"],
            "cannot resolve no-such-host.invalid",
        ),
        (vec!["127.0.0.1:70000"], "bad port"),
        (vec!["127.0.0.1:0"], "bad port"),
        (vec!["127.0.0.0/23"], "more than --max-targets 256"),
        (
            vec!["--max-targets", "4", "127.0.0.0/29"],
            "more than --max-targets 4",
        ),
        (vec!["--ports", "209,0", "127.0.0.1"], "--ports"),
        (vec!["--source", "bogus", "127.0.0.1"], "--source"),
        (vec!["--source", "192.0.2.1", "127.0.0.1"], "cannot bind"),
        (
            vec!["-o", "/nonexistent/dir/events.json", "127.0.0.1"],
            "/nonexistent/dir",
        ),
        (
            vec![
                "--relay-test",
                "--relay-recipient",
                "joe@example.net",
                "--local-domain",
                "example.net",
                "127.0.0.1",
            ],
            "local-domain",
        ),
    ];
    for (args, want) in cases {
        let mut v: Vec<&str> = vec![&good];
        v.extend(args.iter().copied());
        let o = check(&v);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(
            err.starts_with("qmwatch: ") && err.contains(want),
            "{args:?}: {err}"
        );
        assert!(o.stdout.is_empty(), "{args:?}: nothing on stdout");
        match watch.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("{args:?}: a connection was made: {other:?}"),
        }
    }
}

#[test]
fn qmtp_found_from_qmail_reply_bytes_without_delivering() {
    for writes in [Writes::Whole, Writes::Pieces(7)] {
        let s = QmtpServer::start("127.0.0.1:0", false, writes);
        let a = s.addr.to_string();
        let o = check(&["--format", "json", &a]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let evs = events(&o);
        let c = result_of(&evs, &a);
        assert_eq!(c["qmwatch"]["check"]["result"], "qmtp", "{c:#}");
        assert_eq!(c["qmwatch"]["check"]["proof"], "qmtp_detect");
        assert_eq!(c["qmwatch"]["check"]["evidence"], "request_and_reply");
        // The pipelined two-recipient answer, however it was written.
        let replies = c["qmwatch"]["check"]["replies"].as_array().unwrap();
        assert_eq!(replies.len(), 2, "{c:#}");
        for r in replies {
            assert_eq!(r["code"], "D");
            assert_eq!(r["text"], "unacceptable sender (#5.1.7)");
        }
        // The QMQP request was closed without a byte, as qmail does.
        let probes = c["qmwatch"]["check"]["probes"].as_array().unwrap();
        assert_eq!(probes[1]["probe"], "qmqp_detect");
        assert_eq!(probes[1]["end"], "closed_by_server");
        let svc = dataset(&evs, "qmwatch.service");
        assert_eq!(svc.len(), 1);
        assert_eq!(svc[0]["network"]["protocol"], "qmtp");
        assert_eq!(svc[0]["event"]["kind"], "alert");
        assert_eq!(svc[0]["observer"]["type"], "active_check");
        // Nothing was accepted: detection delivers nothing.
        let seen = s.seen();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(
            seen[0].sender_len >= 1000 && seen[0].codes == "DD",
            "{seen:?}"
        );
        assert!(seen[0].prefix.starts_with(b"\nX-Qmwatch-Check: detect\n"));
    }
}

#[test]
fn sanctioned_services_and_the_text_report() {
    let s = QmtpServer::start("127.0.0.1:0", false, Writes::Whole);
    let a = s.addr.to_string();
    let o = check(&[&a]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("{a}  QMTP service, UNEXPECTED")),
        "{out}"
    );
    assert!(
        out.contains("result: FOUND unexpected QMTP service"),
        "{out}"
    );
    let o = check(&["--sanctioned", &format!("{a}/qmtp"), &a]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(out.contains("QMTP service, sanctioned"), "{out}");
    assert!(
        out.contains("result: nothing found (exit status 0)"),
        "{out}"
    );
    // Sanctioned as the other protocol is not sanctioned.
    let o = check(&["--sanctioned", &format!("{a}/qmqp"), &a]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn qmtp_relay_test_verdicts() {
    let open = QmtpServer::start("127.0.0.1:0", true, Writes::Whole);
    let closed = QmtpServer::start("127.0.0.1:0", false, Writes::Pieces(5));
    let (oa, ca) = (open.addr.to_string(), closed.addr.to_string());
    let sanction = |a: &str| format!("{a}/qmtp");
    let (so, sc) = (sanction(&oa), sanction(&ca));
    let base = [
        "--relay-test",
        "--format",
        "json",
        "--sanctioned",
        &so,
        "--sanctioned",
        &sc,
    ];

    // From an untrusted source: the open relay is found, the closed one refuses.
    let mut args = base.to_vec();
    args.extend([oa.as_str(), ca.as_str()]);
    let o = check(&args);
    assert_eq!(o.status.code(), Some(1), "an open relay, sanctioned or not");
    let evs = events(&o);
    let rt = &result_of(&evs, &oa)["qmwatch"]["check"]["relay_test"];
    assert_eq!(rt["verdict"], "open_relay", "{rt:#}");
    assert_eq!(rt["reply"]["code"], "K");
    assert_eq!(rt["reply"]["text"], "ok 1795238265 qp 15824");
    assert_eq!(rt["recipient"], "relay-test@qmwatch-check.invalid");
    let rt = &result_of(&evs, &ca)["qmwatch"]["check"]["relay_test"];
    assert_eq!(rt["verdict"], "refused", "{rt:#}");
    assert_eq!(
        rt["reply"]["text"],
        "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"
    );
    let relays = dataset(&evs, "qmwatch.relay");
    assert_eq!(relays.len(), 2);
    let open_alert = relays
        .iter()
        .find(|e| e["qmwatch"]["relay"]["verdict"] == "open_relay")
        .unwrap();
    assert_eq!(open_alert["qmwatch"]["relay"]["scanner"], "qmwatch");
    assert_eq!(open_alert["event"]["severity"], 90);
    assert_eq!(open_alert["email"]["from"]["address"], "");
    assert_eq!(dataset(&evs, "qmwatch.transaction").len(), 2);
    // What the server got: the null sender, the header naming the check.
    let seen = open.seen();
    let relay = seen.iter().find(|s| s.codes == "K").unwrap();
    assert_eq!(relay.sender_len, 0);
    assert!(relay.prefix.starts_with(b"\nX-Qmwatch-Check: relay-test\n"));

    // The closed relay alone, sanctioned: nothing to act on.
    let mut args = base.to_vec();
    args.push(ca.as_str());
    assert_eq!(check(&args).status.code(), Some(0));

    // From a trusted source, K is relaying as configured, not an open relay.
    let mut args = base.to_vec();
    args.extend(["--trusted-net", "127.0.0.1/32", oa.as_str()]);
    let o = check(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let evs = events(&o);
    let rt = &result_of(&evs, &oa)["qmwatch"]["check"]["relay_test"];
    assert_eq!(rt["verdict"], "accepted_trusted");
    assert_eq!(rt["client_trusted"], true);
    assert!(dataset(&evs, "qmwatch.relay").is_empty());
    let tx = dataset(&evs, "qmwatch.transaction");
    assert_eq!(tx[0]["qmwatch"]["transaction"]["client_trusted"], true);

    // The text report says the same.
    let o = check(&["--relay-test", "--trusted-net", "127.0.0.1/32", &oa, &ca]);
    let out = stdout(&o);
    assert!(
        out.contains("accepted for a trusted client (not an open relay)"),
        "{out}"
    );
    assert!(
        out.contains("refused — D \"sorry, that domain isn't in my list"),
        "{out}"
    );
}

#[test]
fn deferred_and_unanswered_relay_tests() {
    let defers = QmtpServer::start_relaying("127.0.0.1:0", Relaying::Defers, Writes::Whole);
    let hangs = QmtpServer::start_relaying("127.0.0.1:0", Relaying::Hangs, Writes::Whole);
    let (da, ha) = (defers.addr.to_string(), hangs.addr.to_string());
    let o = check(&["--relay-test", "--format", "json", &da, &ha]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let evs = events(&o);
    let rt = &result_of(&evs, &da)["qmwatch"]["check"]["relay_test"];
    assert_eq!(rt["verdict"], "deferred", "{rt:#}");
    assert_eq!(rt["reply"]["code"], "Z");
    assert_eq!(rt["reply"]["text"], "qq temporary problem (#4.3.0)");
    let rt = &result_of(&evs, &ha)["qmwatch"]["check"]["relay_test"];
    assert_eq!(rt["verdict"], "unanswered", "{rt:#}");
    assert!(rt.get("reply").is_none(), "{rt:#}");
    assert_eq!(rt["probe"]["end"], "timeout");
    assert_eq!(rt["probe"]["received_bytes"], 0);
    let mut verdicts: Vec<&str> = dataset(&evs, "qmwatch.relay")
        .iter()
        .map(|e| e["qmwatch"]["relay"]["verdict"].as_str().unwrap())
        .collect();
    verdicts.sort();
    assert_eq!(verdicts, ["deferred", "unanswered"]);
    let o = check(&["--relay-test", &da, &ha]);
    let out = stdout(&o);
    assert!(
        out.contains("deferred — Z \"qq temporary problem (#4.3.0)\""),
        "{out}"
    );
    assert!(out.contains("unanswered — no reply (timeout)"), "{out}");
}

#[test]
fn banners_of_other_protocols() {
    let ssh = banner_server(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n").to_string();
    let imap = banner_server(b"* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\n").to_string();
    let binary = banner_server(b"\x00\xff\x7fqm\r\n").to_string();
    let o = check(&["--format", "json", &ssh, &imap, &binary]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let evs = events(&o);
    for (a, result) in [(&ssh, "ssh"), (&imap, "other"), (&binary, "other")] {
        let c = &result_of(&evs, a)["qmwatch"]["check"];
        assert_eq!(c["result"], result, "{c:#}");
        assert_eq!(c["proof"], "greeting", "{c:#}");
    }
    let c = &result_of(&evs, &binary)["qmwatch"]["check"];
    assert_eq!(c["probes"][0]["received"], "\\x00\\xff\\x7fqm\\r\\n");
    assert_eq!(c["probes"][0]["received_bytes"], 7);
}

#[test]
fn other_ports_are_not_qmtp_qmqp() {
    let http = http_server().to_string();
    let silent = silent_server().to_string();
    let closed = format!("127.0.0.1:{}", closed_port());
    let hangs_up = closing_server(true).to_string();
    let hangs_up_later = closing_server(false).to_string();
    let t = Instant::now();
    let o = check(&[
        "--format",
        "json",
        &http,
        &silent,
        &closed,
        &hangs_up,
        &hangs_up_later,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let evs = events(&o);
    let h = &result_of(&evs, &http)["qmwatch"]["check"];
    assert_eq!(h["result"], "http", "{h:#}");
    assert!(h["detail"]
        .as_str()
        .unwrap()
        .contains("HTTP/1.1 400 Bad Request"));
    let s = &result_of(&evs, &silent)["qmwatch"]["check"];
    assert_eq!(s["result"], "silent", "{s:#}");
    let ends: Vec<&str> = s["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["end"].as_str().unwrap())
        .collect();
    assert_eq!(ends, ["timeout", "timeout", "timeout", "timeout"]);
    let c = result_of(&evs, &closed);
    assert_eq!(c["qmwatch"]["check"]["result"], "closed");
    assert!(c.get("source").is_none(), "no connection, no source");
    for (a, proof) in [(&hangs_up, "greeting"), (&hangs_up_later, "")] {
        let c = &result_of(&evs, a)["qmwatch"]["check"];
        assert_eq!(c["result"], "closes_without_answer", "{c:#}");
        assert_eq!(c["proof"].as_str().unwrap_or(""), proof, "{c:#}");
    }
    assert!(dataset(&evs, "qmwatch.service").is_empty());
    for e in &evs {
        assert_eq!(e["observer"]["type"], "active_check");
    }
    // Bounded: greeting 0.3 s + three reads of 1 s, the ports in parallel.
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    // The text report names each.
    let o = check(&[&http, &closed]);
    let out = stdout(&o);
    assert!(
        out.contains(&format!("{http}  not QMTP/QMQP: HTTP answer")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{closed}  closed: connection refused")),
        "{out}"
    );
}

#[test]
fn unanswered_connection_attempts_are_no_answer() {
    // A listener whose accept queue is full: Linux drops further SYNs, so
    // connecting times out, as with a filtering firewall.
    use socket2::{Domain, Socket, Type};
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    l.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        if let Ok(c) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            held.push(c);
        }
    }
    let a = addr.to_string();
    let o = check(&["--format", "json", &a]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let c = result_of(&events(&o), &a).clone();
    assert_eq!(c["qmwatch"]["check"]["result"], "no_answer", "{c:#}");
    assert_eq!(c["event"]["outcome"], "failure");
    // One clear line for the unreachable target.
    let err = stderr(&o);
    assert_eq!(
        err.trim(),
        format!("qmwatch: {a}: no answer: the connection attempt timed out after 1 s")
    );
    let o = check(&[&a]);
    assert!(stdout(&o).contains(&format!("{a}  no answer: the connection attempt timed out")));
    drop(held);
}

#[test]
fn tls_server_is_named() {
    if !available(
        "openssl",
        Command::new("openssl").arg("version").output().is_ok(),
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
    let o = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let port = closed_port();
    let mut server = Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
        ])
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not start");
        thread::sleep(Duration::from_millis(50));
    }
    let a = format!("127.0.0.1:{port}");
    let o = check(&["--format", "json", &a]);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let evs = events(&o);
    let c = &result_of(&evs, &a)["qmwatch"]["check"];
    assert_eq!(c["result"], "tls", "{c:#}");
    assert_eq!(c["proof"], "tls_client_hello");
}

#[test]
fn ipv6_and_networks() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback");
        return;
    }
    let s = QmtpServer::start("[::1]:0", false, Writes::Whole);
    let a = s.addr.to_string();
    let o = check(&["--format", "json", &a]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        result_of(&events(&o), &a)["qmwatch"]["check"]["result"],
        "qmtp"
    );
    // A /126 of loopback on a closed port: every address reported, once.
    let port = closed_port().to_string();
    let o = check(&["--format", "json", "--ports", &port, "127.0.0.0/30"]);
    assert_eq!(o.status.code(), Some(0));
    let evs = events(&o);
    let checks = dataset(&evs, "qmwatch.check");
    assert_eq!(checks.len(), 2, "127.0.0.1 and 127.0.0.2");
    assert!(checks
        .iter()
        .all(|e| e["qmwatch"]["check"]["target"] == "127.0.0.0/30"));
}

#[test]
fn events_have_the_passive_field_names() {
    let s = QmtpServer::start("127.0.0.1:0", true, Writes::Whole);
    let a = s.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("findings.json");
    let o = check(&[
        "--relay-test",
        "--format",
        "json",
        "-o",
        file.to_str().unwrap(),
        &a,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "events went to the file");
    // Each event as written, observer.type active_check included, is
    // valid against the schema the passive events are.
    let evs = parse_events(&std::fs::read_to_string(&file).unwrap());
    let mut kinds = Vec::new();
    for e in &evs {
        assert_eq!(e["observer"]["type"], "active_check");
        kinds.push(e["event"]["dataset"].as_str().unwrap().to_string());
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "qmwatch.check",
            "qmwatch.relay",
            "qmwatch.service",
            "qmwatch.transaction"
        ]
    );
    // A text report with -o: the report on stdout, the events in the file.
    let o = check(&["-o", file.to_str().unwrap(), &a]);
    assert!(stdout(&o).contains("QMTP service"));
    let all = parse_events(&std::fs::read_to_string(&file).unwrap());
    assert!(all.len() > evs.len());
}

/// The schema allows what the check writes and nothing more: an event
/// changed in one field is rejected.
#[test]
fn the_schema_holds_check_events_to_what_the_check_writes() {
    type Mutation = (&'static str, fn(&mut Value));
    let rejected = |e: &Value, mutations: &[Mutation]| {
        for (what, m) in mutations {
            let mut x = e.clone();
            m(&mut x);
            assert!(!schema_errors(&x).is_empty(), "accepted: {what}\n{x:#}");
        }
    };

    // A closed port: no connection, so no source and no flow.
    let closed = format!("127.0.0.1:{}", closed_port());
    let evs = events(&check(&["--format", "json", &closed]));
    let c = result_of(&evs, &closed).clone();
    assert_eq!(c["qmwatch"]["check"]["result"], "closed");
    rejected(
        &c,
        &[
            ("a Community ID without a connection", |e| {
                e["network"]["community_id"] = "1:LQU9qZlK+B5F3KDmev6m5PMibrg=".into()
            }),
            ("a source without a connection", |e| {
                e["source"] = serde_json::json!({"ip": "127.0.0.1", "port": 40000})
            }),
            ("observer.type sensor", |e| {
                e["observer"]["type"] = "sensor".into()
            }),
            ("an unknown observer.type", |e| {
                e["observer"]["type"] = "scanner".into()
            }),
            ("an unknown result", |e| {
                e["qmwatch"]["check"]["result"] = "filtered".into()
            }),
            ("closed as a failure", |e| {
                e["event"]["outcome"] = "failure".into()
            }),
            ("an unknown field", |e| {
                e["qmwatch"]["check"]["extra"] = 1.into()
            }),
            ("an unknown end", |e| {
                e["qmwatch"]["check"]["probes"][0]["end"] = "eof".into()
            }),
            ("sanctioned without a service", |e| {
                e["qmwatch"]["check"]["sanctioned"] = true.into()
            }),
            ("a protocol without a service", |e| {
                e["network"]["protocol"] = "qmtp".into()
            }),
            ("an alert", |e| {
                e["event"]["kind"] = "alert".into();
                e["event"]["severity"] = 21.into();
                e["rule"] = serde_json::json!({"id": "qmwatch-check", "name": "check"});
            }),
            ("no probes", |e| {
                e["qmwatch"]["check"]["probes"] = serde_json::json!([])
            }),
        ],
    );

    // An open QMTP relay: every kind of event the check writes.
    let s = QmtpServer::start("127.0.0.1:0", true, Writes::Whole);
    let a = s.addr.to_string();
    let evs = events(&check(&["--relay-test", "--format", "json", &a]));
    let c = result_of(&evs, &a).clone();
    assert_eq!(c["qmwatch"]["check"]["relay_test"]["verdict"], "open_relay");
    rejected(
        &c,
        &[
            ("a connection without a source", |e| {
                e.as_object_mut().unwrap().remove("source");
            }),
            ("a connection without a Community ID", |e| {
                e["network"].as_object_mut().unwrap().remove("community_id");
            }),
            ("the other protocol", |e| {
                e["network"]["protocol"] = "qmqp".into()
            }),
            ("a service without replies", |e| {
                e["qmwatch"]["check"]
                    .as_object_mut()
                    .unwrap()
                    .remove("replies");
            }),
            ("service false for QMTP", |e| {
                e["qmwatch"]["check"]["service"] = false.into()
            }),
            ("an unknown verdict", |e| {
                e["qmwatch"]["check"]["relay_test"]["verdict"] = "maybe".into()
            }),
            ("refused with K", |e| {
                e["qmwatch"]["check"]["relay_test"]["verdict"] = "refused".into()
            }),
            ("an open relay for a trusted client", |e| {
                e["qmwatch"]["check"]["relay_test"]["client_trusted"] = true.into()
            }),
            ("a relay-test step among the detection probes", |e| {
                e["qmwatch"]["check"]["probes"][0]["probe"] = "relay_test".into()
            }),
        ],
    );
    for ds in ["qmwatch.service", "qmwatch.transaction", "qmwatch.relay"] {
        let e = dataset(&evs, ds)[0].clone();
        rejected(
            &e,
            &[
                ("an active check's capture interface", |e| {
                    e["observer"]["ingress"] = serde_json::json!({"interface": {"name": "lo"}})
                }),
                ("an unknown observer.type", |e| {
                    e["observer"]["type"] = "scanner".into()
                }),
            ],
        );
    }
    let relay = dataset(&evs, "qmwatch.relay")[0].clone();
    rejected(
        &relay,
        &[("another scanner named by the check", |e| {
            e["qmwatch"]["relay"]["scanner"] = "nessus".into()
        })],
    );
}

// ---------------------------------------------------------------------------
// Real Postfix: qmqpd and smtpd, a private instance on loopback.

struct Postfix {
    dir: tempfile::TempDir,
    qmqp: u16,
    smtp: u16,
}

fn postfix_uid() -> Option<u32> {
    let pw = std::fs::read_to_string("/etc/passwd").ok()?;
    pw.lines()
        .find_map(|l| l.strip_prefix("postfix:"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|u| u.parse().ok())
}

impl Postfix {
    fn conf(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    /// Loopback only; every transport discards; qmqpd authorizes
    /// 127.0.0.1 and no other client.
    fn start() -> Postfix {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("qmwatch-postfix-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        // Postfix daemons run as the postfix user: they must reach the queue.
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["conf", "queue", "data"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        let uid = postfix_uid().expect("a postfix user");
        std::os::unix::fs::chown(d.join("data"), Some(uid), None).unwrap();
        let (qmqp, smtp) = (closed_port(), closed_port());
        let main = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {q}\n\
             data_directory = {data}\n\
             meta_directory = /etc/postfix\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             myhostname = qmwatch-test.example.net\n\
             mydomain = example.net\n\
             mydestination =\n\
             mynetworks = 127.0.0.1/32\n\
             qmqpd_authorized_clients = 127.0.0.1\n\
             default_transport = discard\n\
             local_transport = discard\n\
             virtual_transport = discard\n\
             relay_transport = discard\n\
             alias_maps =\n\
             alias_database =\n\
             local_recipient_maps =\n\
             smtputf8_enable = no\n\
             biff = no\n\
             maillog_file_prefixes = {dir}\n\
             maillog_file = {dir}/maillog\n\
             syslog_name = postfix-qmwatch-test\n",
            q = d.join("queue").display(),
            data = d.join("data").display(),
            dir = d.display(),
        );
        std::fs::write(d.join("conf/main.cf"), main).unwrap();
        let master = format!(
            "127.0.0.1:{qmqp} inet n - n - - qmqpd\n\
             127.0.0.1:{smtp} inet n - n - - smtpd\n\
             pickup    unix  n - n 60 1 pickup\n\
             cleanup   unix  n - n - 0 cleanup\n\
             qmgr      unix  n - n 300 1 qmgr\n\
             rewrite   unix  - - n - - trivial-rewrite\n\
             bounce    unix  - - n - 0 bounce\n\
             defer     unix  - - n - 0 bounce\n\
             trace     unix  - - n - 0 bounce\n\
             verify    unix  - - n - 1 verify\n\
             proxymap  unix  - - n - - proxymap\n\
             showq     unix  n - n - - showq\n\
             error     unix  - - n - - error\n\
             retry     unix  - - n - - error\n\
             discard   unix  - - n - - discard\n\
             anvil     unix  - - n - 1 anvil\n\
             scache    unix  - - n - 1 scache\n\
             postlog   unix-dgram n - n - 1 postlogd\n"
        );
        std::fs::write(d.join("conf/master.cf"), master).unwrap();
        let p = Postfix { dir, qmqp, smtp };
        let o = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(p.conf())
            .arg("start")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "postfix start: {}{}\n{}",
            stdout(&o),
            stderr(&o),
            p.log()
        );
        for port in [qmqp, smtp] {
            let deadline = Instant::now() + Duration::from_secs(15);
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "postfix never listened on {port}:\n{}",
                    p.log()
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Messages Postfix queued (its `qmgr` logs `from=` once per message).
    fn queued(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("/qmgr[") && l.contains(" from=<"))
            .count()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(self.conf())
            .arg("stop")
            .output();
        // Let the master and its daemons leave the directory first.
        let pid = self.dir.path().join("queue/pid/master.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while pid.exists() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn pf_check(args: &[&str]) -> Output {
    // Default waits: qmqpd refuses a client after its 1 s error delay.
    let mut v = vec!["check"];
    v.extend_from_slice(args);
    qmwatch(&v)
}

#[test]
fn real_postfix_qmqpd_and_smtpd() {
    let ok = available("root (to start Postfix)", is_root())
        && available(
            "Postfix (apt-get install postfix)",
            Path::new("/usr/sbin/postfix").exists()
                && Path::new("/usr/lib/postfix/sbin/qmqpd").exists(),
        );
    if !ok {
        return;
    }
    let pf = Postfix::start();
    let q = format!("127.0.0.1:{}", pf.qmqp);
    let s = format!("127.0.0.1:{}", pf.smtp);
    let sanctioned = format!("{q}/qmqp");

    // Detection from the authorized client: QMQP, and nothing queued.
    let o = pf_check(&["--format", "json", "--source", "127.0.0.1", &q, &s]);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stderr(&o), pf.log());
    let evs = events(&o);
    let c = &result_of(&evs, &q)["qmwatch"]["check"];
    assert_eq!(c["result"], "qmqp", "{c:#}\n{}", pf.log());
    assert_eq!(c["evidence"], "request_and_reply");
    assert_eq!(c["replies"][0]["code"], "D");
    assert_eq!(c["replies"][0]["text"], "Error: no recipients specified");
    let sm = &result_of(&evs, &s)["qmwatch"]["check"];
    assert_eq!(sm["result"], "smtp", "{sm:#}");
    assert!(sm["detail"]
        .as_str()
        .unwrap()
        .contains("220 qmwatch-test.example.net ESMTP"));
    thread::sleep(Duration::from_millis(500));
    assert_eq!(pf.queued(), 0, "detection queued mail:\n{}", pf.log());

    // Detection from a client qmqpd does not authorize: it speaks first.
    let o = pf_check(&["--format", "json", "--source", "127.0.0.2", &q]);
    let evs = events(&o);
    let c = &result_of(&evs, &q)["qmwatch"]["check"];
    assert_eq!(c["result"], "qmqp", "{c:#}");
    assert_eq!(c["evidence"], "reply_only");
    assert!(c["replies"][0]["text"]
        .as_str()
        .unwrap()
        .contains("is not authorized"));

    // Relay test from the authorized source, trusted by the site: K, as configured.
    let o = pf_check(&[
        "--relay-test",
        "--format",
        "json",
        "--source",
        "127.0.0.1",
        "--trusted-net",
        "127.0.0.1/32",
        "--sanctioned",
        &sanctioned,
        &q,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let evs = events(&o);
    let rt = &result_of(&evs, &q)["qmwatch"]["check"]["relay_test"];
    assert_eq!(rt["verdict"], "accepted_trusted", "{rt:#}");
    assert_eq!(rt["reply"]["code"], "K");
    assert!(rt["reply"]["text"]
        .as_str()
        .unwrap()
        .starts_with("Ok: queued as "));
    assert!(dataset(&evs, "qmwatch.relay").is_empty());

    // The same without --trusted-net: an open relay.
    let o = pf_check(&[
        "--relay-test",
        "--format",
        "json",
        "--source",
        "127.0.0.1",
        "--sanctioned",
        &sanctioned,
        &q,
    ]);
    assert_eq!(o.status.code(), Some(1));
    let evs = events(&o);
    assert_eq!(
        result_of(&evs, &q)["qmwatch"]["check"]["relay_test"]["verdict"],
        "open_relay"
    );
    let relay = dataset(&evs, "qmwatch.relay");
    assert_eq!(relay.len(), 1);
    assert_eq!(relay[0]["qmwatch"]["relay"]["verdict"], "open_relay");
    assert_eq!(relay[0]["qmwatch"]["relay"]["scanner"], "qmwatch");
    assert_eq!(relay[0]["network"]["protocol"], "qmqp");

    // From the unauthorized source: D, refused.
    let o = pf_check(&[
        "--relay-test",
        "--source",
        "127.0.0.2",
        "--sanctioned",
        &sanctioned,
        &q,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(
        out.contains("relay test from 127.0.0.2 to relay-test@qmwatch-check.invalid: refused — D \"Error: unknown[127.0.0.2] is not authorized"),
        "{out}"
    );
    // The two relay tests that got K are the only mail Postfix queued.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pf.queued() < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(pf.queued(), 2, "{}", pf.log());
    assert!(pf.log().contains("from=<>"), "null sender:\n{}", pf.log());
}

// ---------------------------------------------------------------------------
// The passive side, reading a capture of the check.

#[test]
fn replay_of_check_traffic_names_qmwatch() {
    let ok = available("root (to capture on lo)", is_root())
        && available(
            "tcpdump",
            Command::new("tcpdump").arg("--version").output().is_ok(),
        );
    if !ok {
        return;
    }
    let s = QmtpServer::start("127.0.0.1:0", true, Writes::Whole);
    let a = s.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("check.pcap");
    let mut td = Command::new("tcpdump")
        // Immediate mode: without it packets wait in the kernel's ring for
        // a block timeout, and a SIGINT before it loses them.
        .args([
            "-i",
            "lo",
            "-n",
            "-U",
            "--immediate-mode",
            "-Z",
            "root",
            "-s",
            "0",
            "-w",
        ])
        .arg(&pcap)
        .args(["tcp", "port", &s.addr.port().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // tcpdump says "listening on lo" once the capture is open.
    let err = td.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) if l.contains("listening on") => break,
            _ if Instant::now() > deadline => panic!("tcpdump did not start"),
            _ => {}
        }
    }
    let o = check(&["--relay-test", &a]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    // Loopback counts as trusted by default: name another network so the
    // relay test is judged too.
    let replay = || {
        qmwatch(&[
            "replay",
            "--quiet",
            "--trusted-net",
            "192.0.2.0/24",
            pcap.to_str().unwrap(),
        ])
    };
    // tcpdump writes each packet once it has read it (-U), but on a busy
    // machine (the whole suite at once, on two cores) it may read them
    // seconds after they were sent, and a SIGINT loses what it has not
    // read. So stop it once the file so far holds both packages' verdicts
    // (a replay of it: a last record still being written is only cut
    // short), then give it the flows' last packets.
    let deadline = Instant::now() + Duration::from_secs(20);
    while dataset(&events(&replay()), "qmwatch.relay").len() < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(Duration::from_millis(1500));
    let _ = Command::new("kill")
        .args(["-INT", &td.id().to_string()])
        .status();
    let _ = td.wait();
    let r = replay();
    assert_eq!(r.status.code(), Some(0), "{}", stderr(&r));
    let evs = events(&r);
    let probes = dataset(&evs, "qmwatch.probe");
    assert!(
        !probes.is_empty(),
        "{evs:#?}\ncapture of {} bytes; replay: {}",
        std::fs::metadata(&pcap).map(|m| m.len()).unwrap_or(0),
        stderr(&r)
    );
    assert!(
        probes
            .iter()
            .all(|p| p["qmwatch"]["probe"]["scanner"] == "qmwatch"),
        "{probes:#?}"
    );
    assert!(probes
        .iter()
        .any(|p| p["qmwatch"]["probe"]["form"] == "qmtp"));
    // Judged as any client's packages are: the detection package (its
    // recipients at .invalid are foreign) refused, the relay test accepted.
    // In the order the server answered: which package got which verdict is
    // the point here, not the order the events come out in.
    let mut relays = dataset(&evs, "qmwatch.relay");
    relays.sort_by_key(|e| e["@timestamp"].as_str().unwrap_or_default().to_string());
    let verdicts: Vec<&str> = relays
        .iter()
        .map(|e| e["qmwatch"]["relay"]["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["refused", "open_relay"], "{relays:#?}");
    assert!(relays
        .iter()
        .all(|e| e["qmwatch"]["relay"]["scanner"] == "qmwatch"));
    let svc = dataset(&evs, "qmwatch.service");
    assert_eq!(svc.len(), 1);
    assert_eq!(svc[0]["network"]["protocol"], "qmtp");
}
