//! Retry policy, `Retry-After`, rate strings and attempt-outcome classification (pure).
//!
//! The hook actor asks three questions after each attempt: was it a success, may it be
//! retried ([`classify`]), and if so, when ([`RetryPolicy::delay`], then
//! [`clamp_retry_after`] when the receiver sent `Retry-After`). The rate string (`"5/s"`) is
//! parsed here too and turned into a governor [`Quota`].

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use governor::Quota;
use humantime_serde::re::humantime;
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::macros::format_description;
use time::PrimitiveDateTime;

/// What went wrong parsing a retry policy or a rate. Each variant carries the bad input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryParseError {
    #[error(
        "invalid retry policy {0:?}: expected \"none\", \"exponential:N\", \"linear:N\" \
         or a list of delays such as [\"5s\", \"5m\", \"30m\", \"2h\"]"
    )]
    /// The policy is none of the known forms (the text as written).
    Policy(String),
    /// One delay of an explicit schedule is not a duration.
    #[error("invalid retry delay {value:?} in the schedule: {error} (write e.g. \"30s\", \"5m\", \"2h\")")]
    Delay {
        /// The delay as written.
        value: String,
        /// humantime's complaint.
        error: String,
    },
    #[error(
        "invalid rate {0:?}: expected COUNT/UNIT with COUNT ≥ 1 and UNIT one of s, m, h \
         (or sec, min, hour, or a duration such as 10s), e.g. \"5/s\", \"30/m\", \"100/h\""
    )]
    /// Not a `COUNT/UNIT` rate (the text as written).
    Rate(String),
}

/// How failed deliveries are retried. Written in config as `"none"`, `"exponential:N"`,
/// `"linear:N"` (case-insensitive), or an explicit schedule `["5s", "5m", "30m", "2h"]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Never retried.
    None,
    /// Up to N retries, `retry_base` doubling each time, with jitter, capped at `retry_cap`.
    Exponential(u32),
    /// Up to N retries, every `retry_base` (with jitter).
    Linear(u32),
    /// Explicit delays: the i-th retry (1-based) waits `schedule[i - 1]`, capped, no jitter.
    Schedule(Vec<Duration>),
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::Exponential(5)
    }
}

impl RetryPolicy {
    /// How many retries the policy allows after the first attempt.
    pub fn max_retries(&self) -> u32 {
        match self {
            RetryPolicy::None => 0,
            RetryPolicy::Exponential(n) | RetryPolicy::Linear(n) => *n,
            RetryPolicy::Schedule(s) => u32::try_from(s.len()).unwrap_or(u32::MAX),
        }
    }

    /// The wait before retry number `retry` (1-based: 1 is the first retry after the first
    /// failed attempt), or `None` when the policy allows no such retry (also for `retry = 0`).
    ///
    /// `jitter` in `[0, 1)` (e.g. `rand::random()`) scales exponential and linear delays by a
    /// factor in `[0.8, 1.2]`; `0.5` means no change. The result never exceeds `cap`.
    pub fn delay(
        &self,
        retry: u32,
        base: Duration,
        cap: Duration,
        jitter: f64,
    ) -> Option<Duration> {
        if retry == 0 || retry > self.max_retries() {
            return None;
        }
        let delay = match self {
            RetryPolicy::None => return None,
            RetryPolicy::Exponential(_) => {
                let doubled = 1u32
                    .checked_shl(retry - 1)
                    .and_then(|factor| base.checked_mul(factor))
                    .unwrap_or(cap);
                jittered(doubled.min(cap), jitter)
            }
            RetryPolicy::Linear(_) => jittered(base.min(cap), jitter),
            RetryPolicy::Schedule(s) => *s.get(usize::try_from(retry - 1).ok()?)?,
        };
        Some(delay.min(cap))
    }
}

/// Scales `d` by `0.8 + 0.4 * jitter`. Centred on 0.5 so that `jitter = 0.5` is exactly `d`.
fn jittered(d: Duration, jitter: f64) -> Duration {
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.5
    };
    let factor = 1.0 + 0.4 * (jitter - 0.5);
    if factor == 1.0 {
        return d;
    }
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(d)
}

