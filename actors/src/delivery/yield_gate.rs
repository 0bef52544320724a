//! Deliveries yield to ingest (`[outbound] yield_to_ingest`).
//!
//! Ingest and delivery share the machine's cores and the store's one writer. With saturated
//! hooks every event costs one ingest and one attempt per hook, so a flood of deliveries
//! slows the answers to the *arr apps: with 8 hooks at 64 connections, ingest's p99 was
//! 45–75 ms. The gate watches how long each ingest answer takes, from the request's
//! arrival to its commit. When ingest is queueing (the median answer over half the target)
//! and more than one answer in a hundred is over the target, it limits how many attempts
//! start per second over all targets, and it narrows that limit every period in which ingest
//! is still slow. When ingest is fast again the limit widens, and once it no longer holds
//! anything back, or ingest goes quiet, it goes away.
//!
//! Deliveries never stop: the limit has a floor, and the work a limit holds back waits in
//! the store, from where the workers load it when the limit lifts. A single stall (a
//! checkpoint) does not set a limit, because the median answer stays fast, and a trickle of
//! events (under [`MIN_ANSWERS`] in a period) says nothing either way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the limit is reconsidered.
const PERIOD: Duration = Duration::from_millis(50);
/// The limit never goes under this many attempts per second, so deliveries always move.
pub const FLOOR: f64 = 200.0;
/// More than this share of answers over the target counts as "ingest is slow".
const SLOW_SHARE: f64 = 0.01;
/// Fewer answers than this in a period say nothing about ingest's p99.
pub const MIN_ANSWERS: u64 = 10;
/// A slow period multiplies the limit by this; a very slow one (over a tenth of the answers
/// over the target) by its square.
const CUT: f64 = 0.7;
/// A fast period multiplies the limit by this and adds [`STEP`].
const WIDEN: f64 = 1.05;
/// Attempts per second added to the limit by each fast period.
const STEP: f64 = 25.0;

/// The gate: ingest reports its latencies, delivery workers ask before each attempt.
#[derive(Debug)]
pub struct YieldGate {
    /// The ingest latency target in milliseconds; 0 turns the gate off.
    target_ms: AtomicU64,
    answers: AtomicU64,
    /// Answers over the target.
    slow: AtomicU64,
    /// Answers over half the target.
    queued: AtomicU64,
    /// Times a limit was set, for the metrics.
    engaged: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    period_start: Instant,
    /// Attempts admitted in this period.
    started: u64,
    /// Attempts per second over all targets, or `None`: no limit.
    limit: Option<f64>,
    tokens: f64,
    refilled: Instant,
}

impl YieldGate {
    /// A gate aiming at `target` for ingest's p99; `Duration::ZERO` turns it off.
    pub fn new(target: Duration) -> Self {
        let now = Instant::now();
        YieldGate {
            target_ms: AtomicU64::new(target.as_millis() as u64),
            answers: AtomicU64::new(0),
            slow: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            engaged: AtomicU64::new(0),
            state: Mutex::new(State {
                period_start: now,
                started: 0,
                limit: None,
                tokens: 0.0,
                refilled: now,
            }),
        }
    }

    /// Sets the target (`Duration::ZERO`: off). Turning the gate off lifts any limit.
    pub fn set_target(&self, target: Duration) {
        self.target_ms
            .store(target.as_millis() as u64, Ordering::Relaxed);
        if target.is_zero() {
            self.lock().limit = None;
        }
    }

    /// The limit in attempts per second, `None` when deliveries are not held back.
    pub fn limit(&self) -> Option<u64> {
        self.lock().limit.map(|l| l as u64)
    }

    /// How many times a limit has been set since start.
    pub fn engaged_total(&self) -> u64 {
        self.engaged.load(Ordering::Relaxed)
    }

