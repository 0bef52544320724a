//! The embedded SQLite backend: WAL mode, one writer thread (group commit), one fsync thread
//! (a reply is sent only after the WAL holding its commit is fsynced), one checkpoint thread.
//!
//! Why rusqlite and not sqlx: SQLite allows one writer at a time, so the fastest durable
//! design is one dedicated writer thread that drains a channel and commits everything it
//! found in one transaction (group commit), with cached prepared statements and no async
//! hops per statement. sqlx's SQLite driver already funnels each connection through a worker
//! thread and adds a channel round-trip per statement; rusqlite lets us own that thread.
//! Reads use a separate connection (WAL readers never block the writer).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use super::codec::{decode, prefix, row_to_committed, DedupCache, Encoded, CODEC_LZ4};
use super::{count_into, state_sql};
use super::{
    rfc3339_ms, Appended, AppliedCard, Attempt, AttemptRetention, CommittedEvent, Compacted,
    DebounceItem, Delivery, DeliveryCounts, DeliveryUpdate, EventFileKey, EventRetention,
    FireGroup, Fired, Group, HookOverrides, NewDelivery, NewEvent, PendingSummary, PrunedAttempts,
    PrunedBatch, Rejection, ReplayScope, Store, StoreConfig, StoreError, StoredEvent,
};
use super::{
    DeliveryInfo, DeliveryQueue, EventDeliveries, EventFilter, EventLog, EventSummary, History,
    Membership, RuntimeState,
};
use crate::model::NormalizedEvent;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
///
/// Write amplification is what limits durable ingest, so `events` has no index keyed by
/// anything random: dedup lookups use an in-memory window ([`DedupCache`]) verified against
/// the stored `dedup_key`, and routing progress is one watermark row in `meta` instead of a
/// per-event status update. Bodies are stored LZ4-compressed (`codec` 2).
const MIGRATIONS: &[&str] = &[
    r#"
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
    raw_truncated  INTEGER NOT NULL,
    codec          INTEGER NOT NULL,
    raw            BLOB    NOT NULL,
    normalized     BLOB    NOT NULL
);
CREATE INDEX events_received ON events (received_at);
CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('routed_upto', 0);
CREATE TABLE rejections (
    seq     INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    source  TEXT    NOT NULL,
    status  INTEGER NOT NULL,
    reason  TEXT    NOT NULL
);
"#,
    r#"
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    event_seq       INTEGER NOT NULL,
    hook            TEXT    NOT NULL,
    webhook_id      TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    UNIQUE (event_seq, hook)
);
CREATE INDEX deliveries_due ON deliveries (hook, next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_hook_created ON deliveries (hook, created_at);
CREATE TABLE attempts (
    id               INTEGER PRIMARY KEY,
    delivery_id      INTEGER NOT NULL,
    hook             TEXT    NOT NULL,
    event_id         TEXT    NOT NULL,
    webhook_id       TEXT    NOT NULL,
    attempt          INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,
    latency_ms       INTEGER NOT NULL,
    status           INTEGER,
    error            TEXT,
    request_excerpt  TEXT    NOT NULL,
    response_excerpt TEXT    NOT NULL
);
CREATE INDEX attempts_event ON attempts (event_id);
CREATE INDEX attempts_started ON attempts (started_at);
CREATE TABLE hook_overrides (
    hook       TEXT PRIMARY KEY,
    state      TEXT NOT NULL
) WITHOUT ROWID;
"#,
    // One delivery engine for hooks and Plex: a delivery may cover a debounced group of
    // events (`payload`), so uniqueness moves from (event, hook) to (target, stable id).
    r#"
CREATE TABLE deliveries_v3 (
    id              INTEGER PRIMARY KEY,
    event_seq       INTEGER NOT NULL,
    hook            TEXT    NOT NULL,
    webhook_id      TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    payload         TEXT,
    UNIQUE (hook, webhook_id)
);
INSERT INTO deliveries_v3 (id, event_seq, hook, webhook_id, state, attempts, next_attempt_at,
    created_at, updated_at, last_status, last_error)
  SELECT id, event_seq, hook, webhook_id, state, attempts, next_attempt_at, created_at,
    updated_at, last_status, last_error FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_v3 RENAME TO deliveries;
CREATE INDEX deliveries_due ON deliveries (hook, next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_hook_created ON deliveries (hook, created_at);
CREATE INDEX deliveries_event ON deliveries (event_seq);
CREATE TABLE debounce_items (
    target       TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    event_seq    INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    quiet_ms     INTEGER NOT NULL,
    max_wait_ms  INTEGER NOT NULL,
    fired        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (target, key, event_seq)
) WITHOUT ROWID;
CREATE TABLE plex_cards (
    target      TEXT    NOT NULL,
    rating_key  TEXT    NOT NULL,
    card_sha    TEXT    NOT NULL,
    item        TEXT    NOT NULL,
    applied_at  INTEGER NOT NULL,
    PRIMARY KEY (target, rating_key)
) WITHOUT ROWID;
"#,
    // The admin events list and explain view find the debounced groups that include an
    // event by reading each group's `payload.seqs`. Groups are one row per burst, a small
    // share of `deliveries`; this partial index holds only them, so those lookups read the
    // groups instead of scanning every delivery. Ingest pays nothing: only firing a group
    // writes to it.
    r#"
CREATE INDEX deliveries_group ON deliveries (event_seq) WHERE payload IS NOT NULL;
"#,
    // Reconciliation pollers: one cursor per [[arr]] (JSON, see `pollers::cursor`). Their
    // dedup reads events by `received_at` (a window of about an hour, through
    // `events_received`), so `events` gets no new index on the ingest path.
    r#"
CREATE TABLE poller_cursors (
    poller      TEXT    PRIMARY KEY,
    state       TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // Hooks created through the admin API: their config as JSON, loaded at every start.
    r#"
CREATE TABLE runtime_hooks (
    name        TEXT    PRIMARY KEY,
    config      TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // Routing progress per event, not a watermark: a watermark assumes rows commit in `seq`
    // order, which holds for this one writer but not for PostgreSQL, where a lower sequence
    // number can commit after a higher one. An event is unrouted from its commit (same
    // transaction) until the router has stored its deliveries and debounce items.
    r#"
CREATE TABLE unrouted (seq INTEGER PRIMARY KEY);
INSERT INTO unrouted (seq)
    SELECT seq FROM events WHERE seq > (SELECT value FROM meta WHERE key = 'routed_upto');
DELETE FROM meta WHERE key = 'routed_upto';
"#,
    // Event retention asks, for each old event, whether it still has an unfired debounce
    // item; without this index each such check scanned the whole table.
    r#"
CREATE INDEX debounce_items_event ON debounce_items (event_seq);
"#,
    // A delivery's id is a hash, so the unique index on (hook, webhook_id) took every new
    // row (and every deleted one) to a random leaf: each commit wrote a 4 KiB page per
    // delivery to the WAL, and retention did the same again. Led by `event_seq`, which
    // grows, the same uniqueness (the id is a function of the event, or a group's first
    // event, and the target) goes to the index's right edge, and it replaces
    // `deliveries_event` too.
    r#"
CREATE TABLE deliveries_v10 (
    id              INTEGER PRIMARY KEY,
    event_seq       INTEGER NOT NULL,
    hook            TEXT    NOT NULL,
    webhook_id      TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    payload         TEXT
);
INSERT INTO deliveries_v10 (id, event_seq, hook, webhook_id, state, attempts, next_attempt_at,
    created_at, updated_at, last_status, last_error, payload)
  SELECT id, event_seq, hook, webhook_id, state, attempts, next_attempt_at, created_at,
    updated_at, last_status, last_error, payload FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_v10 RENAME TO deliveries;
CREATE UNIQUE INDEX deliveries_once ON deliveries (event_seq, hook, webhook_id);
CREATE INDEX deliveries_due ON deliveries (hook, next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_hook_created ON deliveries (hook, created_at);
CREATE INDEX deliveries_group ON deliveries (event_seq) WHERE payload IS NOT NULL;
"#,
];

/// Page cache of the writer's connection, KiB (SQLite's default is 2,000 per connection).
/// The writer's hot pages are the right edges of the tables and indexes it appends to, and
/// a page it misses comes back from the OS page cache; the reader's pages are events loaded
/// for deliveries, mostly read once. Measured 2026-12-03 (server alone, alternating with
/// SQLite's defaults): scenario (b) at 64 connections peaked ~5 MiB lower (median 53.5
/// against 58.0 MiB), throughput within the noise; ingest alone unchanged (README,
/// Benchmarks).
const WRITER_CACHE_KIB: u32 = 1024;
/// Page cache of the read connection, KiB: see [`WRITER_CACHE_KIB`].
const READER_CACHE_KIB: u32 = 512;

/// How many commands may wait for the writer before callers are made to wait.
const WRITE_QUEUE: usize = 8192;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum WriteCmd {
    Append(Box<Encoded>, Reply<(Appended, Option<i64>)>),
    MarkRouted(Vec<i64>, Reply<()>),
    CreateDeliveries(Vec<NewDelivery>, Vec<i64>, Reply<Vec<Delivery>>),
    UpdateDeliveries(Vec<DeliveryUpdate>, Reply<()>),
    Attempts(Vec<Attempt>, Reply<()>),
    /// Attempts and the outcomes they led to, in one transaction.
    Outcomes(Vec<DeliveryUpdate>, Vec<Attempt>, Reply<()>),
    Prune(AttemptRetention, Reply<PrunedAttempts>),
    PruneEvents(EventRetention, Reply<PrunedBatch>),
    /// `PRAGMA incremental_vacuum` of at most this many pages.
    Compact(u64, Reply<Compacted>),
    Requeue(String, ReplayScope, Reply<Vec<i64>>),
    AddDebounce(Vec<DebounceItem>, Reply<Vec<DebounceItem>>),
    Fire(FireGroup, Reply<Option<Delivery>>),
    PruneDebounce(Reply<u64>),
    RecordCard(AppliedCard, Reply<()>),
    SaveHookState(HookOverrides, Reply<()>),
    Rejections(Vec<Rejection>, Reply<()>),
    Close(Reply<()>),
    Ping(Reply<()>),
    SavePollerCursor(String, String, Reply<()>),
    /// `(name, Some(config))` saves a runtime hook; `(name, None)` deletes it.
    RuntimeHook(String, Option<String>, Reply<()>),
}

/// SQLite store handle. Cheap to clone through `Arc`.
pub struct SqliteStore {
    path: PathBuf,
    tx: mpsc::Sender<WriteCmd>,
    /// The one read connection. Readers wait for it here, not in a blocking thread: with
    /// a blocking thread per waiting read, a burst of reads (a dead target's retries each
    /// load their event) made the runtime start hundreds of threads that all waited on it,
    /// and each kept its stack and allocator cache (RSS grew by hundreds of MiB).
    reader: Arc<tokio::sync::Mutex<Connection>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<WriterStats>,
    raw_body_max: usize,
    /// Decoded events still held somewhere, shared by every read of them.
    live: super::codec::LiveEvents,
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
        // Incremental auto-vacuum lets retention give freed pages back to the file system
        // (`History::compact`). It must be chosen before the first table is created; an
        // older database gets it through one VACUUM below.
        wconn.execute_batch("PRAGMA auto_vacuum=INCREMENTAL;")?;
        // WAL + FULL: a commit returns only after the WAL is fsynced, so a 2xx survives
        // power loss, not just a process crash.
        let mode: String = wconn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Open {
                path: path.display().to_string(),
                reason: format!("could not switch to WAL mode (got {mode})"),
            });
        }
        // synchronous=NORMAL: COMMIT writes the WAL frames but does not fsync them; the
        // `Flusher` thread does, and only then are the commands of that commit answered. So a
        // 2xx still means "fsynced to the WAL" (durable across power loss), while the writer
        // goes on with the next batch during the fsync (pipelined group commit).
        // Checkpoints: a background thread copies WAL frames into the database without
        // blocking anyone (see `Checkpointer`); the writer keeps SQLite's automatic checkpoint
        // (1000 pages), which then finds almost everything copied and only has to finish and
        // let the WAL restart from its beginning. A reused WAL keeps fdatasync cheap (no file
        // growth to journal); measured: ~0.4-0.5 ms per fsync instead of ~0.7-0.8 ms.
        wconn.execute_batch(
            "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; PRAGMA wal_autocheckpoint=1000;",
        )?;
        migrate(&mut wconn)?;
        wconn.execute_batch(&format!("PRAGMA cache_size=-{WRITER_CACHE_KIB};"))?;
        enable_incremental_vacuum(&wconn, &path);
        let dedup = load_dedup(&wconn, &cfg)?;
        let rconn = open_conn(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;

        rconn.execute_batch(&format!("PRAGMA cache_size=-{READER_CACHE_KIB};"))?;
        let checkpointer = Checkpointer::start(&path)?;
        let raw_body_max = cfg.raw_body_max;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let stats = Arc::new(WriterStats::default());
        let wal_path = PathBuf::from(format!("{}-wal", path.display()));
        let flusher = Flusher::start(wal_path.clone(), Arc::clone(&stats))?;
        let writer_stats = Arc::clone(&stats);
        let writer = std::thread::Builder::new()
            .name("relayarr-store-writer".into())
            .spawn(move || {
                Writer {
                    conn: wconn,
                    flusher,
                    cfg,
                    stats: writer_stats,
                    dedup,
                    checkpointer,
                    wal_path,
                    truncate_wal: false,
                }
                .run(rx)
            })
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                reason: format!("cannot start writer thread: {e}"),
            })?;
        tracing::info!(path = %path.display(), "sqlite store opened (WAL, group commit, fsync before reply)");
        Ok(Arc::new(SqliteStore {
            path,
            tx,
            reader: Arc::new(tokio::sync::Mutex::new(rconn)),
            writer: Mutex::new(Some(writer)),
            stats,
            raw_body_max,
            live: super::codec::LiveEvents::default(),
        }))
    }

    /// The writer thread's counters.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
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
        let conn = Arc::clone(&self.reader).lock_owned().await;
        tokio::task::spawn_blocking(move || f(&conn))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Reads and decodes the events of `seqs` (those still held come from `live` instead).
    async fn read_events(&self, seqs: Vec<i64>) -> Result<Vec<CommittedEvent>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, id, received_at, normalized, codec FROM events WHERE seq = ?1",
            )?;
            let mut out = Vec::with_capacity(seqs.len());
            for seq in seqs {
                let row = stmt
                    .query_row([seq], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Vec<u8>>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    })
                    .optional()?;
                if let Some((seq, id, at, norm, codec)) = row {
                    let json = decode(codec, norm, &id)?;
                    out.push(row_to_committed(seq, id, at, &json)?);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Appends and also returns the row's sequence number (None for a duplicate).
    pub async fn append_seq(&self, ev: NewEvent) -> Result<(Appended, Option<i64>), StoreError> {
        self.live
            .append(ev, self.raw_body_max, |e| {
                self.send(|r| WriteCmd::Append(Box::new(e), r))
            })
            .await
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        if version > 0 {
            // An existing file: a migration that rebuilds a table takes a while when it is large.
            tracing::info!(version = i + 1, "store schema migrating");
        }
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
    flusher: Flusher,
    wal_path: PathBuf,
    cfg: StoreConfig,
    stats: Arc<WriterStats>,
    dedup: DedupCache,
    checkpointer: Checkpointer,
    /// Set by a compaction that left no free pages: truncate the WAL after the commit.
    truncate_wal: bool,
}

/// How often the background checkpointer copies WAL frames into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// Safety net: if long-lived readers kept checkpoints from completing, the WAL would only
/// grow; past this size the writer truncates it. Checked every `WAL_CHECK_EVERY` rounds of the writer.
const WAL_LIMIT_BYTES: u64 = 64 * 1024 * 1024;
const WAL_CHECK_EVERY: u64 = 64;

/// A thread with its own connection that runs `PRAGMA wal_checkpoint(PASSIVE)` periodically.
/// Passive checkpoints never block the writer, so the writer's own automatic checkpoints
/// (and so request latency) no longer pay for copying most WAL frames into the database.
struct Checkpointer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<JoinHandle<()>>,
    /// Held for each passive checkpoint, and by the writer around its `TRUNCATE`
    /// checkpoints: SQLite answers a checkpoint that finds another one running with
    /// `SQLITE_BUSY` at once, without waiting, so the two must take turns.
    turn: Arc<std::sync::Mutex<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Self, StoreError> {
        let conn = open_conn(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let turn = Arc::new(std::sync::Mutex::new(()));
        let my_turn = Arc::clone(&turn);
        let handle = std::thread::Builder::new()
            .name("relayarr-store-checkpoint".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(CHECKPOINT_EVERY);
                    let _turn = take_turn(&my_turn);
                    if let Err(error) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
                        tracing::warn!(%error, "background checkpoint failed; will retry");
                    }
                }
            })
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                reason: format!("cannot start checkpoint thread: {e}"),
            })?;
        Ok(Checkpointer {
            stop,
            handle: Some(handle),
            turn,
        })
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Takes the checkpoint turn (see [`Checkpointer`]); a poisoned lock still guards nothing
/// but the turn, so it is taken all the same.
fn take_turn(turn: &std::sync::Mutex<()>) -> std::sync::MutexGuard<'_, ()> {
    turn.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Rebuilds the dedup window from the events received within it.
