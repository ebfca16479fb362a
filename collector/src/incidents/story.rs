//! The one-sentence story of an incident: its deviations in time order, each told in a few words
//! from its typed fields (kind, novelty, process, signals), e.g. "read ~/.ssh/id_rsa → ran curl
//! (new) → connected to 127.0.0.1:9 (new, no DNS)".
//!
//! A step is made of parts: fixed words the collector writes, and values that come from agents
//! (paths, names, addresses). Keeping them apart lets each output quote what it must: the
//! Markdown job summary puts values in code spans, so a watched process that names a file
//! `[x](https://evil)` cannot put a link in it.

use std::path::Path;

use proto::v1::{Deviation, DeviationKind, novelty::What};

/// Steps a story tells before it counts the rest ("… and 4 more").
pub const MAX_STEPS: usize = 6;
/// Characters of a value a step keeps (paths and names can be made arbitrarily long).
const MAX_VALUE_CHARS: usize = 120;

/// One piece of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Words the collector wrote (never text from an agent).
    Fixed(String),
    /// A value from a deviation: a path, an executable name, an address.
    Value(String),
}

/// What one deviation did, in a few words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub parts: Vec<Part>,
    /// The deviation it tells.
    pub deviation_id: String,
    /// What the step is about, so that the same thing is told once (e.g. a new executable and
    /// the new exec edge that started it are one step).
    key: String,
}

impl Step {
    /// The step as plain text.
    pub fn text(&self) -> String {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Fixed(text) | Part::Value(text) => text.as_str(),
            })
            .collect()
    }
}

/// An incident's story: the steps told and how many more there were.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Story {
    pub steps: Vec<Step>,
    /// Distinct steps not told (past [`MAX_STEPS`]).
    pub more: usize,
}

/// Joins steps in a sentence.
pub const ARROW: &str = " → ";

impl Story {
    /// The story of `deviations`, which must be in time order: one step per distinct thing done.
    pub fn tell<'a>(deviations: impl IntoIterator<Item = &'a Deviation>) -> Story {
        let mut story = Story::default();
        let mut told = std::collections::HashSet::new();
        for deviation in deviations {
            let step = step(deviation);
            if !told.insert(step.key.clone()) {
                continue;
            }
            if story.steps.len() < MAX_STEPS {
                story.steps.push(step);
            } else {
                story.more += 1;
            }
        }
        story
    }

    /// The sentence in plain text.
    pub fn text(&self) -> String {
        let mut text = self
            .steps
            .iter()
            .map(Step::text)
            .collect::<Vec<_>>()
            .join(ARROW);
        if self.more > 0 {
            text.push_str(&format!("{ARROW}… and {} more", self.more));
        }
        text
    }
}

/// The signals the story mentions, parsed once from the wire's strings.
#[derive(Debug, Clone, Copy, Default)]
struct Signals {
    no_dns: bool,
    dropped_then_executed: bool,
    fileless: bool,
    credential: bool,
    privileged: bool,
}

impl Signals {
    fn of(deviation: &Deviation) -> Signals {
        let mut signals = Signals::default();
        for signal in &deviation.signals {
            match signal.as_str() {
                "no-dns" => signals.no_dns = true,
                "dropped-then-executed" => signals.dropped_then_executed = true,
                "fileless" => signals.fileless = true,
                "credential" => signals.credential = true,
                "privileged" => signals.privileged = true,
                _ => {}
            }
        }
        signals
    }
}

fn fixed(text: impl Into<String>) -> Part {
    Part::Fixed(text.into())
}

/// A value, cut to [`MAX_VALUE_CHARS`] and without control characters (a newline in a file name
/// must not start a new line of the summary).
fn value(text: &str) -> Part {
    let mut cut: String = text
        .chars()
        .take(MAX_VALUE_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(MAX_VALUE_CHARS).is_some() {
        cut.push('…');
    }
    Part::Value(cut)
}

/// The file name of an executable path ("/usr/bin/curl" → "curl"); the path itself when it has
/// none (e.g. "memfd:x").
fn program(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|name| name.to_str())
        .filter(|name| !name.is_empty())
        .unwrap_or(path)
}

/// A path with a home directory shortened to "~" ("/root/.ssh/id_rsa" → "~/.ssh/id_rsa").
fn home_short(path: &str) -> String {
    if let Some(rest) = path.strip_prefix("/root/") {
        return format!("~/{rest}");
    }
    if let Some(rest) = path.strip_prefix("/home/")
        && let Some((_, inside)) = rest.split_once('/')
    {
        return format!("~/{inside}");
    }
    path.to_owned()
}

/// "(new)", "(new, no DNS)": the qualifiers of a step.
fn qualifiers(words: &[&str]) -> Part {
    fixed(format!(" ({})", words.join(", ")))
}

