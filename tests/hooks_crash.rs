//! No delivery is lost to a crash: the real binary is SIGKILLed while two hooks are still
//! delivering 5,000 events, restarted on the same data dir, and both receivers end up with
//! every acknowledged event; redeliveries carry the original `webhook-id`.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::receiver::*;
use common::*;

const EVENTS: usize = 5_000;
const POSTERS: usize = 8;

/// Posts the events `indices` to `addr` from `POSTERS` tasks. Returns the ids acknowledged
/// (202, or 200 for a body the store already holds) and the indices that got no answer
/// (the process was killed under them).
async fn post_all(addr: SocketAddr, indices: Vec<usize>) -> (Vec<String>, Vec<usize>) {
    let client = reqwest::Client::new();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let unsent = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for part in indices.chunks(indices.len().div_ceil(POSTERS).max(1)) {
        let (client, acked, unsent, part) =
            (client.clone(), acked.clone(), unsent.clone(), part.to_vec());
        tasks.spawn(async move {
            for i in part {
                let resp = client
                    .post(format!("http://{addr}/api/v1/webhooks/sonarr"))
                    .basic_auth("sonarr", Some("Pa55w0rd!"))
                    .header("content-type", "application/json")
                    .body(sonarr_download("crash", i))
                    .send()
                    .await;
                let id = match resp {
                    Ok(r) if r.status() == 202 || r.status() == 200 => r
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_owned)),
                    _ => None,
                };
                match id {
                    Some(id) => acked.lock().expect("lock").push(id),
                    None => unsent.lock().expect("lock").push(i),
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("poster task");
    }
    let acked = acked.lock().expect("lock").clone();
    let unsent = unsent.lock().expect("lock").clone();
    (acked, unsent)
}

/// Distinct event ids a receiver has seen.
fn seen(rx: &Receiver) -> HashSet<String> {
    rx.event_ids().into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hooks_crash_sigkill_loses_no_delivery() {
    let started = Instant::now();
    let delay = Reply::status(200).delay(Duration::from_millis(2));
    let a = Receiver::start_with(delay.clone()).await;
    let b = Receiver::start_with(delay).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("relayarr.toml");
    let hooks = [
        hook_toml("a", &a.hook_url(), "max_in_flight = 8"),
        hook_toml("b", &b.hook_url(), "max_in_flight = 8"),
    ]
    .concat();
    std::fs::write(&config, test_config_text(dir.path(), &hooks)).expect("write config");
    let (mut child, addr) = spawn_binary(&config).await;

    // Post everything; kill the process once `a` has 1,000, with deliveries still going.
    let poster = tokio::spawn(post_all(addr, (0..EVENTS).collect()));
    a.wait_for(1_000, Duration::from_secs(60)).await;
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("wait");
    let (a_at_kill, b_at_kill) = (seen(&a).len(), seen(&b).len());
    let (mut acked, unsent) = poster.await.expect("poster");
    println!(
        "killed after {:?}: {} events acknowledged, {} unanswered; a had {a_at_kill}, b had \
         {b_at_kill} distinct events (acknowledged but not yet delivered: a {}, b {})",
        started.elapsed(),
        acked.len(),
        unsent.len(),
        acked.len().saturating_sub(a_at_kill),
        acked.len().saturating_sub(b_at_kill),
    );
    assert!(
        a_at_kill < EVENTS || b_at_kill < EVENTS,
        "the kill came after every delivery: the test proved nothing"
    );

    // Restart on the same data dir; send what got no answer (the store may already hold
    // some of it: those come back 200 with their first id).
    let (mut child, addr) = spawn_binary(&config).await;
    let (more, still_unsent) = post_all(addr, unsent).await;
    assert!(
        still_unsent.is_empty(),
        "{} events refused after the restart",
        still_unsent.len()
    );
    acked.extend(more);
    let acked: HashSet<String> = acked.into_iter().collect();
    assert_eq!(acked.len(), EVENTS, "every body is a distinct event");

    // Both receivers end up with every acknowledged event.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (sa, sb) = (seen(&a), seen(&b));
        if acked.is_subset(&sa) && acked.is_subset(&sb) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the restart a has {} and b has {} of {} acknowledged events",
            acked.intersection(&sa).count(),
            acked.intersection(&sb).count(),
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    for (name, rx) in [("a", &a), ("b", &b)] {
        let by_event = rx.by_event_id();
        let unknown: Vec<&String> = by_event.keys().filter(|id| !acked.contains(*id)).collect();
        assert!(
            unknown.is_empty(),
            "hook {name} got events never acknowledged: {unknown:?}"
        );
        let mut duplicates = 0;
        for (id, reqs) in &by_event {
            let ids: HashSet<&str> = reqs.iter().filter_map(|r| r.webhook_id()).collect();
            assert_eq!(
                ids.len(),
                1,
                "hook {name}, event {id}: redeliveries changed the webhook-id: {ids:?}"
            );
            duplicates += reqs.len() - 1;
        }
        println!(
            "hook {name}: {} requests for {} events, {duplicates} duplicates",
            rx.count(),
            by_event.len()
        );
    }
    // The two hooks are two different messages for the same event.
    let wa: HashMap<String, String> = a
        .requests()
        .iter()
        .filter_map(|r| Some((r.event_id.clone()?, r.webhook_id()?.to_owned())))
        .collect();
    for r in b.requests() {
        let (Some(id), Some(w)) = (r.event_id.as_ref(), r.webhook_id()) else {
            continue;
        };
        assert_ne!(
            wa.get(id).map(String::as_str),
            Some(w),
            "event {id}: same webhook-id for a and b"
        );
    }
    println!("total {:?}", started.elapsed());
    child.start_kill().expect("kill");
    child.wait().await.expect("wait");
}
