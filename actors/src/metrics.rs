//! The relay's metrics: labelled counters and histograms that the actors increment, and
//! their rendering in the Prometheus text exposition format (version 0.0.4) for
//! `GET /metrics`.
//!
//! One [`Metrics`] per relay, held in an `Arc` and handed to the actors through the tree's
//! arguments: several relays in one process (the tests) each count their own traffic, with
//! no process-global registry to key by namespace. Gauges that the store already knows
//! (queue depth, the oldest pending delivery) are read at scrape time, not mirrored here.
//!
//! Why not `prometheus-client`: it renders OpenMetrics (`# EOF`, `_total` rules of its own),
//! wants a derive per label set, and has no place for the supervision board; the handful of
//! families here fit in one small file whose output we control and test.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use crate::feed::CommittedFeed;
use crate::store::PendingSummary;
use crate::supervisor::SupervisionBoard;

/// Upper bounds (seconds) of the delivery latency histogram: from a LAN hook answering in
/// milliseconds to a Plex poll that takes most of a minute.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A counter family: one monotonic value per label set.
#[derive(Debug)]
pub struct CounterVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl CounterVec {
    /// An empty family; `name` is its Prometheus name, `labels` the label names in order.
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        CounterVec {
            name,
            help,
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds one to the series with these label values (in the family's label order).
    pub fn inc(&self, values: &[&str]) {
        self.add(values, 1);
    }

    /// Adds `n` to the series with these label values (in the family's label order).
    pub fn add(&self, values: &[&str], n: u64) {
        debug_assert_eq!(values.len(), self.labels.len(), "{}", self.name);
        let key = values.iter().map(|v| (*v).to_owned()).collect();
        let mut map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(key).or_default() += n;
    }

    /// The current value of one series (0 if it was never incremented).
    pub fn get(&self, values: &[&str]) -> u64 {
        let map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .find(|(k, _)| k.iter().map(String::as_str).eq(values.iter().copied()))
            .map_or(0, |(_, v)| *v)
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "counter");
        let map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        for (values, v) in map.iter() {
            sample(out, self.name, self.labels, values, &v.to_string());
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Buckets {
    counts: [u64; LATENCY_BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// A histogram family over [`LATENCY_BUCKETS`], one per label set.
#[derive(Debug)]
pub struct HistogramVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, Buckets>>,
}

impl HistogramVec {
    /// An empty family over [`LATENCY_BUCKETS`]; `labels` are the label names in order.
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        HistogramVec {
            name,
            help,
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records one observation, in seconds, in the series with these label values.
    pub fn observe(&self, values: &[&str], seconds: f64) {
        let key = values.iter().map(|v| (*v).to_owned()).collect();
        let mut map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let b = map.entry(key).or_default();
        // Cumulative at render time; here each observation lands in its first bucket only.
        if let Some(i) = LATENCY_BUCKETS.iter().position(|le| seconds <= *le) {
            b.counts[i] += 1;
        }
        b.sum += seconds;
        b.count += 1;
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "histogram");
        let map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = format!("{}_bucket", self.name);
        let mut labels: Vec<&str> = self.labels.to_vec();
        labels.push("le");
        for (values, b) in map.iter() {
            let mut cumulative = 0;
            let mut with_le = values.clone();
            with_le.push(String::new());
            for (le, n) in LATENCY_BUCKETS.iter().zip(b.counts) {
                cumulative += n;
                if let Some(last) = with_le.last_mut() {
                    *last = le.to_string();
                }
                sample(out, &bucket, &labels, &with_le, &cumulative.to_string());
            }
            if let Some(last) = with_le.last_mut() {
                *last = "+Inf".into();
            }
            sample(out, &bucket, &labels, &with_le, &b.count.to_string());
            let sum = format!("{}_sum", self.name);
            sample(out, &sum, self.labels, values, &b.sum.to_string());
            let count = format!("{}_count", self.name);
            sample(out, &count, self.labels, values, &b.count.to_string());
        }
    }
}

/// Every metric of one relay.
#[derive(Debug)]
pub struct Metrics {
    /// Events committed (duplicates and `trigger_on`-filtered requests excluded).
    pub events_received: CounterVec,
    /// Requests refused at ingress.
    pub rejections: CounterVec,
    /// Finished attempts per delivery, by what they meant for it.
    pub deliveries: CounterVec,
    /// Latency of one attempt, seconds, by target.
    pub attempt_seconds: HistogramVec,
    /// Events added to a debounce group, by target.
    pub debounced: CounterVec,
    /// Events that joined a group already open, by target.
    pub coalesced: CounterVec,
    /// Debounce groups fired as one delivery, by target.
    pub groups_fired: CounterVec,
    /// Partial scans requested from Plex, by server.
    pub plex_scans: CounterVec,
    /// Title cards uploaded to Plex, by server.
    pub plex_card_uploads: CounterVec,
    /// Events deleted by retention (with their deliveries and attempts).
    pub events_pruned: CounterVec,
    /// Actor statuses and restart counts, kept by the supervisors.
    pub supervision: Arc<SupervisionBoard>,
    /// Every committed event, for programs that embed the relay (not a metric, but it
    /// travels the same way: one per relay, handed to every actor that commits events).
    pub committed: CommittedFeed,
    /// Holds deliveries back while ingest is slow (`[outbound] yield_to_ingest`; not a
    /// metric either, but ingest and every delivery worker reach it the same way).
    pub yield_gate: crate::delivery::yield_gate::YieldGate,
}

impl Metrics {
    /// `namespace` is the relay's actor-name prefix, stripped from actor paths.
    pub fn new(namespace: impl Into<String>) -> Arc<Self> {
        Arc::new(Metrics {
            events_received: CounterVec::new(
                "relayarr_events_received_total",
                "Events committed to the store, by source (configured name) and kind.",
                &["source", "kind"],
            ),
            rejections: CounterVec::new(
                "relayarr_rejections_total",
                "Requests a source refused, by source, HTTP status and reason.",
                &["source", "status", "reason"],
            ),
            deliveries: CounterVec::new(
                "relayarr_deliveries_total",
                "Delivery attempt outcomes by target: succeeded, retried (will be tried \
                 again), failed (given up), blocked (our configuration was refused).",
                &["target", "outcome"],
            ),
            attempt_seconds: HistogramVec::new(
                "relayarr_delivery_attempt_duration_seconds",
                "Latency of one delivery attempt (one request, or one Plex sync), by target.",
                &["target"],
            ),
            debounced: CounterVec::new(
                "relayarr_debounce_events_total",
                "Events added to a debounce group, by target.",
                &["target"],
            ),
            coalesced: CounterVec::new(
                "relayarr_debounce_coalesced_total",
                "Events that joined a debounce group that was already open, by target.",
                &["target"],
            ),
            groups_fired: CounterVec::new(
                "relayarr_debounce_groups_fired_total",
                "Debounce groups fired as one delivery, by target.",
                &["target"],
            ),
            plex_scans: CounterVec::new(
                "relayarr_plex_scans_total",
                "Partial library scans requested from Plex, by server.",
                &["server"],
            ),
            plex_card_uploads: CounterVec::new(
                "relayarr_plex_card_uploads_total",
                "Title cards uploaded to Plex items, by server.",
                &["server"],
            ),
            events_pruned: CounterVec::new(
                "relayarr_events_pruned_total",
                "Events deleted by retention ([history] events_max_age, events_max_count), \
                 with their deliveries and attempts; events with pending work are never pruned.",
                &[],
            ),
            supervision: Arc::new(SupervisionBoard::new(namespace)),
            committed: CommittedFeed::default(),
            yield_gate: Default::default(),
        })
    }

    /// The whole exposition: counters, histograms, actor restarts, and the queue gauges
    /// read from the store (`queues`, one per configured target) as of `now_ms`.
    pub fn render(&self, queues: &[PendingSummary], now_ms: i64) -> String {
        let mut out = String::with_capacity(4096);
        self.events_received.render(&mut out);
        self.rejections.render(&mut out);
        self.deliveries.render(&mut out);
        self.attempt_seconds.render(&mut out);
        self.events_pruned.render(&mut out);

        header(
            &mut out,
            "relayarr_queue_depth",
            "Pending deliveries in the store, by target.",
            "gauge",
        );
        for q in queues {
            sample(
                &mut out,
                "relayarr_queue_depth",
                &["target"],
                std::slice::from_ref(&q.target),
                &q.pending.to_string(),
            );
        }
        header(
            &mut out,
            "relayarr_queue_oldest_age_seconds",
            "Age of the oldest pending delivery, by target (0 when none is pending).",
            "gauge",
        );
        for q in queues {
            let age = q
                .oldest_created_at_ms
                .map_or(0.0, |t| (now_ms - t).max(0) as f64 / 1000.0);
            sample(
                &mut out,
                "relayarr_queue_oldest_age_seconds",
                &["target"],
                std::slice::from_ref(&q.target),
                &age.to_string(),
            );
        }

        header(
            &mut out,
            "relayarr_actor_restarts_total",
            "Restarts of each actor by its supervisor, by path in the supervision tree.",
            "counter",
        );
        for (path, restarts) in self.supervision.restarts() {
            sample(
                &mut out,
                "relayarr_actor_restarts_total",
                &["actor"],
                &[path],
                &restarts.to_string(),
            );
        }

        self.debounced.render(&mut out);
        self.coalesced.render(&mut out);
        self.groups_fired.render(&mut out);
        self.plex_scans.render(&mut out);
        self.plex_card_uploads.render(&mut out);
        render_gauge(
            &mut out,
            "relayarr_delivery_yield_limit_per_second",
            "Attempts per second allowed over all targets while deliveries yield to slow \
             ingest ([outbound] yield_to_ingest); 0 when nothing is held back.",
            self.yield_gate.limit().unwrap_or(0),
        );
        render_unlabelled(
            &mut out,
            "relayarr_delivery_yield_engaged_total",
            "Times deliveries started yielding to slow ingest.",
            "counter",
            self.yield_gate.engaged_total(),
        );
        out
    }
}

/// Appends one unlabelled gauge, with its `# HELP` and `# TYPE` lines, in the text format
/// of [`Metrics::render`]: for gauges read outside the actor system (the HTTP server's).
pub fn render_gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    render_unlabelled(out, name, help, "gauge", value);
}

fn render_unlabelled(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    value: impl std::fmt::Display,
) {
    header(out, name, help, kind);
    sample(out, name, &[], &[], &value.to_string());
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[&str], values: &[String], value: &str) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (l, v)) in labels.iter().zip(values).enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{l}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Label values escape `\`, `"` and newlines (the text format's only rules).
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_counters_render_with_help_type_and_escaped_labels() {
        let m = Metrics::new("");
        m.events_received.inc(&["sonarr", "import"]);
        m.events_received.add(&["sonarr", "import"], 2);
        m.rejections.inc(&["we\"ird\\", "401", "unauthorized"]);
        let text = m.render(&[], 0);
        assert!(
            text.contains("# HELP relayarr_events_received_total "),
            "{text}"
        );
        assert!(
            text.contains("# TYPE relayarr_events_received_total counter"),
            "{text}"
        );
        assert!(
            text.contains("relayarr_events_received_total{source=\"sonarr\",kind=\"import\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains(r#"relayarr_rejections_total{source="we\"ird\\",status="401",reason="unauthorized"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("\nrelayarr_delivery_yield_limit_per_second 0\n"),
            "{text}"
        );
        assert!(
            text.contains("\nrelayarr_delivery_yield_engaged_total 0\n"),
            "{text}"
        );
        assert_eq!(m.events_received.get(&["sonarr", "import"]), 3);
        assert_eq!(m.events_received.get(&["sonarr", "grab"]), 0);
    }

    #[test]
    fn metrics_histogram_buckets_are_cumulative() {
        let m = Metrics::new("");
        for s in [0.003, 0.2, 0.2, 500.0] {
            m.attempt_seconds.observe(&["a"], s);
        }
        let text = m.render(&[], 0);
        let line = |le: &str| {
            format!(
                "relayarr_delivery_attempt_duration_seconds_bucket{{target=\"a\",le=\"{le}\"}} "
            )
        };
        assert!(text.contains(&format!("{}1\n", line("0.005"))), "{text}");
        assert!(text.contains(&format!("{}1\n", line("0.1"))), "{text}");
        assert!(text.contains(&format!("{}3\n", line("0.25"))), "{text}");
        assert!(text.contains(&format!("{}3\n", line("120"))), "{text}");
        assert!(text.contains(&format!("{}4\n", line("+Inf"))), "{text}");
        assert!(
            text.contains("relayarr_delivery_attempt_duration_seconds_count{target=\"a\"} 4\n"),
            "{text}"
        );
    }

    #[test]
    fn metrics_queue_gauges_report_depth_and_age() {
        let m = Metrics::new("");
        let q = [
            PendingSummary {
                target: "a".into(),
                pending: 3,
                oldest_created_at_ms: Some(1_000),
            },
            PendingSummary {
                target: "b".into(),
                pending: 0,
                oldest_created_at_ms: None,
            },
        ];
        let text = m.render(&q, 3_500);
        assert!(
            text.contains("relayarr_queue_depth{target=\"a\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("relayarr_queue_oldest_age_seconds{target=\"a\"} 2.5\n"),
            "{text}"
        );
        assert!(
            text.contains("relayarr_queue_oldest_age_seconds{target=\"b\"} 0\n"),
            "{text}"
        );
    }
}
