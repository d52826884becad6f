//! The sockets of an active check: connect with a timeout (from
//! `--source` when given), send, and read a bounded answer by a deadline.
//!
//! Owns: every wait (connect, write and read all have a timeout; a read
//! ends at its deadline however the server trickles bytes), the cap on what
//! is read from a server ([`MAX_ANSWER`]), and naming how an exchange ended.
//!
//! Must not: interpret the bytes (that is `classify`), or read past the
//! cap or the deadline.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol as SockProtocol, SockAddr, Socket, Type};

/// Bytes read from a server per connection, at most.
pub const MAX_ANSWER: usize = 4096;

/// Why a connection could not be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectFailure {
    /// Connection refused: nothing listens there.
    Refused,
    /// No answer within the connect timeout (filtered, or no such host).
    TimedOut,
    /// Anything else (no route, network unreachable…), as the OS says it.
    Unreachable(String),
}

/// How reading an answer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The answer was complete enough to judge.
    Enough,
    /// The server closed the connection.
    Eof,
    /// The deadline passed.
    Timeout,
    /// The connection was reset (after whatever arrived before).
    Reset,
    /// [`MAX_ANSWER`] bytes were read.
    Cap,
    /// Another socket error.
    Error,
}

impl End {
    pub fn name(self) -> &'static str {
        match self {
            End::Enough => "answered",
            End::Eof => "closed_by_server",
            End::Timeout => "timeout",
            End::Reset => "reset",
            End::Cap => "read_cap",
            End::Error => "error",
        }
    }
}

/// Binds a socket to `source` (port 0) to see that the address is usable
/// here, before anything is sent.
pub fn check_source(source: IpAddr) -> Result<(), String> {
    let s = Socket::new(
        Domain::for_address(SocketAddr::new(source, 0)),
        Type::STREAM,
        Some(SockProtocol::TCP),
    )
    .map_err(|e| format!("cannot open a socket: {e}"))?;
    s.bind(&SockAddr::from(SocketAddr::new(source, 0)))
        .map_err(|e| format!("--source {source}: cannot bind: {e}"))
}

/// Connects to `target` within `timeout`, from `source` when given.
pub fn connect(
    target: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, ConnectFailure> {
    let s = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(SockProtocol::TCP),
    )
    .map_err(|e| ConnectFailure::Unreachable(e.to_string()))?;
    if let Some(src) = source {
        s.bind(&SockAddr::from(SocketAddr::new(src, 0)))
            .map_err(|e| ConnectFailure::Unreachable(format!("cannot bind {src}: {e}")))?;
    }
    match s.connect_timeout(&SockAddr::from(target), timeout) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Err(ConnectFailure::Refused),
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            return Err(ConnectFailure::TimedOut)
        }
        Err(e) => return Err(ConnectFailure::Unreachable(e.to_string())),
    }
    let stream: TcpStream = s.into();
    // Requests are small and sent whole: no reason to wait for Nagle.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Sends `data` within `timeout`. A server that already closed (as Postfix
/// `qmqpd` does after refusing a client) is not an error here: what it
/// said before is still read.
pub fn send(stream: &mut TcpStream, data: &[u8], timeout: Duration) -> Result<(), String> {
    stream
        .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
        .map_err(|e| e.to_string())?;
    stream.write_all(data).map_err(|e| e.to_string())?;
    stream.flush().map_err(|e| e.to_string())
}

/// Reads into `buf` until `enough(buf)`, the server closes, the deadline,
/// or [`MAX_ANSWER`] bytes in `buf`. Returns how it ended and the OS error
/// text for [`End::Error`].
pub fn receive(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
    enough: &dyn Fn(&[u8]) -> bool,
) -> (End, Option<String>) {
    let mut chunk = [0u8; 1024];
    loop {
        if !buf.is_empty() && enough(buf) {
            return (End::Enough, None);
        }
        let room = MAX_ANSWER.saturating_sub(buf.len());
        if room == 0 {
            return (End::Cap, None);
        }
        let now = Instant::now();
        if now >= deadline {
            return (End::Timeout, None);
        }
        let wait = (deadline - now).max(Duration::from_millis(1));
        if let Err(e) = stream.set_read_timeout(Some(wait)) {
            return (End::Error, Some(e.to_string()));
        }
        let want = room.min(chunk.len());
        let Some(dst) = chunk.get_mut(..want) else {
            return (End::Cap, None);
        };
        match stream.read(dst) {
            Ok(0) => return (End::Eof, None),
            Ok(n) => buf.extend_from_slice(dst.get(..n).unwrap_or_default()),
            Err(e) => match e.kind() {
                ErrorKind::Interrupted => {}
                ErrorKind::WouldBlock | ErrorKind::TimedOut => return (End::Timeout, None),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => {
                    return (End::Reset, None)
                }
                _ => return (End::Error, Some(e.to_string())),
            },
        }
    }
}

/// Closes both directions (the check never leaves a connection open).
pub fn close(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Both);
}
