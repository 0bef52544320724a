//! Misbehaving webhook receivers for the outbound-fault tests: raw TCP servers on
//! 127.0.0.1:0 that read a request properly and then answer badly: reset the connection,
//! trickle the answer one byte at a time, or stream a huge body. Each reports what it saw on
//! the wire, connection by connection: the requests, how many response bytes it managed to
//! write, and when and how the exchange ended. That is what the tests assert on: the relay's
//! side of a fault (how much it read, when it gave up) shows up here.
//!
//! Raw TCP rather than axum: a real server framework would not let a test reset a
//! connection with unread data, pace the status line, or watch a write block.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Largest request head or body the receiver reads (the relay's bodies are a few KiB).
const MAX_REQUEST: usize = 1 << 20;

/// How a [`BadReceiver`] answers every request.
#[derive(Clone, Debug)]
pub enum Misbehaviour {
    /// Reads the request, then closes with a TCP RST (`SO_LINGER` 0) without answering.
    ResetAfterRequest,
    /// Sends `partial` (a status line, headers promising more body, and part of it), waits a
    /// little so the client has read it, then closes with a TCP RST.
    ResetMidResponse { partial: Vec<u8> },
    /// Sends `response` one byte per `every`, after its first `burst` bytes at once.
    Trickle {
        response: Vec<u8>,
        burst: usize,
        every: Duration,
    },
    /// Answers `200 OK` with a `content-length: len` body of `x`, written in 64 KiB pieces
    /// from one static buffer (nothing of `len`'s size is allocated).
    HugeBody { len: u64 },
}

impl Misbehaviour {
    /// `ResetMidResponse` after a `200 OK` promising 64 KiB and sending the first `sent`
    /// bytes of it (`b`).
    pub fn reset_mid_body(sent: usize) -> Self {
        let mut partial =
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 65536\r\n\r\n"
                .to_vec();
        partial.extend(std::iter::repeat_n(b'b', sent));
        Misbehaviour::ResetMidResponse { partial }
    }

    /// The whole of a `200 OK` response with body `body` (then `connection: close`), one byte
    /// per `every`.
    pub fn trickle_all(body: &str, every: Duration) -> Self {
        Misbehaviour::Trickle {
            response: ok_response(body),
            burst: 0,
            every,
        }
    }

    /// A `200 OK` whose status line and headers come at once and whose body `body` then comes
    /// one byte per `every`.
    pub fn trickle_body(body: &str, every: Duration) -> Self {
        let response = ok_response(body);
        Misbehaviour::Trickle {
            burst: response.len() - body.len(),
            response,
            every,
        }
    }
}

/// `200 OK` with a content length, asking the client to close afterwards.
fn ok_response(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One request as read off the wire.
#[derive(Clone, Debug)]
pub struct WireRequest {
    /// `POST /hook HTTP/1.1`.
    pub request_line: String,
    pub body: Vec<u8>,
    /// The relayarr envelope's `id` (the event id), when the body is one.
    pub event_id: Option<String>,
}

/// How one connection's exchange ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The receiver sent the whole response (and the client then closed or sent no more).
    Completed,
    /// The receiver reset the connection on purpose.
    ResetByUs,
    /// The client closed the connection while the receiver was still answering.
    ClientClosed,
    /// A write failed (the client reset the connection under it): the OS error.
    WriteFailed(String),
    /// The connection closed before a full request arrived (a pooled connection dropped).
    NoRequest,
}

/// One accepted connection, as the receiver saw it.
#[derive(Clone, Debug)]
pub struct WireConnection {
    pub accepted_at: Instant,
    /// Requests read on this connection (more than one: the client reused it).
    pub requests: Vec<WireRequest>,
    /// Response bytes written so far (accepted by the OS, not necessarily read by the client).
    pub bytes_written: u64,
    /// When and how the exchange ended; `None` while it is still going (or stuck).
    pub ended: Option<(Instant, Ending)>,
}

