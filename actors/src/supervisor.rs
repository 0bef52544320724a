//! One supervisor actor for every level of the tree (`relayarr`, `sources`, `hooks`, …).
//!
//! ractor restarts nothing by itself (notes §6.2), so this actor does: a failed or
//! unexpectedly stopped child is restarted after an exponential backoff with jitter; a child
//! that keeps failing (more than `max_restarts` within `window`) makes the supervisor fail
//! too, which escalates to its own parent. Children are started in spec order and stopped in
//! reverse order, so shutdown is ordered (ingress-facing actors first, history last).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use serde::Serialize;

/// Restart policy of a supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// First restart delay; doubles with each consecutive failure.
    pub base: Duration,
    /// Cap on the restart delay.
    pub max: Duration,
    /// More than this many restarts of one child within `window` escalates.
    pub max_restarts: u32,
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
    pub backoff: Backoff,
    pub children: Vec<Arc<dyn ChildSpec>>,
    /// How long each child gets to stop gracefully on shutdown.
    pub stop_timeout: Duration,
}

pub enum SupervisorMsg {
    /// Timer message: start a child again after its backoff.
    Restart(String),
    /// The current children, for the admin API and tests.
    Children(RpcReplyPort<Vec<ChildInfo>>),
}

/// What the admin API shows about one child.
#[derive(Clone, Debug, Serialize)]
pub struct ChildInfo {
    pub name: String,
    pub running: bool,
    pub restarts: u32,
}

struct Child {
    spec: Arc<dyn ChildSpec>,
    cell: Option<ActorCell>,
    /// Start times of recent restarts, for the intensity limit.
    restarts: VecDeque<Instant>,
    total_restarts: u32,
}

pub struct SupervisorState {
    args: SupervisorArgs,
    /// In start order.
    order: Vec<String>,
    children: HashMap<String, Child>,
    by_id: HashMap<ActorId, String>,
}

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
                tracing::info!(
                    supervisor = %me.get_name().unwrap_or_default(),
                    child = %name,
                    actor_id = %cell.get_id(),
                    restarts = child.total_restarts,
                    "child started"
                );
                st.by_id.insert(cell.get_id(), name.to_owned());
                child.cell = Some(cell);
                Ok(())
            }
            Err(error) => {
                // pre_start failed: no supervision event will come, so schedule the retry here.
                tracing::error!(
                    supervisor = %me.get_name().unwrap_or_default(),
                    child = %name,
                    %error,
                    "child failed to start"
                );
                Self::schedule_restart(me, st, name)
            }
        }
    }

    fn schedule_restart(
        me: &ActorRef<SupervisorMsg>,
        st: &mut SupervisorState,
        name: &str,
    ) -> Result<(), ActorProcessingErr> {
        let backoff = &st.args.backoff;
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
            tracing::error!(
                supervisor = %me.get_name().unwrap_or_default(),
                child = %name,
                restarts = recent,
                window = ?backoff.window,
                "child keeps failing; escalating"
            );
            return Err(format!(
                "child {name} failed {recent} times within {:?}",
                backoff.window
            )
            .into());
        }
        let delay = backoff.delay(recent);
        child.restarts.push_back(now);
        child.total_restarts += 1;
        tracing::warn!(
            supervisor = %me.get_name().unwrap_or_default(),
            child = %name,
            attempt = recent + 1,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "restarting child after backoff"
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
        _me: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut order = Vec::with_capacity(args.children.len());
        let mut children = HashMap::with_capacity(args.children.len());
        for spec in &args.children {
            let name = spec.name();
            order.push(name.clone());
            children.insert(
                name,
                Child {
                    spec: Arc::clone(spec),
                    cell: None,
                    restarts: VecDeque::new(),
                    total_restarts: 0,
                },
            );
        }
        Ok(SupervisorState {
            args,
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
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let sup = me.get_name().unwrap_or_default();
        match evt {
            SupervisionEvent::ActorStarted(cell) => {
                tracing::debug!(supervisor = %sup, actor = ?cell.get_name(), "supervision: child running");
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(name) = st.by_id.remove(&cell.get_id()) {
                    tracing::error!(supervisor = %sup, child = %name, %error, "supervision: child failed");
                    Self::schedule_restart(&me, st, &name)?;
                }
            }
            SupervisionEvent::ActorTerminated(cell, _state, reason) => {
                if let Some(name) = st.by_id.remove(&cell.get_id()) {
                    tracing::warn!(supervisor = %sup, child = %name, ?reason, "supervision: child stopped unexpectedly");
                    Self::schedule_restart(&me, st, &name)?;
                }
            }
            other => {
                tracing::debug!(supervisor = %sup, event = %other, "supervision event");
            }
        }
        Ok(())
    }

    /// Stops children one by one in reverse start order, each with a timeout. Without this,
    /// ractor would kill them (no `post_stop`) when this actor exits.
    async fn post_stop(
        &self,
        me: ActorRef<SupervisorMsg>,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let sup = me.get_name().unwrap_or_default();
        for name in st.order.iter().rev() {
            let Some(cell) = st.children.get_mut(name).and_then(|c| c.cell.take()) else {
                continue;
            };
            st.by_id.remove(&cell.get_id());
            tracing::info!(supervisor = %sup, child = %name, "stopping child");
            if let Err(error) = cell
                .stop_and_wait(Some("shutdown".into()), Some(st.args.stop_timeout))
                .await
            {
                tracing::warn!(supervisor = %sup, child = %name, %error, "child did not stop in time; killing");
                cell.kill();
            }
        }
        Ok(())
    }
}

/// A [`ChildSpec`] for a nested supervisor.
pub struct SupervisorSpec {
    pub name: String,
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
    pub name: String,
    pub id: String,
    pub status: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<TreeNode>,
}

/// Snapshots the tree under `cell`, children sorted by name.
pub fn snapshot(cell: &ActorCell) -> TreeNode {
    let mut children: Vec<TreeNode> = cell.get_children().iter().map(snapshot).collect();
    children.sort_by(|a, b| a.name.cmp(&b.name));
    TreeNode {
        name: cell.get_name().unwrap_or_else(|| "<unnamed>".into()),
        id: cell.get_id().to_string(),
        status: format!("{:?}", cell.get_status()),
        children,
    }
}

/// Renders a tree as indented lines (`├──`/`└──`), for the startup log.
pub fn render_tree(node: &TreeNode) -> String {
    fn walk(node: &TreeNode, prefix: &str, last: bool, root: bool, out: &mut String) {
        if root {
            out.push_str(&format!("{} [{}] {}\n", node.name, node.id, node.status));
        } else {
            let branch = if last { "└── " } else { "├── " };
            out.push_str(&format!(
                "{prefix}{branch}{} [{}] {}\n",
                node.name, node.id, node.status
            ));
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
        let leaf = |n: &str| TreeNode {
            name: n.into(),
            id: "0.1".into(),
            status: "Running".into(),
            children: vec![],
        };
        let tree = TreeNode {
            name: "relayarr".into(),
            id: "0.0".into(),
            status: "Running".into(),
            children: vec![
                TreeNode {
                    children: vec![leaf("source:sonarr")],
                    ..leaf("sources")
                },
                leaf("router"),
            ],
        };
        let text = render_tree(&tree);
        assert!(text.contains("├── sources"), "{text}");
        assert!(text.contains("│   └── source:sonarr"), "{text}");
        assert!(text.contains("└── router"), "{text}");
    }
}
