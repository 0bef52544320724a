//! Pure coalescing: events join groups by (target, key); a group is due once it has been
//! quiet for its quiet period, or once it has waited its max wait since its first event,
//! whichever comes first, so a steady stream cannot postpone a group forever.
//!
//! Times are unix milliseconds passed in by the caller; nothing here reads a clock.

use std::collections::{BTreeMap, BTreeSet};

use crate::store::DebounceItem;

/// A group's identity: the target and the coalescing key.
pub type GroupId = (String, String);

/// One open group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupState {
    /// Commit order of the events in the group.
    pub seqs: BTreeSet<i64>,
    /// Arrival time of its first event, unix milliseconds.
    pub first_at: i64,
    /// Arrival time of its latest event, unix milliseconds.
    pub last_at: i64,
    /// When the group fires: `min(max(at + quiet), first_at + max_wait)`.
    pub due_at: i64,
    /// The latest `at + quiet` of its events.
    quiet_until: i64,
    /// `first_at + max_wait` (the max wait of the first event).
    deadline: i64,
}

/// Every open group.
#[derive(Clone, Debug, Default)]
pub struct Coalescer {
    groups: BTreeMap<GroupId, GroupState>,
}

/// A group that is due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    /// The stored target name.
    pub target: String,
    /// The coalescing key.
    pub key: String,
    /// Commit order of the group's events, ascending.
    pub seqs: Vec<i64>,
    /// Arrival time of its first event, unix milliseconds.
    pub first_at: i64,
}

impl Coalescer {
    /// Adds an event to its group (opening it if needed). Returns true when the event
    /// joined an existing group (it was coalesced).
    pub fn add(&mut self, it: &DebounceItem) -> bool {
        let id = (it.target.clone(), it.key.clone());
        let quiet_until = it.received_at_ms.saturating_add(it.quiet_ms.max(0));
        match self.groups.get_mut(&id) {
            Some(g) => {
                g.seqs.insert(it.event_seq);
                g.last_at = g.last_at.max(it.received_at_ms);
                g.quiet_until = g.quiet_until.max(quiet_until);
                // An older event arriving late (recovery) can only bring the deadline forward.
                if it.received_at_ms < g.first_at {
                    g.first_at = it.received_at_ms;
                    g.deadline = g
                        .deadline
                        .min(it.received_at_ms.saturating_add(it.max_wait_ms.max(0)));
                }
                g.due_at = g.quiet_until.min(g.deadline);
                true
            }
            None => {
                let deadline = it.received_at_ms.saturating_add(it.max_wait_ms.max(0));
                self.groups.insert(
                    id,
                    GroupState {
                        seqs: BTreeSet::from([it.event_seq]),
                        first_at: it.received_at_ms,
                        last_at: it.received_at_ms,
                        due_at: quiet_until.min(deadline),
                        quiet_until,
                        deadline,
                    },
                );
                false
            }
        }
    }

    /// True when the group of `target` and `key` is open.
    pub fn contains(&self, target: &str, key: &str) -> bool {
        self.groups
            .contains_key(&(target.to_owned(), key.to_owned()))
    }

    /// The earliest time a group is due.
    pub fn next_due(&self) -> Option<i64> {
        self.groups.values().map(|g| g.due_at).min()
    }

    /// Removes and returns every group due at `now`, oldest first.
    pub fn take_due(&mut self, now: i64) -> Vec<Due> {
        let due: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| g.due_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let mut out: Vec<Due> = due
            .into_iter()
            .filter_map(|id| {
                let g = self.groups.remove(&id)?;
                Some(Due {
                    target: id.0,
                    key: id.1,
                    seqs: g.seqs.into_iter().collect(),
                    first_at: g.first_at,
                })
            })
            .collect();
        out.sort_by_key(|d| (d.first_at, d.seqs.first().copied()));
        out
    }

    /// Puts a group back (its fire failed); it is due again at `retry_at`.
    pub fn restore(&mut self, d: Due, retry_at: i64) {
        self.groups.insert(
            (d.target, d.key),
            GroupState {
                seqs: d.seqs.into_iter().collect(),
                first_at: d.first_at,
                last_at: d.first_at,
                due_at: retry_at,
                quiet_until: retry_at,
                deadline: retry_at,
            },
        );
    }

