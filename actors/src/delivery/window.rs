//! The worker's bounded window of pending deliveries: pure bookkeeping, no I/O.
//!
//! At most `cap` deliveries are held in memory; the rest wait in the store, and `overflow`
//! says so. A delivery enters the window at most once: ids already in it, in flight, or
//! waiting for their outcome to be written (`busy`) are refused, which is what keeps a store
//! load from handing the worker a row it is already working on.

use std::collections::{HashSet, VecDeque};

use super::Job;

/// Deliveries held in memory per target; the rest wait in the store. It is also how many
/// finished attempts a target may leave unwritten before it starts nothing more.
///
/// 512 covers ~40 ms of a fast local hook at its cap, and a load refills the window in one
/// query. 1,024 held twice the events for no more throughput (the peak RSS of 8 saturated
/// hooks was ~5 MiB higher); 256 made a single hook that falls behind wait on its loads
/// (lag p99 up to 0.6 s instead of ~40 ms). README "Smaller windows" has the runs.
pub const WINDOW: usize = 512;

/// The bounded window: queued jobs in order, the ids it knows, and whether the store holds more.
#[derive(Debug)]
pub struct Window {
    queue: VecDeque<Job>,
    known: HashSet<i64>,
    cap: usize,
    /// Rows may be waiting in the store beyond the window.
    overflow: bool,
}

/// What happened to an offered delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Taken into the window.
    Queued,
    /// Already in the window, in flight or being recorded.
    Known,
    /// The window is full; the row stays in the store.
    Full,
}

impl Window {
    /// A fresh window assumes rows are waiting in the store.
    pub fn new(cap: usize) -> Self {
        Window {
            queue: VecDeque::new(),
            known: HashSet::new(),
            cap: cap.max(1),
            overflow: true,
        }
    }

    /// How many jobs are queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether rows may be waiting in the store beyond the window.
    pub fn overflow(&self) -> bool {
        self.overflow
    }

    /// Something changed in the store (a replay): look there again.
    pub fn mark_overflow(&mut self) {
        self.overflow = true;
    }

    /// Offers a job; `busy` says whether its id is in flight or being recorded elsewhere.
    pub fn offer(&mut self, job: Job, busy: impl Fn(i64) -> bool) -> Offer {
        let id = job.delivery.id;
        if self.known.contains(&id) || busy(id) {
            return Offer::Known;
        }
        if self.queue.len() >= self.cap {
            self.overflow = true;
            return Offer::Full;
        }
        self.known.insert(id);
        // Oldest first, by delivery id: rows a load brings in (retries now due, or work taken
        // over from an instance whose lease lapsed) go ahead of newer rows already queued,
        // not behind up to a whole window of them. New rows arrive in id order, so this is
        // almost always the back.
        let at = self.queue.partition_point(|j| j.delivery.id < id);
        self.queue.insert(at, job);
        Offer::Queued
    }

    /// The next delivery to start. It leaves the window; the caller marks it busy.
    pub fn pop(&mut self) -> Option<Job> {
        let job = self.queue.pop_front()?;
        self.known.remove(&job.delivery.id);
        Some(job)
    }

    /// Takes the queued deliveries of the debounce group `key` out of the window: they ride
    /// along with the one of that key starting now (one partial scan of a folder covers
    /// every group of that folder that is still waiting, e.g. after Plex was down).
    pub fn take_same_group(&mut self, key: &str) -> Vec<Job> {
        let mut riders = Vec::new();
        let mut i = 0;
        while i < self.queue.len() {
            let same = self.queue[i]
                .delivery
                .group
                .as_ref()
                .is_some_and(|g| g.key == key);
            match same.then(|| self.queue.remove(i)).flatten() {
                Some(job) => {
                    self.known.remove(&job.delivery.id);
                    riders.push(job);
                }
                None => i += 1,
            }
        }
        riders
    }

    /// Worth asking the store for more: rows wait there, or the window is running low.
    pub fn wants_load(&self) -> bool {
        self.queue.len() < self.cap && (self.overflow || self.queue.len() < self.cap / 2)
    }

    /// How many rows to ask for: the room left, plus enough to cover rows the store may
    /// return that are busy (they are skipped).
    pub fn load_limit(&self, busy: usize) -> usize {
        (self.cap - self.queue.len().min(self.cap)) + busy.min(self.cap)
    }

    /// Takes a page loaded from the store. A full page means more may be waiting.
    pub fn loaded(&mut self, jobs: Vec<Job>, asked: usize, busy: impl Fn(i64) -> bool) {
        self.overflow = jobs.len() >= asked;
        for job in jobs {
            let _ = self.offer(job, &busy);
        }
    }
}

