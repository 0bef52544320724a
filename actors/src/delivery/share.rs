//! Splitting a target's limits over the live instances that share one database.
//!
//! Several relayarr instances on one PostgreSQL each run a worker per target. A target's cap
//! and rate are for the target as a whole, so each instance takes a share: the limit divided
//! by the number of live instances, the first `limit % n` instances (in instance-id order,
//! which every instance sees alike) taking one more. The shares add up to the limit exactly.
//! An instance whose share of the cap is 0 (a cap smaller than the number of instances)
//! starts nothing for that target and leaves its rows to the others. A single instance (and
//! SQLite, which has one) has the whole limit.
//!
//! While membership changes, requests started under the old shares finish under them: a
//! joining instance may briefly see the target busier than its share. A crashed instance's
//! requests die with it, so a crash never makes the sum exceed the cap.

use std::num::NonZeroU32;

use crate::hooks::retry::Rate;

/// This instance's place among the live instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    /// Position of this instance among the live ones, in id order.
    pub index: usize,
    /// How many instances are live (at least 1: this one).
    pub of: usize,
}

impl Default for Share {
    fn default() -> Self {
        Share { index: 0, of: 1 }
    }
}

impl Share {
    /// From the sorted ids of the live instances and this instance's id. An instance that
    /// is missing from the list (its heartbeat has not landed yet) counts itself in.
    pub fn among(live: &[String], me: &str) -> Share {
        match live.binary_search_by(|id| id.as_str().cmp(me)) {
            Ok(index) => Share {
                index,
                of: live.len(),
            },
            Err(index) => Share {
                index,
                of: live.len() + 1,
            },
        }
    }

    /// No part of anything: an instance that lost its lease starts nothing.
    pub fn fenced() -> Share {
        Share {
            index: usize::MAX,
            of: usize::MAX,
        }
    }

    /// This instance's part of `total`.
    pub fn split(self, total: u32) -> u32 {
        let of = u32::try_from(self.of.max(1)).unwrap_or(u32::MAX);
        let index = u32::try_from(self.index).unwrap_or(u32::MAX);
        total / of + u32::from(index < total % of)
    }

    /// This instance's part of a rate (`None`: none at all), same period.
    pub fn rate(self, rate: Rate) -> Option<Rate> {
        NonZeroU32::new(self.split(rate.count.get())).map(|count| Rate {
            count,
            per: rate.per,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn shares_add_up_to_the_limit() {
        for of in 1..=5usize {
            for total in 0..=17u32 {
                let sum: u32 = (0..of).map(|index| Share { index, of }.split(total)).sum();
                assert_eq!(sum, total, "{total} over {of}");
            }
        }
        assert_eq!(Share { index: 0, of: 2 }.split(5), 3);
        assert_eq!(Share { index: 1, of: 2 }.split(5), 2);
        assert_eq!(
            Share { index: 1, of: 2 }.split(1),
            0,
            "cap 1: one instance has it"
        );
    }

    #[test]
    fn a_lone_instance_has_everything() {
        let s = Share::default();
        assert_eq!(s.split(4), 4);
        assert_eq!(Share::among(&ids(&["a"]), "a"), s);
    }

    #[test]
    fn position_is_by_id_and_a_missing_self_counts_in() {
        assert_eq!(
            Share::among(&ids(&["a", "b", "c"]), "b"),
            Share { index: 1, of: 3 }
        );
        assert_eq!(
            Share::among(&ids(&["a", "c"]), "b"),
            Share { index: 1, of: 3 }
        );
    }

    #[test]
    fn rate_is_split_over_the_same_period() {
        let r = Rate {
            count: NonZeroU32::new(5).expect("5"),
            per: Duration::from_secs(1),
        };
        let mine = Share { index: 1, of: 2 }.rate(r).expect("a part");
        assert_eq!((mine.count.get(), mine.per), (2, Duration::from_secs(1)));
        let one = Rate {
            count: NonZeroU32::MIN,
            per: Duration::from_secs(1),
        };
        assert!(Share { index: 1, of: 2 }.rate(one).is_none());
    }

    #[test]
    fn a_fenced_instance_has_nothing() {
        assert_eq!(Share::fenced().split(1), 0);
        assert_eq!(Share::fenced().split(10_000), 0);
    }
}
