//! Storage conformance: every check runs against SQLite (a temporary file, always) and
//! against PostgreSQL when `RELAYARR_TEST_POSTGRES` holds a server URL (for example
//! `postgres://postgres@127.0.0.1:5432/postgres`). Each PostgreSQL test creates a database of
//! its own through that URL and drops it at the end, so the tests run in parallel.
//!
//! The checks speak only through `Arc<dyn Store>`, opened by the same factory the relay
//! uses. Only what the trait cannot stage (a transaction committing out of `seq` order) uses
//! raw SQL.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use relayarr::actors::model::{Episode, EventKind, FileRef, Media, NormalizedEvent, SourceKind};
use relayarr::actors::store::prelude::*;
use relayarr::actors::store::{
    self, now_ms, AppliedCard, Attempt, AttemptRetention, DebounceItem, Delivery, DeliveryState,
    DeliveryUpdate, EventDeliveries, EventFilter, FireGroup, Fired, Group, HookOverrides,
    NewDelivery, NewEvent, PrunedAttempts, Rejection, ReplayScope, StoreConfig, StoreError,
};
use sha2::{Digest, Sha256};

const PG_ENV: &str = "RELAYARR_TEST_POSTGRES";

/// The backend a check runs against.
struct Backend {
    store: Arc<dyn Store>,
    /// PostgreSQL: the URL of this test's own database, for raw SQL.
    pg_url: Option<String>,
}

async fn with_sqlite<F, Fut>(cfg: StoreConfig, check: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = store::open(&cfg, &dir.path().join("relayarr.db"))
        .await
        .expect("open SQLite through the factory");
    check(Backend {
        store: Arc::clone(&store),
        pg_url: None,
    })
    .await;
    let _ = store.close().await;
}

/// The admin URL with its database replaced by `db`.
fn database_url(admin: &str, db: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin, String::new()),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    format!("{}/{db}{query}", &base[..authority_end])
}

async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the PostgreSQL test server");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A fresh database on the test server, dropped when the check ends (pass or fail).
async fn with_postgres<F, Fut>(cfg: StoreConfig, check: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    let Ok(admin) = std::env::var(PG_ENV) else {
        println!("skipped: RELAYARR_TEST_POSTGRES is not set (a PostgreSQL server URL)");
        return;
    };
    let name = format!(
        "relayarr_test_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let admin_client = pg_client(&admin).await;
    admin_client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the test database");
    let url = database_url(&admin, &name);
    let cfg = StoreConfig {
        url: Some(url.clone()),
        ..cfg
    };
    let outcome = AssertUnwindSafe(async {
        let store = store::open(&cfg, Path::new("/nonexistent/unused.db"))
            .await
            .expect("open PostgreSQL through the factory");
        check(Backend {
            store: Arc::clone(&store),
            pg_url: Some(url.clone()),
        })
        .await;
        let _ = store.close().await;
    })
    .catch_unwind()
    .await;
    admin_client
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .expect("drop the test database");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Two tests per check: `$sqlite` and `$postgres`.
macro_rules! on_both {
    ($check:ident, $cfg:expr, $sqlite:ident, $postgres:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            with_sqlite($cfg, $check).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            with_postgres($cfg, $check).await;
        }
    };
    ($check:ident, $sqlite:ident, $postgres:ident) => {
        on_both!($check, StoreConfig::default(), $sqlite, $postgres);
    };
}

fn normalized(source: &str, kind: EventKind, title: &str) -> NormalizedEvent {
    let mut ev = NormalizedEvent::new(SourceKind::Sonarr, source, kind, "Download");
    ev.media = Some(Media {
        media_type: "series".into(),
        title: Some(title.into()),
        year: Some(2020),
        ..Media::default()
    });
    ev.episodes = vec![Episode {
        season: Some(1),
        episode: Some(2),
        ..Episode::default()
    }];
    ev
}

/// An event from `source` with `body` as its raw body, received at `at`.
fn new_event_at(source: &str, kind: EventKind, body: &str, at: i64) -> NewEvent {
    let mut event = normalized(source, kind, body);
    if matches!(event.kind, EventKind::Import) {
        event.download_id = Some(format!("dl-{body}"));
        event.files = vec![FileRef {
            path: format!("/tv/{body}.mkv"),
            ..FileRef::default()
        }];
    }
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update([0u8]);
    h.update(body.as_bytes());
    NewEvent {
        normalized_json: serde_json::to_string(&event).expect("serialise event"),
        event: Arc::new(event),
        raw: Bytes::from(body.to_owned()),
        content_type: Some("application/json".into()),
        dedup_key: h.finalize().into(),
        received_at_ms: at,
    }
}

fn new_event(source: &str, body: &str) -> NewEvent {
    new_event_at(source, EventKind::Import, body, now_ms())
}

/// Appends a new event; returns its id and seq.
async fn append(store: &Arc<dyn Store>, ev: NewEvent) -> (String, i64) {
    let (appended, seq) = store.append(ev).await.expect("append");
    assert!(!appended.duplicate, "a new body is not a duplicate");
    (appended.id, seq.expect("a new event has a seq"))
}

fn delivery(seq: i64, hook: &str) -> NewDelivery {
    NewDelivery {
        event_seq: seq,
        hook: hook.into(),
        webhook_id: format!("msg_{seq}_{hook}"),
        group: None,
    }
}

async fn unrouted_seqs(store: &Arc<dyn Store>) -> Vec<i64> {
    store
        .unrouted(10_000)
        .await
        .expect("unrouted")
        .into_iter()
        .map(|(seq, _)| seq)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Ingest

async fn check_append_group_commit(b: Backend) {
    const N: usize = 200;
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let store = Arc::clone(&b.store);
            tokio::spawn(async move {
                let body = format!("{{\"n\":{i}}}");
                let r = store.append(new_event("sonarr", &body)).await;
                (body, r)
            })
        })
        .collect();
    let mut appended = Vec::with_capacity(N);
    for t in tasks {
        let (body, r) = t.await.expect("append task");
        let (a, seq) = r.expect("every concurrent append commits");
        assert!(!a.duplicate, "distinct bodies are not duplicates");
        appended.push((body, a.id, seq.expect("a new event has a seq")));
    }
    let took = started.elapsed();
    println!(
        "{N} concurrent appends committed in {took:?} ({:.0}/s)",
        N as f64 / took.as_secs_f64()
    );

    let mut seqs: Vec<i64> = appended.iter().map(|(_, _, s)| *s).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), N, "every event has its own seq");
    let mut ids: Vec<&String> = appended.iter().map(|(_, id, _)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), N, "every event has its own id");
    assert_eq!(b.store.count_events().await.expect("count"), N as u64);

    for (body, id, seq) in &appended {
        let ev = b
            .store
            .get_event(id)
            .await
            .expect("get_event")
            .expect("a committed event is readable");
        assert_eq!(&ev.raw, body);
        assert_eq!(ev.source, "sonarr");
        assert_eq!(ev.kind, "import");
        assert_eq!(ev.status, "received");
        assert_eq!(ev.content_type.as_deref(), Some("application/json"));
        assert!(!ev.raw_truncated);
        let raw = b.store.raw_body(*seq).await.expect("raw_body");
        assert_eq!(raw.as_deref(), Some(body.as_bytes()));
    }
    assert_eq!(
        unrouted_seqs(&b.store).await,
        seqs,
        "all unrouted, in seq order"
    );

    // Loaded in the order asked for; unknown seqs are skipped.
    let wanted = vec![seqs[5], seqs[1], i64::MAX - 1, seqs[3]];
    let loaded = b.store.events_by_seq(wanted).await.expect("events_by_seq");
    let got: Vec<i64> = loaded.iter().map(|e| e.seq).collect();
    assert_eq!(got, vec![seqs[5], seqs[1], seqs[3]]);
    assert_eq!(
        loaded[0].event.media.as_ref().and_then(|m| m.title.clone()),
        Some(
            appended
                .iter()
                .find(|a| a.2 == seqs[5])
                .expect("row")
                .0
                .clone()
        )
    );

    if let Some(url) = &b.pg_url {
        // Each inserting transaction leaves its id in `xmin`: fewer transactions than
        // events proves the appends were group-committed.
        let client = pg_client(url).await;
        let row = client
            .query_one("SELECT COUNT(DISTINCT xmin::text) FROM events", &[])
            .await
            .expect("count transactions");
        let transactions: i64 = row.get(0);
        println!("{N} appends in {transactions} transactions");
        assert!(
            transactions < N as i64,
            "{N} concurrent appends took {transactions} transactions: no group commit"
        );
    }
}
on_both!(
    check_append_group_commit,
    store_append_group_commit_sqlite,
    store_append_group_commit_postgres
);

