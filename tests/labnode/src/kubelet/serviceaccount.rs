//! The service-account credentials every container finds at [`MOUNT_PATH`], as in a real
//! cluster: `token` (the bearer token of the pod's service account given with
//! `--service-account-token NS/NAME=FILE`, else the one of `--service-account-token-file`),
//! `ca.crt` (the CA of the kubelet's kubeconfig) and `namespace` (the pod's).
//!
//! The files are written into a per-pod directory on the host ([`pod_dir`]:
//! `/run/switchyard/<node>/pods/<uid>/serviceaccount`), which each container process
//! bind-mounts read-only onto [`MOUNT_PATH`] inside a mount namespace of its own (see
//! [`super::process::spawn`]), so nothing shows on the host. Pods with
//! `automountServiceAccountToken: false` get none of it.
use super::error::Error;
use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use kube::config::Kubeconfig;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where containers find the credentials (`/var/run` is normally a symlink to `/run`).
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// What every pod's directory holds besides its namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The bearer token (`token`) of pods whose service account has none of its own, if the
    /// kubelet was given one.
    pub token: Option<String>,
    /// The tokens of particular service accounts, by `namespace/name`.
    pub accounts: BTreeMap<String, String>,
    /// The API server's CA in PEM (`ca.crt`), if the kubeconfig names one.
    pub ca_pem: Option<Vec<u8>>,
}

impl Credentials {
    /// The token of `token_file`, those of `accounts` (`NAMESPACE/NAME=FILE`), each a file's
    /// first line (white space trimmed), and the CA of the kubeconfig at `kubeconfig`.
    pub fn load(
        kubeconfig: &Path,
        token_file: Option<&Path>,
        accounts: &[String],
    ) -> anyhow::Result<Credentials> {
        let token = token_file.map(read_token).transpose()?;
        let accounts = accounts
            .iter()
            .map(|a| {
                let (account, file) = a
                    .split_once('=')
                    .filter(|(acc, _)| acc.split('/').filter(|p| !p.is_empty()).count() == 2)
                    .ok_or_else(|| anyhow::anyhow!("{a:?} is not NAMESPACE/NAME=FILE"))?;
                Ok((account.to_string(), read_token(Path::new(file))?))
            })
            .collect::<anyhow::Result<_>>()?;
        let kc = Kubeconfig::read_from(kubeconfig)
            .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", kubeconfig.display()))?;
        Ok(Credentials {
            token,
            accounts,
            ca_pem: ca_of(&kc)?,
        })
    }

    /// The token `pod` gets: its service account's (`serviceAccountName`, else `default`, in
    /// its namespace), else the default one.
    pub fn token_for(&self, pod: &Pod) -> Option<&str> {
        let spec = pod.spec.as_ref();
        let account = spec
            .and_then(|s| {
                s.service_account_name
                    .as_deref()
                    .or(s.service_account.as_deref())
            })
            .filter(|a| !a.is_empty())
            .unwrap_or("default");
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        self.accounts
            .get(&format!("{ns}/{account}"))
            .or(self.token.as_ref())
            .map(String::as_str)
    }
}

/// The first line of `path`, white space trimmed; an error if empty.
fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    anyhow::ensure!(!token.is_empty(), "{}: no token", path.display());
    Ok(token)
}

/// The CA (PEM) of the current context's cluster: `certificate-authority-data`, else the file
/// `certificate-authority` names.
pub fn ca_of(kc: &Kubeconfig) -> anyhow::Result<Option<Vec<u8>>> {
    let cluster_name = kc
        .current_context
        .as_ref()
        .and_then(|c| kc.contexts.iter().find(|n| &n.name == c))
        .and_then(|n| n.context.as_ref())
        .map(|c| c.cluster.clone());
    let cluster = match cluster_name {
        Some(name) => kc.clusters.iter().find(|c| c.name == name),
        None => kc.clusters.first(),
    }
    .and_then(|c| c.cluster.as_ref());
    let Some(cluster) = cluster else {
        return Ok(None);
    };
    if let Some(data) = cluster
        .certificate_authority_data
        .as_deref()
        .filter(|d| !d.is_empty())
    {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| anyhow::anyhow!("certificate-authority-data is not base64: {e}"))?;
        return Ok(Some(pem));
    }
    match cluster.certificate_authority.as_deref() {
        Some(path) => Ok(Some(
            std::fs::read(path).map_err(|e| anyhow::anyhow!("{path}: {e}"))?,
        )),
        None => Ok(None),
    }
}

/// Whether the pod gets the credentials (`automountServiceAccountToken` is not false).
pub fn wanted(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.automount_service_account_token)
        != Some(false)
}

/// The directory of pod `uid`'s files: `/run/switchyard/<node>/pods/<uid>`.
pub fn pod_root(node: &str, uid: &str) -> PathBuf {
    switchyard::paths::state_dir(node).join("pods").join(uid)
}

/// The directory mounted at [`MOUNT_PATH`] in pod `uid`'s containers.
pub fn pod_dir(node: &str, uid: &str) -> PathBuf {
    pod_root(node, uid).join("serviceaccount")
}

