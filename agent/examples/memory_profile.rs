//! What the agent's state holds at a benchmark-sized cluster, stage by stage: the heap bytes
//! live after the watch stores, the desired cache, the service sync's shadows and the metrics'
//! frontend names, for the benchmark's filler Services (selector-less, one EndpointSlice each
//! with 2–8 endpoints, as `bench/src/cluster.rs` creates them) in the form the API server sends
//! them (so the sizes are those of real deserialised objects).
//!
//! Run: `cargo run --release -p switchyard --example memory_profile -- 10000`; with a second
//! argument `k8s` or `ours`, it only builds the stores of that kind (k8s-openapi objects as
//! before, or the agent's own types) and prints the process's VmRSS after returning freed memory
//! to the kernel (glibc's view of the same heap, fragmentation included).
//! A counting global allocator (wrapping the system one) measures; nothing touches the kernel.
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use serde_json::json;

use switchyard::datapath::services::{MemServiceMaps, ServiceSync};
use switchyard::model::objects::{EndpointSlice, Service, WatchedService, WatchedSlice};
use switchyard::model::{DesiredCache, NodeView};
use switchyard::watch::cache::{cache, Cache};
use switchyard::watch::slim::Slim;

/// The system allocator, counting the bytes it has handed out and not got back.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn mib(b: usize) -> String {
    format!("{:7.2} MiB", b as f64 / (1024.0 * 1024.0))
}

/// Filler `i` as `bench/src/cluster.rs` makes it, with what the API server adds (uid,
/// resourceVersion, creationTimestamp, spec defaults, status; a slice's generation).
fn filler(i: usize) -> (String, String) {
    let name = format!("fill-{i}");
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + i as u32);
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "labels": {"bench": "filler"},
                     "uid": format!("6f1c2d3e-4b5a-4c6d-8e7f-{i:012}"),
                     "resourceVersion": format!("{}", 100_000 + 2 * i),
                     "creationTimestamp": "2026-12-02T11:00:00Z"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
                 "clusterIP": ip.to_string(), "clusterIPs": [ip.to_string()],
                 "type": "ClusterIP", "sessionAffinity": "None",
                 "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"],
                 "ipFamilyPolicy": "SingleStack"},
        "status": {"loadBalancer": {}}
    });
    let count = 2 + i % 7;
    let endpoints: Vec<_> = (0..count)
        .map(|j| {
            let x = (i * 7 + j) % (150 * 250);
            let ip = Ipv4Addr::new(10, 244, 100 + (x / 250) as u8, (x % 250 + 1) as u8);
            json!({"addresses": [ip.to_string()],
                   "conditions": {"ready": true, "serving": true, "terminating": false}})
        })
        .collect();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-manual"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": name},
                     "uid": format!("7a1c2d3e-4b5a-4c6d-8e7f-{i:012}"),
                     "resourceVersion": format!("{}", 100_001 + 2 * i),
                     "generation": 1,
                     "creationTimestamp": "2026-12-02T11:00:00Z"},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    });
    (svc.to_string(), slice.to_string())
}

/// A cache of the objects parsed from `texts` as `K`, filled as by a watch's first list.
fn fill<'a, K>(texts: impl Iterator<Item = &'a String>) -> Cache<K::Kept>
where
    K: kube::Resource + Slim + serde::de::DeserializeOwned,
{
    let (reader, mut writer) = cache();
    writer.apply(Event::<K>::Init);
    for text in texts {
        writer.apply(Event::InitApply(
            serde_json::from_str::<K>(text).expect("a valid object"),
        ));
    }
    writer.apply(Event::<K>::InitDone);
    reader
}