/// A read of an event that something still holds shares that copy: with 8 targets loading
/// pages of the same events, each event was decoded and held 8 times. Once nothing holds
/// it, a read decodes it again from the row.
async fn check_held_events_shared(b: Backend) {
    let ev = new_event("sonarr", "shared");
    let routed = Arc::clone(&ev.event);
    let (id, seq) = append(&b.store, ev).await;
    let (id2, seq2) = append(&b.store, new_event("sonarr", "other")).await;
    let read = b.store.events_by_seq(vec![seq2, seq]).await.expect("read");
    assert_eq!(
        read.iter()
            .map(|e| (e.seq, e.id.as_str()))
            .collect::<Vec<_>>(),
        vec![(seq2, id2.as_str()), (seq, id.as_str())],
        "in the order asked for"
    );
    assert!(
        Arc::ptr_eq(&read[1].event, &routed),
        "the copy its source routes is shared"
    );
    let again = b.store.events_by_seq(vec![seq2]).await.expect("read");
    assert!(
        Arc::ptr_eq(&again[0].event, &read[0].event),
        "a decoded copy still held is shared"
    );
    drop((routed, read, again));
    let fresh = b.store.events_by_seq(vec![seq]).await.expect("read");
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].id, id);
    assert_eq!(
        fresh[0]
            .event
            .media
            .as_ref()
            .and_then(|m| m.title.as_deref()),
        Some("shared"),
        "read again from the row once nothing held it"
    );
}
on_both!(
    check_held_events_shared,
    store_held_events_shared_sqlite,
    store_held_events_shared_postgres
);

async fn check_raw_body_truncated(b: Backend) {
    let body = "x".repeat(100);
    let (id, seq) = append(&b.store, new_event("sonarr", &body)).await;
    let ev = b.store.get_event(&id).await.expect("get").expect("event");
    assert!(ev.raw_truncated);
    assert_eq!(ev.raw, "x".repeat(16));
    assert_eq!(
        b.store.raw_body(seq).await.expect("raw").map(|r| r.len()),
        Some(16)
    );
    // The normalised event is always whole.
    assert_eq!(
        ev.normalized.media.and_then(|m| m.title),
        Some(body.clone())
    );
}
on_both!(
    check_raw_body_truncated,
    StoreConfig {
        raw_body_max: 16,
        ..StoreConfig::default()
    },
    store_raw_body_truncated_sqlite,
    store_raw_body_truncated_postgres
);

async fn check_duplicates(b: Backend) {
    let (first, _) = append(&b.store, new_event("sonarr", "same")).await;
    let (again, seq) = b
        .store
        .append(new_event("sonarr", "same"))
        .await
        .expect("append duplicate");
    assert!(again.duplicate);
    assert_eq!(again.id, first, "a duplicate answers the first event's id");
    assert_eq!(seq, None, "a duplicate stores nothing");
    assert_eq!(b.store.count_events().await.expect("count"), 1);

    // The same body from another source is another event.
    let (other, _) = append(&b.store, new_event("sonarr-4k", "same")).await;
    assert_ne!(other, first);

    // Identical bodies arriving together (one batch on PostgreSQL) store one event.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = Arc::clone(&b.store);
            tokio::spawn(async move { store.append(new_event("radarr", "burst")).await })
        })
        .collect();
    let mut ids = Vec::new();
    let mut fresh = 0;
    for t in tasks {
        let (a, seq) = t.await.expect("task").expect("append");
        if !a.duplicate {
            fresh += 1;
            assert!(seq.is_some());
        } else {
            assert!(seq.is_none());
        }
        ids.push(a.id);
    }
    assert_eq!(fresh, 1, "one of the identical bodies is stored");
    assert!(ids.iter().all(|id| *id == ids[0]), "all answer one id");
    assert_eq!(b.store.count_events().await.expect("count"), 3);

    // Outside the window: the first copy was received 20 minutes ago (window 10m).
    let old = now_ms() - 20 * 60 * 1000;
    let (aged, _) = append(
        &b.store,
        new_event_at("sonarr", EventKind::Import, "aged", old),
    )
    .await;
    let (later, seq) = b
        .store
        .append(new_event("sonarr", "aged"))
        .await
        .expect("append");
    assert!(!later.duplicate, "a copy outside the window is new");
    assert_ne!(later.id, aged);
    assert!(seq.is_some());
}
on_both!(
    check_duplicates,
    store_duplicates_sqlite,
    store_duplicates_postgres
);

async fn check_dedup_off(b: Backend) {
    let (first, _) = append(&b.store, new_event("sonarr", "same")).await;
    let (second, _) = append(&b.store, new_event("sonarr", "same")).await;
    assert_ne!(first, second, "with no dedup memory every body is stored");
}
on_both!(
    check_dedup_off,
    StoreConfig {
        dedup_max_entries: 0,
        ..StoreConfig::default()
    },
    store_dedup_off_sqlite,
    store_dedup_off_postgres
);

// ---------------------------------------------------------------------------------------
// Routing progress

async fn check_routing_progress(b: Backend) {
    let (id1, s1) = append(&b.store, new_event("sonarr", "one")).await;
    let (_, s2) = append(&b.store, new_event("sonarr", "two")).await;
    let (_, s3) = append(&b.store, new_event("sonarr", "three")).await;
    assert_eq!(unrouted_seqs(&b.store).await, vec![s1, s2, s3]);
    let limited = b.store.unrouted(2).await.expect("unrouted");
    assert_eq!(limited.len(), 2);
    assert_eq!(limited[0].0, s1);
    assert!(limited[0].1 > 0, "with its receive time");

    let created = b
        .store
        .create_deliveries(vec![delivery(s1, "a"), delivery(s1, "b")], vec![s1])
        .await
        .expect("create deliveries");
    assert_eq!(created.len(), 2);
    assert_eq!(created[0].hook, "a");
    assert_eq!(created[1].hook, "b");
    assert_eq!(created[0].event_id, id1);
    assert_eq!(created[0].event_seq, s1);
    assert_eq!(created[0].attempts, 0);
    assert_eq!(created[0].webhook_id, format!("msg_{s1}_a"));
    assert!(created[0].group.is_none());
    assert_eq!(unrouted_seqs(&b.store).await, vec![s2, s3]);
    let ev = b.store.get_event(&id1).await.expect("get").expect("event");
    assert_eq!(ev.status, "routed");

    // Creating the same deliveries again (a replayed route, a recovery sweep) creates none;
    // a new one in the same call is created.
    let again = b
        .store
        .create_deliveries(
            vec![delivery(s1, "a"), delivery(s1, "b"), delivery(s1, "c")],
            vec![s1],
        )
        .await
        .expect("create again");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].hook, "c");
    assert_eq!(
        b.store.delivery_counts("a").await.expect("counts").pending,
        1
    );

    b.store.mark_routed(vec![s2]).await.expect("mark routed");
    assert_eq!(unrouted_seqs(&b.store).await, vec![s3]);

    // A call that fails stores nothing of its routing progress.
    let failed = b
        .store
        .create_deliveries(vec![delivery(i64::MAX - 7, "a")], vec![s3])
        .await;
    assert!(failed.is_err(), "a delivery of an unknown event is refused");
    assert_eq!(unrouted_seqs(&b.store).await, vec![s3]);
}
on_both!(
    check_routing_progress,
    store_routing_progress_sqlite,
    store_routing_progress_postgres
);

/// PostgreSQL hands out sequence numbers at insert, not at commit: an event with a lower
/// seq can become visible after the router has handled a higher one. It must still be
/// found unrouted (a watermark would have skipped it forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_out_of_order_commit_postgres() {
    with_postgres(StoreConfig::default(), |b: Backend| async move {
        let url = b.pg_url.clone().expect("a PostgreSQL backend");
        let mut other = pg_client(&url).await;
        let late = other.transaction().await.expect("begin");
        let event = normalized("sonarr", EventKind::Grab, "late");
        let json = serde_json::to_vec(&event).expect("json");
        let row = late
            .query_one(
                "INSERT INTO events (id, source, source_kind, kind, event_type, received_at, \
                 dedup_key, content_type, raw_truncated, codec, raw, normalized) \
                 VALUES ('01LATE0000000000000000000', 'sonarr', 'sonarr', 'grab', 'Grab', $1, \
                 $2, NULL, false, 0, $3, $4) RETURNING seq",
                &[&now_ms(), &vec![7u8; 32], &b"late".to_vec(), &json],
            )
            .await
            .expect("insert the late event");
        let late_seq: i64 = row.get(0);
        late.execute("INSERT INTO unrouted (seq) VALUES ($1)", &[&late_seq])
            .await
            .expect("mark it unrouted");

        // Meanwhile the store commits a higher seq, and the router handles it.
        let (_, seq) = append(&b.store, new_event("sonarr", "early")).await;
        assert!(seq > late_seq, "the store's event got the higher seq");
        assert_eq!(
            unrouted_seqs(&b.store).await,
            vec![seq],
            "the uncommitted event is invisible"
        );
        b.store
            .create_deliveries(vec![delivery(seq, "hook")], vec![seq])
            .await
            .expect("route the visible event");
        assert!(unrouted_seqs(&b.store).await.is_empty());

        late.commit().await.expect("commit the late event");
        assert_eq!(
            unrouted_seqs(&b.store).await,
            vec![late_seq],
            "the late, lower seq is found unrouted"
        );
        let loaded = b
            .store
            .events_by_seq(vec![late_seq])
            .await
            .expect("load the late event");
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].event.event_type, "Download");
        let ev = b
            .store
            .get_event("01LATE0000000000000000000")
            .await
            .expect("get")
            .expect("the late event");
        assert_eq!(ev.status, "received");
        assert_eq!(ev.raw, "late");
    })
    .await;
}

