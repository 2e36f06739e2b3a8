//! The Python `kubernetes` client against the switchyard-cp binary (see `python_compat.py`):
//! list/create/delete, selectors, Status objects (409, 422 with causes, 404), watches resumed
//! from a resourceVersion, bookmarks when asked; then a restart, after which a watch from the
//! old resourceVersion gets 410 Gone and the client relists and watches again.
//!
//! Needs `python3 -m pip install kubernetes` (done by `cargo xtask setup`).
mod harness;

use std::path::Path;

use harness::Cp;

#[test]
fn the_python_client_lists_creates_deletes_watches_and_relists_after_410() {
    let script = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python_compat.py"
    ));
    let mut cp = Cp::start();
    let out = cp.python(script, &["main"]).ok();
    let rv = out
        .lines()
        .find_map(|l| l.strip_prefix("RV="))
        .unwrap_or_else(|| panic!("no RV= line in:\n{out}"))
        .to_string();
    assert!(out.trim_end().ends_with("PASS"), "{out}");
    cp.restart();
    let out = cp.python(script, &["after-restart", &rv]).ok();
    assert_eq!(out.trim(), "PASS");
}