fn node() -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": "n1"},
        "spec": {"podCIDR": "10.244.1.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "198.18.0.11"}]}
    }))
    .expect("a valid node")
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("the number of Services"))
        .unwrap_or(10_000);
    let texts: Vec<(String, String)> = (0..n).map(filler).collect();
    if let Some(kind) = std::env::args().nth(2) {
        return rss_of_stores(&texts, &kind);
    }
    let base = live();
    let mut last = base;
    let stage = |what: &str, last: &mut usize| {
        let now = live();
        println!(
            "{what:<44} +{}  (total {})",
            mib(now.wrapping_sub(*last)),
            mib(now - base)
        );
        *last = now;
    };

    // What the stores held when they kept k8s-openapi objects (before the agent's own types),
    // with what the old slim dropped (managedFields, the last-applied annotation) dropped.
    {
        let (services, mut sw) = reflector::store::<k8s_openapi::api::core::v1::Service>();
        let (slices, mut lw) = reflector::store::<k8s_openapi::api::discovery::v1::EndpointSlice>();
        sw.apply_watcher_event(&Event::Init);
        lw.apply_watcher_event(&Event::Init);
        for (s, l) in &texts {
            sw.apply_watcher_event(&Event::InitApply(
                serde_json::from_str(s).expect("a valid service"),
            ));
            lw.apply_watcher_event(&Event::InitApply(
                serde_json::from_str(l).expect("a valid slice"),
            ));
        }
        sw.apply_watcher_event(&Event::InitDone);
        lw.apply_watcher_event(&Event::InitDone);
        stage("before: stores of k8s-openapi objects", &mut last);
        drop((services, slices, sw, lw));
        last = live();
    }

    let services = fill::<WatchedService>(texts.iter().map(|t| &t.0));
    stage("  of which the Service cache", &mut last);
    drop(services);
    last = live();
    let services = fill::<WatchedService>(texts.iter().map(|t| &t.0));
    let slices = fill::<WatchedSlice>(texts.iter().map(|t| &t.1));
    let (svc_state, slice_state) = (services.state(), slices.state());
    println!(
        "{} Services, {} EndpointSlices, {} endpoints",
        svc_state.len(),
        slice_state.len(),
        slice_state
            .iter()
            .map(|s| s.endpoints.as_ref().map_or(0, Vec::len))
            .sum::<usize>()
    );
    stage("the agent's caches (slimmed objects)", &mut last);

    let view = NodeView::new(&[node()], "n1", Ipv4Addr::new(198, 18, 0, 11));
    let cache = DesiredCache::rebuild(&svc_state, &slice_state, view);
    drop((svc_state, slice_state));
    stage("desired cache", &mut last);
    let copy = cache.desired().clone();
    stage("  a copy of its Desired", &mut last);
    drop(copy);
    last = live();

    let mut sync = ServiceSync::open(MemServiceMaps::in_memory()).expect("empty maps");
    let report = sync.sync_all(cache.desired()).expect("a plannable state");
    assert!(report.complete(), "every frontend fits the maps");
    let with_maps = live() - last;
    // The in-memory maps stand in for the kernel's: a copy of them measures what to leave out.
    let m = sync.maps();
    let copy = (
        m.backends.clone(),
        m.rev_nat.clone(),
        m.services.clone(),
        m.affinity_match.clone(),
        m.source_ranges.clone(),
    );
    let maps = live() - last - with_maps;
    drop(copy);
    let shadow = sync.programmed().clone();
    let programmed = live() - last - with_maps;
    drop(shadow);
    println!(
        "{:<44} +{}  (programmed shadow {}; in-memory maps left out: {})",
        "service sync: programmed shadow + usage",
        mib(with_maps - maps),
        mib(programmed),
        mib(maps)
    );
    last = live();

    let names = switchyard::metrics::frontend_names(sync.programmed(), cache.desired());
    stage("metrics: frontend names", &mut last);
    println!("agent state in all: {}", mib(live() - base - maps));
    println!(
        "sizes: ObjectMeta {} Meta {} Service {} EndpointSlice {} Endpoint {} k8s Endpoint {} FrontendSpec {} ObjectRef {}",
        std::mem::size_of::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(),
        std::mem::size_of::<switchyard::model::objects::Meta>(),
        std::mem::size_of::<Service>(),
        std::mem::size_of::<EndpointSlice>(),
        std::mem::size_of::<switchyard::model::objects::Endpoint>(),
        std::mem::size_of::<k8s_openapi::api::discovery::v1::Endpoint>(),
        std::mem::size_of::<switchyard::model::FrontendSpec>(),
        std::mem::size_of::<kube::runtime::reflector::ObjectRef<WatchedService>>(),
    );
    println!(
        "peak during the run: {}",
        mib(PEAK.load(Ordering::Relaxed) - base)
    );
    drop(names);
}

/// The process's VmRSS (kB) after freed memory went back to the kernel.
fn rss() -> String {
    switchyard::memory::release_freed();
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .map(|l| l.trim_start_matches("VmRSS:").trim().to_string())
        .unwrap_or_default()
}

/// Builds only the stores of `kind` (`k8s` or `ours`) from `texts` and prints VmRSS.
fn rss_of_stores(texts: &[(String, String)], kind: &str) {
    switchyard::memory::limit_arenas();
    println!("VmRSS with the JSON texts only: {}", rss());
    let heap = live();
    let keep: Box<dyn std::any::Any> = match kind {
        "k8s" => {
            let (services, mut sw) = reflector::store::<k8s_openapi::api::core::v1::Service>();
            let (slices, mut lw) =
                reflector::store::<k8s_openapi::api::discovery::v1::EndpointSlice>();
            for (s, l) in texts {
                sw.apply_watcher_event(&Event::Apply(serde_json::from_str(s).expect("a service")));
                lw.apply_watcher_event(&Event::Apply(serde_json::from_str(l).expect("a slice")));
            }
            Box::new((services, slices, sw, lw))
        }
        _ => Box::new((
            fill::<WatchedService>(texts.iter().map(|t| &t.0)),
            fill::<WatchedSlice>(texts.iter().map(|t| &t.1)),
        )),
    };
    println!(
        "stores of {kind}: heap {}, VmRSS {}",
        mib(live() - heap),
        rss()
    );
    drop(keep);
}