fn load_dedup(conn: &Connection, cfg: &StoreConfig) -> Result<DedupCache, StoreError> {
    let mut cache = DedupCache::new(cfg);
    let cutoff = cache.cutoff(super::now_ms());
    let mut stmt = conn.prepare(
        "SELECT seq, dedup_key, received_at FROM events WHERE received_at >= ?1 ORDER BY seq",
    )?;
    let rows = stmt.query_map([cutoff], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (seq, key, at) = row?;
        cache.insert(prefix(&key), seq, at);
    }
    Ok(cache)
}

/// Counters of the writer thread, for logs, benchmarks and (later) metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Commands executed (appends, routing marks, rejection batches).
    pub commands: AtomicU64,
    /// Time spent executing statements, in microseconds.
    pub exec_us: AtomicU64,
    /// Time spent in COMMIT (WAL write + fsync), in microseconds.
    pub commit_us: AtomicU64,
    /// Largest batch committed at once.
    pub max_batch: AtomicU64,
    /// WAL fsyncs, and time spent in them (each covers every commit queued before it).
    pub fsyncs: AtomicU64,
    /// Time spent in WAL fsyncs, in microseconds.
    pub fsync_us: AtomicU64,
}

impl WriterStats {
    fn record(&self, batch: usize, exec: std::time::Duration, commit: std::time::Duration) {
        let micros = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let batch = batch as u64;
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.commands.fetch_add(batch, Ordering::Relaxed);
        self.exec_us.fetch_add(micros(exec), Ordering::Relaxed);
        self.commit_us.fetch_add(micros(commit), Ordering::Relaxed);
        self.max_batch.fetch_max(batch, Ordering::Relaxed);
    }

