//! What `switchyard cleanup` tells its user, one line per thing: `removed:` (or `would remove:`
//! with `--dry-run`), `kept:` with the reason, `note:`, and failures on stderr. It counts the
//! failures, so that the command fails when anything it set out to remove is still there.
use super::CleanupError;

/// The running account of one `cleanup` invocation.
#[derive(Debug)]
pub struct Report {
    dry_run: bool,
    failed: usize,
    removed: usize,
}

impl Report {
    /// A report that says `would remove` (`dry_run`) or `removed`.
    pub fn new(dry_run: bool) -> Report {
        Report {
            dry_run,
            failed: 0,
            removed: 0,
        }
    }

    /// Whether nothing is to be changed.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// `what` was removed (or would be).
    pub fn removed(&mut self, what: &str) {
        self.removed += 1;
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        println!("{verb}: {what}");
    }

    /// `what` stays, because `why`.
    pub fn kept(&self, what: &str, why: &str) {
        println!("kept: {what}: {why}");
    }

    /// Something the user should know.
    pub fn note(&self, what: &str) {
        println!("note: {what}");
    }

    /// Removing `what` failed.
    pub fn failed(&mut self, what: &str, err: &CleanupError) {
        self.failed += 1;
        eprintln!("failed: {what}: {}", chain(err));
    }

    /// `Ok` when nothing failed; the last line says how much was (or would be) removed.
    pub fn finish(self) -> Result<(), CleanupError> {
        if self.removed == 0 && self.failed == 0 {
            println!("nothing to remove");
        }
        match self.failed {
            0 => Ok(()),
            n => Err(CleanupError::Incomplete(n)),
        }
    }
}

/// An error with its causes: `outer: inner: root`.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_makes_the_whole_cleanup_fail() {
        let mut r = Report::new(false);
        r.removed("link cbr0");
        r.failed(
            "link vxlan0",
            &CleanupError::io("/x")(std::io::Error::from_raw_os_error(libc::EPERM)),
        );
        assert!(matches!(r.finish(), Err(CleanupError::Incomplete(1))));
        assert!(Report::new(true).finish().is_ok());
    }

    #[test]
    fn an_error_is_shown_with_its_cause() {
        let e =
            CleanupError::io("/run/switchyard/n1")(std::io::Error::from_raw_os_error(libc::EBUSY));
        assert!(
            chain(&e).starts_with("/run/switchyard/n1: "),
            "{}",
            chain(&e)
        );
    }
}
