//! `deploy/`'s manifests as the lab reads them: the objects a user applies with
//! `kubectl apply -f deploy/`, and how one container of the DaemonSet runs as a process on a
//! lab node ([`Manifests::launch`]).
//!
//! A container becomes a process the way a kubelet would start it, minus the image: its
//! `command` and `args`; its environment built as the kubelet builds it (`envFrom` ConfigMaps
//! first, then `env`, which wins; `fieldRef: spec.nodeName` is the node's name; `$(VAR)`
//! references expanded); paths inside the container mapped to the host through the container's
//! `hostPath` volume mounts, and the image's `/usr/local/bin` to the lab's build.
//!
//! Invariant: everything the process gets comes from the manifests except the overrides the
//! caller passes ([`Host::overrides`]), each of which is reported in [`Launch::overridden`]
//! with the manifests' value; a manifest feature the lab cannot honour is an error
//! ([`DeployError::Unsupported`]), never skipped.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};

/// Where the image keeps its executables (`Containerfile`, `cargo xtask image`).
pub const IMAGE_BIN_DIR: &str = "/usr/local/bin";

/// The image's `PATH` (its configuration's `Env`, as Debian's base images set it).
pub const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Manifests that cannot be read or run in the lab.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// A file or directory cannot be read.
    #[error("reading {0}")]
    Io(PathBuf, #[source] std::io::Error),
    /// A document is not valid YAML for its kind.
    #[error("{path}: document {index} is not a valid {kind}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The document's position in the file (from 0).
        index: usize,
        /// Its kind, as far as known.
        kind: String,
        /// The parser's complaint.
        #[source]
        source: serde_yaml::Error,
    },
    /// A kind the lab does not know.
    #[error("{path}: document {index} has kind {kind:?}; deploy/ holds ServiceAccount, ClusterRole, ClusterRoleBinding, ConfigMap and DaemonSet objects")]
    UnknownKind {
        /// The file.
        path: PathBuf,
        /// The document's position in the file.
        index: usize,
        /// Its kind.
        kind: String,
    },
    /// An object another one refers to is missing.
    #[error("deploy/ has no {0}")]
    Missing(String),
    /// Something the lab cannot run as the manifests say.
    #[error("the lab cannot run {0}")]
    Unsupported(String),
}

/// Every object of `deploy/`.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    /// ServiceAccounts.
    pub service_accounts: Vec<ServiceAccount>,
    /// ClusterRoles.
    pub cluster_roles: Vec<ClusterRole>,
    /// ClusterRoleBindings.
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    /// ConfigMaps.
    pub config_maps: Vec<ConfigMap>,
    /// DaemonSets.
    pub daemon_sets: Vec<DaemonSet>,
}

/// One permission: a verb on a resource of an API group (`""` for core).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Grant {
    /// API group.
    pub group: String,
    /// Resource plural (`endpointslices`; `pods/status` for a subresource).
    pub resource: String,
    /// Verb.
    pub verb: String,
}

impl Grant {
    /// `verb` on `resource` of `group`.
    pub fn new(group: &str, resource: &str, verb: &str) -> Grant {
        Grant {
            group: group.into(),
            resource: resource.into(),
            verb: verb.into(),
        }
    }
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {} ({group})", self.verb, self.resource)
    }
}

/// Every `(group, resource, verb)` a ClusterRole grants, its rules expanded (wildcards and
/// `resourceNames` are kept literally: the switchyard role uses neither, and a test says so).
pub fn grants(role: &ClusterRole) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in role.rules.iter().flatten() {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    out.insert(Grant::new(group, resource, verb));
                }
            }
        }
    }
    out
}

/// The directory of the manifests: `<workspace>/deploy`.
pub fn deploy_dir(root: &Path) -> PathBuf {
    root.join("deploy")
}