/// Whether one more request may start: enabled, not draining, and under the cap, counting
/// requests that an earlier incarnation of the worker left running.
pub fn may_start(in_flight: usize, cap: u32, enabled: bool, draining: bool) -> bool {
    enabled && !draining && in_flight < cap as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Delivery;

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
                group: None,
            },
            event: None,
        }
    }

    #[test]
    fn window_refuses_known_and_busy_ids() {
        let mut w = Window::new(4);
        assert_eq!(w.offer(job(1), |_| false), Offer::Queued);
        assert_eq!(w.offer(job(1), |_| false), Offer::Known);
        assert_eq!(w.offer(job(2), |id| id == 2), Offer::Known);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn window_full_sets_overflow_and_keeps_order() {
        let mut w = Window::new(2);
        w.loaded(vec![], 10, |_| false);
        assert!(!w.overflow());
        for i in 1..=3 {
            w.offer(job(i), |_| false);
        }
        assert!(w.overflow(), "the third row stays in the store");
        assert_eq!(w.pop().map(|j| j.delivery.id), Some(1));
        assert_eq!(w.pop().map(|j| j.delivery.id), Some(2));
        assert!(w.pop().is_none());
        // Popped ids may come back later (a retry loaded from the store).
        assert_eq!(w.offer(job(1), |_| false), Offer::Queued);
    }

    /// Work taken over from a dead instance (older rows, loaded later) must not wait behind
    /// a window of newer rows.
    #[test]
    fn window_older_rows_go_first_whenever_they_arrive() {
        let mut w = Window::new(8);
        for i in [10, 11, 12] {
            w.offer(job(i), |_| false);
        }
        w.loaded(vec![job(3), job(11), job(7)], 8, |_| false);
        let order: Vec<i64> = std::iter::from_fn(|| w.pop().map(|j| j.delivery.id)).collect();
        assert_eq!(order, vec![3, 7, 10, 11, 12]);
    }

    #[test]
    fn window_same_group_deliveries_ride_along() {
        let grouped = |id: i64, key: &str| {
            let mut j = job(id);
            j.delivery.group = Some(crate::store::Group {
                key: key.into(),
                seqs: vec![id],
            });
            j
        };
        let mut w = Window::new(10);
        for j in [
            grouped(1, "folder:/a"),
            job(2),
            grouped(3, "folder:/b"),
            grouped(4, "folder:/a"),
        ] {
            w.offer(j, |_| false);
        }
        let first = w.pop().expect("job");
        assert_eq!(first.delivery.id, 1);
        let riders: Vec<i64> = w
            .take_same_group("folder:/a")
            .iter()
            .map(|j| j.delivery.id)
            .collect();
        assert_eq!(riders, vec![4]);
        assert_eq!(w.len(), 2, "other keys and plain deliveries stay");
        // A rider left the window: it may be offered again later (say, as a retry).
        assert_eq!(w.offer(grouped(4, "folder:/a"), |_| false), Offer::Queued);
    }

    #[test]
    fn window_load_limit_covers_busy_rows() {
        let mut w = Window::new(10);
        w.offer(job(1), |_| false);
        assert_eq!(w.load_limit(0), 9);
        assert_eq!(w.load_limit(3), 12);
        assert_eq!(w.load_limit(100), 19);
    }

    #[test]
    fn window_loaded_page_skips_busy_and_reports_overflow() {
        let mut w = Window::new(10);
        let rows: Vec<Job> = (1..=4).map(job).collect();
        w.loaded(rows, 4, |id| id == 3);
        assert!(w.overflow(), "a full page means more may wait");
        assert_eq!(w.len(), 3);
        w.loaded(vec![job(9)], 4, |_| false);
        assert!(!w.overflow());
    }

    #[test]
    fn window_wants_load_when_low_or_overflowing() {
        let mut w = Window::new(4);
        assert!(w.wants_load(), "a new window looks in the store");
        w.loaded(vec![], 4, |_| false);
        assert!(w.wants_load(), "empty: below half");
        for i in 1..=3 {
            w.offer(job(i), |_| false);
        }
        assert!(!w.wants_load(), "above half and nothing waiting");
        w.mark_overflow();
        assert!(w.wants_load());
        w.offer(job(4), |_| false);
        assert!(!w.wants_load(), "full: no room to load into");
    }

    #[test]
    fn may_start_counts_the_cap_enable_and_drain() {
        assert!(may_start(1, 2, true, false));
        assert!(!may_start(2, 2, true, false));
        assert!(
            !may_start(3, 2, true, false),
            "an earlier incarnation's requests count"
        );
        assert!(!may_start(0, 2, false, false));
        assert!(!may_start(0, 2, true, true), "draining starts nothing new");
    }
}
