//! The PostgreSQL backend ([`PostgresStore`]): the same four parts as SQLite, over
//! tokio-postgres with a deadpool pool. It owns its schema (one migration, applied under an
//! advisory lock), the ingest writer task (group commit), and every query.
//!
//! Ingest: one writer task with a connection of its own drains a channel and commits
//! everything queued (up to `max_batch`) with ONE multi-row `INSERT … SELECT FROM UNNEST`
//! in ONE transaction, then answers each caller. A reply means committed: with
//! `synchronous_commit` on (enforced for our sessions if the server turned it off), the
//! commit returns after PostgreSQL flushed its WAL. The writer's own connection keeps
//! ingest from queueing behind delivery traffic on the pool.
//!
//! Everything else (deliveries, outcomes, attempts, runtime state) runs on pooled
//! connections, concurrently, each call one statement or one transaction; batch calls are
//! one statement over `UNNEST`ed arrays, not a round trip per row.
//!
//! Connections are plain TCP or a Unix socket, without TLS (`NoTls`): relayarr targets a
//! home lab, with PostgreSQL on localhost or a trusted LAN. Put it behind a TLS tunnel
//! otherwise.
//!
//! Differences from SQLite that callers never see: a lower `seq` can commit after a higher
//! one (sequences are not transactional), which is why routing progress is the `unrouted`
//! table and not a watermark; debounced groups keep their events in a `BIGINT[]` column with
//! a GIN index instead of JSON.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot, RwLock, RwLockReadGuard};
use tokio::task::JoinHandle;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::codec::CODEC_LZ4;
use super::codec::{decode, parse_normalized, prefix, row_to_committed, DedupCache, Encoded};
use super::lease::LeaseClock;
use super::{count_into, state_sql};
use super::{
    now_ms, rfc3339_ms, Appended, AppliedCard, Attempt, AttemptRetention, CommittedEvent,
    Compacted, DebounceItem, Delivery, DeliveryCounts, DeliveryInfo, DeliveryQueue, DeliveryUpdate,
    EventDeliveries, EventFileKey, EventFilter, EventLog, EventRetention, EventSummary, FireGroup,
    Fired, Group, History, HookOverrides, Membership, NewDelivery, NewEvent, PendingSummary,
    PrunedAttempts, PrunedBatch, Rejection, ReplayScope, RuntimeState, Store, StoreConfig,
    StoreError, StoredEvent,
};

/// The schema, one migration per entry; `schema_version` records those applied. SQLite's
/// seven migrations are its history; this is where they ended, written once.
///
/// As on SQLite, `events` has no index keyed by anything random apart from its ULID (which
/// is time-ordered, so its B-tree grows at the right edge): dedup uses the in-memory window
/// verified against `dedup_key`. `unrouted` holds an event from its commit (same
/// transaction) until the router stored its deliveries.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE events (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id             TEXT     NOT NULL UNIQUE,
    source         TEXT     NOT NULL,
    source_kind    TEXT     NOT NULL,
    kind           TEXT     NOT NULL,
    event_type     TEXT     NOT NULL,
    received_at    BIGINT   NOT NULL,
    dedup_key      BYTEA    NOT NULL,
    content_type   TEXT,
    raw_truncated  BOOLEAN  NOT NULL,
    codec          INTEGER  NOT NULL,
    raw            BYTEA    NOT NULL,
    normalized     BYTEA    NOT NULL
);
CREATE INDEX events_received ON events (received_at);
CREATE TABLE unrouted (seq BIGINT PRIMARY KEY);
CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  BIGINT NOT NULL
);
CREATE TABLE rejections (
    seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      BIGINT  NOT NULL,
    source  TEXT    NOT NULL,
    status  INTEGER NOT NULL,
    reason  TEXT    NOT NULL
);
CREATE TABLE deliveries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_seq       BIGINT  NOT NULL,
    hook            TEXT    NOT NULL,
    webhook_id      TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at BIGINT  NOT NULL,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    group_key       TEXT,
    group_seqs      BIGINT[],
    UNIQUE (hook, webhook_id)
);
CREATE INDEX deliveries_due ON deliveries (hook, next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_hook_created ON deliveries (hook, created_at);
CREATE INDEX deliveries_event ON deliveries (event_seq);
CREATE INDEX deliveries_group ON deliveries USING GIN (group_seqs) WHERE group_seqs IS NOT NULL;
CREATE TABLE attempts (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id      BIGINT  NOT NULL,
    hook             TEXT    NOT NULL,
    event_id         TEXT    NOT NULL,
    webhook_id       TEXT    NOT NULL,
    attempt          INTEGER NOT NULL,
    started_at       BIGINT  NOT NULL,
    latency_ms       BIGINT  NOT NULL,
    status           INTEGER,
    error            TEXT,
    request_excerpt  TEXT    NOT NULL,
    response_excerpt TEXT    NOT NULL
);
CREATE INDEX attempts_event ON attempts (event_id);
CREATE INDEX attempts_started ON attempts (started_at);
CREATE TABLE hook_overrides (
    hook   TEXT PRIMARY KEY,
    state  TEXT NOT NULL
);
CREATE TABLE debounce_items (
    target       TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    event_seq    BIGINT  NOT NULL,
    received_at  BIGINT  NOT NULL,
    quiet_ms     BIGINT  NOT NULL,
    max_wait_ms  BIGINT  NOT NULL,
    fired        BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (target, key, event_seq)
);
CREATE TABLE plex_cards (
    target      TEXT   NOT NULL,
    rating_key  TEXT   NOT NULL,
    card_sha    TEXT   NOT NULL,
    item        TEXT   NOT NULL,
    applied_at  BIGINT NOT NULL,
    PRIMARY KEY (target, rating_key)
);
CREATE TABLE poller_cursors (
    poller      TEXT   PRIMARY KEY,
    state       TEXT   NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE TABLE runtime_hooks (
    name        TEXT   PRIMARY KEY,
    config      TEXT   NOT NULL,
    updated_at  BIGINT NOT NULL
);
"#,
    // Several instances on one database. A delivery row is claimed by the instance working
    // on it; a debounce key is held by one instance, which alone fires it. A claim holds
    // while its instance's heartbeat is younger than the lease.
    r#"
CREATE TABLE instances (
    id            TEXT   PRIMARY KEY,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL
);
ALTER TABLE deliveries ADD COLUMN claimed_by TEXT;
CREATE TABLE debounce_keys (
    target  TEXT NOT NULL,
    key     TEXT NOT NULL,
    owner   TEXT NOT NULL,
    PRIMARY KEY (target, key)
);
"#,
    // Event retention asks, for each old event, whether it still has an unfired debounce
    // item; without this index each such check scanned the whole table.
    r#"
CREATE INDEX debounce_items_event ON debounce_items (event_seq);
"#,
    // Events stay in their row. `raw` and `normalized` arrive LZ4-compressed, so a Sonarr
    // import is ~2.6 KB a row: past PostgreSQL's 2 KB TOAST threshold, where every insert
    // first ran pglz over both columns (which cannot shrink LZ4 output) and then moved one
    // into the TOAST table (a second heap insert and an index insert), and every read for a
    // delivery fetched it back through that index. With the threshold at its maximum (a
    // row up to a whole 8 KiB page stays inline) and no pglz for these columns (EXTERNAL:
    // out of line, uncompressed, only for rows larger than that), one hook on PostgreSQL
    // went from 1,517-2,572 to 1,409-2,947 deliveries/s, median ~2,200 to ~2,700, over ten
    // alternating pairs, and the server's CPU for three of those pairs from 708-970 to
    // 665-688 ticks. Catalog changes only: rows already stored keep their layout.
    r#"
ALTER TABLE events SET (toast_tuple_target = 8160);
ALTER TABLE events ALTER COLUMN raw SET STORAGE EXTERNAL,
                   ALTER COLUMN normalized SET STORAGE EXTERNAL;
"#,
];

/// The advisory lock held while migrating ("relayarr" in ASCII), so two instances starting
/// together against an empty database do not both create the schema.
const MIGRATION_LOCK: i64 = 0x7265_6c61_7961_7272;

/// How many appends may wait for the writer before callers are made to wait.
const WRITE_QUEUE: usize = 8192;

/// A batch stops growing past this many compressed body bytes, so one statement never
/// carries hundreds of megabytes however large `max_batch` and `raw_body_max` are.
const BATCH_BYTES: usize = 32 * 1024 * 1024;

/// Connecting gives up after this long when the URL sets no `connect_timeout`: a server
/// that is down must fail the start (or a batch), not hang it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A caller waits at most this long for a pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(30);

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What the writer task does; everything else goes through the pool.
enum WriteCmd {
    Append(Box<Encoded>, Reply<(Appended, Option<i64>)>),
    Ping(Reply<()>),
    Close(Reply<()>),
}

/// PostgreSQL store handle.
pub struct PostgresStore {
    /// Where, for logs and errors: `postgres://user@host:port/db` (never the password).
    target: String,
    pool: Pool,
    tx: mpsc::Sender<WriteCmd>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// `true` once closed. Pooled writes hold a read guard while they run, so `close` (the
    /// write guard) waits for those in flight and every later one sees `Closed`.
    closed: RwLock<bool>,
    raw_body_max: usize,
    /// Decoded events still held somewhere, shared by every read of them.
    live: super::codec::LiveEvents,
    rejections_max: u64,
    /// This process's instance id: what its claims are recorded under.
    instance: String,
    /// How long a silent instance's claims hold (ms).
    lease_ms: i64,
    /// This instance's own reckoning of its lease, from its heartbeats' timestamps.
    lease_clock: LeaseClock,
}

/// SQL: the row's claim (`claimed_by`, or `owner` for a debounce key) is free to take: no
/// one holds it, or its instance's heartbeat is older than the lease. `$me` and `$live_after`
/// are the parameter numbers of this instance's id and of `now - lease`.
fn claim_lapsed(column: &str, live_after: usize) -> String {
    format!(
        "({column} IS NULL OR NOT EXISTS (SELECT 1 FROM instances i \
         WHERE i.id = {column} AND i.heartbeat_at > ${live_after}))"
    )
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .finish()
    }
}

/// A tokio-postgres error with its cause (the server's message for a database error).
fn pg_message(e: &tokio_postgres::Error) -> String {
    use std::error::Error as _;
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    msg
}

fn backend(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(pg_message(&e))
}

fn commit_failed(e: tokio_postgres::Error) -> StoreError {
    StoreError::Commit(pg_message(&e))
}

fn pool_failed(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Backend(format!("no database connection: {e}"))
}

/// One column of a row, with the store's error type.
fn col<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, StoreError> {
    row.try_get(idx).map_err(backend)
}

