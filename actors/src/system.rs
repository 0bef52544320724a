//! Builds and starts the supervision tree:
//!
//! ```text
//! relayarr            root supervisor
//! ├── cluster         this instance's heartbeat and share of the limits (stopped last)
//! ├── history         recorder
//! ├── plex            Plex/title-card sync supervisor
//! │   └── plex:NAME   one delivery worker per [[plex]] server
//! ├── hooks           outbound hook supervisor
//! │   └── hook:NAME   one delivery worker per [[hook]]
//! ├── debouncer       open debounce groups (started before the router, which calls it)
//! ├── router
//! ├── sources         supervisor
//! │   └── source:NAME one per configured source
//! └── pollers         *arr reconciliation supervisor
//!     └── poller:NAME one per [[arr]]: reads its history, recovers missed events
//! ```
//!
//! Children stop in reverse order, so ingress-facing actors stop before the router, the
//! history recorder stops after the workers, and the cluster actor, which releases this
//! instance's claims, stops last. Workers are drained (in parallel) before the tree stops:
//! see [`drain_workers`].

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorRef, SpawnErr};

use std::collections::HashMap;

use crate::cluster::{ClusterActor, ClusterArgs};
use crate::debounce::actor::{DebouncerActor, DebouncerArgs};
use crate::debounce::{DebounceConfig, DebounceKey};
use crate::delivery::shared::Shared;
use crate::delivery::worker::{DeliveryWorker, WorkerArgs, WorkerMsg};
use crate::delivery::{Executor, TargetPolicy};
use crate::history::{HistoryActor, HistoryArgs, HistoryConfig};
use crate::hooks::config::OutboundConfig;
use crate::hooks::delivery::CompiledHook;
use crate::hooks::executor::HookExecutor;
use crate::metrics::Metrics;
use crate::pathmap::PathMapper;
use crate::plex::config::PlexConfig;
use crate::plex::executor::PlexExecutor;
use crate::pollers::actor::{PollerActor, PollerArgs};
use crate::pollers::config::ArrConfig;
use crate::router::{RouteTarget, RouterActor, RouterArgs};
use crate::sources::actor::{SourceActor, SourceArgs};
use crate::sources::config::SourceConfig;
use crate::store::Store;
use crate::supervisor::{Backoff, ChildSpec, Supervisor, SupervisorArgs, SupervisorMsg};

/// Actor names. The registry is process-global, so several relays embedded in one process
/// (tests do this) each need their own namespace prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    ns: String,
}

impl Names {
    /// Names under a prefix (empty in production; unique per relay in tests).
    pub fn new(namespace: impl Into<String>) -> Self {
        Names {
            ns: namespace.into(),
        }
    }
    fn n(&self, s: &str) -> String {
        format!("{}{s}", self.ns)
    }
    /// The root supervisor, `relayarr`.
    pub fn root(&self) -> String {
        self.n("relayarr")
    }
    /// The sources supervisor.
    pub fn sources(&self) -> String {
        self.n("sources")
    }
    /// The actor of one `[[source]]`: `source:NAME`.
    pub fn source(&self, name: &str) -> String {
        self.n(&format!("source:{name}"))
    }
    /// The debouncer.
    pub fn debouncer(&self) -> String {
        self.n("debouncer")
    }
    /// The router.
    pub fn router(&self) -> String {
        self.n("router")
    }
    /// The history recorder.
    pub fn history(&self) -> String {
        self.n("history")
    }
    /// The membership actor (heartbeats and limit shares).
    pub fn cluster(&self) -> String {
        self.n("cluster")
    }
    /// The hooks supervisor.
    pub fn hooks(&self) -> String {
        self.n("hooks")
    }
    /// The worker of one hook: `hook:NAME`.
    pub fn hook(&self, name: &str) -> String {
        self.n(&format!("hook:{name}"))
    }
    /// The Plex supervisor.
    pub fn plex(&self) -> String {
        self.n("plex")
    }
    /// The worker of one `[[plex]]` server; also its stored target name, without namespace.
    pub fn plex_server(&self, name: &str) -> String {
        self.n(&plex_target(name))
    }
    /// The pollers supervisor.
    pub fn pollers(&self) -> String {
        self.n("pollers")
    }
    /// The reconciliation poller of one `[[arr]]`.
    pub fn poller(&self, name: &str) -> String {
        self.n(&format!("poller:{name}"))
    }
}

/// A child spec for any actor whose handler and arguments can be cloned for a restart.
pub struct ActorSpec<A: Actor> {
    /// The child's registered actor name.
    pub name: String,
    /// The actor's handler value.
    pub actor: A,
    /// Its start arguments, cloned for every restart.
    pub args: A::Arguments,
}

