//! The embedded SQLite backend (WAL mode, `synchronous=FULL`).
//!
//! Why rusqlite and not sqlx: SQLite allows one writer at a time, so the fastest durable
//! design is one dedicated writer thread that drains a channel and commits everything it
//! found in one transaction (group commit), with cached prepared statements and no async
//! hops per statement. sqlx's SQLite driver already funnels each connection through a worker
//! thread and adds a channel round-trip per statement; rusqlite lets us own that thread.
//! Reads use a separate connection (WAL readers never block the writer).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use super::{
    rfc3339_ms, Appended, CommittedEvent, NewEvent, Rejection, Store, StoreConfig, StoreError,
    StoredEvent,
};
use crate::model::NormalizedEvent;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE events (
    seq            INTEGER PRIMARY KEY,
    id             TEXT    NOT NULL UNIQUE,
    source         TEXT    NOT NULL,
    source_kind    TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    event_type     TEXT    NOT NULL,
    received_at    INTEGER NOT NULL,
    dedup_key      BLOB    NOT NULL,
    content_type   TEXT,
    raw            BLOB    NOT NULL,
    raw_truncated  INTEGER NOT NULL,
    normalized     TEXT    NOT NULL,
    status         TEXT    NOT NULL DEFAULT 'received'
);
CREATE INDEX events_dedup ON events (dedup_key, received_at);
CREATE INDEX events_received ON events (received_at);
CREATE INDEX events_unrouted ON events (seq) WHERE status = 'received';
CREATE TABLE rejections (
    seq     INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    source  TEXT    NOT NULL,
    status  INTEGER NOT NULL,
    reason  TEXT    NOT NULL
);
"#];

/// How many commands may wait for the writer before callers are made to wait.
const WRITE_QUEUE: usize = 8192;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum WriteCmd {
    Append(Box<NewEvent>, Reply<(Appended, Option<i64>)>),
    MarkRouted(Vec<i64>, Reply<()>),
    Rejections(Vec<Rejection>, Reply<()>),
    Close(Reply<()>),
}

/// SQLite store handle. Cheap to clone through `Arc`.
pub struct SqliteStore {
    path: PathBuf,
    tx: mpsc::Sender<WriteCmd>,
    reader: Arc<Mutex<Connection>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn open_conn(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags).map_err(|e| StoreError::Open {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, migrates it, and starts the
    /// writer thread.
    pub fn open(path: impl AsRef<Path>, cfg: StoreConfig) -> Result<Arc<Self>, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: dir.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        let mut wconn = open_conn(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // WAL + FULL: a commit returns only after the WAL is fsynced, so a 2xx survives
        // power loss, not just a process crash.
        let mode: String = wconn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Open {
                path: path.display().to_string(),
                reason: format!("could not switch to WAL mode (got {mode})"),
            });
        }
        wconn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        migrate(&mut wconn)?;
        let rconn = open_conn(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;

        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let writer = std::thread::Builder::new()
            .name("relayarr-store-writer".into())
            .spawn(move || Writer { conn: wconn, cfg }.run(rx))
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                reason: format!("cannot start writer thread: {e}"),
            })?;
        tracing::info!(path = %path.display(), "sqlite store opened (WAL, synchronous=FULL)");
        Ok(Arc::new(SqliteStore {
            path,
            tx,
            reader: Arc::new(Mutex::new(rconn)),
            writer: Mutex::new(Some(writer)),
        }))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn send<T>(&self, make: impl FnOnce(Reply<T>) -> WriteCmd) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Appends and also returns the row's sequence number (None for a duplicate).
    pub async fn append_seq(&self, ev: NewEvent) -> Result<(Appended, Option<i64>), StoreError> {
        self.send(|r| WriteCmd::Append(Box::new(ev), r)).await
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "store schema migrated");
    }
    Ok(())
}