impl Manifests {
    /// Reads every `*.yaml` of `dir`, in name order (as `kubectl apply -f dir` does).
    pub fn load(dir: &Path) -> Result<Manifests, DeployError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| DeployError::Io(dir.to_path_buf(), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        let mut m = Manifests::default();
        for path in files {
            let text =
                std::fs::read_to_string(&path).map_err(|e| DeployError::Io(path.clone(), e))?;
            m.add_documents(&path, &text)?;
        }
        Ok(m)
    }

    fn add_documents(&mut self, path: &Path, text: &str) -> Result<(), DeployError> {
        for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let yaml_err = |kind: &str, source| DeployError::Yaml {
                path: path.to_path_buf(),
                index,
                kind: kind.to_string(),
                source,
            };
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
                .map_err(|e| yaml_err("document", e))?;
            if value.is_null() {
                continue;
            }
            let kind = value
                .get("kind")
                .and_then(serde_yaml::Value::as_str)
                .unwrap_or("")
                .to_string();
            fn typed<T: serde::de::DeserializeOwned>(
                v: serde_yaml::Value,
            ) -> Result<T, serde_yaml::Error> {
                serde_yaml::from_value(v)
            }
            match kind.as_str() {
                "ServiceAccount" => self
                    .service_accounts
                    .push(typed(value).map_err(|e| yaml_err(&kind, e))?),
                "ClusterRole" => self
                    .cluster_roles
                    .push(typed(value).map_err(|e| yaml_err(&kind, e))?),
                "ClusterRoleBinding" => self
                    .cluster_role_bindings
                    .push(typed(value).map_err(|e| yaml_err(&kind, e))?),
                "ConfigMap" => self
                    .config_maps
                    .push(typed(value).map_err(|e| yaml_err(&kind, e))?),
                "DaemonSet" => self
                    .daemon_sets
                    .push(typed(value).map_err(|e| yaml_err(&kind, e))?),
                _ => {
                    return Err(DeployError::UnknownKind {
                        path: path.to_path_buf(),
                        index,
                        kind,
                    })
                }
            }
        }
        Ok(())
    }

    /// The ClusterRole `name`.
    pub fn cluster_role(&self, name: &str) -> Result<&ClusterRole, DeployError> {
        self.cluster_roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .ok_or_else(|| DeployError::Missing(format!("ClusterRole {name}")))
    }

    /// The DaemonSet `namespace/name`.
    pub fn daemon_set(&self, namespace: &str, name: &str) -> Result<&DaemonSet, DeployError> {
        self.daemon_sets
            .iter()
            .find(|d| {
                d.metadata.namespace.as_deref() == Some(namespace)
                    && d.metadata.name.as_deref() == Some(name)
            })
            .ok_or_else(|| DeployError::Missing(format!("DaemonSet {namespace}/{name}")))
    }

    /// The data of ConfigMap `namespace/name`.
    pub fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<&BTreeMap<String, String>, DeployError> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.config_maps
            .iter()
            .find(|c| {
                c.metadata.namespace.as_deref() == Some(namespace)
                    && c.metadata.name.as_deref() == Some(name)
            })
            .map(|c| c.data.as_ref().unwrap_or(&EMPTY))
            .ok_or_else(|| DeployError::Missing(format!("ConfigMap {namespace}/{name}")))
    }

    /// How container `container` (an init container or a container) of DaemonSet `ds` runs on
    /// the lab node `host` describes.
    pub fn launch(
        &self,
        ds: &DaemonSet,
        container: &str,
        host: &Host,
    ) -> Result<Launch, DeployError> {
        let namespace = ds.metadata.namespace.clone().unwrap_or_default();
        let pod = ds
            .spec
            .template
            .spec
            .as_ref()
            .ok_or_else(|| DeployError::Missing("a DaemonSet pod template".into()))?;
        let c: &Container = pod
            .init_containers
            .iter()
            .flatten()
            .chain(&pod.containers)
            .find(|c| c.name == container)
            .ok_or_else(|| DeployError::Missing(format!("container {container}")))?;
        let env = self.environment(c, &namespace, &host.node)?;
        let mounts = mounts(pod, c, host)?;
        let translate = |s: &str| translate_path(s, &mounts);
        // Overrides first get their manifests' value recorded, then replace it.
        let mut env: BTreeMap<String, String> = env
            .into_iter()
            .map(|(k, v)| {
                let v = translate(&v);
                (k, v)
            })
            .collect();
        let mut overridden = Vec::new();
        for (k, v) in &host.overrides {
            overridden.push(Override {
                name: k.clone(),
                manifest: env.get(k).cloned(),
                lab: v.clone(),
            });
            env.insert(k.clone(), v.clone());
        }
        let words: Vec<String> = c
            .command
            .iter()
            .flatten()
            .chain(c.args.iter().flatten())
            .map(|w| expand(w, &env))
            .collect();
        let Some((exe, rest)) = words.split_first() else {
            return Err(DeployError::Unsupported(format!(
                "container {container} without a command: the lab has no image to take its entrypoint from"
            )));
        };
        let exe = match exe.strip_prefix(IMAGE_BIN_DIR).and_then(|r| r.strip_prefix('/')) {
            Some(name) => host.bin_dir.join(name).to_string_lossy().into_owned(),
            None => {
                return Err(DeployError::Unsupported(format!(
                    "container {container}'s command {exe}: only the image's {IMAGE_BIN_DIR} programs exist in the lab"
                )))
            }
        };
        let mut argv = vec![exe];
        argv.extend(rest.iter().map(|a| translate(a)));
        Ok(Launch {
            argv,
            env,
            overridden,
            host_dirs: mounts
                .iter()
                .filter(|m| m.create_dir)
                .map(|m| m.host.clone())
                .collect(),
        })
    }

    /// The container's environment as the kubelet builds it (without the Service variables):
    /// each `envFrom` source in order, then `env`, later definitions winning.
    fn environment(
        &self,
        c: &Container,
        namespace: &str,
        node: &str,
    ) -> Result<BTreeMap<String, String>, DeployError> {
        let mut env = BTreeMap::new();
        for from in c.env_from.iter().flatten() {
            if from.secret_ref.is_some() {
                return Err(DeployError::Unsupported(format!(
                    "container {}'s envFrom secretRef",
                    c.name
                )));
            }
            if let Some(cm) = &from.config_map_ref {
                let data = match self.config_map(namespace, &cm.name) {
                    Ok(d) => d.clone(),
                    Err(_) if cm.optional == Some(true) => BTreeMap::new(),
                    Err(e) => return Err(e),
                };
                let prefix = from.prefix.clone().unwrap_or_default();
                for (k, v) in data {
                    env.insert(format!("{prefix}{k}"), v);
                }
            }
        }
        for var in c.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
                (_, Some(from)) => {
                    if let Some(field) = &from.field_ref {
                        match field.field_path.as_str() {
                            "spec.nodeName" => node.to_string(),
                            "metadata.namespace" => namespace.to_string(),
                            other => {
                                return Err(DeployError::Unsupported(format!(
                                    "{}'s fieldRef {other} (the lab knows spec.nodeName and metadata.namespace)",
                                    var.name
                                )))
                            }
                        }
                    } else if let Some(key) = &from.config_map_key_ref {
                        self.config_map(namespace, &key.name)?
                            .get(&key.key)
                            .cloned()
                            .ok_or_else(|| {
                                DeployError::Missing(format!(
                                    "key {} in ConfigMap {namespace}/{}",
                                    key.key, key.name
                                ))
                            })?
                    } else {
                        return Err(DeployError::Unsupported(format!(
                            "{}'s valueFrom (the lab resolves fieldRef and configMapKeyRef)",
                            var.name
                        )));
                    }
                }
                (Some(v), None) => expand(v, &env),
                (None, None) => String::new(),
            };
            env.insert(var.name.clone(), value);
        }
        Ok(env)
    }
}