fn to_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn to_u32(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn limit_of(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn status_of(n: Option<i32>) -> Option<u16> {
    n.and_then(|s| u16::try_from(s).ok())
}

/// `postgres://user@host:port/db`: the connection's identity without its secrets.
fn describe(pg: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            match pg.get_ports().get(i).or(pg.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    let user = pg.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let db = pg.get_dbname().unwrap_or_default();
    format!("postgres://{user}{}/{db}", hosts.join(","))
}

/// The decoded group of a delivery row (`group_key`, `group_seqs`).
fn group_of(key: Option<String>, seqs: Option<Vec<i64>>) -> Option<Group> {
    match (key, seqs) {
        (Some(key), Some(seqs)) => Some(Group { key, seqs }),
        _ => None,
    }
}

/// A delivery read as `d.id, d.event_seq, e.id, e.received_at, d.hook, d.webhook_id,
/// d.attempts, d.group_key, d.group_seqs` (columns 0 to 8).
fn delivery_row(r: &Row) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        id: col(r, 0)?,
        event_seq: col(r, 1)?,
        event_id: col(r, 2)?,
        event_received_at_ms: col(r, 3)?,
        hook: col(r, 4)?,
        webhook_id: col(r, 5)?,
        attempts: to_u32(col(r, 6)?),
        group: group_of(col(r, 7)?, col(r, 8)?),
    })
}

/// The columns [`attempt_row`] reads, in order.
const ATTEMPT_COLUMNS: &str = "delivery_id, hook, event_id, webhook_id, attempt, started_at, \
     latency_ms, status, error, request_excerpt, response_excerpt";

/// Parameters of [`insert_attempts_sql`]: one array per column of [`ATTEMPT_COLUMNS`].
const ATTEMPT_PARAMS: usize = 11;

/// `INSERT INTO attempts` from one array per column, numbered from `$first`, in order.
fn insert_attempts_sql(first: usize) -> String {
    let types = [
        "bigint", "text", "text", "text", "int", "bigint", "bigint", "int", "text", "text", "text",
    ];
    let arrays: Vec<String> = (first..)
        .zip(types)
        .map(|(n, t)| format!("${n}::{t}[]"))
        .collect();
    format!(
        "INSERT INTO attempts ({ATTEMPT_COLUMNS}) SELECT {ATTEMPT_COLUMNS} FROM UNNEST({}) \
         WITH ORDINALITY AS t({ATTEMPT_COLUMNS}, n) ORDER BY n",
        arrays.join(", ")
    )
}

/// Attempts as the arrays [`insert_attempts_sql`] takes.
struct AttemptArrays<'a> {
    delivery_ids: Vec<i64>,
    hooks: Vec<&'a str>,
    event_ids: Vec<&'a str>,
    webhook_ids: Vec<&'a str>,
    numbers: Vec<i32>,
    started: Vec<i64>,
    latency: Vec<i64>,
    statuses: Vec<Option<i32>>,
    errors: Vec<Option<&'a str>>,
    requests: Vec<&'a str>,
    responses: Vec<&'a str>,
}

impl<'a> AttemptArrays<'a> {
    fn new(attempts: &'a [Attempt]) -> Self {
        AttemptArrays {
            delivery_ids: attempts.iter().map(|a| a.delivery_id).collect(),
            hooks: attempts.iter().map(|a| a.hook.as_str()).collect(),
            event_ids: attempts.iter().map(|a| a.event_id.as_str()).collect(),
            webhook_ids: attempts.iter().map(|a| a.webhook_id.as_str()).collect(),
            numbers: attempts.iter().map(|a| to_i32(a.attempt)).collect(),
            started: attempts.iter().map(|a| a.started_at_ms).collect(),
            latency: attempts
                .iter()
                .map(|a| i64::try_from(a.latency_ms).unwrap_or(i64::MAX))
                .collect(),
            statuses: attempts.iter().map(|a| a.status.map(i32::from)).collect(),
            errors: attempts.iter().map(|a| a.error.as_deref()).collect(),
            requests: attempts
                .iter()
                .map(|a| a.request_excerpt.as_str())
                .collect(),
            responses: attempts
                .iter()
                .map(|a| a.response_excerpt.as_str())
                .collect(),
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.delivery_ids,
            &self.hooks,
            &self.event_ids,
            &self.webhook_ids,
            &self.numbers,
            &self.started,
            &self.latency,
            &self.statuses,
            &self.errors,
            &self.requests,
            &self.responses,
        ]
    }
}

/// Parameters of [`update_sql`] before its last two: one array per column of
/// [`OutcomeArrays`]. The last two are the time (unix ms) and this instance's id.
const UPDATE_PARAMS: usize = 6;

/// The `UPDATE deliveries` that applies outcomes, from one array per column numbered from
/// `$first`, then the time and this instance's id.
fn update_sql(first: usize) -> String {
    let n = |i: usize| first + i;
    format!(
        "UPDATE deliveries d SET state = u.state, attempts = u.attempts, \
         next_attempt_at = u.next, last_status = u.status, last_error = u.error, \
         updated_at = ${} \
         FROM UNNEST(${}::bigint[], ${}::text[], ${}::int[], ${}::bigint[], ${}::int[], \
         ${}::text[]) AS u(id, state, attempts, next, status, error) WHERE d.id = u.id \
         AND (d.claimed_by = ${} OR d.claimed_by IS NULL)",
        n(UPDATE_PARAMS),
        n(0),
        n(1),
        n(2),
        n(3),
        n(4),
        n(5),
        n(UPDATE_PARAMS + 1),
    )
}

/// Outcomes as the arrays [`update_sql`] takes. Applied in order on SQLite, so the last
/// update of a row wins; one `UPDATE … FROM` would pick an arbitrary one, so only the last
/// per id is kept. A row another instance took over (this one was presumed dead) is
/// theirs: their outcome counts, not this one's (the `claimed_by` test).
struct OutcomeArrays<'a> {
    ids: Vec<i64>,
    states: Vec<&'static str>,
    attempts: Vec<i32>,
    nexts: Vec<i64>,
    statuses: Vec<Option<i32>>,
    errors: Vec<Option<&'a str>>,
}

impl<'a> OutcomeArrays<'a> {
    fn new(updates: &'a [DeliveryUpdate], now: i64) -> Self {
        let mut last: HashMap<i64, usize> = HashMap::new();
        for (i, u) in updates.iter().enumerate() {
            last.insert(u.id(), i);
        }
        let mut cols = OutcomeArrays {
            ids: vec![],
            states: vec![],
            attempts: vec![],
            nexts: vec![],
            statuses: vec![],
            errors: vec![],
        };
        for (i, u) in updates.iter().enumerate() {
            if last.get(&u.id()) != Some(&i) {
                continue;
            }
            let (id, state, n, next, status, error) = u.columns(now);
            cols.ids.push(id);
            cols.states.push(state);
            cols.attempts.push(to_i32(n));
            cols.nexts.push(next);
            cols.statuses.push(status.map(i32::from));
            cols.errors.push(error);
        }
        cols
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.ids,
            &self.states,
            &self.attempts,
            &self.nexts,
            &self.statuses,
            &self.errors,
        ]
    }
}

fn attempt_row(r: &Row) -> Result<Attempt, StoreError> {
    Ok(Attempt {
        delivery_id: col(r, 0)?,
        hook: col(r, 1)?,
        event_id: col(r, 2)?,
        webhook_id: col(r, 3)?,
        attempt: to_u32(col(r, 4)?),
        started_at_ms: col(r, 5)?,
        latency_ms: to_u64(col(r, 6)?),
        status: status_of(col(r, 7)?),
        error: col(r, 8)?,
        request_excerpt: col(r, 9)?,
        response_excerpt: col(r, 10)?,
    })
}

/// A group's events as a PostgreSQL array literal (`{1,2,3}`): `UNNEST` flattens arrays of
/// arrays, so each row's group travels as text and is cast back to `BIGINT[]`.
fn array_literal(seqs: &[i64]) -> String {
    let items: Vec<String> = seqs.iter().map(i64::to_string).collect();
    format!("{{{}}}", items.join(","))
}