impl fmt::Display for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryPolicy::None => f.write_str("none"),
            RetryPolicy::Exponential(n) => write!(f, "exponential:{n}"),
            RetryPolicy::Linear(n) => write!(f, "linear:{n}"),
            RetryPolicy::Schedule(s) => {
                let parts: Vec<String> = s
                    .iter()
                    .map(|d| format!("{:?}", humantime::format_duration(*d).to_string()))
                    .collect();
                write!(f, "[{}]", parts.join(", "))
            }
        }
    }
}

/// Parses the string forms (`none`, `exponential:N`, `linear:N`); a schedule is a list and
/// only comes through serde.
impl FromStr for RetryPolicy {
    type Err = RetryParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RetryParseError::Policy(s.to_owned());
        let lower = s.trim().to_ascii_lowercase();
        if lower == "none" {
            return Ok(RetryPolicy::None);
        }
        let (name, count) = lower.split_once(':').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        match name.trim() {
            "exponential" => Ok(RetryPolicy::Exponential(count)),
            "linear" => Ok(RetryPolicy::Linear(count)),
            _ => Err(bad()),
        }
    }
}

impl Serialize for RetryPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RetryPolicy::Schedule(delays) => {
                let mut seq = s.serialize_seq(Some(delays.len()))?;
                for d in delays {
                    seq.serialize_element(&humantime::format_duration(*d).to_string())?;
                }
                seq.end()
            }
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for RetryPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PolicyVisitor;

        impl<'de> Visitor<'de> for PolicyVisitor {
            type Value = RetryPolicy;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "\"none\", \"exponential:N\", \"linear:N\" or a list of delays such as [\"5s\", \"5m\"]",
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RetryPolicy, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RetryPolicy, A::Error> {
                let mut delays = Vec::new();
                while let Some(entry) = seq.next_element::<String>()? {
                    let d = humantime::parse_duration(entry.trim()).map_err(|e| {
                        de::Error::custom(RetryParseError::Delay {
                            value: entry.clone(),
                            error: e.to_string(),
                        })
                    })?;
                    delays.push(d);
                }
                Ok(RetryPolicy::Schedule(delays))
            }
        }

        d.deserialize_any(PolicyVisitor)
    }
}

/// Honours a receiver's `Retry-After`, but only within `[scheduled, 2 × scheduled]`: it may
/// slow us down (never below our own schedule), but not park a delivery indefinitely.
pub fn clamp_retry_after(scheduled: Duration, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(asked) => asked.clamp(scheduled, scheduled.saturating_mul(2)),
        None => scheduled,
    }
}

