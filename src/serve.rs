//! The HTTP server loop: accepts connections under a cap, serves each with hyper's HTTP/1
//! connection (header read timeout included), and drains on shutdown. Also the global byte
//! budget for request bodies being buffered.
//!
//! `axum::serve` has no header timeout and no connection cap, so a slowloris client could
//! hold connections (and their buffers) for ever. This loop is what it does, plus those.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// Longest request head (request line and headers) a client may send: far above what any
/// sender writes, and it bounds the memory a connection can hold before its handler runs.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The limits the server applies to every connection (from `[server]`).
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    /// Time allowed for a complete request head, from the connection's start or its
    /// previous response.
    pub header_read_timeout: Duration,
    /// Connections served at once; more wait in the accept queue.
    pub max_connections: usize,
}

/// The open-connection count, as `serve` sees it: each open connection holds one slot.
/// Handlers get it as an `Extension` (served by `serve` only, so absent in a bare router).
#[derive(Clone, Debug)]
pub struct Connections {
    slots: Arc<Semaphore>,
    max: usize,
}

impl Connections {
    /// Connections accepted and not yet closed (the one asking included).
    pub fn open(&self) -> usize {
        self.max.saturating_sub(self.slots.available_permits())
    }

    /// `server.max_connections`.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets every
/// open connection finish its request in progress (idle ones close at once), and returns
/// once all are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let max = u32::try_from(limits.max_connections)
        .unwrap_or(u32::MAX)
        .max(1);
    let slots = Arc::new(Semaphore::new(max as usize));
    // Handlers (`/metrics`) read the open-connection count from the slots themselves.
    let app = app.layer(axum::Extension(Connections {
        slots: Arc::clone(&slots),
        max: max as usize,
    }));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    let mut cap_logged = false;
    loop {
        // Take a slot before accepting: at the cap, new connections wait in the kernel's
        // accept queue rather than being accepted and starved.
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                cap_logged = false;
                slot
            }
            Err(_) => {
                if !cap_logged {
                    tracing::warn!(
                        max_connections = max,
                        "connection limit reached: new connections wait until one closes"
                    );
                    cap_logged = true;
                }
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, app, limits.header_read_timeout, stop).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it closes: all slots back means all closed.
    let _all = slots.acquire_many(max).await;
    Ok(())
}

/// Accept errors are per connection (the peer reset before we took it) or resource
/// exhaustion (no file descriptors left): the first kind is skipped, the second waits a
/// little so the loop does not spin.
async fn accept_failed(error: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        tracing::debug!(%error, "a connection closed before it was accepted");
    } else {
        tracing::error!(%error, "cannot accept connections; retrying in 1s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let io = Watched::new(stream);
    let partial = Arc::clone(&io.partial);
    let io = TokioIo::new(io);
    let service = TowerToHyperService::new(app);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_header_size(MAX_HEADER_BYTES);
    let mut conn = pin!(builder.serve_connection(io, service));
    let stopping = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stopping => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    match result {
        Ok(()) => {}
        Err(e) if e.is_timeout() && partial.load(Ordering::Relaxed) => tracing::warn!(
            %peer,
            timeout = ?header_timeout,
            "closed a connection whose request headers did not arrive within server.header_read_timeout"
        ),
        Err(e) if e.is_timeout() => {
            tracing::debug!(%peer, "closed an idle connection (server.header_read_timeout)")
        }
        Err(error) => tracing::debug!(%peer, %error, "connection ended with an error"),
    }
}

/// The connection's socket, noting whether a request is partly read: bytes came in since
/// the last response went out. A header timeout then means a slow client, not an idle
/// keep-alive connection. One relaxed store per read or write; nothing else.
struct Watched {
    stream: TcpStream,
    partial: Arc<AtomicBool>,
}

impl Watched {
    fn new(stream: TcpStream) -> Self {
        Watched {
            stream,
            partial: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.partial.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.partial.store(false, Ordering::Relaxed);
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.partial.store(false, Ordering::Relaxed);
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A global budget of bytes for request bodies being buffered and processed. Reserving is
/// a compare-and-swap loop on one atomic, releasing one subtraction: no lock, no waiting.
#[derive(Debug)]
pub struct BodyBudget {
    used: AtomicUsize,
    limit: usize,
}

impl BodyBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(BodyBudget {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// The budget's size in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Reserves `n` bytes, or `None` when that would go past the limit.
    pub fn reserve(self: &Arc<Self>, n: usize) -> Option<Reservation> {
        let mut r = Reservation {
            budget: Arc::clone(self),
            bytes: 0,
        };
        r.grow(n).then_some(r)
    }

    fn try_add(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }
}

/// Bytes held from a [`BodyBudget`], given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Holds `n` more bytes; false (and nothing more held) when that would go past the limit.
    pub fn grow(&mut self, n: usize) -> bool {
        if n == 0 {
            return true;
        }
        let ok = self.budget.try_add(n);
        if ok {
            self.bytes += n;
        }
        ok
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_budget_never_goes_past_its_limit_and_frees_on_drop() {
        let budget = BodyBudget::new(100);
        let a = budget.reserve(60).expect("fits");
        assert!(budget.reserve(41).is_none(), "60 + 41 > 100");
        let mut b = budget.reserve(40).expect("exactly fills");
        assert_eq!(budget.used(), 100);
        assert!(!b.grow(1), "full");
        assert_eq!(b.bytes(), 40, "a failed grow holds nothing more");
        drop(a);
        assert_eq!(budget.used(), 40);
        assert!(b.grow(60));
        assert_eq!(budget.used(), 100);
        drop(b);
        assert_eq!(budget.used(), 0);
        assert!(budget.reserve(usize::MAX).is_none(), "no overflow");
        assert!(budget.reserve(0).is_some());
    }
}