impl PostgresStore {
    /// Reads and decodes the events of `seqs` (those still held come from `live` instead).
    async fn read_events(&self, seqs: Vec<i64>) -> Result<Vec<CommittedEvent>, StoreError> {
        let rows = self
            .query(
                "SELECT seq, id, received_at, normalized, codec FROM events \
                 WHERE seq = ANY($1)",
                &[&seqs],
            )
            .await?;
        let by_seq: HashMap<i64, &Row> = rows
            .iter()
            .map(|r| col(r, 0).map(|s| (s, r)))
            .collect::<Result<_, StoreError>>()?;
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if let Some(r) = by_seq.get(&seq) {
                let id: String = col(r, 1)?;
                let json = decode(i64::from(col::<i32>(r, 4)?), col(r, 3)?, &id)?;
                out.push(row_to_committed(seq, id, col(r, 2)?, &json)?);
            }
        }
        Ok(out)
    }

    /// Connects to the database at `url` (`postgres://…`), migrates it, and starts the
    /// writer task.
    pub async fn open(url: &str, cfg: StoreConfig) -> Result<Arc<Self>, StoreError> {
        let mut pg: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Open {
            // The URL may hold a password: never echo it.
            path: "[store] url".into(),
            reason: format!("not a valid PostgreSQL URL: {}", pg_message(&e)),
        })?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("relayarr");
        }
        let target = describe(&pg);
        let open_err = |reason: String| StoreError::Open {
            path: target.clone(),
            reason,
        };
        let mut client = connect(&pg).await.map_err(|e| open_err(pg_message(&e)))?;
        // A 2xx promises the event survives a crash of the server too. With
        // synchronous_commit off, PostgreSQL would answer COMMIT before flushing its WAL;
        // turn it back on for our sessions (stronger settings such as remote_apply stay).
        let sync: String = client
            .query_one("SELECT current_setting('synchronous_commit')", &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| open_err(pg_message(&e)))?;
        if sync == "off" {
            tracing::warn!(target = %target, "synchronous_commit is off on the server; relayarr turns it on for its own sessions");
            let options = match pg.get_options() {
                Some(o) => format!("{o} -c synchronous_commit=on"),
                None => "-c synchronous_commit=on".to_owned(),
            };
            pg.options(options);
            client
                .batch_execute("SET synchronous_commit = on")
                .await
                .map_err(|e| open_err(pg_message(&e)))?;
        }
        migrate(&mut client)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        // Registered before anything is claimed, so no other instance takes this one's
        // first rows for a dead instance's.
        let instance = ulid::Ulid::new().to_string();
        let registering = Instant::now();
        let now = now_ms();
        client
            .execute(
                "INSERT INTO instances (id, started_at, heartbeat_at) VALUES ($1, $2, $2)",
                &[&instance, &now],
            )
            .await
            .map_err(|e| open_err(pg_message(&e)))?;
        let lease_ms = i64::try_from(cfg.lease.as_millis()).unwrap_or(i64::MAX);
        let lease_clock = LeaseClock::new(cfg.lease, registering);
        let dedup = load_dedup(&client, &cfg)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        let writer_conn = WriterConn::prepare(client)
            .await
            .map_err(|e| open_err(pg_message(&e)))?;

        let manager = Manager::from_config(
            pg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(cfg.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| open_err(format!("cannot build the connection pool: {e}")))?;

        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let raw_body_max = cfg.raw_body_max;
        let rejections_max = cfg.rejections_max;
        let pool_size = cfg.pool_size.max(1);
        let writer = Writer {
            pg,
            conn: Some(writer_conn),
            dedup,
            dedup_stale: false,
            cfg,
        };
        let handle = tokio::spawn(writer.run(rx));
        tracing::info!(target = %target, pool_size, %instance, "postgres store opened (group commit, reply after commit)");
        Ok(Arc::new(PostgresStore {
            target,
            pool,
            tx,
            writer: Mutex::new(Some(handle)),
            closed: RwLock::new(false),
            raw_body_max,
            live: super::codec::LiveEvents::default(),
            rejections_max,
            instance,
            lease_ms,
            lease_clock,
        }))
    }

    /// Where the store is: `postgres://user@host:port/db`, without secrets.
    pub fn target(&self) -> &str {
        &self.target
    }

    async fn send<T>(&self, make: impl FnOnce(Reply<T>) -> WriteCmd) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// A pooled connection for reading.
    async fn conn(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(pool_failed)
    }

    /// A pooled connection for writing, and the guard that keeps `close` waiting until the
    /// write is done.
    async fn writing(&self) -> Result<(RwLockReadGuard<'_, bool>, Object), StoreError> {
        let guard = self.closed.read().await;
        if *guard {
            return Err(StoreError::Closed);
        }
        let conn = self.conn().await?;
        Ok((guard, conn))
    }

    /// Runs one write statement on a pooled connection.
    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let (_open, conn) = self.writing().await?;
        let stmt = conn.prepare_cached(sql).await.map_err(backend)?;
        conn.execute(&stmt, params).await.map_err(commit_failed)
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn.prepare_cached(sql).await.map_err(backend)?;
        conn.query(&stmt, params).await.map_err(backend)
    }

    async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn.prepare_cached(sql).await.map_err(backend)?;
        conn.query_opt(&stmt, params).await.map_err(backend)
    }

    /// Takes over the debounce keys of instances whose lease lapsed, and returns the unfired
    /// items of the keys taken over (`all`: of every key this instance holds).
    async fn adopt(&self, all: bool) -> Result<Vec<DebounceItem>, StoreError> {
        let sql = format!(
            "WITH taken AS (UPDATE debounce_keys SET owner = $1 \
               WHERE owner <> $1 AND {lapsed} RETURNING target, key) \
             SELECT i.target, i.key, i.event_seq, i.received_at, i.quiet_ms, i.max_wait_ms \
             FROM debounce_items i WHERE NOT i.fired AND (\
               (i.target, i.key) IN (SELECT target, key FROM taken) \
               OR ($3 AND (i.target, i.key) IN \
                 (SELECT target, key FROM debounce_keys WHERE owner = $1))) \
             ORDER BY i.event_seq, i.target, i.key",
            lapsed = claim_lapsed("debounce_keys.owner", 2)
        );
        let live_after = now_ms().saturating_sub(self.lease_ms);
        let (_open, conn) = self.writing().await?;
        let stmt = conn.prepare_cached(&sql).await.map_err(backend)?;
        conn.query(&stmt, &[&self.instance, &live_after, &all])
            .await
            .map_err(commit_failed)?
            .iter()
            .map(|r| {
                Ok(DebounceItem {
                    target: col(r, 0)?,
                    key: col(r, 1)?,
                    event_seq: col(r, 2)?,
                    received_at_ms: col(r, 3)?,
                    quiet_ms: col(r, 4)?,
                    max_wait_ms: col(r, 5)?,
                })
            })
            .collect()
    }

    /// The seq of the event with this id.
    async fn seq_of(&self, event_id: &str) -> Result<Option<i64>, StoreError> {
        self.query_opt("SELECT seq FROM events WHERE id = $1", &[&event_id])
            .await?
            .map(|r| col(&r, 0))
            .transpose()
    }
}

/// Connects one client, its connection driven by a task of its own.
async fn connect(pg: &tokio_postgres::Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = pg.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %pg_message(&e), "postgres connection ended");
        }
    });
    Ok(client)
}

/// Applies the migrations not yet recorded, in one transaction under an advisory lock, so
/// instances starting together take turns and the second finds the schema done.
async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(backend)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(backend)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (\
         version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .await
    .map_err(backend)?;
    let current: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(backend)?;
    let known = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
    if current > known {
        return Err(StoreError::Backend(format!(
            "the database schema is version {current}, newer than this relayarr knows \
             ({known}); run the newer relayarr, or point it at another database"
        )));
    }
    let mut applied = Vec::new();
    for (version, sql) in (1..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(current).unwrap_or(0))
    {
        tx.batch_execute(sql).await.map_err(backend)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
            &[&version, &now_ms()],
        )
        .await
        .map_err(backend)?;
        applied.push(version);
    }
    tx.commit().await.map_err(commit_failed)?;
    for version in applied {
        tracing::info!(version, "store schema migrated");
    }
    Ok(())
}

/// Rebuilds the dedup window from the events received within it.
async fn load_dedup(client: &Client, cfg: &StoreConfig) -> Result<DedupCache, StoreError> {
    let mut cache = DedupCache::new(cfg);
    let cutoff = cache.cutoff(now_ms());
    let rows = client
        .query(
            "SELECT seq, dedup_key, received_at FROM events WHERE received_at >= $1 ORDER BY seq",
            &[&cutoff],
        )
        .await
        .map_err(backend)?;
    for r in rows {
        let seq: i64 = col(&r, 0)?;
        let key: Vec<u8> = col(&r, 1)?;
        let at: i64 = col(&r, 2)?;
        cache.insert(prefix(&key), seq, at);
    }
    Ok(cache)
}

/// The writer's connection and its prepared statements.
struct WriterConn {
    client: Client,
    insert: Statement,
    verify: Statement,
    ping: Statement,
}

impl WriterConn {
    async fn prepare(client: Client) -> Result<Self, tokio_postgres::Error> {
        // One statement inserts the whole batch and marks it unrouted. ORDER BY the
        // ordinality makes `seq` follow arrival order within the batch.
        let insert = client
            .prepare(
                "WITH ins AS (\
                   INSERT INTO events (id, source, source_kind, kind, event_type, received_at, \
                     dedup_key, content_type, raw_truncated, codec, raw, normalized) \
                   SELECT id, source, source_kind, kind, event_type, received_at, dedup_key, \
                     content_type, raw_truncated, $12, raw, normalized \
                   FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                     $6::bigint[], $7::bytea[], $8::text[], $9::boolean[], $10::bytea[], \
                     $11::bytea[]) WITH ORDINALITY AS t(id, source, source_kind, kind, \
                     event_type, received_at, dedup_key, content_type, raw_truncated, raw, \
                     normalized, n) \
                   ORDER BY n \
                   RETURNING seq, id), \
                 routing AS (INSERT INTO unrouted (seq) SELECT seq FROM ins) \
                 SELECT seq, id FROM ins",
            )
            .await?;
        let verify = client
            .prepare("SELECT seq, id, dedup_key FROM events WHERE seq = ANY($1)")
            .await?;
        let ping = client
            .prepare(
                "INSERT INTO meta (key, value) VALUES ('last_ping', $1) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            )
            .await?;
        Ok(WriterConn {
            client,
            insert,
            verify,
            ping,
        })
    }
}

/// The ingest writer: group commit on a connection of its own.
struct Writer {
    pg: tokio_postgres::Config,
    /// `None` after a failure: the next batch reconnects.
    conn: Option<WriterConn>,
    dedup: DedupCache,
    /// Set when a batch failed in a way that may or may not have committed: the window is
    /// reloaded from the table before it answers another duplicate.
    dedup_stale: bool,
    cfg: StoreConfig,
}

impl WriteCmd {
    fn bytes(&self) -> usize {
        match self {
            WriteCmd::Append(ev, _) => ev.raw.len() + ev.normalized.len(),
            WriteCmd::Ping(_) | WriteCmd::Close(_) => 0,
        }
    }
}

/// An append's place in a batch: answered from the table, from an earlier event of the same
/// batch, or inserted as the `n`th new row.
enum Slot {
    Stored(Appended),
    SameAs(usize),
    New(usize),
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<WriteCmd>) {
        let max_batch = self.cfg.max_batch.max(1);
        let mut batch = Vec::with_capacity(max_batch);
        let mut last_batch = 0usize;
        while let Some(first) = rx.recv().await {
            let mut bytes = first.bytes();
            batch.push(first);
            // As on SQLite: under concurrency, let neighbours arrive so one commit covers
            // them; a lone request is never delayed.
            if last_batch > 1 && !self.cfg.commit_delay.is_zero() {
                tokio::time::sleep(self.cfg.commit_delay).await;
            }
            while batch.len() < max_batch && bytes < BATCH_BYTES {
                match rx.try_recv() {
                    Ok(cmd) => {
                        bytes += cmd.bytes();
                        batch.push(cmd);
                    }
                    Err(_) => break,
                }
            }
            last_batch = batch.len();
            if let Some(close) = self.commit_batch(&mut batch).await {
                rx.close();
                // Whatever raced in before close() still gets committed.
                while let Ok(cmd) = rx.try_recv() {
                    batch.push(cmd);
                }
                if let Some(another) = self.commit_batch(&mut batch).await {
                    let _ = another.send(Ok(()));
                }
                self.conn = None;
                tracing::info!("postgres store writer flushed and stopped");
                let _ = close.send(Ok(()));
                return;
            }
        }
        tracing::info!("postgres store writer stopped (all handles dropped)");
    }

