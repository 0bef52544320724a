//! `Relay`: the embeddable service. `Relay::builder(config).start(listener, shutdown)` opens
//! the store, starts the supervision tree, starts serving HTTP and returns a
//! [`RelayHandle`]; the relay then runs in its own task until `shutdown` resolves (or
//! [`RelayHandle::shutdown`] is called, or the actor tree fails), and stops in order:
//! ingress, delivery workers (drained under the grace period), actors (sources first,
//! history last), store flush.
//!
//! The handle is the embedding API: the bound address, runtime tuning of a target's limits
//! (a message to the target's own worker, as `PATCH /api/v1/admin/hooks/{name}` sends),
//! the targets' live stats, a subscription to committed events, and the supervision tree
//! that `GET /api/v1/actors` serves.

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::ActorRef;
use relayarr_actors::delivery::worker::WorkerMsg;
use relayarr_actors::delivery::TargetStats;
use relayarr_actors::hooks::retry::Rate;
use relayarr_actors::metrics::Metrics;
use relayarr_actors::store::{open as open_store, CommittedEvent, Store, StoreError};
use relayarr_actors::supervisor::{render_tree, SupervisorMsg, TreeNode};
use relayarr_actors::system::{
    drain_workers, start_system, Names, SystemConfig, TargetRegistry, TargetSpec,
};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::http::{router, AppState};

/// Why the relay could not start, or how it ended.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The store could not be opened, or failed to flush at the end.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A target or a source did not compile, or the supervision tree did not start.
    #[error("could not start the actor tree: {0}")]
    Spawn(String),
    /// The listener's address could not be read, or the HTTP server failed.
    #[error("http server: {0}")]
    Serve(#[from] std::io::Error),
    /// The root supervisor gave up: the relay stopped without being asked to.
    #[error("the actor tree stopped unexpectedly (a supervisor escalated past the root)")]
    TreeFailed,
    /// The relay's task panicked or was cancelled (its runtime shut down under it).
    #[error("the relay task ended abnormally: {0}")]
    Task(String),
}

/// Why [`RelayHandle::tune`] or [`RelayHandle::targets`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// No hook or Plex server has this name (a Plex target is named `plex:<server>`).
    #[error("no target named `{0}`")]
    UnknownTarget(String),
    /// A value of the [`Tuning`] is out of range; nothing was changed.
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        /// The field: `max_in_flight`, `rate` or `burst`.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        reason: String,
    },
    /// The target's worker is restarting or did not answer in time; retry shortly.
    #[error("`{0}` is restarting or did not answer; retry shortly")]
    Unavailable(String),
}

/// A change to a target's limits, applied by [`RelayHandle::tune`]. Fields left unset keep
/// their current value. Like the admin API's `PATCH`, the change takes effect for the next
/// request, needs no restart, and is persisted (it wins over the config file at the next
/// start).
///
/// ```
/// let t = relayarr::Tuning::new().max_in_flight(2).rate("5/s").burst(2);
/// # let _ = t;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tuning {
    max_in_flight: Option<u32>,
    rate: Option<Option<String>>,
    burst: Option<u32>,
    enabled: Option<bool>,
}

impl Tuning {
    /// A change that changes nothing (tune then only reads the target's stats).
    pub fn new() -> Self {
        Tuning::default()
    }

    /// Requests the target may have in flight at once (at least 1).
    pub fn max_in_flight(mut self, cap: u32) -> Self {
        self.max_in_flight = Some(cap);
        self
    }

    /// A rate such as `"5/s"`, `"30/m"` or `"100/h"`.
    pub fn rate(mut self, rate: impl Into<String>) -> Self {
        self.rate = Some(Some(rate.into()));
        self
    }

    /// Removes the target's rate limit.
    pub fn no_rate(mut self) -> Self {
        self.rate = Some(None);
        self
    }