struct Writer {
    conn: Connection,
    cfg: StoreConfig,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<WriteCmd>) {
        let max_batch = self.cfg.max_batch.max(1);
        let mut batch = Vec::with_capacity(max_batch);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            if let Some(close) = self.commit_batch(&mut batch) {
                rx.close();
                // Whatever raced in before close() still gets committed.
                while let Ok(cmd) = rx.try_recv() {
                    batch.push(cmd);
                }
                let _ = self.commit_batch(&mut batch);
                let res = self
                    .conn
                    .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
                    .map_err(StoreError::from);
                tracing::info!("store writer flushed and stopped");
                let _ = close.send(res);
                return;
            }
        }
        tracing::info!("store writer stopped (all handles dropped)");
    }

    /// Commits every command in `batch` in one transaction and answers each. Returns the
    /// reply port of a `Close` command if one was in the batch.
    fn commit_batch(&mut self, batch: &mut Vec<WriteCmd>) -> Option<Reply<()>> {
        let mut close = None;
        let mut done = Vec::with_capacity(batch.len());
        let res = (|| -> Result<(), StoreError> {
            let tx = self.conn.transaction()?;
            let now = super::now_ms();
            for cmd in batch.drain(..) {
                match cmd {
                    WriteCmd::Append(ev, reply) => {
                        done.push(Done::Append(reply, insert_event(&tx, &ev, now, &self.cfg)));
                    }
                    WriteCmd::MarkRouted(seqs, reply) => {
                        done.push(Done::Unit(reply, mark_routed(&tx, &seqs)));
                    }
                    WriteCmd::Rejections(rows, reply) => {
                        let r = insert_rejections(&tx, &rows, self.cfg.rejections_max);
                        done.push(Done::Unit(reply, r));
                    }
                    WriteCmd::Close(reply) => close = Some(reply),
                }
            }
            tx.commit()?;
            Ok(())
        })();
        let err = res.err();
        if let Some(e) = &err {
            tracing::error!(error = %e, batch = done.len(), "store commit failed");
        }
        for d in done {
            d.answer(err.as_ref());
        }
        close
    }
}

/// A command executed inside the open transaction, waiting for the commit to be answered.
enum Done {
    Append(
        Reply<(Appended, Option<i64>)>,
        Result<(Appended, Option<i64>), StoreError>,
    ),
    Unit(Reply<()>, Result<(), StoreError>),
}

impl Done {
    /// A failed commit overrides each command's own result: nothing of the batch is stored.
    fn answer(self, commit_err: Option<&StoreError>) {
        fn send<T>(reply: Reply<T>, r: Result<T, StoreError>, err: Option<&StoreError>) {
            let _ = reply.send(match err {
                Some(e) => Err(clone_err(e)),
                None => r,
            });
        }
        match self {
            Done::Append(reply, r) => send(reply, r, commit_err),
            Done::Unit(reply, r) => send(reply, r, commit_err),
        }
    }
}

/// StoreError is not Clone (it wraps rusqlite errors); a failed commit answers every caller
/// in the batch with the same message.
fn clone_err(e: &StoreError) -> StoreError {
    match e {
        StoreError::Closed => StoreError::Closed,
        other => StoreError::Open {
            path: "commit".into(),
            reason: other.to_string(),
        },
    }
}

fn insert_event(
    tx: &rusqlite::Transaction<'_>,
    ev: &NewEvent,
    now: i64,
    cfg: &StoreConfig,
) -> Result<(Appended, Option<i64>), StoreError> {
    let window = i64::try_from(cfg.dedup_window.as_millis()).unwrap_or(i64::MAX);
    let cutoff = now.saturating_sub(window);
    let dup: Option<String> = tx
        .prepare_cached(
            "SELECT id FROM events WHERE dedup_key = ?1 AND received_at >= ?2 ORDER BY seq LIMIT 1",
        )?
        .query_row(params![&ev.dedup_key[..], cutoff], |r| r.get(0))
        .optional()?;
    if let Some(id) = dup {
        return Ok((
            Appended {
                id,
                duplicate: true,
            },
            None,
        ));
    }
    let id = ulid::Ulid::new().to_string();
    let truncated = ev.raw.len() > cfg.raw_body_max;
    let raw = &ev.raw[..ev.raw.len().min(cfg.raw_body_max)];
    tx.prepare_cached(
        "INSERT INTO events (id, source, source_kind, kind, event_type, received_at, dedup_key, \
         content_type, raw, raw_truncated, normalized) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        id,
        ev.event.instance,
        ev.event.source.as_str(),
        ev.event.kind.as_str(),
        ev.event.event_type,
        ev.received_at_ms,
        &ev.dedup_key[..],
        ev.content_type,
        raw,
        truncated,
        ev.normalized_json,
    ])?;
    let seq = tx.last_insert_rowid();
    Ok((
        Appended {
            id,
            duplicate: false,
        },
        Some(seq),
    ))
}

