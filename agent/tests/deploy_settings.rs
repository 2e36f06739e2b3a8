//! `deploy/` against the agent it runs: every setting the ConfigMap and the DaemonSet give the
//! agent is one of its environment variables with a value it accepts, every variable is
//! documented in the ConfigMap and in the README, and the init container's command is a real
//! `switchyard install-cni` that installs the plugin (the binary itself, run with temporary
//! directories).
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use clap::{Args, FromArgMatches};
use switchyard::daemon::Options;
use switchyard_lab::daemonset::{AGENT_CONTAINER, DAEMONSET, INSTALL_CNI_CONTAINER};
use switchyard_lab::deploy::{deploy_dir, Manifests};
use switchyard_lab::lab::workspace_root;

/// Variables the agent does not read itself but its API client does (in-cluster configuration).
const CLIENT_VARS: [&str; 2] = ["KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"];

/// One of `switchyard agent`'s flags.
#[derive(Debug)]
struct Flag {
    /// Its long name.
    long: String,
    /// Whether it takes a value (else it is a switch, and its variable `true` or `false`).
    takes_value: bool,
}

/// `switchyard agent`'s flags by environment variable: `SWITCHYARD_UPLINKS` → `uplink`.
fn agent_variables() -> BTreeMap<String, Flag> {
    let cmd = Options::augment_args(clap::Command::new("agent"));
    cmd.get_arguments()
        .filter_map(|a| {
            Some((
                a.get_env()?.to_string_lossy().into_owned(),
                Flag {
                    long: a.get_long()?.to_string(),
                    takes_value: a.get_action().takes_values(),
                },
            ))
        })
        .collect()
}

fn manifests() -> Manifests {
    Manifests::load(&deploy_dir(&workspace_root())).expect("deploy/ loads")
}

/// The agent container's environment as deploy/ gives it (ConfigMap, then `env`), for node n1.
fn agent_environment() -> BTreeMap<String, String> {
    let m = manifests();
    let ds = m.daemon_set(DAEMONSET.0, DAEMONSET.1).unwrap();
    let host = switchyard_lab::deploy::Host {
        node: "n1".into(),
        bin_dir: "/bin".into(),
        shared: vec!["/".into()],
        redirect_root: "/unused".into(),
        overrides: BTreeMap::new(),
    };
    m.launch(ds, AGENT_CONTAINER, &host).unwrap().env
}

#[test]
fn every_setting_deploy_gives_the_agent_is_one_of_its_variables_with_a_value_it_accepts() {
    let vars = agent_variables();
    assert!(vars.contains_key("SWITCHYARD_CLUSTER_CIDR"), "{vars:?}");
    let env = agent_environment();
    let mut argv: Vec<String> = vec!["agent".into()];
    for (k, v) in &env {
        if CLIENT_VARS.contains(&k.as_str()) {
            continue;
        }
        let flag = vars
            .get(k)
            .unwrap_or_else(|| panic!("deploy/ sets {k}, which `switchyard agent` does not read"));
        match (flag.takes_value, v.as_str()) {
            (true, _) => argv.extend([format!("--{}", flag.long), v.clone()]),
            (false, "true") => argv.push(format!("--{}", flag.long)),
            (false, "false") => {}
            (false, other) => panic!("{k} is a switch: true or false, not {other:?}"),
        }
    }
    assert!(
        !env.contains_key("KUBECONFIG"),
        "the DaemonSet uses the in-cluster configuration"
    );
    for v in CLIENT_VARS {
        assert!(
            env.contains_key(v),
            "{v}: the API server, not its ClusterIP"
        );
    }
    let matches = Options::augment_args(clap::Command::new("agent"))
        .try_get_matches_from(&argv)
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let opts = Options::from_arg_matches(&matches).unwrap();
    assert_eq!(opts.node, "n1", "NODE_NAME from spec.nodeName");
    let settings = opts.settings().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(settings.nodeport_range, (30000, 32767));
    assert_eq!(
        opts.metrics_address.port(),
        10249,
        "the DaemonSet's probes ask port 10249"
    );
}

#[test]
fn every_agent_variable_is_documented_in_the_configmap_and_the_readme() {
    let root = workspace_root();
    let configmap = std::fs::read_to_string(root.join("deploy/02-configmap.yaml")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme
        .split("## Deploy on a cluster")
        .nth(1)
        .expect("README has a \"Deploy on a cluster\" section");
    for var in agent_variables().keys() {
        if var == "NODE_NAME" || var == "KUBECONFIG" || var == "SWITCHYARD_CGROUP_ROOT" {
            // Set by the DaemonSet itself (downward API; in-cluster; its volume mount).
            continue;
        }
        assert!(
            configmap.contains(var.as_str()),
            "{var} is missing from deploy/02-configmap.yaml"
        );
        assert!(
            section.contains(&format!("`{var}`")),
            "{var} is missing from README's settings table"
        );
    }
}

#[test]
fn the_init_containers_command_installs_this_binary_and_the_nodes_list() {
    let m = manifests();
    let ds = m.daemon_set(DAEMONSET.0, DAEMONSET.1).unwrap();
    let scratch = std::env::temp_dir().join(format!("sy-deploy-settings-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let host = switchyard_lab::deploy::Host {
        node: "n1".into(),
        bin_dir: Path::new(env!("CARGO_BIN_EXE_switchyard"))
            .parent()
            .unwrap()
            .to_path_buf(),
        shared: Vec::new(),
        redirect_root: scratch.clone(),
        overrides: BTreeMap::new(),
    };
    let launch = m.launch(ds, INSTALL_CNI_CONTAINER, &host).unwrap();
    for d in &launch.host_dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    // No API server here: the podCIDR is given; the lab's DaemonSet test reads it from the Node.
    let out = Command::new(&launch.argv[0])
        .args(&launch.argv[1..])
        .args(["--pod-cidr", "10.244.1.0/24"])
        .env_clear()
        .envs(&launch.env)
        .output()
        .unwrap();
    let (bin, conf) = (
        launch.option("--bin-dir").unwrap().to_string(),
        launch.option("--conf-dir").unwrap().to_string(),
    );
    let plugin = std::fs::read(Path::new(&bin).join("switchyard"));
    let list = std::fs::read_to_string(Path::new(&conf).join("05-switchyard.conflist"));
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        plugin.unwrap(),
        std::fs::read(env!("CARGO_BIN_EXE_switchyard")).unwrap()
    );
    let list: serde_json::Value = serde_json::from_str(&list.unwrap()).unwrap();
    assert_eq!(list["plugins"][0]["node"], "n1");
    assert_eq!(list["plugins"][0]["ipam"]["subnet"], "10.244.1.0/24");
}