    /// Requests allowed at once after idling, under the rate (at least 1).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Enables the target (its pending deliveries go out) or disables it (events are kept).
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = Some(enabled);
        self
    }

    /// The typed limits, or the first invalid field. Checked before anything is sent, so
    /// an invalid tuning changes nothing.
    fn validate(&self) -> Result<ValidTuning, TargetError> {
        let nonzero = |field: &'static str, v: Option<u32>| {
            v.map(|n| {
                NonZeroU32::new(n).ok_or_else(|| TargetError::Invalid {
                    field,
                    value: n.to_string(),
                    reason: "must be at least 1".into(),
                })
            })
            .transpose()
        };
        let rate = match &self.rate {
            None => None,
            Some(None) => Some(None),
            Some(Some(text)) => Some(Some(text.parse::<Rate>().map_err(|e| {
                TargetError::Invalid {
                    field: "rate",
                    value: text.clone(),
                    reason: e.to_string(),
                }
            })?)),
        };
        Ok(ValidTuning {
            max_in_flight: nonzero("max_in_flight", self.max_in_flight)?,
            rate,
            burst: nonzero("burst", self.burst)?,
            enabled: self.enabled,
        })
    }
}

/// A [`Tuning`] whose values are known good: what the worker's messages carry. The admin
/// API's `PATCH` builds one too, so both go through [`ValidTuning::apply`].
pub(crate) struct ValidTuning {
    pub(crate) max_in_flight: Option<NonZeroU32>,
    pub(crate) rate: Option<Option<Rate>>,
    pub(crate) burst: Option<NonZeroU32>,
    pub(crate) enabled: Option<bool>,
}

impl ValidTuning {
    /// Sends the change to the target's worker: the limits first, then the enabled state,
    /// each one call (the worker persists them); with nothing to change, only asks for its
    /// stats. Returns the stats after the last call, or `None` if the worker did not answer
    /// one of them within `timeout`.
    pub(crate) async fn apply(
        self,
        worker: &ActorRef<WorkerMsg>,
        timeout: Duration,
    ) -> Option<TargetStats> {
        let mut stats = None;
        if self.max_in_flight.is_some() || self.rate.is_some() || self.burst.is_some() {
            let (max_in_flight, rate, burst) = (self.max_in_flight, self.rate, self.burst);
            stats = Some(answer(
                worker
                    .call(
                        |reply| WorkerMsg::SetLimits {
                            max_in_flight,
                            rate,
                            burst,
                            reply,
                        },
                        Some(timeout),
                    )
                    .await,
            )?);
        }
        if let Some(enabled) = self.enabled {
            stats = Some(answer(
                worker
                    .call(|reply| WorkerMsg::SetEnabled(enabled, reply), Some(timeout))
                    .await,
            )?);
        }
        match stats {
            Some(s) => Some(s),
            None => answer(worker.call(WorkerMsg::Stats, Some(timeout)).await),
        }
    }
}

/// The value of a call the worker answered in time.
fn answer<T>(r: Result<CallResult<T>, ractor::MessagingErr<WorkerMsg>>) -> Option<T> {
    match r {
        Ok(CallResult::Success(v)) => Some(v),
        _ => None,
    }
}

