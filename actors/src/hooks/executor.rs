//! The HTTP hook executor: one attempt renders the event (or a debounced group of events),
//! signs it and sends it, and the HTTP status decides the class.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::config::HookFormat;
use super::delivery::{send_once, AttemptResult, CompiledHook};
use super::format::EventEnvelope;
use super::retry::{classify, AttemptClass};
use crate::delivery::{Executor, Job, TargetPolicy};
use crate::model::NormalizedEvent;
use crate::store::{now_ms, Store};

/// Sends one hook delivery: loads its event if needed, renders, signs, sends, classifies.
pub struct HookExecutor {
    /// The compiled hook.
    pub hook: Arc<CompiledHook>,
    /// The hook's own client: its timeout, and the egress guard on every resolved address.
    pub client: reqwest::Client,
    /// Where the event is loaded from when the job does not carry it.
    pub store: Arc<dyn Store>,
}

impl HookExecutor {
    /// The engine's view of a hook's config.
    pub fn policy(hook: &CompiledHook, drain_grace: Duration) -> TargetPolicy {
        let c = &hook.cfg;
        TargetPolicy {
            name: c.name.clone(),
            max_in_flight: c.max_in_flight,
            rate: c.rate,
            burst: c.burst,
            retry: c.retry.clone(),
            retry_base: c.retry_base,
            retry_cap: c.retry_cap,
            disable_after: c.disable_after,
            enabled: c.enabled,
            drain_grace,
        }
    }

    /// The event to render: the router's copy, the stored one, or for a debounced group all
    /// of its events merged into one (episodes and files of every event).
    async fn event(&self, job: &Job) -> Result<Arc<NormalizedEvent>, String> {
        let d = &job.delivery;
        if let Some(g) = &d.group {
            let events = self
                .store
                .events_by_seq(g.seqs.clone())
                .await
                .map_err(|e| format!("cannot load the events of group {}: {e}", g.key))?;
            let all: Vec<&NormalizedEvent> = events.iter().map(|e| e.event.as_ref()).collect();
            return NormalizedEvent::merged(&all)
                .map(Arc::new)
                .ok_or_else(|| format!("the events of group {} are no longer stored", g.key));
        }
        if let Some(ev) = &job.event {
            return Ok(Arc::clone(ev));
        }
        match self.store.events_by_seq(vec![d.event_seq]).await {
            Ok(mut evs) if !evs.is_empty() => Ok(evs.swap_remove(0).event),
            Ok(_) => Err(format!("event {} is no longer stored", d.event_id)),
            Err(e) => Err(format!("cannot load event {}: {e}", d.event_id)),
        }
    }

    async fn run(&self, job: &Job) -> AttemptResult {
        let d = &job.delivery;
        let event = match self.event(job).await {
            Ok(ev) => ev,
            Err(e) => return load_failure(e),
        };
        let raw = if self.hook.cfg.format == HookFormat::Raw && d.group.is_none() {
            match self.store.raw_body(d.event_seq).await {
                Ok(raw) => raw,
                Err(e) => return load_failure(format!("cannot load the raw body: {e}")),
            }
        } else {
            None
        };
        let envelope = EventEnvelope {
            id: &d.event_id,
            received_at_ms: d.event_received_at_ms,
            event: &event,
        };
        send_once(
            &self.hook,
            &self.client,
            &envelope,
            raw.as_deref(),
            &d.webhook_id,
        )
        .await
    }
}

impl Executor for HookExecutor {
    fn attempt<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, (AttemptClass, AttemptResult)> {
        async move {
            let r = self.run(job).await;
            (classify(r.status), r)
        }
        .boxed()
    }
}

/// A failure to prepare the request: retried like a transport error.
pub fn load_failure(error: String) -> AttemptResult {
    AttemptResult {
        status: None,
        error: Some(error),
        started_at_ms: now_ms(),
        latency: Duration::ZERO,
        retry_after: None,
        request_excerpt: String::new(),
        response_excerpt: String::new(),
    }
}
