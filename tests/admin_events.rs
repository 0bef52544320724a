//! The admin events API (issue 7 §1): the events list (filters, keyset pages), the
//! "explain this event" view (deliveries, debounced groups, attempts with excerpts), replay
//! jobs polled to done, and the error contract (401, 404, 422 naming the field, a `code`
//! on every error).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::receiver::*;
use common::*;
use serde_json::{json, Value};

/// A `sonarr-open` Sonarr `Test` event (kind `test`); `n` keeps the bodies apart.
fn sonarr_test(n: usize) -> String {
    format!(r#"{{"eventType":"Test","instanceName":"Sonarr {n}"}}"#)
}

async fn post_open(client: &reqwest::Client, relay: &TestRelay, body: String) -> String {
    let resp = client
        .post(relay.url("/api/v1/webhooks/sonarr-open"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 202);
    let v: Value = resp.json().await.expect("json");
    v["id"].as_str().expect("id").to_owned()
}

async fn get_json(relay: &TestRelay, path: &str) -> (u16, Value) {
    let resp = relay.admin_get(path).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON body"))
}

async fn events(relay: &TestRelay, query: &str) -> Value {
    let (status, v) = get_json(relay, &format!("/api/v1/admin/events?{query}")).await;
    assert_eq!(status, 200, "{query}: {v:#}");
    v
}

fn ids(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect()
}

/// A relay with a hook `good` (200) for the `sonarr` source and a hook `bad` (answers 400:
/// fails at once) for `sonarr-open`; 7 Sonarr imports and 3 `sonarr-open` events (one
/// import, two tests), posted one by one, all delivered. Returns the ids in post order.
async fn seeded() -> (TestRelay, Receiver, Receiver, Vec<String>, Vec<String>) {
    let (extra, good, bad) = good_and_bad_hooks().await;
    let relay = start_relay(&extra).await;
    let client = reqwest::Client::new();
    let mut sonarr = Vec::new();
    for i in 1..=7 {
        sonarr.push(post_new(&client, &relay, sonarr_download("evt", i)).await);
    }
    let open = vec![
        post_open(&client, &relay, sonarr_download("open", 1)).await,
        post_open(&client, &relay, sonarr_test(1)).await,
        post_open(&client, &relay, sonarr_test(2)).await,
    ];
    good.wait_for(7, Duration::from_secs(10)).await;
    bad.wait_for(3, Duration::from_secs(10)).await;
    eventually(Duration::from_secs(10), || async {
        hook_view(&relay, "good").await["deliveries"]["succeeded"] == 7
            && hook_view(&relay, "bad").await["deliveries"]["failed"] == 3
    })
    .await;
    (relay, good, bad, sonarr, open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_events_filter_by_source_kind_time_and_status() {
    let (relay, _good, _bad, sonarr, open) = seeded().await;

    let v = events(&relay, "source=sonarr").await;
    let mut want: Vec<String> = sonarr.clone();
    want.reverse();
    assert_eq!(ids(&v), want, "newest first: {v:#}");
    let first = &v["events"][0];
    assert_eq!(first["source"], "sonarr");
    assert_eq!(first["kind"], "import");
    assert_eq!(first["event_type"], "Download");
    assert_eq!(first["summary"], "Hook evt 7 S01E07", "{first:#}");
    assert!(first["received_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        first["deliveries"],
        json!([{"target": "good", "pending": 0, "succeeded": 1, "failed": 0}])
    );
    assert!(first.get("seq").is_none(), "the cursor stays opaque");
    assert_eq!(v["next_cursor"], Value::Null);

    let v = events(&relay, "kind=test").await;
    assert_eq!(ids(&v), [open[2].clone(), open[1].clone()]);
    let v = events(&relay, "source=sonarr-open&kind=import").await;
    assert_eq!(ids(&v), [open[0].clone()]);

    let v = events(&relay, "status=failed").await;
    let mut want = open.clone();
    want.reverse();
    assert_eq!(ids(&v), want, "failed deliveries are the bad hook's");
    assert_eq!(
        v["events"][0]["deliveries"],
        json!([{"target": "bad", "pending": 0, "succeeded": 0, "failed": 1}])
    );
    assert_eq!(ids(&events(&relay, "status=succeeded").await).len(), 7);
    assert!(ids(&events(&relay, "status=pending").await).is_empty());

    assert_eq!(ids(&events(&relay, "since=1h").await).len(), 10);
    assert!(ids(&events(&relay, "until=2000-01-01T00:00:00Z").await).is_empty());
    assert!(ids(&events(&relay, "since=2099-01-01T00:00:00Z").await).is_empty());
    assert_eq!(
        ids(&events(
            &relay,
            "since=2000-01-01T00:00:00Z&until=2099-01-01T00:00:00Z"
        )
        .await)
        .len(),
        10
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_events_pages_have_no_duplicates_or_gaps() {
    let (relay, _good, _bad, sonarr, open) = seeded().await;
    let mut all: Vec<String> = sonarr.into_iter().chain(open).collect();
    all.reverse();

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut query = "limit=3".to_owned();
    loop {
        let v = events(&relay, &query).await;
        sizes.push(ids(&v).len());
        seen.extend(ids(&v));
        match v["next_cursor"].as_str() {
            Some(c) => query = format!("limit=3&cursor={c}"),
            None => break,
        }
        // An event arriving between pages goes to the top, not into the next page.
        if sizes.len() == 1 {
            let client = reqwest::Client::new();
            post_new(&client, &relay, sonarr_download("late", 1)).await;
        }
    }
    assert_eq!(sizes, [3, 3, 3, 1]);
    assert_eq!(seen, all, "every event once, newest first");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 10);

    // An exact multiple of the page size ends without an empty extra page.
    let v = events(&relay, "source=sonarr-open&limit=3").await;
    assert_eq!(ids(&v).len(), 3);
    assert_eq!(v["next_cursor"], Value::Null, "{v:#}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_explain_shows_deliveries_and_attempts_of_a_failed_delivery() {
    let (relay, _good, _bad, sonarr, open) = seeded().await;
    let id = &open[0];
    let v = eventually_json(&relay, &format!("/api/v1/admin/events/{id}/explain"), |v| {
        v["attempts"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    assert_eq!(v["event"]["id"], id.as_str());
    assert_eq!(v["event"]["source"], "sonarr-open");
    assert_eq!(v["event"]["summary"], "Hook open 1 S01E01");
    assert_eq!(v["event"]["normalized"]["media"]["title"], "Hook open 1");
    let d = &v["deliveries"];
    assert_eq!(d.as_array().map(Vec::len), Some(1), "{v:#}");
    assert_eq!(d[0]["target"], "bad");
    assert_eq!(d[0]["state"], "failed");
    assert_eq!(d[0]["attempts"], 1);
    assert_eq!(d[0]["last_status"], 400);
    assert_eq!(
        d[0]["next_attempt_at"],
        Value::Null,
        "not pending: no next attempt"
    );
    let a = &v["attempts"][0];
    assert_eq!(a["delivery_id"], d[0]["id"]);
    assert_eq!(a["status"], 400);
    assert_eq!(a["response_excerpt"], "fake receiver: 400", "{a:#}");
    assert!(a["request_excerpt"]
        .as_str()
        .is_some_and(|r| r.contains("Hook open 1")));

    // A delivered event: one succeeded delivery at `good`.
    let v = eventually_json(
        &relay,
        &format!("/api/v1/admin/events/{}/explain", sonarr[0]),
        |v| v["attempts"].as_array().is_some_and(|a| !a.is_empty()),
    )
    .await;
    assert_eq!(v["deliveries"][0]["target"], "good");
    assert_eq!(v["deliveries"][0]["state"], "succeeded");
    assert_eq!(v["attempts"][0]["status"], 200);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_explain_includes_the_debounced_group_that_carries_the_event() {
    let rx = Receiver::start().await;
    let relay = start_relay(&hook_toml(
        "pack",
        &rx.hook_url(),
        "debounce = \"300ms\"\ndebounce_key = \"download_id\"",
    ))
    .await;
    let client = reqwest::Client::new();
    let mut pack = Vec::new();
    for i in 1..=3 {
        let body = sonarr_download("pack", i)
            .replace("\"isUpgrade\"", "\"downloadId\":\"pack-1\",\"isUpgrade\"");
        pack.push(post_new(&client, &relay, body).await);
    }
    rx.wait_for(1, Duration::from_secs(10)).await;
    // The second event is not the group's first: it is found through the group's payload.
    let v = eventually_json(
        &relay,
        &format!("/api/v1/admin/events/{}/explain", pack[1]),
        |v| v["attempts"].as_array().is_some_and(|a| !a.is_empty()),
    )
    .await;
    let d = &v["deliveries"][0];
    assert_eq!(d["target"], "pack", "{v:#}");
    assert_eq!(d["state"], "succeeded");
    assert_eq!(d["group"]["key"], "download:pack-1");
    assert_eq!(d["group"]["seqs"].as_array().map(Vec::len), Some(3));
    assert_eq!(v["attempts"][0]["delivery_id"], d["id"]);
    let list = events(&relay, "").await;
    for e in list["events"].as_array().expect("events") {
        assert_eq!(
            e["deliveries"],
            json!([{"target": "pack", "pending": 0, "succeeded": 1, "failed": 0}]),
            "every event of the group counts the group's delivery"
        );
    }
    relay.stop().await;
}

/// Polls an admin GET until `cond` holds (attempts are recorded in batches).
async fn eventually_json(relay: &TestRelay, path: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, v) = get_json(relay, path).await;
        assert_eq!(status, 200, "{path}: {v:#}");
        if cond(&v) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{path}: {v:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_replay_jobs_report_progress_to_done() {
    let (relay, good, _bad, sonarr, _open) = seeded().await;
    let job = replay_job(
        &relay,
        &format!("/api/v1/admin/events/{}/replay", sonarr[2]),
    )
    .await;
    assert_eq!(job["state"], "done", "{job:#}");
    assert_eq!(job["kind"], "event");
    assert_eq!(job["targets_total"], 1);
    assert_eq!(job["targets_asked"], 1);
    assert_eq!(job["requeued"], 1);
    assert_eq!(job["errors"], json!([]));
    good.wait_for(8, Duration::from_secs(10)).await;
    assert_eq!(good.event_ids()[7], sonarr[2]);

    let job = replay_job(&relay, "/api/v1/admin/hooks/good/replay?since=1h").await;
    assert_eq!(job["state"], "done", "{job:#}");
    assert_eq!(job["kind"], "target");
    assert_eq!(job["since"], "1h");
    assert_eq!(job["requeued"], 7);
    good.wait_for(15, Duration::from_secs(10)).await;
    relay.stop().await;
}

async fn send(
    relay: &TestRelay,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, relay.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("error bodies are JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_errors_have_codes_and_name_the_field() {
    let rx = Receiver::start().await;
    let relay = start_relay(&hook_toml("a", &rx.hook_url(), "")).await;
    let client = reqwest::Client::new();
    let id = post_new(&client, &relay, sonarr_download("errors", 1)).await;
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    let patch = reqwest::Method::PATCH;

    for path in [
        "/api/v1/admin/events".to_owned(),
        format!("/api/v1/admin/events/{id}/explain"),
        "/api/v1/admin/jobs/job_x".to_owned(),
    ] {
        let (status, v) = send(&relay, get.clone(), &path, None, None).await;
        assert_eq!(
            (status, v["code"].as_str()),
            (401, Some("unauthorized")),
            "{path}"
        );
    }
    let (status, v) = send(
        &relay,
        post.clone(),
        &format!("/api/v1/admin/events/{id}/replay"),
        Some("wrong-token-wrong-token"),
        None,
    )
    .await;
    assert_eq!((status, v["code"].as_str()), (401, Some("unauthorized")));

    let t = Some(ADMIN_TOKEN);
    for (method, path) in [
        (
            get.clone(),
            "/api/v1/admin/events/01J0000000000000000000000/explain",
        ),
        (
            post.clone(),
            "/api/v1/admin/events/01J0000000000000000000000/replay",
        ),
        (post.clone(), "/api/v1/admin/hooks/nope/replay?since=1h"),
        (get.clone(), "/api/v1/admin/hooks/nope"),
        (get.clone(), "/api/v1/admin/jobs/job_nope"),
    ] {
        let (status, v) = send(&relay, method, path, t, None).await;
        assert_eq!(
            (status, v["code"].as_str()),
            (404, Some("not_found")),
            "{path}: {v}"
        );
    }
    let (status, v) = send(
        &relay,
        patch.clone(),
        "/api/v1/admin/hooks/nope",
        t,
        Some(json!({"max_in_flight": 2})),
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );

    for (body, code, field) in [
        (json!({"rate": "fast"}), "invalid_field", "rate"),
        (json!({"rate": 5}), "invalid_field", "rate"),
        (
            json!({"max_in_flight": 0}),
            "invalid_field",
            "max_in_flight",
        ),
        (
            json!({"max_in_flight": 2, "cap": 1}),
            "unknown_field",
            "cap",
        ),
    ] {
        let (status, v) = send(
            &relay,
            patch.clone(),
            "/api/v1/admin/hooks/a",
            t,
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 422, "{body}: {v}");
        assert_eq!(v["code"], code, "{body}: {v}");
        assert_eq!(v["field"], field, "{body}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains(field)),
            "{v}"
        );
    }
    // Nothing of a rejected PATCH was applied.
    assert_eq!(hook_view(&relay, "a").await["stats"]["max_in_flight"], 4);

    for (path, field) in [
        ("/api/v1/admin/events?limit=0", "limit"),
        ("/api/v1/admin/events?status=dead", "status"),
        ("/api/v1/admin/events?cursor=zz", "cursor"),
        ("/api/v1/admin/hooks/a/replay?since=yesterday", "since"),
    ] {
        let method = if path.contains("replay") {
            post.clone()
        } else {
            get.clone()
        };
        let (status, v) = send(&relay, method, path, t, None).await;
        assert_eq!(
            (status, v["code"].as_str()),
            (422, Some("invalid_field")),
            "{path}: {v}"
        );
        assert_eq!(v["field"], field, "{path}");
    }
    let (status, v) = send(
        &relay,
        post.clone(),
        "/api/v1/admin/hooks/a/replay",
        t,
        None,
    )
    .await;
    assert_eq!((status, v["field"].as_str()), (422, Some("since")), "{v}");

    // Ingest errors keep their statuses and gain a code.
    let resp = client
        .post(relay.url("/api/v1/webhooks/sonarr-open"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["code"], "malformed_json", "{v}");
    relay.stop().await;
}
