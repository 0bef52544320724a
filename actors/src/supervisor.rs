//! One supervisor actor for every level of the tree (`relayarr`, `sources`, `hooks`, …).
//!
//! ractor restarts nothing by itself (notes §6.2), so this actor does: a failed or
//! unexpectedly stopped child is restarted after an exponential backoff with jitter; a child
//! that keeps failing (more than `max_restarts` within `window`) makes the supervisor fail
//! too, which escalates to its own parent. Children are started in spec order and stopped in
//! reverse order, so shutdown is ordered (ingress-facing actors first, history last).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use serde::Serialize;

use crate::store::{now_ms, rfc3339_ms};

/// Restart policy of a supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// First restart delay; doubles with each consecutive failure.
    pub base: Duration,
    /// Cap on the restart delay.
    pub max: Duration,
    /// More than this many restarts of one child within `window` escalates.
    pub max_restarts: u32,
    /// The window over which restarts are counted.
    pub window: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(30),
            max_restarts: 10,
            window: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// "Equal jitter": a delay in `[d/2, d]` where `d = min(base * 2^attempt, max)`, so that
    /// children failing together do not restart in lockstep.
    pub fn delay(&self, attempt: u32) -> Duration {
        let capped = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt.min(20)))
            .min(self.max);
        let half = capped / 2;
        let half_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::random_range(0..=half_ms))
    }
}

/// How to (re)start one child. Held by the supervisor for the child's whole life, so a
/// restart gets the same arguments as the first start.
pub trait ChildSpec: Send + Sync + 'static {
    /// The child's registered actor name.
    fn name(&self) -> String;
    /// Spawns the child linked to `supervisor`.
    fn spawn(&self, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>>;
}

/// Arguments of a [`Supervisor`].
#[derive(Clone)]
pub struct SupervisorArgs {
    /// When and how often children are restarted.
    pub backoff: Backoff,
    /// The static children, in start order.
    pub children: Vec<Arc<dyn ChildSpec>>,
    /// How long each child gets to stop gracefully on shutdown.
    pub stop_timeout: Duration,
    /// Where this supervisor publishes its children's statuses (one board per relay).
    pub board: Arc<SupervisionBoard>,
    /// Children that can be added and removed at runtime (hooks created through the admin
    /// API). Shared with every incarnation of this supervisor, so a rebuilt supervisor
    /// starts the current set.
    pub dynamic: Arc<std::sync::Mutex<Vec<Arc<dyn ChildSpec>>>>,
}

/// Messages to a supervisor, the only owner of its children's cells and restart counts.
pub enum SupervisorMsg {
    /// Timer message: start a child again after its backoff.
    Restart(String),
    /// The current children, for the admin API and tests.
    Children(RpcReplyPort<Vec<ChildInfo>>),
    /// Starts a dynamic child.
    Add(Arc<dyn ChildSpec>, RpcReplyPort<Result<(), String>>),
    /// Stops a dynamic child gracefully (within `stop_timeout`) and forgets it.
    Remove(String, RpcReplyPort<Result<(), String>>),
}

/// What the admin API shows about one child.
#[derive(Clone, Debug, Serialize)]
pub struct ChildInfo {
    /// The child's registered actor name.
    pub name: String,
    /// Whether it runs now.
    pub running: bool,
    /// Times it was restarted by this supervisor incarnation.
    pub restarts: u32,
}

/// An actor's status, as its supervisor sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorStatus {
    /// Registered with its supervisor, not started yet.
    Starting,
    /// Started and not failed since.
    Running,
    /// Failed; a restart is scheduled after `next_backoff_ms`.
    Restarting,
    /// Stopped on shutdown, or given up on (its supervisor escalated).
    Stopped,
}

impl ActorStatus {
    /// The lowercase name, as the admin API and metrics write it.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorStatus::Starting => "starting",
            ActorStatus::Running => "running",
            ActorStatus::Restarting => "restarting",
            ActorStatus::Stopped => "stopped",
        }
    }
}