impl<A> ChildSpec for ActorSpec<A>
where
    A: Actor + Clone,
    A::Arguments: Clone + Sync,
{
    fn name(&self) -> String {
        self.name.clone()
    }
    fn spawn(&self, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> {
        let (name, actor, args) = (self.name.clone(), self.actor.clone(), self.args.clone());
        Box::pin(async move {
            let (r, _) = Actor::spawn_linked(Some(name), actor, args, supervisor).await?;
            Ok(r.get_cell())
        })
    }
}

impl Clone for Supervisor {
    fn clone(&self) -> Self {
        Supervisor
    }
}

/// The stored target name of a Plex server: `plex:NAME` (hook names cannot contain `:`).
pub fn plex_target(name: &str) -> String {
    format!("plex:{name}")
}

/// One delivery target, ready to start: its worker's parts and how the router reaches it.
#[derive(Clone)]
pub struct TargetSpec {
    /// `hook` or `plex`.
    pub kind: &'static str,
    /// How the router reaches the target.
    pub route: RouteTarget,
    /// The engine's view of its config.
    pub policy: Arc<TargetPolicy>,
    /// Performs its attempts.
    pub executor: Arc<dyn Executor>,
    /// Lives as long as the relay: requests, limits and the writer survive restarts.
    pub shared: Arc<Shared>,
    /// The target's config as the admin API shows it, secrets masked.
    pub config: serde_json::Value,
    /// For a hook: its compiled config (the admin API's test fire uses it).
    pub hook: Option<Arc<CompiledHook>>,
}

impl TargetSpec {
    /// An HTTP hook as a delivery target.
    pub fn hook(
        names: &Names,
        hook: Arc<CompiledHook>,
        store: &Arc<dyn Store>,
        outbound: &OutboundConfig,
        drain_grace: Duration,
    ) -> Result<Self, String> {
        let cfg = &hook.cfg;
        // Runtime changes of the cap keep this pool size (idle connections above it close).
        let keep_idle = usize::try_from(cfg.max_in_flight.get()).unwrap_or(usize::MAX);
        let client = crate::hooks::net::client(cfg.timeout, outbound.strict, keep_idle)
            .map_err(|e| format!("hook `{}`: cannot build its HTTP client: {e}", cfg.name))?;
        let actor = names.hook(&cfg.name);
        let route = RouteTarget {
            name: cfg.name.clone(),
            actor: actor.clone(),
            filter: Arc::new(hook.filter.clone()),
            debounce: cfg.debounce.map(|q| (cfg.debounce_key, Some(q))),
            interface_id: None,
            plex: None,
        };
        Ok(TargetSpec {
            kind: "hook",
            route,
            policy: Arc::new(HookExecutor::policy(&hook, drain_grace)),
            shared: Shared::new(cfg.name.clone(), actor),
            config: cfg.masked(),
            hook: Some(Arc::clone(&hook)),
            executor: Arc::new(HookExecutor {
                hook,
                client,
                store: Arc::clone(store),
            }),
        })
    }
}

impl TargetSpec {
    /// A Plex server as a delivery target. Also returns its executor, which the admin API
    /// uses for the path-mapping dry run.
    pub fn plex(
        names: &Names,
        cfg: &PlexConfig,
        store: &Arc<dyn Store>,
        source_rules: HashMap<String, PathMapper>,
        drain_grace: Duration,
        metrics: &Arc<Metrics>,
    ) -> Result<(Self, Arc<PlexExecutor>), String> {
        let target = plex_target(&cfg.name);
        let filter = cfg
            .events
            .compile()
            .map_err(|e| format!("plex `{}`: `events`: {e}", cfg.name))?;
        let executor = Arc::new(
            PlexExecutor::new(cfg.clone(), target.clone(), Arc::clone(store), source_rules)
                .map_err(|e| e.to_string())?
                .with_metrics(Arc::clone(metrics)),
        );
        let actor = names.plex_server(&cfg.name);
        let spec = TargetSpec {
            kind: "plex",
            route: RouteTarget {
                name: target.clone(),
                actor: actor.clone(),
                filter: Arc::new(filter),
                debounce: Some((DebounceKey::Folder, cfg.debounce)),
                interface_id: cfg.interface_id.clone(),
                plex: Some(executor.view()),
            },
            policy: Arc::new(PlexExecutor::policy(cfg, &target, drain_grace)),
            shared: Shared::new(target, actor),
            config: serde_json::to_value(cfg).unwrap_or(serde_json::Value::Null),
            hook: None,
            executor: Arc::clone(&executor) as Arc<dyn Executor>,
        };
        Ok((spec, executor))
    }
}

/// Every delivery target of a running relay. Hooks can be created and deleted at runtime,
/// so the router, the debouncer and the admin API read the current set from here instead of
/// holding a copy.
#[derive(Default)]
pub struct TargetRegistry {
    targets: std::sync::RwLock<Vec<TargetSpec>>,
}

impl std::fmt::Debug for TargetRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.all().iter().map(|t| &t.route.name))
            .finish()
    }
}