/// The verb for a file access intent ("read", "write|create"...).
fn access_verb(intent: &str) -> &'static str {
    let has = |word: &str| intent.split('|').any(|w| w == word);
    if has("create") {
        "created "
    } else if has("write") || has("truncate") {
        "wrote "
    } else if has("read") {
        "read "
    } else {
        "opened "
    }
}

/// One deviation as a step.
fn step(deviation: &Deviation) -> Step {
    let signals = Signals::of(deviation);
    let kind = DeviationKind::try_from(deviation.kind).unwrap_or(DeviationKind::Unspecified);
    let what = deviation.novelty.as_ref().and_then(|n| n.what.as_ref());
    let executable = deviation
        .process
        .as_ref()
        .map_or("", |p| p.executable.as_str());
    let (parts, key) = match (kind, what) {
        (DeviationKind::NewExecutable, Some(What::Executable(path))) => {
            let mut words = vec!["new"];
            if signals.dropped_then_executed {
                words.push("written by the job");
            }
            if signals.fileless {
                words.push("fileless");
            }
            if signals.privileged {
                words.push("privileged");
            }
            (
                vec![fixed("ran "), value(program(path)), qualifiers(&words)],
                format!("exec {path}"),
            )
        }
        (DeviationKind::NewExecEdge, Some(What::ExecEdge(edge))) => (
            vec![
                value(program(&edge.parent_executable)),
                fixed(" ran "),
                value(program(&edge.child_executable)),
                qualifiers(&["first time"]),
            ],
            // Told once with the new executable it started, if that is new too.
            format!("exec {}", edge.child_executable),
        ),
        (DeviationKind::NewSequence, Some(What::Sequence(sequence))) => {
            let mut parts = vec![value(program(&sequence.parent_executable)), fixed(" ran ")];
            for (i, step) in sequence.steps.iter().enumerate() {
                if i > 0 {
                    parts.push(fixed(" then "));
                }
                parts.push(value(program(step)));
            }
            parts.push(qualifiers(&["new sequence"]));
            (parts, format!("sequence {:?}", sequence.steps))
        }
        (DeviationKind::NewFileAccess, Some(What::File(file))) => {
            let mut parts = vec![
                fixed(access_verb(&file.intent)),
                value(&home_short(&file.path)),
            ];
            if signals.credential {
                parts.push(qualifiers(&["a credential"]));
            }
            (parts, format!("file {} {}", file.intent, file.path))
        }
        (DeviationKind::NewFileOperation, Some(What::FileOperation(op))) => (
            vec![
                value(&op.operation),
                fixed(" "),
                value(&home_short(&op.path)),
                qualifiers(&["new"]),
            ],
            format!("operation {} {}", op.operation, op.path),
        ),
        (DeviationKind::NewNetworkDestination, Some(What::Destination(dest))) => {
            let mut parts = vec![fixed("connected to ")];
            if !dest.dns_name.is_empty() {
                parts.push(value(&dest.dns_name));
                parts.push(fixed(" "));
            }
            parts.push(value(&endpoint(&dest.address, dest.port)));
            let words: &[&str] = if signals.no_dns {
                &["new", "no DNS"]
            } else {
                &["new"]
            };
            parts.push(qualifiers(words));
            (
                parts,
                format!("connect {} {} {}", dest.protocol, dest.address, dest.port),
            )
        }
        (DeviationKind::NewDnsName, Some(What::Dns(query))) => (
            vec![fixed("resolved "), value(&query.name), qualifiers(&["new"])],
            format!("dns {}", query.name),
        ),
        (DeviationKind::NewListener, Some(What::Listener(listener))) => (
            vec![
                fixed("listened on "),
                value(&endpoint(&listener.address, listener.port)),
                qualifiers(&["new"]),
            ],
            format!(
                "listen {} {} {}",
                listener.protocol, listener.address, listener.port
            ),
        ),
        (DeviationKind::NewPrivilegeUse, Some(What::Privilege(privilege))) => {
            let mut parts = vec![fixed("used "), value(&privilege.operation)];
            if !privilege.detail.is_empty() {
                parts.push(fixed(" "));
                parts.push(value(&privilege.detail));
            }
            let words: &[&str] = if privilege.result < 0 {
                &["new", "refused"]
            } else {
                &["new"]
            };
            parts.push(qualifiers(words));
            (
                parts,
                format!("privilege {} {}", privilege.operation, privilege.detail),
            )
        }
        (DeviationKind::Enumeration, Some(What::Enumeration(e))) => (
            vec![
                fixed(format!("touched {} new ", e.distinct)),
                value(&e.dimension),
                fixed(format!(" objects in {} s", e.window_seconds)),
                qualifiers(&["enumeration"]),
            ],
            format!("enumeration {}", e.dimension),
        ),
        (DeviationKind::RateSpike, Some(What::Rate(rate))) => (
            vec![
                value(&rate.dimension),
                fixed(format!(
                    " rate {} per {} s (learnt peak {})",
                    rate.count, rate.window_seconds, rate.learned_peak
                )),
            ],
            format!("rate {}", rate.dimension),
        ),
        (DeviationKind::NewHost, Some(What::Host(host))) => (
            vec![fixed("ran on "), value(host), qualifiers(&["new host"])],
            format!("host {host}"),
        ),
        (DeviationKind::Aggregated, Some(What::Aggregate(aggregate))) => (
            vec![fixed(format!(
                "{} more {} deviations",
                deviation.count.max(1),
                crate::convert::kind_name(aggregate.kind)
            ))],
            format!("aggregate {}", aggregate.kind),
        ),
        // Kinds without a novelty worth a sentence (identity switch, blind spot, cardinality,
        // unusual time) or a novelty that does not match the kind: the kind and the process.
        _ => {
            let mut parts = vec![fixed(crate::convert::kind_name(deviation.kind))];
            if !executable.is_empty() {
                parts.push(fixed(" by "));
                parts.push(value(program(executable)));
            }
            (parts, format!("other {}", deviation.id))
        }
    };
    Step {
        parts,
        deviation_id: deviation.id.clone(),
        key,
    }
}