/// Identical bodies committed in ONE batch: the second and later copies cannot be found in
/// the table yet, so the batch itself must answer them with the first one's id. The writer
/// is held on a table lock so that the copies all queue up behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_duplicates_in_one_batch_postgres() {
    with_postgres(StoreConfig::default(), |b: Backend| async move {
        let url = b.pg_url.clone().expect("a PostgreSQL backend");
        let mut other = pg_client(&url).await;
        let hold = other.transaction().await.expect("begin");
        hold.batch_execute("LOCK TABLE unrouted IN EXCLUSIVE MODE")
            .await
            .expect("lock");
        let blocker = {
            let store = Arc::clone(&b.store);
            tokio::spawn(async move { store.append(new_event("sonarr", "blocker")).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let copies: Vec<_> = (0..20)
            .map(|_| {
                let store = Arc::clone(&b.store);
                tokio::spawn(async move { store.append(new_event("sonarr", "copy")).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!blocker.is_finished(), "the writer is held by the lock");
        hold.commit().await.expect("release");
        blocker.await.expect("task").expect("blocker commits");
        let mut fresh = Vec::new();
        let mut ids = Vec::new();
        for t in copies {
            let (a, seq) = t.await.expect("task").expect("append");
            if !a.duplicate {
                fresh.push(seq);
            }
            ids.push(a.id);
        }
        assert_eq!(fresh.len(), 1, "one copy stored");
        assert!(
            ids.iter().all(|id| *id == ids[0]),
            "all copies answer one id"
        );
        assert_eq!(b.store.count_events().await.expect("count"), 2);
        let client = pg_client(&url).await;
        let copies_tx: i64 = client
            .query_one("SELECT COUNT(DISTINCT xmin::text) FROM events", &[])
            .await
            .expect("count transactions")
            .get(0);
        assert_eq!(copies_tx, 2, "the blocker's batch, then the copies' batch");
    })
    .await;
}

/// Two relays starting together on an empty database: the advisory lock makes the second
/// wait for the first's migration, and both open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_concurrent_open_migrates_once_postgres() {
    with_postgres(StoreConfig::default(), |b: Backend| async move {
        let url = b.pg_url.clone().expect("a PostgreSQL backend");
        // The harness opened (and migrated) one store; a second and third open concurrently.
        let cfg = StoreConfig {
            url: Some(url.clone()),
            ..StoreConfig::default()
        };
        let (x, y) = tokio::join!(
            store::open(&cfg, Path::new("/nonexistent/unused.db")),
            store::open(&cfg, Path::new("/nonexistent/unused.db"))
        );
        let (x, y) = (x.expect("first open"), y.expect("second open"));
        let (id, _) = append(&x, new_event("sonarr", "via x")).await;
        assert!(y.get_event(&id).await.expect("get").is_some());
        assert!(b.store.get_event(&id).await.expect("get").is_some());
        let client = pg_client(&url).await;
        let versions: i64 = client
            .query_one("SELECT COUNT(*) FROM schema_version", &[])
            .await
            .expect("schema_version")
            .get(0);
        assert_eq!(
            versions,
            store::postgres::MIGRATIONS.len() as i64,
            "each migration was applied once"
        );
        x.close().await.expect("close x");
        y.close().await.expect("close y");
    })
    .await;
}

/// An event row stays in its table up to a page (migration 4): a row of ~5.3 KB (its body
/// and normalised event LZ4-compressed) leaves the TOAST table empty, where PostgreSQL's
/// 2 KB default had moved a column there. A larger one still goes out of line, and both
/// read back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_events_stay_in_their_row_postgres() {
    with_postgres(StoreConfig::default(), |b: Backend| async move {
        let url = b.pg_url.clone().expect("a PostgreSQL backend");
        let client = pg_client(&url).await;
        let toast_bytes = || async {
            client
                .query_one(
                    "SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE relname = 'events'",
                    &[],
                )
                .await
                .expect("toast size")
                .get::<_, i64>(0)
        };

        let small = incompressible(1, 2_400);
        let (id, seq) = append(&b.store, new_event("sonarr", &small)).await;
        let size: i32 = client
            .query_one(
                "SELECT pg_column_size(e.*) FROM events e WHERE seq = $1",
                &[&seq],
            )
            .await
            .expect("row size")
            .get(0);
        assert!(
            (2_100..8_000).contains(&size),
            "the row is past the 2 KB TOAST threshold and within a page: {size} bytes"
        );
        assert_eq!(toast_bytes().await, 0, "nothing went to the TOAST table");
        let ev = b.store.get_event(&id).await.expect("get").expect("event");
        assert_eq!(ev.raw, small);
        assert_eq!(ev.normalized.media.and_then(|m| m.title), Some(small));

        let large = incompressible(2, 20_000);
        let (id, seq) = append(&b.store, new_event("sonarr", &large)).await;
        assert!(
            toast_bytes().await > 0,
            "a row over a page goes out of line"
        );
        let ev = b.store.get_event(&id).await.expect("get").expect("event");
        assert_eq!(ev.raw, large);
        assert_eq!(
            b.store.raw_body(seq).await.expect("raw").map(|r| r.len()),
            Some(large.len())
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Delivery queue

async fn check_delivery_queue(b: Backend) {
    let (id1, s1) = append(&b.store, new_event("sonarr", "one")).await;
    let (_, s2) = append(&b.store, new_event("sonarr", "two")).await;
    let created = b
        .store
        .create_deliveries(
            vec![delivery(s1, "h"), delivery(s2, "h"), delivery(s1, "other")],
            vec![s1, s2],
        )
        .await
        .expect("create");
    let (d1, d2, d3) = (created[0].id, created[1].id, created[2].id);
    let now = now_ms() + 1;

    let due = b.store.due_deliveries("h", now, 10).await.expect("due");
    assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![d1, d2]);
    assert_eq!(due[0].event_id, id1);
    assert_eq!(
        b.store
            .due_deliveries("h", now, 1)
            .await
            .expect("due")
            .len(),
        1
    );

    let later = now + 60_000;
    b.store
        .update_deliveries(vec![
            DeliveryUpdate::Retry {
                id: d1,
                attempts: 1,
                next_attempt_at_ms: later,
                status: Some(503),
                error: Some("busy".into()),
            },
            DeliveryUpdate::Succeeded {
                id: d2,
                attempts: 1,
                status: 200,
            },
        ])
        .await
        .expect("update");
    assert!(b
        .store
        .due_deliveries("h", now, 10)
        .await
        .expect("due")
        .is_empty());
    let due = b.store.due_deliveries("h", later, 10).await.expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].id, due[0].attempts), (d1, 1));
    let counts = b.store.delivery_counts("h").await.expect("counts");
    assert_eq!((counts.pending, counts.succeeded, counts.failed), (1, 1, 0));

    // Two outcomes of one row in one call: the last one wins.
    b.store
        .update_deliveries(vec![
            DeliveryUpdate::Retry {
                id: d1,
                attempts: 2,
                next_attempt_at_ms: later,
                status: None,
                error: Some("timeout".into()),
            },
            DeliveryUpdate::Failed {
                id: d1,
                attempts: 3,
                status: Some(410),
                error: Some("gone".into()),
            },
        ])
        .await
        .expect("update");
    let counts = b.store.delivery_counts("h").await.expect("counts");
    assert_eq!((counts.pending, counts.succeeded, counts.failed), (0, 1, 1));
    let explained = b
        .store
        .event_deliveries(&id1)
        .await
        .expect("explain")
        .expect("known event");
    let info = explained
        .deliveries
        .iter()
        .find(|d| d.id == d1)
        .expect("d1 explained");
    assert_eq!(info.state, "failed");
    assert_eq!(info.attempts, 3);
    assert_eq!(info.last_status, Some(410));
    assert_eq!(info.last_error.as_deref(), Some("gone"));
    assert_eq!(
        info.next_attempt_at_ms, None,
        "only pending rows have a next attempt"
    );

    let summary = b.store.pending_summary().await.expect("summary");
    assert_eq!(summary.len(), 1, "only targets with pending deliveries");
    assert_eq!(summary[0].target, "other");
    assert_eq!(summary[0].pending, 1);
    assert!(summary[0].oldest_created_at_ms.is_some());

    let mut targets = b.store.delivery_targets(&id1).await.expect("targets");
    targets.sort();
    assert_eq!(targets, vec!["h".to_owned(), "other".to_owned()]);

    // Requeue, by ids (in the order asked, only the target's own rows).
    let ids = b
        .store
        .requeue_deliveries("h", ReplayScope::Ids(vec![d2, d3, d1]))
        .await
        .expect("requeue ids");
    assert_eq!(ids, vec![d2, d1], "d3 belongs to another target");
    let due = b
        .store
        .due_deliveries("h", now_ms() + 1, 10)
        .await
        .expect("due");
    assert_eq!(due.len(), 2, "both pending and due now");
    b.store
        .update_deliveries(vec![
            DeliveryUpdate::Succeeded {
                id: d1,
                attempts: 4,
                status: 200,
            },
            DeliveryUpdate::Succeeded {
                id: d2,
                attempts: 2,
                status: 200,
            },
        ])
        .await
        .expect("update");
    // By event, and since a time.
    let ids = b
        .store
        .requeue_deliveries("h", ReplayScope::Event(id1.clone()))
        .await
        .expect("requeue event");
    assert_eq!(ids, vec![d1]);
    let ids = b
        .store
        .requeue_deliveries("h", ReplayScope::Event("no-such-event".into()))
        .await
        .expect("requeue unknown event");
    assert!(ids.is_empty());
    let ids = b
        .store
        .requeue_deliveries("h", ReplayScope::Since(now_ms() + 3_600_000))
        .await
        .expect("requeue since the future");
    assert!(ids.is_empty());
    let mut ids = b
        .store
        .requeue_deliveries("h", ReplayScope::Since(0))
        .await
        .expect("requeue since 0");
    ids.sort_unstable();
    assert_eq!(ids, vec![d1, d2]);
    let counts = b.store.delivery_counts("h").await.expect("counts");
    assert_eq!(counts.pending, 2);
}
on_both!(
    check_delivery_queue,
    store_delivery_queue_sqlite,
    store_delivery_queue_postgres
);

/// One pooled connection: no call may hold a connection while waiting for a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_delivery_queue_on_one_connection_postgres() {
    let cfg = StoreConfig {
        pool_size: 1,
        ..StoreConfig::default()
    };
    tokio::time::timeout(
        Duration::from_secs(20),
        with_postgres(cfg.clone(), check_delivery_queue),
    )
    .await
    .expect("delivery queue checks finish on one connection");
    tokio::time::timeout(Duration::from_secs(20), with_postgres(cfg, check_debounce))
        .await
        .expect("debounce checks finish on one connection");
}

/// The delivery of a group that fired (the only outcome for one instance whose items are
/// quiet).
fn fired_delivery(f: Fired) -> Option<Delivery> {
    match f {
        Fired::Fired(d) => d,
        other => panic!("a lone instance's quiet group fires, got {other:?}"),
    }
}

async fn check_debounce(b: Backend) {
    let (_, s1) = append(&b.store, new_event("sonarr", "one")).await;
    let (id2, s2) = append(&b.store, new_event("sonarr", "two")).await;
    let item = |seq: i64| DebounceItem {
        target: "plex:home".into(),
        key: "/tv/Show".into(),
        event_seq: seq,
        received_at_ms: 1_000 + seq,
        quiet_ms: 5_000,
        max_wait_ms: 60_000,
    };
    let added = b
        .store
        .add_debounce_items(vec![item(s1), item(s2), item(s1)])
        .await
        .expect("add");
    assert_eq!(
        added,
        vec![item(s1), item(s2)],
        "an item listed twice is added once"
    );
    let again = b
        .store
        .add_debounce_items(vec![item(s1), item(s2)])
        .await
        .expect("add again");
    assert!(again.is_empty(), "routing an event twice adds nothing");
    assert_eq!(
        b.store.pending_debounce_items().await.expect("pending"),
        vec![item(s1), item(s2)]
    );

    let group = Group {
        key: "/tv/Show".into(),
        seqs: vec![s1, s2],
    };
    let fire = FireGroup {
        target: "plex:home".into(),
        webhook_id: "grp_1".into(),
        group: group.clone(),
    };
    let fired = fired_delivery(b.store.fire_group(fire.clone()).await.expect("fire"))
        .expect("a new delivery");
    assert_eq!(
        fired.event_seq, s1,
        "a group's delivery belongs to its first event"
    );
    assert_eq!(fired.group.as_ref(), Some(&group));
    assert_eq!(fired.hook, "plex:home");
    assert!(b
        .store
        .pending_debounce_items()
        .await
        .expect("pending")
        .is_empty());
    assert!(
        fired_delivery(b.store.fire_group(fire).await.expect("fire again")).is_none(),
        "firing twice creates one delivery"
    );
    let due = b
        .store
        .due_deliveries("plex:home", now_ms() + 1, 10)
        .await
        .expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].group.as_ref(), Some(&group));

    // The group carries its second event too.
    assert_eq!(
        b.store.delivery_targets(&id2).await.expect("targets"),
        vec!["plex:home".to_owned()]
    );
    let explained = b
        .store
        .event_deliveries(&id2)
        .await
        .expect("explain")
        .expect("event");
    assert_eq!(explained.deliveries.len(), 1);
    assert_eq!(explained.deliveries[0].group.as_ref(), Some(&group));
    let ids = b
        .store
        .requeue_deliveries("plex:home", ReplayScope::Event(id2.clone()))
        .await
        .expect("requeue by the second event");
    assert_eq!(ids, vec![fired.id]);

    // Fired items of unrouted events are kept (the router may still need them).
    assert_eq!(b.store.prune_debounce().await.expect("prune"), 0);
    b.store.mark_routed(vec![s1, s2]).await.expect("routed");
    assert_eq!(b.store.prune_debounce().await.expect("prune"), 2);
    assert_eq!(b.store.prune_debounce().await.expect("prune"), 0);
}
on_both!(
    check_debounce,
    store_debounce_sqlite,
    store_debounce_postgres
);