/// The last failure of an actor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The error or exit reason.
    pub error: String,
    /// RFC 3339.
    pub at: String,
    /// The same instant, unix milliseconds.
    pub at_ms: i64,
}

/// One actor on the [`SupervisionBoard`].
#[derive(Clone, Debug, Serialize)]
pub struct ActorEntry {
    /// Its path in the tree, e.g. `relayarr/hooks/hook:discord` (no namespace prefix).
    pub path: String,
    /// Its registered actor name (with the namespace prefix).
    pub name: String,
    /// Its status now.
    pub status: ActorStatus,
    /// Restarts since the relay started; an escalation that rebuilds the subtree keeps it.
    pub restarts: u64,
    /// Its last failure, if it ever failed.
    pub last_failure: Option<Failure>,
    /// Set while `restarting`.
    pub next_backoff_ms: Option<u64>,
    #[serde(skip)]
    parent: Option<String>,
    #[serde(skip)]
    supervisor: bool,
    /// Position in its supervisor's start order.
    #[serde(skip)]
    order: usize,
}

/// Statuses of every actor in one relay's tree, written by the supervisors as they start,
/// restart and stop children, read by the admin API, `/readyz` and `/metrics`. Kept outside
/// the supervisors so a reader never waits on a supervisor that is busy restarting, and so
/// an actor that is down (and so absent from ractor's tree) is still shown, as restarting.
#[derive(Debug, Default)]
pub struct SupervisionBoard {
    /// The relay's actor-name prefix, left out of paths: tests run many relays in one
    /// process, and the prefix would make every path differ from production's.
    namespace: String,
    entries: Mutex<BTreeMap<String, ActorEntry>>,
}

impl SupervisionBoard {
    /// An empty board; `namespace` is the relay's actor-name prefix, left out of paths.
    pub fn new(namespace: impl Into<String>) -> Self {
        SupervisionBoard {
            namespace: namespace.into(),
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ActorEntry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A registered name without the relay's namespace prefix.
    pub fn short<'a>(&self, name: &'a str) -> &'a str {
        name.strip_prefix(self.namespace.as_str()).unwrap_or(name)
    }

    fn path_of_name(&self, name: &str) -> Option<String> {
        self.lock()
            .values()
            .find(|e| e.name == name)
            .map(|e| e.path.clone())
    }

    /// Adds an actor (or, after its supervisor was rebuilt, marks it starting again while
    /// keeping its restart count and last failure).
    fn register(&self, path: &str, name: &str, parent: Option<&str>, order: usize) {
        let mut map = self.lock();
        let e = map.entry(path.to_owned()).or_insert_with(|| ActorEntry {
            path: path.to_owned(),
            name: name.to_owned(),
            status: ActorStatus::Starting,
            restarts: 0,
            last_failure: None,
            next_backoff_ms: None,
            parent: parent.map(str::to_owned),
            supervisor: false,
            order,
        });
        e.status = ActorStatus::Starting;
        e.next_backoff_ms = None;
    }

    /// Removes an actor that is gone for good (a deleted hook).
    fn forget(&self, path: &str) {
        self.lock().remove(path);
    }

    fn update(&self, path: &str, f: impl FnOnce(&mut ActorEntry)) {
        if let Some(e) = self.lock().get_mut(path) {
            f(e);
        }
    }

    /// One actor's entry.
    pub fn entry(&self, path: &str) -> Option<ActorEntry> {
        self.lock().get(path).cloned()
    }

    /// `(path, restarts)` of every actor, by path.
    pub fn restarts(&self) -> Vec<(String, u64)> {
        self.lock()
            .values()
            .map(|e| (e.path.clone(), e.restarts))
            .collect()
    }