impl WireConnection {
    /// How long the exchange lasted, once it ended.
    pub fn duration(&self) -> Option<Duration> {
        self.ended.as_ref().map(|(at, _)| *at - self.accepted_at)
    }
}

type Log = Arc<Mutex<Vec<WireConnection>>>;

fn lock(log: &Log) -> MutexGuard<'_, Vec<WireConnection>> {
    // A panicking test thread must not hide the receiver's record from the others.
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running misbehaving receiver. Stops accepting when dropped.
pub struct BadReceiver {
    pub addr: std::net::SocketAddr,
    log: Log,
    accept: JoinHandle<()>,
}

impl Drop for BadReceiver {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl BadReceiver {
    /// Starts a receiver answering every request with `how`.
    pub async fn start(how: Misbehaviour) -> BadReceiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind bad receiver");
        let addr = listener.local_addr().expect("bad receiver addr");
        let log: Log = Arc::default();
        let accept_log = Arc::clone(&log);
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let idx = {
                    let mut log = lock(&accept_log);
                    log.push(WireConnection {
                        accepted_at: Instant::now(),
                        requests: Vec::new(),
                        bytes_written: 0,
                        ended: None,
                    });
                    log.len() - 1
                };
                let conn = Conn {
                    log: Arc::clone(&accept_log),
                    idx,
                };
                tokio::spawn(conn.serve(stream, how.clone()));
            }
        });
        BadReceiver { addr, log, accept }
    }

    /// The URL the hooks in these tests point at.
    pub fn hook_url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every connection so far, in accept order.
    pub fn connections(&self) -> Vec<WireConnection> {
        lock(&self.log).clone()
    }

    /// Every request so far, over all connections.
    pub fn requests(&self) -> Vec<WireRequest> {
        lock(&self.log)
            .iter()
            .flat_map(|c| c.requests.iter().cloned())
            .collect()
    }

    /// Waits until at least `n` connections carried a request and every one of them has
    /// ended; returns the connections that carried one. Panics with the record after
    /// `timeout`.
    pub async fn wait_ended(&self, n: usize, timeout: Duration) -> Vec<WireConnection> {
        let deadline = Instant::now() + timeout;
        loop {
            let served: Vec<WireConnection> = self
                .connections()
                .into_iter()
                .filter(|c| !c.requests.is_empty())
                .collect();
            if served.len() >= n && served.iter().all(|c| c.ended.is_some()) {
                return served;
            }
            assert!(
                Instant::now() < deadline,
                "bad receiver {}: wanted {n} finished exchanges within {timeout:?}, have: {:#?}",
                self.addr,
                summary(&served)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A short view of connections for failure messages (bodies left out).
pub fn summary(conns: &[WireConnection]) -> Vec<String> {
    conns
        .iter()
        .map(|c| {
            format!(
                "{} request(s), {} bytes written, ended {:?} after {:?}",
                c.requests.len(),
                c.bytes_written,
                c.ended.as_ref().map(|(_, e)| e),
                c.duration()
            )
        })
        .collect()
}

/// One connection's task and its slot in the log.
struct Conn {
    log: Log,
    idx: usize,
}

impl Conn {
    fn update(&self, f: impl FnOnce(&mut WireConnection)) {
        f(&mut lock(&self.log)[self.idx]);
    }

    fn end(&self, how: Ending) {
        self.update(|c| {
            c.ended.get_or_insert((Instant::now(), how));
        });
    }

    fn wrote(&self, n: usize) {
        self.update(|c| c.bytes_written += n as u64);
    }

    /// Serves requests on `stream` until one is answered badly or the client goes away.
    async fn serve(self, mut stream: TcpStream, how: Misbehaviour) {
        let mut buf = Vec::new();
        loop {
            let Some(req) = read_request(&mut stream, &mut buf).await else {
                let first = lock(&self.log)[self.idx].requests.is_empty();
                self.end(if first {
                    Ending::NoRequest
                } else {
                    Ending::Completed
                });
                return;
            };
            self.update(|c| c.requests.push(req));
            match &how {
                Misbehaviour::ResetAfterRequest => return self.reset(stream),
                Misbehaviour::ResetMidResponse { partial } => {
                    if let Err(e) = stream.write_all(partial).await {
                        return self.end(Ending::WriteFailed(e.to_string()));
                    }
                    self.wrote(partial.len());
                    // Let the client read the head and the partial body before the reset,
                    // so the fault is "body cut short", not "no response".
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return self.reset(stream);
                }
                Misbehaviour::Trickle {
                    response,
                    burst,
                    every,
                } => {
                    if !self.trickle(&mut stream, response, *burst, *every).await {
                        return;
                    }
                }
                Misbehaviour::HugeBody { len } => {
                    if !self.huge_body(&mut stream, *len).await {
                        return;
                    }
                }
            }
        }
    }

    fn reset(&self, stream: TcpStream) {
        // SO_LINGER 0: closing sends RST instead of FIN.
        if let Err(e) = stream.set_zero_linger() {
            panic!("SO_LINGER 0 on the bad receiver's socket: {e}");
        }
        drop(stream);
        self.end(Ending::ResetByUs);
    }

    /// Writes `response` slowly while watching for the client closing. True when the whole
    /// response went out (the connection may carry another request).
    async fn trickle(
        &self,
        stream: &mut TcpStream,
        response: &[u8],
        burst: usize,
        every: Duration,
    ) -> bool {
        let burst = burst.min(response.len());
        if let Err(e) = stream.write_all(&response[..burst]).await {
            self.end(Ending::WriteFailed(e.to_string()));
            return false;
        }
        self.wrote(burst);
        for byte in &response[burst..] {
            // The client sends nothing while it waits for our answer, so readable means it
            // closed (or reset) the connection.
            let mut probe = [0u8; 1];
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stream.read(&mut probe) => {
                    self.end(Ending::ClientClosed);
                    return false;
                }
            }
            if let Err(e) = stream.write_all(std::slice::from_ref(byte)).await {
                self.end(Ending::WriteFailed(e.to_string()));
                return false;
            }
            self.wrote(1);
        }
        let closes = response
            .windows(b"connection: close".len())
            .any(|w| w.eq_ignore_ascii_case(b"connection: close"));
        if closes {
            self.end(Ending::Completed);
            return false;
        }
        true
    }

    /// Streams a `len`-byte body. True when all of it was written.
    async fn huge_body(&self, stream: &mut TcpStream, len: u64) -> bool {
        static PIECE: [u8; 64 * 1024] = [b'x'; 64 * 1024];
        let head =
            format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {len}\r\n\r\n");
        if let Err(e) = stream.write_all(head.as_bytes()).await {
            self.end(Ending::WriteFailed(e.to_string()));
            return false;
        }
        let mut left = len;
        while left > 0 {
            let n = usize::try_from(left.min(PIECE.len() as u64)).unwrap_or(PIECE.len());
            if let Err(e) = stream.write_all(&PIECE[..n]).await {
                self.end(Ending::WriteFailed(e.to_string()));
                return false;
            }
            self.wrote(n);
            left -= n as u64;
        }
        true
    }
}

/// Reads one HTTP/1.1 request (head, then a `content-length` body) from `stream`, keeping
/// any bytes past it in `buf`. `None` when the connection closes first.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<WireRequest> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_REQUEST || !read_more(stream, buf).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let request_line = head.lines().next().unwrap_or_default().to_owned();
    let len = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_REQUEST);
    while buf.len() < head_end + len {
        if !read_more(stream, buf).await {
            return None;
        }
    }
    let body: Vec<u8> = buf[head_end..head_end + len].to_vec();
    buf.drain(..head_end + len);
    let event_id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_owned));
    Some(WireRequest {
        request_line,
        body,
        event_id,
    })
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}
