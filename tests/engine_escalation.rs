//! The cap holds when a hook worker's failures escalate (issue 6 §1, "The cap across a
//! restart").
//!
//! With `[supervision] max_restarts = 1`, a second panic of a hook worker makes the `hooks`
//! supervisor give up and fail; the root restarts it, with fresh children. The requests the
//! killed incarnations left running keep running. Proves, at the receiver: it never sees
//! more than `max_in_flight` requests at once across both restarts (the new workers count
//! the requests an earlier incarnation left running), every event arrives, and none is sent
//! twice (the engine records the outcomes of those requests, so their rows are not sent
//! again).

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::receiver::*;
use common::*;
use ractor::{ActorId, ActorRef};
use relayarr::actors::delivery::worker::WorkerMsg;
use relayarr::actors::supervisor::{ChildInfo, SupervisorMsg};

const EVENTS: usize = 30;
const CAP: usize = 2;

fn worker_id(name: &str) -> Option<ActorId> {
    ActorRef::<WorkerMsg>::where_is(name).map(|a| a.get_id())
}

fn supervisor_id(name: &str) -> Option<ActorId> {
    ActorRef::<SupervisorMsg>::where_is(name).map(|a| a.get_id())
}

async fn children(name: &str) -> Vec<ChildInfo> {
    ActorRef::<SupervisorMsg>::where_is(name)
        .unwrap_or_else(|| panic!("{name} is running"))
        .call(SupervisorMsg::Children, Some(Duration::from_secs(5)))
        .await
        .expect("call")
        .unwrap()
}

/// Panics the worker `name` while the receiver holds requests, and waits until a new
/// incarnation (a different actor) is registered. Returns how many requests were in flight.
async fn panic_worker(rx: &Receiver, name: &str) -> usize {
    eventually(Duration::from_secs(10), || async { rx.in_flight() == CAP }).await;
    let held = rx.in_flight();
    let old = worker_id(name).expect("hook worker running");
    ActorRef::<WorkerMsg>::where_is(name)
        .expect("hook worker running")
        .cast(WorkerMsg::InjectPanic)
        .expect("cast");
    eventually(Duration::from_secs(10), || async {
        worker_id(name).is_some_and(|id| id != old)
    })
    .await;
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_escalation_keeps_the_cap() {
    let rx = Receiver::start_with(Reply::status(200).delay(Duration::from_millis(400))).await;
    let extra = format!(
        "{}[supervision]\nmax_restarts = 1\nrestart_base = \"50ms\"\nrestart_window = \"60s\"\n",
        hook_toml("a", &rx.hook_url(), &format!("max_in_flight = {CAP}"))
    );
    let relay = start_relay(&extra).await;
    let worker = format!("{}hook:a", relay.namespace);
    let hooks = format!("{}hooks", relay.namespace);
    let root = format!("{}relayarr", relay.namespace);
    let ids: HashSet<String> = post_many(&relay, "escalation", 0..EVENTS)
        .await
        .into_iter()
        .collect();

    // First panic: `hooks` restarts its child (one restart allowed).
    let hooks_before = supervisor_id(&hooks).expect("hooks supervisor");
    let held_1 = panic_worker(&rx, &worker).await;
    assert_eq!(
        supervisor_id(&hooks),
        Some(hooks_before),
        "one panic is handled by `hooks` itself"
    );
    // Second panic within the window: `hooks` escalates, the root restarts it with fresh
    // children; the killed worker's requests are still running.
    let held_2 = panic_worker(&rx, &worker).await;
    eventually(Duration::from_secs(10), || async {
        supervisor_id(&hooks).is_some_and(|id| id != hooks_before)
    })
    .await;
    let root_children = children(&root).await;
    let h = root_children
        .iter()
        .find(|c| c.name == hooks)
        .expect("hooks under the root");
    assert_eq!(
        (h.restarts, h.running),
        (1, true),
        "`hooks` escalated once and was restarted: {root_children:?}"
    );

    eventually(Duration::from_secs(60), || async {
        rx.event_ids().into_iter().collect::<HashSet<_>>() == ids
    })
    .await;
    eventually(Duration::from_secs(10), || async {
        let v = hook_view(&relay, "a").await;
        v["deliveries"]["succeeded"] == EVENTS && v["deliveries"]["pending"] == 0
    })
    .await;
    rx.assert_stays_at(rx.count(), Duration::from_millis(1000))
        .await;

    let mut per_id: HashMap<String, usize> = HashMap::new();
    for w in rx.webhook_ids() {
        *per_id.entry(w).or_default() += 1;
    }
    let dups: Vec<(&String, &usize)> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "peak {} (cap {CAP}); {} requests for {EVENTS} events; in flight at the panics: \
         {held_1}, {held_2}; duplicates: {dups:?}",
        rx.peak(),
        rx.count()
    );
    // The cap held across both restarts and the escalation, as the receiver saw it.
    assert!(
        rx.peak() <= CAP,
        "peak in flight {} with max_in_flight = {CAP}",
        rx.peak()
    );
    // At most the requests left running could have been sent again...
    assert!(
        dups.len() <= held_1 + held_2,
        "{} deliveries sent twice, more than the {} in flight at the panics: {dups:?}",
        dups.len(),
        held_1 + held_2
    );
    // ...and the engine records their outcomes, so none is.
    assert!(
        dups.is_empty(),
        "requests left running by a killed incarnation were sent again: {dups:?}"
    );
    assert_eq!(
        rx.count(),
        EVENTS,
        "{} requests for {EVENTS} events",
        rx.count()
    );
    relay.stop().await;
}