/// The lab node a container runs on, and how the lab maps the pod's world onto it.
#[derive(Clone, Debug)]
pub struct Host {
    /// The node's name (`spec.nodeName`).
    pub node: String,
    /// Where the lab's build keeps the image's programs (`target/debug`).
    pub bin_dir: PathBuf,
    /// Host paths the lab shares with the machine, as its agents do outside this mode (BPF pins,
    /// `/run/switchyard`, the cgroup root); a `hostPath` at or under one is used as it is.
    pub shared: Vec<PathBuf>,
    /// Every other `hostPath` is redirected to `<redirect_root>/<path>` (per node), so that
    /// the lab writes nothing into the machine's own `/opt/cni/bin` or `/etc/cni/net.d`.
    pub redirect_root: PathBuf,
    /// Environment variables the lab sets whatever the manifests say, with why in
    /// [`Launch::overridden`].
    pub overrides: BTreeMap<String, String>,
}

impl Host {
    /// Where `host_path` (a `hostPath` of the manifests) is on this lab machine.
    pub fn host_path(&self, host_path: &str) -> PathBuf {
        let p = Path::new(host_path);
        if self.shared.iter().any(|s| p.starts_with(s)) {
            p.to_path_buf()
        } else {
            self.redirect_root.join(p.strip_prefix("/").unwrap_or(p))
        }
    }
}

