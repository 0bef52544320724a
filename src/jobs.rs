//! Replay jobs: what a `POST …/replay` started, and how far it got. The HTTP layer owns the
//! one registry (in its `AppState`); a job's task sends `WorkerMsg::Replay` to each target's
//! worker, the only writer of its rows, and records the answers here.
//!
//! Jobs live in memory only, the last [`MAX_JOBS`]: a job is a view of progress, not state
//! that must survive a restart (the re-queued deliveries are rows in the store).

use std::collections::VecDeque;
use std::sync::Mutex;

use relayarr_actors::store::{now_ms, rfc3339_ms};
use serde::Serialize;

/// How many jobs are remembered; the oldest finished job is forgotten first.
pub const MAX_JOBS: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
/// Where a replay job is.
pub enum JobState {
    /// Some targets have not answered yet.
    Running,
    /// Every target answered.
    Done,
    /// At least one target could not replay (see `errors`); the others' counts still hold.
    Failed,
}

/// What one target re-queued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobTarget {
    /// The target's name.
    pub target: String,
    /// Deliveries it re-queued.
    pub requeued: usize,
}

/// A replay job as `GET /api/v1/admin/jobs/{id}` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Job {
    /// The job's id (a ULID), for `GET /api/v1/admin/jobs/{id}`.
    pub job: String,
    /// `event` (one event at every target that had it) or `target` (a target since a time).
    pub kind: &'static str,
    /// The event id, or the target name.
    pub subject: String,
    /// For a `target` job: the time its deliveries are replayed from (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Running, done or failed.
    pub state: JobState,
    /// Targets the job will ask.
    pub targets_total: usize,
    /// Targets that answered (or failed to).
    pub targets_asked: usize,
    /// Deliveries re-queued so far, over every target.
    pub requeued: usize,
    /// Each target's answer so far.
    pub targets: Vec<JobTarget>,
    /// Why targets could not replay, one line each.
    pub errors: Vec<String>,
    /// When the job started (RFC 3339).
    pub started_at: String,
    /// When the last target answered (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

impl Job {
    /// Records one target's answer; the job ends with the last target.
    fn record(&mut self, target: &str, answer: Result<usize, String>) {
        self.targets_asked += 1;
        match answer {
            Ok(n) => {
                self.requeued += n;
                self.targets.push(JobTarget {
                    target: target.to_owned(),
                    requeued: n,
                });
            }
            Err(e) => self.errors.push(format!("{target}: {e}")),
        }
        if self.targets_asked >= self.targets_total {
            self.finish();
        }
    }

    fn finish(&mut self) {
        self.state = if self.errors.is_empty() {
            JobState::Done
        } else {
            JobState::Failed
        };
        self.finished_at = Some(rfc3339_ms(now_ms()));
    }
}

/// The bounded registry of replay jobs.
#[derive(Debug, Default)]
pub struct Jobs {
    jobs: Mutex<VecDeque<Job>>,
}

impl Jobs {
    /// Registers a running job over `targets` and returns it.
    pub fn start(
        &self,
        kind: &'static str,
        subject: &str,
        since: Option<&str>,
        targets: usize,
    ) -> Job {
        let mut job = Job {
            job: format!("job_{}", ulid::Ulid::new().to_string().to_ascii_lowercase()),
            kind,
            subject: subject.to_owned(),
            since: since.map(str::to_owned),
            state: JobState::Running,
            targets_total: targets,
            targets_asked: 0,
            requeued: 0,
            targets: Vec::new(),
            errors: Vec::new(),
            started_at: rfc3339_ms(now_ms()),
            finished_at: None,
        };
        if targets == 0 {
            job.finish();
        }
        let mut jobs = self.lock();
        if jobs.len() >= MAX_JOBS {
            let evict = jobs
                .iter()
                .position(|j| j.state != JobState::Running)
                .unwrap_or(0);
            jobs.remove(evict);
        }
        jobs.push_back(job.clone());
        job
    }

    /// Records a target's answer for job `id` (ignored if the job was forgotten).
    pub fn record(&self, id: &str, target: &str, answer: Result<usize, String>) {
        if let Some(j) = self.lock().iter_mut().find(|j| j.job == id) {
            j.record(target, answer);
        }
    }

    /// The job `id`, while it is remembered (the last [`MAX_JOBS`]).
    pub fn get(&self, id: &str) -> Option<Job> {
        self.lock().iter().find(|j| j.job == id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_finish_with_the_last_target_and_report_errors() {
        let jobs = Jobs::default();
        let j = jobs.start("event", "ev1", None, 2);
        assert_eq!(j.state, JobState::Running);
        jobs.record(&j.job, "a", Ok(3));
        assert_eq!(jobs.get(&j.job).map(|j| j.state), Some(JobState::Running));
        jobs.record(&j.job, "b", Err("did not answer".into()));
        let done = jobs.get(&j.job).expect("job");
        assert_eq!(done.state, JobState::Failed);
        assert_eq!((done.targets_asked, done.requeued), (2, 3));
        assert_eq!(done.errors, ["b: did not answer"]);
        assert!(done.finished_at.is_some());
        let empty = jobs.start("event", "ev2", None, 0);
        assert_eq!(empty.state, JobState::Done);
    }

    #[test]
    fn jobs_are_bounded_and_forget_finished_ones_first() {
        let jobs = Jobs::default();
        let running = jobs.start("target", "a", Some("1h"), 1);
        let ids: Vec<String> = (0..MAX_JOBS)
            .map(|_| jobs.start("target", "a", None, 0).job)
            .collect();
        assert!(jobs.get(&running.job).is_some(), "a running job is kept");
        assert!(jobs.get(&ids[0]).is_none(), "the oldest finished job went");
        assert!(jobs.get(&ids[MAX_JOBS - 1]).is_some());
        assert_eq!(jobs.lock().len(), MAX_JOBS);
    }
}
