//! What sqdctl finds at `--leader`: the address checked before connecting (HOST:PORT, a port
//! that exists), and, when a call fails below gRPC, the peer probed to name what answers there
//! instead of an sqd leader (an SSH or HTTP/1.1 server, a port that accepts and stays silent).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::text::clip;

/// Why `--leader` is not a usable address, said so the user can fix it.
pub(crate) fn check_leader_addr(addr: &str) -> Result<(), String> {
    let shown = clip(addr);
    let bad = |why: String| {
        Err(format!(
            "--leader {shown:?} {why}; expected HOST:PORT, e.g. 127.0.0.1:7070"
        ))
    };
    let Some((host, port)) = addr.rsplit_once(':') else {
        return bad("has no port".to_owned());
    };
    if host.is_empty() || host == "[]" {
        return bad("has no host".to_owned());
    }
    if host.contains(['/', '@', ' ']) || (host.contains(':') && !host.starts_with('[')) {
        return bad("has an invalid host".to_owned());
    }
    match port.parse::<u64>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(()),
        Ok(p) => bad(format!("has port {p}, outside 1-65535")),
        Err(_) => bad(format!("has an invalid port {:?}", clip(port))),
    }
}

/// What answered at the leader's address, as far as one probe can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// An HTTP/2 server: plausibly the leader itself (slow or failing), so the call's own error
    /// stands.
    Http2,
    /// Something else spoke first or answered: what it said, cut to a line.
    Other(String),
    /// It accepted the connection and closed it without a word.
    Closed,
    /// It accepted the connection and said nothing within the probe's time.
    Silent(Duration),
    /// Nothing accepts connections there (or the probe could not connect).
    NoServer,
}

impl Found {
    /// The one-line description of a server that is not an sqd leader; `None` when it may be.
    pub(crate) fn not_a_leader(&self) -> Option<String> {
        match self {
            Found::Http2 | Found::NoServer => None,
            Found::Other(said) => Some(format!("found a server that answered {said:?}")),
            Found::Closed => {
                Some("found a server that closed the connection without speaking gRPC".to_owned())
            }
            Found::Silent(d) => Some(format!(
                "found a server that accepted the connection but did not answer gRPC within {} ms",
                d.as_millis()
            )),
        }
    }
}

/// Reads what a peer sent in answer to the HTTP/2 preface: pure, so every kind of peer can be
/// tested without one.
pub(crate) fn classify(bytes: &[u8]) -> Found {
    if bytes.is_empty() {
        return Found::Closed;
    }
    // An HTTP/2 server's first frame is SETTINGS: a 9-byte header with type 0x4.
    if bytes.len() >= 4 && bytes[3] == 0x04 {
        return Found::Http2;
    }
    // A TLS alert record: the server wants TLS (sqdctl spoke plain HTTP/2).
    if bytes.len() >= 2 && bytes[0] == 0x15 && bytes[1] == 0x03 {
        return Found::Other("a TLS alert: the server expects TLS".to_owned());
    }
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().next().unwrap_or_default().trim();
    if line.is_empty() || !line.chars().all(|c| !c.is_control()) {
        return Found::Other(format!("{} bytes that are not HTTP/2", bytes.len()));
    }
    Found::Other(clip(line))
}

/// HTTP/2's client connection preface followed by an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Connects to `addr`, speaks HTTP/2's preface and reads the answer for up to `wait`. Blocking:
/// it runs once, on sqdctl's way out with an error.
pub(crate) fn probe(addr: &str, wait: Duration) -> Found {
    let Some(sock) = addr.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return Found::NoServer;
    };
    let Ok(mut stream) = TcpStream::connect_timeout(&sock, wait) else {
        return Found::NoServer;
    };
    let started = Instant::now();
    // A server that speaks first (SSH, SMTP) has its greeting read before our preface.
    let _ = stream.write_all(PREFACE);
    let mut buf = [0u8; 512];
    let mut got = 0;
    while got < buf.len() {
        let left = wait.saturating_sub(started.elapsed());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                // Enough to tell: a frame header, or a whole line.
                if buf[..got].contains(&b'\n') || (got >= 9 && buf[3] == 0x04) {
                    break;
                }
            }
            Err(_) if got == 0 => return Found::Silent(wait),
            Err(_) => break,
        }
    }
    classify(&buf[..got])
}

/// Whether a failed call may have met something other than an sqd leader: the failures that
/// come from below gRPC (a leader's refusals carry other codes).
pub(crate) fn below_grpc(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unknown
            | Code::Cancelled
            | Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Internal
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_addresses_need_a_host_and_a_real_port() {
        assert!(check_leader_addr("127.0.0.1:7070").is_ok());
        assert!(check_leader_addr("leader.example:7070").is_ok());
        assert!(check_leader_addr("[::1]:7070").is_ok());
        let err = check_leader_addr("127.0.0.1:99999").unwrap_err();
        assert!(err.contains("port 99999, outside 1-65535"), "{err}");
        assert!(check_leader_addr("127.0.0.1:0").is_err());
        assert!(
            check_leader_addr("127.0.0.1")
                .unwrap_err()
                .contains("no port")
        );
        assert!(check_leader_addr(":7070").is_err());
        assert!(check_leader_addr("::1:7070").is_err());
        assert!(check_leader_addr("http://h:1").is_err());
        let long = format!("{}:1", "h".repeat(10_000));
        assert!(check_leader_addr(&format!("{long}x")).unwrap_err().len() < 300);
    }

    #[test]
    fn peers_are_told_apart_by_their_first_bytes() {
        assert_eq!(
            classify(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"),
            Found::Http2
        );
        assert_eq!(
            classify(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"),
            Found::Other("HTTP/1.1 400 Bad Request".into())
        );
        assert_eq!(
            classify(b"SSH-2.0-OpenSSH_9.2\r\n"),
            Found::Other("SSH-2.0-OpenSSH_9.2".into())
        );
        assert_eq!(classify(b""), Found::Closed);
        assert!(
            matches!(classify(b"\x16\x03\x01\x02"), Found::Other(s) if s.contains("not HTTP/2"))
        );
        assert!(Found::Http2.not_a_leader().is_none());
        assert!(
            Found::Silent(Duration::from_secs(1))
                .not_a_leader()
                .is_some()
        );
    }
}
