//! kube-rs (the client the agent and the node runtime use) against the switchyard-cp binary
//! through the harness's kubeconfig: create, list with selectors, Status errors, delete, watches
//! resumed from a resourceVersion, bookmarks when asked, 410 Gone for a resourceVersion older
//! than the restarted server's history, and `kube::runtime::watcher` relisting after it.
mod harness;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use harness::Cp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;

async fn client(cp: &Cp) -> kube::Client {
    let kc = Kubeconfig::read_from(&cp.kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(config).expect("client")
}

/// A pod for a scheduler that is not running, so watches see only this test's changes.
fn pod(name: &str, env: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "kube", "env": env}},
        "spec": {"schedulerName": "manual", "containers": [{"name": "c", "image": "echo"}]}
    }))
    .expect("pod")
}

/// (type, name) of every event of a watch from `rv` that the server ends after 1 s.
async fn events(api: &Api<Pod>, wp: WatchParams, rv: &str) -> Vec<(String, String)> {
    let stream = api.watch(&wp, rv).await.expect("watch");
    stream
        .map(|e| match e.expect("event") {
            WatchEvent::Added(p) => ("ADDED".into(), p.metadata.name.unwrap_or_default()),
            WatchEvent::Modified(p) => ("MODIFIED".into(), p.metadata.name.unwrap_or_default()),
            WatchEvent::Deleted(p) => ("DELETED".into(), p.metadata.name.unwrap_or_default()),
            WatchEvent::Bookmark(b) => ("BOOKMARK".into(), b.metadata.resource_version),
            WatchEvent::Error(s) => (format!("ERROR {}", s.code), s.reason.clone()),
        })
        .collect()
        .await
}

/// The names a watcher's initial list delivers, up to its `InitDone`.
async fn initial_names(
    stream: &mut (impl futures::Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Unpin),
) -> Vec<String> {
    let mut names = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .expect("watcher event")
            .expect("watcher ok")
        {
            Some(watcher::Event::InitApply(p)) => names.push(p.metadata.name.unwrap()),
            Some(watcher::Event::InitDone) => return names,
            _ => {}
        }
    }
}

fn api_code(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected a Kubernetes Status, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_creates_lists_deletes_watches_and_relists_after_410() {
    let mut cp = Cp::start();
    let pods: Api<Pod> = Api::default_namespaced(client(&cp).await);
    let rv0 = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let a = pods
        .create(&PostParams::default(), &pod("k-a", "prod"))
        .await
        .unwrap();
    assert!(a.metadata.uid.is_some() && a.metadata.creation_timestamp.is_some());
    pods.create(&PostParams::default(), &pod("k-b", "qa"))
        .await
        .unwrap();
    let err = pods
        .create(&PostParams::default(), &pod("k-a", "x"))
        .await
        .unwrap_err();
    assert_eq!(api_code(err), (409, "AlreadyExists".into()));
    let names = |l: kube::core::ObjectList<Pod>| -> Vec<String> {
        l.items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect()
    };
    let sel = ListParams::default().labels("env in (prod,qa),env notin (qa)");
    assert_eq!(names(pods.list(&sel).await.unwrap()), ["k-a"]);
    let sel = ListParams::default().fields("metadata.name=k-b");
    assert_eq!(names(pods.list(&sel).await.unwrap()), ["k-b"]);

    // A watch from rv0 replays what happened since, then changes in order.
    let wp = WatchParams::default().timeout(1).disable_bookmarks();
    let want = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        events(&pods, wp.clone(), &rv0).await,
        want(&[("ADDED", "k-a"), ("ADDED", "k-b")])
    );
    let rv1 = pods
        .get("k-b")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    pods.delete("k-b", &DeleteParams::default()).await.unwrap();
    let err = pods.get("k-b").await.unwrap_err();
    assert_eq!(api_code(err), (404, "NotFound".into()));
    assert_eq!(
        events(&pods, wp.clone(), &rv1).await,
        want(&[("DELETED", "k-b")])
    );

    // Bookmarks when asked, with a resourceVersion at least the watch's start.
    let rv2 = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let marks = events(&pods, WatchParams::default().timeout(6), &rv2).await;
    assert!(
        !marks.is_empty()
            && marks.iter().all(|(t, rv)| t == "BOOKMARK"
                && rv.parse::<u64>().unwrap() >= rv2.parse::<u64>().unwrap()),
        "{marks:?}"
    );

    // After a restart the history before it is gone: 410 Gone (reason Expired).
    tokio::task::block_in_place(|| cp.restart());
    let pods: Api<Pod> = Api::default_namespaced(client(&cp).await);
    let gone = events(&pods, wp.clone(), &rv0).await;
    assert_eq!(gone, [("ERROR 410".to_string(), "Expired".to_string())]);

    // kube-runtime's watcher lists, then follows; a pod created meanwhile is applied.
    let stream = watcher(pods.clone(), watcher::Config::default().timeout(5));
    let mut stream = std::pin::pin!(stream);
    let listed = initial_names(&mut stream).await;
    assert_eq!(listed, ["k-a"]);
    pods.create(&PostParams::default(), &pod("k-c", "qa"))
        .await
        .unwrap();
    let applied = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .expect("watcher event")
            .expect("watcher ok")
        {
            Some(watcher::Event::Apply(p)) => break p.metadata.name.unwrap(),
            _ => continue,
        }
    };
    assert_eq!(applied, "k-c");

    // A streaming list (sendInitialEvents): the current pods, then the end-of-list bookmark.
    let stream = watcher(pods.clone(), watcher::Config::default().streaming_lists());
    let mut stream = std::pin::pin!(stream);
    let mut streamed = initial_names(&mut stream).await;
    streamed.sort();
    assert_eq!(streamed, ["k-a", "k-c"]);
}