/// Writes `dir` afresh for `pod`: `namespace`, and `token` and `ca.crt` as far as `creds` has
/// them.
pub fn write(dir: &Path, pod: &Pod, creds: &Credentials) -> Result<(), Error> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut files: Vec<(&str, &[u8], u32)> = vec![("namespace", namespace.as_bytes(), 0o644)];
    if let Some(t) = creds.token_for(pod) {
        files.push(("token", t.as_bytes(), 0o600));
    }
    if let Some(ca) = &creds.ca_pem {
        files.push(("ca.crt", ca, 0o644));
    }
    for (name, content, mode) in files {
        let p = dir.join(name);
        std::fs::write(&p, content).map_err(Error::io(&p))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .map_err(Error::io(&p))?;
    }
    Ok(())
}

/// Creates [`MOUNT_PATH`] on the host if it is missing: a bind mount needs an existing mount
/// point. It stays an empty directory there; the mounts are private to each container.
pub fn ensure_mount_point() -> Result<(), Error> {
    std::fs::create_dir_all(MOUNT_PATH).map_err(Error::io(MOUNT_PATH))
}

/// Removes pod `uid`'s files.
pub fn remove(node: &str, uid: &str) -> Result<(), Error> {
    let root = pod_root(node, uid);
    match std::fs::remove_dir_all(&root) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&root)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::pod;
    use super::*;

    #[test]
    fn reads_the_current_clusters_ca() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let data = base64::engine::general_purpose::STANDARD.encode(pem);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster:\n    server: https://x\n- name: lab\n  cluster:\n    server: https://198.18.0.1:6443\n    certificate-authority-data: {data}\ncontexts:\n- name: lab\n  context:\n    cluster: lab\n    user: admin\ncurrent-context: lab\nusers:\n- name: admin\n  user: {{}}\n"
        );
        let kc = Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(ca_of(&kc).unwrap().as_deref(), Some(pem.as_bytes()));
        let plain = text.replace(&format!("    certificate-authority-data: {data}\n"), "");
        assert_eq!(
            ca_of(&Kubeconfig::from_yaml(&plain).unwrap()).unwrap(),
            None
        );
    }

    #[test]
    fn opting_out() {
        let pod = |v: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": v}))
                .unwrap()
        };
        assert!(wanted(&pod(serde_json::json!({"containers": []}))));
        assert!(!wanted(&pod(
            serde_json::json!({"containers": [], "automountServiceAccountToken": false})
        )));
    }

    #[test]
    fn a_pod_gets_its_service_accounts_token_else_the_default_one() {
        let creds = Credentials {
            token: Some("default-token".into()),
            accounts: BTreeMap::from([("kube-system/kube-dns".into(), "dns-token".into())]),
            ca_pem: None,
        };
        let token = |ns: &str, spec| creds.token_for(&pod(ns, "p", spec)).map(str::to_string);
        let dns = serde_json::json!({"containers": [], "serviceAccountName": "kube-dns"});
        assert_eq!(
            token("kube-system", dns.clone()).as_deref(),
            Some("dns-token")
        );
        assert_eq!(token("default", dns).as_deref(), Some("default-token"));
        let plain = serde_json::json!({"containers": []});
        assert_eq!(
            token("kube-system", plain).as_deref(),
            Some("default-token")
        );
        assert_eq!(
            Credentials::default().token_for(&pod("d", "p", serde_json::json!({}))),
            None
        );
    }

    #[test]
    fn service_account_tokens_are_named_namespace_slash_name() {
        let dir = std::env::temp_dir().join(format!("sy-sa-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        let token = dir.join("t");
        std::fs::write(
            &kubeconfig,
            "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n",
        )
        .unwrap();
        std::fs::write(&token, "tok\n").unwrap();
        let load = |a: &str| Credentials::load(&kubeconfig, None, &[a.to_string()]);
        let good = load(&format!("kube-system/kube-dns={}", token.display()));
        let bad = load(&format!("kube-dns={}", token.display()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(good.unwrap().accounts["kube-system/kube-dns"], "tok");
        assert!(bad.unwrap_err().to_string().contains("NAMESPACE/NAME=FILE"));
    }

    #[test]
    fn writes_the_pod_directory() {
        let dir = std::env::temp_dir().join(format!("sy-sa-test-{}", std::process::id()));
        let creds = Credentials {
            token: Some("abc".into()),
            accounts: BTreeMap::new(),
            ca_pem: Some(b"PEM".to_vec()),
        };
        let sa = dir.join("serviceaccount");
        let pod = pod("demo", "p", serde_json::json!({}));
        let result = write(&sa, &pod, &creds);
        let read = |f: &str| std::fs::read_to_string(sa.join(f)).unwrap_or_default();
        let (ns, token, ca) = (read("namespace"), read("token"), read("ca.crt"));
        let again = write(&sa, &pod, &Credentials::default());
        let token_left = sa.join("token").exists();
        let _ = std::fs::remove_dir_all(&dir);
        result.unwrap();
        again.unwrap();
        assert_eq!(
            (ns.as_str(), token.as_str(), ca.as_str()),
            ("demo", "abc", "PEM")
        );
        assert!(!token_left, "written afresh");
    }
}