/// The Plex groups whose deliveries list event `id`.
async fn groups_of(store: &Arc<dyn Store>, id: &str) -> Vec<Group> {
    store
        .event_deliveries(id)
        .await
        .expect("explain")
        .expect("event")
        .deliveries
        .into_iter()
        .filter(|d| d.target == "plex:home")
        .map(|d| d.group.expect("a group delivery"))
        .collect()
}

/// Routing is at least once: after an event was routed and its fired item pruned, routing
/// it again must not open a second group for it (it would be scanned twice, and a group of
/// it and later events would take its first group's delivery id).
async fn check_debounce_routed_again_after_prune(b: Backend) {
    let (id1, s1) = append(&b.store, new_event("sonarr", "again-one")).await;
    let (id2, s2) = append(&b.store, new_event("sonarr", "again-two")).await;
    let item = |seq: i64| DebounceItem {
        target: "plex:home".into(),
        key: "folder:/tv/Again".into(),
        event_seq: seq,
        received_at_ms: 1_000,
        quiet_ms: 0,
        max_wait_ms: 0,
    };
    let group = |seqs: Vec<i64>| FireGroup {
        target: "plex:home".into(),
        webhook_id: relayarr::actors::debounce::group_delivery_id(
            "plex:home",
            "folder:/tv/Again",
            seqs[0],
        ),
        group: Group {
            key: "folder:/tv/Again".into(),
            seqs,
        },
    };
    b.store
        .add_debounce_items(vec![item(s1)])
        .await
        .expect("add");
    fired_delivery(b.store.fire_group(group(vec![s1])).await.expect("fire")).expect("fired");
    b.store.mark_routed(vec![s1]).await.expect("routed");
    assert_eq!(b.store.prune_debounce().await.expect("prune"), 1);

    // The event is routed again (a sweep, a takeover), with the next event of its folder.
    let added = b
        .store
        .add_debounce_items(vec![item(s1), item(s2)])
        .await
        .expect("add again");
    assert_eq!(added, vec![item(s2)], "a routed event gets no item again");
    assert_eq!(
        b.store.pending_debounce_items().await.expect("pending"),
        vec![item(s2)]
    );
    // The debouncer's group holds both (it adds every item it is given); the fire takes the
    // unfired one.
    let second = fired_delivery(b.store.fire_group(group(vec![s1, s2])).await.expect("fire"))
        .expect("the second group fired");
    assert_eq!(
        second.group.as_ref().map(|g| g.seqs.clone()),
        Some(vec![s2])
    );
    assert_eq!(
        groups_of(&b.store, &id1).await.len(),
        1,
        "{id1} in one group"
    );
    assert_eq!(
        groups_of(&b.store, &id2).await.len(),
        1,
        "{id2} in one group"
    );
}
on_both!(
    check_debounce_routed_again_after_prune,
    store_debounce_routed_again_after_prune_sqlite,
    store_debounce_routed_again_after_prune_postgres
);

