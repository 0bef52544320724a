//! Builds and starts the supervision tree:
//!
//! ```text
//! relayarr            root supervisor
//! ├── history         recorder (started first, stopped last)
//! ├── plex            Plex/title-card sync supervisor (one child per Plex server, later)
//! ├── hooks           outbound hook supervisor
//! │   └── hook:NAME   one per configured hook
//! ├── router
//! ├── debouncer
//! ├── sources         supervisor
//! │   └── source:NAME one per configured source
//! └── pollers         *arr reconciliation supervisor (later)
//! ```
//!
//! Children stop in reverse order, so ingress-facing actors stop before the router, and the
//! history recorder stops last.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorRef, SpawnErr};

use crate::debouncer::DebouncerActor;
use crate::history::{HistoryActor, HistoryArgs, HistoryConfig};
use crate::hooks::actor::{HookActor, HookArgs};
use crate::hooks::config::OutboundConfig;
use crate::hooks::delivery::CompiledHook;
use crate::router::{RouterActor, RouterArgs};
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
    pub fn new(namespace: impl Into<String>) -> Self {
        Names {
            ns: namespace.into(),
        }
    }
    fn n(&self, s: &str) -> String {
        format!("{}{s}", self.ns)
    }
    pub fn root(&self) -> String {
        self.n("relayarr")
    }
    pub fn sources(&self) -> String {
        self.n("sources")
    }
    pub fn source(&self, name: &str) -> String {
        self.n(&format!("source:{name}"))
    }
    pub fn debouncer(&self) -> String {
        self.n("debouncer")
    }
    pub fn router(&self) -> String {
        self.n("router")
    }
    pub fn history(&self) -> String {
        self.n("history")
    }
    pub fn hooks(&self) -> String {
        self.n("hooks")
    }
    pub fn hook(&self, name: &str) -> String {
        self.n(&format!("hook:{name}"))
    }
    pub fn plex(&self) -> String {
        self.n("plex")
    }
    pub fn pollers(&self) -> String {
        self.n("pollers")
    }
}

/// A child spec for any actor whose handler and arguments can be cloned for a restart.
pub struct ActorSpec<A: Actor> {
    pub name: String,
    pub actor: A,
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

/// What the tree needs to start.
#[derive(Clone)]
pub struct SystemConfig {
    pub names: Names,
    pub store: Arc<dyn Store>,
    pub sources: Vec<Arc<SourceConfig>>,
    pub hooks: Vec<Arc<CompiledHook>>,
    pub outbound: OutboundConfig,
    pub history: HistoryConfig,
    pub backoff: Backoff,
    pub stop_timeout: Duration,
    pub sweep_every: Duration,
    pub sweep_age: Duration,
}

fn supervisor(
    name: String,
    cfg: &SystemConfig,
    children: Vec<Arc<dyn ChildSpec>>,
) -> Arc<dyn ChildSpec> {
    Arc::new(ActorSpec {
        name,
        actor: Supervisor,
        args: SupervisorArgs {
            backoff: cfg.backoff.clone(),
            children,
            stop_timeout: cfg.stop_timeout,
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
                },
            }) as Arc<dyn ChildSpec>
        })
        .collect();
    let hooks: Vec<Arc<dyn ChildSpec>> = cfg
        .hooks
        .iter()
        .map(|h| {
            Arc::new(ActorSpec {
                name: names.hook(&h.cfg.name),
                actor: HookActor,
                args: HookArgs {
                    hook: Arc::clone(h),
                    store: Arc::clone(&cfg.store),
                    names: names.clone(),
                    outbound: cfg.outbound.clone(),
                },
            }) as Arc<dyn ChildSpec>
        })
        .collect();
    let children: Vec<Arc<dyn ChildSpec>> = vec![
        Arc::new(ActorSpec {
            name: names.history(),
            actor: HistoryActor,
            args: HistoryArgs {
                store: Arc::clone(&cfg.store),
                cfg: cfg.history.clone(),
            },
        }),
        supervisor(names.plex(), &cfg, Vec::new()),
        supervisor(names.hooks(), &cfg, hooks),
        Arc::new(ActorSpec {
            name: names.router(),
            actor: RouterActor,
            args: RouterArgs {
                store: Arc::clone(&cfg.store),
                names: names.clone(),
                hooks: Arc::new(cfg.hooks.clone()),
                sweep_every: cfg.sweep_every,
                sweep_age: cfg.sweep_age,
            },
        }),
        Arc::new(ActorSpec {
            name: names.debouncer(),
            actor: DebouncerActor,
            args: names.clone(),
        }),
        supervisor(names.sources(), &cfg, sources),
        supervisor(names.pollers(), &cfg, Vec::new()),
    ];
    let args = SupervisorArgs {
        backoff: cfg.backoff.clone(),
        children,
        stop_timeout: cfg.stop_timeout,
    };
    Actor::spawn(Some(names.root()), Supervisor, args).await
}