    /// Supervisors (the root included) that are not running, with their status: empty when
    /// the tree is whole. An empty board (no tree started) reports the root as missing.
    pub fn supervisors_not_running(&self) -> Vec<(String, ActorStatus)> {
        let map = self.lock();
        if !map.values().any(|e| e.parent.is_none()) {
            return vec![("relayarr".into(), ActorStatus::Stopped)];
        }
        map.values()
            .filter(|e| e.supervisor && e.status != ActorStatus::Running)
            .map(|e| (e.path.clone(), e.status))
            .collect()
    }

    /// The tree, from the root, children in start order. `None` before the root started.
    pub fn tree(&self) -> Option<TreeNode> {
        let map = self.lock();
        let root = map.values().find(|e| e.parent.is_none())?;
        fn node(map: &BTreeMap<String, ActorEntry>, e: &ActorEntry) -> TreeNode {
            let mut kids: Vec<&ActorEntry> = map
                .values()
                .filter(|c| c.parent.as_deref() == Some(e.path.as_str()))
                .collect();
            kids.sort_by_key(|c| c.order);
            TreeNode {
                name: e.name.clone(),
                path: e.path.clone(),
                id: ractor::registry::where_is(e.name.clone())
                    .filter(|_| e.status == ActorStatus::Running)
                    .map(|c| c.get_id().to_string()),
                status: e.status,
                restarts: e.restarts,
                last_failure: e.last_failure.clone(),
                next_backoff_ms: e.next_backoff_ms,
                children: kids.into_iter().map(|c| node(map, c)).collect(),
            }
        }
        Some(node(&map, root))
    }
}

/// What happened to a supervised actor; each is logged as one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SupervisionEventKind {
    /// The child started (or started again).
    Started,
    /// The child stopped normally.
    Stopped,
    /// The child panicked or returned an error.
    Failed,
    /// A restart is scheduled after its backoff.
    Restarting,
    /// Too many restarts within the window: the supervisor gives up and fails itself, so its
    /// parent decides.
    Escalated,
}

impl SupervisionEventKind {
    /// The lowercase name, as logged in the `event` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::Restarting => "restarting",
            Self::Escalated => "escalated",
        }
    }
}

/// The one log line of a supervision event: `actor` (its path in the tree), `event`,
/// `reason` (the error or exit reason, when there is one), `restarts` (so far) and
/// `next_backoff_ms` (when a restart is scheduled).
fn log_event(
    kind: SupervisionEventKind,
    actor: &str,
    reason: Option<&str>,
    restarts: u64,
    next_backoff_ms: Option<u64>,
) {
    let event = kind.as_str();
    macro_rules! emit {
        ($level:ident) => {
            tracing::$level!(
                actor = %actor,
                event,
                reason,
                restarts,
                next_backoff_ms,
                "supervision"
            )
        };
    }
    match kind {
        SupervisionEventKind::Started | SupervisionEventKind::Stopped => emit!(info),
        SupervisionEventKind::Restarting => emit!(warn),
        SupervisionEventKind::Failed | SupervisionEventKind::Escalated => emit!(error),
    }
}

struct Child {
    spec: Arc<dyn ChildSpec>,
    cell: Option<ActorCell>,
    /// Its path in the tree.
    path: String,
    /// Start times of recent restarts, for the intensity limit.
    restarts: VecDeque<Instant>,
    total_restarts: u32,
}

/// A supervisor's state: its children in start order, their cells and their recent restarts.
pub struct SupervisorState {
    args: SupervisorArgs,
    /// This supervisor's own path in the tree.
    path: String,
    /// In start order.
    order: Vec<String>,
    children: HashMap<String, Child>,
    by_id: HashMap<ActorId, String>,
}

/// The supervisor actor: restarts failed children with backoff and escalates past the intensity
/// limit.
#[derive(Debug, Default)]
pub struct Supervisor;

