//! What one attempt's result means for its delivery: a pure decision the worker applies.
//!
//! `decide` is the whole policy: success, a retry at a time, a final failure, or "blocked"
//! (a configuration problem on our side, such as a Plex token that is refused: the work
//! stays pending and does not count toward auto-disable). It also says whether the target
//! must be disabled (410 Gone, or too many consecutive failures).

use std::time::Duration;

use super::{AttemptClass, AttemptResult, TargetPolicy};
use crate::hooks::retry::clamp_retry_after;
use crate::store::{Delivery, DeliveryUpdate};

/// Which counter an outcome adds to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tally {
    /// The delivery succeeded.
    Succeeded,
    /// The attempt failed; the delivery is due again later.
    Retried,
    /// The delivery failed for good.
    Failed,
    /// A configuration problem on our side: the delivery stays pending and no failure is counted.
    Blocked,
}

/// The worker's next steps for one finished attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What to write to the delivery row.
    pub update: DeliveryUpdate,
    /// Which counter to add to.
    pub tally: Tally,
    /// Look in the store again after this long (the retry is due then).
    pub wake_in: Option<Duration>,
    /// Failed attempts in a row after this one (0 after a success; unchanged when blocked).
    pub consecutive_failures: u32,
    /// Disable the target, for this reason.
    pub disable: Option<String>,
}

/// How long a blocked delivery waits before it is tried again: long enough not to hammer a
/// server that refuses us, short enough that fixing the config takes effect soon.
pub const BLOCKED_RETRY: Duration = Duration::from_secs(60);

/// The worker's circumstances when an attempt finishes.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    /// Failed attempts in a row before this one.
    pub consecutive_failures: u32,
    /// Unix milliseconds when the attempt finished.
    pub now_ms: i64,
    /// In `[0, 1]`: spreads retries of many deliveries apart.
    pub jitter: f64,
    /// A replay arrived while this attempt was in flight. Whatever the result, the delivery
    /// goes back to pending, due now, so the replay is not overwritten by this outcome.
    pub replay_requested: bool,
}