/// A lab override of one environment variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    /// The variable.
    pub name: String,
    /// What the manifests give it (`None`: not set there).
    pub manifest: Option<String>,
    /// What the lab gives it.
    pub lab: String,
}

/// A container as a lab process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Program and arguments, paths mapped to the host.
    pub argv: Vec<String>,
    /// The whole environment (nothing else is inherited).
    pub env: BTreeMap<String, String>,
    /// The lab's overrides, with the manifests' values.
    pub overridden: Vec<Override>,
    /// Host directories of `Directory`/`DirectoryOrCreate` volumes, which the kubelet would
    /// find or create (only redirected ones are created by the lab; shared ones must exist).
    pub host_dirs: Vec<PathBuf>,
}

impl Launch {
    /// The value of option `flag` in the arguments (`--flag value` or `--flag=value`).
    pub fn option(&self, flag: &str) -> Option<&str> {
        let eq = format!("{flag}=");
        self.argv.iter().enumerate().find_map(|(i, a)| {
            if a == flag {
                self.argv.get(i + 1).map(String::as_str)
            } else {
                a.strip_prefix(&eq)
            }
        })
    }

    /// One line per override, for the process's log.
    pub fn describe_overrides(&self) -> String {
        self.overridden
            .iter()
            .map(|o| match &o.manifest {
                Some(m) if *m == o.lab => format!("{}={} (as in deploy/)", o.name, o.lab),
                Some(m) => format!("{}={} (deploy/ says {m})", o.name, o.lab),
                None => format!("{}={} (not set in deploy/)", o.name, o.lab),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// One volume mount, mapped to the host.
#[derive(Clone, Debug)]
struct Mount {
    container: String,
    host: PathBuf,
    create_dir: bool,
}

fn mounts(
    pod: &k8s_openapi::api::core::v1::PodSpec,
    c: &Container,
    host: &Host,
) -> Result<Vec<Mount>, DeployError> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .ok_or_else(|| DeployError::Missing(format!("volume {}", m.name)))?;
        let Some(hp) = &volume.host_path else {
            return Err(DeployError::Unsupported(format!(
                "volume {}: only hostPath volumes",
                m.name
            )));
        };
        if m.sub_path.is_some() || m.sub_path_expr.is_some() {
            return Err(DeployError::Unsupported(format!("{}'s subPath", m.name)));
        }
        let mapped = host.host_path(&hp.path);
        let redirected = mapped != Path::new(&hp.path);
        let is_dir = matches!(
            hp.type_.as_deref(),
            Some("Directory") | Some("DirectoryOrCreate")
        );
        out.push(Mount {
            container: m.mount_path.trim_end_matches('/').to_string(),
            host: mapped,
            create_dir: redirected && is_dir,
        });
    }
    // Longest mount path first: the innermost mount decides.
    out.sort_by_key(|m| std::cmp::Reverse(m.container.len()));
    Ok(out)
}

/// `value` with a leading container path (or the path after `--flag=`) mapped to the host
/// through `mounts`; anything else unchanged.
fn translate_path(value: &str, mounts: &[Mount]) -> String {
    let (head, path) = match value.split_once('=') {
        Some((flag, p)) if flag.starts_with("--") => (format!("{flag}="), p),
        _ => (String::new(), value),
    };
    for m in mounts {
        if let Some(rest) = path.strip_prefix(m.container.as_str()) {
            if rest.is_empty() || rest.starts_with('/') {
                let mapped = format!("{}{rest}", m.host.to_string_lossy());
                return format!("{head}{mapped}");
            }
        }
    }
    value.to_string()
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, an undefined reference is
/// kept as written, `$$` is a literal `$`.
fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(close) = tail.strip_prefix("$(").and_then(|t| t.find(')')) {
            let name = &tail[2..2 + close];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&tail[..3 + close]),
            }
            rest = &tail[3 + close..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> Manifests {
        Manifests::load(&deploy_dir(&crate::lab::workspace_root())).unwrap()
    }

    fn host() -> Host {
        Host {
            node: "n2".into(),
            bin_dir: "/work/target/debug".into(),
            shared: vec![
                "/sys/fs/bpf".into(),
                "/run/switchyard".into(),
                "/sys/fs/cgroup".into(),
            ],
            redirect_root: "/work/target/lab/host/n2".into(),
            overrides: BTreeMap::from([("KUBERNETES_SERVICE_HOST".into(), "198.18.0.1".into())]),
        }
    }

    #[test]
    fn the_objects_refer_to_each_other_as_the_daemonset_needs() {
        let m = repo();
        let ds = m.daemon_set("kube-system", "switchyard").unwrap();
        let pod = ds.spec.template.spec.as_ref().unwrap();
        let sa = pod.service_account_name.as_deref().unwrap();
        assert!(m
            .service_accounts
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some(sa)
                && s.metadata.namespace.as_deref() == Some("kube-system")));
        let binding = &m.cluster_role_bindings[0];
        assert_eq!(binding.role_ref.kind, "ClusterRole");
        m.cluster_role(&binding.role_ref.name).unwrap();
        let subject = &binding.subjects.as_ref().unwrap()[0];
        assert_eq!(
            (
                subject.kind.as_str(),
                subject.name.as_str(),
                subject.namespace.as_deref()
            ),
            ("ServiceAccount", sa, Some("kube-system"))
        );
        assert_eq!(pod.host_network, Some(true));
        assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
        assert_eq!(
            pod.priority_class_name.as_deref(),
            Some("system-node-critical")
        );
        let tolerations = pod.tolerations.as_ref().unwrap();
        assert!(tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()));
    }

