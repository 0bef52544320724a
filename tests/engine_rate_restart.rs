//! The rate holds across a restart of a hook worker (issue 6 §1: "The restart also admits a
//! full rate burst"). The governor limiter belongs to the target, not to the worker's
//! incarnation, so a panic in the middle of a backlog admits no second burst: at the
//! receiver, the n-th request never arrives before `burst + rate × t` allows.

mod common;

use std::time::Duration;

use common::receiver::*;
use common::*;
use ractor::ActorRef;
use relayarr::actors::delivery::worker::WorkerMsg;

const EVENTS: usize = 40;
const RATE_PER_S: f64 = 4.0;
const BURST: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_rate_and_burst_hold_across_a_worker_panic() {
    let rx = Receiver::start().await;
    let extra = format!(
        "{}[supervision]\nrestart_base = \"50ms\"\n",
        hook_toml(
            "paced",
            &rx.hook_url(),
            &format!("max_in_flight = 8\nrate = \"4/s\"\nburst = {BURST}")
        )
    );
    let relay = start_relay(&extra).await;
    post_many(&relay, "rate-restart", 0..EVENTS).await;

    // The burst goes out at once; then one request every 250 ms. Panic mid-backlog.
    rx.wait_for(BURST + 4, Duration::from_secs(10)).await;
    let name = format!("{}hook:paced", relay.namespace);
    let worker = ActorRef::<WorkerMsg>::where_is(name.clone()).expect("worker running");
    let old = worker.get_id();
    worker.cast(WorkerMsg::InjectPanic).expect("cast");
    eventually(Duration::from_secs(10), || {
        let name = name.clone();
        async move { ActorRef::<WorkerMsg>::where_is(name).is_some_and(|a| a.get_id() != old) }
    })
    .await;
    rx.wait_for(EVENTS, Duration::from_secs(30)).await;

    let reqs = rx.requests();
    let t0 = reqs[0].at;
    for (i, r) in reqs.iter().enumerate() {
        let t = r.at.duration_since(t0).as_secs_f64();
        // One request of slack for timer rounding; a second burst would be ~BURST over.
        let allowed = BURST as f64 + RATE_PER_S * t + 1.0;
        assert!(
            (i + 1) as f64 <= allowed,
            "request {} arrived at {t:.2} s: more than burst {BURST} + 4/s allows ({allowed:.1})",
            i + 1
        );
    }
    relay.stop().await;
}