/// A group whose delivery id is taken already (an earlier group of the same key with the
/// same first event) still becomes a delivery, under an id from all its events; it never
/// fires its items with no delivery. If that id is taken too, nothing fires.
async fn check_debounce_group_id_taken(b: Backend) {
    let key = "folder:/tv/Taken";
    let (_, s1) = append(&b.store, new_event("sonarr", "taken-one")).await;
    let (id2, s2) = append(&b.store, new_event("sonarr", "taken-two")).await;
    let (id3, s3) = append(&b.store, new_event("sonarr", "taken-three")).await;
    let (_, s4) = append(&b.store, new_event("sonarr", "taken-four")).await;
    let item = |seq: i64| DebounceItem {
        target: "plex:home".into(),
        key: key.into(),
        event_seq: seq,
        received_at_ms: 1_000,
        quiet_ms: 0,
        max_wait_ms: 0,
    };
    let fire = |webhook_id: &str, seqs: Vec<i64>| FireGroup {
        target: "plex:home".into(),
        webhook_id: webhook_id.into(),
        group: Group {
            key: key.into(),
            seqs,
        },
    };
    b.store
        .add_debounce_items(vec![item(s1)])
        .await
        .expect("add");
    let first = fired_delivery(
        b.store
            .fire_group(fire("grp_same", vec![s1]))
            .await
            .expect("fire"),
    )
    .expect("fired");
    assert_eq!(first.webhook_id, "grp_same");

    b.store
        .add_debounce_items(vec![item(s2), item(s3)])
        .await
        .expect("add");
    let second = fired_delivery(
        b.store
            .fire_group(fire("grp_same", vec![s2, s3]))
            .await
            .expect("fire a group whose id is taken"),
    )
    .expect("a group whose id is taken still gets a delivery");
    let all = relayarr::actors::debounce::group_delivery_id_of_all("plex:home", key, &[s2, s3]);
    assert_eq!(second.webhook_id, all);
    assert_eq!(
        second.group.as_ref().map(|g| g.seqs.clone()),
        Some(vec![s2, s3])
    );
    for id in [&id2, &id3] {
        assert_eq!(groups_of(&b.store, id).await.len(), 1, "{id} in one group");
    }
    assert!(b
        .store
        .pending_debounce_items()
        .await
        .expect("pending")
        .is_empty());

    // Both ids taken: an error, and the item stays unfired for the next try.
    b.store
        .add_debounce_items(vec![item(s4)])
        .await
        .expect("add");
    let taken = relayarr::actors::debounce::group_delivery_id_of_all("plex:home", key, &[s4]);
    b.store
        .create_deliveries(
            vec![NewDelivery {
                event_seq: s4,
                hook: "plex:home".into(),
                webhook_id: taken,
                group: None,
            }],
            vec![],
        )
        .await
        .expect("a delivery under the fallback id");
    let err = b
        .store
        .fire_group(fire("grp_same", vec![s4]))
        .await
        .expect_err("no id left: the fire fails");
    assert!(err.to_string().contains("stay unfired"), "{err}");
    assert_eq!(
        b.store.pending_debounce_items().await.expect("pending"),
        vec![item(s4)],
        "nothing fired without its delivery"
    );
}
on_both!(
    check_debounce_group_id_taken,
    store_debounce_group_id_taken_sqlite,
    store_debounce_group_id_taken_postgres
);

// ---------------------------------------------------------------------------------------
// History

fn attempt(delivery_id: i64, event_id: &str, n: u32, started_at_ms: i64) -> Attempt {
    Attempt {
        delivery_id,
        hook: "h".into(),
        event_id: event_id.into(),
        webhook_id: "msg".into(),
        attempt: n,
        started_at_ms,
        latency_ms: 12,
        status: if n == 5 { Some(200) } else { None },
        error: if n == 5 {
            None
        } else {
            Some(format!("try {n}"))
        },
        request_excerpt: "{\"req\":1}".into(),
        response_excerpt: "ok".into(),
    }
}

/// Two events and a delivery of each to hook `h`: their ids, then the deliveries' ids.
async fn two_deliveries(b: &Backend) -> ((String, String), (i64, i64)) {
    let (id1, s1) = append(&b.store, new_event("sonarr", "one")).await;
    let (id2, s2) = append(&b.store, new_event("sonarr", "two")).await;
    let created = b
        .store
        .create_deliveries(vec![delivery(s1, "h"), delivery(s2, "h")], vec![])
        .await
        .expect("create");
    ((id1, id2), (created[0].id, created[1].id))
}

async fn check_attempts(b: Backend) {
    let ((id1, _), (d1, d2)) = two_deliveries(&b).await;
    let t0 = 1_000_000;
    let all: Vec<Attempt> = (1..=5)
        .map(|n| attempt(d1, &id1, n, t0 + i64::from(n)))
        .collect();
    b.store.record_attempts(all.clone()).await.expect("record");
    b.store
        .record_attempts(vec![])
        .await
        .expect("recording nothing is fine");
    assert_eq!(
        b.store.attempts_for_event(&id1).await.expect("attempts"),
        all
    );
    assert!(b
        .store
        .attempts_for_event("nope")
        .await
        .expect("none")
        .is_empty());
    let explained = b
        .store
        .event_deliveries(&id1)
        .await
        .expect("explain")
        .expect("event");
    assert_eq!(explained.deliveries.len(), 1);
    assert_eq!(explained.deliveries[0].id, d1);
    assert_eq!(explained.attempts, all);
    assert!(b
        .store
        .event_deliveries("nope")
        .await
        .expect("explain")
        .is_none());

    // In batches of 2, oldest first. Older than t0+4: attempts 1 and 2, then 3.
    let rule = |older_than_ms, keep_max, batch| AttemptRetention {
        older_than_ms,
        keep_max,
        batch,
    };
    let pruned = |rows, more| PrunedAttempts { rows, more };
    let prune = |r| b.store.prune_attempts(r);
    assert_eq!(
        prune(rule(t0 + 4, 100, 2)).await.expect("prune"),
        pruned(2, true)
    );
    let left = b.store.attempts_for_event(&id1).await.expect("a");
    assert_eq!(left, all[2..].to_vec(), "the two oldest went first");
    assert_eq!(
        prune(rule(t0 + 4, 100, 2)).await.expect("prune"),
        pruned(1, false)
    );
    // Then keep only the newest one, one per batch.
    assert_eq!(prune(rule(0, 1, 1)).await.expect("prune"), pruned(1, true));
    assert_eq!(prune(rule(0, 1, 1)).await.expect("prune"), pruned(0, false));
    let left = b.store.attempts_for_event(&id1).await.expect("a");
    assert_eq!(left, vec![all[4].clone()]);

    // Finished deliveries age out; pending ones never do.
    b.store
        .update_deliveries(vec![DeliveryUpdate::Succeeded {
            id: d1,
            attempts: 5,
            status: 200,
        }])
        .await
        .expect("update");
    assert_eq!(
        prune(rule(now_ms() + 60_000, 100, 100))
            .await
            .expect("prune"),
        pruned(2, false),
        "the last attempt and the finished delivery"
    );
    let due = b
        .store
        .due_deliveries("h", now_ms() + 1, 10)
        .await
        .expect("due");
    assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![d2]);
    let counts = b.store.delivery_counts("h").await.expect("counts");
    assert_eq!((counts.pending, counts.succeeded), (1, 0));
}
on_both!(
    check_attempts,
    store_attempts_sqlite,
    store_attempts_postgres
);

/// `record_outcomes`: a target's attempts and the outcomes they led to, in one call (one
/// statement on PostgreSQL, one transaction on SQLite). The attempts are kept in order; of
/// two outcomes for one row the last wins; either list may be empty.
async fn check_outcomes(b: Backend) {
    let ((id1, id2), (d1, d2)) = two_deliveries(&b).await;
    let t0 = now_ms();
    let first = vec![attempt(d1, &id1, 1, t0), attempt(d2, &id2, 1, t0 + 1)];
    let retry = DeliveryUpdate::Retry {
        id: d1,
        attempts: 1,
        next_attempt_at_ms: t0 + 60_000,
        status: Some(503),
        error: Some("try 1".into()),
    };
    let failed = DeliveryUpdate::Failed {
        id: d2,
        attempts: 1,
        status: Some(410),
        error: Some("gone".into()),
    };
    b.store
        .record_outcomes(vec![retry, failed], first.clone())
        .await
        .expect("outcomes");
    let state = |deliveries: &EventDeliveries| {
        let d = &deliveries.deliveries[0];
        (d.state.clone(), d.attempts, d.last_status)
    };
    let one = b
        .store
        .event_deliveries(&id1)
        .await
        .expect("explain")
        .expect("one");
    assert_eq!(one.attempts, first[..1].to_vec());
    assert_eq!(state(&one), ("pending".into(), 1, Some(503)));
    let two = b
        .store
        .event_deliveries(&id2)
        .await
        .expect("explain")
        .expect("two");
    assert_eq!(two.attempts, first[1..].to_vec());
    assert_eq!(state(&two), ("failed".into(), 1, Some(410)));

    // Two outcomes for d1 in one call: the later one counts.
    let second = attempt(d1, &id1, 5, t0 + 2);
    let again = DeliveryUpdate::Retry {
        id: d1,
        attempts: 2,
        next_attempt_at_ms: t0 + 60_000,
        status: Some(500),
        error: None,
    };
    let done = DeliveryUpdate::Succeeded {
        id: d1,
        attempts: 2,
        status: 200,
    };
    b.store
        .record_outcomes(vec![again, done], vec![second.clone()])
        .await
        .expect("outcomes");
    let one = b
        .store
        .event_deliveries(&id1)
        .await
        .expect("explain")
        .expect("one");
    assert_eq!(one.attempts, vec![first[0].clone(), second]);
    assert_eq!(state(&one), ("succeeded".into(), 2, Some(200)));

    // Either list may be empty.
    let third = attempt(d2, &id2, 2, t0 + 3);
    b.store
        .record_outcomes(vec![], vec![third.clone()])
        .await
        .expect("attempts only");
    b.store
        .record_outcomes(vec![], vec![])
        .await
        .expect("nothing");
    let two = b
        .store
        .event_deliveries(&id2)
        .await
        .expect("explain")
        .expect("two");
    assert_eq!(two.attempts, vec![first[1].clone(), third]);
    assert_eq!(state(&two), ("failed".into(), 1, Some(410)));
}
on_both!(
    check_outcomes,
    store_outcomes_sqlite,
    store_outcomes_postgres
);