impl Supervisor {
    async fn start_child(
        me: &ActorRef<SupervisorMsg>,
        st: &mut SupervisorState,
        name: &str,
    ) -> Result<(), ActorProcessingErr> {
        let Some(child) = st.children.get_mut(name) else {
            return Ok(());
        };
        match child.spec.spawn(me.get_cell()).await {
            Ok(cell) => {
                let restarts = st.args.board.entry(&child.path).map_or(0, |e| e.restarts);
                st.args.board.update(&child.path, |e| {
                    e.status = ActorStatus::Running;
                    e.next_backoff_ms = None;
                });
                log_event(
                    SupervisionEventKind::Started,
                    &child.path,
                    None,
                    restarts,
                    None,
                );
                st.by_id.insert(cell.get_id(), name.to_owned());
                child.cell = Some(cell);
                Ok(())
            }
            Err(error) => {
                // pre_start failed: no supervision event will come, so schedule the retry here.
                Self::failed(me, st, name, &format!("failed to start: {error}"))
            }
        }
    }

    /// A child failed (or stopped when it should not have): record and log it, then restart
    /// it after its backoff, or escalate.
    fn failed(
        me: &ActorRef<SupervisorMsg>,
        st: &mut SupervisorState,
        name: &str,
        reason: &str,
    ) -> Result<(), ActorProcessingErr> {
        let Some(child) = st.children.get(name) else {
            return Ok(());
        };
        let path = child.path.clone();
        let at_ms = now_ms();
        let mut restarts = 0;
        st.args.board.update(&path, |e| {
            e.last_failure = Some(Failure {
                error: reason.to_owned(),
                at: rfc3339_ms(at_ms),
                at_ms,
            });
            restarts = e.restarts;
        });
        log_event(
            SupervisionEventKind::Failed,
            &path,
            Some(reason),
            restarts,
            None,
        );
        Self::schedule_restart(me, st, name, reason)
    }

