//! Property tests for the pure cores: debounce coalescing, the retry schedule, path mapping
//! and the delivery window. Each property states an invariant the engine relies on; case
//! counts stay modest so the suite stays fast.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use relayarr_actors::debounce::coalesce::Coalescer;
use relayarr_actors::delivery::window::{Offer, Window};
use relayarr_actors::delivery::Job;
use relayarr_actors::hooks::retry::RetryPolicy;
use relayarr_actors::pathmap::{normalise, PathMapper, PathRewrite};
use relayarr_actors::store::{DebounceItem, Delivery, Group};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Shrinking a failure is worth a little time; a passing run must stay fast.
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// Debounce coalescing
// ---------------------------------------------------------------------------------------

/// Events in arrival order: (target, key, gap since the previous event, quiet, max wait).
fn debounce_events() -> impl Strategy<Value = Vec<(u8, u8, i64, i64, i64)>> {
    prop::collection::vec((0u8..2, 0u8..3, 0i64..400, 0i64..300, 0i64..1_000), 1..40)
}

proptest! {
    #![proptest_config(config(100))]

    /// Drives a coalescer with ticks every `tick` ms (plus a check at each arrival) and
    /// checks, for every fired group, against the items it says it covers: each event
    /// fires exactly once; a group never fires before it has been quiet for every item's
    /// quiet period unless its first item's max wait has passed; and it never fires later
    /// than one tick after the earlier of those two times.
    #[test]
    fn debounce_every_item_fires_once_within_its_window(
        events in debounce_events(),
        tick in 5i64..200,
    ) {
        let mut at = 0i64;
        let items: Vec<DebounceItem> = events
            .iter()
            .enumerate()
            .map(|(seq, (target, key, gap, quiet, max_wait))| {
                at += gap;
                DebounceItem {
                    target: format!("t{target}"),
                    key: format!("k{key}"),
                    event_seq: i64::try_from(seq).expect("small"),
                    received_at_ms: at,
                    quiet_ms: *quiet,
                    max_wait_ms: *max_wait,
                }
            })
            .collect();
        let by_seq: BTreeMap<i64, &DebounceItem> = items.iter().map(|i| (i.event_seq, i)).collect();

        let mut c = Coalescer::default();
        let mut fired: BTreeMap<i64, i64> = BTreeMap::new();
        let mut next = 0usize;
        let mut now = 0i64;
        let mut next_tick = 0i64;
        let end = at + 2_000 + tick;
        while now <= end {
            while next < items.len() && items[next].received_at_ms == now {
                c.add(&items[next]);
                next += 1;
            }
            for due in c.take_due(now) {
                let covered: Vec<&DebounceItem> = due.seqs.iter().map(|s| by_seq[s]).collect();
                let first = covered.iter().min_by_key(|i| (i.received_at_ms, i.event_seq)).expect("non-empty");
                prop_assert_eq!(due.first_at, first.received_at_ms);
                let quiet_until = covered.iter().map(|i| i.received_at_ms + i.quiet_ms).max().expect("non-empty");
                let deadline = first.received_at_ms + first.max_wait_ms;
                let due_at = quiet_until.min(deadline);
                prop_assert!(now >= due_at, "fired at {} before due {} ({:?})", now, due_at, due.seqs);
                prop_assert!(now <= due_at + tick, "fired at {} later than due {} + tick {}", now, due_at, tick);
                prop_assert!(now <= deadline + tick, "fired at {} after max wait {} + tick", now, deadline);
                for s in &due.seqs {
                    let item = by_seq[s];
                    prop_assert_eq!((&item.target, &item.key), (&due.target, &due.key));
                    prop_assert!(fired.insert(*s, now).is_none(), "event {} fired twice", s);
                }
            }
            if now == next_tick {
                next_tick += tick;
            }
            let next_arrival = items.get(next).map_or(i64::MAX, |i| i.received_at_ms);
            now = next_arrival.min(next_tick);
        }
        prop_assert!(c.is_empty(), "groups never fired: {:?}", c.groups().collect::<Vec<_>>());
        prop_assert_eq!(fired.len(), items.len(), "every event fires exactly once");
    }
}

// ---------------------------------------------------------------------------------------
// Retry schedule
// ---------------------------------------------------------------------------------------

fn policy() -> impl Strategy<Value = RetryPolicy> {
    prop_oneof![
        Just(RetryPolicy::None),
        (0u32..70).prop_map(RetryPolicy::Exponential),
        (0u32..70).prop_map(RetryPolicy::Linear),
        prop::collection::vec((0u64..100_000).prop_map(Duration::from_millis), 0..8)
            .prop_map(RetryPolicy::Schedule),
    ]
}

