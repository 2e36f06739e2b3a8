//! The Services and EndpointSlices the model reads, as the agent keeps them: each is the
//! Kubernetes object with only the fields the model (or an Event on it) reads.
//!
//! k8s-openapi's `Service` and `EndpointSlice` hold every field of the API, most of them inline
//! (an EndpointSlice endpoint alone is over 300 bytes before its address, mainly the inline
//! `targetRef`); at 10,000 Services with 50,000 endpoints the watch stores of those objects were
//! the largest part of the agent's memory. These types have the same names, field names and
//! field types as k8s-openapi's for what they keep, but for strings: a [`Str`] (a compact
//! string) holds up to 24 bytes inline where a `String` allocates, and nearly every string the
//! model reads is that short (addresses, names, `TCP`, `ClusterIP`), so a Service with its
//! slice needs a few allocations instead of dozens. The model reads them as it read the full
//! objects, and they deserialise straight from the API's JSON: what they do not name is skipped
//! while parsing and never allocated.
//!
//! The metadata is a type parameter: kube-rs' watch parses objects with a full `ObjectMeta`
//! (`Service<ObjectMeta>`, [`WatchedService`]: it reads the resourceVersion to resume from), and
//! the agent keeps them with [`Meta`], the five metadata fields the model and an Event read
//! (`ObjectMeta` is 350 bytes before any of its strings).
//!
//! Invariant: every field the model reads is here (an EndpointSlice's service-name label possibly
//! moved to a field of its own, read through [`EndpointSlice::service_name`]), with k8s-openapi's
//! type and parsing (a missing or `null` required field is its default, as k8s-openapi parses
//! it); [`Meta`]'s fields have `ObjectMeta`'s names and types (strings as [`Str`]).
//! `From` the k8s-openapi objects gives exactly what deserialising their JSON gives.
use std::collections::BTreeMap;

pub use compact_str::CompactString as Str;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer};

use super::services::SERVICE_NAME_LABEL;

/// A missing or `null` value is the type's default (k8s-openapi's parsing of required fields).
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// What the agent keeps of an object's metadata: `ObjectMeta`'s fields that the model or an
/// Event on the object reads, with the same names and types (strings as [`Str`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Meta {
    /// `name`.
    pub name: Option<Str>,
    /// `namespace`.
    pub namespace: Option<Str>,
    /// `labels`.
    pub labels: Option<BTreeMap<String, String>>,
    /// `annotations`.
    pub annotations: Option<BTreeMap<String, String>>,
    /// `uid`.
    pub uid: Option<Str>,
}

impl From<ObjectMeta> for Meta {
    fn from(m: ObjectMeta) -> Self {
        Meta {
            name: m.name.map(Str::from),
            namespace: m.namespace.map(Str::from),
            labels: m.labels,
            annotations: m.annotations,
            uid: m.uid.map(Str::from),
        }
    }
}

impl Meta {
    /// `(namespace, name)`, each empty when missing.
    pub fn key(&self) -> super::ObjKey {
        (
            self.namespace.clone().unwrap_or_default(),
            self.name.clone().unwrap_or_default(),
        )
    }
}

/// A Service as kube-rs' watch parses it (with the whole `ObjectMeta`).
pub type WatchedService = Service<ObjectMeta>;

/// An EndpointSlice as kube-rs' watch parses it (with the whole `ObjectMeta`).
pub type WatchedSlice = EndpointSlice<ObjectMeta>;

/// A Service (core/v1), the fields the model reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Service<M = Meta> {
    /// Name, namespace, the labels and annotations the model reads, and what an Event needs.
    pub metadata: M,
    /// The spec.
    pub spec: Option<ServiceSpec>,
    /// The status (load balancer ingress addresses).
    pub status: Option<ServiceStatus>,
}

impl Service {
    /// The reference an Event on this Service names it by (what kube-rs' `object_ref` gives for
    /// the whole object: kind, apiVersion, namespace, name and uid).
    pub fn object_reference(&self) -> k8s_openapi::api::core::v1::ObjectReference {
        use k8s_openapi::Resource;
        let m = &self.metadata;
        k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(WatchedService::API_VERSION.to_string()),
            kind: Some(WatchedService::KIND.to_string()),
            namespace: m.namespace.as_ref().map(Str::to_string),
            name: m.name.as_ref().map(Str::to_string),
            uid: m.uid.as_ref().map(Str::to_string),
            ..Default::default()
        }
    }
}

/// What of a Service's spec the model reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ServiceSpec {
    /// `clusterIP`.
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<Str>,
    /// `clusterIPs`.
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Option<Vec<Str>>,
    /// `externalIPs`.
    #[serde(rename = "externalIPs")]
    pub external_ips: Option<Vec<Str>>,
    /// `externalTrafficPolicy`.
    pub external_traffic_policy: Option<Str>,
    /// `healthCheckNodePort`.
    pub health_check_node_port: Option<i32>,
    /// `internalTrafficPolicy`.
    pub internal_traffic_policy: Option<Str>,
    /// `loadBalancerSourceRanges`.
    pub load_balancer_source_ranges: Option<Vec<Str>>,
    /// `ports`.
    pub ports: Option<Vec<ServicePort>>,
    /// `sessionAffinity`.
    pub session_affinity: Option<Str>,
    /// `sessionAffinityConfig`.
    pub session_affinity_config: Option<SessionAffinityConfig>,
    /// `trafficDistribution`.
    pub traffic_distribution: Option<Str>,
    /// `type`.
    #[serde(rename = "type")]
    pub type_: Option<Str>,
}