/// "127.0.0.1:9", "[::1]:443".
fn endpoint(address: &str, port: u32) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use proto::v1::{
        ExecEdge, FileAccess, NetworkDestination, Novelty, Process, Severity, novelty::What,
    };

    use super::*;

    fn d(id: &str, kind: DeviationKind, what: What, signals: &[&str]) -> Deviation {
        Deviation {
            id: id.to_owned(),
            kind: kind.into(),
            severity: Severity::High.into(),
            novelty: Some(Novelty { what: Some(what) }),
            signals: signals.iter().map(|s| (*s).to_owned()).collect(),
            process: Some(Process {
                executable: "/usr/bin/curl".to_owned(),
                ..Process::default()
            }),
            ..Deviation::default()
        }
    }

    fn attack() -> Vec<Deviation> {
        vec![
            d(
                "key",
                DeviationKind::NewFileAccess,
                What::File(FileAccess {
                    path: "/root/.ssh/id_rsa".to_owned(),
                    intent: "read".to_owned(),
                }),
                &["credential"],
            ),
            d(
                "exe",
                DeviationKind::NewExecutable,
                What::Executable("/usr/bin/curl".to_owned()),
                &[],
            ),
            d(
                "edge",
                DeviationKind::NewExecEdge,
                What::ExecEdge(ExecEdge {
                    parent_executable: "/usr/bin/bash".to_owned(),
                    child_executable: "/usr/bin/curl".to_owned(),
                }),
                &[],
            ),
            d(
                "net",
                DeviationKind::NewNetworkDestination,
                What::Destination(NetworkDestination {
                    address: "127.0.0.1".to_owned(),
                    port: 9,
                    protocol: "tcp".to_owned(),
                    dns_name: String::new(),
                }),
                &["no-dns", "after-credential-access"],
            ),
        ]
    }

    #[test]
    fn an_exfiltration_reads_as_one_sentence_in_time_order() {
        let story = Story::tell(&attack());
        assert_eq!(
            story.text(),
            "read ~/.ssh/id_rsa (a credential) → ran curl (new) → connected to 127.0.0.1:9 \
             (new, no DNS)"
        );
        // The exec edge that started the new curl is the same step, told once.
        assert_eq!(story.steps.len(), 3);
        assert_eq!(story.steps[1].deviation_id, "exe");
    }

    #[test]
    fn values_stay_values_and_long_stories_count_the_rest() {
        let hostile = d(
            "x",
            DeviationKind::NewFileAccess,
            What::File(FileAccess {
                path: "/tmp/[a](https://evil.example)\nnext".to_owned(),
                intent: "write|create".to_owned(),
            }),
            &[],
        );
        let story = Story::tell([&hostile]);
        assert_eq!(
            story.steps[0].parts,
            vec![
                Part::Fixed("created ".to_owned()),
                Part::Value("/tmp/[a](https://evil.example)?next".to_owned())
            ]
        );
        let many: Vec<Deviation> = (0..10)
            .map(|i| {
                d(
                    &format!("f{i}"),
                    DeviationKind::NewFileAccess,
                    What::File(FileAccess {
                        path: format!("/etc/f{i}"),
                        intent: "read".to_owned(),
                    }),
                    &[],
                )
            })
            .collect();
        let story = Story::tell(&many);
        assert_eq!(story.steps.len(), MAX_STEPS);
        assert_eq!(story.more, 10 - MAX_STEPS);
        assert!(story.text().ends_with("→ … and 4 more"), "{}", story.text());
    }
}