// ---------------------------------------------------------------------------------------
// Runtime state

async fn check_runtime_state(b: Backend) {
    let s = &b.store;
    assert_eq!(s.hook_overrides("h").await.expect("get"), None);
    let mut o = HookOverrides {
        hook: "h".into(),
        enabled: Some(false),
        disabled_reason: Some("410 Gone".into()),
        max_in_flight: Some(3),
        rate: Some(String::new()),
        burst: None,
    };
    s.save_hook_overrides(o.clone()).await.expect("save");
    assert_eq!(s.hook_overrides("h").await.expect("get"), Some(o.clone()));
    o.enabled = Some(true);
    o.max_in_flight = Some(9);
    s.save_hook_overrides(o.clone()).await.expect("save again");
    assert_eq!(s.hook_overrides("h").await.expect("get"), Some(o));

    assert!(s.runtime_hooks().await.expect("list").is_empty());
    s.save_runtime_hook("b".into(), Some("{\"url\":\"b\"}".into()))
        .await
        .expect("save b");
    s.save_runtime_hook("a".into(), Some("{\"url\":\"a\"}".into()))
        .await
        .expect("save a");
    s.save_runtime_hook("a".into(), Some("{\"url\":\"a2\"}".into()))
        .await
        .expect("replace a");
    assert_eq!(
        s.runtime_hooks().await.expect("list"),
        vec![
            ("a".to_owned(), "{\"url\":\"a2\"}".to_owned()),
            ("b".to_owned(), "{\"url\":\"b\"}".to_owned())
        ]
    );
    s.save_runtime_hook("a".into(), None)
        .await
        .expect("delete a");
    assert_eq!(s.runtime_hooks().await.expect("list").len(), 1);

    assert_eq!(s.poller_cursor("sonarr").await.expect("get"), None);
    s.save_poller_cursor("sonarr".into(), "{\"id\":1}".into())
        .await
        .expect("save");
    s.save_poller_cursor("sonarr".into(), "{\"id\":2}".into())
        .await
        .expect("save again");
    assert_eq!(
        s.poller_cursor("sonarr").await.expect("get").as_deref(),
        Some("{\"id\":2}")
    );

    assert_eq!(s.applied_card("plex:home", "42").await.expect("get"), None);
    let card = |sha: &str| AppliedCard {
        target: "plex:home".into(),
        rating_key: "42".into(),
        card_sha: sha.into(),
        item: "Show (2020) S01E05".into(),
    };
    s.record_card(card("aaa")).await.expect("record");
    s.record_card(card("bbb")).await.expect("record again");
    assert_eq!(
        s.applied_card("plex:home", "42")
            .await
            .expect("get")
            .as_deref(),
        Some("bbb")
    );
    assert_eq!(s.applied_card("plex:other", "42").await.expect("get"), None);
}
on_both!(
    check_runtime_state,
    store_runtime_state_sqlite,
    store_runtime_state_postgres
);

// ---------------------------------------------------------------------------------------
// Events list, file keys, rejections

async fn check_list_events(b: Backend) {
    let s = &b.store;
    let base = now_ms() - 10_000;
    let mut seqs = Vec::new();
    for (i, (source, kind)) in [
        ("sonarr", EventKind::Import),
        ("sonarr", EventKind::Grab),
        ("radarr", EventKind::Import),
        ("sonarr", EventKind::Import),
        ("radarr", EventKind::Grab),
    ]
    .into_iter()
    .enumerate()
    {
        let at = base + 1_000 * i64::try_from(i).expect("small");
        let (_, seq) = append(s, new_event_at(source, kind, &format!("ev{i}"), at)).await;
        seqs.push(seq);
    }
    let list = |f: EventFilter| async move {
        s.list_events(EventFilter { limit: 50, ..f })
            .await
            .expect("list events")
            .into_iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        list(EventFilter::default()).await,
        seqs.iter().rev().copied().collect::<Vec<_>>(),
        "newest first"
    );
    assert_eq!(
        list(EventFilter {
            source: Some("radarr".into()),
            ..EventFilter::default()
        })
        .await,
        vec![seqs[4], seqs[2]]
    );
    assert_eq!(
        list(EventFilter {
            kind: Some("grab".into()),
            ..EventFilter::default()
        })
        .await,
        vec![seqs[4], seqs[1]]
    );
    assert_eq!(
        list(EventFilter {
            since_ms: Some(base + 1_000),
            until_ms: Some(base + 3_000),
            ..EventFilter::default()
        })
        .await,
        vec![seqs[2], seqs[1]]
    );
    // Keyset pages of two.
    let page1 = s
        .list_events(EventFilter {
            limit: 2,
            ..EventFilter::default()
        })
        .await
        .expect("page 1");
    assert_eq!(
        page1.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![seqs[4], seqs[3]]
    );
    let page2 = s
        .list_events(EventFilter {
            limit: 2,
            before_seq: page1.last().map(|e| e.seq),
            ..EventFilter::default()
        })
        .await
        .expect("page 2");
    assert_eq!(
        page2.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![seqs[2], seqs[1]]
    );
    assert_eq!(page1[0].summary, "ev4 (2020) S01E02");
    assert_eq!(page1[0].source, "radarr");
    assert_eq!(page1[0].kind, "grab");
    assert_eq!(page1[0].received_at_ms, base + 4_000);

    // Delivery states: ev0 has a pending delivery at h; ev1 and ev3 are in a group that
    // succeeded at plex; ev2 failed at h.
    let created = s
        .create_deliveries(vec![delivery(seqs[0], "h"), delivery(seqs[2], "h")], vec![])
        .await
        .expect("create");
    s.update_deliveries(vec![DeliveryUpdate::Failed {
        id: created[1].id,
        attempts: 1,
        status: Some(400),
        error: None,
    }])
    .await
    .expect("fail");
    s.add_debounce_items(
        [seqs[1], seqs[3]]
            .iter()
            .map(|&seq| DebounceItem {
                target: "plex".into(),
                key: "k".into(),
                event_seq: seq,
                received_at_ms: 0,
                quiet_ms: 0,
                max_wait_ms: 0,
            })
            .collect(),
    )
    .await
    .expect("add");
    let group = fired_delivery(
        s.fire_group(FireGroup {
            target: "plex".into(),
            webhook_id: "g".into(),
            group: Group {
                key: "k".into(),
                seqs: vec![seqs[1], seqs[3]],
            },
        })
        .await
        .expect("fire"),
    )
    .expect("group");
    s.update_deliveries(vec![DeliveryUpdate::Succeeded {
        id: group.id,
        attempts: 1,
        status: 200,
    }])
    .await
    .expect("succeed");
    let by_state = |st: DeliveryState| {
        list(EventFilter {
            status: Some(st),
            ..EventFilter::default()
        })
    };
    assert_eq!(by_state(DeliveryState::Pending).await, vec![seqs[0]]);
    assert_eq!(by_state(DeliveryState::Failed).await, vec![seqs[2]]);
    assert_eq!(
        by_state(DeliveryState::Succeeded).await,
        vec![seqs[3], seqs[1]]
    );
    let all = s
        .list_events(EventFilter {
            limit: 10,
            ..EventFilter::default()
        })
        .await
        .expect("list");
    let counts = |seq: i64| {
        all.iter()
            .find(|e| e.seq == seq)
            .expect("listed")
            .deliveries
            .iter()
            .map(|c| {
                (
                    c.target.clone(),
                    c.counts.pending,
                    c.counts.succeeded,
                    c.counts.failed,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(seqs[0]), vec![("h".to_owned(), 1, 0, 0)]);
    assert_eq!(counts(seqs[2]), vec![("h".to_owned(), 0, 0, 1)]);
    assert_eq!(counts(seqs[3]), vec![("plex".to_owned(), 0, 1, 0)]);
    assert_eq!(counts(seqs[1]), vec![("plex".to_owned(), 0, 1, 0)]);
    assert!(counts(seqs[4]).is_empty());

    // What the reconciliation pollers dedup against: sonarr's imports since `base`.
    let keys = s.event_file_keys("sonarr", base).await.expect("file keys");
    let mut paths: Vec<String> = keys.iter().map(|k| k.path.clone()).collect();
    paths.sort();
    assert_eq!(
        paths,
        vec!["/tv/ev0.mkv".to_owned(), "/tv/ev3.mkv".to_owned()]
    );
    assert!(keys
        .iter()
        .all(|k| k.kind == EventKind::Import && !k.deleted));
    assert_eq!(
        s.event_file_keys("sonarr", base + 1_000)
            .await
            .expect("file keys")
            .len(),
        1
    );
}
on_both!(
    check_list_events,
    store_list_events_sqlite,
    store_list_events_postgres
);

async fn check_rejections_bound(b: Backend) {
    let rejection = |n: u16| Rejection {
        at_ms: 1_000 + i64::from(n),
        source: "sonarr".into(),
        status: 401,
        reason: format!("bad token {n}"),
    };
    b.store
        .record_rejections((0..3).map(rejection).collect())
        .await
        .expect("record");
    b.store
        .record_rejections((3..7).map(rejection).collect())
        .await
        .expect("record more");
    let kept = b.store.recent_rejections(100).await.expect("recent");
    let reasons: Vec<&str> = kept.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(
        reasons,
        vec![
            "bad token 6",
            "bad token 5",
            "bad token 4",
            "bad token 3",
            "bad token 2"
        ],
        "the newest rejections_max, newest first"
    );
    assert_eq!(kept[0].status, 401);
    assert_eq!(kept[0].at_ms, 1_006);
    assert_eq!(b.store.recent_rejections(2).await.expect("recent").len(), 2);
}
on_both!(
    check_rejections_bound,
    StoreConfig {
        rejections_max: 5,
        ..StoreConfig::default()
    },
    store_rejections_bound_sqlite,
    store_rejections_bound_postgres
);

// ---------------------------------------------------------------------------------------
// Lifecycle

fn is_closed<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Closed))
}