/// Decides the outcome of attempt number `d.attempts + 1`.
pub fn decide(
    d: &Delivery,
    class: AttemptClass,
    r: &AttemptResult,
    policy: &TargetPolicy,
    cx: Context,
) -> Decision {
    let Context {
        consecutive_failures,
        now_ms,
        jitter,
        replay_requested,
    } = cx;
    let attempts = d.attempts + 1;
    let id = d.id;
    let retry_at =
        |delay: Duration| now_ms + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
    let failed = |error: Option<String>| DeliveryUpdate::Failed {
        id,
        attempts,
        status: r.status,
        error,
    };
    let (update, tally, wake_in, cf) = match class {
        AttemptClass::Success => (
            DeliveryUpdate::Succeeded {
                id,
                attempts,
                status: r.status.unwrap_or(200),
            },
            Tally::Succeeded,
            None,
            0,
        ),
        AttemptClass::Retryable => {
            let cf = consecutive_failures.saturating_add(1);
            match policy
                .retry
                .delay(attempts, policy.retry_base, policy.retry_cap, jitter)
            {
                Some(delay) => {
                    let delay = clamp_retry_after(delay, r.retry_after);
                    (
                        DeliveryUpdate::Retry {
                            id,
                            attempts,
                            next_attempt_at_ms: retry_at(delay),
                            status: r.status,
                            error: r.error.clone(),
                        },
                        Tally::Retried,
                        Some(delay),
                        cf,
                    )
                }
                None => (
                    failed(Some(
                        r.error
                            .clone()
                            .unwrap_or_else(|| "retries exhausted".into()),
                    )),
                    Tally::Failed,
                    None,
                    cf,
                ),
            }
        }
        AttemptClass::Fatal | AttemptClass::Gone => (
            failed(r.error.clone()),
            Tally::Failed,
            None,
            consecutive_failures.saturating_add(1),
        ),
        AttemptClass::Blocked => (
            DeliveryUpdate::Retry {
                id,
                attempts,
                next_attempt_at_ms: retry_at(BLOCKED_RETRY),
                status: r.status,
                error: r.error.clone(),
            },
            Tally::Blocked,
            Some(BLOCKED_RETRY),
            consecutive_failures,
        ),
    };
    let disable = if class == AttemptClass::Gone {
        Some(format!(
            "the endpoint answered 410 Gone for event {}",
            d.event_id
        ))
    } else if policy.disable_after > 0 && cf >= policy.disable_after {
        Some(format!("{cf} consecutive failed attempts"))
    } else {
        None
    };
    let (update, wake_in) = if replay_requested {
        (
            DeliveryUpdate::Retry {
                id,
                attempts: 0,
                next_attempt_at_ms: now_ms,
                status: r.status,
                error: r.error.clone(),
            },
            Some(Duration::ZERO),
        )
    } else {
        (update, wake_in)
    };
    Decision {
        update,
        tally,
        wake_in,
        consecutive_failures: cf,
        disable,
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::hooks::retry::RetryPolicy;

    fn policy(retry: RetryPolicy, disable_after: u32) -> TargetPolicy {
        TargetPolicy {
            name: "h".into(),
            max_in_flight: NonZeroU32::MIN,
            rate: None,
            burst: None,
            retry,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(60),
            disable_after,
            enabled: true,
            drain_grace: Duration::from_secs(5),
        }
    }

    fn cx(consecutive_failures: u32, now_ms: i64, replay_requested: bool) -> Context {
        Context {
            consecutive_failures,
            now_ms,
            jitter: 0.5,
            replay_requested,
        }
    }

    fn delivery(attempts: u32) -> Delivery {
        Delivery {
            id: 7,
            event_seq: 1,
            event_id: "ev".into(),
            event_received_at_ms: 0,
            hook: "h".into(),
            webhook_id: "msg".into(),
            attempts,
            group: None,
        }
    }

    fn result(status: Option<u16>) -> AttemptResult {
        AttemptResult {
            status,
            error: status.is_none().then(|| "connection refused".to_owned()),
            started_at_ms: 0,
            latency: Duration::ZERO,
            retry_after: None,
            request_excerpt: String::new(),
            response_excerpt: String::new(),
        }
    }

    #[test]
    fn outcome_success_resets_failures() {
        let d = decide(
            &delivery(2),
            AttemptClass::Success,
            &result(Some(204)),
            &policy(RetryPolicy::Exponential(3), 5),
            cx(4, 1000, false),
        );
        assert_eq!(
            d.update,
            DeliveryUpdate::Succeeded {
                id: 7,
                attempts: 3,
                status: 204
            }
        );
        assert_eq!(
            (d.tally, d.consecutive_failures, d.disable),
            (Tally::Succeeded, 0, None)
        );
    }

    #[test]
    fn outcome_retry_is_scheduled_then_exhausted() {
        let p = policy(RetryPolicy::Exponential(2), 0);
        let d = decide(
            &delivery(1),
            AttemptClass::Retryable,
            &result(Some(503)),
            &p,
            cx(0, 1000, false),
        );
        // Second attempt failed: retry 2 waits base * 2 = 2 s.
        assert_eq!(d.wake_in, Some(Duration::from_secs(2)));
        assert!(matches!(
            d.update,
            DeliveryUpdate::Retry {
                next_attempt_at_ms: 3000,
                attempts: 2,
                ..
            }
        ));
        let d = decide(
            &delivery(2),
            AttemptClass::Retryable,
            &result(None),
            &p,
            cx(1, 1000, false),
        );
        assert_eq!(d.tally, Tally::Failed);
        assert!(matches!(
            d.update,
            DeliveryUpdate::Failed { attempts: 3, .. }
        ));
    }

    #[test]
    fn outcome_gone_and_failure_streak_disable() {
        let p = policy(RetryPolicy::None, 3);
        let d = decide(
            &delivery(0),
            AttemptClass::Gone,
            &result(Some(410)),
            &p,
            cx(0, 0, false),
        );
        assert!(d.disable.as_deref().is_some_and(|r| r.contains("410")));
        let d = decide(
            &delivery(0),
            AttemptClass::Fatal,
            &result(Some(400)),
            &p,
            cx(1, 0, false),
        );
        assert_eq!(d.disable, None);
        let d = decide(
            &delivery(0),
            AttemptClass::Fatal,
            &result(Some(400)),
            &p,
            cx(2, 0, false),
        );
        assert_eq!(d.disable.as_deref(), Some("3 consecutive failed attempts"));
    }

    #[test]
    fn outcome_blocked_stays_pending_without_counting_a_failure() {
        let p = policy(RetryPolicy::None, 1);
        let d = decide(
            &delivery(0),
            AttemptClass::Blocked,
            &result(Some(401)),
            &p,
            cx(0, 0, false),
        );
        assert_eq!(d.tally, Tally::Blocked);
        assert_eq!(d.disable, None, "a config problem never auto-disables");
        assert!(
            matches!(d.update, DeliveryUpdate::Retry { .. }),
            "work is kept"
        );
    }

    #[test]
    fn outcome_replay_during_flight_wins_over_success() {
        let p = policy(RetryPolicy::None, 0);
        let d = decide(
            &delivery(0),
            AttemptClass::Success,
            &result(Some(200)),
            &p,
            cx(0, 5000, true),
        );
        assert_eq!(d.tally, Tally::Succeeded);
        assert!(matches!(
            d.update,
            DeliveryUpdate::Retry {
                next_attempt_at_ms: 5000,
                attempts: 0,
                ..
            }
        ));
    }
}
