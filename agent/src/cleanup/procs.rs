//! Which processes run on the machine, from `/proc/<pid>/cmdline`: the agent of a node (whose
//! open links would keep its programs attached after its pins are gone) and kube-proxy (which
//! would write its rules again). Reads only; processes in every network namespace count.
use std::path::Path;

/// The processes running `switchyard agent --node <node>`, but this one.
pub fn agents_of(node: &str) -> Vec<i32> {
    matching(|argv| is_agent_of(argv, node))
}

/// The processes running kube-proxy.
pub fn kube_proxies() -> Vec<i32> {
    matching(|argv| program(argv) == Some("kube-proxy"))
}

fn matching(pred: impl Fn(&[String]) -> bool) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            pred(&argv)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The file name of the program.
fn program(argv: &[String]) -> Option<&str> {
    Path::new(argv.first()?).file_name()?.to_str()
}

/// `switchyard [global flags] agent … --node <node>` (or `--node=<node>`).
fn is_agent_of(argv: &[String], node: &str) -> bool {
    let node_flag = argv.windows(2).any(|w| w[0] == "--node" && w[1] == node)
        || argv.iter().any(|a| a.strip_prefix("--node=") == Some(node));
    program(argv) == Some("switchyard") && argv.iter().any(|a| a == "agent") && node_flag
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn the_agent_of_a_node_is_recognised_by_its_command_line() {
        let yes = [
            "/usr/local/bin/switchyard agent --node n1 --kubeconfig k",
            "target/debug/switchyard --log-format json agent --kubeconfig k --node=n1",
        ];
        for l in yes {
            assert!(is_agent_of(&argv(l), "n1"), "{l}");
        }
        let no = [
            "/usr/local/bin/switchyard agent --node n12 --kubeconfig k",
            "switchyard cleanup --switchyard --node n1",
            "switchyard-labnode kubelet --node n1",
        ];
        for l in no {
            assert!(!is_agent_of(&argv(l), "n1"), "{l}");
        }
    }

    #[test]
    fn this_process_is_never_one_of_them() {
        let me = std::process::id() as i32;
        assert!(!matching(|_| true).contains(&me));
        assert!(matching(|_| true).len() > 1, "init at least");
    }
}