/// One port of a Service.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ServicePort {
    /// `name`.
    pub name: Option<Str>,
    /// `nodePort`.
    pub node_port: Option<i32>,
    /// `port`.
    #[serde(deserialize_with = "nullable")]
    pub port: i32,
    /// `protocol`.
    pub protocol: Option<Str>,
}

/// `sessionAffinityConfig`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SessionAffinityConfig {
    /// `clientIP`.
    #[serde(rename = "clientIP")]
    pub client_ip: Option<ClientIPConfig>,
}

/// `sessionAffinityConfig.clientIP`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ClientIPConfig {
    /// `timeoutSeconds`.
    pub timeout_seconds: Option<i32>,
}

/// What of a Service's status the model reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ServiceStatus {
    /// `loadBalancer`.
    pub load_balancer: Option<LoadBalancerStatus>,
}

/// `status.loadBalancer`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct LoadBalancerStatus {
    /// `ingress`.
    pub ingress: Option<Vec<LoadBalancerIngress>>,
}

/// One ingress point of a load balancer.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LoadBalancerIngress {
    /// `ip`.
    pub ip: Option<Str>,
    /// `ipMode`.
    pub ip_mode: Option<Str>,
}

/// An EndpointSlice (discovery.k8s.io/v1), the fields the model reads, and where its Service's
/// name is kept once slimmed.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EndpointSlice<M = Meta> {
    /// Name, namespace and the `kubernetes.io/service-name` label.
    pub metadata: M,
    /// `addressType`.
    #[serde(deserialize_with = "nullable")]
    pub address_type: Str,
    /// `endpoints`.
    pub endpoints: Option<Vec<Endpoint>>,
    /// `ports`.
    pub ports: Option<Vec<EndpointPort>>,
    /// The `kubernetes.io/service-name` label once [`crate::watch::slim`] has moved it out of
    /// the labels (a map of one label takes half a kilobyte); read it with
    /// [`EndpointSlice::service_name`].
    #[serde(skip)]
    pub service_label: Option<Str>,
}

impl EndpointSlice {
    /// The Service the slice belongs to: its `kubernetes.io/service-name` label.
    pub fn service_name(&self) -> Option<&str> {
        self.service_label.as_deref().or_else(|| {
            self.metadata
                .labels
                .as_ref()?
                .get(SERVICE_NAME_LABEL)
                .map(String::as_str)
        })
    }
}

/// One endpoint of a slice.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Endpoint {
    /// `addresses`.
    #[serde(deserialize_with = "nullable")]
    pub addresses: Vec<Str>,
    /// `conditions`.
    pub conditions: Option<EndpointConditions>,
    /// `hints`.
    pub hints: Option<EndpointHints>,
    /// `nodeName`.
    pub node_name: Option<Str>,
}

/// An endpoint's conditions.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct EndpointConditions {
    /// `ready`.
    pub ready: Option<bool>,
    /// `serving`.
    pub serving: Option<bool>,
    /// `terminating`.
    pub terminating: Option<bool>,
}

/// An endpoint's topology hints.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EndpointHints {
    /// `forZones`.
    pub for_zones: Option<Vec<ForZone>>,
}

/// A zone an endpoint is hinted for.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ForZone {
    /// `name`.
    #[serde(deserialize_with = "nullable")]
    pub name: Str,
}

/// One port of a slice.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct EndpointPort {
    /// `name`.
    pub name: Option<Str>,
    /// `port`.
    pub port: Option<i32>,
    /// `protocol`.
    pub protocol: Option<Str>,
}

impl k8s_openapi::Resource for WatchedService {
    const API_VERSION: &'static str = "v1";
    const GROUP: &'static str = "";
    const KIND: &'static str = "Service";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "services";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::ListableResource for WatchedService {
    const LIST_KIND: &'static str = "ServiceList";
}

impl k8s_openapi::Metadata for WatchedService {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl k8s_openapi::Resource for WatchedSlice {
    const API_VERSION: &'static str = "discovery.k8s.io/v1";
    const GROUP: &'static str = "discovery.k8s.io";
    const KIND: &'static str = "EndpointSlice";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "endpointslices";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::ListableResource for WatchedSlice {
    const LIST_KIND: &'static str = "EndpointSliceList";
}

impl k8s_openapi::Metadata for WatchedSlice {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// What deserialising `obj`'s JSON as `T` gives (both sides are serde types of one API object;
/// a failure would be a bug in these types).
fn convert<T: serde::de::DeserializeOwned>(obj: &impl serde::Serialize) -> T {
    serde_json::to_value(obj)
        .and_then(serde_json::from_value)
        .expect("a k8s-openapi object parses as the agent's view of it")
}

impl From<&k8s_openapi::api::core::v1::Service> for Service {
    fn from(svc: &k8s_openapi::api::core::v1::Service) -> Self {
        convert(svc)
    }
}

impl From<k8s_openapi::api::core::v1::Service> for Service {
    fn from(svc: k8s_openapi::api::core::v1::Service) -> Self {
        Service::from(&svc)
    }
}

impl From<&k8s_openapi::api::discovery::v1::EndpointSlice> for EndpointSlice {
    fn from(slice: &k8s_openapi::api::discovery::v1::EndpointSlice) -> Self {
        convert(slice)
    }
}

impl From<k8s_openapi::api::discovery::v1::EndpointSlice> for EndpointSlice {
    fn from(slice: k8s_openapi::api::discovery::v1::EndpointSlice) -> Self {
        EndpointSlice::from(&slice)
    }
}