    #[test]
    fn the_agent_runs_from_the_configmap_with_the_nodes_name_and_no_kubeconfig() {
        let m = repo();
        let ds = m.daemon_set("kube-system", "switchyard").unwrap();
        let l = m.launch(ds, "switchyard", &host()).unwrap();
        assert_eq!(l.argv, ["/work/target/debug/switchyard", "agent"]);
        assert_eq!(l.env["NODE_NAME"], "n2");
        assert_eq!(l.env["SWITCHYARD_UPLINKS"], "eth0");
        assert_eq!(
            l.env["SWITCHYARD_CGROUP_ROOT"], "/sys/fs/cgroup",
            "the host's cgroup root, through the volume mount"
        );
        assert!(!l.env.contains_key("KUBECONFIG"));
        assert_eq!(l.env["KUBERNETES_SERVICE_HOST"], "198.18.0.1");
        assert_eq!(
            l.overridden,
            [Override {
                name: "KUBERNETES_SERVICE_HOST".into(),
                manifest: Some("set-your-api-server-address.invalid".into()),
                lab: "198.18.0.1".into(),
            }]
        );
        assert!(l.host_dirs.is_empty(), "shared paths are never created");
    }

    #[test]
    fn install_cni_writes_into_the_nodes_redirected_cni_directories() {
        let m = repo();
        let ds = m.daemon_set("kube-system", "switchyard").unwrap();
        let l = m.launch(ds, "install-cni", &host()).unwrap();
        assert_eq!(
            l.argv[..2],
            ["/work/target/debug/switchyard", "install-cni"]
        );
        assert_eq!(
            l.option("--bin-dir"),
            Some("/work/target/lab/host/n2/opt/cni/bin")
        );
        assert_eq!(
            l.option("--conf-dir"),
            Some("/work/target/lab/host/n2/etc/cni/net.d")
        );
        assert_eq!(l.env["NODE_NAME"], "n2");
        assert_eq!(l.host_dirs.len(), 2);
    }