    fn record_fsync(&self, took: std::time::Duration) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.fsync_us.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn log(&self) {
        let commits = self.commits.load(Ordering::Relaxed).max(1);
        let commands = self.commands.load(Ordering::Relaxed);
        tracing::info!(
            commits,
            commands,
            avg_batch = commands / commits,
            max_batch = self.max_batch.load(Ordering::Relaxed),
            avg_exec_us = self.exec_us.load(Ordering::Relaxed) / commits,
            avg_commit_us = self.commit_us.load(Ordering::Relaxed) / commits,
            fsyncs = self.fsyncs.load(Ordering::Relaxed),
            avg_fsync_us =
                self.fsync_us.load(Ordering::Relaxed) / self.fsyncs.load(Ordering::Relaxed).max(1),
            "store writer totals"
        );
    }
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<WriteCmd>) {
        let max_batch = self.cfg.max_batch.max(1);
        self.flusher.wake_me();
        let mut batch = Vec::with_capacity(max_batch);
        // Bookkeeping commands received but not yet executed: a transaction of them stops at
        // its time budget, and the rest go after the next round's ingest and routing.
        let mut deferred: Vec<WriteCmd> = Vec::new();
        let mut last_batch = 0usize;
        let mut rounds = 0u64;
        loop {
            rounds += 1;
            if deferred.is_empty() {
                let Some(first) = rx.blocking_recv() else {
                    break;
                };
                batch.push(first);
                // Group commit under concurrency: when the last batch showed several
                // writers, give their neighbours a moment to arrive so one fsync covers
                // them all. A lone request (last batch of one) is never delayed.
                if last_batch > 1 && !self.cfg.commit_delay.is_zero() {
                    std::thread::sleep(self.cfg.commit_delay);
                }
            }
            drain(&mut rx, &mut batch, max_batch);
            // Group commit with the fsync: while a sync is under way, nothing committed now
            // could be answered before the next one starts, so keep gathering until it ends
            // (or `SYNC_WAIT_MAX` passed, if the disk stalls). One commit per sync instead of
            // many small ones: each commit rewrites the index and table pages it touched, so
            // a commit of 2 events cost nearly what one of 30 does (avg batch 2 under 64
            // connections before this).
            let deadline = std::time::Instant::now() + SYNC_WAIT_MAX;
            while self.flusher.syncing() && batch.len() < max_batch {
                let now = std::time::Instant::now();
                if now >= deadline {
                    break;
                }
                std::thread::park_timeout(deadline - now);
                drain(&mut rx, &mut batch, max_batch);
            }
            last_batch = batch.len();
            // Three transactions, most urgent first. Ingest: a 2xx waits for its commit and
            // the fsync after it. Routing: the deliveries of new events (and their debounce
            // items), which every delivery's lag waits for. Bookkeeping (outcomes, attempts
            // with their excerpts, retention) last, and at most `BOOKKEEPING_BUDGET` of it
            // per round, so that a large batch of it never holds the other two back for
            // longer than that. Nothing in one drained batch depends on another command in
            // it: each caller waits for its answer before its next command.
            let (mut appends, rest): (Vec<_>, Vec<_>) = batch
                .drain(..)
                .partition(|c| matches!(c, WriteCmd::Append(..)));
            let (mut routing, rest): (Vec<_>, Vec<_>) =
                rest.into_iter().partition(WriteCmd::is_routing);
            deferred.extend(rest);
            let mut close = None;
            for (cmds, budget) in [
                (&mut appends, None),
                (&mut routing, None),
                (&mut deferred, Some(BOOKKEEPING_BUDGET)),
            ] {
                if cmds.is_empty() {
                    continue;
                }
                // Closing commits everything that came before the close.
                let budget =
                    budget.filter(|_| close.is_none() && !cmds.iter().any(WriteCmd::is_close));
                close = close.or(self.commit_batch(cmds, budget));
            }
            if rounds.is_multiple_of(WAL_CHECK_EVERY) {
                self.limit_wal();
            }
            if std::mem::take(&mut self.truncate_wal) {
                self.shrink_wal();
            }
            if let Some(close) = close {
                rx.close();
                // Whatever raced in before close() still gets committed.
                while let Ok(cmd) = rx.try_recv() {
                    batch.push(cmd);
                }
                let _ = self.commit_batch(&mut batch, None);
                self.flusher.stop();
                self.checkpointer.stop();
                let res = self
                    .conn
                    .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
                    .map_err(StoreError::from);
                self.stats.log();
                tracing::info!("store writer flushed and stopped");
                let _ = close.send(res);
                return;
            }
        }
        tracing::info!("store writer stopped (all handles dropped)");
    }

    /// Copies the whole WAL into the database and truncates it to zero bytes, taking turns
    /// with the background checkpointer. `Ok(false)` when a reader kept it from finishing
    /// within the busy timeout: the row is (busy, frames in the WAL, frames checkpointed).
    fn checkpoint_truncate(&self) -> rusqlite::Result<bool> {
        let _turn = take_turn(&self.checkpointer.turn);
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|busy| busy == 0)
    }

    /// After retention freed space: the WAL, grown by the deletes and the vacuum, goes back
    /// to zero bytes so the space is free on disk too, not only inside the file.
    fn shrink_wal(&mut self) {
        let size = std::fs::metadata(&self.wal_path)
            .map(|m| m.len())
            .unwrap_or(0);
        match self.checkpoint_truncate() {
            Ok(true) => tracing::debug!(wal_bytes_before = size, "WAL truncated after retention"),
            Ok(false) => tracing::info!(
                wal_bytes = size,
                "WAL not truncated after retention: a reader was still using it (next run)"
            ),
            Err(error) => {
                tracing::warn!(%error, wal_bytes = size, "could not truncate the WAL after retention")
            }
        }
    }

    fn limit_wal(&mut self) {
        let size = std::fs::metadata(&self.wal_path)
            .map(|m| m.len())
            .unwrap_or(0);
        if size <= WAL_LIMIT_BYTES {
            return;
        }
        let started = std::time::Instant::now();
        match self.checkpoint_truncate() {
            Ok(true) => tracing::debug!(
                wal_bytes = size,
                took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "WAL truncated"
            ),
            Ok(false) => tracing::warn!(
                wal_bytes = size,
                "WAL over its limit not truncated: a reader was still using it (will retry)"
            ),
            Err(error) => tracing::warn!(%error, wal_bytes = size, "could not truncate the WAL"),
        }
    }

    /// Commits every command in `batch` in one transaction and answers each. Returns the
    /// reply port of a `Close` command if one was in the batch.
    fn commit_batch(
        &mut self,
        batch: &mut Vec<WriteCmd>,
        budget: Option<std::time::Duration>,
    ) -> Option<Reply<()>> {
        let mut close = None;
        let mut done = Vec::with_capacity(batch.len());
        let started = std::time::Instant::now();
        let mut executed = started;
        let cmds = std::mem::take(batch);
        let mut cmds = cmds.into_iter();
        let mut rows = BatchRows::default();
        let res = (|| -> Result<(), StoreError> {
            let tx = self.conn.transaction()?;
            let now = super::now_ms();
            for cmd in cmds.by_ref() {
                rows.add(&cmd);
                match cmd {
                    WriteCmd::Append(ev, reply) => {
                        let r = insert_event(&tx, &ev, now, &mut self.dedup);
                        done.push(Done::Append(reply, r));
                    }
                    WriteCmd::MarkRouted(seqs, reply) => {
                        done.push(Done::Unit(reply, mark_routed(&tx, &seqs)));
                    }
                    WriteCmd::CreateDeliveries(rows, routed, reply) => {
                        let r = create_deliveries(&tx, &rows, now)
                            .and_then(|d| mark_routed(&tx, &routed).map(|()| d));
                        done.push(Done::Deliveries(reply, r));
                    }
                    WriteCmd::UpdateDeliveries(rows, reply) => {
                        done.push(Done::Unit(reply, update_deliveries(&tx, &rows, now)));
                    }
                    WriteCmd::Attempts(rows, reply) => {
                        done.push(Done::Unit(reply, insert_attempts(&tx, &rows)));
                    }
                    WriteCmd::Outcomes(updates, attempts, reply) => {
                        let r = insert_attempts(&tx, &attempts)
                            .and_then(|()| update_deliveries(&tx, &updates, now));
                        done.push(Done::Unit(reply, r));
                    }
                    WriteCmd::Prune(rule, reply) => {
                        done.push(Done::PrunedAttempts(reply, prune(&tx, rule)));
                    }
                    WriteCmd::PruneEvents(rule, reply) => {
                        done.push(Done::Pruned(reply, prune_events(&tx, rule)));
                    }
                    WriteCmd::Compact(max_pages, reply) => {
                        let r = compact(&tx, max_pages);
                        if matches!(r, Ok(c) if c.pages_left == 0) {
                            self.truncate_wal = true;
                        }
                        done.push(Done::Compacted(reply, r));
                    }
                    WriteCmd::Requeue(target, scope, reply) => {
                        done.push(Done::Ids(reply, requeue(&tx, &target, &scope, now)));
                    }
                    WriteCmd::AddDebounce(items, reply) => {
                        done.push(Done::Items(reply, add_debounce(&tx, items)));
                    }
                    WriteCmd::Fire(fire, reply) => {
                        done.push(Done::Fired(reply, fire_group(&tx, &fire, now)));
                    }
                    WriteCmd::PruneDebounce(reply) => {
                        let r = tx
                            .prepare_cached(
                                "DELETE FROM debounce_items WHERE fired = 1 AND event_seq \
                                 NOT IN (SELECT seq FROM unrouted)",
                            )
                            .and_then(|mut st| st.execute([]))
                            .map(|n| n as u64)
                            .map_err(StoreError::from);
                        done.push(Done::Count(reply, r));
                    }
                    WriteCmd::RecordCard(card, reply) => {
                        done.push(Done::Unit(reply, record_card(&tx, &card, now)));
                    }
                    WriteCmd::SaveHookState(state, reply) => {
                        done.push(Done::Unit(reply, save_hook_overrides(&tx, &state)));
                    }
                    WriteCmd::Rejections(rows, reply) => {
                        let r = insert_rejections(&tx, &rows, self.cfg.rejections_max);
                        done.push(Done::Unit(reply, r));
                    }
                    WriteCmd::Close(reply) => close = Some(reply),
                    WriteCmd::Ping(reply) => {
                        let r = tx
                            .prepare_cached(
                                "INSERT INTO meta (key, value) VALUES ('last_ping', ?1) \
                                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                            )
                            .and_then(|mut st| st.execute([now]))
                            .map(|_| ())
                            .map_err(StoreError::from);
                        done.push(Done::Unit(reply, r));
                    }
                    WriteCmd::RuntimeHook(name, config, reply) => {
                        let r = match config {
                            Some(c) => tx
                                .prepare_cached(
                                    "INSERT OR REPLACE INTO runtime_hooks (name, config, updated_at) \
                                     VALUES (?1, ?2, ?3)",
                                )
                                .and_then(|mut st| st.execute(params![name, c, now])),
                            None => tx
                                .prepare_cached("DELETE FROM runtime_hooks WHERE name = ?1")
                                .and_then(|mut st| st.execute([name])),
                        }
                        .map(|_| ())
                        .map_err(StoreError::from);
                        done.push(Done::Unit(reply, r));
                    }
                    WriteCmd::SavePollerCursor(poller, state, reply) => {
                        let r = tx
                            .prepare_cached(
                                "INSERT OR REPLACE INTO poller_cursors (poller, state, updated_at) \
                                 VALUES (?1, ?2, ?3)",
                            )
                            .and_then(|mut st| st.execute(params![poller, state, now]))
                            .map(|_| ())
                            .map_err(StoreError::from);
                        done.push(Done::Unit(reply, r));
                    }
                }
                if budget.is_some_and(|b| started.elapsed() >= b) {
                    break;
                }
            }
            executed = std::time::Instant::now();
            tx.commit()?;
            Ok(())
        })();
        // What the budget left out waits for the next round, in order.
        batch.extend(cmds);
        let size = done.len();
        let (exec, commit) = (executed - started, executed.elapsed());
        self.stats.record(size, exec, commit);
        if exec + commit >= SLOW_COMMIT {
            tracing::debug!(
                commands = size,
                appends = rows.appends,
                deliveries_created = rows.created,
                outcomes = rows.outcomes,
                attempts = rows.attempts,
                other = ?rows.other,
                exec_ms = exec.as_millis() as u64,
                commit_ms = commit.as_millis() as u64,
                "slow store commit"
            );
        }
        let err = res.err();
        if let Some(e) = &err {
            tracing::error!(error = %e, batch = done.len(), "store commit failed");
            // Entries added for the rolled-back events must not answer later duplicates.
            self.dedup = load_dedup(&self.conn, &self.cfg).unwrap_or_else(|error| {
                tracing::error!(%error, "could not reload the dedup window");
                DedupCache::new(&self.cfg)
            });
        }
        match err {
            None => self.flusher.submit(done),
            Some(e) => {
                for d in done {
                    d.answer(Some(&e));
                }
            }
        }
        close
    }
}

