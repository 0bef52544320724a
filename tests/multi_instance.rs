//! Two relayarr processes on one PostgreSQL database, one of them SIGKILLed mid-run.
//!
//! 10,000 Sonarr imports are posted over both processes (several connections each); they
//! go to a slow hook (`max_in_flight = 4` for the target as a whole) and to a Plex server
//! (debounced by season folder, 50 folders). Once about a third is acknowledged, process A
//! is SIGKILLed and the rest is posted to B. Then:
//! - every acknowledged event reaches the hook, and is in exactly one fired Plex group,
//!   whose delivery succeeded; duplicates at the hook only for requests A had in flight;
//! - the receiver never sees more than 4 requests at once, across both processes;
//! - B takes over A's claimed deliveries and debounce keys within the lease (plus the
//!   heartbeat period and the worker's load tick);
//! - no debounce key fires twice: one partial scan per fired group of a folder.
//!
//! Needs a PostgreSQL server (`RELAYARR_TEST_POSTGRES`); skipped without one.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::backend::postgres_admin_url;
use common::fake_plex::FakePlex;
use common::receiver::{hook_toml, sonarr_download, Receiver, Reply};
use common::shared_store::{connect, create_database};
use common::*;
use futures_util::StreamExt;
use relayarr::actors::store::{now_ms, StoreConfig};
use serde_json::{json, Value};

const EVENTS: usize = 10_000;
const SHOWS: usize = 10;
const SEASONS: usize = 5;
const FOLDERS: usize = SHOWS * SEASONS;
/// SIGKILL A once this many events are acknowledged (35 %).
const KILL_AT: usize = EVENTS * 35 / 100;
/// Concurrent posting connections; even ones post to A until it dies, odd ones to B.
const POSTERS: usize = 8;

const HOOK: &str = "slow";
const HOOK_CAP: usize = 4;
const HOOK_DELAY: Duration = Duration::from_millis(5);
/// The header each process adds to its hook requests, so the receiver knows who sent one.
const SENDER: &str = "x-relay-instance";

const PLEX: &str = "plex:home";
const PLEX_TOKEN: &str = "plex-server-token-multi-4d2b";
const PLEX_CAP: usize = 2;

const LEASE: Duration = Duration::from_secs(3);
/// Claims lapse one lease after the dead instance's last heartbeat; the survivor's worker
/// looks for due rows every 0.5 s, its debouncer every 1 s, and the heartbeat runs every
/// lease/3.
const WORKER_TICK: Duration = Duration::from_millis(500);
const DEBOUNCER_TICK: Duration = Duration::from_secs(1);

fn show_of(i: usize) -> usize {
    i % SHOWS
}
fn season_of(i: usize) -> usize {
    (i / SHOWS) % SEASONS + 1
}
fn episode_of(i: usize) -> usize {
    i / FOLDERS + 1
}
fn show_title(s: usize) -> String {
    format!("Relay Show {s:02}")
}
fn show_folder(s: usize) -> String {
    format!("/tv/{} (2020)", show_title(s))
}
fn season_folder(i: usize) -> String {
    format!("{}/Season {:02}", show_folder(show_of(i)), season_of(i))
}
fn episode_name(i: usize) -> String {
    let (s, n, e) = (show_of(i), season_of(i), episode_of(i));
    format!(
        "{} (2020) - S{n:02}E{e:03} - Episode {e} [WEBDL-1080p]-NTb.mkv",
        show_title(s)
    )
}
fn episode_file(i: usize) -> String {
    format!("{}/{}", season_folder(i), episode_name(i))
}

/// A Sonarr v4 `Download` (On Import) of event `i`'s episode: 10 shows × 5 seasons, 200
/// episodes per season folder, interleaved so every folder gets a steady stream.
/// Derived from `tests/fixtures/corpus/sonarr/Download.json` (Sonarr/Sonarr@develop
/// `src/NzbDrone.Core/Notifications/Webhook/WebhookImportPayload.cs`, `WebhookEpisodeFile.cs`,
/// `WebhookBase.cs` BuildOnDownloadPayload): series, episode, file and downloadId changed.
fn download(template: &Value, i: usize) -> String {
    let (s, n, e) = (show_of(i), season_of(i), episode_of(i));
    let mut b = template.clone();
    let series = &mut b["series"];
    series["id"] = json!(100 + s);
    series["title"] = json!(show_title(s));
    series["titleSlug"] = json!(format!("relay-show-{s:02}"));
    series["path"] = json!(show_folder(s));
    series["tvdbId"] = json!(900_000 + s);
    series["year"] = json!(2020);
    if let Some(o) = series.as_object_mut() {
        for k in ["tvMazeId", "tmdbId", "imdbId"] {
            o.remove(k);
        }
    }
    let ep = &mut b["episodes"][0];
    ep["id"] = json!(1_000_000 + i);
    ep["seasonNumber"] = json!(n);
    ep["episodeNumber"] = json!(e);
    ep["title"] = json!(format!("Episode {e}"));
    ep["seriesId"] = json!(100 + s);
    let name = episode_name(i);
    let f = &mut b["episodeFile"];
    f["id"] = json!(2_000_000 + i);
    f["path"] = json!(episode_file(i));
    f["relativePath"] = json!(format!("Season {n:02}/{name}"));
    f["sourcePath"] = json!(format!("/downloads/complete/tv/multi-{i}/{name}"));
    b["downloadId"] = json!(format!("SABnzbd_nzo_multi_{i}"));
    b.to_string()
}