/// Parses a `Retry-After` header value: delta-seconds (`"120"`) or an IMF-fixdate
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`), relative to `now`. A date in the past is zero.
/// The obsolete RFC 850 and asctime date forms are not accepted (`None`).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Longer than u64 seconds: treat as "very long"; the clamp bounds it anyway.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let fmt = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = SystemTime::from(PrimitiveDateTime::parse(value, &fmt).ok()?.assume_utc());
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// What one delivery attempt's outcome means for the delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptClass {
    /// 2xx: delivered.
    Success,
    /// Transport error, timeout, 1xx, 429 or 5xx: try again per the policy.
    Retryable,
    /// 3xx (redirects are never followed) or another 4xx: retrying will not help.
    Fatal,
    /// 410: the receiver is gone for good; disable the hook.
    Gone,
    /// Our configuration is refused (a Plex token answered 401): the work stays pending,
    /// is tried again later, and does not count toward auto-disable. Never an HTTP hook's
    /// class: a hook's 401 is the receiver's answer, and fails the delivery.
    Blocked,
}

/// Classifies an attempt by its HTTP status; `None` is a transport error or timeout.
pub fn classify(status: Option<u16>) -> AttemptClass {
    match status {
        None => AttemptClass::Retryable,
        Some(410) => AttemptClass::Gone,
        Some(429) => AttemptClass::Retryable,
        Some(200..=299) => AttemptClass::Success,
        Some(300..=499) => AttemptClass::Fatal,
        // 1xx should never reach us as a final status; 5xx and anything odd: try again.
        Some(_) => AttemptClass::Retryable,
    }
}

/// A request rate such as `"5/s"`, `"30/m"`, `"100/h"`: `count` requests per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed per `per`.
    pub count: NonZeroU32,
    /// The interval.
    pub per: Duration,
}

impl Rate {
    /// A governor quota admitting `count` cells per `per`, spread evenly (one every
    /// `per / count`), with `burst` cells at once after idling (default 1: a fresh limiter
    /// starts full, so a small burst avoids a spike after a runtime limit change).
    pub fn quota(&self, burst: Option<NonZeroU32>) -> Quota {
        let period = (self.per / self.count.get()).max(Duration::from_nanos(1));
        Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(self.count))
            .allow_burst(burst.unwrap_or(NonZeroU32::MIN))
    }
}

impl FromStr for Rate {
    type Err = RetryParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RetryParseError::Rate(s.to_owned());
        let (count, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let count = NonZeroU32::new(count).ok_or_else(bad)?;
        let unit = unit.trim().to_ascii_lowercase();
        let per = match unit.as_str() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hr" | "hour" => Duration::from_secs(3600),
            other => humantime::parse_duration(other).map_err(|_| bad())?,
        };
        if per.is_zero() {
            return Err(bad());
        }
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.count;
        match self.per.as_secs() {
            _ if self.per.subsec_nanos() != 0 => {
                write!(f, "{count}/{}", humantime::format_duration(self.per))
            }
            1 => write!(f, "{count}/s"),
            60 => write!(f, "{count}/m"),
            3600 => write!(f, "{count}/h"),
            _ => write!(f, "{count}/{}", humantime::format_duration(self.per)),
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Wrap {
        retry: RetryPolicy,
    }

    fn parse(json: &str) -> Result<RetryPolicy, String> {
        serde_json::from_str::<Wrap>(&format!("{{\"retry\": {json}}}"))
            .map(|w| w.retry)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn retry_policy_parses_strings_case_insensitively() {
        assert_eq!(parse("\"none\""), Ok(RetryPolicy::None));
        assert_eq!(parse("\"Exponential:7\""), Ok(RetryPolicy::Exponential(7)));
        assert_eq!(parse("\"LINEAR: 3\""), Ok(RetryPolicy::Linear(3)));
        assert_eq!(RetryPolicy::default(), RetryPolicy::Exponential(5));
    }

    #[test]
    fn retry_policy_parses_a_schedule() {
        assert_eq!(
            parse(r#"["5s", "5m", "30m", "2h"]"#),
            Ok(RetryPolicy::Schedule(vec![
                secs(5),
                secs(300),
                secs(1800),
                secs(7200)
            ]))
        );
    }

    #[test]
    fn retry_policy_errors_name_the_value_and_the_forms() {
        let err = parse("\"fibonacci:3\"").expect_err("bad");
        assert!(
            err.contains("fibonacci:3") && err.contains("exponential:N"),
            "{err}"
        );
        let err = parse("\"exponential:x\"").expect_err("bad");
        assert!(err.contains("exponential:x"), "{err}");
        let err = parse(r#"["5s", "soon"]"#).expect_err("bad");
        assert!(err.contains("soon"), "{err}");
        assert!(parse("5").is_err());
    }

    #[test]
    fn retry_policy_serialises_back_to_its_forms() {
        for p in [
            RetryPolicy::None,
            RetryPolicy::Exponential(5),
            RetryPolicy::Linear(2),
            RetryPolicy::Schedule(vec![secs(5), secs(300), secs(5400)]),
        ] {
            let json = serde_json::to_string(&Wrap { retry: p.clone() }).expect("ser");
            let back: Wrap = serde_json::from_str(&json).expect("de");
            assert_eq!(back.retry, p, "{json}");
        }
        let json =
            serde_json::to_value(RetryPolicy::Schedule(vec![secs(5), secs(7200)])).expect("ser");
        assert_eq!(json, serde_json::json!(["5s", "2h"]));
        assert_eq!(
            serde_json::to_value(RetryPolicy::Exponential(5)).expect("ser"),
            "exponential:5"
        );
    }

    #[test]
    fn retry_exponential_doubles_caps_and_stops() {
        let p = RetryPolicy::Exponential(5);
        let cap = secs(60);
        let d: Vec<_> = (1..=6).map(|r| p.delay(r, secs(5), cap, 0.5)).collect();
        assert_eq!(
            d,
            vec![
                Some(secs(5)),
                Some(secs(10)),
                Some(secs(20)),
                Some(secs(40)),
                Some(secs(60)),
                None
            ]
        );
        assert_eq!(p.delay(0, secs(5), cap, 0.5), None);
        assert_eq!(p.max_retries(), 5);
    }

    #[test]
    fn retry_exponential_survives_huge_retry_numbers() {
        let p = RetryPolicy::Exponential(u32::MAX);
        assert_eq!(p.delay(40, secs(5), secs(3600), 0.5), Some(secs(3600)));
        assert_eq!(
            p.delay(u32::MAX, secs(5), secs(3600), 0.5),
            Some(secs(3600))
        );
        assert_eq!(
            p.delay(64, Duration::MAX, Duration::MAX, 0.99),
            Some(Duration::MAX)
        );
    }

    #[test]
    fn retry_jitter_stays_within_twenty_percent_and_under_the_cap() {
        let p = RetryPolicy::Exponential(3);
        assert_eq!(p.delay(1, secs(10), secs(60), 0.0), Some(secs(8)));
        let high = p.delay(1, secs(10), secs(60), 0.999_999).expect("some");
        assert!(high > secs(11) && high <= secs(12), "{high:?}");
        // At the cap, jitter may only lower the delay.
        assert_eq!(p.delay(3, secs(40), secs(60), 0.99), Some(secs(60)));
        assert_eq!(p.delay(3, secs(40), secs(60), 0.0), Some(secs(48)));
        // Nonsense jitter is treated as none or clamped, never a panic.
        assert_eq!(p.delay(1, secs(10), secs(60), f64::NAN), Some(secs(10)));
        assert_eq!(p.delay(1, secs(10), secs(60), -3.0), Some(secs(8)));
    }

    #[test]
    fn retry_linear_repeats_the_base() {
        let p = RetryPolicy::Linear(2);
        assert_eq!(p.delay(1, secs(30), secs(3600), 0.5), Some(secs(30)));
        assert_eq!(p.delay(2, secs(30), secs(3600), 0.5), Some(secs(30)));
        assert_eq!(p.delay(3, secs(30), secs(3600), 0.5), None);
        assert_eq!(p.delay(1, secs(30), secs(10), 0.5), Some(secs(10)));
    }

    #[test]
    fn retry_schedule_is_exact_and_capped() {
        let p = RetryPolicy::Schedule(vec![secs(5), secs(300), secs(7200)]);
        assert_eq!(p.max_retries(), 3);
        assert_eq!(p.delay(1, S, secs(3600), 0.0), Some(secs(5)));
        assert_eq!(p.delay(2, S, secs(3600), 0.99), Some(secs(300)));
        assert_eq!(p.delay(3, S, secs(3600), 0.5), Some(secs(3600)));
        assert_eq!(p.delay(4, S, secs(3600), 0.5), None);
    }

    #[test]
    fn retry_none_never_retries() {
        assert_eq!(RetryPolicy::None.max_retries(), 0);
        assert_eq!(RetryPolicy::None.delay(1, S, S, 0.5), None);
    }

    #[test]
    fn retry_after_is_clamped_to_one_to_two_times_the_schedule() {
        assert_eq!(clamp_retry_after(secs(10), None), secs(10));
        assert_eq!(clamp_retry_after(secs(10), Some(secs(1))), secs(10));
        assert_eq!(clamp_retry_after(secs(10), Some(secs(15))), secs(15));
        assert_eq!(clamp_retry_after(secs(10), Some(secs(86_400))), secs(20));
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + secs(1_445_412_420); // 2015-10-21T07:27:00Z
        assert_eq!(parse_retry_after("120", now), Some(secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("tomorrow", now), None);
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", now),
            None
        );
    }

    #[test]
    fn retry_classify_maps_statuses() {
        use AttemptClass::*;
        let cases = [
            (None, Retryable),
            (Some(100), Retryable),
            (Some(200), Success),
            (Some(204), Success),
            (Some(299), Success),
            (Some(301), Fatal),
            (Some(308), Fatal),
            (Some(400), Fatal),
            (Some(401), Fatal),
            (Some(404), Fatal),
            (Some(410), Gone),
            (Some(429), Retryable),
            (Some(500), Retryable),
            (Some(503), Retryable),
            (Some(599), Retryable),
        ];
        for (status, want) in cases {
            assert_eq!(classify(status), want, "{status:?}");
        }
    }

    #[test]
    fn rate_parses_units_and_round_trips() {
        let r = |s: &str| s.parse::<Rate>();
        let n = |n: u32| NonZeroU32::new(n).expect("nonzero");
        assert_eq!(
            r("5/s"),
            Ok(Rate {
                count: n(5),
                per: secs(1)
            })
        );
        assert_eq!(
            r("5/sec"),
            Ok(Rate {
                count: n(5),
                per: secs(1)
            })
        );
        assert_eq!(
            r("30/m"),
            Ok(Rate {
                count: n(30),
                per: secs(60)
            })
        );
        assert_eq!(
            r(" 30 / MIN "),
            Ok(Rate {
                count: n(30),
                per: secs(60)
            })
        );
        assert_eq!(
            r("100/h"),
            Ok(Rate {
                count: n(100),
                per: secs(3600)
            })
        );
        assert_eq!(
            r("2/hour"),
            Ok(Rate {
                count: n(2),
                per: secs(3600)
            })
        );
        assert_eq!(
            r("3/10s"),
            Ok(Rate {
                count: n(3),
                per: secs(10)
            })
        );
        for s in ["5/s", "30/m", "100/h", "3/10s"] {
            assert_eq!(r(s).expect("parse").to_string(), s);
            let json = serde_json::to_string(&r(s).expect("parse")).expect("ser");
            assert_eq!(
                serde_json::from_str::<Rate>(&json).expect("de"),
                r(s).expect("parse")
            );
        }
    }

    #[test]
    fn rate_errors_name_the_value() {
        for bad in ["0/s", "5", "5/fortnight", "x/s", "-1/s", "5/0s", ""] {
            let err = bad.parse::<Rate>().expect_err(bad).to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        let err = serde_json::from_str::<Rate>("\"5/y\"")
            .expect_err("bad")
            .to_string();
        assert!(err.contains("5/y"), "{err}");
    }

    #[test]
    fn rate_quota_spreads_cells_with_a_burst_of_one() {
        let rate: Rate = "5/s".parse().expect("parse");
        let q = rate.quota(None);
        assert_eq!(q.replenish_interval(), Duration::from_millis(200));
        assert_eq!(q.burst_size().get(), 1);
        let q = rate.quota(NonZeroU32::new(3));
        assert_eq!(q.burst_size().get(), 3);
        let q = "30/m".parse::<Rate>().expect("parse").quota(None);
        assert_eq!(q.replenish_interval(), secs(2));
        let huge = Rate {
            count: NonZeroU32::MAX,
            per: Duration::from_nanos(1),
        };
        assert_eq!(
            huge.quota(None).replenish_interval(),
            Duration::from_nanos(1)
        );
    }
}
