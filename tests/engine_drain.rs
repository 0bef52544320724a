//! The drain on a graceful stop, with a backlog on three hooks (issue 6 §1, "The drain").
//!
//! Proves, at the receivers: once the stop begins, no new request reaches any receiver;
//! every request that was in flight when it began is answered in full (the relay waits for
//! the response instead of hanging up); the three hooks drain in parallel, within one
//! `shutdown_grace`, not one after another; and after a restart on the same data dir the
//! rest of the backlog is delivered with no `webhook-id` sent twice (the drained requests'
//! outcomes were recorded).
//!
//! The behaviour this replaces: `post_stop` → `done()` → `pump()` started new requests while
//! "draining", and the hooks drained one after another with 5 s each inside one 10 s stop
//! timeout, so a third busy hook was killed undrained and its requests were sent again.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Router;
use common::receiver::{hook_toml, hook_view, post_many};
use common::*;
use relayarr::actors::hooks::signing::webhook_id;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// One request as a [`TimedReceiver`] saw it.
#[derive(Clone, Debug)]
struct Timed {
    webhook_id: String,
    arrived: Instant,
    /// When the handler handed its response back; `None` while running, or if the client
    /// hung up first (the handler was dropped).
    answered: Option<Instant>,
    /// The client hung up before the answer.
    abandoned: bool,
}

#[derive(Default)]
struct TimedShared {
    delay_ms: AtomicU64,
    requests: Mutex<Vec<Timed>>,
}

/// A receiver that records when each request arrived and when its answer was complete,
/// which the common receiver does not (it only counts requests in flight).
struct TimedReceiver {
    addr: SocketAddr,
    shared: Arc<TimedShared>,
    _stop: oneshot::Sender<()>,
}

/// Marks a request abandoned if its handler is dropped before it answers.
struct Answer {
    shared: Arc<TimedShared>,
    index: usize,
    done: bool,
}

impl Drop for Answer {
    fn drop(&mut self) {
        let mut reqs = self
            .shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if self.done {
            reqs[self.index].answered = Some(Instant::now());
        } else {
            reqs[self.index].abandoned = true;
        }
    }
}

async fn timed_handle(State(shared): State<Arc<TimedShared>>, headers: HeaderMap) -> &'static str {
    let index = {
        let mut reqs = shared.requests.lock().unwrap_or_else(|e| e.into_inner());
        reqs.push(Timed {
            webhook_id: headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            arrived: Instant::now(),
            answered: None,
            abandoned: false,
        });
        reqs.len() - 1
    };
    let mut answer = Answer {
        shared: Arc::clone(&shared),
        index,
        done: false,
    };
    let delay = Duration::from_millis(shared.delay_ms.load(Ordering::SeqCst));
    tokio::time::sleep(delay).await;
    answer.done = true;
    drop(answer);
    "ok"
}