/// Entry point for running relayarr, in its binary or embedded in another program.
///
/// [`Relay::builder`] takes a validated [`Config`]; [`RelayBuilder::start`] takes the
/// listener and a shutdown future (so a test or a host program binds the address, port 0
/// included) and returns a [`RelayHandle`] once the relay serves.
///
/// The core of `examples/embed.rs`, run as a test: start on 127.0.0.1:0 with a temporary
/// data dir, post one Sonarr event, see it on the subscription, stop.
///
/// ```
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let data = tempfile::tempdir()?;
/// let toml = format!(
///     r#"
///     [server]
///     data_dir = {:?}
///
///     [[source]]
///     name = "sonarr"
///     kind = "sonarr"
///     auth = {{ header = {{ name = "X-Api-Key", value = "not-a-real-key" }} }}
///     "#,
///     data.path().display().to_string()
/// );
/// let config = relayarr::Config::from_toml_str("embedded", &toml, std::iter::empty())
///     .map_err(|errors| format!("{errors:?}"))?;
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let relay = relayarr::Relay::builder(config)
///     .start(listener, std::future::pending())
///     .await?;
/// let mut events = relay.subscribe();
///
/// let answer = reqwest::Client::new()
///     .post(format!("http://{}/api/v1/webhooks/sonarr", relay.local_addr()))
///     .header("X-Api-Key", "not-a-real-key")
///     .header("content-type", "application/json")
///     .body(r#"{"eventType":"Test","instanceName":"Sonarr"}"#)
///     .send()
///     .await?;
/// assert_eq!(answer.status(), 202);
/// let id = answer.json::<serde_json::Value>().await?["id"].clone();
///
/// // Published after the commit: the event is in the store by now.
/// let committed = tokio::time::timeout(std::time::Duration::from_secs(10), events.recv()).await??;
/// assert_eq!(committed.id, id.as_str().unwrap_or_default());
///
/// relay.shutdown();
/// relay.wait().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Relay;

impl Relay {
    /// A builder for a relay with this (validated) config.
    pub fn builder(config: Config) -> RelayBuilder {
        RelayBuilder {
            config,
            namespace: String::new(),
            store: None,
        }
    }
}

/// Options of a relay before it starts; see [`Relay::builder`].
pub struct RelayBuilder {
    config: Config,
    namespace: String,
    store: Option<Arc<dyn Store>>,
}

impl std::fmt::Debug for RelayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayBuilder")
            .field("namespace", &self.namespace)
            .field("store", &self.store.as_ref().map(|_| "given"))
            .finish_non_exhaustive()
    }
}

