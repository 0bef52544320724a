//! `Relay`: the embeddable service. `Relay::builder(config).start(listener, shutdown)` opens
//! the store, starts the supervision tree, serves HTTP until `shutdown` resolves, then stops
//! in order: ingress, actors (sources first, history last), store flush.

use std::future::Future;
use std::sync::Arc;

use ractor::ActorRef;
use relayarr_actors::metrics::Metrics;
use relayarr_actors::store::{open as open_store, Store, StoreError};
use relayarr_actors::supervisor::{render_tree, SupervisorMsg};
use relayarr_actors::system::{
    drain_workers, start_system, Names, SystemConfig, TargetRegistry, TargetSpec,
};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::{router, AppState};

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("could not start the actor tree: {0}")]
    Spawn(String),
    #[error("http server: {0}")]
    Serve(#[from] std::io::Error),
    #[error("the actor tree stopped unexpectedly (a supervisor escalated past the root)")]
    TreeFailed,
}

/// Entry point for running relayarr, in its binary or embedded in another program.
#[derive(Debug)]
pub struct Relay;

impl Relay {
    pub fn builder(config: Config) -> RelayBuilder {
        RelayBuilder {
            config,
            namespace: String::new(),
            store: None,
        }
    }
}

pub struct RelayBuilder {
    config: Config,
    namespace: String,
    store: Option<Arc<dyn Store>>,
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

    /// Runs until `shutdown` resolves (or the actor tree fails), then stops gracefully.
    pub async fn start(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), RelayError> {
        let cfg = self.config;
        let metrics = Metrics::new(self.namespace.clone());
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
        let addr = listener.local_addr()?;
        tracing::info!(
            %addr,
            sources = cfg.sources.len(),
            hooks = cfg.hooks.len(),
            "relayarr listening"
        );

        if cfg.server.admin_token.is_none() {
            tracing::warn!("the admin API (and so the dashboard's data) is disabled: set server.admin_token, or RELAYARR_SERVER__ADMIN_TOKEN_FILE");
        }
        let (tree_dead_tx, tree_dead_rx) = tokio::sync::oneshot::channel::<()>();
        let watcher = tokio::spawn(async move {
            let _ = root_handle.await;
            let _ = tree_dead_tx.send(());
        });
        let stop = async move {
            tokio::select! {
                _ = shutdown => tracing::info!("shutdown requested: stopping ingress"),
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