    /// Commits the appends and pings of `batch` in one transaction and answers each.
    /// Returns the reply port of a `Close` command if one was in the batch.
    async fn commit_batch(&mut self, batch: &mut Vec<WriteCmd>) -> Option<Reply<()>> {
        let mut close = None;
        let mut events = Vec::new();
        let mut replies = Vec::new();
        let mut pings = Vec::new();
        for cmd in batch.drain(..) {
            match cmd {
                WriteCmd::Append(ev, reply) => {
                    events.push(*ev);
                    replies.push(reply);
                }
                WriteCmd::Ping(reply) => pings.push(reply),
                WriteCmd::Close(reply) => {
                    if let Some(earlier) = close.replace(reply) {
                        let _ = earlier.send(Ok(()));
                    }
                }
            }
        }
        if events.is_empty() && pings.is_empty() {
            return close;
        }
        match self.commit(&events, !pings.is_empty()).await {
            Ok(results) => {
                for (reply, r) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(r));
                }
                for reply in pings {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batch = events.len(), "postgres store commit failed");
                // The connection may be broken, and a failed COMMIT may still have landed:
                // start over from a fresh connection and a reloaded dedup window.
                self.conn = None;
                self.dedup_stale = true;
                let err = match e {
                    StoreError::Closed => StoreError::Closed,
                    StoreError::Commit(m) => StoreError::Commit(m),
                    other => StoreError::Commit(other.to_string()),
                };
                for reply in replies {
                    let _ = reply.send(Err(clone_err(&err)));
                }
                for reply in pings {
                    let _ = reply.send(Err(clone_err(&err)));
                }
            }
        }
        close
    }

    /// The writer's connection, (re)connected and with a current dedup window.
    async fn ready(&mut self) -> Result<&mut WriterConn, StoreError> {
        let conn = match self.conn.take() {
            Some(c) if !c.client.is_closed() => c,
            _ => {
                let client = connect(&self.pg).await.map_err(backend)?;
                WriterConn::prepare(client).await.map_err(backend)?
            }
        };
        if self.dedup_stale {
            self.dedup = load_dedup(&conn.client, &self.cfg).await?;
            self.dedup_stale = false;
        }
        Ok(self.conn.insert(conn))
    }

    async fn commit(
        &mut self,
        events: &[Encoded],
        ping: bool,
    ) -> Result<Vec<(Appended, Option<i64>)>, StoreError> {
        let now = now_ms();
        self.ready().await?;
        let Writer { conn, dedup, .. } = self;
        let Some(conn) = conn.as_mut() else {
            return Err(StoreError::Closed);
        };
        let tx = conn.client.transaction().await.map_err(backend)?;

        // Duplicates of stored events: the window names a candidate by key prefix, the
        // stored full key confirms it.
        let candidates: Vec<(usize, i64)> = events
            .iter()
            .enumerate()
            .filter_map(|(i, ev)| dedup.candidate(prefix(&ev.dedup_key), now).map(|s| (i, s)))
            .collect();
        let mut stored: HashMap<i64, (String, Vec<u8>)> = HashMap::new();
        if !candidates.is_empty() {
            let seqs: Vec<i64> = candidates.iter().map(|(_, s)| *s).collect();
            for r in tx.query(&conn.verify, &[&seqs]).await.map_err(backend)? {
                stored.insert(col(&r, 0)?, (col(&r, 1)?, col(&r, 2)?));
            }
        }
        let mut slots: Vec<Option<Slot>> = Vec::with_capacity(events.len());
        slots.resize_with(events.len(), || None);
        for (i, seq) in candidates {
            if let Some((id, _)) = stored
                .get(&seq)
                .filter(|(_, key)| key[..] == events[i].dedup_key[..])
            {
                slots[i] = Some(Slot::Stored(Appended {
                    id: id.clone(),
                    duplicate: true,
                }));
            }
        }
        // Duplicates within the batch answer the first one's id, as if the batch had been
        // committed one event at a time.
        let mut first_of: HashMap<[u8; 32], usize> = HashMap::new();
        let mut new_rows: Vec<usize> = Vec::new();
        for (i, ev) in events.iter().enumerate() {
            if slots[i].is_some() {
                continue;
            }
            match first_of.get(&ev.dedup_key) {
                Some(&j) if dedup.within(events[j].received_at_ms, now) => {
                    slots[i] = Some(Slot::SameAs(j));
                }
                _ => {
                    first_of.insert(ev.dedup_key, i);
                    slots[i] = Some(Slot::New(new_rows.len()));
                    new_rows.push(i);
                }
            }
        }

        let ids: Vec<String> = new_rows
            .iter()
            .map(|_| ulid::Ulid::new().to_string())
            .collect();
        let mut seq_of_id: HashMap<String, i64> = HashMap::with_capacity(ids.len());
        if !new_rows.is_empty() {
            let rows: Vec<&Encoded> = new_rows.iter().map(|&i| &events[i]).collect();
            let sources: Vec<&str> = rows.iter().map(|e| e.instance.as_str()).collect();
            let source_kinds: Vec<&str> = rows.iter().map(|e| e.source_kind).collect();
            let kinds: Vec<&str> = rows.iter().map(|e| e.kind).collect();
            let types: Vec<&str> = rows.iter().map(|e| e.event_type.as_str()).collect();
            let received: Vec<i64> = rows.iter().map(|e| e.received_at_ms).collect();
            let keys: Vec<&[u8]> = rows.iter().map(|e| &e.dedup_key[..]).collect();
            let content_types: Vec<Option<&str>> =
                rows.iter().map(|e| e.content_type.as_deref()).collect();
            let truncated: Vec<bool> = rows.iter().map(|e| e.raw_truncated).collect();
            let raws: Vec<&[u8]> = rows.iter().map(|e| e.raw.as_slice()).collect();
            let norms: Vec<&[u8]> = rows.iter().map(|e| e.normalized.as_slice()).collect();
            let codec = i32::try_from(CODEC_LZ4).unwrap_or(0);
            let inserted = tx
                .query(
                    &conn.insert,
                    &[
                        &ids,
                        &sources,
                        &source_kinds,
                        &kinds,
                        &types,
                        &received,
                        &keys,
                        &content_types,
                        &truncated,
                        &raws,
                        &norms,
                        &codec,
                    ],
                )
                .await
                .map_err(backend)?;
            for r in inserted {
                seq_of_id.insert(col(&r, 1)?, col(&r, 0)?);
            }
        }
        if ping {
            tx.execute(&conn.ping, &[&now]).await.map_err(backend)?;
        }
        tx.commit().await.map_err(commit_failed)?;

        // Committed: only now may later appends be answered as duplicates of these.
        let mut new_seqs = Vec::with_capacity(ids.len());
        for (n, id) in ids.iter().enumerate() {
            let seq = seq_of_id.get(id).copied().ok_or_else(|| {
                StoreError::Backend(format!("event {id} was inserted without a seq"))
            })?;
            let ev = &events[new_rows[n]];
            dedup.insert(prefix(&ev.dedup_key), seq, ev.received_at_ms);
            new_seqs.push(seq);
        }
        let mut out = Vec::with_capacity(events.len());
        for slot in &slots {
            out.push(match slot {
                Some(Slot::Stored(a)) => (a.clone(), None),
                Some(Slot::New(n)) => (
                    Appended {
                        id: ids[*n].clone(),
                        duplicate: false,
                    },
                    Some(new_seqs[*n]),
                ),
                Some(Slot::SameAs(j)) => match &slots[*j] {
                    Some(Slot::New(n)) => (
                        Appended {
                            id: ids[*n].clone(),
                            duplicate: true,
                        },
                        None,
                    ),
                    _ => return Err(StoreError::Backend("dedup slot out of order".into())),
                },
                None => return Err(StoreError::Backend("append left unanswered".into())),
            });
        }
        Ok(out)
    }
}

/// StoreError is not Clone; a failed batch answers every caller with the same message.
fn clone_err(e: &StoreError) -> StoreError {
    match e {
        StoreError::Closed => StoreError::Closed,
        StoreError::Commit(m) => StoreError::Commit(m.clone()),
        other => StoreError::Commit(other.to_string()),
    }
}

/// Inserts deliveries (skipping existing (target, webhook id) pairs) inside `tx`, and
/// returns those created, in the order given.
async fn insert_deliveries(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: &[NewDelivery],
    now: i64,
    owner: &str,
) -> Result<Vec<Delivery>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let stmt = tx
        .prepare_cached(
            "WITH r AS (\
               SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], \
                 $5::text[]) WITH ORDINALITY AS r(event_seq, hook, webhook_id, group_key, \
                 group_seqs, n)), \
             ins AS (\
               INSERT INTO deliveries (event_seq, hook, webhook_id, state, attempts, \
                 next_attempt_at, created_at, updated_at, group_key, group_seqs, claimed_by) \
               SELECT event_seq, hook, webhook_id, 'pending', 0, $6, $6, $6, group_key, \
                 group_seqs::bigint[], $7 FROM r ORDER BY n \
               ON CONFLICT (hook, webhook_id) DO NOTHING \
               RETURNING id, event_seq, hook, webhook_id, attempts, group_key, group_seqs) \
             SELECT ins.id, ins.event_seq, e.id, e.received_at, ins.hook, ins.webhook_id, \
               ins.attempts, ins.group_key, ins.group_seqs \
             FROM ins LEFT JOIN events e ON e.seq = ins.event_seq ORDER BY ins.id",
        )
        .await
        .map_err(backend)?;
    let seqs: Vec<i64> = rows.iter().map(|r| r.event_seq).collect();
    let hooks: Vec<&str> = rows.iter().map(|r| r.hook.as_str()).collect();
    let webhook_ids: Vec<&str> = rows.iter().map(|r| r.webhook_id.as_str()).collect();
    let group_keys: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.group.as_ref().map(|g| g.key.as_str()))
        .collect();
    let group_seqs: Vec<Option<String>> = rows
        .iter()
        .map(|r| r.group.as_ref().map(|g| array_literal(&g.seqs)))
        .collect();
    let created = tx
        .query(
            &stmt,
            &[
                &seqs,
                &hooks,
                &webhook_ids,
                &group_keys,
                &group_seqs,
                &now,
                &owner,
            ],
        )
        .await
        .map_err(backend)?;
    let mut out = Vec::with_capacity(created.len());
    for r in &created {
        // SQLite fails on a delivery of an unknown event; so does this (and the caller's
        // transaction is rolled back).
        let event_id: Option<String> = col(r, 2)?;
        if event_id.is_none() {
            let seq: i64 = col(r, 1)?;
            return Err(StoreError::Backend(format!(
                "cannot create a delivery of event seq {seq}: no such event"
            )));
        }
        out.push(delivery_row(r)?);
    }
    Ok(out)
}

