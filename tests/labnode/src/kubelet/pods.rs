//! The pod manager: watches the pods bound to this node and runs one [`Worker`] per pod UID.
use super::error::Error;
use super::state;
use super::worker::{Cmd, Worker};
use super::Ctx;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::Instrument;

/// Runs the pods of one node.
pub struct Manager {
    ctx: Arc<Ctx>,
    workers: HashMap<String, (u64, mpsc::UnboundedSender<Cmd>)>,
    generation: u64,
    listed: HashSet<String>,
    first_list_done: bool,
    done_tx: mpsc::UnboundedSender<(String, u64)>,
    done_rx: mpsc::UnboundedReceiver<(String, u64)>,
}

impl Manager {
    /// A manager for the node in `ctx`.
    pub fn new(ctx: Arc<Ctx>) -> Manager {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Manager {
            ctx,
            workers: HashMap::new(),
            generation: 0,
            listed: HashSet::new(),
            first_list_done: false,
            done_tx,
            done_rx,
        }
    }

    /// Watches pods with `spec.nodeName=<node>` forever.
    pub async fn run(mut self) -> Result<(), Error> {
        let api: Api<Pod> = Api::all(self.ctx.client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={}", self.ctx.node));
        let mut events = watcher(api, config).default_backoff().boxed();
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(ev)) => self.handle(ev),
                    Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                    None => return Ok(()),
                },
                Some((uid, generation)) = self.done_rx.recv() => {
                    if self.workers.get(&uid).is_some_and(|(g, _)| *g == generation) {
                        self.workers.remove(&uid);
                    }
                }
            }
        }
    }

    fn handle(&mut self, ev: Event<Pod>) {
        match ev {
            Event::Init => self.listed.clear(),
            Event::InitApply(pod) => {
                if let Some(uid) = self.ours(&pod) {
                    self.listed.insert(uid);
                    self.apply(pod);
                }
            }
            Event::Apply(pod) => {
                if self.ours(&pod).is_some() {
                    self.apply(pod);
                }
            }
            Event::Delete(pod) => {
                if let Some(uid) = self.ours(&pod) {
                    self.gone(&uid);
                }
            }
            Event::InitDone => self.init_done(),
        }
    }

    /// The UID of a pod bound to this node (the field selector may be ignored by a server).
    fn ours(&self, pod: &Pod) -> Option<String> {
        let node = pod.spec.as_ref()?.node_name.as_deref()?;
        (node == self.ctx.node).then(|| pod.metadata.uid.clone())?
    }

    fn apply(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if let Some((_, tx)) = self.workers.get(&uid) {
            if tx.send(Cmd::Update(Box::new(pod.clone()))).is_ok() {
                return;
            }
        }
        self.spawn(pod);
    }

    fn spawn(&mut self, pod: Pod) -> Option<mpsc::UnboundedSender<Cmd>> {
        let uid = pod.metadata.uid.clone()?;
        self.generation += 1;
        let generation = self.generation;
        let (tx, rx) = mpsc::unbounded_channel();
        let span = tracing::info_span!(
            "pod",
            ns = pod.metadata.namespace.as_deref().unwrap_or(""),
            name = pod.metadata.name.as_deref().unwrap_or(""),
        );
        let done = self.done_tx.clone();
        let worker = Worker::new(self.ctx.clone(), pod);
        let uid_done = uid.clone();
        tokio::spawn(
            async move {
                worker.run(rx).await;
                let _ = done.send((uid_done, generation));
            }
            .instrument(span),
        );
        self.workers.insert(uid, (generation, tx.clone()));
        Some(tx)
    }

    fn gone(&mut self, uid: &str) {
        if let Some((_, tx)) = self.workers.get(uid) {
            let _ = tx.send(Cmd::Gone);
        }
    }

    /// After a full list: pods we run that were not listed are gone; on the first list, pods
    /// left on disk by an earlier kubelet run whose objects are gone are cleaned up.
    fn init_done(&mut self) {
        let missing: Vec<String> = self
            .workers
            .keys()
            .filter(|uid| !self.listed.contains(*uid))
            .cloned()
            .collect();
        for uid in missing {
            self.gone(&uid);
        }
        if self.first_list_done {
            return;
        }
        self.first_list_done = true;
        for uid in state::list(&self.ctx.node) {
            if self.listed.contains(&uid) || self.workers.contains_key(&uid) {
                continue;
            }
            let Some(rec) = state::load(&self.ctx.node, &uid) else {
                continue;
            };
            tracing::info!(ns = %rec.namespace, name = %rec.name, "cleaning up a pod deleted while the kubelet was down");
            let pod = Pod {
                metadata: ObjectMeta {
                    name: Some(rec.name.clone()),
                    namespace: Some(rec.namespace.clone()),
                    uid: Some(rec.uid.clone()),
                    ..Default::default()
                },
                spec: None,
                status: None,
            };
            if let Some(tx) = self.spawn(pod) {
                let _ = tx.send(Cmd::Gone);
            }
        }
    }
}
