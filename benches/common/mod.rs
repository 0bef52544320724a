//! Helpers shared by the load benches: a minimal keep-alive HTTP/1.1 exchange over a raw
//! `TcpStream` (far cheaper per request than a general client, so the load generator takes
//! little CPU from the server), readiness polling, and `/proc` readers for RSS.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP response as the load generator sees it.
pub struct Answer {
    /// The response status code.
    pub status: u16,
    /// Where the body starts in the buffer.
    pub body_start: usize,
}

/// Writes one request and reads exactly one response (headers plus `Content-Length` bytes)
/// into `buf`. Both servers are hyper, which answers these small bodies with a length.
pub async fn exchange(s: &mut TcpStream, req: &[u8], buf: &mut Vec<u8>) -> io::Result<Answer> {
    s.write_all(req).await?;
    buf.clear();
    let head_end = loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        if s.read_buf(buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a full response head",
            ));
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response head over 64 KiB",
            ));
        }
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "response head is not UTF-8"))?;
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
    let length = head
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "response without Content-Length",
            )
        })?;
    while buf.len() < head_end + length {
        if s.read_buf(buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed mid-body",
            ));
        }
    }
    Ok(Answer {
        status,
        body_start: head_end,
    })
}

/// The relay's `/metrics` text (`None` if it could not be read in 5 s).
pub async fn metrics_text(
    http: &reqwest::Client,
    addr: SocketAddr,
    admin_token: &str,
) -> Option<String> {
    http.get(format!("http://{addr}/metrics"))
        .bearer_auth(admin_token)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// Polls `GET /api/v1/health` until it answers 200, so start-up is not part of the warm-up.
pub async fn wait_ready(addr: SocketAddr) -> io::Result<()> {
    let req = format!("GET /api/v1/health HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = Vec::new();
    loop {
        let attempt = async {
            let mut s = TcpStream::connect(addr).await?;
            exchange(&mut s, req.as_bytes(), &mut buf).await
        };
        match attempt.await {
            Ok(a) if a.status == 200 => return Ok(()),
            Ok(a) if Instant::now() > deadline => {
                return Err(io::Error::other(format!("health answered {}", a.status)))
            }
            Err(e) if Instant::now() > deadline => return Err(e),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// A `kB` line of `/proc/self/status`, e.g. `VmRSS` (resident now) or `VmHWM` (peak).
pub fn proc_status_kib(key: &str) -> Option<u64> {
    status_kib_of("/proc/self/status", key)
}

/// A `kB` line of a `/proc/*/status` file.
fn status_kib_of(path: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// Resets `VmHWM` to the current RSS (`5` → `/proc/self/clear_refs`, Linux 4.0+), so each
/// scenario's peak is its own and not the earlier scenarios'.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// `sonarr` / `Pa55w0rd!`, the credentials of the shared Sonarr fixtures.
pub const AUTHORIZATION: &str = "Basic c29uYXJyOlBhNTV3MHJkIQ==";

/// The PostgreSQL server the benches may use (`RELAYARR_BENCH_POSTGRES`, a URL where they
/// may create databases), if any: with it, the relay under test stores into PostgreSQL.
pub fn postgres_admin_url() -> Option<String> {
    std::env::var("RELAYARR_BENCH_POSTGRES")
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// A fresh database on the bench's PostgreSQL server (one per scenario, so counts start at
/// zero); `None` when the benches run on SQLite.
pub async fn fresh_postgres_database() -> Result<Option<String>, String> {
    let Some(admin) = postgres_admin_url() else {
        return Ok(None);
    };
    let name = format!(
        "relayarr_bench_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let (base, _) = admin
        .rsplit_once('/')
        .ok_or("RELAYARR_BENCH_POSTGRES is not a URL with a database path")?;
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connect to RELAYARR_BENCH_POSTGRES: {e}"))?;
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .map_err(|e| format!("create {name}: {e}"))?;
    Ok(Some(format!("{base}/{name}")))
}

/// Where the server under test runs: `RELAYARR_BENCH_SERVER=process` runs the real
/// `relayarr` binary as a child process, so its RSS and CPU are its own and not shared with
/// the load generator and the sinks; anything else (the default) runs it in-process.
pub fn server_in_child() -> bool {
    std::env::var("RELAYARR_BENCH_SERVER").is_ok_and(|v| v.eq_ignore_ascii_case("process"))
}

/// The `relayarr` binary under test, run as a child process with a config file.
pub struct ChildServer {
    child: std::process::Child,
    /// Where it listens (a port that was free a moment before it started).
    pub addr: SocketAddr,
}

impl ChildServer {
    /// Writes `config` (TOML without `[server] listen`, which is added here) next to the
    /// data dir and starts `relayarr run` on it. Logging is `warn`: the per-event `info`
    /// lines would otherwise go to a pipe nobody reads and be part of the measurement.
    pub fn spawn(config: &str, dir: &std::path::Path) -> Result<Self, String> {
        Self::spawn_with_env(config, dir, std::iter::empty())
    }

    /// [`ChildServer::spawn`], with extra environment variables for the child (e.g. the
    /// caller's `RELAYARR_*__*` config overrides, which `spawn` does not pass on).
    pub fn spawn_with_env(
        config: &str,
        dir: &std::path::Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, String> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("free port: {e}"))?;
        let text = config.replacen("[server]\n", &format!("[server]\nlisten = \"{addr}\"\n"), 1);
        if !text.contains("listen =") {
            return Err("the bench config has no [server] section".into());
        }
        let path = dir.join("relayarr-bench.toml");
        std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
        let log = std::fs::File::create(dir.join("relayarr-bench.log"))
            .map_err(|e| format!("log file: {e}"))?;
        // `RELAYARR_BENCH_WRAP="heaptrack -o /tmp/relayarr"` runs the server under a wrapper
        // (a profiler), which gets the binary and its arguments.
        let wrap = std::env::var("RELAYARR_BENCH_WRAP").unwrap_or_default();
        let mut wrap = wrap.split_whitespace();
        let mut cmd = match wrap.next() {
            Some(program) => {
                let mut c = std::process::Command::new(program);
                c.args(wrap).arg(env!("CARGO_BIN_EXE_relayarr"));
                c
            }
            None => std::process::Command::new(env!("CARGO_BIN_EXE_relayarr")),
        };
        let child = cmd
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env_clear()
            // Allocator knobs (MIMALLOC_*) pass through, for memory experiments.
            .envs(std::env::vars().filter(|(k, _)| k.starts_with("MIMALLOC_")))
            .env("RELAYARR_LOG", "warn")
            .envs(env)
            .stdout(log.try_clone().map_err(|e| format!("log file: {e}"))?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start relayarr: {e}"))?;
        Ok(ChildServer { child, addr })
    }

    /// A `kB` line of the child's `/proc/PID/status` (`VmHWM`: its peak RSS).
    pub fn status_kib(&self, key: &str) -> Option<u64> {
        status_kib_of(&format!("/proc/{}/status", self.child.id()), key)
    }

    /// A count line of the child's `/proc/PID/status` (`Threads`).
    pub fn status_count(&self, key: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status.lines().find_map(|line| {
            line.strip_prefix(key)?
                .strip_prefix(':')?
                .trim()
                .parse()
                .ok()
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How many file descriptors the child has open (entries of `/proc/PID/fd`).
    pub fn open_fds(&self) -> Option<u64> {
        let dir = std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).ok()?;
        Some(dir.count() as u64)
    }

    /// The child's CPU time so far (user + system), in seconds.
    pub fn cpu_s(&self) -> f64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())) else {
            return 0.0;
        };
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // utime and stime are fields 14 and 15: indexes 11 and 12 counting from the state (3).
        (ticks(11) + ticks(12)) / 100.0
    }

    /// SIGTERM (a graceful drain), then waits up to 30 s for the exit.
    pub fn stop(mut self) -> Result<(), String> {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("relayarr exited with {status}")),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = self.child.kill();
                    return Err("relayarr did not stop within 30 s of SIGTERM".into());
                }
            }
        }
    }
}

/// The shared fixture `sonarr/Download.http`'s `downloadId`; each request replaces it with
/// its own number.
pub const FIXTURE_DOWNLOAD_ID: &str = "3F5A9C0E1B7D42A68E0C9B1D2F3A4E5B6C7D8E9F";

/// The shared fixture `sonarr/Download.http`'s body, split around its `downloadId`, so a
/// request's body is `head + {n:040X} + tail`: every body unique (relayarr answers a
/// repeated body `200 duplicate` and stores it once), all the same size. Used by
/// `delivery_load` and `soak`.
pub struct BodyTemplate {
    head: String,
    tail: String,
}

impl BodyTemplate {
    /// Reads the fixture from `tests/fixtures/shared/`.
    pub fn load() -> Result<BodyTemplate, String> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/shared/sonarr/Download.http");
        let raw = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let body = raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .ok_or_else(|| format!("{} has no header/body separator", path.display()))?;
        let (head, tail) = body.split_once(FIXTURE_DOWNLOAD_ID).ok_or_else(|| {
            format!(
                "{} no longer has downloadId {FIXTURE_DOWNLOAD_ID}",
                path.display()
            )
        })?;
        Ok(BodyTemplate {
            head: head.to_owned(),
            tail: tail.to_owned(),
        })
    }

    /// The body's length in bytes (the same for every `n`).
    pub fn len(&self) -> usize {
        self.head.len() + FIXTURE_DOWNLOAD_ID.len() + self.tail.len()
    }

    /// Writes into `out` request `n`: `POST /api/v1/webhooks/sonarr` with the fixture's
    /// credentials, keep-alive.
    pub fn request(&self, n: u64, host: &str, out: &mut Vec<u8>) {
        use std::io::Write as _;
        out.clear();
        let _ = write!(
            out,
            "POST /api/v1/webhooks/sonarr HTTP/1.1\r\n\
             Host: {host}\r\n\
             User-Agent: Sonarr/4.0.19.2979 (alpine 3.21.3)\r\n\
             Authorization: {AUTHORIZATION}\r\n\
             Accept: application/json\r\n\
             Content-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{}{n:040X}{}",
            self.len(),
            self.head,
            self.tail
        );
    }
}