impl PostgresStore {
    /// The events list: only the filters given go into the WHERE clause, and `seq` is the
    /// primary key, so PostgreSQL walks it downwards from the cursor and stops at `limit`.
    async fn list_events_inner(&self, f: EventFilter) -> Result<Vec<EventSummary>, StoreError> {
        let mut sql = String::from(
            "SELECT e.seq, e.id, e.source, e.kind, e.event_type, e.received_at, e.normalized, \
             e.codec FROM events e WHERE true",
        );
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut arg = |sql: &mut String, cond: &str, v: Box<dyn ToSql + Sync + Send>| {
            args.push(v);
            sql.push_str(&format!(" AND {cond} ${}", args.len()));
        };
        if let Some(b) = f.before_seq {
            arg(&mut sql, "e.seq <", Box::new(b));
        }
        if let Some(s) = &f.source {
            arg(&mut sql, "e.source =", Box::new(s.clone()));
        }
        if let Some(k) = &f.kind {
            arg(&mut sql, "e.kind =", Box::new(k.clone()));
        }
        if let Some(t) = f.since_ms {
            arg(&mut sql, "e.received_at >=", Box::new(t));
        }
        if let Some(t) = f.until_ms {
            arg(&mut sql, "e.received_at <", Box::new(t));
        }
        if let Some(state) = f.status {
            let st = state_sql(state);
            sql.push_str(&format!(
                " AND (EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND {st}) \
                 OR EXISTS (SELECT 1 FROM deliveries d WHERE d.group_seqs IS NOT NULL \
                 AND d.group_seqs @> ARRAY[e.seq] AND {st}))"
            ));
        }
        args.push(Box::new(limit_of(f.limit)));
        sql.push_str(&format!(" ORDER BY e.seq DESC LIMIT ${}", args.len()));
        let params: Vec<&(dyn ToSql + Sync)> = args
            .iter()
            .map(|a| a.as_ref() as &(dyn ToSql + Sync))
            .collect();

        let conn = self.conn().await?;
        let stmt = conn.prepare_cached(&sql).await.map_err(backend)?;
        let rows = conn.query(&stmt, &params).await.map_err(backend)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = col(r, 1)?;
            let codec: i32 = col(r, 7)?;
            let json = decode(i64::from(codec), col(r, 6)?, &id)?;
            let ev = parse_normalized(&json, &id)?;
            let at: i64 = col(r, 5)?;
            out.push(EventSummary {
                seq: col(r, 0)?,
                id,
                source: col(r, 2)?,
                kind: col(r, 3)?,
                event_type: col(r, 4)?,
                received_at: rfc3339_ms(at),
                received_at_ms: at,
                summary: ev.summary(),
                deliveries: Vec::new(),
            });
        }
        if out.is_empty() {
            return Ok(out);
        }
        let seqs: Vec<i64> = out.iter().map(|e| e.seq).collect();
        let pos: HashMap<i64, usize> = seqs.iter().enumerate().map(|(i, s)| (*s, i)).collect();
        let own = conn
            .prepare_cached(
                "SELECT d.event_seq, d.hook, d.state, COUNT(*) FROM deliveries d \
                 WHERE d.event_seq = ANY($1) AND d.group_seqs IS NULL \
                 GROUP BY d.event_seq, d.hook, d.state ORDER BY d.hook",
            )
            .await
            .map_err(backend)?;
        for r in conn.query(&own, &[&seqs]).await.map_err(backend)? {
            let seq: i64 = col(&r, 0)?;
            let (target, state): (String, String) = (col(&r, 1)?, col(&r, 2)?);
            let n: i64 = col(&r, 3)?;
            if let Some(&i) = pos.get(&seq) {
                count_into(&mut out[i].deliveries, &target, &state, to_u64(n));
            }
        }
        // The groups that include an event of the page: the GIN index finds them by overlap.
        let groups = conn
            .prepare_cached(
                "SELECT d.hook, d.state, s FROM deliveries d \
                 CROSS JOIN LATERAL UNNEST(d.group_seqs) AS s \
                 WHERE d.group_seqs IS NOT NULL AND d.group_seqs && $1::bigint[] \
                 AND s = ANY($1) ORDER BY d.hook, d.id",
            )
            .await
            .map_err(backend)?;
        for r in conn.query(&groups, &[&seqs]).await.map_err(backend)? {
            let (target, state): (String, String) = (col(&r, 0)?, col(&r, 1)?);
            let seq: i64 = col(&r, 2)?;
            if let Some(&i) = pos.get(&seq) {
                count_into(&mut out[i].deliveries, &target, &state, 1);
            }
        }
        Ok(out)
    }

    async fn event_deliveries_inner(
        &self,
        event_id: &str,
    ) -> Result<Option<EventDeliveries>, StoreError> {
        let Some(seq) = self.seq_of(event_id).await? else {
            return Ok(None);
        };
        let rows = self
            .query(
                "SELECT d.id, d.hook, d.webhook_id, d.state, d.attempts, d.next_attempt_at, \
                 d.created_at, d.updated_at, d.last_status, d.last_error, d.group_key, \
                 d.group_seqs, e.id \
                 FROM deliveries d JOIN events e ON e.seq = d.event_seq \
                 WHERE (d.event_seq = $1 AND d.group_seqs IS NULL) \
                 OR (d.group_seqs IS NOT NULL AND d.group_seqs @> ARRAY[$1::bigint]) \
                 ORDER BY d.hook, d.id",
                &[&seq],
            )
            .await?;
        let mut deliveries = Vec::with_capacity(rows.len());
        // Attempts are recorded under the delivery's own event (a group's first event),
        // which is indexed; the delivery id then picks this delivery's attempts.
        let mut owners: Vec<String> = Vec::new();
        for r in &rows {
            let state: String = col(r, 3)?;
            let next: i64 = col(r, 5)?;
            deliveries.push(DeliveryInfo {
                id: col(r, 0)?,
                target: col(r, 1)?,
                webhook_id: col(r, 2)?,
                next_attempt_at_ms: (state == "pending").then_some(next),
                state,
                attempts: to_u32(col(r, 4)?),
                created_at_ms: col(r, 6)?,
                updated_at_ms: col(r, 7)?,
                last_status: status_of(col(r, 8)?),
                last_error: col(r, 9)?,
                group: group_of(col(r, 10)?, col(r, 11)?),
            });
            let owner: String = col(r, 12)?;
            if !owners.contains(&owner) {
                owners.push(owner);
            }
        }
        let ids: Vec<i64> = deliveries.iter().map(|d| d.id).collect();
        let attempts = self
            .query(
                &format!(
                    "SELECT {ATTEMPT_COLUMNS} FROM attempts \
                     WHERE event_id = ANY($1) AND delivery_id = ANY($2) ORDER BY id"
                ),
                &[&owners, &ids],
            )
            .await?
            .iter()
            .map(attempt_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(EventDeliveries {
            deliveries,
            attempts,
        }))
    }

    async fn requeue_inner(
        &self,
        target: &str,
        scope: ReplayScope,
    ) -> Result<Vec<i64>, StoreError> {
        // The scope's condition on the target's rows ($3), and the order of the answer.
        let (cond, order, arg): (&str, &str, Box<dyn ToSql + Sync + Send>) = match scope {
            ReplayScope::Event(event_id) => {
                // Looked up before taking a write connection: holding one while waiting
                // for a second could exhaust a small pool.
                let Some(seq) = self.seq_of(&event_id).await? else {
                    return Ok(Vec::new());
                };
                // The event's own deliveries, and the groups that include it.
                (
                    "(event_seq = $3 OR (group_seqs IS NOT NULL \
                     AND group_seqs @> ARRAY[$3::bigint]))",
                    "id",
                    Box::new(seq),
                )
            }
            ReplayScope::Since(since) => ("created_at >= $3", "id", Box::new(since)),
            // In the order asked for, as SQLite answers.
            ReplayScope::Ids(ids) => ("id = ANY($3)", "array_position($3, id)", Box::new(ids)),
        };
        let sql = format!(
            "WITH u AS (UPDATE deliveries SET state = 'pending', next_attempt_at = $2, \
             updated_at = $2, claimed_by = $4 WHERE hook = $1 AND {cond} RETURNING id) \
             SELECT id FROM u ORDER BY {order}"
        );
        let (_open, conn) = self.writing().await?;
        let stmt = conn.prepare_cached(&sql).await.map_err(backend)?;
        // The replaying instance's worker reloads them, so it claims them.
        let rows = conn
            .query(&stmt, &[&target, &now_ms(), arg.as_ref(), &self.instance])
            .await
            .map_err(commit_failed)?;
        rows.iter().map(|r| col(r, 0)).collect()
    }
}

