//! Behaviours in words: the one-line summary of a behaviour in its event, and a short name of
//! what it is about. Shared by reports (deviation summaries) and detection (evidence, samples).

use std::net::SocketAddr;

use crate::attribute::Attributed;
use crate::event::EventKind;

use super::{Behaviour, PrivilegeOperation};

/// One line, e.g. `new executable /usr/bin/nc run by /bin/bash in github:acme/app/ci/build`.
pub fn summary(event: &Attributed, behaviour: &Behaviour) -> String {
    let workload = &event.workload.id;
    let exe = &event.process.executable;
    let by = if exe.is_empty() {
        String::new()
    } else {
        format!(" by {exe}")
    };
    match behaviour {
        Behaviour::Executable(path) => match &event.process.parent_executable {
            Some(parent) => format!("new executable {path} run by {parent} in {workload}"),
            None => format!("new executable {path} in {workload}"),
        },
        Behaviour::ExecEdge { parent, child } => {
            format!("new exec edge {parent} -> {child} in {workload}")
        }
        Behaviour::File { path, intent } => {
            format!("new file access {path} ({intent}){by} in {workload}")
        }
        Behaviour::Destination {
            address,
            port,
            protocol,
        } => {
            let dest = SocketAddr::new(*address, *port);
            let name = event
                .context
                .dns_name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            format!("new network destination {dest}/{protocol}{name}{by} in {workload}")
        }
        Behaviour::Privilege {
            operation: PrivilegeOperation::IdentityHandoff,
            detail,
        } => {
            let to = event.context.handoff.as_ref().map_or(String::new(), |h| {
                let run =
                    h.to.run_id
                        .as_deref()
                        .map(|r| format!(" run {r}"))
                        .unwrap_or_default();
                format!(" for {}{run}", h.to.id)
            });
            format!(
                "identity handoff: a process{by} left {workload}{to} ({detail}), which the \
                 workload never did while learning"
            )
        }
        Behaviour::Privilege { operation, detail } => {
            let result = match &event.event.kind {
                EventKind::Privilege { result, .. } if *result < 0 => " (refused)",
                _ => "",
            };
            format!("new privilege use {operation} {detail}{result}{by} in {workload}")
        }
        Behaviour::DnsName(name) => format!("new DNS name {name}{by} in {workload}"),
        Behaviour::Listener {
            address,
            port,
            protocol,
        } => {
            let port = if *port == 0 {
                "ephemeral".to_owned()
            } else {
                port.to_string()
            };
            format!("new listener {address}:{port}/{protocol}{by} in {workload}")
        }
        Behaviour::FileOperation {
            operation,
            path,
            detail,
        } => {
            format!("new file operation {operation} {path} {detail}{by} in {workload}")
        }
        Behaviour::Sequence { parent, steps } => {
            format!(
                "new exec sequence {} (children of {parent}) in {workload}",
                steps.join(" -> ")
            )
        }
        Behaviour::Host(name) => format!("new host {name} for {workload}"),
        Behaviour::ActiveTime { weekday, hour } => {
            let day = WEEKDAYS.get(usize::from(*weekday)).copied().unwrap_or("?");
            format!("unusual time: {workload} active on {day} {hour:02}:00-{hour:02}:59 UTC{by}")
        }
    }
}

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// A short name of what `behaviour` is about (its path, address, name...), for samples.
pub fn object_name(behaviour: &Behaviour) -> String {
    match behaviour {
        Behaviour::Executable(path) | Behaviour::File { path, .. } => path.clone(),
        Behaviour::ExecEdge { parent, child } => format!("{parent} -> {child}"),
        Behaviour::Destination {
            address,
            port,
            protocol,
        }
        | Behaviour::Listener {
            address,
            port,
            protocol,
        } => format!("{}/{protocol}", SocketAddr::new(*address, *port)),
        Behaviour::Privilege { operation, detail } => format!("{operation} {detail}"),
        Behaviour::DnsName(name) | Behaviour::Host(name) => name.clone(),
        Behaviour::FileOperation {
            operation, path, ..
        } => format!("{operation} {path}"),
        Behaviour::Sequence { steps, .. } => steps.join(" -> "),
        Behaviour::ActiveTime { weekday, hour } => format!("day {weekday} hour {hour}"),
    }
}
