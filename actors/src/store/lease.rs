//! An instance's own reckoning of its lease, so that it stops working on its claims before
//! the other instances may take them over.
//!
//! The others treat this instance's claims as lapsed once their wall clock passes its last
//! committed heartbeat plus the lease. That can happen while this instance is alive: a
//! heartbeat that waits (for a pooled connection, on a lock, on a stalled server) fails
//! nothing, it is only late. So this instance counts from the moment it took each heartbeat's
//! timestamp, never from an answer, and holds its lease until that moment plus the lease,
//! less a margin (for the request already on its way, and for clocks a little apart).
//!
//! The **epoch** tells work claimed before a lapse from work claimed after it: it changes
//! whenever a heartbeat lands after the lease ran out. Work claimed while the lease held
//! under epoch `e` may be started while the lease holds under the same `e`: then it held
//! throughout, since a lapse in between would have changed the epoch when the next
//! heartbeat landed. Anything else may belong to another instance by now.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The fraction of the lease kept as a margin: an instance stops starting work on its
/// claims this much before the others could take them over.
const MARGIN_DIVISOR: u32 = 10;

/// This instance's lease as it reckons it: until when it holds, and its epoch.
#[derive(Debug)]
pub struct LeaseClock {
    lease: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Holds before this instant (the last heartbeat's timestamp + lease - margin).
    until: Instant,
    epoch: u64,
    /// Left the cluster: holds nothing any more.
    ended: bool,
}

impl LeaseClock {
    /// A lease counted from `started`: the moment just before the instance registered.
    pub fn new(lease: Duration, started: Instant) -> Self {
        let clock = LeaseClock {
            lease,
            state: Mutex::new(State {
                until: started,
                epoch: 0,
                ended: false,
            }),
        };
        clock.renewed(started, started);
        clock
    }

    /// How much of the lease is kept as a margin.
    fn margin(&self) -> Duration {
        self.lease / MARGIN_DIVISOR
    }

    /// A heartbeat stamped at `started` (taken just before its timestamp) committed at
    /// `landed`. If the lease had run out before it landed, the others may have taken
    /// claims over in between: a new epoch begins.
    pub fn renewed(&self, started: Instant, landed: Instant) {
        let mut st = self.lock();
        if st.ended {
            return;
        }
        if landed >= st.until {
            st.epoch += 1;
        }
        let until = started + self.lease.saturating_sub(self.margin());
        st.until = st.until.max(until);
    }

    /// The epoch while the lease holds at `now`; `None` once it may have lapsed in the
    /// other instances' view.
    pub fn at(&self, now: Instant) -> Option<u64> {
        let st = self.lock();
        (!st.ended && now < st.until).then_some(st.epoch)
    }

    /// The epoch while the lease holds now.
    pub fn current(&self) -> Option<u64> {
        self.at(Instant::now())
    }

    /// The instance left: its claims are free for the others at once.
    pub fn end(&self) {
        self.lock().ended = true;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(3);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn holds_until_the_lease_less_the_margin_counted_from_the_stamp() {
        let t0 = Instant::now();
        let c = LeaseClock::new(LEASE, t0);
        let first = c.at(t0).expect("holds at registration");
        assert_eq!(c.at(t0 + ms(2_699)), Some(first));
        assert_eq!(
            c.at(t0 + ms(2_700)),
            None,
            "the margin is a tenth of the lease"
        );
        // A heartbeat stamped at 1 s that took 1.5 s to land extends from its stamp.
        c.renewed(t0 + ms(1_000), t0 + ms(2_500));
        assert_eq!(
            c.at(t0 + ms(3_699)),
            Some(first),
            "landed in time: same epoch"
        );
        assert_eq!(c.at(t0 + ms(3_700)), None);
    }

    #[test]
    fn a_heartbeat_landing_after_the_lease_ran_out_starts_a_new_epoch() {
        let t0 = Instant::now();
        let c = LeaseClock::new(LEASE, t0);
        let first = c.at(t0).expect("holds");
        // Stamped while the lease held, landed after it ran out: the others may have taken
        // claims over in between, so work claimed before must not start.
        c.renewed(t0 + ms(2_000), t0 + ms(2_800));
        let second = c.at(t0 + ms(2_800)).expect("holds again");
        assert_ne!(first, second);
        // On time again: the epoch stays.
        c.renewed(t0 + ms(3_000), t0 + ms(3_010));
        assert_eq!(c.at(t0 + ms(5_000)), Some(second));
    }

    #[test]
    fn a_late_stamp_never_shortens_the_lease() {
        let t0 = Instant::now();
        let c = LeaseClock::new(LEASE, t0);
        c.renewed(t0 + ms(1_000), t0 + ms(1_010));
        c.renewed(t0 + ms(500), t0 + ms(1_020));
        assert!(c.at(t0 + ms(3_600)).is_some());
    }

    #[test]
    fn after_leaving_nothing_holds() {
        let t0 = Instant::now();
        let c = LeaseClock::new(LEASE, t0);
        c.end();
        assert_eq!(c.at(t0), None);
        c.renewed(t0 + ms(10), t0 + ms(20));
        assert_eq!(
            c.at(t0 + ms(30)),
            None,
            "a heartbeat after leaving holds nothing"
        );
    }
}