impl EventLog for PostgresStore {
    fn append(&self, ev: NewEvent) -> BoxFuture<'_, Result<(Appended, Option<i64>), StoreError>> {
        self.live
            .append(ev, self.raw_body_max, |e| {
                self.send(|r| WriteCmd::Append(Box::new(e), r))
            })
            .boxed()
    }

    fn get_event<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredEvent>, StoreError>> {
        async move {
            let Some(r) = self
                .query_opt(
                    "SELECT e.id, e.source, e.kind, e.event_type, e.received_at, \
                     EXISTS (SELECT 1 FROM unrouted u WHERE u.seq = e.seq), e.content_type, \
                     e.raw_truncated, e.normalized, e.raw, e.codec FROM events e WHERE e.id = $1",
                    &[&id],
                )
                .await?
            else {
                return Ok(None);
            };
            let id: String = col(&r, 0)?;
            let codec = i64::from(col::<i32>(&r, 10)?);
            let norm = decode(codec, col(&r, 8)?, &id)?;
            let raw = decode(codec, col(&r, 9)?, &id)?;
            let normalized = parse_normalized(&norm, &id)?;
            let at: i64 = col(&r, 4)?;
            let unrouted: bool = col(&r, 5)?;
            Ok(Some(StoredEvent {
                source: col(&r, 1)?,
                kind: col(&r, 2)?,
                event_type: col(&r, 3)?,
                received_at: rfc3339_ms(at),
                received_at_ms: at,
                status: if unrouted { "received" } else { "routed" }.to_owned(),
                content_type: col(&r, 6)?,
                raw_truncated: col(&r, 7)?,
                normalized,
                raw: String::from_utf8_lossy(&raw).into_owned(),
                id,
            }))
        }
        .boxed()
    }

    fn unrouted(&self, limit: usize) -> BoxFuture<'_, Result<Vec<(i64, i64)>, StoreError>> {
        async move {
            self.query(
                "SELECT u.seq, e.received_at FROM unrouted u JOIN events e ON e.seq = u.seq \
                 ORDER BY u.seq LIMIT $1",
                &[&limit_of(limit)],
            )
            .await?
            .iter()
            .map(|r| Ok((col(r, 0)?, col(r, 1)?)))
            .collect()
        }
        .boxed()
    }

    fn mark_routed(&self, seqs: Vec<i64>) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            self.execute("DELETE FROM unrouted WHERE seq = ANY($1)", &[&seqs])
                .await
                .map(|_| ())
        }
        .boxed()
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
        async move {
            let Some(r) = self
                .query_opt("SELECT id, raw, codec FROM events WHERE seq = $1", &[&seq])
                .await?
            else {
                return Ok(None);
            };
            let id: String = col(&r, 0)?;
            decode(i64::from(col::<i32>(&r, 2)?), col(&r, 1)?, &id).map(Some)
        }
        .boxed()
    }

    fn count_events(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        async move {
            let rows = self.query("SELECT COUNT(*) FROM events", &[]).await?;
            let n: i64 = rows.first().map(|r| col(r, 0)).transpose()?.unwrap_or(0);
            Ok(to_u64(n))
        }
        .boxed()
    }

    fn list_events(
        &self,
        filter: EventFilter,
    ) -> BoxFuture<'_, Result<Vec<EventSummary>, StoreError>> {
        self.list_events_inner(filter).boxed()
    }

    fn event_file_keys<'a>(
        &'a self,
        source: &'a str,
        since_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<EventFileKey>, StoreError>> {
        async move {
            let rows = self
                .query(
                    "SELECT id, codec, normalized FROM events WHERE received_at >= $1 \
                     AND source = $2 AND kind IN ('import', 'upgrade', 'rename', 'delete')",
                    &[&since_ms, &source],
                )
                .await?;
            let mut out = Vec::new();
            for r in &rows {
                let id: String = col(r, 0)?;
                let json = decode(i64::from(col::<i32>(r, 1)?), col(r, 2)?, &id)?;
                out.extend(EventFileKey::of(&parse_normalized(&json, &id)?));
            }
            Ok(out)
        }
        .boxed()
    }

    fn record_rejections(&self, rows: Vec<Rejection>) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let (_open, mut conn) = self.writing().await?;
            let tx = conn.transaction().await.map_err(backend)?;
            let at: Vec<i64> = rows.iter().map(|r| r.at_ms).collect();
            let sources: Vec<&str> = rows.iter().map(|r| r.source.as_str()).collect();
            let statuses: Vec<i32> = rows.iter().map(|r| i32::from(r.status)).collect();
            let reasons: Vec<&str> = rows.iter().map(|r| r.reason.as_str()).collect();
            let insert = tx
                .prepare_cached(
                    "INSERT INTO rejections (at, source, status, reason) \
                     SELECT at, source, status, reason FROM UNNEST($1::bigint[], $2::text[], \
                     $3::int[], $4::text[]) WITH ORDINALITY AS t(at, source, status, reason, n) \
                     ORDER BY n",
                )
                .await
                .map_err(backend)?;
            tx.execute(&insert, &[&at, &sources, &statuses, &reasons])
                .await
                .map_err(backend)?;
            // Bounded like SQLite: by sequence distance from the newest row (gaps left by
            // rolled-back inserts only make the kept set smaller).
            let max = i64::try_from(self.rejections_max).unwrap_or(i64::MAX);
            let bound = tx
                .prepare_cached(
                    "DELETE FROM rejections WHERE seq <= (SELECT MAX(seq) FROM rejections) - $1",
                )
                .await
                .map_err(backend)?;
            tx.execute(&bound, &[&max]).await.map_err(backend)?;
            tx.commit().await.map_err(commit_failed)
        }
        .boxed()
    }

    fn recent_rejections(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Rejection>, StoreError>> {
        async move {
            self.query(
                "SELECT at, source, status, reason FROM rejections ORDER BY seq DESC LIMIT $1",
                &[&limit_of(limit)],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(Rejection {
                    at_ms: col(r, 0)?,
                    source: col(r, 1)?,
                    status: u16::try_from(col::<i32>(r, 2)?).unwrap_or(0),
                    reason: col(r, 3)?,
                })
            })
            .collect()
        }
        .boxed()
    }
}