proptest! {
    #![proptest_config(config(300))]

    /// Delays exist exactly for retries 1..=max_retries, never exceed the cap, stay within
    /// the ±20 % jitter band around the nominal delay, and (for a fixed jitter) never
    /// shrink from one retry to the next under the exponential and linear policies.
    #[test]
    fn retry_delays_are_bounded_jittered_and_monotone(
        p in policy(),
        base_ms in 0u64..600_000,
        cap_ms in 0u64..86_400_000,
        jitter in prop_oneof![0.0f64..1.0, Just(0.5), Just(f64::NAN), Just(-3.0), Just(7.0)],
    ) {
        let (base, cap) = (Duration::from_millis(base_ms), Duration::from_millis(cap_ms));
        prop_assert_eq!(p.delay(0, base, cap, jitter), None);
        let max = p.max_retries();
        prop_assert_eq!(p.delay(max.saturating_add(1), base, cap, jitter), None);
        let mut prev = Duration::ZERO;
        for retry in 1..=max {
            let d = p.delay(retry, base, cap, jitter);
            prop_assert!(d.is_some(), "retry {} of {} has no delay", retry, max);
            let d = d.expect("checked");
            prop_assert!(d <= cap, "retry {}: {:?} above cap {:?}", retry, d, cap);
            let nominal = match &p {
                RetryPolicy::Exponential(_) => {
                    let factor = 2f64.powi(i32::try_from(retry - 1).expect("small"));
                    Some(Duration::from_secs_f64((base.as_secs_f64() * factor).min(cap.as_secs_f64())))
                }
                RetryPolicy::Linear(_) => Some(base.min(cap)),
                _ => None,
            };
            if let Some(nominal) = nominal {
                // 1 µs of slack for float rounding.
                let slack = Duration::from_micros(1);
                let lo = nominal.mul_f64(0.8).saturating_sub(slack);
                let hi = nominal.mul_f64(1.2) + slack;
                prop_assert!(d >= lo && d <= hi, "retry {}: {:?} outside [{:?}, {:?}]", retry, d, lo, hi);
                prop_assert!(d + slack >= prev, "retry {}: {:?} shorter than the one before ({:?})", retry, d, prev);
            }
            prev = d;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Path mapping
// ---------------------------------------------------------------------------------------

/// A folder or file name without separators.
fn segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9 ()._-]{1,8}"
}

fn posix_path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..6).prop_map(|s| format!("/{}", s.join("/")))
}

proptest! {
    #![proptest_config(config(100))]

    /// `normalise` and `map` accept any text without panicking, and `normalise` is
    /// idempotent.
    #[test]
    fn pathmap_never_panics_and_normalise_is_idempotent(
        path in any::<String>(),
        from in any::<String>(),
        to in any::<String>(),
        regex in any::<String>(),
    ) {
        let n = normalise(&path);
        prop_assert_eq!(normalise(&n), n.clone());
        for rule in [
            PathRewrite { from: Some(from.clone()), regex: None, to: to.clone() },
            PathRewrite { from: None, regex: Some(regex.clone()), to: to.clone() },
        ] {
            if let Ok(m) = PathMapper::try_new(&[rule]) {
                let mapped = m.map(&path);
                prop_assert_eq!(mapped.normalised, n.clone());
            }
        }
    }

    /// A prefix rule matches whole folder names only: `/a/b` maps `/a/b` and `/a/b/...`
    /// but never `/a/bc/...`; and mapping an already-mapped path again changes nothing
    /// when neither folder is inside the other.
    #[test]
    fn pathmap_prefix_respects_folder_boundaries_and_is_idempotent(
        from in posix_path(),
        to in posix_path(),
        rest in prop::collection::vec(segment(), 0..4),
        glued in segment(),
    ) {
        let mapper = PathMapper::try_new(&[PathRewrite { from: Some(from.clone()), regex: None, to: to.clone() }])
            .expect("a plain prefix rule is valid");
        let from_n = normalise(&from);
        let to_n = normalise(&to);

        let inside = if rest.is_empty() { from_n.clone() } else { format!("{from_n}/{}", rest.join("/")) };
        let m = mapper.map(&inside);
        prop_assert_eq!(m.rule, Some(0));
        let want = if rest.is_empty() { to_n.clone() } else { format!("{to_n}/{}", rest.join("/")) };
        prop_assert_eq!(&m.output, &want);
        prop_assert_eq!(normalise(&m.output), m.output.clone(), "prefix output is normalised");

        // Same characters, but the last folder name goes on: not a match.
        let beside = format!("{from_n}{glued}/x.mkv");
        let b = mapper.map(&beside);
        prop_assert_eq!(b.rule, None, "{} matched {}", beside, from_n);
        prop_assert_eq!(b.output, normalise(&beside));

        // Idempotence holds when neither folder contains the other: `/a` → `/a/b` maps
        // its own output again, and so does `/a/b` → `/a` for a path `/a/b/b`.
        let nested = to_n == from_n
            || to_n.starts_with(&format!("{from_n}/"))
            || from_n.starts_with(&format!("{to_n}/"));
        if !nested {
            let again = mapper.map(&m.output);
            prop_assert_eq!(again.output, m.output.clone(), "mapping twice changed {}", inside);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Delivery window
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Offer(i64),
    Pop,
    Load(Vec<i64>, usize),
    TakeGroup(u8),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            4 => (0i64..60).prop_map(Op::Offer),
            3 => Just(Op::Pop),
            2 => (prop::collection::vec(0i64..60, 0..12), 1usize..12).prop_map(|(ids, n)| Op::Load(ids, n)),
            1 => (0u8..3).prop_map(Op::TakeGroup),
        ],
        1..80,
    )
}