    #[test]
    fn the_probes_ask_the_port_the_agent_serves() {
        let m = repo();
        let ds = m.daemon_set("kube-system", "switchyard").unwrap();
        let pod = ds.spec.template.spec.as_ref().unwrap();
        let agent = pod
            .containers
            .iter()
            .find(|c| c.name == "switchyard")
            .unwrap();
        let served = m.config_map("kube-system", "switchyard-config").unwrap()
            ["SWITCHYARD_METRICS_ADDRESS"]
            .rsplit_once(':')
            .unwrap()
            .1
            .to_string();
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        for (probe, path) in [
            (agent.liveness_probe.as_ref(), "/healthz"),
            (agent.readiness_probe.as_ref(), "/readyz"),
        ] {
            let get = probe.unwrap().http_get.as_ref().unwrap();
            assert_eq!(get.path.as_deref(), Some(path));
            assert_eq!(get.port, IntOrString::Int(served.parse().unwrap()));
        }
        let port = &agent.ports.as_ref().unwrap()[0];
        assert_eq!(port.container_port.to_string(), served);
    }

    #[test]
    fn environment_follows_the_kubelets_rules() {
        let mut env = BTreeMap::new();
        env.insert("NODE".to_string(), "n1".to_string());
        assert_eq!(expand("--node=$(NODE)", &env), "--node=n1");
        assert_eq!(
            expand("$(MISSING) $$(NODE) $5", &env),
            "$(MISSING) $(NODE) $5"
        );
        let mounts = vec![Mount {
            container: "/host/opt/cni/bin".into(),
            host: "/lab/opt/cni/bin".into(),
            create_dir: true,
        }];
        assert_eq!(
            translate_path("--bin-dir=/host/opt/cni/bin/x", &mounts),
            "--bin-dir=/lab/opt/cni/bin/x"
        );
        assert_eq!(
            translate_path("/host/opt/cni/binary", &mounts),
            "/host/opt/cni/binary",
            "a prefix that is not a path component is left alone"
        );
    }

    #[test]
    fn the_role_expands_to_single_grants_without_wildcards() {
        let m = repo();
        let g = grants(m.cluster_role("switchyard").unwrap());
        assert!(g.contains(&Grant::new("discovery.k8s.io", "endpointslices", "watch")));
        assert!(g
            .iter()
            .all(|g| g.group != "*" && g.resource != "*" && g.verb != "*"));
        assert!(m.cluster_roles[0]
            .rules
            .iter()
            .flatten()
            .all(|r| r.resource_names.is_none() && r.non_resource_urls.is_none()));
    }
}