fn mark_routed(tx: &rusqlite::Transaction<'_>, seqs: &[i64]) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "UPDATE events SET status = 'routed' WHERE seq = ?1 AND status = 'received'",
    )?;
    for seq in seqs {
        stmt.execute([seq])?;
    }
    Ok(())
}

fn insert_rejections(
    tx: &rusqlite::Transaction<'_>,
    rows: &[Rejection],
    max: u64,
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO rejections (at, source, status, reason) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for r in rows {
        stmt.execute(params![r.at_ms, r.source, r.status, r.reason])?;
    }
    let max = i64::try_from(max).unwrap_or(i64::MAX);
    tx.prepare_cached(
        "DELETE FROM rejections WHERE seq <= (SELECT MAX(seq) FROM rejections) - ?1",
    )?
    .execute([max])?;
    Ok(())
}

fn row_to_committed(
    seq: i64,
    id: String,
    at: i64,
    json: &str,
) -> Result<CommittedEvent, StoreError> {
    let event: NormalizedEvent = serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        id: id.clone(),
        reason: e.to_string(),
    })?;
    Ok(CommittedEvent {
        seq,
        id,
        received_at_ms: at,
        event: Arc::new(event),
    })
}

impl Store for SqliteStore {
    fn append(&self, ev: NewEvent) -> BoxFuture<'_, Result<(Appended, Option<i64>), StoreError>> {
        self.append_seq(ev).boxed()
    }

    fn get_event<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredEvent>, StoreError>> {
        let id = id.to_owned();
        self.read(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT id, source, kind, event_type, received_at, status, content_type, \
                     raw_truncated, normalized, raw FROM events WHERE id = ?1",
                )?
                .query_row([&id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, bool>(7)?,
                        r.get::<_, String>(8)?,
                        r.get::<_, Vec<u8>>(9)?,
                    ))
                })
                .optional()?;
            let Some((id, source, kind, event_type, at, status, ct, truncated, norm, raw)) = row
            else {
                return Ok(None);
            };
            let normalized = serde_json::from_str(&norm).map_err(|e| StoreError::Corrupt {
                id: id.clone(),
                reason: e.to_string(),
            })?;
            Ok(Some(StoredEvent {
                id,
                source,
                kind,
                event_type,
                received_at: rfc3339_ms(at),
                received_at_ms: at,
                status,
                content_type: ct,
                raw_truncated: truncated,
                normalized,
                raw: String::from_utf8_lossy(&raw).into_owned(),
            }))
        })
        .boxed()
    }

    fn unrouted(&self, limit: usize) -> BoxFuture<'_, Result<Vec<CommittedEvent>, StoreError>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, id, received_at, normalized FROM events \
                 WHERE status = 'received' ORDER BY seq LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, id, at, json) = row?;
                out.push(row_to_committed(seq, id, at, &json)?);
            }
            Ok(out)
        })
        .boxed()
    }

    fn mark_routed(&self, seqs: Vec<i64>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.send(|r| WriteCmd::MarkRouted(seqs, r)).boxed()
    }

    fn record_rejections(&self, rows: Vec<Rejection>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.send(|r| WriteCmd::Rejections(rows, r)).boxed()
    }

    fn recent_rejections(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Rejection>, StoreError>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT at, source, status, reason FROM rejections ORDER BY seq DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit], |r| {
                Ok(Rejection {
                    at_ms: r.get(0)?,
                    source: r.get(1)?,
                    status: r.get(2)?,
                    reason: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .boxed()
    }

    fn count_events(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.read(|conn| {
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .boxed()
    }

    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let res = match self.send(WriteCmd::Close).await {
                Err(StoreError::Closed) => Ok(()),
                other => other,
            };
            let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(h) = handle {
                let _ = tokio::task::spawn_blocking(move || h.join()).await;
            }
            res
        }
        .boxed()
    }
}