impl RelayBuilder {
    /// Prefix for actor names. ractor's registry is process-global, so two relays in one
    /// process need different prefixes.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = ns.into();
        self
    }

    /// Uses this store instead of opening SQLite under `server.data_dir`.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Starts the relay and returns once it serves: the store is open, the supervision tree
    /// is up and `listener` is being served (in a task of its own). The relay runs until
    /// `shutdown` resolves, [`RelayHandle::shutdown`] is called, or the actor tree fails;
    /// then it stops gracefully, and [`RelayHandle::wait`] reports how.
    ///
    /// Errors here are start-up errors (the store would not open, a target did not
    /// compile); nothing keeps running after one.
    #[tracing::instrument(skip_all, fields(namespace = %self.namespace))]
    pub async fn start(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<RelayHandle, RelayError> {
        // Read first: an error past this point would leave a started tree behind.
        let addr = listener.local_addr()?;
        let cfg = self.config;
        let metrics = Metrics::new(self.namespace.clone());
        // An embedder's own store counts by the configured url, like the store it replaces.
        metrics
            .yield_gate
            .set_target(cfg.outbound.yield_target(cfg.store.is_postgres()));
        let names = Names::new(self.namespace);
        let store: Arc<dyn Store> = match self.store {
            Some(s) => s,
            None => open_store(&cfg.store, &cfg.db_path()).await?,
        };
        let drain_grace = cfg.server.shutdown_grace;
        let mut targets = Vec::new();
        for hook in cfg.compiled_hooks().map_err(RelayError::Spawn)? {
            targets.push(
                TargetSpec::hook(&names, Arc::new(hook), &store, &cfg.outbound, drain_grace)
                    .map_err(RelayError::Spawn)?,
            );
        }
        let mut source_rules = std::collections::HashMap::new();
        for s in &cfg.sources {
            let rules = relayarr_actors::pathmap::PathMapper::try_new(&s.path_rules)
                .map_err(|e| RelayError::Spawn(format!("source `{}`: {e}", s.name)))?;
            source_rules.insert(s.name.clone(), rules);
        }
        let mut plex = Vec::new();
        for p in &cfg.plex {
            let (spec, executor) = TargetSpec::plex(
                &names,
                p,
                &store,
                source_rules.clone(),
                drain_grace,
                &metrics,
            )
            .map_err(RelayError::Spawn)?;
            targets.push(spec);
            plex.push(executor);
        }
        // Hooks created through the admin API, saved in the store. A name the config file
        // took meanwhile wins; one that no longer validates is skipped, loudly.
        for (name, json) in store.runtime_hooks().await? {
            if targets.iter().any(|t| t.route.name == name) {
                tracing::warn!(hook = %name, "a hook created at runtime has the name of a configured target; the config file wins");
                continue;
            }
            match crate::hook_admin::compile(&json, &cfg.outbound) {
                Ok(hook) => targets.push(
                    TargetSpec::hook(&names, Arc::new(hook), &store, &cfg.outbound, drain_grace)
                        .map_err(RelayError::Spawn)?,
                ),
                Err(error) => {
                    tracing::error!(hook = %name, %error, "cannot start a hook created at runtime")
                }
            }
        }
        let targets = TargetRegistry::new(targets);
        let system = SystemConfig {
            names: names.clone(),
            store: Arc::clone(&store),
            sources: cfg.sources.iter().cloned().map(Arc::new).collect(),
            targets: Arc::clone(&targets),
            debounce: cfg.debounce.clone(),
            history: cfg.history.clone(),
            backoff: cfg.supervision.backoff(),
            stop_timeout: cfg.server.shutdown_grace,
            sweep_every: cfg.supervision.sweep_every,
            sweep_age: cfg.supervision.sweep_every,
            lease: cfg.store.lease,
            metrics: Arc::clone(&metrics),
            pollers: cfg.arr.iter().cloned().map(Arc::new).collect(),
        };
        let (root, root_handle) = start_system(system)
            .await
            .map_err(|e| RelayError::Spawn(e.to_string()))?;
        wait_tree_ready(&names).await;
        if let Some(tree) = metrics.supervision.tree() {
            tracing::info!("supervision tree:\n{}", render_tree(&tree));
        }

        let app = router(
            AppState::new(
                &cfg,
                names.clone(),
                Arc::clone(&store),
                Arc::clone(&targets),
                plex,
                Arc::clone(&metrics),
            ),
            &cfg,
        );
        tracing::info!(
            %addr,
            sources = cfg.sources.len(),
            hooks = cfg.hooks.len(),
            "relayarr listening"
        );

        if cfg.server.admin_token.is_none() {
            tracing::warn!("the admin API (and so the dashboard's data) is disabled: set server.admin_token, or RELAYARR_SERVER__ADMIN_TOKEN_FILE");
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let running = Running {
            cfg,
            store,
            targets: Arc::clone(&targets),
            metrics: Arc::clone(&metrics),
            root,
            root_handle,
        };
        let task = tokio::spawn(running.serve(listener, app, shutdown, stop_rx));
        Ok(RelayHandle {
            addr,
            names,
            metrics,
            targets,
            stop: stop_tx,
            task: Some(task),
        })
    }

    /// Starts the relay and runs it until it stops: [`RelayBuilder::start`], then
    /// [`RelayHandle::wait`]. The shape of mini-redis' `server::run`, for callers that need
    /// no handle.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), RelayError> {
        self.start(listener, shutdown).await?.wait().await
    }
}

/// What the relay's task owns while it serves, and stops in order at the end.
struct Running {
    cfg: Config,
    store: Arc<dyn Store>,
    targets: Arc<TargetRegistry>,
    metrics: Arc<Metrics>,
    root: ActorRef<SupervisorMsg>,
    root_handle: JoinHandle<()>,
}

