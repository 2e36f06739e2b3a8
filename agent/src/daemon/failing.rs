//! Frontends the service maps could not take, reported once per distinct failure: the
//! reconcile loop hands the failures of every sync to [`Failing::update`], which returns only
//! those not reported before (a frontend newly failing, or failing for another reason), so a
//! user sees each failure once in the log and once as an Event, not on every retry. A frontend
//! that gets programmed is forgotten, and reported anew if it fails again later.
use std::collections::BTreeMap;
use std::error::Error;

use switchyard_abi::{capacity, names};

use crate::datapath::apply;
use crate::model::ObjKey;

/// A frontend the maps could not take: its Service (`namespace/name:port`, empty for a
/// frontend that was to go away), the frontend (`address:port/PROTOCOL`), and what failed
/// with what to do about it.
pub type Unprogrammed = (String, String, String);

/// The failures last reported, by frontend.
#[derive(Debug, Default)]
pub struct Failing {
    reported: BTreeMap<String, Unprogrammed>,
}

impl Failing {
    /// Records the failures of a sync. A sync that leaves something out is, or ends with, a
    /// full one, and the next sync is full too, so `now` is every frontend failing. Returns the
    /// failures not reported before.
    pub fn update(&mut self, now: Vec<Unprogrammed>) -> Vec<Unprogrammed> {
        let before = std::mem::take(&mut self.reported);
        let mut new = Vec::new();
        for failure in now {
            if before.get(&failure.1) != Some(&failure) {
                new.push(failure.clone());
            }
            self.reported.insert(failure.1.clone(), failure);
        }
        new
    }

    /// Every frontend failing as of the last sync.
    pub fn current(&self) -> Vec<Unprogrammed> {
        self.reported.values().cloned().collect()
    }
}

/// A failure as the datapath reported it, the error with its causes and, for a full map, the
/// setting that makes room.
pub fn describe(u: &apply::Unprogrammed) -> Unprogrammed {
    let mut error = u.error.to_string();
    let mut source = u.error.source();
    while let Some(e) = source {
        // A message may already end with its source's (a transparent wrapper's) text.
        let said = e.to_string();
        if !error.ends_with(&said) {
            error.push_str(": ");
            error.push_str(&said);
        }
        source = e.source();
    }
    if let Some(map) = u.error.full_map() {
        error.push_str(" — ");
        error.push_str(&remedy(map));
    }
    (
        u.service.clone().unwrap_or_default(),
        u.frontend.clone(),
        error,
    )
}

/// What to do about the full map `map`.
fn remedy(map: &str) -> String {
    match map {
        names::SERVICES => "the SERVICES map (a header and one slot per backend of every \
                            frontend) is full: raise --services-max (SWITCHYARD_SERVICES_MAX)"
            .into(),
        names::BACKENDS => "the BACKENDS map is full: raise --backends-max \
                            (SWITCHYARD_BACKENDS_MAX)"
            .into(),
        names::REV_NAT => format!(
            "the REV_NAT map (one entry per Service address and port) is full at {} entries: \
             remove Services or ports no longer used",
            capacity::REV_NAT
        ),
        names::AFFINITY_MATCH => format!(
            "the AFFINITY_MATCH map (one entry per backend of a sessionAffinity: ClientIP \
             frontend) is full at {} entries: turn off session affinity where it is not needed",
            capacity::AFFINITY_MATCH
        ),
        names::SOURCE_RANGES => format!(
            "the SOURCE_RANGES map (one entry per network of loadBalancerSourceRanges, per \
             frontend) is full at {} entries: use fewer, wider source ranges",
            capacity::SOURCE_RANGES
        ),
        other => format!("the {other} map is full"),
    }
}

/// The Service a `namespace/name:port` names.
pub fn service_key(service: &str) -> Option<ObjKey> {
    let (namespace, rest) = service.split_once('/')?;
    let name = rest.split_once(':').map_or(rest, |(name, _)| name);
    Some((namespace.into(), name.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::DatapathError;
    use aya::maps::MapError;

    fn failure(frontend: &str, error: &str) -> Unprogrammed {
        ("default/b:http".into(), frontend.into(), error.into())
    }

    #[test]
    fn a_failure_is_reported_once_until_it_is_programmed_and_fails_again() {
        let mut failing = Failing::default();
        let full = failure("10.96.0.11:80/TCP", "full");
        assert_eq!(failing.update(vec![full.clone()]), vec![full.clone()]);
        assert!(failing.update(vec![full.clone()]).is_empty(), "not again");
        assert_eq!(failing.current(), vec![full.clone()]);
        let other = failure("10.96.0.11:80/TCP", "another error");
        assert_eq!(
            failing.update(vec![other.clone()]),
            vec![other],
            "another reason is news"
        );
        assert!(failing.update(Vec::new()).is_empty());
        assert!(failing.current().is_empty(), "programmed: forgotten");
        assert_eq!(failing.update(vec![full.clone()]), vec![full], "new again");
    }

    #[test]
    fn a_full_map_names_the_setting_that_makes_room() {
        let error =
            DatapathError::map(names::BACKENDS)(MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_update_elem",
                io_error: std::io::Error::from_raw_os_error(libc::E2BIG),
            }));
        let (service, frontend, said) = describe(&apply::Unprogrammed {
            service: Some("default/b:http".into()),
            frontend: "10.96.0.11:80/TCP".into(),
            error,
        });
        assert_eq!(
            (service.as_str(), frontend.as_str()),
            ("default/b:http", "10.96.0.11:80/TCP")
        );
        assert!(said.contains(names::BACKENDS), "{said}");
        assert!(
            said.contains(&std::io::Error::from_raw_os_error(libc::E2BIG).to_string()),
            "the kernel's answer: {said}"
        );
        assert!(said.contains("--backends-max"), "{said}");
    }

    #[test]
    fn a_service_name_with_its_port_names_the_service() {
        assert_eq!(
            service_key("kube-system/dns:udp-53"),
            Some(("kube-system".into(), "dns".into()))
        );
        assert_eq!(
            service_key("default/a:"),
            Some(("default".into(), "a".into()))
        );
        assert_eq!(service_key("nonsense"), None);
    }
}