/// The config of one process: its own data dir, the shared database, the slow hook (marked
/// with `who`), the Plex server.
fn config(dir: &Path, db: &str, who: &str, hook_url: &str, plex_url: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = {data_dir:?}
admin_token = "{ADMIN_TOKEN}"

[store]
url = {db:?}
lease = "{lease}ms"

[supervision]
sweep_every = "5s"

[debounce]
quiet = "1s"
max_wait = "4s"

[[hook]]
name = "{HOOK}"
url = "{hook_url}"
max_in_flight = {HOOK_CAP}
retry_base = "100ms"
retry_cap = "1s"
headers = {{ "{SENDER}" = "{who}" }}

[[plex]]
name = "home"
url = "{plex_url}"
token = "{PLEX_TOKEN}"
max_in_flight = {PLEX_CAP}
ready_poll = "1s"
retry_base = "200ms"
retry_cap = "1s"
{SOURCES}
"#,
        data_dir = dir.display().to_string(),
        lease = LEASE.as_millis(),
    )
}

/// Where process `who`'s log is kept (overwritten by each run), for a failure to point at.
fn log_path(who: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("multi_instance-{who}.log"))
}

async fn spawn_in(dir: &Path, text: &str, who: &str) -> (tokio::process::Child, SocketAddr) {
    let path = dir.join("relayarr.toml");
    std::fs::write(&path, text).expect("write config");
    let log = log_path(who);
    let _ = std::fs::remove_file(&log);
    spawn_binary_logging(&path, Some(&log)).await
}

/// What the database says about an event that is not in exactly one Plex group: its
/// debounce items, whether it is unrouted, the group deliveries that list it, and every
/// Plex group delivery of its key (fired rows are pruned after a minute, so missing items
/// can mean pruned as well as never stored).
async fn explain_plex_groups(pg: &tokio_postgres::Client, id: &str, key: &str) -> String {
    let Some(seq) = pg
        .query_opt("SELECT seq FROM events WHERE id = $1", &[&id])
        .await
        .expect("event seq")
        .map(|r| r.get::<_, i64>(0))
    else {
        return format!("event {id}: not in the events table");
    };
    let items: Vec<(String, String, bool, i64)> = pg
        .query(
            "SELECT target, key, fired, received_at FROM debounce_items WHERE event_seq = $1 \
             ORDER BY target, key",
            &[&seq],
        )
        .await
        .expect("debounce items")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let unrouted = count(pg, "SELECT COUNT(*) FROM unrouted WHERE seq = $1", &[&seq]).await;
    let key_owner: Option<String> = pg
        .query_opt(
            "SELECT owner FROM debounce_keys WHERE target = $1 AND key = $2",
            &[&PLEX, &key],
        )
        .await
        .expect("debounce key")
        .map(|r| r.get(0));
    let listing: Vec<(i64, String, i64)> = pg
        .query(
            "SELECT id, group_key, event_seq FROM deliveries \
             WHERE group_seqs @> ARRAY[$1::bigint] ORDER BY id",
            &[&seq],
        )
        .await
        .expect("groups listing the event")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut out = format!(
        "event {id} (seq {seq}, key {key}): debounce_items (target, key, fired, received_at) {items:?}; \
         unrouted {}; key row owner {key_owner:?}; group deliveries listing its seq \
         (id, key, event_seq) {listing:?}; Plex groups of its key (id, webhook_id, event_seq, \
         state, claimed_by, created_at, group_seqs):",
        unrouted > 0
    );
    for r in pg
        .query(
            "SELECT id, webhook_id, event_seq, state, claimed_by, created_at, group_seqs \
             FROM deliveries WHERE hook = $1 AND group_key = $2 ORDER BY id",
            &[&PLEX, &key],
        )
        .await
        .expect("groups of the key")
    {
        let seqs: Vec<i64> = r.get(6);
        let around: Vec<i64> = seqs
            .iter()
            .copied()
            .filter(|s| (s - seq).abs() <= 200)
            .collect();
        out.push_str(&format!(
            "\n  {} {} first {} {} by {:?} at {} : {} seqs [{}..{}], near {seq}: {around:?}",
            r.get::<_, i64>(0),
            r.get::<_, String>(1),
            r.get::<_, i64>(2),
            r.get::<_, String>(3),
            r.get::<_, Option<String>>(4),
            r.get::<_, i64>(5),
            seqs.len(),
            seqs.first().copied().unwrap_or(0),
            seqs.last().copied().unwrap_or(0),
        ));
    }
    out
}