    fn schedule_restart(
        me: &ActorRef<SupervisorMsg>,
        st: &mut SupervisorState,
        name: &str,
        reason: &str,
    ) -> Result<(), ActorProcessingErr> {
        let backoff = &st.args.backoff;
        let board = &st.args.board;
        let Some(child) = st.children.get_mut(name) else {
            return Ok(());
        };
        child.cell = None;
        let now = Instant::now();
        while child
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > backoff.window)
        {
            child.restarts.pop_front();
        }
        let recent = u32::try_from(child.restarts.len()).unwrap_or(u32::MAX);
        if recent >= backoff.max_restarts {
            let mut restarts = 0;
            board.update(&child.path, |e| {
                e.status = ActorStatus::Stopped;
                e.next_backoff_ms = None;
                restarts = e.restarts;
            });
            let why = format!(
                "failed {} times within {:?} (limit {}); last: {reason}",
                recent + 1,
                backoff.window,
                backoff.max_restarts
            );
            log_event(
                SupervisionEventKind::Escalated,
                &child.path,
                Some(&why),
                restarts,
                None,
            );
            return Err(format!("child {} {why}", child.path).into());
        }
        let delay = backoff.delay(recent);
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        child.restarts.push_back(now);
        child.total_restarts += 1;
        let mut restarts = 0;
        board.update(&child.path, |e| {
            e.status = ActorStatus::Restarting;
            e.restarts += 1;
            e.next_backoff_ms = Some(delay_ms);
            restarts = e.restarts;
        });
        log_event(
            SupervisionEventKind::Restarting,
            &child.path,
            Some(reason),
            restarts,
            Some(delay_ms),
        );
        let name = name.to_owned();
        me.send_after(delay, move || SupervisorMsg::Restart(name));
        Ok(())
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        me: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let board = Arc::clone(&args.board);
        let my_name = me.get_name().unwrap_or_default();
        // A nested supervisor was registered by its parent; the root registers itself.
        let path = match board.path_of_name(&my_name) {
            Some(p) => p,
            None => {
                let p = board.short(&my_name).to_owned();
                board.register(&p, &my_name, None, 0);
                p
            }
        };
        board.update(&path, |e| e.supervisor = true);
        let dynamic: Vec<Arc<dyn ChildSpec>> = args
            .dynamic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let specs: Vec<Arc<dyn ChildSpec>> = args.children.iter().cloned().chain(dynamic).collect();
        let mut order = Vec::with_capacity(specs.len());
        let mut children = HashMap::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let name = spec.name();
            let child_path = format!("{path}/{}", board.short(&name));
            board.register(&child_path, &name, Some(&path), i);
            order.push(name.clone());
            children.insert(
                name,
                Child {
                    spec: Arc::clone(spec),
                    cell: None,
                    path: child_path,
                    restarts: VecDeque::new(),
                    total_restarts: 0,
                },
            );
        }
        Ok(SupervisorState {
            args,
            path,
            order,
            children,
            by_id: HashMap::new(),
        })
    }

    // Children start in post_start: by then this supervisor is linked to its own parent, so
    // a failure here is supervised too.
    async fn post_start(
        &self,
        me: ActorRef<SupervisorMsg>,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if st
            .args
            .board
            .entry(&st.path)
            .is_some_and(|e| e.parent.is_none())
        {
            st.args
                .board
                .update(&st.path, |e| e.status = ActorStatus::Running);
            log_event(SupervisionEventKind::Started, &st.path, None, 0, None);
        }
        for name in st.order.clone() {
            Self::start_child(&me, st, &name).await?;
        }
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Restart(name) => {
                if st.children.get(&name).is_some_and(|c| c.cell.is_none()) {
                    Self::start_child(&me, st, &name).await?;
                }
            }
            SupervisorMsg::Children(reply) => {
                let info = st
                    .order
                    .iter()
                    .filter_map(|n| st.children.get(n))
                    .map(|c| ChildInfo {
                        name: c.spec.name(),
                        running: c.cell.is_some(),
                        restarts: c.total_restarts,
                    })
                    .collect();
                let _ = reply.send(info);
            }
            SupervisorMsg::Add(spec, reply) => {
                let name = spec.name();
                if st.children.contains_key(&name) {
                    let _ = reply.send(Err(format!("`{name}` is already running")));
                    return Ok(());
                }
                st.args
                    .dynamic
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Arc::clone(&spec));
                let path = format!("{}/{}", st.path, st.args.board.short(&name));
                st.args
                    .board
                    .register(&path, &name, Some(&st.path), st.order.len());
                st.order.push(name.clone());
                st.children.insert(
                    name.clone(),
                    Child {
                        spec,
                        cell: None,
                        path,
                        restarts: VecDeque::new(),
                        total_restarts: 0,
                    },
                );
                Self::start_child(&me, st, &name).await?;
                let _ = reply.send(Ok(()));
            }
            SupervisorMsg::Remove(name, reply) => {
                let removed = {
                    let mut dynamic = st.args.dynamic.lock().unwrap_or_else(|p| p.into_inner());
                    let before = dynamic.len();
                    dynamic.retain(|s| s.name() != name);
                    dynamic.len() != before
                };
                if !removed {
                    let _ = reply.send(Err(format!("`{name}` cannot be removed at runtime")));
                    return Ok(());
                }
                st.order.retain(|n| n != &name);
                if let Some(child) = st.children.remove(&name) {
                    if let Some(cell) = child.cell {
                        // Forgotten first, so its termination is not taken for a failure.
                        st.by_id.remove(&cell.get_id());
                        if cell
                            .stop_and_wait(Some("removed".into()), Some(st.args.stop_timeout))
                            .await
                            .is_err()
                        {
                            cell.kill();
                        }
                    }
                    st.args.board.forget(&child.path);
                    log_event(
                        SupervisionEventKind::Stopped,
                        &child.path,
                        Some("removed"),
                        u64::from(child.total_restarts),
                        None,
                    );
                }
                let _ = reply.send(Ok(()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(name) = st.by_id.remove(&cell.get_id()) {
                    Self::failed(&me, st, &name, &error.to_string())?;
                }
            }
            SupervisionEvent::ActorTerminated(cell, _state, reason) => {
                if let Some(name) = st.by_id.remove(&cell.get_id()) {
                    let reason = format!(
                        "stopped unexpectedly ({})",
                        reason.as_deref().unwrap_or("no reason given")
                    );
                    Self::failed(&me, st, &name, &reason)?;
                }
            }
            other => {
                tracing::debug!(supervisor = %st.path, event = %other, "supervision event");
            }
        }
        Ok(())
    }

    /// Stops children one by one in reverse start order, each with a timeout. Without this,
    /// ractor would kill them (no `post_stop`) when this actor exits.
    async fn post_stop(
        &self,
        _me: ActorRef<SupervisorMsg>,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        for name in st.order.iter().rev() {
            let Some(child) = st.children.get_mut(name) else {
                continue;
            };
            let path = child.path.clone();
            let Some(cell) = child.cell.take() else {
                // Waiting for a restart: it stays down.
                st.args.board.update(&path, |e| {
                    e.status = ActorStatus::Stopped;
                    e.next_backoff_ms = None;
                });
                continue;
            };
            st.by_id.remove(&cell.get_id());
            let reason = match cell
                .stop_and_wait(Some("shutdown".into()), Some(st.args.stop_timeout))
                .await
            {
                Ok(()) => "shutdown".to_owned(),
                Err(error) => {
                    cell.kill();
                    format!(
                        "did not stop within {:?} ({error}); killed",
                        st.args.stop_timeout
                    )
                }
            };
            let mut restarts = 0;
            st.args.board.update(&path, |e| {
                e.status = ActorStatus::Stopped;
                restarts = e.restarts;
            });
            log_event(
                SupervisionEventKind::Stopped,
                &path,
                Some(&reason),
                restarts,
                None,
            );
        }
        if st
            .args
            .board
            .entry(&st.path)
            .is_some_and(|e| e.parent.is_none())
        {
            st.args
                .board
                .update(&st.path, |e| e.status = ActorStatus::Stopped);
            log_event(
                SupervisionEventKind::Stopped,
                &st.path,
                Some("shutdown"),
                0,
                None,
            );
        }
        Ok(())
    }
}

