//! The netfilter tools, run in the caller's network namespace: `iptables-save`/`-restore` of the
//! four backends (IPv4 and IPv6, nf_tables and legacy, each as Debian installs them) and `nft`.
//!
//! A tool that is not installed is not an error: its backend is skipped, with a note saying so.
//! Reading never changes anything: the legacy backend is read only when the kernel already has
//! legacy tables in this namespace (`/proc/net/ip_tables_names`), since `iptables-legacy-save`
//! would otherwise load them.
use std::io::Write;
use std::process::{Command, Stdio};

use super::CleanupError;

/// One iptables backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    /// `ip6tables` rather than `iptables`.
    pub ipv6: bool,
    /// The legacy (x_tables) backend rather than nf_tables.
    pub legacy: bool,
}

impl Backend {
    /// Every backend, nf_tables first.
    pub const ALL: [Backend; 4] = [
        Backend {
            ipv6: false,
            legacy: false,
        },
        Backend {
            ipv6: true,
            legacy: false,
        },
        Backend {
            ipv6: false,
            legacy: true,
        },
        Backend {
            ipv6: true,
            legacy: true,
        },
    ];

    /// `iptables-nft`, `ip6tables-legacy`, …
    pub fn name(self) -> String {
        let family = if self.ipv6 { "ip6tables" } else { "iptables" };
        let flavour = if self.legacy { "legacy" } else { "nft" };
        format!("{family}-{flavour}")
    }

    /// `iptables-nft (IPv4)`, for people.
    pub fn label(self) -> String {
        format!(
            "{} ({})",
            self.name(),
            if self.ipv6 { "IPv6" } else { "IPv4" }
        )
    }

    /// Where the kernel lists this namespace's legacy tables.
    fn legacy_names(self) -> &'static str {
        if self.ipv6 {
            "/proc/net/ip6_tables_names"
        } else {
            "/proc/net/ip_tables_names"
        }
    }

    /// `<backend>-save`: all tables.
    pub fn save(self) -> Result<Saved, CleanupError> {
        if self.legacy {
            let names = std::fs::read_to_string(self.legacy_names()).unwrap_or_default();
            if names.trim().is_empty() {
                return Ok(Saved::NoTables);
            }
        }
        Ok(match run(&[&format!("{}-save", self.name())], None)? {
            Some(out) => Saved::Output(out),
            None => Saved::NotInstalled,
        })
    }

    /// `<backend>-restore --noflush` with `input`; `false` when the tool is not installed.
    pub fn restore(self, input: &str) -> Result<bool, CleanupError> {
        let tool = format!("{}-restore", self.name());
        Ok(run(&[&tool, "--noflush"], Some(input))?.is_some())
    }
}

/// What reading a backend gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Saved {
    /// The output of `<backend>-save`.
    Output(String),
    /// The backend has no table in this namespace (legacy only: the kernel lists none).
    NoTables,
    /// `<backend>-save` is not installed.
    NotInstalled,
}

/// An nftables table, as `nft list tables` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftTable {
    /// `ip`, `ip6`, `inet`, …
    pub family: String,
    /// Its name.
    pub name: String,
}

impl std::fmt::Display for NftTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "table {} {}", self.family, self.name)
    }
}

/// Every nftables table of the namespace; `None` when `nft` is not installed.
pub fn nft_tables() -> Result<Option<Vec<NftTable>>, CleanupError> {
    Ok(run(&["nft", "list", "tables"], None)?.map(|out| parse_nft_tables(&out)))
}

/// `nft delete table FAMILY NAME`.
pub fn nft_delete(table: &NftTable) -> Result<(), CleanupError> {
    run(
        &["nft", "delete", "table", &table.family, &table.name],
        None,
    )
    .map(|_| ())
}

/// The tables of `nft list tables` output (`table ip kube-proxy` lines).
fn parse_nft_tables(out: &str) -> Vec<NftTable> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some("table"), Some(family), Some(name)) => Some(NftTable {
                    family: family.into(),
                    name: name.into(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// Runs `argv` with `stdin`; its stdout, or `None` when the program is not installed.
fn run(argv: &[&str], stdin: Option<&str>) -> Result<Option<String>, CleanupError> {
    let tool = argv.join(" ");
    let child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CleanupError::Spawn { tool, source }),
    };
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A tool that stops reading has failed; its status and stderr say why.
        match pipe.write_all(input.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(CleanupError::Spawn { tool, source: e })
            }
            _ => {}
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|source| CleanupError::Spawn {
            tool: tool.clone(),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(CleanupError::Tool {
            tool,
            status: out.status,
            stderr: stderr.lines().take(5).collect::<Vec<_>>().join(" / "),
        });
    }
    Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_named_as_debian_installs_their_tools() {
        let names: Vec<_> = Backend::ALL.iter().map(|b| b.name()).collect();
        assert_eq!(
            names,
            [
                "iptables-nft",
                "ip6tables-nft",
                "iptables-legacy",
                "ip6tables-legacy"
            ]
        );
    }

    #[test]
    fn nft_list_tables_output_gives_family_and_name() {
        let tables = parse_nft_tables("table ip nat\ntable ip kube-proxy\ntable inet filter\n");
        assert_eq!(tables.len(), 3);
        assert_eq!(tables[1].to_string(), "table ip kube-proxy");
    }

    #[test]
    fn a_missing_tool_is_none_and_a_failing_one_an_error_with_its_stderr() {
        assert!(run(&["switchyard-no-such-tool"], None)
            .expect("missing is fine")
            .is_none());
        let err = run(&["sh", "-c", "echo nope >&2; exit 3"], None).expect_err("fails");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