impl Running {
    /// Serves until `shutdown`, a [`RelayHandle::shutdown`], or the tree's failure; then
    /// stops ingress, drains the workers, stops the actors, flushes the store, and closes
    /// the committed-event feed.
    async fn serve(
        self,
        listener: TcpListener,
        app: axum::Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
        mut stop_rx: watch::Receiver<bool>,
    ) -> Result<(), RelayError> {
        let Running {
            cfg,
            store,
            targets,
            metrics,
            root,
            root_handle,
        } = self;
        let (tree_dead_tx, tree_dead_rx) = tokio::sync::oneshot::channel::<()>();
        let watcher = tokio::spawn(async move {
            let _ = root_handle.await;
            let _ = tree_dead_tx.send(());
        });
        // A dropped handle is not a request to stop (see `RelayHandle`): only `true` is.
        let asked = async move {
            if stop_rx.wait_for(|stop| *stop).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let stop = async move {
            tokio::select! {
                _ = shutdown => tracing::info!("shutdown requested: stopping ingress"),
                _ = asked => tracing::info!("shutdown requested through the relay handle: stopping ingress"),
                _ = tree_dead_rx => tracing::error!("actor tree stopped: stopping ingress"),
            }
        };
        let limits = crate::serve::ServeLimits {
            header_read_timeout: cfg.server.header_read_timeout,
            max_connections: cfg.server.max_connections,
        };
        let served = crate::serve::serve(listener, app, limits, stop).await;

        let tree_alive = !watcher.is_finished();
        watcher.abort();
        if tree_alive {
            // Every worker drains at once, within one grace period: nothing new starts, and
            // what is in flight finishes and is recorded.
            tracing::info!(targets = targets.all().len(), grace = ?cfg.server.shutdown_grace, "ingress stopped; draining delivery workers");
            let late = drain_workers(&targets, cfg.server.shutdown_grace).await;
            if !late.is_empty() {
                tracing::warn!(targets = ?late, "still busy after the grace period; their requests in flight will be retried");
            }
            tracing::info!("stopping actors");
            let grace = cfg.server.shutdown_grace * 2;
            if let Err(error) = root
                .stop_and_wait(Some("shutdown".into()), Some(grace))
                .await
            {
                tracing::warn!(%error, "actors did not stop within the grace period");
            }
        }
        let flushed = store.close().await;
        metrics.committed.close();
        match (&served, &flushed, tree_alive) {
            (Ok(()), Ok(()), true) => tracing::info!("graceful stop complete: store flushed"),
            _ => tracing::warn!(
                served = ?served.as_ref().err(),
                store = ?flushed.as_ref().err(),
                tree_alive,
                "stop was not fully graceful"
            ),
        }
        served?;
        flushed?;
        if tree_alive {
            Ok(())
        } else {
            Err(RelayError::TreeFailed)
        }
    }
}

/// How long the handle waits for a target's worker to answer.
const WORKER_CALL: Duration = Duration::from_secs(5);

/// A running relay, returned by [`RelayBuilder::start`].
///
/// **Dropping the handle does not stop the relay**, and does not leak it either: the relay
/// keeps serving until the `shutdown` future given to `start` resolves (or its actor tree
/// fails), then stops gracefully in its own task, as it would have with the handle. A drop
/// while the relay still runs is logged. Call [`RelayHandle::shutdown`] and then
/// [`RelayHandle::wait`] to stop it from here and learn how the stop went.
#[derive(Debug)]
pub struct RelayHandle {
    addr: SocketAddr,
    names: Names,
    metrics: Arc<Metrics>,
    targets: Arc<TargetRegistry>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), RelayError>>>,
}

impl RelayHandle {
    /// The address the relay serves on (the listener's, so port 0 is resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes a target's limits (a hook, or `plex:<server>`) and returns its stats with the
    /// change applied.
    ///
    /// The change is a message to the target's worker actor, the one owner of its limits,
    /// exactly as the admin API's `PATCH /api/v1/admin/hooks/{name}` sends it: it takes effect
    /// for the next request, needs no restart, and is persisted. An invalid value changes
    /// nothing.
    #[tracing::instrument(skip(self), fields(target_name = %target))]
    pub async fn tune(&self, target: &str, tuning: Tuning) -> Result<TargetStats, TargetError> {
        let valid = tuning.validate()?;
        let worker = self.worker(target)?;
        valid
            .apply(&worker, WORKER_CALL)
            .await
            .ok_or_else(|| TargetError::Unavailable(target.to_owned()))
    }