fn job(id: i64) -> Job {
    Job {
        delivery: Delivery {
            id,
            event_seq: id,
            event_id: format!("ev{id}"),
            event_received_at_ms: 0,
            hook: "h".into(),
            webhook_id: format!("msg_{id}"),
            attempts: 0,
            // Every third id belongs to a debounce group, so groups can be taken out.
            group: (id % 3 == 0).then(|| Group {
                key: format!("g{}", id % 2),
                seqs: vec![id],
            }),
        },
        event: None,
    }
}

proptest! {
    #![proptest_config(config(200))]

    /// Against a model (a sorted set of ids): the window never holds more than its cap,
    /// never holds a row twice nor one that is busy, and always hands out the lowest id.
    #[test]
    fn window_respects_cap_order_and_uniqueness(
        cap in 1usize..10,
        ops in ops(),
        busy_mod in 2i64..9,
    ) {
        // A fixed set of ids counts as in flight or being recorded.
        let busy = |id: i64| id % busy_mod == 1;
        let mut w = Window::new(cap);
        let mut model: BTreeSet<i64> = BTreeSet::new();
        for op in ops {
            match op {
                Op::Offer(id) => {
                    let got = w.offer(job(id), busy);
                    let want = if model.contains(&id) || busy(id) {
                        Offer::Known
                    } else if model.len() >= cap {
                        Offer::Full
                    } else {
                        model.insert(id);
                        Offer::Queued
                    };
                    prop_assert_eq!(got, want, "offer {}", id);
                    if want == Offer::Full {
                        prop_assert!(w.overflow());
                    }
                }
                Op::Pop => {
                    let got = w.pop().map(|j| j.delivery.id);
                    let want = model.pop_first();
                    prop_assert_eq!(got, want);
                }
                Op::Load(ids, asked) => {
                    let full_page = ids.len() >= asked;
                    let rows = ids.iter().map(|id| job(*id)).collect();
                    w.loaded(rows, asked, busy);
                    for id in ids {
                        if !model.contains(&id) && !busy(id) && model.len() < cap {
                            model.insert(id);
                        }
                    }
                    if full_page {
                        prop_assert!(w.overflow(), "a full page means more may wait");
                    }
                }
                Op::TakeGroup(g) => {
                    let key = format!("g{g}");
                    let mut got: Vec<i64> = w.take_same_group(&key).iter().map(|j| j.delivery.id).collect();
                    got.sort_unstable();
                    let want: Vec<i64> = model.iter().copied().filter(|id| id % 3 == 0 && format!("g{}", id % 2) == key).collect();
                    for id in &want {
                        model.remove(id);
                    }
                    prop_assert_eq!(got, want);
                }
            }
            prop_assert!(w.len() <= cap, "{} rows in a window of {}", w.len(), cap);
            prop_assert_eq!(w.len(), model.len());
        }
        let drained: Vec<i64> = std::iter::from_fn(|| w.pop().map(|j| j.delivery.id)).collect();
        prop_assert_eq!(drained, model.into_iter().collect::<Vec<_>>());
    }
}