impl TimedReceiver {
    async fn start(delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(TimedShared::default());
        shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
        let app = Router::new()
            .fallback(timed_handle)
            .with_state(Arc::clone(&shared));
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        TimedReceiver {
            addr,
            shared,
            _stop: tx,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    fn requests(&self) -> Vec<Timed> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Requests that arrived and are neither answered nor abandoned.
    fn running(&self) -> Vec<Timed> {
        self.requests()
            .into_iter()
            .filter(|r| r.answered.is_none() && !r.abandoned)
            .collect()
    }
}

const HOOKS: [&str; 3] = ["drain-a", "drain-b", "drain-c"];
const EVENTS: usize = 20;
const DELAY: Duration = Duration::from_millis(1500);
const GRACE: Duration = Duration::from_secs(4);

fn config(rx: &[TimedReceiver]) -> String {
    let mut extra = format!("shutdown_grace = \"{}s\"\n", GRACE.as_secs());
    for (name, r) in HOOKS.iter().zip(rx) {
        extra.push_str(&hook_toml(
            name,
            &r.url(),
            "max_in_flight = 2\ntimeout = \"10s\"",
        ));
    }
    extra
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_drain_three_busy_hooks_in_parallel() {
    let rx = [
        TimedReceiver::start(DELAY).await,
        TimedReceiver::start(DELAY).await,
        TimedReceiver::start(DELAY).await,
    ];
    let extra = config(&rx);
    let relay = start_relay(&extra).await;
    // Every hook matches every event: 20 deliveries each, two at a time, 1.5 s per request,
    // so each hook has a backlog of about 15 s.
    let ids = post_many(&relay, "drain", 0..EVENTS).await;
    assert_eq!(ids.len(), EVENTS);

    // Stop in the middle of a round, after the first round was answered: every hook has its
    // two requests running, the newest started at least 300 ms ago (so nothing started just
    // before the stop can arrive just after it), and the oldest has at least 500 ms to go (so
    // none finishes, freeing a slot, between the stop signal and the drain).
    eventually(Duration::from_secs(20), || async {
        let now = Instant::now();
        rx.iter().all(|r| {
            let running = r.running();
            let answered = r.requests().iter().filter(|t| t.answered.is_some()).count();
            answered >= 2
                && running.len() == 2
                && running.iter().all(|t| {
                    let age = now - t.arrived;
                    age >= Duration::from_millis(300) && age <= DELAY - Duration::from_millis(500)
                })
        })
    })
    .await;
    let stop_at = Instant::now();
    let in_flight: Vec<Vec<Timed>> = rx.iter().map(TimedReceiver::running).collect();
    let answered_before: Vec<usize> = rx
        .iter()
        .map(|r| r.requests().iter().filter(|t| t.answered.is_some()).count())
        .collect();
    let dir = relay.stop().await;
    let stop_took = stop_at.elapsed();

    let mut drains = Vec::new();
    for ((name, r), running) in HOOKS.iter().zip(&rx).zip(&in_flight) {
        let reqs = r.requests();
        // Nothing new after the stop began.
        let late: Vec<&Timed> = reqs.iter().filter(|t| t.arrived > stop_at).collect();
        assert!(
            late.is_empty(),
            "{name}: {} request(s) reached the receiver after the stop began: {late:?}",
            late.len()
        );
        // Everything in flight at the stop was answered in full, not cut off.
        assert_eq!(running.len(), 2, "{name}: in flight at the stop");
        let mut last = Duration::ZERO;
        for t in running {
            let now = reqs
                .iter()
                .find(|x| x.webhook_id == t.webhook_id && x.arrived == t.arrived)
                .expect("still recorded");
            assert!(
                !now.abandoned,
                "{name}: request {} was cut off by the stop",
                t.webhook_id
            );
            let answered = now.answered.unwrap_or_else(|| {
                panic!(
                    "{name}: request {} in flight at the stop was never answered",
                    t.webhook_id
                )
            });
            last = last.max(answered - stop_at);
        }
        drains.push(last);
    }
    let longest = drains.iter().copied().max().unwrap_or_default();
    let serial: Duration = drains.iter().sum();
    eprintln!(
        "stop took {stop_took:?}; per-hook drain (last answer after the stop): {drains:?}; \
         serial would be at least {serial:?}"
    );
    // In parallel: the stop takes about as long as the slowest hook's drain, not the sum,
    // and stays inside one grace period.
    assert!(
        stop_took < longest + Duration::from_millis(800),
        "stop took {stop_took:?}, the slowest hook drained in {longest:?}: not in parallel"
    );
    assert!(
        stop_took < serial && stop_took < GRACE,
        "stop took {stop_took:?} (serial: {serial:?}, grace {GRACE:?})"
    );

    // The drained requests' outcomes are stored: succeeded, one attempt each. A request
    // names its delivery by webhook-id; the event it carries is found from the posted ids.
    {
        let store = open_store(dir.path()).await;
        for (name, running) in HOOKS.iter().zip(&in_flight) {
            for t in running {
                let event_id = ids
                    .iter()
                    .find(|id| webhook_id(id, name) == t.webhook_id)
                    .unwrap_or_else(|| panic!("{name}: no posted event has {}", t.webhook_id));
                let d = delivery_of(&store, event_id, name)
                    .await
                    .expect("delivery row");
                assert_eq!(
                    (d.state.as_str(), d.attempts),
                    ("succeeded", 1),
                    "{name}: drained delivery {}",
                    t.webhook_id
                );
            }
        }
        store.close().await.expect("close");
    }

    // Restart on the same data dir: the rest of the backlog goes out, nothing twice.
    for r in &rx {
        r.set_delay(Duration::ZERO);
    }
    let relay = start_relay_in(dir, &extra).await;
    eventually(Duration::from_secs(30), || async {
        rx.iter().all(|r| {
            r.requests()
                .iter()
                .map(|t| t.webhook_id.clone())
                .collect::<HashSet<_>>()
                .len()
                == EVENTS
        })
    })
    .await;
    // Let any duplicate surface.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for ((name, r), before) in HOOKS.iter().zip(&rx).zip(&answered_before) {
        let reqs = r.requests();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for t in &reqs {
            *seen.entry(t.webhook_id.as_str()).or_default() += 1;
        }
        let dups: Vec<(&str, usize)> = seen.into_iter().filter(|(_, n)| *n > 1).collect();
        assert!(
            dups.is_empty(),
            "{name}: webhook-ids sent more than once: {dups:?}"
        );
        assert_eq!(
            reqs.len(),
            EVENTS,
            "{name}: {} requests for {EVENTS} events",
            reqs.len()
        );
        eprintln!(
            "{name}: {before} answered before the stop, 2 drained, {} after the restart",
            EVENTS - before - 2
        );
        let v = hook_view(&relay, name).await;
        assert_eq!(v["deliveries"]["succeeded"], EVENTS, "{v:#}");
        assert_eq!(v["deliveries"]["pending"], 0, "{v:#}");
    }
    relay.stop().await;
}
