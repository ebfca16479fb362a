//! Short names of the contract's enums, as command lines, JSON and summaries spell them. Written
//! once here so the agent and the collector never disagree.

use crate::v1::DeviationKind;

/// Short, lowercase name of a deviation kind (`new-file-access`); `unspecified` for 0.
pub fn kind_name(kind: DeviationKind) -> &'static str {
    match kind {
        DeviationKind::NewExecutable => "new-executable",
        DeviationKind::NewExecEdge => "new-exec-edge",
        DeviationKind::NewFileAccess => "new-file-access",
        DeviationKind::NewNetworkDestination => "new-network-destination",
        DeviationKind::NewPrivilegeUse => "new-privilege-use",
        DeviationKind::NewDnsName => "new-dns-name",
        DeviationKind::NewListener => "new-listener",
        DeviationKind::NewFileOperation => "new-file-operation",
        DeviationKind::CardinalityExploded => "cardinality-exploded",
        DeviationKind::NewSequence => "new-sequence",
        DeviationKind::RateSpike => "rate-spike",
        DeviationKind::Enumeration => "enumeration",
        DeviationKind::UnusualTime => "unusual-time",
        DeviationKind::NewHost => "new-host",
        DeviationKind::Aggregated => "aggregated",
        DeviationKind::IdentitySwitch => "identity-switch",
        DeviationKind::BlindSpot => "blind-spot",
        DeviationKind::Unspecified => "unspecified",
    }
}

/// The kind named `name` by [`kind_name`].
pub fn kind_from_name(name: &str) -> Option<DeviationKind> {
    (1..64)
        .filter_map(|n| DeviationKind::try_from(n).ok())
        .find(|k| kind_name(*k) == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_proto_name_in_short() {
        for n in 0..64 {
            let Ok(kind) = DeviationKind::try_from(n) else {
                continue;
            };
            let long = kind
                .as_str_name()
                .trim_start_matches("DEVIATION_KIND_")
                .to_ascii_lowercase()
                .replace('_', "-");
            assert_eq!(kind_name(kind), long);
            if n > 0 {
                assert_eq!(kind_from_name(&long), Some(kind));
            }
        }
    }
}
