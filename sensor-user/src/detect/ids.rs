//! Stable ids: what makes two findings "the same" (reported once) is decided here, from the
//! host, the workload and the behaviour's fields, independent of time, process and run.

use proto::v1::DeviationKind;
use sha2::{Digest, Sha256};

use crate::baseline::Dimension;
use crate::behaviour::{Behaviour, PrivilegeOperation};

/// Domain separation for deviation ids (bump when the id recipe changes).
const ID_DOMAIN: &[u8] = b"sensor.v1.Deviation/1";

/// Stable id of "`behaviour` is new in `workload_id` on `host`": lowercase hex SHA-256 of the
/// length-prefixed host, workload id, kind name and the behaviour's fields. Independent of time,
/// process and run, so the same novelty always gets the same id.
pub fn deviation_id(host: &str, workload_id: &str, behaviour: &Behaviour) -> String {
    let kind = deviation_kind(behaviour).as_str_name();
    let mut fields: Vec<String> = vec![host.into(), workload_id.into(), kind.into()];
    match behaviour {
        Behaviour::Executable(path) => fields.push(path.clone()),
        Behaviour::ExecEdge { parent, child } => fields.extend([parent.clone(), child.clone()]),
        Behaviour::File { path, intent } => fields.extend([path.clone(), intent.to_string()]),
        Behaviour::Destination {
            address,
            port,
            protocol,
        } => fields.extend([address.to_string(), port.to_string(), protocol.to_string()]),
        Behaviour::Privilege { operation, detail } => {
            fields.extend([operation.to_string(), detail.clone()])
        }
        Behaviour::DnsName(name) => fields.push(name.clone()),
        Behaviour::Listener {
            address,
            port,
            protocol,
        } => fields.extend([address.to_string(), port.to_string(), protocol.to_string()]),
        Behaviour::FileOperation {
            operation,
            path,
            detail,
        } => fields.extend([operation.to_string(), path.clone(), detail.clone()]),
        Behaviour::Sequence { parent, steps } => {
            fields.push(parent.clone());
            fields.extend(steps.iter().cloned());
        }
        Behaviour::Host(name) => fields.push(name.clone()),
        Behaviour::ActiveTime { weekday, hour } => {
            fields.extend([weekday.to_string(), hour.to_string()])
        }
    }
    hash_fields(&fields)
}

/// Stable id of "`workload_id` on `host` went past the bound of `dimension`", made like
/// [`deviation_id`] from the host, workload id, kind name and dimension name: one per workload
/// and dimension.
pub fn cardinality_id(host: &str, workload_id: &str, dimension: Dimension) -> String {
    let kind = DeviationKind::CardinalityExploded.as_str_name();
    hash_fields(&[host, workload_id, kind, dimension.as_str()])
}

/// Lowercase hex SHA-256 of [`ID_DOMAIN`] and the length-prefixed fields.
pub fn hash_fields<S: AsRef<str>>(fields: &[S]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(ID_DOMAIN);
    for field in fields.iter().map(AsRef::as_ref) {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `id` (a [`hash_fields`] id) led by `hour` (hours since the epoch, 8 hex digits) in place of
/// its first 8: the ids a workload without runs reports in one hour then sort together, so the
/// collector's key (agent, workload, run, id) stores them on neighbouring pages instead of one
/// random page each (a run's rows are grouped by the run id already). The other 56 hex digits of
/// the hash keep them distinct; the same novelty in the same hour still gets the same id.
pub fn hour_first(id: String, hour: i64) -> String {
    let lead = format!("{:08x}", hour.clamp(0, 0xffff_ffff));
    match id.get(8..) {
        Some(rest) => lead + rest,
        None => id,
    }
}

/// The deviation kind that reports `behaviour` as new.
pub fn deviation_kind(behaviour: &Behaviour) -> DeviationKind {
    match behaviour {
        Behaviour::Executable(_) => DeviationKind::NewExecutable,
        Behaviour::ExecEdge { .. } => DeviationKind::NewExecEdge,
        Behaviour::File { .. } => DeviationKind::NewFileAccess,
        Behaviour::Destination { .. } => DeviationKind::NewNetworkDestination,
        // Leaving the workload where it never did is choosing another identity.
        Behaviour::Privilege {
            operation: PrivilegeOperation::IdentityHandoff,
            ..
        } => DeviationKind::IdentitySwitch,
        Behaviour::Privilege { .. } => DeviationKind::NewPrivilegeUse,
        Behaviour::DnsName(_) => DeviationKind::NewDnsName,
        Behaviour::Listener { .. } => DeviationKind::NewListener,
        Behaviour::FileOperation { .. } => DeviationKind::NewFileOperation,
        Behaviour::Sequence { .. } => DeviationKind::NewSequence,
        Behaviour::Host(_) => DeviationKind::NewHost,
        Behaviour::ActiveTime { .. } => DeviationKind::UnusualTime,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hours_ids_start_with_the_hour() {
        let id = hash_fields(&["novelty", "hour-493000"]);
        let led = hour_first(id.clone(), 493_000);
        assert_eq!(
            (led.len(), &led[..8], &led[8..]),
            (64, "000785c8", &id[8..])
        );
        assert_eq!(led, hour_first(id, 493_000), "stable");
        assert!(hour_first(hash_fields(&["a"]), 1) < hour_first(hash_fields(&["b"]), 2));
    }

    #[test]
    fn ids_are_stable_and_discriminating() {
        let exe = Behaviour::Executable("/usr/bin/nc".into());
        let id = deviation_id("h", "w", &exe);
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(id, deviation_id("h", "w", &exe));
        assert_ne!(id, deviation_id("h2", "w", &exe));
        assert_ne!(id, deviation_id("h", "w2", &exe));
        // Field boundaries matter: ("a", "bc") and ("ab", "c") differ.
        let e1 = Behaviour::ExecEdge {
            parent: "a".into(),
            child: "bc".into(),
        };
        let e2 = Behaviour::ExecEdge {
            parent: "ab".into(),
            child: "c".into(),
        };
        assert_ne!(deviation_id("h", "w", &e1), deviation_id("h", "w", &e2));
    }

    #[test]
    fn cardinality_ids_are_one_per_workload_and_dimension() {
        let id = cardinality_id("h", "w", Dimension::FileAccess);
        assert_eq!(id, cardinality_id("h", "w", Dimension::FileAccess));
        assert_ne!(id, cardinality_id("h", "w", Dimension::Executable));
        assert_ne!(id, cardinality_id("h", "w2", Dimension::FileAccess));
        let file = Behaviour::File {
            path: "file-access".into(),
            intent: crate::event::OpenIntent::default(),
        };
        assert_ne!(id, deviation_id("h", "w", &file));
    }
}