    /// How many groups are open.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// True when no group is open.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Open groups, for the admin API.
    pub fn groups(&self) -> impl Iterator<Item = (&GroupId, &GroupState)> {
        self.groups.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    fn item(target: &str, key: &str, seq: i64, at: i64) -> DebounceItem {
        DebounceItem {
            target: target.into(),
            key: key.into(),
            event_seq: seq,
            received_at_ms: at,
            quiet_ms: 15 * S,
            max_wait_ms: 120 * S,
        }
    }

    #[test]
    fn coalesce_season_pack_fires_once_after_the_burst() {
        let mut c = Coalescer::default();
        // 10 imports one second apart, then "import complete".
        for i in 0..11 {
            let joined = c.add(&item(
                "plex:home",
                "folder:/tv/Show/Season 01",
                i + 1,
                i * S,
            ));
            assert_eq!(joined, i > 0);
        }
        assert_eq!(c.len(), 1);
        assert!(
            c.take_due(24 * S).is_empty(),
            "still inside the quiet period"
        );
        assert_eq!(c.next_due(), Some(25 * S));
        let due = c.take_due(25 * S);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].seqs, (1..=11).collect::<Vec<_>>());
        assert!(c.is_empty());
    }

    #[test]
    fn coalesce_steady_stream_fires_at_max_wait() {
        let mut c = Coalescer::default();
        // One event every 10 s: never 15 s quiet.
        for i in 0..12 {
            c.add(&item("t", "k", i + 1, i * 10 * S));
            assert!(c.take_due(i * 10 * S).is_empty());
        }
        assert_eq!(c.next_due(), Some(120 * S), "max wait from the first event");
        let due = c.take_due(120 * S);
        assert_eq!(due[0].seqs.len(), 12);
        // The stream goes on: a new group opens.
        c.add(&item("t", "k", 13, 120 * S));
        assert_eq!(c.next_due(), Some(135 * S));
    }

    #[test]
    fn coalesce_delete_then_import_of_the_same_folder_is_one_group() {
        let mut c = Coalescer::default();
        c.add(&item("plex:home", "folder:/tv/A/Season 01", 1, 0));
        c.add(&item("plex:home", "folder:/tv/A/Season 01", 2, 5 * S));
        assert!(
            c.take_due(15 * S).is_empty(),
            "no scan between the delete and the import"
        );
        assert_eq!(c.take_due(20 * S).len(), 1);
    }

    #[test]
    fn coalesce_keys_and_targets_are_separate_groups() {
        let mut c = Coalescer::default();
        c.add(&item("plex:home", "folder:/a", 1, 0));
        c.add(&item("plex:home", "folder:/b", 2, 0));
        c.add(&item("discord", "folder:/a", 3, 0));
        let due = c.take_due(15 * S);
        assert_eq!(due.len(), 3);
    }

    #[test]
    fn coalesce_per_event_quiet_periods_extend_the_group() {
        let mut c = Coalescer::default();
        let mut slow = item("t", "k", 1, 0);
        slow.quiet_ms = 60 * S;
        c.add(&slow);
        c.add(&item("t", "k", 2, 10 * S));
        assert_eq!(c.next_due(), Some(60 * S), "the longest quiet period wins");
    }

    #[test]
    fn coalesce_late_old_event_brings_the_deadline_forward() {
        let mut c = Coalescer::default();
        c.add(&item("t", "k", 5, 200 * S));
        // Recovery re-adds an event received long before.
        c.add(&item("t", "k", 1, 0));
        assert_eq!(c.next_due(), Some(120 * S));
    }

    #[test]
    fn coalesce_zero_quiet_fires_immediately() {
        let mut c = Coalescer::default();
        let mut it = item("t", "k", 1, 7 * S);
        it.quiet_ms = 0;
        c.add(&it);
        assert_eq!(c.take_due(7 * S).len(), 1);
    }

    #[test]
    fn coalesce_restored_group_is_due_at_the_retry_time() {
        let mut c = Coalescer::default();
        c.add(&item("t", "k", 1, 0));
        let d = c.take_due(15 * S).remove(0);
        c.restore(d, 16 * S);
        assert!(c.take_due(15 * S + 500).is_empty());
        assert_eq!(c.take_due(16 * S)[0].seqs, vec![1]);
    }
}