/// The longest the writer waits for an fsync under way before it commits anyway.
const SYNC_WAIT_MAX: std::time::Duration = std::time::Duration::from_millis(2);

/// Moves waiting commands into `batch`, up to `max` in all.
fn drain(rx: &mut mpsc::Receiver<WriteCmd>, batch: &mut Vec<WriteCmd>, max: usize) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(cmd) => batch.push(cmd),
            Err(_) => break,
        }
    }
}

/// A commit at least this long is logged (debug) with what it held.
const SLOW_COMMIT: std::time::Duration = std::time::Duration::from_millis(50);

/// What one transaction holds, by kind of row, for the slow-commit log.
#[derive(Default)]
struct BatchRows {
    appends: usize,
    created: usize,
    outcomes: usize,
    attempts: usize,
    /// Other commands, by name.
    other: Vec<&'static str>,
}

impl BatchRows {
    fn add(&mut self, cmd: &WriteCmd) {
        match cmd {
            WriteCmd::Append(..) => self.appends += 1,
            WriteCmd::CreateDeliveries(rows, ..) => self.created += rows.len(),
            WriteCmd::UpdateDeliveries(rows, _) => self.outcomes += rows.len(),
            WriteCmd::Attempts(rows, _) => self.attempts += rows.len(),
            WriteCmd::Outcomes(updates, attempts, _) => {
                self.outcomes += updates.len();
                self.attempts += attempts.len();
            }
            WriteCmd::MarkRouted(..) => self.other.push("mark_routed"),
            WriteCmd::Prune(..) => self.other.push("prune_attempts"),
            WriteCmd::PruneEvents(..) => self.other.push("prune_events"),
            WriteCmd::Compact(..) => self.other.push("compact"),
            WriteCmd::Requeue(..) => self.other.push("requeue"),
            WriteCmd::AddDebounce(..) => self.other.push("add_debounce"),
            WriteCmd::Fire(..) => self.other.push("fire_group"),
            WriteCmd::PruneDebounce(..) => self.other.push("prune_debounce"),
            WriteCmd::RecordCard(..) => self.other.push("record_card"),
            WriteCmd::SaveHookState(..) => self.other.push("save_hook_state"),
            WriteCmd::Rejections(..) => self.other.push("rejections"),
            WriteCmd::Close(..) => self.other.push("close"),
            WriteCmd::Ping(..) => self.other.push("ping"),
            WriteCmd::SavePollerCursor(..) => self.other.push("save_poller_cursor"),
            WriteCmd::RuntimeHook(..) => self.other.push("runtime_hook"),
        }
    }
}

/// Bookkeeping executed per round of the writer, at most (see [`Writer::run`]); the
/// command that crosses it still completes.
const BOOKKEEPING_BUDGET: std::time::Duration = std::time::Duration::from_millis(8);

impl WriteCmd {
    /// Routing work: what a new event's deliveries wait for.
    fn is_routing(&self) -> bool {
        matches!(
            self,
            WriteCmd::CreateDeliveries(..)
                | WriteCmd::MarkRouted(..)
                | WriteCmd::AddDebounce(..)
                | WriteCmd::Fire(..)
        )
    }

    fn is_close(&self) -> bool {
        matches!(self, WriteCmd::Close(_))
    }
}

/// Makes commits durable: `fdatasync` of the WAL file, then the answers of every commit
/// written before that sync began. One sync covers all commits queued meanwhile, so fsync
/// latency no longer caps the commit rate. fsync applies to the file (the inode), so syncing
/// through our own descriptor flushes the frames SQLite wrote through its own.
struct Flusher {
    tx: Option<std::sync::mpsc::Sender<Vec<Done>>>,
    handle: Option<JoinHandle<()>>,
    sync: Arc<SyncState>,
}

/// What the writer needs to know of the fsync thread: whether a sync is under way (or
/// queued), and how to be woken when none is.
#[derive(Default)]
struct SyncState {
    /// Commits submitted and not yet answered.
    pending: std::sync::atomic::AtomicUsize,
    /// The writer thread, unparked when `pending` drops to zero.
    writer: std::sync::OnceLock<std::thread::Thread>,
}

impl Flusher {
    fn start(wal_path: PathBuf, stats: Arc<WriterStats>) -> Result<Self, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<Done>>();
        let sync = Arc::new(SyncState::default());
        let state = Arc::clone(&sync);
        let handle = std::thread::Builder::new()
            .name("relayarr-store-fsync".into())
            .spawn(move || {
                let mut file = None;
                while let Ok(first) = rx.recv() {
                    let mut pending = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        pending.push(more);
                    }
                    let commits = pending.len();
                    let started = std::time::Instant::now();
                    let err = sync_wal(&wal_path, &mut file).err().map(|e| {
                        tracing::error!(error = %e, path = %wal_path.display(), "WAL fsync failed");
                        StoreError::Commit(format!("fsync of {} failed: {e}", wal_path.display()))
                    });
                    stats.record_fsync(started.elapsed());
                    for d in pending.into_iter().flatten() {
                        d.answer(err.as_ref());
                    }
                    if state.pending.fetch_sub(commits, Ordering::SeqCst) == commits {
                        if let Some(writer) = state.writer.get() {
                            writer.unpark();
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Open {
                path: "relayarr-store-fsync".into(),
                reason: format!("cannot start fsync thread: {e}"),
            })?;
        Ok(Flusher {
            tx: Some(tx),
            handle: Some(handle),
            sync,
        })
    }

    fn submit(&self, done: Vec<Done>) {
        if let Some(tx) = &self.tx {
            self.sync.pending.fetch_add(1, Ordering::SeqCst);
            if let Err(std::sync::mpsc::SendError(done)) = tx.send(done) {
                self.sync.pending.fetch_sub(1, Ordering::SeqCst);
                for d in done {
                    d.answer(Some(&StoreError::Closed));
                }
            }
        }
    }

    /// Registers the calling thread as the one to wake when no sync is under way.
    fn wake_me(&self) {
        let _ = self.sync.writer.set(std::thread::current());
    }

    /// Whether a commit is still waiting for its fsync.
    fn syncing(&self) -> bool {
        self.sync.pending.load(Ordering::SeqCst) > 0
    }

    /// Answers everything still pending, then stops the thread.
    fn stop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// fsyncs the WAL, reopening it if SQLite replaced the file since the last sync.
fn sync_wal(path: &Path, cached: &mut Option<(std::fs::File, u64)>) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(path)?.ino();
    let file = match cached.take() {
        Some((f, i)) if i == ino => f,
        _ => std::fs::OpenOptions::new().write(true).open(path)?,
    };
    let res = file.sync_data();
    *cached = Some((file, ino));
    res
}

/// A command executed inside the open transaction, waiting for the commit to be answered.
enum Done {
    Append(
        Reply<(Appended, Option<i64>)>,
        Result<(Appended, Option<i64>), StoreError>,
    ),
    Unit(Reply<()>, Result<(), StoreError>),
    Deliveries(Reply<Vec<Delivery>>, Result<Vec<Delivery>, StoreError>),
    Count(Reply<u64>, Result<u64, StoreError>),
    Compacted(Reply<Compacted>, Result<Compacted, StoreError>),
    Pruned(Reply<PrunedBatch>, Result<PrunedBatch, StoreError>),
    PrunedAttempts(Reply<PrunedAttempts>, Result<PrunedAttempts, StoreError>),
    Ids(Reply<Vec<i64>>, Result<Vec<i64>, StoreError>),
    Items(
        Reply<Vec<DebounceItem>>,
        Result<Vec<DebounceItem>, StoreError>,
    ),
    Fired(
        Reply<Option<Delivery>>,
        Result<Option<Delivery>, StoreError>,
    ),
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
            Done::Deliveries(reply, r) => send(reply, r, commit_err),
            Done::Count(reply, r) => send(reply, r, commit_err),
            Done::Compacted(reply, r) => send(reply, r, commit_err),
            Done::Pruned(reply, r) => send(reply, r, commit_err),
            Done::PrunedAttempts(reply, r) => send(reply, r, commit_err),
            Done::Ids(reply, r) => send(reply, r, commit_err),
            Done::Items(reply, r) => send(reply, r, commit_err),
            Done::Fired(reply, r) => send(reply, r, commit_err),
        }
    }
}