/// `(id, heartbeat_at)` of every registered instance.
async fn instances(pg: &tokio_postgres::Client) -> Vec<(String, i64)> {
    pg.query("SELECT id, heartbeat_at FROM instances ORDER BY id", &[])
        .await
        .expect("read instances")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn admin_json(addr: SocketAddr, path: &str) -> Value {
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin request");
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.expect("admin JSON")
}

async fn count(
    pg: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> i64 {
    pg.query_one(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// One acknowledged post.
#[derive(Clone, Debug)]
struct Ack {
    index: usize,
    id: String,
    /// `a` or `b`.
    by: &'static str,
    duplicate: bool,
}

#[derive(Default)]
struct Posting {
    next: AtomicUsize,
    a_dead: AtomicBool,
    acks: Mutex<Vec<Ack>>,
    /// Posts to A that failed because it was killed (re-posted to B).
    lost_to_kill: AtomicUsize,
}

/// Posts one body; `Err` when the process is gone (connection refused or reset).
async fn post(
    client: &reqwest::Client,
    addr: SocketAddr,
    body: &str,
) -> Result<(u16, Value), reqwest::Error> {
    let resp = client
        .post(format!("http://{addr}/api/v1/webhooks/sonarr"))
        .basic_auth("sonarr", Some("Pa55w0rd!"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await?;
    let status = resp.status().as_u16();
    let v = resp.json().await?;
    Ok((status, v))
}

/// Waits (up to 90 s) until every acknowledged event id has reached the hook.
async fn all_reach_the_hook(receiver: &Receiver, acked: &HashSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let seen: HashSet<String> = receiver.event_ids().into_iter().collect();
        let missing = acked.difference(&seen).count();
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged events never reached the hook ({} requests received)",
            receiver.count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn poster(
    n: usize,
    posting: Arc<Posting>,
    template: Arc<Value>,
    a: SocketAddr,
    b: SocketAddr,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    loop {
        let i = posting.next.fetch_add(1, Ordering::SeqCst);
        if i >= EVENTS {
            return;
        }
        let body = download(&template, i);
        let mut to_a = n.is_multiple_of(2) && !posting.a_dead.load(Ordering::SeqCst);
        let (status, v, by) = loop {
            let (addr, by) = if to_a { (a, "a") } else { (b, "b") };
            match post(&client, addr, &body).await {
                Ok((status, v)) => break (status, v, by),
                Err(e) if to_a => {
                    assert!(
                        posting.a_dead.load(Ordering::SeqCst),
                        "A failed a post while alive: {e}"
                    );
                    posting.lost_to_kill.fetch_add(1, Ordering::SeqCst);
                    to_a = false;
                }
                Err(e) => panic!("B failed to take event {i}: {e}"),
            }
        };
        assert!(
            status == 202 || status == 200,
            "event {i}: {by} answered {status}: {v}"
        );
        let id = v["id"].as_str().expect("event id").to_owned();
        posting.acks.lock().expect("acks").push(Ack {
            index: i,
            id,
            by,
            duplicate: status == 200,
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_database_survive_a_sigkill() {
    let Some(admin) = postgres_admin_url() else {
        eprintln!("skipped: RELAYARR_TEST_POSTGRES is not set (a PostgreSQL server URL)");
        return;
    };
    let started = Instant::now();

    let db = create_database(&admin).await;
    let pg = connect(&db).await;

    let receiver = Receiver::start_with(Reply::status(200).delay(HOOK_DELAY)).await;
    let fake = FakePlex::start(PLEX_TOKEN).await;
    fake.add_section("2", "show", "TV Shows", &["/tv"]);
    for s in 0..SHOWS {
        fake.add_show("2", &(500 + s).to_string(), &show_title(s), &show_folder(s));
    }
    for i in 0..EVENTS {
        let show = (500 + show_of(i)).to_string();
        let (n, e) = (season_of(i), episode_of(i));
        fake.add_file_on_disk(
            "2",
            Some(&show),
            &episode_file(i),
            Some(i32::try_from(n).expect("season")),
            Some(i32::try_from(e).expect("episode")),
            &format!("Episode {e}"),
        );
    }
    fake.set_latency(Duration::from_millis(5));

    // Each process has its own data dir; both name the same database.
    let dir_a = tempfile::tempdir().expect("tempdir");
    let dir_b = tempfile::tempdir().expect("tempdir");
    let (mut child_a, addr_a) = spawn_in(
        dir_a.path(),
        &config(dir_a.path(), &db, "a", &receiver.hook_url(), &fake.url()),
        "a",
    )
    .await;
    let id_a = match instances(&pg).await.as_slice() {
        [(id, _)] => id.clone(),
        other => panic!("one instance expected after starting A: {other:?}"),
    };
    let (mut child_b, addr_b) = spawn_in(
        dir_b.path(),
        &config(dir_b.path(), &db, "b", &receiver.hook_url(), &fake.url()),
        "b",
    )
    .await;
    assert_eq!(instances(&pg).await.len(), 2, "B registered");
    // Both have written a heartbeat since both are registered: each sees the other, so
    // each holds its share (2 of 4) before the first event.
    let both_in = now_ms();
    eventually(LEASE * 2, || async {
        let live = instances(&pg).await;
        live.len() == 2 && live.iter().all(|(_, beat)| *beat > both_in + 50)
    })
    .await;

    let template: Arc<Value> = Arc::new(
        serde_json::from_str(
            &std::fs::read_to_string(corpus().join("sonarr/Download.json")).expect("fixture"),
        )
        .expect("fixture JSON"),
    );
    let posting = Arc::new(Posting::default());
    let post_started = Instant::now();
    let mut posters = tokio::task::JoinSet::new();
    for n in 0..POSTERS {
        posters.spawn(poster(
            n,
            Arc::clone(&posting),
            Arc::clone(&template),
            addr_a,
            addr_b,
        ));
    }

    // About a third acknowledged: SIGKILL A.
    eventually(Duration::from_secs(120), || async {
        posting.acks.lock().expect("acks").len() >= KILL_AT
    })
    .await;
    posting.a_dead.store(true, Ordering::SeqCst);
    let (killed_at, killed_ms) = (Instant::now(), now_ms());
    child_a.start_kill().expect("SIGKILL A");
    child_a.wait().await.expect("wait for A");
    // Requests A wrote before it died may still be read by the receiver a little later.
    let dead_at = Instant::now() + Duration::from_millis(250);
    let acked_at_kill = posting.acks.lock().expect("acks").len();
    let seen_at_kill: HashSet<String> = receiver.event_ids().into_iter().collect();
    // What A held when it died (frozen: only A wrote its claims): (target, event id, group
    // key) of every pending row it had claimed.
    let a_claimed: Vec<(String, String, Option<String>)> = pg
        .query(
            "SELECT d.hook, e.id, d.group_key FROM deliveries d \
             JOIN events e ON e.seq = d.event_seq \
             WHERE d.state = 'pending' AND d.claimed_by = $1",
            &[&id_a],
        )
        .await
        .expect("A's claims")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let a_keys = count(
        &pg,
        "SELECT COUNT(*) FROM debounce_keys WHERE owner = $1",
        &[&id_a],
    )
    .await;
    let unrouted_at_kill = count(&pg, "SELECT COUNT(*) FROM unrouted", &[]).await;
    let a_last_beat = instances(&pg)
        .await
        .into_iter()
        .find(|(id, _)| *id == id_a)
        .map(|(_, beat)| beat)
        .expect("A's row outlives it for ten leases");
    let lapse_ms = a_last_beat + i64::try_from(LEASE.as_millis()).expect("ms");
    eprintln!(
        "killed A after {acked_at_kill} acks; A held {} hook and {} plex pending deliveries, {a_keys} debounce keys; {unrouted_at_kill} events unrouted; A's last heartbeat {} ms before the kill",
        a_claimed.iter().filter(|(h, ..)| h == HOOK).count(),
        a_claimed.iter().filter(|(h, ..)| h == PLEX).count(),
        killed_ms - a_last_beat
    );
    assert!(
        a_claimed.iter().any(|(h, ..)| h == HOOK),
        "A held no hook deliveries at the kill: nothing to take over, the test proves nothing"
    );

    // B takes A's claims over once A's lease lapsed: its claimed rows and debounce keys.
    let b_hook = admin_json(addr_b, &format!("/api/v1/admin/hooks/{HOOK}")).await;
    eprintln!(
        "B's hook worker at the kill: {} queued in its window, {} in flight",
        b_hook["stats"]["queued"], b_hook["stats"]["in_flight"]
    );
    let claims_sql = "SELECT COUNT(*) FROM deliveries WHERE state = 'pending' AND claimed_by = $1";
    let keys_sql = "SELECT COUNT(*) FROM debounce_keys WHERE owner = $1";
    let (mut first_claim_taken, mut claims_taken, mut keys_taken) = (None, None, None);
    let watch_until = killed_at + LEASE * 4 + Duration::from_secs(20);
    while claims_taken.is_none() || keys_taken.is_none() {
        let claims = count(&pg, claims_sql, &[&id_a]).await;
        let keys = count(&pg, keys_sql, &[&id_a]).await;
        let now = Instant::now();
        if usize::try_from(claims).expect("count") < a_claimed.len() {
            first_claim_taken.get_or_insert(now - killed_at);
        }
        if claims == 0 {
            claims_taken.get_or_insert(now - killed_at);
        }
        if keys == 0 {
            keys_taken.get_or_insert(now - killed_at);
        }
        assert!(
            now < watch_until,
            "{claims} deliveries and {keys} debounce keys still held by dead A {:?} after the kill",
            now - killed_at
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (first_claim_taken, claims_taken, keys_taken) = (
        first_claim_taken.expect("taken"),
        claims_taken.expect("taken"),
        keys_taken.expect("taken"),
    );
    // A's claims lapse at most a lease after the kill (its last heartbeat was before it);
    // the survivor claims rows at its next load (0.5 s) and keys at its debouncer's next
    // tick (1 s), or when it adds an item to the key. The heartbeat period is slack.
    let claim_bound = LEASE + LEASE / 3 + WORKER_TICK;
    let key_bound = LEASE + LEASE / 3 + DEBOUNCER_TICK;
    assert!(
        first_claim_taken <= claim_bound,
        "B claimed A's first row {first_claim_taken:?} after the kill (bound {claim_bound:?})"
    );
    assert!(
        keys_taken <= key_bound,
        "B took A's debounce keys {keys_taken:?} after the kill (bound {key_bound:?})"
    );

    while let Some(r) = posters.join_next().await {
        r.expect("poster");
    }
    let posted_in = post_started.elapsed();
    let acks = posting.acks.lock().expect("acks").clone();
    assert_eq!(
        acks.len(),
        EVENTS,
        "every event acknowledged by one process"
    );
    let acked: HashSet<String> = acks.iter().map(|a| a.id.clone()).collect();

    // Every acknowledged event reaches the hook.
    all_reach_the_hook(&receiver, &acked).await;
    let hook_done = started.elapsed();
    // …and every Plex group is fired and done, every event routed.
    eventually(Duration::from_secs(60), || async {
        count(
            &pg,
            "SELECT (SELECT COUNT(*) FROM deliveries WHERE state <> 'succeeded') \
             + (SELECT COUNT(*) FROM debounce_items WHERE NOT fired) \
             + (SELECT COUNT(*) FROM unrouted)",
            &[],
        )
        .await
            == 0
    })
    .await;
    // Nothing more happens: a late second fire or a redelivery would show within a quiet
    // period and a debouncer tick.
    let (requests, scans) = (receiver.count(), fake.scans().len());
    receiver
        .assert_stays_at(requests, Duration::from_secs(2) + DEBOUNCER_TICK)
        .await;
    assert_eq!(fake.scans().len(), scans, "scans after everything was done");

    // The cap held across both processes.
    let peak = receiver.peak();
    assert!(
        peak <= HOOK_CAP,
        "the receiver saw {peak} requests at once; the hook's cap is {HOOK_CAP} across both processes"
    );
    let plex_peak = fake.peak_in_flight();
    assert!(
        plex_peak <= PLEX_CAP,
        "Plex saw {plex_peak} requests at once; its cap is {PLEX_CAP} across both processes"
    );

    // Duplicates only for requests A had in flight (sent, outcome not stored) at the kill:
    // sent first by A, the row still pending and claimed by A at the kill, sent again by B.
    let by_id = receiver.by_event_id();
    let a_pending: HashSet<&str> = a_claimed
        .iter()
        .filter(|(h, ..)| h == HOOK)
        .map(|(_, id, _)| id.as_str())
        .collect();
    let mut duplicates = 0usize;
    for (id, reqs) in &by_id {
        if reqs.len() < 2 {
            continue;
        }
        duplicates += reqs.len() - 1;
        let first = &reqs[0];
        assert!(
            first.header(SENDER) == Some("a")
                && first.at < dead_at
                && a_pending.contains(id.as_str()),
            "event {id} delivered twice, but not first by A before the kill, or not pending with A at the kill: {:?}",
            reqs.iter()
                .map(|r| (r.header(SENDER), r.at.saturating_duration_since(killed_at)))
                .collect::<Vec<_>>()
        );
        assert!(
            reqs[1..]
                .iter()
                .all(|r| r.header(SENDER) == Some("b") && r.at > killed_at),
            "event {id} delivered again before the kill or by A: {:?}",
            reqs.iter()
                .map(|r| (r.header(SENDER), r.at.saturating_duration_since(killed_at)))
                .collect::<Vec<_>>()
        );
    }

    // Lease takeover: B's first delivery of a row A had claimed and not delivered.
    // (when it arrived, and the same on the wall clock, which the lease is reckoned in)
    let taken: Vec<(Instant, i64)> = a_claimed
        .iter()
        .filter(|(h, id, _)| h == HOOK && !seen_at_kill.contains(id))
        .map(|(_, id, _)| {
            let reqs = by_id
                .get(id)
                .unwrap_or_else(|| panic!("A's claimed {id} never delivered"));
            let r = reqs
                .iter()
                .find(|r| r.header(SENDER) == Some("b"))
                .unwrap_or_else(|| panic!("A's claimed {id} not delivered by B"));
            (r.at, r.wall_ms)
        })
        .collect();
    let first_taken = taken
        .iter()
        .map(|(at, _)| *at)
        .min()
        .expect("A had undelivered claimed rows");
    let first_taken_ms = taken
        .iter()
        .map(|(_, ms)| *ms)
        .min()
        .expect("A had undelivered claimed rows");
    let takeover = first_taken.duration_since(killed_at);
    let bound = claim_bound;
    // Checked at the end, so that one run reports every number.
    let mut late = Vec::new();
    if takeover > bound {
        late.push(format!(
            "B delivered the first row it took over from A {takeover:?} after the kill (lease {LEASE:?}, bound {bound:?}), though it claimed A's rows {first_claim_taken:?} after the kill"
        ));
    }
    if first_taken_ms < lapse_ms {
        // B sends a row early only if its own lease lapsed meanwhile (A took B's rows, and
        // B sent them from its window), which B's log would say.
        let log_b = std::fs::read_to_string(log_path("b")).unwrap_or_default();
        let lapses = log_b
            .lines()
            .filter(|l| l.contains("lease may have lapsed") || l.contains("no heartbeat within"))
            .count();
        panic!(
            "B delivered a row A had claimed {} ms before A's lease lapsed; B's log ({}) reports {lapses} lapses of its own lease",
            lapse_ms - first_taken_ms,
            log_path("b").display()
        );
    }

    // No debounce key fired twice. Every acknowledged event is in exactly one Plex group,
    // whose delivery succeeded (through the store, as the admin API explains an event)…
    let store = relayarr::actors::store::open(
        &StoreConfig {
            url: Some(db.clone()),
            lease: LEASE,
            ..StoreConfig::default()
        },
        &dir_a.path().join("unused.db"),
    )
    .await
    .expect("open the shared store");
    // Only reading: not a member (it would take a share of every cap).
    store.leave().await.expect("leave");
    let index_of: HashMap<&str, usize> = acks.iter().map(|a| (a.id.as_str(), a.index)).collect();
    let checks = futures_util::stream::iter(acked.iter().cloned())
        .map(|id| {
            let store = Arc::clone(&store);
            async move {
                let ed = store
                    .event_deliveries(&id)
                    .await
                    .expect("event deliveries")
                    .unwrap_or_else(|| panic!("event {id} not stored"));
                (id, ed)
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    store.close().await.expect("close");
    // Every failing event is reported, each with what the database says about it.
    let mut wrong = Vec::new();
    for (id, ed) in &checks {
        let hooks: Vec<_> = ed.deliveries.iter().filter(|d| d.target == HOOK).collect();
        assert!(
            hooks.len() == 1 && hooks[0].state == "succeeded",
            "event {id}: hook deliveries {hooks:?}"
        );
        let key = format!("folder:{}", season_folder(index_of[id.as_str()]));
        let plex: Vec<_> = ed.deliveries.iter().filter(|d| d.target == PLEX).collect();
        let right = plex.len() == 1
            && plex[0].state == "succeeded"
            && plex[0].group.as_ref().is_some_and(|g| g.key == key);
        if !right {
            wrong.push((id, key, format!("in {} Plex groups: {plex:?}", plex.len())));
        }
    }
    if !wrong.is_empty() {
        let mut report = format!(
            "{} acknowledged events not in exactly one succeeded Plex group of their folder \
             (logs: {} and {}):",
            wrong.len(),
            log_path("a").display(),
            log_path("b").display()
        );
        for (id, key, what) in wrong.iter().take(5) {
            report.push_str(&format!(
                "\n- {what}\n  {}",
                explain_plex_groups(&pg, id, key).await
            ));
        }
        panic!("{report}");
    }
    // …and so is every stored event, acknowledged or not (A committed some it never
    // answered; the survivor's sweep routed them).
    let stored = count(&pg, "SELECT COUNT(*) FROM events", &[]).await;
    let not_once: Vec<String> = pg
        .query(
            "SELECT e.id FROM events e WHERE (SELECT COUNT(*) FROM deliveries d, \
             UNNEST(d.group_seqs) s WHERE d.hook = $1 AND s = e.seq) <> 1 ORDER BY e.seq",
            &[&PLEX],
        )
        .await
        .expect("events not in one group")
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !not_once.is_empty() {
        let mut report = format!(
            "{} stored events not in exactly one Plex group (logs: {} and {}):",
            not_once.len(),
            log_path("a").display(),
            log_path("b").display()
        );
        for id in not_once.iter().take(5) {
            // An event A committed but never answered has no index here.
            let key = index_of
                .get(id.as_str())
                .map(|&i| format!("folder:{}", season_folder(i)))
                .unwrap_or_else(|| "(not acknowledged: key unknown)".into());
            report.push_str(&format!("\n- {}", explain_plex_groups(&pg, id, &key).await));
        }
        panic!("{report}");
    }
    // One partial scan per fired group of a folder. Fewer when queued groups of a folder
    // rode along with one scan (by design); one more for a group A was sending when it died
    // (at-least-once); never more otherwise.
    let groups: BTreeMap<String, i64> = pg
        .query(
            "SELECT group_key, COUNT(*) FROM deliveries WHERE hook = $1 GROUP BY group_key",
            &[&PLEX],
        )
        .await
        .expect("groups")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut scans_of: BTreeMap<String, i64> = BTreeMap::new();
    for (_, path) in fake.scans() {
        *scans_of.entry(format!("folder:{path}")).or_default() += 1;
    }
    assert_eq!(groups.len(), FOLDERS, "every folder had groups: {groups:?}");
    assert!(
        scans_of.keys().all(|k| groups.contains_key(k)),
        "scans of folders without a group: {scans_of:?}"
    );
    let mut twice = Vec::new();
    let mut rode = 0;
    for (key, &g) in &groups {
        let s = scans_of.get(key).copied().unwrap_or(0);
        let redo = a_claimed
            .iter()
            .filter(|(h, _, k)| h == PLEX && k.as_deref() == Some(key.as_str()))
            .count();
        if s > g + i64::try_from(redo).expect("count") || s == 0 {
            twice.push(format!(
                "{key}: {g} groups, {s} scans, {redo} held by A at the kill"
            ));
        }
        rode += (g - s).max(0);
    }
    assert!(
        twice.is_empty(),
        "folders scanned more often than their groups fired:\n{}",
        twice.join("\n")
    );
    let total_groups: i64 = groups.values().sum();
    let total_scans: i64 = scans_of.values().sum();

    let a_acks = acks.iter().filter(|a| a.by == "a").count();
    let dup_acks = acks.iter().filter(|a| a.duplicate).count();
    eprintln!(
        "events {EVENTS} (A acked {a_acks}, B {}; {} answered as duplicates; {} posts lost to the kill and re-posted to B) posted in {posted_in:?}\n\
         hook: {} requests for {} events, {duplicates} duplicates, peak {peak}/{HOOK_CAP}; Plex peak {plex_peak}/{PLEX_CAP}\n\
         takeover: first claimed row {takeover:?} after the kill (A's lease lapsed {} ms after it), B claimed A's first row after {first_claim_taken:?}, all {} after {claims_taken:?}, A's {a_keys} debounce keys after {keys_taken:?}\n\
         plex: {stored} events stored, {total_groups} groups fired, {total_scans} scans over {} folders ({rode} groups rode along with another scan)\n\
         all hook deliveries {hook_done:?} into the test; elapsed {:?}",
        EVENTS - a_acks,
        dup_acks,
        posting.lost_to_kill.load(Ordering::SeqCst),
        receiver.count(),
        by_id.len(),
        lapse_ms - killed_ms,
        a_claimed.len(),
        groups.len(),
        started.elapsed()
    );

    assert!(late.is_empty(), "{}", late.join("\n"));
    child_b.start_kill().expect("kill B");
    child_b.wait().await.expect("wait for B");
}

/// An instance that takes a key over by routing again an event whose item is stored already
/// (the holder died after adding it, before marking the event routed) fires that key: it
/// holds the key now, so nobody else will, and `adopt` only hands over keys held by others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debouncer_fires_a_key_it_took_over_by_adding_a_stored_item() {
    use relayarr::actors::debounce::actor::{DebouncerActor, DebouncerArgs, DebouncerMsg};
    use relayarr::actors::model::{EventKind, FileRef, NormalizedEvent, SourceKind};
    use relayarr::actors::store::{DebounceItem, NewEvent};

    let Some(admin) = postgres_admin_url() else {
        eprintln!("skipped: RELAYARR_TEST_POSTGRES is not set (a PostgreSQL server URL)");
        return;
    };
    let db = create_database(&admin).await;
    let pg = connect(&db).await;
    let open = || async {
        relayarr::actors::store::open(
            &StoreConfig {
                url: Some(db.clone()),
                lease: LEASE,
                ..StoreConfig::default()
            },
            Path::new("/nonexistent/unused.db"),
        )
        .await
        .expect("open the shared store")
    };
    let (a, b) = (open().await, open().await);

    // A stores an event and its debounce item (so A holds the key), then dies before
    // marking the event routed.
    let key = "folder:/tv/Taken Over/Season 01";
    let mut event =
        NormalizedEvent::new(SourceKind::Sonarr, "sonarr", EventKind::Import, "Download");
    event.files = vec![FileRef {
        path: "/tv/Taken Over/Season 01/e01.mkv".into(),
        ..FileRef::default()
    }];
    let (appended, seq) = a
        .append(NewEvent {
            normalized_json: serde_json::to_string(&event).expect("event JSON"),
            event: Arc::new(event),
            raw: "{}".into(),
            content_type: Some("application/json".into()),
            dedup_key: [7; 32],
            received_at_ms: now_ms(),
        })
        .await
        .expect("append");
    let seq = seq.expect("a new event");
    let item = DebounceItem {
        target: PLEX.into(),
        key: key.into(),
        event_seq: seq,
        received_at_ms: now_ms(),
        quiet_ms: 100,
        max_wait_ms: 1_000,
    };
    assert_eq!(
        a.add_debounce_items(vec![item.clone()])
            .await
            .expect("A adds"),
        vec![item.clone()]
    );

    // B's debouncer starts while A is alive: nothing of A's to take over.
    let (debouncer, handle) = ractor::Actor::spawn(
        None,
        DebouncerActor,
        DebouncerArgs {
            store: Arc::clone(&b),
            targets: relayarr::actors::system::TargetRegistry::new(Vec::new()),
            metrics: relayarr::actors::metrics::Metrics::new("test"),
        },
    )
    .await
    .expect("start B's debouncer");
    // Its first look for lapsed keys (a tick at start) is done; the next is a second away.
    debouncer
        .call(DebouncerMsg::Stats, None)
        .await
        .expect("stats");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A goes (its claims free at once); B's router routes the event again right away,
    // before B's debouncer looks for lapsed keys.
    a.leave().await.expect("A leaves");
    let added = debouncer
        .call(|r| DebouncerMsg::Add(vec![item.clone()], r), None)
        .await
        .expect("call")
        .success_or("no answer")
        .expect("answer")
        .expect("B adds");
    assert_eq!(added, 0, "the item was stored already");
    let owner: String = pg
        .query_one(
            "SELECT owner FROM debounce_keys WHERE target = $1 AND key = $2",
            &[&PLEX, &key],
        )
        .await
        .expect("key row")
        .get(0);
    assert_eq!(owner, b.instance_id(), "B took the key over by adding");

    // B fires it: the event ends up in one group delivery.
    eventually(Duration::from_secs(10), || async {
        count(
            &pg,
            "SELECT COUNT(*) FROM deliveries WHERE hook = $1 AND group_seqs @> ARRAY[$2::bigint]",
            &[&PLEX, &seq],
        )
        .await
            == 1
    })
    .await;
    assert_eq!(
        count(
            &pg,
            "SELECT COUNT(*) FROM debounce_items WHERE NOT fired",
            &[]
        )
        .await,
        0,
        "event {}: every item fired",
        appended.id
    );
    debouncer.stop(None);
    handle.await.expect("debouncer stopped");
    a.close().await.expect("close A");
    b.close().await.expect("close B");
}

/// One process, its heartbeat held up by a row lock (it fails nothing; it only waits), while
/// its window is full of deliveries to a slow hook. Once its last heartbeat is a lease old,
/// the other instances may take its rows: it must have stopped starting requests a margin
/// before then, and after its heartbeat lands again it must not send the rows taken over
/// meanwhile (its window was claimed under the lapsed lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_heartbeat_stalls_stops_sending_and_leaves_what_was_taken() {
    const N: usize = 600;
    const TAKER: &str = "00TAKER-TEST-INSTANCE";
    let Some(admin) = postgres_admin_url() else {
        eprintln!("skipped: RELAYARR_TEST_POSTGRES is not set (a PostgreSQL server URL)");
        return;
    };
    let db = create_database(&admin).await;
    let pg = connect(&db).await;
    let mut locker = connect(&db).await;
    // Cap 4 at 100 ms a request: ~40 requests/s, so 600 rows keep the hook busy for ~15 s,
    // well past the lapse (the posts plus at most a lease). At 50 ms and posted one by one,
    // a slow CI machine had sent every row before the lease lapsed.
    let receiver = Receiver::start_with(Reply::status(200).delay(Duration::from_millis(100))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {data_dir:?}\nadmin_token = \"{ADMIN_TOKEN}\"\n\n\
         [store]\nurl = {db:?}\nlease = \"{lease}ms\"\n{hook}\n{SOURCES}",
        data_dir = dir.path().display().to_string(),
        lease = LEASE.as_millis(),
        hook = hook_toml(HOOK, &receiver.hook_url(), "max_in_flight = 4"),
    );
    let (mut child, addr) = spawn_in(dir.path(), &text, "stall").await;
    let me = match instances(&pg).await.as_slice() {
        [(id, _)] => id.clone(),
        other => panic!("one instance expected: {other:?}"),
    };

    let client = reqwest::Client::new();
    let acked: HashSet<String> = futures_util::stream::iter(0..N)
        .map(|i| {
            let client = &client;
            async move {
                let (status, v) = post(client, addr, &sonarr_download("stall", i))
                    .await
                    .expect("post");
                assert_eq!(status, 202, "event {i}: {v}");
                v["id"].as_str().expect("event id").to_owned()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    receiver.wait_for(20, Duration::from_secs(30)).await;

    // Hold the heartbeat up: its upsert waits on this lock. `beat` is its last one committed.
    let lock = locker.transaction().await.expect("begin");
    let beat: i64 = lock
        .query_one(
            "SELECT heartbeat_at FROM instances WHERE id = $1 FOR UPDATE",
            &[&me],
        )
        .await
        .expect("lock the instance's row")
        .get(0);
    let lease_ms = i64::try_from(LEASE.as_millis()).expect("ms");
    let lapsed_at = beat + lease_ms;
    while now_ms() < lapsed_at + 200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pending = count(
        &pg,
        "SELECT COUNT(*) FROM deliveries WHERE state = 'pending' AND claimed_by = $1",
        &[&me],
    )
    .await;
    assert!(
        pending > 0,
        "nothing was left to send when the lease lapsed: the test proves nothing"
    );
    let late: Vec<i64> = receiver
        .requests()
        .iter()
        .map(|r| r.wall_ms - lapsed_at)
        .filter(|after| *after >= 0)
        .collect();
    assert!(
        late.is_empty(),
        "{} requests arrived after the instance's lease lapsed (its last heartbeat + {LEASE:?}), up to {} ms after it, with {pending} deliveries pending",
        late.len(),
        late.iter().max().copied().unwrap_or_default()
    );

    // Another instance takes every pending row over, and holds it for a lease.
    let taken_at = now_ms();
    pg.execute(
        "INSERT INTO instances (id, started_at, heartbeat_at) VALUES ($1, $2, $2)",
        &[&TAKER, &taken_at],
    )
    .await
    .expect("the taker registers");
    let taken: HashSet<String> = pg
        .query(
            "UPDATE deliveries d SET claimed_by = $1 FROM events e \
             WHERE e.seq = d.event_seq AND d.state = 'pending' AND d.claimed_by = $2 \
             RETURNING e.id",
            &[&TAKER, &me],
        )
        .await
        .expect("take the rows over")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!taken.is_empty(), "nothing taken over");
    let taken_from = Instant::now();
    // The heartbeat lands again.
    lock.commit().await.expect("release the lock");

    // Once the taker's lease lapses, the instance takes the rows back: everything arrives.
    all_reach_the_hook(&receiver, &acked).await;
    // While the taker held them, none of its rows was sent.
    let taker_lapsed_at = taken_at + lease_ms;
    let early: Vec<i64> = receiver
        .requests()
        .iter()
        .filter(|r| r.at > taken_from)
        .filter(|r| r.event_id.as_ref().is_some_and(|id| taken.contains(id)))
        .map(|r| taker_lapsed_at - r.wall_ms)
        .filter(|before| *before > 0)
        .collect();
    assert!(
        early.is_empty(),
        "{} of the {} rows taken over were sent while the other instance held them, up to {} ms before its lease lapsed",
        early.len(),
        taken.len(),
        early.iter().max().copied().unwrap_or_default()
    );
    let log = std::fs::read_to_string(log_path("stall")).unwrap_or_default();
    assert!(
        log.contains("lease may have lapsed"),
        "the instance did not say it stopped: see {}",
        log_path("stall").display()
    );
    child.start_kill().expect("stop");
    let _ = child.wait().await;
}