async fn check_close(b: Backend) {
    let s = &b.store;
    s.ping(Duration::from_secs(5))
        .await
        .expect("ping while open");
    let (_, seq) = append(s, new_event("sonarr", "before")).await;

    // Appends racing the close: each one either committed (and is readable) or was refused.
    let racing: Vec<_> = (0..50)
        .map(|i| {
            let store = Arc::clone(s);
            tokio::spawn(async move { store.append(new_event("sonarr", &format!("r{i}"))).await })
        })
        .collect();
    s.close().await.expect("close");
    let mut committed = 0;
    for t in racing {
        match t.await.expect("task") {
            Ok((a, _)) => {
                committed += 1;
                assert!(
                    s.get_event(&a.id)
                        .await
                        .expect("read after close")
                        .is_some(),
                    "an acknowledged append is stored"
                );
            }
            Err(e) => assert!(matches!(e, StoreError::Closed), "refused with Closed: {e}"),
        }
    }
    println!("{committed} of 50 racing appends committed before the close");

    assert!(is_closed(s.append(new_event("sonarr", "after")).await));
    assert!(is_closed(s.mark_routed(vec![seq]).await));
    assert!(is_closed(
        s.create_deliveries(vec![delivery(seq, "h")], vec![seq])
            .await
    ));
    assert!(is_closed(
        s.update_deliveries(vec![DeliveryUpdate::Succeeded {
            id: 1,
            attempts: 1,
            status: 200
        }])
        .await
    ));
    assert!(is_closed(
        s.record_attempts(vec![attempt(1, "x", 1, 0)]).await
    ));
    assert!(is_closed(
        s.record_rejections(vec![Rejection {
            at_ms: 0,
            source: "s".into(),
            status: 401,
            reason: "r".into()
        }])
        .await
    ));
    assert!(is_closed(
        s.save_poller_cursor("p".into(), "{}".into()).await
    ));
    assert!(is_closed(s.save_runtime_hook("h".into(), None).await));
    assert!(is_closed(
        s.requeue_deliveries("h", ReplayScope::Since(0)).await
    ));
    assert!(
        s.ping(Duration::from_secs(2)).await.is_err(),
        "ping fails once closed"
    );
    s.close().await.expect("closing twice is fine");
    assert_eq!(
        unrouted_seqs(s).await.first(),
        Some(&seq),
        "reads still work"
    );
}
on_both!(check_close, store_close_sqlite, store_close_postgres);

// ---------------------------------------------------------------------------------------
// The factory

#[tokio::test]
async fn store_open_refuses_an_unknown_url_without_echoing_its_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        url: Some("mysql://relayarr:hunter2@db/relayarr".into()),
        ..StoreConfig::default()
    };
    let err = store::open(&cfg, &dir.path().join("x.db"))
        .await
        .err()
        .expect("an unknown scheme is refused");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{msg}");
    assert!(msg.contains("postgres://"), "names the fix: {msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(!dir.path().join("x.db").exists(), "no SQLite file was made");
    assert!(
        !format!("{cfg:?}").contains("hunter2"),
        "Debug hides the password"
    );
}