/// StoreError is not Clone (it wraps rusqlite errors); a failed commit answers every caller
/// in the batch with the same message.
fn clone_err(e: &StoreError) -> StoreError {
    match e {
        StoreError::Closed => StoreError::Closed,
        other => StoreError::Commit(other.to_string()),
    }
}

fn insert_event(
    tx: &rusqlite::Transaction<'_>,
    ev: &Encoded,
    now: i64,
    dedup: &mut DedupCache,
) -> Result<(Appended, Option<i64>), StoreError> {
    let key = prefix(&ev.dedup_key);
    if let Some(seq) = dedup.candidate(key, now) {
        let stored: Option<(String, Vec<u8>)> = tx
            .prepare_cached("SELECT id, dedup_key FROM events WHERE seq = ?1")?
            .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((id, _)) = stored.filter(|(_, full)| full[..] == ev.dedup_key[..]) {
            return Ok((
                Appended {
                    id,
                    duplicate: true,
                },
                None,
            ));
        }
    }
    let id = ulid::Ulid::new().to_string();
    tx.prepare_cached(
        "INSERT INTO events (id, source, source_kind, kind, event_type, received_at, dedup_key, \
         content_type, raw_truncated, codec, raw, normalized) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        id,
        ev.instance,
        ev.source_kind,
        ev.kind,
        ev.event_type,
        ev.received_at_ms,
        &ev.dedup_key[..],
        ev.content_type,
        ev.raw_truncated,
        CODEC_LZ4,
        ev.raw,
        ev.normalized,
    ])?;
    let seq = tx.last_insert_rowid();
    tx.prepare_cached("INSERT INTO unrouted (seq) VALUES (?1)")?
        .execute([seq])?;
    dedup.insert(key, seq, ev.received_at_ms);
    Ok((
        Appended {
            id,
            duplicate: false,
        },
        Some(seq),
    ))
}

fn create_deliveries(
    tx: &rusqlite::Transaction<'_>,
    rows: &[NewDelivery],
    now: i64,
) -> Result<Vec<Delivery>, StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO deliveries (event_seq, hook, webhook_id, state, attempts, \
         next_attempt_at, created_at, updated_at, payload) \
         VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4, ?4, ?5)",
    )?;
    let mut event = tx.prepare_cached("SELECT id, received_at FROM events WHERE seq = ?1")?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let payload = r.group.as_ref().map(encode_group).transpose()?;
        if insert.execute(params![r.event_seq, r.hook, r.webhook_id, now, payload])? == 0 {
            continue; // already exists: replays and recovery sweeps are idempotent
        }
        let id = tx.last_insert_rowid();
        let (event_id, at): (String, i64) =
            event.query_row([r.event_seq], |row| Ok((row.get(0)?, row.get(1)?)))?;
        out.push(Delivery {
            id,
            event_seq: r.event_seq,
            event_id,
            event_received_at_ms: at,
            hook: r.hook.clone(),
            webhook_id: r.webhook_id.clone(),
            attempts: 0,
            group: r.group.clone(),
        });
    }
    Ok(out)
}

fn encode_group(g: &Group) -> Result<String, StoreError> {
    serde_json::to_string(g).map_err(|e| StoreError::Backend(format!("group {}: {e}", g.key)))
}

fn decode_group(payload: Option<String>) -> rusqlite::Result<Option<Group>> {
    payload
        .map(|p| {
            serde_json::from_str(&p).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
            })
        })
        .transpose()
}

/// An `attempts` row read as `delivery_id, hook, event_id, webhook_id, attempt, started_at,
/// latency_ms, status, error, request_excerpt, response_excerpt` (columns 0 to 10).
fn attempt_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Attempt> {
    Ok(Attempt {
        delivery_id: r.get(0)?,
        hook: r.get(1)?,
        event_id: r.get(2)?,
        webhook_id: r.get(3)?,
        attempt: r.get(4)?,
        started_at_ms: r.get(5)?,
        latency_ms: u64::try_from(r.get::<_, i64>(6)?).unwrap_or(0),
        status: r.get(7)?,
        error: r.get(8)?,
        request_excerpt: r.get(9)?,
        response_excerpt: r.get(10)?,
    })
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

fn update_deliveries(
    tx: &rusqlite::Transaction<'_>,
    rows: &[DeliveryUpdate],
    now: i64,
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "UPDATE deliveries SET state = ?2, attempts = ?3, next_attempt_at = ?4, \
         last_status = ?5, last_error = ?6, updated_at = ?7 WHERE id = ?1",
    )?;
    for u in rows {
        let (id, state, attempts, next, status, error) = u.columns(now);
        stmt.execute(params![id, state, attempts, next, status, error, now])?;
    }
    Ok(())
}

fn insert_attempts(tx: &rusqlite::Transaction<'_>, rows: &[Attempt]) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO attempts (delivery_id, hook, event_id, webhook_id, attempt, started_at, \
         latency_ms, status, error, request_excerpt, response_excerpt) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for a in rows {
        stmt.execute(params![
            a.delivery_id,
            a.hook,
            a.event_id,
            a.webhook_id,
            a.attempt,
            a.started_at_ms,
            i64::try_from(a.latency_ms).unwrap_or(i64::MAX),
            a.status,
            a.error,
            a.request_excerpt,
            a.response_excerpt,
        ])?;
    }
    Ok(())
}

/// Retention: attempts older than the cutoff or beyond the newest `keep_max`, and finished
/// deliveries older than the cutoff. Pending deliveries are never pruned.
/// Attempt retention, one batch (see [`History::prune_attempts`]). In the soak a single
/// unbatched pass deleted ~250,000 attempts and held the writer for 1.1-1.7 s.
fn prune(
    tx: &rusqlite::Transaction<'_>,
    rule: AttemptRetention,
) -> Result<PrunedAttempts, StoreError> {
    let batch = i64::try_from(rule.batch).unwrap_or(i64::MAX);
    let keep = i64::try_from(rule.keep_max).unwrap_or(i64::MAX);
    let aged = tx
        .prepare_cached(
            "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts INDEXED BY \
             attempts_started WHERE started_at < ?1 ORDER BY started_at LIMIT ?2)",
        )?
        .execute(params![rule.older_than_ms, batch])?;
    // Ids are handed out in order, so the newest `keep_max` are those within `keep_max` of
    // the largest (gaps left by event retention make it keep fewer: a count of rows would
    // read them all).
    let counted = tx
        .prepare_cached(
            "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts \
             WHERE id <= (SELECT MAX(id) FROM attempts) - ?1 ORDER BY id LIMIT ?2)",
        )?
        .execute(params![keep, batch])?;
    // A delivery updated before the cutoff belongs to an event received before it: the
    // scan stops at the last such event (through `events_received`), not at the table's end.
    let finished = tx
        .prepare_cached(
            "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
             WHERE event_seq <= (SELECT MAX(seq) FROM \
               (SELECT seq FROM events INDEXED BY events_received WHERE received_at < ?1)) \
             AND state != 'pending' AND updated_at < ?1 LIMIT ?2)",
        )?
        .execute(params![rule.older_than_ms, batch])?;
    Ok(PrunedAttempts {
        rows: (aged + counted + finished) as u64,
        more: [aged, counted, finished]
            .iter()
            .any(|&n| n as u64 >= rule.batch as u64),
    })
}