impl TargetRegistry {
    /// A registry holding these targets, in order.
    pub fn new(targets: Vec<TargetSpec>) -> Arc<Self> {
        Arc::new(TargetRegistry {
            targets: std::sync::RwLock::new(targets),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<TargetSpec>> {
        self.targets.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<TargetSpec>> {
        self.targets.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Every target, in order (config file first, then those created at runtime).
    pub fn all(&self) -> Vec<TargetSpec> {
        self.read().clone()
    }

    /// How the router reaches every target.
    pub fn routes(&self) -> Vec<RouteTarget> {
        self.read().iter().map(|t| t.route.clone()).collect()
    }

    /// The target of that stored name.
    pub fn get(&self, name: &str) -> Option<TargetSpec> {
        self.read().iter().find(|t| t.route.name == name).cloned()
    }

    /// The registered actor name of a target's worker.
    pub fn actor_of(&self, name: &str) -> Option<String> {
        self.read()
            .iter()
            .find(|t| t.route.name == name)
            .map(|t| t.route.actor.clone())
    }

    /// Adds a target; false if one of that name exists.
    pub fn add(&self, spec: TargetSpec) -> bool {
        let mut all = self.write();
        if all.iter().any(|t| t.route.name == spec.route.name) {
            return false;
        }
        all.push(spec);
        true
    }

    /// Takes a target out of routing and returns it; the caller stops its worker (its pending
    /// rows stay in the store).
    pub fn remove(&self, name: &str) -> Option<TargetSpec> {
        let mut all = self.write();
        let i = all.iter().position(|t| t.route.name == name)?;
        Some(all.remove(i))
    }
}

/// The supervisor child spec of a target's worker.
pub fn worker_spec(
    t: &TargetSpec,
    store: &Arc<dyn Store>,
    names: &Names,
    metrics: &Arc<Metrics>,
) -> Arc<dyn ChildSpec> {
    Arc::new(ActorSpec {
        name: t.route.actor.clone(),
        actor: DeliveryWorker,
        args: WorkerArgs {
            policy: Arc::clone(&t.policy),
            kind: t.kind,
            executor: Arc::clone(&t.executor),
            store: Arc::clone(store),
            names: names.clone(),
            shared: Arc::clone(&t.shared),
            metrics: Arc::clone(metrics),
        },
    })
}

/// Tells every worker to start nothing new, and waits (up to `grace`, all in parallel) until
/// their requests in flight have finished. Returns the targets that did not finish in time.
pub async fn drain_workers(targets: &TargetRegistry, grace: Duration) -> Vec<String> {
    let targets = targets.all();
    let calls = targets.iter().map(|t| async move {
        let w = ActorRef::<WorkerMsg>::where_is(t.route.actor.clone())?;
        match w.call(WorkerMsg::Drain, Some(grace)).await {
            Ok(ractor::rpc::CallResult::Success(())) => None,
            _ => Some(t.route.name.clone()),
        }
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// What the tree needs to start.
#[derive(Clone)]
pub struct SystemConfig {
    /// Actor names, under this relay's prefix.
    pub names: Names,
    /// The store every actor reads and writes.
    pub store: Arc<dyn Store>,
    /// The `[[source]]` tables, one source actor each.
    pub sources: Vec<Arc<SourceConfig>>,
    /// Hooks and Plex servers (hooks may be added and removed while running).
    pub targets: Arc<TargetRegistry>,
    /// Quiet periods and max waits for debounced targets.
    pub debounce: DebounceConfig,
    /// The history recorder's batching and retention.
    pub history: HistoryConfig,
    /// Restart policy of every supervisor.
    pub backoff: Backoff,
    /// How long each child gets to stop on shutdown.
    pub stop_timeout: Duration,
    /// How often the router sweeps for unrouted events.
    pub sweep_every: Duration,
    /// How old an unrouted event must be for the sweep to route it.
    pub sweep_age: Duration,
    /// How long a silent instance's claims hold (instances sharing one database).
    pub lease: Duration,
    /// Counters the actors increment, and the supervision board.
    pub metrics: Arc<Metrics>,
    /// One reconciliation poller per `[[arr]]`.
    pub pollers: Vec<Arc<ArrConfig>>,
}

fn supervisor(
    name: String,
    cfg: &SystemConfig,
    children: Vec<Arc<dyn ChildSpec>>,
) -> Arc<dyn ChildSpec> {
    dynamic_supervisor(name, cfg, children, Arc::default())
}

fn dynamic_supervisor(
    name: String,
    cfg: &SystemConfig,
    children: Vec<Arc<dyn ChildSpec>>,
    dynamic: Arc<std::sync::Mutex<Vec<Arc<dyn ChildSpec>>>>,
) -> Arc<dyn ChildSpec> {
    Arc::new(ActorSpec {
        name,
        actor: Supervisor,
        args: SupervisorArgs {
            backoff: cfg.backoff.clone(),
            children,
            stop_timeout: cfg.stop_timeout,
            board: Arc::clone(&cfg.metrics.supervision),
            dynamic,
        },
    })
}

/// Starts the whole tree and returns the root supervisor.
pub async fn start_system(
    cfg: SystemConfig,
) -> Result<(ActorRef<SupervisorMsg>, tokio::task::JoinHandle<()>), SpawnErr> {
    let names = &cfg.names;
    let sources: Vec<Arc<dyn ChildSpec>> = cfg
        .sources
        .iter()
        .map(|s| {
            Arc::new(ActorSpec {
                name: names.source(&s.name),
                actor: SourceActor,
                args: SourceArgs {
                    cfg: Arc::clone(s),
                    store: Arc::clone(&cfg.store),
                    names: names.clone(),
                    metrics: Arc::clone(&cfg.metrics),
                },
            }) as Arc<dyn ChildSpec>
        })
        .collect();
    let pollers: Vec<Arc<dyn ChildSpec>> = cfg
        .pollers
        .iter()
        .map(|p| {
            Arc::new(ActorSpec {
                name: names.poller(&p.name),
                actor: PollerActor,
                args: PollerArgs {
                    cfg: Arc::clone(p),
                    store: Arc::clone(&cfg.store),
                    names: names.clone(),
                    metrics: Arc::clone(&cfg.metrics),
                },
            }) as Arc<dyn ChildSpec>
        })
        .collect();
    let workers = |kind: &str| -> Vec<Arc<dyn ChildSpec>> {
        cfg.targets
            .all()
            .iter()
            .filter(|t| t.kind == kind)
            .map(|t| worker_spec(t, &cfg.store, names, &cfg.metrics))
            .collect()
    };
    let children: Vec<Arc<dyn ChildSpec>> = vec![
        Arc::new(ActorSpec {
            name: names.cluster(),
            actor: ClusterActor,
            args: ClusterArgs {
                store: Arc::clone(&cfg.store),
                targets: Arc::clone(&cfg.targets),
                lease: cfg.lease,
                names: names.clone(),
            },
        }),
        Arc::new(ActorSpec {
            name: names.history(),
            actor: HistoryActor,
            args: HistoryArgs {
                store: Arc::clone(&cfg.store),
                cfg: cfg.history.clone(),
                metrics: Arc::clone(&cfg.metrics),
            },
        }),
        supervisor(names.plex(), &cfg, workers("plex")),
        // Every hook worker is a dynamic child: hooks are created and deleted at runtime.
        dynamic_supervisor(
            names.hooks(),
            &cfg,
            Vec::new(),
            Arc::new(std::sync::Mutex::new(workers("hook"))),
        ),
        Arc::new(ActorSpec {
            name: names.debouncer(),
            actor: DebouncerActor,
            args: DebouncerArgs {
                store: Arc::clone(&cfg.store),
                targets: Arc::clone(&cfg.targets),
                metrics: Arc::clone(&cfg.metrics),
            },
        }),
        Arc::new(ActorSpec {
            name: names.router(),
            actor: RouterActor,
            args: RouterArgs {
                store: Arc::clone(&cfg.store),
                names: names.clone(),
                targets: Arc::clone(&cfg.targets),
                debounce: Arc::new(cfg.debounce.clone()),
                sweep_every: cfg.sweep_every,
                sweep_age: cfg.sweep_age,
            },
        }),
        supervisor(names.sources(), &cfg, sources),
        supervisor(names.pollers(), &cfg, pollers),
    ];
    let args = SupervisorArgs {
        backoff: cfg.backoff.clone(),
        children,
        stop_timeout: cfg.stop_timeout,
        board: Arc::clone(&cfg.metrics.supervision),
        dynamic: Arc::default(),
    };
    Actor::spawn(Some(names.root()), Supervisor, args).await
}
