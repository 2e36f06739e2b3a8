//! Bearer-token authentication from a static token file, as kube-apiserver's `--token-file`:
//! a CSV of `token,user,uid[,"group1,group2"]`. With it, every request except the health checks
//! (`/healthz`, `/livez`, `/readyz`) needs `Authorization: Bearer <token>` naming a listed token,
//! or it gets `401 Unauthorized` with a Kubernetes `Status`. The user it names travels with the
//! request (an extension) to [`crate::authz`].
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::status::ApiError;

/// Errors reading a token file.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file could not be read.
    #[error("reading the token file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// A line is not `token,user,uid[,"groups"]`.
    #[error("token file {0}, line {1}: {2} (expected token,user,uid[,\"group1,group2\"])")]
    Parse(PathBuf, usize, String),
    /// No usable token at all.
    #[error("token file {0} lists no token")]
    Empty(PathBuf),
}

/// Who a token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// User name.
    pub name: String,
    /// User UID.
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
}

/// The tokens of a token file.
#[derive(Clone, Debug)]
pub struct Tokens {
    entries: Vec<(String, User)>,
}

/// Splits one CSV record (RFC 4180 quoting: `"a,b"`, `""` for a quote).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, '"') if at_start => {
                quoted = true;
                at_start = false;
            }
            (false, '"') => return Err("a quote inside an unquoted field".into()),
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => {
                quoted = false;
                if !matches!(chars.peek(), None | Some(',')) {
                    return Err("text after a closing quote".into());
                }
            }
            (false, ',') => {
                fields.push(std::mem::take(&mut cur));
                at_start = true;
            }
            (_, c) => {
                cur.push(c);
                at_start = false;
            }
        }
    }
    if quoted {
        return Err("an unterminated quote".into());
    }
    fields.push(cur);
    Ok(fields)
}

impl Tokens {
    /// Reads and parses the token file at `path`.
    pub fn load(path: &Path) -> Result<Tokens, AuthError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| AuthError::Io(path.to_path_buf(), e))?;
        Self::parse(&text, path)
    }

    /// Parses token-file `text` (`path` names it in errors). Blank lines are skipped.
    pub fn parse(text: &str, path: &Path) -> Result<Tokens, AuthError> {
        let err = |n: usize, m: String| AuthError::Parse(path.to_path_buf(), n, m);
        let mut entries: Vec<(String, User)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let f = csv_fields(line).map_err(|m| err(n, m))?;
            if f.len() < 3 {
                return Err(err(
                    n,
                    format!(
                        "at least 3 columns (token, user name, user uid) needed, found {}",
                        f.len()
                    ),
                ));
            }
            if f[0].is_empty() {
                return Err(err(n, "the token is empty".into()));
            }
            if f[0].chars().any(char::is_whitespace) {
                return Err(err(n, "the token contains white space".into()));
            }
            let user = User {
                name: f[1].clone(),
                uid: f[2].clone(),
                groups: f
                    .get(3)
                    .filter(|g| !g.is_empty())
                    .map(|g| g.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
            };
            if entries.iter().any(|(t, _)| *t == f[0]) {
                tracing::warn!(path = %path.display(), line = n, "duplicate token: the later line wins");
                entries.retain(|(t, _)| *t != f[0]);
            }
            entries.push((f[0].clone(), user));
        }
        if entries.is_empty() {
            return Err(AuthError::Empty(path.to_path_buf()));
        }
        Ok(Tokens { entries })
    }

    /// The first token of the file (the one written into a kubeconfig).
    pub fn first(&self) -> &str {
        self.entries.first().map_or("", |(t, _)| t.as_str())
    }

    /// The user holding `token`, if any. Compares every token in constant time.
    pub fn user(&self, token: &str) -> Option<&User> {
        let mut found = None;
        for (t, u) in &self.entries {
            let same = t.len() == token.len()
                && t.bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0;
            if same {
                found = Some(u);
            }
        }
        found
    }

    /// The user of a request's `Authorization` header value (`Bearer <token>`).
    pub fn authenticate(&self, authorization: &str) -> Option<&User> {
        let mut parts = authorization.trim().splitn(3, ' ');
        let scheme = parts.next()?;
        let token = parts.next()?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return None;
        }
        self.user(token)
    }
}

/// Paths answered without authentication, as kube-apiserver's health checks.
fn is_open(path: &str) -> bool {
    ["/healthz", "/livez", "/readyz"]
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

/// The `401 Unauthorized` Status kube-apiserver answers.
pub fn unauthorized() -> ApiError {
    ApiError {
        code: 401,
        reason: "Unauthorized",
        message: "Unauthorized".into(),
        details: None,
    }
}

/// Middleware: lets a request through when it carries a listed bearer token (or asks for a
/// health check), answers 401 otherwise.
pub async fn require_token(
    State(tokens): State<Arc<Tokens>>,
    mut req: Request,
    next: Next,
) -> Response {
    if is_open(req.uri().path()) {
        return next.run(req).await;
    }
    let user = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| tokens.authenticate(v))
        .cloned();
    match user {
        Some(u) => {
            tracing::trace!(user = %u.name, method = %req.method(), uri = %req.uri(), "authenticated");
            // The verbs authorize this user (crate::authz).
            req.extensions_mut().insert(u);
            next.run(req).await
        }
        None => {
            tracing::debug!(method = %req.method(), uri = %req.uri(), "unauthorized request");
            unauthorized().into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_parse_like_kube_apiservers() {
        let p = Path::new("tokens.csv");
        let t = Tokens::parse(
            "s3cret,admin,uid-1,\"system:masters,devs\"\n\nother,bob,2\n",
            p,
        )
        .unwrap();
        assert_eq!(t.first(), "s3cret");
        let admin = t.authenticate("Bearer s3cret").unwrap();
        assert_eq!(admin.name, "admin");
        assert_eq!(admin.groups, ["system:masters", "devs"]);
        assert_eq!(
            t.authenticate("bearer other").unwrap().groups,
            Vec::<String>::new()
        );
        assert!(t.authenticate("Bearer wrong").is_none());
        assert!(t.authenticate("Bearer s3cre").is_none());
        assert!(t.authenticate("Basic s3cret").is_none());
        assert!(t.authenticate("Bearer ").is_none());
    }

    #[test]
    fn a_bad_line_is_an_error_naming_it() {
        let p = Path::new("t.csv");
        let e = Tokens::parse("a,b,c\njust-a-token\n", p).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("token file t.csv, line 2: at least 3 columns"),
            "{e}"
        );
        let e = Tokens::parse("a,b,c,\"g1,g2\n", p).unwrap_err();
        assert!(
            e.to_string().contains("line 1: an unterminated quote"),
            "{e}"
        );
        assert!(matches!(Tokens::parse("\n\n", p), Err(AuthError::Empty(_))));
    }

    #[test]
    fn only_health_checks_are_open() {
        assert!(is_open("/healthz") && is_open("/readyz/ping") && is_open("/livez"));
        assert!(!is_open("/healthzz") && !is_open("/api/v1/pods") && !is_open("/version"));
    }
}