/// Event retention, one batch (see [`History::prune_events`]): the oldest prunable events
/// past the age limit, then, while more than `keep_max` are stored, the oldest prunable
/// ones beyond it. One writer means nothing can make a chosen event busy before it goes.
fn prune_events(
    tx: &rusqlite::Transaction<'_>,
    rule: EventRetention,
) -> Result<PrunedBatch, StoreError> {
    // Prunable: routed, no pending delivery of its own, in no pending debounced group, and
    // no debounce item of it waiting to fire. The groups are checked apart: the events of
    // pending groups are read once per batch (groups are few), where a correlated
    // subquery read every pending delivery's payload again for each candidate event.
    const PRUNABLE: &str = "NOT EXISTS (SELECT 1 FROM unrouted u WHERE u.seq = e.seq) \
        AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq \
                        AND d.state = 'pending') \
        AND NOT EXISTS (SELECT 1 FROM debounce_items i WHERE i.event_seq = e.seq \
                        AND i.fired = 0)";
    let t0 = std::time::Instant::now();
    // Through the groups' own index: the planner may otherwise walk every pending
    // delivery (a dead target's backlog) to find the few groups among them.
    let in_pending_group: HashSet<i64> = tx
        .prepare_cached(
            "SELECT j.value FROM deliveries g INDEXED BY deliveries_group, \
             json_each(g.payload, '$.seqs') j \
             WHERE g.payload IS NOT NULL AND g.state = 'pending'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let batch = i64::try_from(rule.batch).unwrap_or(i64::MAX);
    // The last event old enough, found through `events_received`: the scan below stops
    // there. Without that bound it read every younger event's row (the whole table, when
    // nothing is that old) to test its age, on every batch.
    let old_upto: Option<i64> = tx
        .prepare_cached(
            "SELECT MAX(seq) FROM \
             (SELECT seq FROM events INDEXED BY events_received WHERE received_at < ?1)",
        )?
        .query_row([rule.older_than_ms], |r| r.get(0))?;
    let scanned: Vec<(i64, String)> = match old_upto {
        Some(upto) if upto > rule.after_seq => tx
            .prepare_cached(&format!(
                "SELECT e.seq, e.id FROM events e WHERE e.seq > ?3 AND e.seq <= ?4 \
                 AND e.received_at < ?1 AND {PRUNABLE} ORDER BY e.seq LIMIT ?2"
            ))?
            .query_map(
                params![rule.older_than_ms, batch, rule.after_seq, upto],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    let mut more = scanned.len() >= rule.batch;
    let mut last_seq = scanned.last().map_or(rule.after_seq, |(s, _)| *s);
    let mut seqs: Vec<(i64, String)> = scanned
        .into_iter()
        .filter(|(s, _)| !in_pending_group.contains(s))
        .collect();
    let left = batch - i64::try_from(seqs.len()).unwrap_or(0);
    if left > 0 && !more {
        let count: i64 = tx.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
        let keep = i64::try_from(rule.keep_max).unwrap_or(i64::MAX);
        let over = count - i64::try_from(seqs.len()).unwrap_or(0) - keep;
        if over > 0 {
            let want = over.min(left);
            let extra: Vec<(i64, String)> = tx
                .prepare_cached(&format!(
                    "SELECT e.seq, e.id FROM events e WHERE e.seq > ?1 AND {PRUNABLE} \
                     ORDER BY e.seq LIMIT ?2"
                ))?
                .query_map(params![last_seq, want], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            // Caught up with the count (new events keep arriving): the run ends here
            // rather than chasing ingest a few events per batch.
            more = over > left && i64::try_from(extra.len()).unwrap_or(0) >= want;
            last_seq = extra.last().map_or(last_seq, |(s, _)| *s);
            seqs.extend(
                extra
                    .into_iter()
                    .filter(|(s, _)| !in_pending_group.contains(s)),
            );
        }
    }
    // An attempt names the event of its delivery (a group's first event), so deleting by
    // event id removes every attempt of the deliveries deleted below, through an index.
    let mut attempts_by_event = tx.prepare_cached("DELETE FROM attempts WHERE event_id = ?1")?;
    let mut deliveries = tx.prepare_cached("DELETE FROM deliveries WHERE event_seq = ?1")?;
    let mut items = tx.prepare_cached("DELETE FROM debounce_items WHERE event_seq = ?1")?;
    let mut events = tx.prepare_cached("DELETE FROM events WHERE seq = ?1")?;
    let t1 = std::time::Instant::now();
    let mut n = 0u64;
    let (mut t_attempts, mut t_deliveries, mut t_events) = Default::default();
    for (seq, id) in &seqs {
        let t = std::time::Instant::now();
        attempts_by_event.execute([id])?;
        let u = std::time::Instant::now();
        t_attempts += u - t;
        deliveries.execute([seq])?;
        items.execute([seq])?;
        let v = std::time::Instant::now();
        t_deliveries += v - u;
        n += events.execute([seq])? as u64;
        t_events += v.elapsed();
    }
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    tracing::debug!(
        events = n,
        select_ms = ms(t1 - t0),
        attempts_ms = ms(t_attempts),
        deliveries_ms = ms(t_deliveries),
        events_ms = ms(t_events),
        "event retention batch"
    );
    Ok(PrunedBatch {
        events: n,
        last_seq,
        more,
    })
}

/// One step of giving free pages back to the file system (incremental auto-vacuum).
fn compact(tx: &rusqlite::Transaction<'_>, max_pages: u64) -> Result<Compacted, StoreError> {
    let free = |tx: &rusqlite::Transaction<'_>| -> Result<u64, StoreError> {
        let n: i64 = tx.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    let before = free(tx)?;
    let pages = max_pages.clamp(1, i64::MAX as u64);
    // The pragma frees one page per step: step it to the end (`execute_batch` would stop
    // after the first page).
    {
        let mut stmt = tx.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
    }
    let after = free(tx)?;
    let page_size: i64 = tx.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let page_count: i64 = tx.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    Ok(Compacted {
        pages_freed: before.saturating_sub(after),
        pages_left: after,
        file_bytes: u64::try_from(page_size.saturating_mul(page_count)).unwrap_or(0),
    })
}

/// Databases created before retention have no auto-vacuum, and only a VACUUM can turn it
/// on. That rewrites the whole file once (it needs as much free space again), so progress
/// is logged; if it fails (a full disk), the store still opens and retention still frees
/// pages for reuse inside the file.
fn enable_incremental_vacuum(conn: &Connection, path: &Path) {
    let mode: i64 = match conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)) {
        Ok(m) => m,
        Err(error) => {
            tracing::warn!(%error, "could not read PRAGMA auto_vacuum");
            return;
        }
    };
    if mode == 2 {
        return;
    }
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    tracing::info!(
        path = %path.display(),
        file_bytes = size,
        "store: rewriting the database once (VACUUM) to enable incremental auto-vacuum; \
         this takes about a second per 100 MB"
    );
    let started = std::time::Instant::now();
    let res = conn
        .execute_batch("PRAGMA auto_vacuum=INCREMENTAL; VACUUM; PRAGMA wal_checkpoint(TRUNCATE);");
    let took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match res {
        Ok(()) => tracing::info!(
            file_bytes_before = size,
            file_bytes_after = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            took_ms,
            "store: incremental auto-vacuum enabled"
        ),
        Err(error) => tracing::warn!(
            %error,
            took_ms,
            "store: could not VACUUM to enable incremental auto-vacuum; freed pages are \
             reused inside the file but the file does not shrink (free disk space and restart)"
        ),
    }
}

fn requeue(
    tx: &rusqlite::Transaction<'_>,
    target: &str,
    scope: &ReplayScope,
    now: i64,
) -> Result<Vec<i64>, StoreError> {
    const SET: &str = "UPDATE deliveries SET state = 'pending', next_attempt_at = ?2, \
                       updated_at = ?2 WHERE hook = ?1";
    let mut ids = Vec::new();
    match scope {
        ReplayScope::Event(event_id) => {
            // The event's own deliveries, and the groups that include it (their payload
            // lists its seq; groups are few, so scanning the target's groups is fine).
            let seq: Option<i64> = tx
                .prepare_cached("SELECT seq FROM events WHERE id = ?1")?
                .query_row([event_id], |r| r.get(0))
                .optional()?;
            let Some(seq) = seq else { return Ok(ids) };
            let mut stmt = tx.prepare_cached(&format!(
                "{SET} AND (event_seq = ?3 OR (payload IS NOT NULL AND EXISTS \
                 (SELECT 1 FROM json_each(payload, '$.seqs') WHERE value = ?3))) RETURNING id"
            ))?;
            for id in stmt.query_map(params![target, now, seq], |r| r.get(0))? {
                ids.push(id?);
            }
        }
        ReplayScope::Since(since) => {
            let mut stmt =
                tx.prepare_cached(&format!("{SET} AND created_at >= ?3 RETURNING id"))?;
            for id in stmt.query_map(params![target, now, since], |r| r.get(0))? {
                ids.push(id?);
            }
        }
        ReplayScope::Ids(list) => {
            let mut stmt = tx.prepare_cached(&format!("{SET} AND id = ?3 RETURNING id"))?;
            for want in list {
                for id in stmt.query_map(params![target, now, want], |r| r.get(0))? {
                    ids.push(id?);
                }
            }
        }
    }
    Ok(ids)
}

fn add_debounce(
    tx: &rusqlite::Transaction<'_>,
    items: Vec<DebounceItem>,
) -> Result<Vec<DebounceItem>, StoreError> {
    // Only events still unrouted get items. Routing is at least once (the sweep and the
    // normal path can route one event twice), and once an event is routed its fired items
    // may be pruned: re-adding one then would put the event in a second group.
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO debounce_items (target, key, event_seq, received_at, quiet_ms, \
         max_wait_ms) SELECT ?1, ?2, ?3, ?4, ?5, ?6 \
         WHERE EXISTS (SELECT 1 FROM unrouted WHERE seq = ?3)",
    )?;
    let mut added = Vec::with_capacity(items.len());
    for it in items {
        let n = stmt.execute(params![
            it.target,
            it.key,
            it.event_seq,
            it.received_at_ms,
            it.quiet_ms,
            it.max_wait_ms
        ])?;
        if n > 0 {
            added.push(it);
        }
    }
    Ok(added)
}

/// Fires the group's items that are still unfired, as one delivery. Nothing is written
/// unless the delivery is created: items are never marked fired without it.
fn fire_group(
    tx: &rusqlite::Transaction<'_>,
    fire: &FireGroup,
    now: i64,
) -> Result<Option<Delivery>, StoreError> {
    let (target, key) = (&fire.target, &fire.group.key);
    let mut unfired = tx.prepare_cached(
        "SELECT 1 FROM debounce_items \
         WHERE target = ?1 AND key = ?2 AND event_seq = ?3 AND fired = 0",
    )?;
    let mut seqs = Vec::with_capacity(fire.group.seqs.len());
    for &seq in &fire.group.seqs {
        if unfired
            .query_row(params![target, key, seq], |_| Ok(()))
            .optional()?
            .is_some()
        {
            seqs.push(seq);
        }
    }
    // Fired already (a retry after a failed answer): nothing is waiting.
    let Some(&first) = seqs.first() else {
        return Ok(None);
    };
    let mut webhook_id = if fire.group.seqs.first() == Some(&first) {
        fire.webhook_id.clone()
    } else {
        crate::debounce::group_delivery_id(target, key, first)
    };
    let mut exists =
        tx.prepare_cached("SELECT 1 FROM deliveries WHERE hook = ?1 AND webhook_id = ?2")?;
    let mut taken = |id: &str| -> Result<bool, StoreError> {
        Ok(exists
            .query_row(params![target, id], |_| Ok(()))
            .optional()?
            .is_some())
    };
    if taken(&webhook_id)? {
        // An earlier group with the same first event (its item was pruned and added
        // again): an id from the whole group, or no fire at all.
        let all = crate::debounce::group_delivery_id_of_all(target, key, &seqs);
        tracing::warn!(
            target_name = %target,
            key = %key,
            first_seq = first,
            webhook_id = %webhook_id,
            new_webhook_id = %all,
            "a debounce group's delivery id was taken by an earlier group with the same first event; using an id from all its events"
        );
        if taken(&all)? {
            return Err(StoreError::Backend(format!(
                "debounce group {key} of {target}: deliveries {webhook_id} and {all} both \
                 exist already; its items stay unfired"
            )));
        }
        webhook_id = all;
    }
    let mut mark = tx.prepare_cached(
        "UPDATE debounce_items SET fired = 1 WHERE target = ?1 AND key = ?2 AND event_seq = ?3",
    )?;
    for seq in &seqs {
        mark.execute(params![target, key, seq])?;
    }
    let row = NewDelivery {
        event_seq: first,
        hook: target.clone(),
        webhook_id,
        group: Some(Group {
            key: key.clone(),
            seqs,
        }),
    };
    let created = create_deliveries(tx, std::slice::from_ref(&row), now)?;
    // Checked above, in this transaction on the one writer: the insert cannot be skipped.
    Ok(created.into_iter().next())
}

fn record_card(
    tx: &rusqlite::Transaction<'_>,
    card: &AppliedCard,
    now: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO plex_cards (target, rating_key, card_sha, item, applied_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        card.target,
        card.rating_key,
        card.card_sha,
        card.item,
        now
    ])?;
    Ok(())
}

