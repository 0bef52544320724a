//! The poller's cursor: where in an app's history it has read up to, and which records near
//! that point it has already handled.
//!
//! `history/since?date=D` returns every record with `date >= D` (inclusive), oldest first,
//! with whole-second dates, so many records can share the cursor's second and a strict `>`
//! would lose them. The cursor is therefore a date plus the ids handled at or after
//! `date - overlap`: each read starts `overlap` before the date, and the ids say which
//! records of that window are old news. Ids older than the window are dropped, because a
//! read never returns them again.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A poller's saved position. Stored as JSON under the poller's name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Unix seconds (the app's clock) of the newest record handled; before the first record,
    /// the time of the first successful read (relayarr's clock). `None` until then.
    #[serde(default)]
    pub at: Option<i64>,
    /// Record ids handled within `overlap` of `at`, with their dates (unix seconds).
    #[serde(default)]
    pub seen: BTreeMap<i64, i64>,
    /// Events recovered over the poller's life.
    #[serde(default)]
    pub recovered: u64,
}

impl Cursor {
    /// The `date` of the next read (unix seconds): `overlap` before the cursor, or before
    /// `now_s` on the very first read.
    pub fn read_from(&self, overlap: Duration, now_s: i64) -> i64 {
        self.at.unwrap_or(now_s).saturating_sub(secs(overlap))
    }

    /// True when this record was handled by an earlier read.
    pub fn is_seen(&self, id: i64) -> bool {
        self.seen.contains_key(&id)
    }

    /// The cursor after a read whose records were all committed. `handled` are the records
    /// that read dealt with for good (id, unix seconds); records it left for later are not
    /// among them. `now_s` starts a cursor that has never seen a record.
    pub fn advanced(
        &self,
        handled: impl IntoIterator<Item = (i64, i64)>,
        recovered: u64,
        overlap: Duration,
        now_s: i64,
    ) -> Cursor {
        let mut next = self.clone();
        next.recovered += recovered;
        let mut at = self.at.unwrap_or(now_s);
        for (id, date) in handled {
            next.seen.insert(id, date);
            at = at.max(date);
        }
        next.at = Some(at);
        let keep_from = at.saturating_sub(secs(overlap));
        next.seen.retain(|_, date| *date >= keep_from);
        next
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Unix seconds as the *arr apps write dates: `2025-03-10T18:22:41Z` (UTC, no fraction).
pub fn format_date(unix_s: i64) -> String {
    const FMT: &[time::format_description::FormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(unix_s)
        .ok()
        .and_then(|t| t.format(FMT).ok())
        .unwrap_or_else(|| unix_s.to_string())
}

/// An RFC 3339 date (with or without fraction or offset) as unix seconds, fraction dropped.
pub fn parse_date(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn cursor_first_read_starts_overlap_before_now_and_pins_the_start() {
        let c = Cursor::default();
        assert_eq!(c.read_from(HOUR, 10_000), 10_000 - 3600);
        // A read with no records still pins the cursor, so a long stop does not slide the
        // window past what happened meanwhile.
        let c = c.advanced([], 0, HOUR, 10_000);
        assert_eq!(c.at, Some(10_000));
        assert_eq!(c.read_from(HOUR, 99_999), 10_000 - 3600);
    }

    #[test]
    fn cursor_is_inclusive_at_second_precision() {
        // Two records share the second 5000; the first read handled only one of them (the
        // other was committed later with the same date).
        let c = Cursor::default().advanced([(1, 5000)], 0, HOUR, 4000);
        assert_eq!(c.at, Some(5000));
        // The next read starts before 5000, so the late record is returned again...
        assert!(c.read_from(HOUR, 6000) <= 5000);
        // ...and only the one already handled is recognised.
        assert!(c.is_seen(1));
        assert!(!c.is_seen(2));
        let c = c.advanced([(2, 5000)], 1, HOUR, 6000);
        assert!(c.is_seen(1) && c.is_seen(2));
        assert_eq!(c.at, Some(5000));
        assert_eq!(c.recovered, 1);
    }

    #[test]
    fn cursor_forgets_ids_that_no_read_returns_again() {
        let c = Cursor::default().advanced([(1, 1000), (2, 3000)], 0, HOUR, 0);
        let c = c.advanced([(3, 1000 + 3600 + 500)], 0, HOUR, 0);
        assert_eq!(c.at, Some(5100));
        // Read from 1500: record 1 (1000) can never come back; 2 (3000) still can.
        assert!(!c.is_seen(1));
        assert!(c.is_seen(2) && c.is_seen(3));
    }

    #[test]
    fn cursor_never_moves_back_for_late_records() {
        let c = Cursor::default().advanced([(1, 9000)], 0, HOUR, 0);
        let c = c.advanced([(2, 8000)], 0, HOUR, 0);
        assert_eq!(c.at, Some(9000));
        assert!(c.is_seen(2));
    }

    #[test]
    fn cursor_round_trips_as_json() {
        let c = Cursor::default().advanced([(7, 1_741_630_961)], 3, HOUR, 0);
        let json = serde_json::to_string(&c).expect("serialise");
        assert_eq!(serde_json::from_str::<Cursor>(&json).expect("parse"), c);
    }

    #[test]
    fn dates_are_written_like_the_arr_apps_write_them() {
        assert_eq!(format_date(1_741_630_961), "2025-03-10T18:22:41Z");
        assert_eq!(parse_date("2025-03-10T18:22:41Z"), Some(1_741_630_961));
        assert_eq!(parse_date("2025-03-10T18:22:41.789Z"), Some(1_741_630_961));
        assert_eq!(parse_date("2025-03-10T19:22:41+01:00"), Some(1_741_630_961));
        assert_eq!(parse_date("yesterday"), None);
    }
}