#[tokio::test]
async fn store_open_fails_fast_when_postgres_is_unreachable() {
    // Port 1 on localhost: nothing listens, so the connection is refused at once.
    let cfg = StoreConfig {
        url: Some("postgres://relayarr:hunter2@127.0.0.1:1/relayarr".into()),
        ..StoreConfig::default()
    };
    let err = store::open(&cfg, Path::new("/nonexistent/unused.db"))
        .await
        .err()
        .expect("no server, no store");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{msg}");
    assert!(msg.contains("127.0.0.1:1"), "says where: {msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

// ---------------------------------------------------------------------------------------
// Event retention

fn rule(older_than_ms: i64, keep_max: u64, batch: usize) -> store::EventRetention {
    store::EventRetention {
        older_than_ms,
        keep_max,
        batch,
        after_seq: 0,
    }
}

/// Prunes in batches until a batch deletes fewer than asked, each batch starting after the
/// last one's `last_seq` (as the history recorder does); returns the total.
async fn prune_all(store: &Arc<dyn Store>, mut r: store::EventRetention) -> u64 {
    let mut total = 0;
    loop {
        let pruned = store.prune_events(r).await.expect("prune_events");
        let n = pruned.events;
        assert!(pruned.last_seq >= r.after_seq, "the cursor never goes back");
        r.after_seq = pruned.last_seq;
        total += n;
        assert!(
            n <= r.batch as u64,
            "a batch deletes at most {} events",
            r.batch
        );
        if n < r.batch as u64 {
            return total;
        }
    }
}

async fn exists(store: &Arc<dyn Store>, id: &str) -> bool {
    store.get_event(id).await.expect("get_event").is_some()
}

async fn check_event_retention_keeps_pending_work(b: Backend) {
    let s = &b.store;
    let old = now_ms() - 2 * 24 * 3600 * 1000;
    let ev = |body: &str, at: i64| new_event_at("sonarr", EventKind::Import, body, at);
    // Finished: delivered (with attempts), and given up.
    let (done_id, done) = append(s, ev("done", old)).await;
    let (failed_id, failed) = append(s, ev("failed", old)).await;
    // Busy: a pending delivery, unrouted, an unfired debounce item, a pending group.
    let (pending_id, pending) = append(s, ev("pending", old)).await;
    let (unrouted_id, _) = append(s, ev("unrouted", old)).await;
    let (waiting_id, waiting) = append(s, ev("waiting", old)).await;
    let (g1_id, g1) = append(s, ev("group-1", old)).await;
    let (g2_id, g2) = append(s, ev("group-2", old)).await;
    // Young and finished.
    let (young_id, young) = append(s, ev("young", now_ms())).await;

    let created = s
        .create_deliveries(
            vec![
                delivery(done, "h"),
                delivery(failed, "h"),
                delivery(pending, "h"),
                delivery(young, "h"),
            ],
            vec![done, failed, pending, young],
        )
        .await
        .expect("create deliveries");
    let id_of = |seq: i64| created.iter().find(|d| d.event_seq == seq).expect("row").id;
    s.update_deliveries(vec![
        DeliveryUpdate::Succeeded {
            id: id_of(done),
            attempts: 1,
            status: 200,
        },
        DeliveryUpdate::Failed {
            id: id_of(failed),
            attempts: 1,
            status: Some(400),
            error: None,
        },
        DeliveryUpdate::Retry {
            id: id_of(pending),
            attempts: 1,
            next_attempt_at_ms: now_ms() + 60_000,
            status: Some(503),
            error: None,
        },
        DeliveryUpdate::Succeeded {
            id: id_of(young),
            attempts: 1,
            status: 200,
        },
    ])
    .await
    .expect("outcomes");
    s.record_attempts(vec![
        attempt(id_of(done), &done_id, 1, old),
        attempt(id_of(failed), &failed_id, 1, old),
        attempt(id_of(pending), &pending_id, 1, old),
    ])
    .await
    .expect("attempts");
    let item = |seq: i64, key: &str| DebounceItem {
        target: "plex:home".into(),
        key: key.into(),
        event_seq: seq,
        received_at_ms: old,
        quiet_ms: 5_000,
        max_wait_ms: 60_000,
    };
    s.add_debounce_items(vec![
        item(waiting, "/tv/Waiting"),
        item(g1, "/tv/Group"),
        item(g2, "/tv/Group"),
    ])
    .await
    .expect("debounce items");
    // As the router does: an event with debounce items is routed once they are stored.
    s.mark_routed(vec![waiting, g1, g2]).await.expect("routed");
    let group = fired_delivery(
        s.fire_group(FireGroup {
            target: "plex:home".into(),
            webhook_id: "grp_retention".into(),
            group: Group {
                key: "/tv/Group".into(),
                seqs: vec![g1, g2],
            },
        })
        .await
        .expect("fire"),
    )
    .expect("the group's delivery");

    // By age, one event per batch: exactly the two finished old events go.
    let cutoff = now_ms() - 24 * 3600 * 1000;
    assert_eq!(prune_all(s, rule(cutoff, u64::MAX, 1)).await, 2);
    assert!(!exists(s, &done_id).await && !exists(s, &failed_id).await);
    for id in [
        &pending_id,
        &unrouted_id,
        &waiting_id,
        &g1_id,
        &g2_id,
        &young_id,
    ] {
        assert!(
            exists(s, id).await,
            "event {id} has pending work or is young"
        );
    }
    // Its deliveries and attempts went with it: nothing is left that names it.
    assert!(s
        .attempts_for_event(&done_id)
        .await
        .expect("attempts")
        .is_empty());
    assert!(s
        .attempts_for_event(&failed_id)
        .await
        .expect("attempts")
        .is_empty());
    assert_eq!(
        s.attempts_for_event(&pending_id)
            .await
            .expect("attempts")
            .len(),
        1
    );
    let counts = s.delivery_counts("h").await.expect("counts");
    assert_eq!((counts.pending, counts.succeeded, counts.failed), (1, 1, 0));
    assert_eq!(s.count_events().await.expect("count"), 6);

    // By count: beyond 2 events the oldest prunable go, and only the young one is.
    assert_eq!(prune_all(s, rule(0, 2, 10)).await, 1);
    assert!(!exists(s, &young_id).await);
    assert_eq!(
        s.count_events().await.expect("count"),
        5,
        "busy events stay over the cap"
    );
    assert_eq!(
        prune_all(s, rule(cutoff, 0, 10)).await,
        0,
        "nothing else is prunable"
    );

    // Once the work is done, the events go, group members and debounce items too.
    s.update_deliveries(vec![
        DeliveryUpdate::Succeeded {
            id: id_of(pending),
            attempts: 2,
            status: 200,
        },
        DeliveryUpdate::Succeeded {
            id: group.id,
            attempts: 1,
            status: 200,
        },
    ])
    .await
    .expect("finish");
    // A batch looks only after its cursor: from the last of the three, none of them goes.
    let after_all = store::EventRetention {
        after_seq: pending.max(g1).max(g2),
        ..rule(cutoff, 0, 10)
    };
    let pruned = s
        .prune_events(after_all)
        .await
        .expect("prune after the cursor");
    assert_eq!(
        pruned,
        store::PrunedBatch {
            events: 0,
            last_seq: after_all.after_seq,
            more: false,
        }
    );
    assert!(exists(s, &pending_id).await && exists(s, &g1_id).await && exists(s, &g2_id).await);
    assert_eq!(prune_all(s, rule(cutoff, u64::MAX, 2)).await, 3);
    for id in [&pending_id, &g1_id, &g2_id] {
        assert!(!exists(s, id).await, "event {id} is finished and old");
    }
    assert!(s
        .attempts_for_event(&pending_id)
        .await
        .expect("attempts")
        .is_empty());
    assert_eq!(
        s.delivery_counts("plex:home")
            .await
            .expect("counts")
            .succeeded,
        0
    );
    // Left: the unrouted event, and the one whose debounce item has not fired.
    assert_eq!(s.count_events().await.expect("count"), 2);
    assert!(exists(s, &unrouted_id).await && exists(s, &waiting_id).await);
    assert_eq!(
        s.pending_debounce_items().await.expect("items"),
        vec![item(waiting, "/tv/Waiting")]
    );
    // PostgreSQL gives no space back by itself; the call says so by freeing nothing.
    let c = s.compact(1024).await.expect("compact");
    if b.pg_url.is_some() {
        assert_eq!(c, store::Compacted::default());
    }
}
on_both!(
    check_event_retention_keeps_pending_work,
    store_event_retention_keeps_pending_work_sqlite,
    store_event_retention_keeps_pending_work_postgres
);

/// Bytes of the SQLite file and its WAL.
fn sqlite_bytes(db: &Path) -> u64 {
    let wal = db.with_file_name(format!(
        "{}-wal",
        db.file_name().expect("name").to_string_lossy()
    ));
    [db.to_path_buf(), wal]
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// A body that LZ4 cannot shrink much: hex of a hash chain, `len` bytes.
fn incompressible(seed: usize, len: usize) -> String {
    let mut out = String::with_capacity(len + 64);
    let mut h: [u8; 32] = Sha256::digest(seed.to_le_bytes()).into();
    while out.len() < len {
        out.push_str(&hex::encode(h));
        h = Sha256::digest(h).into();
    }
    out.truncate(len);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_sqlite_retention_gives_space_back() {
    const N: usize = 2_000;
    const BODY: usize = 4_096;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("relayarr.db");
    let s = store::open(&StoreConfig::default(), &db)
        .await
        .expect("open SQLite");
    let old = now_ms() - 2 * 24 * 3600 * 1000;
    let mut seqs = Vec::with_capacity(N);
    for i in 0..N {
        // A small normalised event, and a raw body of BODY bytes that LZ4 cannot shrink.
        let mut ev = new_event_at("sonarr", EventKind::Import, &format!("n{i}"), old);
        ev.raw = Bytes::from(incompressible(i, BODY));
        seqs.push(append(&s, ev).await.1);
    }
    let keep = 100u64;
    s.create_deliveries(Vec::new(), seqs).await.expect("routed");
    // The pass that leaves no free page truncates the WAL; the writer does that after
    // answering, and a ping is handled after it.
    while s.compact(2048).await.expect("compact").pages_left > 0 {}
    s.ping(Duration::from_secs(10)).await.expect("ping");
    let before = sqlite_bytes(&db);
    let db_before = std::fs::metadata(&db).expect("db").len();
    let pruned = prune_all(&s, rule(0, keep, 200)).await;
    assert_eq!(pruned, N as u64 - keep);
    let mut steps = 0;
    loop {
        let c = s.compact(2048).await.expect("compact");
        steps += 1;
        if c.pages_left == 0 {
            break;
        }
        assert!(c.pages_freed > 0, "every step frees pages: {c:?}");
        assert!(steps < 1_000, "compaction ends");
    }
    s.ping(Duration::from_secs(10)).await.expect("ping");
    let after = sqlite_bytes(&db);
    println!(
        "{N} events of {BODY} B bodies: {before} B on disk, {db_before} B of it the database \
         ({} B/event); after pruning to {keep}: {after} B ({steps} compaction steps)",
        db_before / N as u64
    );
    assert!(
        after * 5 < before,
        "the file shrinks with the events: {before} B before, {after} B after"
    );
    let _ = s.close().await;
}

/// `PRAGMA auto_vacuum` of a closed SQLite file (0 none, 1 full, 2 incremental).
fn auto_vacuum(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).expect("open the file");
    conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .expect("auto_vacuum")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_sqlite_enables_incremental_vacuum_on_an_older_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("relayarr.db");
    let s = store::open(&StoreConfig::default(), &db)
        .await
        .expect("open");
    let (id, _) = append(&s, new_event("sonarr", "kept across the rewrite")).await;
    s.close().await.expect("close");
    assert_eq!(auto_vacuum(&db), 2, "a new file is made incremental");
    // Make it what an older relayarr left: no auto-vacuum.
    {
        let conn = rusqlite::Connection::open(&db).expect("open the file");
        conn.execute_batch("PRAGMA auto_vacuum=NONE; VACUUM;")
            .expect("turn auto-vacuum off");
    }
    assert_eq!(auto_vacuum(&db), 0);
    let s = store::open(&StoreConfig::default(), &db)
        .await
        .expect("reopen");
    assert!(exists(&s, &id).await, "the rewrite keeps the data");
    s.close().await.expect("close");
    assert_eq!(auto_vacuum(&db), 2, "the start converted the older file");
}