fn save_hook_overrides(
    tx: &rusqlite::Transaction<'_>,
    state: &HookOverrides,
) -> Result<(), StoreError> {
    let json = serde_json::to_string(state).map_err(|e| StoreError::Corrupt {
        id: state.hook.clone(),
        reason: e.to_string(),
    })?;
    tx.prepare_cached("INSERT OR REPLACE INTO hook_overrides (hook, state) VALUES (?1, ?2)")?
        .execute(params![state.hook, json])?;
    Ok(())
}

fn mark_routed(tx: &rusqlite::Transaction<'_>, seqs: &[i64]) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached("DELETE FROM unrouted WHERE seq = ?1")?;
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

/// The events list. The WHERE clause holds only the filters given, so SQLite walks `seq`
/// downwards from the cursor (the rowid: no OFFSET, no sort) and stops after `limit` rows.
/// A source or kind filter that matches few events walks further; an index on them would
/// cost every ingest a second B-tree write, and ingest is the throughput that matters.
fn list_events(conn: &Connection, f: &EventFilter) -> Result<Vec<EventSummary>, StoreError> {
    let mut sql = String::from(
        "SELECT e.seq, e.id, e.source, e.kind, e.event_type, e.received_at, e.normalized, \
         e.codec FROM events e WHERE 1",
    );
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut arg = |sql: &mut String, cond: &str, v: rusqlite::types::Value| {
        args.push(v);
        sql.push_str(&format!(" AND {cond} ?{}", args.len()));
    };
    if let Some(b) = f.before_seq {
        arg(&mut sql, "e.seq <", b.into());
    }
    if let Some(s) = &f.source {
        arg(&mut sql, "e.source =", s.clone().into());
    }
    if let Some(k) = &f.kind {
        arg(&mut sql, "e.kind =", k.clone().into());
    }
    if let Some(t) = f.since_ms {
        arg(&mut sql, "e.received_at >=", t.into());
    }
    if let Some(t) = f.until_ms {
        arg(&mut sql, "e.received_at <", t.into());
    }
    if let Some(state) = f.status {
        let st = state_sql(state);
        sql.push_str(&format!(
            " AND (EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND {st}) \
             OR e.seq IN (SELECT j.value FROM deliveries d, json_each(d.payload, '$.seqs') j \
             WHERE d.payload IS NOT NULL AND {st}))"
        ));
    }
    args.push(i64::try_from(f.limit).unwrap_or(i64::MAX).into());
    sql.push_str(&format!(" ORDER BY e.seq DESC LIMIT ?{}", args.len()));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, Vec<u8>>(6)?,
            r.get::<_, i64>(7)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, id, source, kind, event_type, at, norm, codec) = row?;
        let json = decode(codec, norm, &id)?;
        let ev: NormalizedEvent =
            serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt {
                id: id.clone(),
                reason: e.to_string(),
            })?;
        out.push(EventSummary {
            seq,
            id,
            source,
            kind,
            event_type,
            received_at: rfc3339_ms(at),
            received_at_ms: at,
            summary: ev.summary(),
            deliveries: Vec::new(),
        });
    }
    let (Some(min), Some(max)) = (
        out.iter().map(|e| e.seq).min(),
        out.iter().map(|e| e.seq).max(),
    ) else {
        return Ok(out);
    };
    let mut own = conn.prepare_cached(
        "SELECT d.hook, d.state, COUNT(*) FROM deliveries d WHERE d.event_seq = ?1 \
         AND d.payload IS NULL GROUP BY d.hook, d.state ORDER BY d.hook",
    )?;
    for ev in &mut out {
        let rows = own.query_map([ev.seq], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (target, state, n) = row?;
            count_into(
                &mut ev.deliveries,
                &target,
                &state,
                u64::try_from(n).unwrap_or(0),
            );
        }
    }
    // A group's first event has its smallest seq, so only groups that start at or before
    // the page's newest event can include one of its events.
    let mut groups = conn.prepare_cached(
        "SELECT d.hook, d.state, j.value FROM deliveries d, json_each(d.payload, '$.seqs') j \
         WHERE d.payload IS NOT NULL AND d.event_seq <= ?2 AND j.value BETWEEN ?1 AND ?2",
    )?;
    let rows = groups.query_map([min, max], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (target, state, seq) = row?;
        if let Some(ev) = out.iter_mut().find(|e| e.seq == seq) {
            count_into(&mut ev.deliveries, &target, &state, 1);
        }
    }
    Ok(out)
}

/// The deliveries that carry one event (its own and its groups'), and their attempts.
fn event_deliveries(
    conn: &Connection,
    event_id: &str,
) -> Result<Option<EventDeliveries>, StoreError> {
    let seq: Option<i64> = conn
        .prepare_cached("SELECT seq FROM events WHERE id = ?1")?
        .query_row([event_id], |r| r.get(0))
        .optional()?;
    let Some(seq) = seq else { return Ok(None) };
    let mut stmt = conn.prepare_cached(
        "SELECT d.id, d.hook, d.webhook_id, d.state, d.attempts, d.next_attempt_at, \
         d.created_at, d.updated_at, d.last_status, d.last_error, d.payload, e.id \
         FROM deliveries d JOIN events e ON e.seq = d.event_seq \
         WHERE d.event_seq = ?1 AND d.payload IS NULL \
         UNION ALL \
         SELECT d.id, d.hook, d.webhook_id, d.state, d.attempts, d.next_attempt_at, \
         d.created_at, d.updated_at, d.last_status, d.last_error, d.payload, e.id \
         FROM deliveries d JOIN events e ON e.seq = d.event_seq \
         WHERE d.payload IS NOT NULL AND d.event_seq <= ?1 \
         AND EXISTS (SELECT 1 FROM json_each(d.payload, '$.seqs') WHERE value = ?1) \
         ORDER BY 2, 1",
    )?;
    let rows = stmt.query_map([seq], |r| {
        let state: String = r.get(3)?;
        let next: i64 = r.get(5)?;
        Ok((
            DeliveryInfo {
                id: r.get(0)?,
                target: r.get(1)?,
                webhook_id: r.get(2)?,
                next_attempt_at_ms: (state == "pending").then_some(next),
                state,
                attempts: r.get(4)?,
                created_at_ms: r.get(6)?,
                updated_at_ms: r.get(7)?,
                last_status: r.get(8)?,
                last_error: r.get(9)?,
                group: decode_group(r.get(10)?)?,
            },
            r.get::<_, String>(11)?,
        ))
    })?;
    let mut deliveries = Vec::new();
    // Attempts are recorded under the delivery's own event (a group's first event), which
    // is indexed; the delivery id then picks this delivery's attempts.
    let mut owners: Vec<String> = Vec::new();
    for row in rows {
        let (d, owner) = row?;
        if !owners.contains(&owner) {
            owners.push(owner);
        }
        deliveries.push(d);
    }
    let mut attempts = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT delivery_id, hook, event_id, webhook_id, attempt, started_at, latency_ms, \
         status, error, request_excerpt, response_excerpt, id FROM attempts \
         WHERE event_id = ?1 ORDER BY id",
    )?;
    let mut with_id = Vec::new();
    for owner in owners {
        let rows = stmt.query_map([owner], |r| Ok((r.get::<_, i64>(11)?, attempt_row(r)?)))?;
        for row in rows {
            let (id, a) = row?;
            if deliveries
                .iter()
                .any(|d: &DeliveryInfo| d.id == a.delivery_id)
            {
                with_id.push((id, a));
            }
        }
    }
    with_id.sort_by_key(|(id, _)| *id);
    attempts.extend(with_id.into_iter().map(|(_, a)| a));
    Ok(Some(EventDeliveries {
        deliveries,
        attempts,
    }))
}

impl EventLog for SqliteStore {
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
                    "SELECT id, source, kind, event_type, received_at, \
                     CASE WHEN seq IN (SELECT seq FROM unrouted) \
                     THEN 'received' ELSE 'routed' END, content_type, \
                     raw_truncated, normalized, raw, codec FROM events WHERE id = ?1",
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
                        r.get::<_, Vec<u8>>(8)?,
                        r.get::<_, Vec<u8>>(9)?,
                        r.get::<_, i64>(10)?,
                    ))
                })
                .optional()?;
            let Some((id, source, kind, event_type, at, status, ct, truncated, norm, raw, codec)) =
                row
            else {
                return Ok(None);
            };
            let norm = decode(codec, norm, &id)?;
            let raw = decode(codec, raw, &id)?;
            let normalized = serde_json::from_slice(&norm).map_err(|e| StoreError::Corrupt {
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

    fn unrouted(&self, limit: usize) -> BoxFuture<'_, Result<Vec<(i64, i64)>, StoreError>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT u.seq, e.received_at FROM unrouted u JOIN events e ON e.seq = u.seq \
                 ORDER BY u.seq LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .boxed()
    }

    fn mark_routed(&self, seqs: Vec<i64>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.send(move |r| WriteCmd::MarkRouted(seqs, r)).boxed()
    }

    fn events_by_seq(
        &self,
        seqs: Vec<i64>,
    ) -> BoxFuture<'_, Result<Vec<CommittedEvent>, StoreError>> {
        self.live
            .events(seqs, |missing| self.read_events(missing))
            .boxed()
    }

    fn raw_body(&self, seq: i64) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        self.read(move |conn| {
            let row: Option<(String, Vec<u8>, i64)> = conn
                .prepare_cached("SELECT id, raw, codec FROM events WHERE seq = ?1")?
                .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            row.map(|(id, raw, codec)| decode(codec, raw, &id))
                .transpose()
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

    fn list_events(
        &self,
        filter: EventFilter,
    ) -> BoxFuture<'_, Result<Vec<EventSummary>, StoreError>> {
        self.read(move |conn| list_events(conn, &filter)).boxed()
    }

    fn event_file_keys<'a>(
        &'a self,
        source: &'a str,
        since_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<EventFileKey>, StoreError>> {
        let source = source.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, codec, normalized FROM events WHERE received_at >= ?1 \
                 AND source = ?2 AND kind IN ('import', 'upgrade', 'rename', 'delete')",
            )?;
            let rows = stmt.query_map(params![since_ms, source], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, codec, data) = row?;
                let json = decode(codec, data, &id)?;
                let ev: NormalizedEvent =
                    serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt {
                        id: id.clone(),
                        reason: e.to_string(),
                    })?;
                out.extend(EventFileKey::of(&ev));
            }
            Ok(out)
        })
        .boxed()
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
}

