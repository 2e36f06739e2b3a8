//! `iptables-save` output, parsed: its tables, their chains and rules, each rule with the chain it
//! jumps or goes to. Pure; the text of every rule is kept as the tool printed it, so that it can be
//! handed back to `iptables-restore` (`-D CHAIN <spec>`) and match exactly that rule.

/// One chain of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// Its name.
    pub name: String,
    /// A built-in chain (`PREROUTING`, `INPUT`, …: it has a policy; user chains print `-`).
    pub builtin: bool,
}

/// One rule (`-A CHAIN <spec>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The chain it is in.
    pub chain: String,
    /// Everything after the chain name, as printed.
    pub spec: String,
    /// The chain or target of its `-j`/`-g` (`KUBE-SERVICES`, `MASQUERADE`, …), if any.
    pub target: Option<String>,
}

impl Rule {
    /// The rule as `iptables-save` printed it: `-A CHAIN <spec>`.
    pub fn text(&self) -> String {
        format!("-A {} {}", self.chain, self.spec)
    }
}

/// One table of the output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// `nat`, `filter`, `mangle`, …
    pub name: String,
    /// Its chains, in the order printed.
    pub chains: Vec<Chain>,
    /// Its rules, in the order printed.
    pub rules: Vec<Rule>,
}

impl Table {
    /// Whether the table has a chain named `name`.
    pub fn has_chain(&self, name: &str) -> bool {
        self.chains.iter().any(|c| c.name == name)
    }

    /// Whether `name` is one of the table's built-in chains.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.chains.iter().any(|c| c.name == name && c.builtin)
    }
}

/// Why a line of the output could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Line number, from 1.
    pub line: usize,
    /// What is wrong.
    pub reason: &'static str,
    /// The line.
    pub text: String,
}

/// Parses the whole output of `iptables-save` (or `ip6tables-save`; either backend).
pub fn parse(output: &str) -> Result<Vec<Table>, ParseError> {
    let mut tables = Vec::new();
    let mut current: Option<Table> = None;
    for (i, raw) in output.lines().enumerate() {
        let line = raw.trim_end();
        let err = |reason| ParseError {
            line: i + 1,
            reason,
            text: line.to_string(),
        };
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            if current.is_some() {
                return Err(err("a table starts before the previous one's COMMIT"));
            }
            current = Some(Table {
                name: name.to_string(),
                ..Table::default()
            });
            continue;
        }
        let table = current.as_mut().ok_or_else(|| err("outside a table"))?;
        if line == "COMMIT" {
            tables.extend(current.take());
        } else if let Some(decl) = line.strip_prefix(':') {
            let mut words = decl.split_whitespace();
            let (Some(name), Some(policy)) = (words.next(), words.next()) else {
                return Err(err("a chain line without a policy"));
            };
            table.chains.push(Chain {
                name: name.to_string(),
                builtin: policy != "-",
            });
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let (chain, spec) = rest
                .split_once(' ')
                .ok_or_else(|| err("a rule without a specification"))?;
            let words = split_words(spec).ok_or_else(|| err("an unterminated quote"))?;
            table.rules.push(Rule {
                chain: chain.to_string(),
                spec: spec.to_string(),
                target: target_of(&words),
            });
        } else {
            return Err(err("not a table, chain, rule or COMMIT line"));
        }
    }
    match current {
        Some(t) => Err(ParseError {
            line: output.lines().count(),
            reason: "the output ends inside a table",
            text: format!("*{}", t.name),
        }),
        None => Ok(tables),
    }
}

/// The words of a rule specification as iptables-save quotes them: double quotes group a word,
/// `\"` and `\\` inside them stand for `"` and `\`. `None` for an unterminated quote.
fn split_words(spec: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut chars = spec.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return Some(words);
        };
        let mut word = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => word.push(chars.next()?),
                    c => word.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                word.push(c);
            }
        }
        words.push(word);
    }
}

/// The argument of the rule's `-j`/`--jump`/`-g`/`--goto`.
fn target_of(words: &[String]) -> Option<String> {
    words
        .windows(2)
        .find(|w| matches!(w[0].as_str(), "-j" | "--jump" | "-g" | "--goto"))
        .map(|w| w[1].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVED: &str = r#"# Generated by iptables-nft-save v1.8.9 (nf_tables) on Wed Dec  2 02:15:31 2026
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -s 10.0.0.0/8 -j MASQUERADE
-A KUBE-SERVICES -m comment --comment "a \"-j DROP\" inside a comment" -g KUBE-SVC-ABC
COMMIT
# Completed on Wed Dec  2 02:15:31 2026
*filter
:INPUT ACCEPT [0:0]
COMMIT
"#;

    #[test]
    fn tables_chains_and_rules_are_read_with_their_targets() {
        let tables = parse(SAVED).expect("parses");
        assert_eq!(tables.len(), 2);
        let nat = &tables[0];
        assert_eq!(nat.name, "nat");
        assert!(nat.is_builtin("PREROUTING"));
        assert!(nat.has_chain("KUBE-SERVICES") && !nat.is_builtin("KUBE-SERVICES"));
        let targets: Vec<_> = nat.rules.iter().map(|r| r.target.as_deref()).collect();
        assert_eq!(
            targets,
            [
                Some("KUBE-SERVICES"),
                Some("MASQUERADE"),
                Some("KUBE-SVC-ABC")
            ]
        );
        assert_eq!(tables[1].name, "filter");
    }

    #[test]
    fn a_rule_is_given_back_exactly_as_printed() {
        let tables = parse(SAVED).expect("parses");
        assert_eq!(
            tables[0].rules[0].text(),
            r#"-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES"#
        );
    }

    #[test]
    fn a_jump_named_inside_a_quoted_comment_is_not_the_rules_target() {
        let words =
            split_words(r#"-m comment --comment "see -j KUBE-SERVICES" -j ACCEPT"#).expect("words");
        assert_eq!(target_of(&words).as_deref(), Some("ACCEPT"));
    }

    #[test]
    fn output_cut_inside_a_table_is_an_error_not_an_empty_table() {
        let err = parse("*nat\n:PREROUTING ACCEPT [0:0]\n").expect_err("no COMMIT");
        assert_eq!(err.reason, "the output ends inside a table");
    }

    #[test]
    fn an_unknown_line_is_reported_with_its_number() {
        let err = parse("*nat\n-Z PREROUTING\nCOMMIT\n").expect_err("unknown line");
        assert_eq!((err.line, err.text.as_str()), (2, "-Z PREROUTING"));
    }
}