impl DeliveryQueue for PostgresStore {
    fn create_deliveries(
        &self,
        rows: Vec<NewDelivery>,
        routed: Vec<i64>,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, StoreError>> {
        async move {
            let (_open, mut conn) = self.writing().await?;
            let tx = conn.transaction().await.map_err(backend)?;
            // Created claimed by this instance: its worker gets them from the router.
            let created = insert_deliveries(&tx, &rows, now_ms(), &self.instance).await?;
            if !routed.is_empty() {
                let stmt = tx
                    .prepare_cached("DELETE FROM unrouted WHERE seq = ANY($1)")
                    .await
                    .map_err(backend)?;
                tx.execute(&stmt, &[&routed]).await.map_err(backend)?;
            }
            tx.commit().await.map_err(commit_failed)?;
            Ok(created)
        }
        .boxed()
    }

    fn due_deliveries<'a>(
        &'a self,
        hook: &'a str,
        now_ms: i64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, StoreError>> {
        async move {
            // Rows this instance holds, plus free ones it claims now (unclaimed, or held by an
            // instance whose lease lapsed). SKIP LOCKED: two instances claiming at once take
            // different rows. The outer query runs on the snapshot before the UPDATE, hence
            // `IN claimed` for the rows claimed by this statement.
            let sql = format!(
                "WITH claimed AS (\
                   UPDATE deliveries SET claimed_by = $4 WHERE id IN (\
                     SELECT d.id FROM deliveries d WHERE d.hook = $1 AND d.state = 'pending' \
                     AND d.next_attempt_at <= $2 AND d.claimed_by IS DISTINCT FROM $4 AND {free} \
                     ORDER BY d.next_attempt_at, d.id LIMIT $3 FOR UPDATE SKIP LOCKED) \
                   RETURNING id) \
                 SELECT d.id, d.event_seq, e.id, e.received_at, d.hook, d.webhook_id, \
                 d.attempts, d.group_key, d.group_seqs \
                 FROM deliveries d JOIN events e ON e.seq = d.event_seq \
                 WHERE d.hook = $1 AND d.state = 'pending' AND d.next_attempt_at <= $2 \
                 AND (d.claimed_by = $4 OR d.id IN (SELECT id FROM claimed)) \
                 ORDER BY d.next_attempt_at, d.id LIMIT $3",
                free = claim_lapsed("d.claimed_by", 5)
            );
            let live_after = now_ms.saturating_sub(self.lease_ms);
            let (_open, conn) = self.writing().await?;
            let stmt = conn.prepare_cached(&sql).await.map_err(backend)?;
            conn.query(
                &stmt,
                &[
                    &hook,
                    &now_ms,
                    &limit_of(limit),
                    &self.instance,
                    &live_after,
                ],
            )
            .await
            .map_err(backend)?
            .iter()
            .map(delivery_row)
            .collect()
        }
        .boxed()
    }

    fn release_claims<'a>(&'a self, target: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            self.execute(
                "UPDATE deliveries SET claimed_by = NULL \
                 WHERE hook = $1 AND claimed_by = $2 AND state = 'pending'",
                &[&target, &self.instance],
            )
            .await
            .map(|_| ())
        }
        .boxed()
    }

    fn update_deliveries(
        &self,
        updates: Vec<DeliveryUpdate>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            if updates.is_empty() {
                return Ok(());
            }
            let now = now_ms();
            let cols = OutcomeArrays::new(&updates, now);
            let mut params = cols.params();
            params.extend([&now as &(dyn ToSql + Sync), &self.instance]);
            self.execute(&update_sql(1), &params).await.map(|_| ())
        }
        .boxed()
    }

    fn requeue_deliveries<'a>(
        &'a self,
        target: &'a str,
        scope: ReplayScope,
    ) -> BoxFuture<'a, Result<Vec<i64>, StoreError>> {
        self.requeue_inner(target, scope).boxed()
    }

    fn delivery_targets<'a>(
        &'a self,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        async move {
            let Some(seq) = self.seq_of(event_id).await? else {
                return Ok(Vec::new());
            };
            self.query(
                "SELECT hook FROM deliveries WHERE event_seq = $1 \
                 UNION SELECT hook FROM deliveries \
                 WHERE group_seqs IS NOT NULL AND group_seqs @> ARRAY[$1::bigint] \
                 ORDER BY 1",
                &[&seq],
            )
            .await?
            .iter()
            .map(|r| col(r, 0))
            .collect()
        }
        .boxed()
    }

    fn delivery_counts<'a>(
        &'a self,
        hook: &'a str,
    ) -> BoxFuture<'a, Result<DeliveryCounts, StoreError>> {
        async move {
            let mut counts = DeliveryCounts::default();
            for r in self
                .query(
                    "SELECT state, COUNT(*) FROM deliveries WHERE hook = $1 GROUP BY state",
                    &[&hook],
                )
                .await?
            {
                let state: String = col(&r, 0)?;
                let n = to_u64(col(&r, 1)?);
                counts.add(&state, n);
            }
            Ok(counts)
        }
        .boxed()
    }

    fn pending_summary(&self) -> BoxFuture<'_, Result<Vec<PendingSummary>, StoreError>> {
        async move {
            self.query(
                "SELECT hook, COUNT(*), MIN(created_at) FROM deliveries \
                 WHERE state = 'pending' GROUP BY hook ORDER BY hook",
                &[],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(PendingSummary {
                    target: col(r, 0)?,
                    pending: to_u64(col(r, 1)?),
                    oldest_created_at_ms: col(r, 2)?,
                })
            })
            .collect()
        }
        .boxed()
    }

    fn add_debounce_items(
        &self,
        items: Vec<DebounceItem>,
    ) -> BoxFuture<'_, Result<Vec<DebounceItem>, StoreError>> {
        async move {
            if items.is_empty() {
                return Ok(Vec::new());
            }
            let (_open, mut conn) = self.writing().await?;
            let tx = conn.transaction().await.map_err(backend)?;
            // Only events still unrouted get items. Routing is at least once (a sweep, a
            // takeover and the normal path can route one event twice), and once an event
            // is routed its fired items may be pruned: re-adding one then would put the
            // event in a second group. The lock keeps the events unrouted (`mark_routed`
            // waits) until these items are committed, so no prune can come in between.
            let all_seqs: Vec<i64> = items.iter().map(|i| i.event_seq).collect();
            let unrouted: HashSet<i64> = tx
                .query(
                    "SELECT seq FROM unrouted WHERE seq = ANY($1) ORDER BY seq FOR KEY SHARE",
                    &[&all_seqs],
                )
                .await
                .map_err(commit_failed)?
                .iter()
                .map(|r| col(r, 0))
                .collect::<Result<_, _>>()?;
            let items: Vec<DebounceItem> = items
                .into_iter()
                .filter(|i| unrouted.contains(&i.event_seq))
                .collect();
            if items.is_empty() {
                tx.commit().await.map_err(commit_failed)?;
                return Ok(Vec::new());
            }
            // Each key is held by one instance, which alone fires it: the first to add an
            // item to it, or this one if the holder's lease lapsed.
            let claim = tx
                .prepare_cached(&format!(
                    "INSERT INTO debounce_keys (target, key, owner) \
                     SELECT DISTINCT * FROM UNNEST($1::text[], $2::text[]), (VALUES ($3)) o \
                     ON CONFLICT (target, key) DO UPDATE SET owner = EXCLUDED.owner \
                     WHERE {lapsed}",
                    lapsed = claim_lapsed("debounce_keys.owner", 4)
                ))
                .await
                .map_err(backend)?;
            let live_after = now_ms().saturating_sub(self.lease_ms);
            let key_targets: Vec<&str> = items.iter().map(|i| i.target.as_str()).collect();
            let key_keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
            tx.execute(
                &claim,
                &[&key_targets, &key_keys, &self.instance, &live_after],
            )
            .await
            .map_err(commit_failed)?;
            let targets: Vec<&str> = items.iter().map(|i| i.target.as_str()).collect();
            let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
            let seqs: Vec<i64> = items.iter().map(|i| i.event_seq).collect();
            let received: Vec<i64> = items.iter().map(|i| i.received_at_ms).collect();
            let quiet: Vec<i64> = items.iter().map(|i| i.quiet_ms).collect();
            let max_wait: Vec<i64> = items.iter().map(|i| i.max_wait_ms).collect();
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO debounce_items (target, key, event_seq, received_at, quiet_ms, \
                     max_wait_ms) \
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], \
                     $5::bigint[], $6::bigint[]) \
                     ON CONFLICT DO NOTHING RETURNING target, key, event_seq",
                )
                .await
                .map_err(backend)?;
            let rows = tx
                .query(
                    &stmt,
                    &[&targets, &keys, &seqs, &received, &quiet, &max_wait],
                )
                .await
                .map_err(commit_failed)?;
            tx.commit().await.map_err(commit_failed)?;
            let mut added: HashSet<(String, String, i64)> = HashSet::with_capacity(rows.len());
            for r in &rows {
                added.insert((col(r, 0)?, col(r, 1)?, col(r, 2)?));
            }
            // In the order given; an item listed twice was added once.
            Ok(items
                .into_iter()
                .filter(|it| added.remove(&(it.target.clone(), it.key.clone(), it.event_seq)))
                .collect())
        }
        .boxed()
    }

    fn pending_debounce_items(&self) -> BoxFuture<'_, Result<Vec<DebounceItem>, StoreError>> {
        self.adopt(true).boxed()
    }

    fn adopt_debounce_items(&self) -> BoxFuture<'_, Result<Vec<DebounceItem>, StoreError>> {
        self.adopt(false).boxed()
    }

    fn fire_group(&self, fire: FireGroup) -> BoxFuture<'_, Result<Fired, StoreError>> {
        async move {
            let (target, key) = (&fire.target, &fire.group.key);
            let (_open, mut conn) = self.writing().await?;
            let tx = conn.transaction().await.map_err(backend)?;
            // The key row is the lock: adders and other firers of this key wait for this
            // transaction.
            let holder = tx
                .query_opt(
                    "SELECT owner, EXISTS (SELECT 1 FROM instances i WHERE i.id = k.owner \
                     AND i.heartbeat_at > $3) FROM debounce_keys k \
                     WHERE target = $1 AND key = $2 FOR UPDATE",
                    &[target, key, &now_ms().saturating_sub(self.lease_ms)],
                )
                .await
                .map_err(backend)?;
            match holder {
                // Fired already (by this instance or another): nothing is waiting.
                None => return Ok(Fired::Fired(None)),
                Some(r) => {
                    let (owner, live): (String, bool) = (col(&r, 0)?, col(&r, 1)?);
                    if owner != self.instance && live {
                        return Ok(Fired::NotMine);
                    }
                }
            }
            // Every unfired item of the key, whichever instance added it.
            let items = tx
                .query(
                    "SELECT event_seq, received_at + quiet_ms, received_at + max_wait_ms \
                     FROM debounce_items WHERE target = $1 AND key = $2 AND NOT fired \
                     ORDER BY event_seq",
                    &[target, key],
                )
                .await
                .map_err(backend)?;
            let mut seqs = Vec::with_capacity(items.len());
            let (mut quiet_until, mut deadline) = (i64::MIN, i64::MAX);
            for r in &items {
                seqs.push(col::<i64>(r, 0)?);
                quiet_until = quiet_until.max(col(r, 1)?);
                deadline = deadline.min(col(r, 2)?);
            }
            let due = quiet_until.min(deadline);
            if seqs.is_empty() {
                tx.execute(
                    "DELETE FROM debounce_keys WHERE target = $1 AND key = $2",
                    &[target, key],
                )
                .await
                .map_err(backend)?;
                tx.commit().await.map_err(commit_failed)?;
                return Ok(Fired::Fired(None));
            }
            // Timers are not exact; a few ms early is still the same quiet period.
            if due > now_ms() + 5 {
                return Ok(Fired::NotYet(due));
            }
            tx.execute(
                "UPDATE debounce_items SET fired = true \
                 WHERE target = $1 AND key = $2 AND event_seq = ANY($3)",
                &[target, key, &seqs],
            )
            .await
            .map_err(backend)?;
            tx.execute(
                "DELETE FROM debounce_keys WHERE target = $1 AND key = $2",
                &[target, key],
            )
            .await
            .map_err(backend)?;
            let first = seqs[0];
            // Other instances' items may have joined, with an earlier first event.
            let webhook_id = if fire.group.seqs.first() == Some(&first) {
                fire.webhook_id.clone()
            } else {
                crate::debounce::group_delivery_id(target, key, first)
            };
            let mut row = NewDelivery {
                event_seq: first,
                hook: target.clone(),
                webhook_id,
                group: Some(Group {
                    key: key.clone(),
                    seqs,
                }),
            };
            // The items are marked fired in this transaction, so a delivery with this id is
            // an earlier group with the same first event (its item was pruned and added
            // again). Skipping the insert would fire these items with no delivery: take an
            // id from the whole group instead, and never commit without a delivery.
            let mut created =
                insert_deliveries(&tx, std::slice::from_ref(&row), now_ms(), &self.instance)
                    .await?;
            let taken = row.webhook_id.clone();
            if created.is_empty() {
                let seqs = row.group.as_ref().map_or(&[][..], |g| &g.seqs[..]);
                row.webhook_id = crate::debounce::group_delivery_id_of_all(target, key, seqs);
                tracing::warn!(
                    target_name = %target,
                    key = %key,
                    first_seq = first,
                    webhook_id = %taken,
                    new_webhook_id = %row.webhook_id,
                    "a debounce group's delivery id was taken by an earlier group with the same first event; using an id from all its events"
                );
                created =
                    insert_deliveries(&tx, std::slice::from_ref(&row), now_ms(), &self.instance)
                        .await?;
            }
            let Some(delivery) = created.into_iter().next() else {
                // Dropping the transaction rolls the fired marks back.
                return Err(StoreError::Backend(format!(
                    "debounce group {key} of {target}: deliveries {taken} and {all} both exist \
                     already; its items stay unfired",
                    all = row.webhook_id
                )));
            };
            tx.commit().await.map_err(commit_failed)?;
            Ok(Fired::Fired(Some(delivery)))
        }
        .boxed()
    }

    fn prune_debounce(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        async move {
            self.execute(
                "DELETE FROM debounce_items i WHERE i.fired \
                 AND NOT EXISTS (SELECT 1 FROM unrouted u WHERE u.seq = i.event_seq)",
                &[],
            )
            .await
        }
        .boxed()
    }
}

