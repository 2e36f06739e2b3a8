//! The API view of the cluster DNS: kube-rs reflectors of every Service and EndpointSlice, as
//! CoreDNS's `kubernetes` plugin keeps informers of them.
//!
//! Invariant: after both initial lists ([`Stores::wait_until_ready`]), a [`Stores::snapshot`]
//! holds what the watches have delivered so far — a change reaches the answers as soon as its
//! watch event arrives (watches relist after errors, with backoff).
use super::handler::Source;
use super::snapshot::Snapshot;
use crate::reflect;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::store::WriterDropped;
use kube::runtime::reflector::Store;

/// The stores the watches fill.
#[derive(Clone)]
pub struct Stores {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
}

impl Stores {
    /// Starts watching Services and EndpointSlices; the watches run until the tasks are
    /// aborted.
    pub fn watch(client: kube::Client) -> (Stores, Vec<tokio::task::JoinHandle<()>>) {
        let (services, a) = reflect::all::<Service>(client.clone());
        let (slices, b) = reflect::all::<EndpointSlice>(client);
        (Stores { services, slices }, vec![a, b])
    }

    /// Waits for both initial lists; an error if a watch ended first.
    pub async fn wait_until_ready(&self) -> Result<(), WriterDropped> {
        self.services.wait_until_ready().await?;
        self.slices.wait_until_ready().await
    }
}

impl Source for Stores {
    fn snapshot(&self) -> Snapshot {
        Snapshot::new(self.services.state(), self.slices.state())
    }
}
