//! kube-rs 5 (rustls, ring) — what the agent, the kubelet and the CNI path use — reaching
//! `switchyard-cp` through the kubeconfig it writes: HTTPS to an IP-address certificate verified
//! with `certificate-authority-data`, and the bearer token. A wrong token is a 401 error.
mod harness;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use harness::Cp;

async fn client(kubeconfig: Kubeconfig) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kube::Config from the kubeconfig");
    kube::Client::try_from(config).expect("client")
}

#[tokio::test]
async fn kube_rs_talks_tls_with_the_written_kubeconfig() {
    let cp = Cp::start();
    let kc = Kubeconfig::read_from(&cp.kubeconfig).expect("kubeconfig");
    let api: Api<Namespace> = Api::all(client(kc.clone()).await);
    let names: Vec<String> = api
        .list(&ListParams::default())
        .await
        .expect("list namespaces over TLS")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"default".to_string()), "{names:?}");
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "from-kube-rs"}})).unwrap();
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create");

    let mut wrong = kc;
    wrong.auth_infos[0].auth_info.as_mut().unwrap().token = Some("wrong".to_string().into());
    let api: Api<Namespace> = Api::all(client(wrong).await);
    match api.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (401, "Unauthorized")),
        other => panic!("a wrong token must get 401, got {other:?}"),
    }
}
