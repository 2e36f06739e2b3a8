//! The Services and EndpointSlices the model reads, as the agent keeps them: each is the
//! Kubernetes object with only the fields the model (or an Event on it) reads.
//!
//! k8s-openapi's `Service` and `EndpointSlice` hold every field of the API, most of them inline
//! (an EndpointSlice endpoint alone is over 300 bytes before its address, mainly the inline
//! `targetRef`); at 10,000 Services with 50,000 endpoints the watch stores of those objects were
//! the largest part of the agent's memory. These types have the same names, field names and
//! field types as k8s-openapi's for what they keep, so the model reads them exactly as it read
//! the full objects, and they deserialise straight from the API's JSON: what they do not name
//! is skipped while parsing and never allocated.
//!
//! Invariant: every field the model reads is here (an EndpointSlice's service-name label possibly
//! moved to a field of its own, read through [`EndpointSlice::service_name`]), with k8s-openapi's type and parsing (a
//! missing or `null` required field is its default, as k8s-openapi parses it); metadata stays
//! a full `ObjectMeta` (kube-rs' watch and store need one), thinned by [`crate::watch::slim`].
//! `From` the k8s-openapi objects gives exactly what deserialising their JSON gives.
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

/// A Service (core/v1), the fields the model reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Service {
    /// Name, namespace, the labels and annotations the model reads, and what an Event needs.
    pub metadata: ObjectMeta,
    /// The spec.
    pub spec: Option<ServiceSpec>,
    /// The status (load balancer ingress addresses).
    pub status: Option<ServiceStatus>,
}

/// What of a Service's spec the model reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ServiceSpec {
    /// `clusterIP`.
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    /// `clusterIPs`.
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Option<Vec<String>>,
    /// `externalIPs`.
    #[serde(rename = "externalIPs")]
    pub external_ips: Option<Vec<String>>,
    /// `externalTrafficPolicy`.
    pub external_traffic_policy: Option<String>,
    /// `healthCheckNodePort`.
    pub health_check_node_port: Option<i32>,
    /// `internalTrafficPolicy`.
    pub internal_traffic_policy: Option<String>,
    /// `loadBalancerSourceRanges`.
    pub load_balancer_source_ranges: Option<Vec<String>>,
    /// `ports`.
    pub ports: Option<Vec<ServicePort>>,
    /// `sessionAffinity`.
    pub session_affinity: Option<String>,
    /// `sessionAffinityConfig`.
    pub session_affinity_config: Option<SessionAffinityConfig>,
    /// `trafficDistribution`.
    pub traffic_distribution: Option<String>,
    /// `type`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
}

/// One port of a Service.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ServicePort {
    /// `name`.
    pub name: Option<String>,
    /// `nodePort`.
    pub node_port: Option<i32>,
    /// `port`.
    #[serde(deserialize_with = "nullable")]
    pub port: i32,
    /// `protocol`.
    pub protocol: Option<String>,
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
    pub ip: Option<String>,
    /// `ipMode`.
    pub ip_mode: Option<String>,
}

/// An EndpointSlice (discovery.k8s.io/v1), the fields the model reads, and where its Service's
/// name is kept once slimmed.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EndpointSlice {
    /// Name, namespace and the `kubernetes.io/service-name` label.
    pub metadata: ObjectMeta,
    /// `addressType`.
    #[serde(deserialize_with = "nullable")]
    pub address_type: String,
    /// `endpoints`.
    pub endpoints: Option<Vec<Endpoint>>,
    /// `ports`.
    pub ports: Option<Vec<EndpointPort>>,
    /// The `kubernetes.io/service-name` label once [`crate::watch::slim`] has moved it out of
    /// the labels (a map of one label takes half a kilobyte); read it with
    /// [`EndpointSlice::service_name`].
    #[serde(skip)]
    pub service_label: Option<String>,
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
    pub addresses: Vec<String>,
    /// `conditions`.
    pub conditions: Option<EndpointConditions>,
    /// `hints`.
    pub hints: Option<EndpointHints>,
    /// `nodeName`.
    pub node_name: Option<String>,
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
    pub name: String,
}

/// One port of a slice.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct EndpointPort {
    /// `name`.
    pub name: Option<String>,
    /// `port`.
    pub port: Option<i32>,
    /// `protocol`.
    pub protocol: Option<String>,
}

impl k8s_openapi::Resource for Service {
    const API_VERSION: &'static str = "v1";
    const GROUP: &'static str = "";
    const KIND: &'static str = "Service";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "services";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::ListableResource for Service {
    const LIST_KIND: &'static str = "ServiceList";
}

impl k8s_openapi::Metadata for Service {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl k8s_openapi::Resource for EndpointSlice {
    const API_VERSION: &'static str = "discovery.k8s.io/v1";
    const GROUP: &'static str = "discovery.k8s.io";
    const KIND: &'static str = "EndpointSlice";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "endpointslices";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::ListableResource for EndpointSlice {
    const LIST_KIND: &'static str = "EndpointSliceList";
}

impl k8s_openapi::Metadata for EndpointSlice {
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