    /// Every target's live stats and limits (hooks and Plex servers, in config order), as
    /// `GET /api/v1/admin/targets` shows them: one short message to each worker.
    pub async fn targets(&self) -> Result<Vec<TargetStats>, TargetError> {
        let mut out = Vec::new();
        for t in self.targets.all() {
            let worker = self.worker(&t.route.name)?;
            out.push(call(&worker, &t.route.name, WorkerMsg::Stats).await?);
        }
        Ok(out)
    }

    /// Every event committed from now on, from webhooks and pollers alike, in commit order.
    ///
    /// An event is published only after the store committed it (durable before visible),
    /// and once: a duplicate the store recognised is not published again. Publishing never
    /// waits for a subscriber, so a slow one cannot slow ingestion: a receiver that falls
    /// more than [`relayarr_actors::feed::FEED_CAPACITY`] events behind gets
    /// [`broadcast::error::RecvError::Lagged`] with the number it missed, then goes on from
    /// the oldest event still held (the missed ones are in the store:
    /// `GET /api/v1/admin/events`). Once the relay has stopped, `recv` returns
    /// [`broadcast::error::RecvError::Closed`].
    pub fn subscribe(&self) -> broadcast::Receiver<CommittedEvent> {
        self.metrics.committed.subscribe()
    }

    /// The supervision tree with each actor's status and restarts: the same tree that
    /// `GET /api/v1/actors` serves. `None` once the tree has stopped.
    pub fn actor_tree(&self) -> Option<TreeNode> {
        ractor::registry::where_is(self.names.root()).and_then(|_| self.metrics.supervision.tree())
    }

    /// Starts the graceful stop (as the `shutdown` future would) and returns at once; await
    /// [`RelayHandle::wait`] for its end. Calling it again does nothing more.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Waits until the relay has stopped: `Ok` after a graceful stop, the error otherwise
    /// ([`RelayError::TreeFailed`] when it stopped without being asked to).
    pub async fn wait(mut self) -> Result<(), RelayError> {
        match self.task.take() {
            Some(task) => task
                .await
                .unwrap_or_else(|e| Err(RelayError::Task(e.to_string()))),
            None => Ok(()),
        }
    }

    fn worker(&self, target: &str) -> Result<ActorRef<WorkerMsg>, TargetError> {
        let actor = self
            .targets
            .actor_of(target)
            .ok_or_else(|| TargetError::UnknownTarget(target.to_owned()))?;
        ActorRef::<WorkerMsg>::where_is(actor)
            .ok_or_else(|| TargetError::Unavailable(target.to_owned()))
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            if !task.is_finished() && !*self.stop.borrow() {
                tracing::info!(
                    addr = %self.addr,
                    "relay handle dropped: the relay keeps running until its shutdown future resolves"
                );
            }
        }
    }
}

/// One request to a target's worker, answered within [`WORKER_CALL`].
async fn call<T, F>(worker: &ActorRef<WorkerMsg>, target: &str, msg: F) -> Result<T, TargetError>
where
    T: Send + 'static,
    F: FnOnce(ractor::RpcReplyPort<T>) -> WorkerMsg,
{
    answer(worker.call(msg, Some(WORKER_CALL)).await)
        .ok_or_else(|| TargetError::Unavailable(target.to_owned()))
}

/// Supervisors start their children in `post_start`, after `spawn` returned. A call is
/// answered only once `post_start` is done, so one call per supervisor waits for the tree.
async fn wait_tree_ready(names: &Names) {
    for name in [
        names.root(),
        names.plex(),
        names.hooks(),
        names.sources(),
        names.pollers(),
    ] {
        if let Some(sup) = ActorRef::<SupervisorMsg>::where_is(name) {
            let _ = sup
                .call(
                    SupervisorMsg::Children,
                    Some(std::time::Duration::from_secs(10)),
                )
                .await;
        }
    }
}