impl DeliveryQueue for SqliteStore {
    fn create_deliveries(
        &self,
        rows: Vec<NewDelivery>,
        routed: Vec<i64>,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, StoreError>> {
        self.send(|r| WriteCmd::CreateDeliveries(rows, routed, r))
            .boxed()
    }

    fn due_deliveries<'a>(
        &'a self,
        hook: &'a str,
        now_ms: i64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, StoreError>> {
        let hook = hook.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT d.id, d.event_seq, e.id, e.received_at, d.hook, d.webhook_id, d.attempts, \
                 d.payload FROM deliveries d JOIN events e ON e.seq = d.event_seq \
                 WHERE d.hook = ?1 AND d.state = 'pending' AND d.next_attempt_at <= ?2 \
                 ORDER BY d.next_attempt_at, d.id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![hook, now_ms, limit], |r| {
                Ok(Delivery {
                    id: r.get(0)?,
                    event_seq: r.get(1)?,
                    event_id: r.get(2)?,
                    event_received_at_ms: r.get(3)?,
                    hook: r.get(4)?,
                    webhook_id: r.get(5)?,
                    attempts: r.get(6)?,
                    group: decode_group(r.get(7)?)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .boxed()
    }

    fn update_deliveries(
        &self,
        updates: Vec<DeliveryUpdate>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.send(|r| WriteCmd::UpdateDeliveries(updates, r))
            .boxed()
    }

    fn requeue_deliveries<'a>(
        &'a self,
        target: &'a str,
        scope: ReplayScope,
    ) -> BoxFuture<'a, Result<Vec<i64>, StoreError>> {
        let target = target.to_owned();
        self.send(move |r| WriteCmd::Requeue(target, scope, r))
            .boxed()
    }

    fn delivery_targets<'a>(
        &'a self,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        let id = event_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT DISTINCT d.hook FROM events e JOIN deliveries d ON d.event_seq = e.seq \
                 WHERE e.id = ?1 \
                 UNION SELECT DISTINCT d.hook FROM events e JOIN deliveries d \
                 ON d.payload IS NOT NULL AND EXISTS \
                 (SELECT 1 FROM json_each(d.payload, '$.seqs') WHERE value = e.seq) \
                 WHERE e.id = ?1",
            )?;
            let rows = stmt.query_map([id], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<String>, _>>()?)
        })
        .boxed()
    }

    fn delivery_counts<'a>(
        &'a self,
        hook: &'a str,
    ) -> BoxFuture<'a, Result<DeliveryCounts, StoreError>> {
        let hook = hook.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT state, COUNT(*) FROM deliveries WHERE hook = ?1 GROUP BY state",
            )?;
            let mut counts = DeliveryCounts::default();
            let rows = stmt.query_map([hook], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            for row in rows {
                let (state, n) = row?;
                let n = u64::try_from(n).unwrap_or(0);
                counts.add(&state, n);
            }
            Ok(counts)
        })
        .boxed()
    }

    fn pending_summary(&self) -> BoxFuture<'_, Result<Vec<PendingSummary>, StoreError>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT hook, COUNT(*), MIN(created_at) FROM deliveries \
                 WHERE state = 'pending' GROUP BY hook ORDER BY hook",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(PendingSummary {
                    target: r.get(0)?,
                    pending: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    oldest_created_at_ms: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .boxed()
    }

    fn add_debounce_items(
        &self,
        items: Vec<DebounceItem>,
    ) -> BoxFuture<'_, Result<Vec<DebounceItem>, StoreError>> {
        self.send(|r| WriteCmd::AddDebounce(items, r)).boxed()
    }

    fn pending_debounce_items(&self) -> BoxFuture<'_, Result<Vec<DebounceItem>, StoreError>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT target, key, event_seq, received_at, quiet_ms, max_wait_ms \
                 FROM debounce_items WHERE fired = 0 ORDER BY event_seq",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(DebounceItem {
                    target: r.get(0)?,
                    key: r.get(1)?,
                    event_seq: r.get(2)?,
                    received_at_ms: r.get(3)?,
                    quiet_ms: r.get(4)?,
                    max_wait_ms: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .boxed()
    }

    fn fire_group(&self, fire: FireGroup) -> BoxFuture<'_, Result<Fired, StoreError>> {
        self.send(|r| WriteCmd::Fire(fire, r))
            .map(|r| r.map(Fired::Fired))
            .boxed()
    }

    fn adopt_debounce_items(&self) -> BoxFuture<'_, Result<Vec<DebounceItem>, StoreError>> {
        // One instance: nobody else's groups to take over.
        futures_util::future::ready(Ok(Vec::new())).boxed()
    }

    fn release_claims<'a>(&'a self, _target: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        futures_util::future::ready(Ok(())).boxed()
    }

    fn prune_debounce(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.send(WriteCmd::PruneDebounce).boxed()
    }
}

impl History for SqliteStore {
    fn record_attempts(&self, attempts: Vec<Attempt>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.send(|r| WriteCmd::Attempts(attempts, r)).boxed()
    }

    fn prune_attempts(
        &self,
        rule: AttemptRetention,
    ) -> BoxFuture<'_, Result<PrunedAttempts, StoreError>> {
        self.send(move |r| WriteCmd::Prune(rule, r)).boxed()
    }

    fn prune_events(&self, rule: EventRetention) -> BoxFuture<'_, Result<PrunedBatch, StoreError>> {
        self.send(move |r| WriteCmd::PruneEvents(rule, r)).boxed()
    }

    fn compact(&self, max_pages: u64) -> BoxFuture<'_, Result<Compacted, StoreError>> {
        self.send(move |r| WriteCmd::Compact(max_pages, r)).boxed()
    }

    fn attempts_for_event<'a>(
        &'a self,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Attempt>, StoreError>> {
        let event_id = event_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT delivery_id, hook, event_id, webhook_id, attempt, started_at, latency_ms, \
                 status, error, request_excerpt, response_excerpt FROM attempts \
                 WHERE event_id = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([event_id], attempt_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .boxed()
    }

    fn event_deliveries<'a>(
        &'a self,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<EventDeliveries>, StoreError>> {
        let id = event_id.to_owned();
        self.read(move |conn| event_deliveries(conn, &id)).boxed()
    }
}

impl RuntimeState for SqliteStore {
    fn hook_overrides<'a>(
        &'a self,
        hook: &'a str,
    ) -> BoxFuture<'a, Result<Option<HookOverrides>, StoreError>> {
        let hook = hook.to_owned();
        self.read(move |conn| {
            let json: Option<String> = conn
                .prepare_cached("SELECT state FROM hook_overrides WHERE hook = ?1")?
                .query_row([&hook], |r| r.get(0))
                .optional()?;
            json.map(|j| {
                serde_json::from_str(&j).map_err(|e| StoreError::Corrupt {
                    id: hook.clone(),
                    reason: e.to_string(),
                })
            })
            .transpose()
        })
        .boxed()
    }

    fn save_hook_overrides(&self, state: HookOverrides) -> BoxFuture<'_, Result<(), StoreError>> {
        self.send(|r| WriteCmd::SaveHookState(state, r)).boxed()
    }

    fn runtime_hooks(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT name, config FROM runtime_hooks ORDER BY name")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .boxed()
    }

    fn save_runtime_hook(
        &self,
        name: String,
        config: Option<String>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.send(|r| WriteCmd::RuntimeHook(name, config, r))
            .boxed()
    }

    fn applied_card<'a>(
        &'a self,
        target: &'a str,
        rating_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        let (target, key) = (target.to_owned(), rating_key.to_owned());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT card_sha FROM plex_cards WHERE target = ?1 AND rating_key = ?2",
                )?
                .query_row([target, key], |r| r.get(0))
                .optional()?)
        })
        .boxed()
    }

    fn record_card(&self, card: AppliedCard) -> BoxFuture<'_, Result<(), StoreError>> {
        self.send(|r| WriteCmd::RecordCard(card, r)).boxed()
    }

    fn poller_cursor<'a>(
        &'a self,
        poller: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        let poller = poller.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT state FROM poller_cursors WHERE poller = ?1")?
                .query_row([poller], |r| r.get(0))
                .optional()?)
        })
        .boxed()
    }

    fn save_poller_cursor(
        &self,
        poller: String,
        cursor: String,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.send(|r| WriteCmd::SavePollerCursor(poller, cursor, r))
            .boxed()
    }
}

/// One SQLite file serves one instance: there is nothing to share, claim or hand over.
impl Membership for SqliteStore {
    fn instance_id(&self) -> &str {
        "local"
    }

    fn heartbeat(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        futures_util::future::ready(Ok(vec!["local".to_owned()])).boxed()
    }

    fn leave(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        futures_util::future::ready(Ok(())).boxed()
    }

    fn lease(&self) -> Option<u64> {
        Some(0)
    }
}

impl Store for SqliteStore {
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

    fn ping(&self, timeout: std::time::Duration) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            match tokio::time::timeout(timeout, self.send(WriteCmd::Ping)).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Backend(format!(
                    "a write did not commit within {timeout:?}"
                ))),
            }
        }
        .boxed()
    }

    /// One command, so one transaction: the pair is atomic, and a target's outcomes wait
    /// for one commit instead of two.
    fn record_outcomes(
        &self,
        updates: Vec<DeliveryUpdate>,
        attempts: Vec<Attempt>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.send(|r| WriteCmd::Outcomes(updates, attempts, r))
            .boxed()
    }
}