    /// One ingest answer took `latency_ms` from the request's arrival to its commit.
    pub fn ingested(&self, latency_ms: i64) {
        let target = self.target_ms.load(Ordering::Relaxed) as i64;
        if target == 0 {
            return;
        }
        self.answers.fetch_add(1, Ordering::Relaxed);
        if latency_ms > target / 2 {
            self.queued.fetch_add(1, Ordering::Relaxed);
            if latency_ms > target {
                self.slow.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// May an attempt start now? `Err(wait)`: not before `wait` has passed.
    pub fn admit(&self) -> Result<(), Duration> {
        if self.target_ms.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        self.admit_at(Instant::now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admit_at(&self, now: Instant) -> Result<(), Duration> {
        let mut st = self.lock();
        if now.saturating_duration_since(st.period_start) >= PERIOD {
            self.reconsider(&mut st, now);
        }
        let Some(rate) = st.limit else {
            st.started += 1;
            return Ok(());
        };
        let dt = now.saturating_duration_since(st.refilled).as_secs_f64();
        st.refilled = now;
        // At most a period's worth saved up, so a limit is not overrun in a burst.
        st.tokens = (st.tokens + rate * dt).min((rate * PERIOD.as_secs_f64()).max(1.0));
        if st.tokens >= 1.0 {
            st.tokens -= 1.0;
            st.started += 1;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - st.tokens) / rate))
        }
    }

    /// Ends a period: sets, narrows, widens or lifts the limit, and logs when deliveries
    /// start or stop yielding.
    fn reconsider(&self, st: &mut State, now: Instant) {
        let secs = now
            .saturating_duration_since(st.period_start)
            .as_secs_f64()
            .max(1e-3);
        let answers = self.answers.swap(0, Ordering::Relaxed);
        let slow = self.slow.swap(0, Ordering::Relaxed);
        let queued = self.queued.swap(0, Ordering::Relaxed);
        let observed = st.started as f64 / secs;
        st.started = 0;
        st.period_start = now;
        let was = st.limit;
        let ingest_slow = answers >= MIN_ANSWERS && slow as f64 > answers as f64 * SLOW_SHARE;
        // A limit is first set only when ingest is queueing, not for one stall.
        let queueing = queued * 2 > answers;
        st.limit = if ingest_slow && (was.is_some() || queueing) {
            let base = was.map_or(observed, |l| l.min(observed.max(FLOOR)));
            let cut = if slow * 10 > answers { CUT * CUT } else { CUT };
            Some((base * cut).max(FLOOR))
        } else {
            match was {
                Some(l) if answers > 0 => {
                    let wider = l * WIDEN + STEP;
                    // A limit twice above what starts no longer holds anything back.
                    (wider < observed.max(FLOOR) * 2.0).then_some(wider)
                }
                _ => None,
            }
        };
        match (was, st.limit) {
            (None, Some(l)) => {
                st.tokens = 0.0;
                st.refilled = now;
                self.engaged.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    target_ms = self.target_ms.load(Ordering::Relaxed),
                    limit_per_s = l as u64,
                    "ingest answers are slower than [outbound] yield_to_ingest; deliveries yield \
                     to ingest (held-back deliveries wait in the store)"
                );
            }
            (Some(_), None) => {
                tracing::info!("ingest is fast again; deliveries are no longer held back")
            }
            _ => {}
        }
    }
}

impl Default for YieldGate {
    /// Off until [`YieldGate::set_target`] is called.
    fn default() -> Self {
        YieldGate::new(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: Duration = Duration::from_millis(10);

    /// Starts `n` attempts spread over one period, and ends it.
    fn deliver_for_a_period(g: &YieldGate, t: &mut Instant, n: u32) -> u32 {
        let mut admitted = 0;
        for i in 0..n {
            let at = *t + PERIOD.mul_f64(f64::from(i) / f64::from(n));
            if g.admit_at(at).is_ok() {
                admitted += 1;
            }
        }
        *t += PERIOD;
        admitted
    }

    fn answers(g: &YieldGate, latencies_ms: &[(i64, u32)]) {
        for &(ms, n) in latencies_ms {
            for _ in 0..n {
                g.ingested(ms);
            }
        }
    }

    #[test]
    fn yield_gate_limits_deliveries_while_ingest_queues_and_lifts_when_it_is_fast() {
        let g = YieldGate::new(TARGET);
        let mut t = Instant::now();
        // 1,000 attempts a period (20,000/s) while ingest is fast: no limit.
        answers(&g, &[(2, 500)]);
        assert_eq!(deliver_for_a_period(&g, &mut t, 1000), 1000);
        answers(&g, &[(2, 500)]);
        assert_eq!(deliver_for_a_period(&g, &mut t, 1000), 1000);
        assert_eq!(g.limit(), None);
        // Ingest queues: median 20 ms. The period's end sets a limit under what started.
        answers(&g, &[(20, 400), (3, 100)]);
        deliver_for_a_period(&g, &mut t, 1000);
        answers(&g, &[(20, 400), (3, 100)]);
        let admitted = deliver_for_a_period(&g, &mut t, 1000);
        let limit = g.limit().expect("a limit while ingest queues");
        assert!(limit < 20_000, "limit {limit}/s");
        assert_eq!(g.engaged_total(), 1);
        // The limit holds: about limit × period attempts start, not 1,000.
        assert!(
            f64::from(admitted) <= limit as f64 * PERIOD.as_secs_f64() + 1.0,
            "{admitted} started under a limit of {limit}/s"
        );
        // Still slow: narrower, never under the floor.
        for _ in 0..20 {
            answers(&g, &[(20, 400)]);
            deliver_for_a_period(&g, &mut t, 1000);
        }
        assert_eq!(g.limit(), Some(FLOOR as u64));
        answers(&g, &[(20, 400)]);
        let at_floor = deliver_for_a_period(&g, &mut t, 1000);
        assert!(at_floor >= 1, "deliveries never stop");
        // Ingest goes quiet: the limit goes at the next period's end.
        deliver_for_a_period(&g, &mut t, 1000);
        assert_eq!(g.limit(), None);
        assert_eq!(deliver_for_a_period(&g, &mut t, 1000), 1000);
    }

    #[test]
    fn yield_gate_widens_then_lifts_while_ingest_is_fast() {
        let g = YieldGate::new(TARGET);
        let mut t = Instant::now();
        answers(&g, &[(30, 500)]);
        deliver_for_a_period(&g, &mut t, 1000);
        answers(&g, &[(30, 500)]);
        deliver_for_a_period(&g, &mut t, 1000);
        let first = g.limit().expect("limited");
        answers(&g, &[(2, 500)]);
        deliver_for_a_period(&g, &mut t, 1000);
        let wider = g.limit().expect("still limited after one fast period");
        assert!(wider > first, "{wider} after {first}");
        for _ in 0..200 {
            answers(&g, &[(2, 500)]);
            deliver_for_a_period(&g, &mut t, 1000);
            if g.limit().is_none() {
                return;
            }
        }
        panic!("the limit never lifted: {:?}", g.limit());
    }

    #[test]
    fn yield_gate_ignores_a_single_stall_and_a_trickle() {
        let g = YieldGate::new(TARGET);
        let mut t = Instant::now();
        // A checkpoint stall: 16 answers of 500 wait 40 ms, the median stays at 2 ms.
        for _ in 0..5 {
            answers(&g, &[(40, 16), (2, 484)]);
            deliver_for_a_period(&g, &mut t, 1000);
        }
        // A trickle: every answer slow, but too few to say anything.
        for _ in 0..5 {
            answers(&g, &[(40, (MIN_ANSWERS - 1) as u32)]);
            deliver_for_a_period(&g, &mut t, 1000);
        }
        assert_eq!(g.limit(), None);
        assert_eq!(g.engaged_total(), 0);
    }

    #[test]
    fn yield_gate_off_admits_everything_and_turning_it_off_lifts_a_limit() {
        let g = YieldGate::new(Duration::ZERO);
        let mut t = Instant::now();
        for _ in 0..3 {
            answers(&g, &[(500, 500)]);
            assert!(g.admit().is_ok());
            t += PERIOD;
        }
        assert_eq!(g.limit(), None);

        let g = YieldGate::new(TARGET);
        for _ in 0..3 {
            answers(&g, &[(30, 500)]);
            deliver_for_a_period(&g, &mut t, 1000);
        }
        assert!(g.limit().is_some());
        g.set_target(Duration::ZERO);
        assert_eq!(g.limit(), None);
        assert!(g.admit().is_ok());
    }
}