/// A [`ChildSpec`] for a nested supervisor.
pub struct SupervisorSpec {
    /// The nested supervisor's registered name.
    pub name: String,
    /// Its arguments.
    pub args: SupervisorArgs,
}

impl ChildSpec for SupervisorSpec {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn spawn(&self, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> {
        let (name, args) = (self.name.clone(), self.args.clone());
        Box::pin(async move {
            let (actor, _) = Actor::spawn_linked(Some(name), Supervisor, args, supervisor).await?;
            Ok(actor.get_cell())
        })
    }
}

/// A node of the supervision tree, as the admin API and the startup log show it.
#[derive(Clone, Debug, Serialize)]
pub struct TreeNode {
    /// The registered actor name.
    pub name: String,
    /// The path in the tree, e.g. `relayarr/hooks/hook:discord`.
    pub path: String,
    /// ractor's actor id, while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its status.
    pub status: ActorStatus,
    /// Restarts since the relay started.
    pub restarts: u64,
    /// Its last failure, if any.
    pub last_failure: Option<Failure>,
    /// The delay before the scheduled restart, while restarting.
    pub next_backoff_ms: Option<u64>,
    /// The children, in start order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<TreeNode>,
}

/// Renders a tree as indented lines (`├──`/`└──`), for the startup log.
pub fn render_tree(node: &TreeNode) -> String {
    fn line(node: &TreeNode) -> String {
        let name = node.path.rsplit('/').next().unwrap_or(&node.path);
        let id = node.id.as_deref().unwrap_or("-");
        let mut s = format!("{name} [{id}] {}", node.status.as_str());
        if node.restarts > 0 {
            s.push_str(&format!(" (restarts: {})", node.restarts));
        }
        s
    }
    fn walk(node: &TreeNode, prefix: &str, last: bool, root: bool, out: &mut String) {
        if root {
            out.push_str(&format!("{}\n", line(node)));
        } else {
            let branch = if last { "└── " } else { "├── " };
            out.push_str(&format!("{prefix}{branch}{}\n", line(node)));
        }
        let child_prefix = if root {
            String::new()
        } else {
            format!("{prefix}{}", if last { "    " } else { "│   " })
        };
        for (i, c) in node.children.iter().enumerate() {
            walk(c, &child_prefix, i + 1 == node.children.len(), false, out);
        }
    }
    let mut out = String::new();
    walk(node, "", true, true, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            max_restarts: 3,
            window: Duration::from_secs(60),
        };
        for attempt in 0..10 {
            let d = b.delay(attempt);
            let full = (Duration::from_millis(100) * 2u32.pow(attempt)).min(Duration::from_secs(1));
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} outside [{:?}, {full:?}]",
                full / 2
            );
        }
    }

    #[test]
    fn render_tree_draws_branches() {
        let leaf = |path: &str| TreeNode {
            name: format!("ns/{}", path.rsplit('/').next().unwrap_or(path)),
            path: path.into(),
            id: Some("0.1".into()),
            status: ActorStatus::Running,
            restarts: 0,
            last_failure: None,
            next_backoff_ms: None,
            children: vec![],
        };
        let tree = TreeNode {
            children: vec![
                TreeNode {
                    children: vec![TreeNode {
                        restarts: 2,
                        status: ActorStatus::Restarting,
                        id: None,
                        ..leaf("relayarr/sources/source:sonarr")
                    }],
                    ..leaf("relayarr/sources")
                },
                leaf("relayarr/router"),
            ],
            ..leaf("relayarr")
        };
        let text = render_tree(&tree);
        assert!(text.starts_with("relayarr [0.1] running\n"), "{text}");
        assert!(text.contains("├── sources [0.1] running"), "{text}");
        assert!(
            text.contains("│   └── source:sonarr [-] restarting (restarts: 2)"),
            "{text}"
        );
        assert!(text.contains("└── router"), "{text}");
    }

    #[test]
    fn supervision_board_builds_the_tree_without_the_namespace() {
        let b = SupervisionBoard::new("t1-0/");
        assert_eq!(b.supervisors_not_running().len(), 1, "no root yet");
        b.register("relayarr", "t1-0/relayarr", None, 0);
        b.update("relayarr", |e| {
            e.supervisor = true;
            e.status = ActorStatus::Running;
        });
        let child = format!("relayarr/{}", b.short("t1-0/hooks"));
        b.register(&child, "t1-0/hooks", Some("relayarr"), 1);
        b.update(&child, |e| e.supervisor = true);
        b.register("relayarr/history", "t1-0/history", Some("relayarr"), 0);
        assert_eq!(
            b.supervisors_not_running(),
            vec![("relayarr/hooks".to_string(), ActorStatus::Starting)]
        );
        b.update("relayarr/hooks", |e| {
            e.status = ActorStatus::Running;
            e.restarts = 3;
        });
        // Re-registering (the parent was rebuilt) keeps the restart count.
        b.register("relayarr/hooks", "t1-0/hooks", Some("relayarr"), 1);
        let tree = b.tree().expect("tree");
        assert_eq!(tree.path, "relayarr");
        let paths: Vec<&str> = tree.children.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["relayarr/history", "relayarr/hooks"], "start order");
        assert_eq!(tree.children[1].restarts, 3);
        assert_eq!(tree.children[1].status, ActorStatus::Starting);
    }
}