impl History for PostgresStore {
    fn record_attempts(&self, attempts: Vec<Attempt>) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            if attempts.is_empty() {
                return Ok(());
            }
            let cols = AttemptArrays::new(&attempts);
            self.execute(&insert_attempts_sql(1), &cols.params())
                .await
                .map(|_| ())
        }
        .boxed()
    }

    fn prune_attempts(
        &self,
        rule: AttemptRetention,
    ) -> BoxFuture<'_, Result<PrunedAttempts, StoreError>> {
        async move {
            let (_open, mut conn) = self.writing().await?;
            let tx = conn.transaction().await.map_err(backend)?;
            let keep = i64::try_from(rule.keep_max).unwrap_or(i64::MAX);
            let batch = i64::try_from(rule.batch).unwrap_or(i64::MAX);
            let aged = tx
                .execute(
                    "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts \
                     WHERE started_at < $1 ORDER BY started_at LIMIT $2)",
                    &[&rule.older_than_ms, &batch],
                )
                .await
                .map_err(backend)?;
            // The newest `keep_max` by id survive. Sequence gaps (rolled-back inserts) make
            // id arithmetic keep fewer, so count rows instead.
            let counted = tx
                .execute(
                    "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts WHERE id <= \
                     (SELECT id FROM attempts ORDER BY id DESC OFFSET $1 LIMIT 1) \
                     ORDER BY id LIMIT $2)",
                    &[&keep, &batch],
                )
                .await
                .map_err(backend)?;
            // Finished deliveries older than the cutoff; pending ones never. A delivery
            // updated before the cutoff belongs to an event received before it.
            let finished = tx
                .execute(
                    "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
                     WHERE event_seq <= (SELECT max(seq) FROM events WHERE received_at < $1) \
                     AND state <> 'pending' AND updated_at < $1 LIMIT $2)",
                    &[&rule.older_than_ms, &batch],
                )
                .await
                .map_err(backend)?;
            tx.commit().await.map_err(commit_failed)?;
            Ok(PrunedAttempts {
                rows: aged + counted + finished,
                more: [aged, counted, finished]
                    .iter()
                    .any(|&n| n >= rule.batch as u64),
            })
        }
        .boxed()
    }

    fn prune_events(&self, rule: EventRetention) -> BoxFuture<'_, Result<PrunedBatch, StoreError>> {
        // Same rule as SQLite. Several instances may prune at once: SKIP LOCKED keeps them
        // off each other's batch, and the deletes re-check "not pending" in case a replay
        // requeued a delivery of a chosen event meanwhile (that event then stays).
        const PRUNABLE: &str = "NOT EXISTS (SELECT 1 FROM unrouted u WHERE u.seq = e.seq) \
            AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq \
                            AND d.state = 'pending') \
            AND NOT EXISTS (SELECT 1 FROM deliveries g WHERE g.group_seqs IS NOT NULL \
                            AND g.group_seqs @> ARRAY[e.seq] AND g.state = 'pending') \
            AND NOT EXISTS (SELECT 1 FROM debounce_items i WHERE i.event_seq = e.seq \
                            AND NOT i.fired)";
        async move {
            let (_open, mut conn) = self.writing().await?;
            let tx = conn.transaction().await.map_err(backend)?;
            let batch = i64::try_from(rule.batch).unwrap_or(i64::MAX);
            let mut chosen: Vec<(i64, String)> = tx
                .query(
                    &format!(
                        "SELECT e.seq, e.id FROM events e WHERE e.seq > $3 \
                         AND e.received_at < $1 AND {PRUNABLE} \
                         ORDER BY e.seq LIMIT $2 FOR UPDATE SKIP LOCKED"
                    ),
                    &[&rule.older_than_ms, &batch, &rule.after_seq],
                )
                .await
                .map_err(backend)?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let left = batch - i64::try_from(chosen.len()).unwrap_or(0);
            if left > 0 {
                let count: i64 = tx
                    .query_one("SELECT COUNT(*) FROM events", &[])
                    .await
                    .map_err(backend)?
                    .get(0);
                let keep = i64::try_from(rule.keep_max).unwrap_or(i64::MAX);
                let over = count - i64::try_from(chosen.len()).unwrap_or(0) - keep;
                if over > 0 {
                    let after = chosen.last().map_or(rule.after_seq, |(s, _)| *s);
                    let more = tx
                        .query(
                            &format!(
                                "SELECT e.seq, e.id FROM events e WHERE e.seq > $1 \
                                 AND {PRUNABLE} ORDER BY e.seq LIMIT $2 FOR UPDATE SKIP LOCKED"
                            ),
                            &[&after, &over.min(left)],
                        )
                        .await
                        .map_err(backend)?;
                    chosen.extend(more.iter().map(|r| (r.get(0), r.get(1))));
                }
            }
            if chosen.is_empty() {
                tx.commit().await.map_err(commit_failed)?;
                return Ok(PrunedBatch {
                    events: 0,
                    last_seq: rule.after_seq,
                    more: false,
                });
            }
            let seqs: Vec<i64> = chosen.iter().map(|(s, _)| *s).collect();
            let ids: Vec<&str> = chosen.iter().map(|(_, i)| i.as_str()).collect();
            tx.execute(
                "DELETE FROM attempts a WHERE a.event_id = ANY($1) AND NOT EXISTS \
                 (SELECT 1 FROM deliveries d WHERE d.id = a.delivery_id AND d.state = 'pending')",
                &[&ids],
            )
            .await
            .map_err(backend)?;
            tx.execute(
                "DELETE FROM deliveries WHERE event_seq = ANY($1) AND state <> 'pending'",
                &[&seqs],
            )
            .await
            .map_err(backend)?;
            tx.execute(
                "DELETE FROM debounce_items WHERE event_seq = ANY($1) AND fired",
                &[&seqs],
            )
            .await
            .map_err(backend)?;
            let n = tx
                .execute(
                    &format!("DELETE FROM events e WHERE e.seq = ANY($1) AND {PRUNABLE}"),
                    &[&seqs],
                )
                .await
                .map_err(backend)?;
            tx.commit().await.map_err(commit_failed)?;
            Ok(PrunedBatch {
                events: n,
                last_seq: seqs.last().copied().unwrap_or(rule.after_seq),
                more: seqs.len() >= rule.batch,
            })
        }
        .boxed()
    }

    fn compact(&self, _max_pages: u64) -> BoxFuture<'_, Result<Compacted, StoreError>> {
        // Deleted tuples are marked reusable by autovacuum and new rows fill them; the
        // files do not shrink, and a VACUUM FULL (an exclusive lock) would stop ingest.
        async { Ok(Compacted::default()) }.boxed()
    }

    fn attempts_for_event<'a>(
        &'a self,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Attempt>, StoreError>> {
        async move {
            self.query(
                &format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE event_id = $1 ORDER BY id"),
                &[&event_id],
            )
            .await?
            .iter()
            .map(attempt_row)
            .collect()
        }
        .boxed()
    }

    fn event_deliveries<'a>(
        &'a self,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<EventDeliveries>, StoreError>> {
        self.event_deliveries_inner(event_id).boxed()
    }
}

impl RuntimeState for PostgresStore {
    fn hook_overrides<'a>(
        &'a self,
        hook: &'a str,
    ) -> BoxFuture<'a, Result<Option<HookOverrides>, StoreError>> {
        async move {
            let Some(r) = self
                .query_opt("SELECT state FROM hook_overrides WHERE hook = $1", &[&hook])
                .await?
            else {
                return Ok(None);
            };
            let json: String = col(&r, 0)?;
            serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    id: hook.to_owned(),
                    reason: e.to_string(),
                })
        }
        .boxed()
    }

    fn save_hook_overrides(&self, state: HookOverrides) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let json = serde_json::to_string(&state).map_err(|e| StoreError::Corrupt {
                id: state.hook.clone(),
                reason: e.to_string(),
            })?;
            self.execute(
                "INSERT INTO hook_overrides (hook, state) VALUES ($1, $2) \
                 ON CONFLICT (hook) DO UPDATE SET state = EXCLUDED.state",
                &[&state.hook, &json],
            )
            .await
            .map(|_| ())
        }
        .boxed()
    }

    fn runtime_hooks(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>> {
        async move {
            self.query("SELECT name, config FROM runtime_hooks ORDER BY name", &[])
                .await?
                .iter()
                .map(|r| Ok((col(r, 0)?, col(r, 1)?)))
                .collect()
        }
        .boxed()
    }

    fn save_runtime_hook(
        &self,
        name: String,
        config: Option<String>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            match config {
                Some(c) => {
                    self.execute(
                        "INSERT INTO runtime_hooks (name, config, updated_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (name) DO UPDATE SET config = EXCLUDED.config, \
                         updated_at = EXCLUDED.updated_at",
                        &[&name, &c, &now_ms()],
                    )
                    .await
                }
                None => {
                    self.execute("DELETE FROM runtime_hooks WHERE name = $1", &[&name])
                        .await
                }
            }
            .map(|_| ())
        }
        .boxed()
    }

    fn applied_card<'a>(
        &'a self,
        target: &'a str,
        rating_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        async move {
            self.query_opt(
                "SELECT card_sha FROM plex_cards WHERE target = $1 AND rating_key = $2",
                &[&target, &rating_key],
            )
            .await?
            .map(|r| col(&r, 0))
            .transpose()
        }
        .boxed()
    }

    fn record_card(&self, card: AppliedCard) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            self.execute(
                "INSERT INTO plex_cards (target, rating_key, card_sha, item, applied_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (target, rating_key) DO UPDATE \
                 SET card_sha = EXCLUDED.card_sha, item = EXCLUDED.item, \
                 applied_at = EXCLUDED.applied_at",
                &[
                    &card.target,
                    &card.rating_key,
                    &card.card_sha,
                    &card.item,
                    &now_ms(),
                ],
            )
            .await
            .map(|_| ())
        }
        .boxed()
    }

    fn poller_cursor<'a>(
        &'a self,
        poller: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        async move {
            self.query_opt(
                "SELECT state FROM poller_cursors WHERE poller = $1",
                &[&poller],
            )
            .await?
            .map(|r| col(&r, 0))
            .transpose()
        }
        .boxed()
    }

    fn save_poller_cursor(
        &self,
        poller: String,
        cursor: String,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            self.execute(
                "INSERT INTO poller_cursors (poller, state, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (poller) DO UPDATE SET state = EXCLUDED.state, \
                 updated_at = EXCLUDED.updated_at",
                &[&poller, &cursor, &now_ms()],
            )
            .await
            .map(|_| ())
        }
        .boxed()
    }
}

impl Membership for PostgresStore {
    fn instance_id(&self) -> &str {
        &self.instance
    }

    fn heartbeat(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        async move {
            // The lease is counted from before the timestamp the others count from.
            let started = Instant::now();
            let now = now_ms();
            let (_open, mut conn) = self.writing().await?;
            let tx = conn.transaction().await.map_err(backend)?;
            tx.execute(
                "INSERT INTO instances (id, started_at, heartbeat_at) VALUES ($1, $2, $2) \
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = $2",
                &[&self.instance, &now],
            )
            .await
            .map_err(backend)?;
            // Instances silent for ten leases are gone for good.
            tx.execute(
                "DELETE FROM instances WHERE heartbeat_at < $1",
                &[&now.saturating_sub(self.lease_ms.saturating_mul(10))],
            )
            .await
            .map_err(backend)?;
            let live = tx
                .query(
                    "SELECT id FROM instances WHERE heartbeat_at > $1 ORDER BY id",
                    &[&now.saturating_sub(self.lease_ms)],
                )
                .await
                .map_err(backend)?;
            tx.commit().await.map_err(commit_failed)?;
            self.lease_clock.renewed(started, Instant::now());
            live.iter().map(|r| col(r, 0)).collect()
        }
        .boxed()
    }

    fn leave(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            // Without its row, every claim of this instance is free to take at once.
            self.lease_clock.end();
            self.execute("DELETE FROM instances WHERE id = $1", &[&self.instance])
                .await
                .map(|_| ())
        }
        .boxed()
    }

    fn lease(&self) -> Option<u64> {
        self.lease_clock.current()
    }
}

impl Store for PostgresStore {
    /// One statement, so one transaction and one commit: the attempts are inserted by a
    /// data-modifying `WITH`, and the outcomes applied by the `UPDATE` that follows it.
    fn record_outcomes(
        &self,
        updates: Vec<DeliveryUpdate>,
        attempts: Vec<Attempt>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            if attempts.is_empty() || updates.is_empty() {
                return super::record_outcomes_in_two_writes(self, updates, attempts).await;
            }
            let now = now_ms();
            let recorded = AttemptArrays::new(&attempts);
            let applied = OutcomeArrays::new(&updates, now);
            let mut params = recorded.params();
            params.extend(applied.params());
            params.extend([&now as &(dyn ToSql + Sync), &self.instance]);
            let sql = format!(
                "WITH recorded AS ({}) {}",
                insert_attempts_sql(1),
                update_sql(ATTEMPT_PARAMS + 1)
            );
            self.execute(&sql, &params).await.map(|_| ())
        }
        .boxed()
    }

    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            // Waits for pooled writes in flight; every later one answers `Closed`.
            *self.closed.write().await = true;
            let res = match self.send(WriteCmd::Close).await {
                Err(StoreError::Closed) => Ok(()),
                other => other,
            };
            let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(h) = handle {
                let _ = h.await;
            }
            res
        }
        .boxed()
    }

    fn ping(&self, timeout: Duration) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            // Through the ingest writer: proves the path a 2xx depends on, not just the pool.
            match tokio::time::timeout(timeout, self.send(WriteCmd::Ping)).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Backend(format!(
                    "a write did not commit within {timeout:?}"
                ))),
            }
        }
        .boxed()
    }
}
