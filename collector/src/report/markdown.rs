//! The job summary as plain Markdown, link-free, to append to `$GITHUB_STEP_SUMMARY`.
//!
//! Every value that came from an agent (paths, names, addresses, summaries: all of them under a
//! watched process's control) is written inside a code span ([`code`]), where Markdown makes no
//! link, image, emphasis or HTML, and whose fence is longer than any run of backticks in the
//! value, so it cannot close early. Control characters become `?`, so a file name cannot start a
//! new line (a heading, a list item). Lists are capped so a flood of deviations keeps the summary
//! short (GitHub takes at most 1 MiB per step).

use std::fmt::Write as _;
use std::time::SystemTime;

use proto::v1::{Deviation, Severity, novelty::What};

use super::{Learning, Report};
use crate::convert::{kind_name, severity_name};
use crate::incidents::story::{ARROW, Part, Story};
use crate::incidents::{Incident, severity, shown_by_default};

/// Incidents listed; the rest are counted.
pub const MAX_INCIDENTS: usize = 10;
/// Deviations listed beneath one incident, destinations and tools listed.
pub const MAX_LISTED: usize = 20;
/// Characters of one value kept.
const MAX_VALUE_CHARS: usize = 160;

/// `text` as an inline code span, safe whatever it holds.
pub fn code(text: &str) -> String {
    let mut clean: String = text
        .chars()
        .take(MAX_VALUE_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(MAX_VALUE_CHARS).is_some() {
        clean.push('…');
    }
    if clean.trim().is_empty() {
        return "(empty)".to_owned();
    }
    let mut longest = 0;
    let mut current = 0;
    for c in clean.chars() {
        current = if c == '`' { current + 1 } else { 0 };
        longest = longest.max(current);
    }
    let fence = "`".repeat(longest + 1);
    // A space on each side, which Markdown removes, lets the value start or end with a backtick.
    let pad = if clean.starts_with('`') || clean.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{clean}{pad}{fence}")
}

/// The story with its values in code spans.
pub fn story(story: &Story) -> String {
    let mut text = story
        .steps
        .iter()
        .map(|step| {
            step.parts
                .iter()
                .map(|part| match part {
                    Part::Fixed(words) => words.clone(),
                    Part::Value(value) => code(value),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(ARROW);
    if story.more > 0 {
        let _ = write!(text, "{ARROW}… and {} more", story.more);
    }
    text
}

fn upper(severity: Severity) -> String {
    severity_name(severity.into()).to_uppercase()
}

/// The run's job summary.
pub fn render(report: &Report, now: SystemTime) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### Behaviour sensor: {} run {}\n",
        code(&report.workload_id),
        code(&report.run_id)
    );
    verdict(&mut md, report);
    learning(&mut md, report);
    incidents(&mut md, report);
    destinations(&mut md, report);
    tools(&mut md, report);
    let _ = writeln!(
        md,
        "Written by `collector report` at {} UTC.",
        humantime::format_rfc3339_seconds(now)
            .to_string()
            .replace('T', " ")
            .trim_end_matches('Z')
    );
    md
}

fn verdict(md: &mut String, report: &Report) {
    let deviations = report.deviations().len();
    if deviations == 0 {
        let why = match report.learning {
            Learning::Learning { .. } => {
                "This run is not judged yet: the sensor is still learning this job."
            }
            _ => "This run did nothing its job's learned behaviour does not hold.",
        };
        let _ = writeln!(md, "**Nothing new.** {why}\n");
        return;
    }
    let incidents = report.incidents.len();
    let counts: Vec<String> = report
        .by_severity()
        .iter()
        .map(|(s, n)| format!("{n} {}", severity_name((*s).into())))
        .collect();
    let _ = writeln!(
        md,
        "**{} — {incidents} incident{}, {deviations} deviation{}** ({}).\n",
        upper(report.max_severity()),
        if incidents == 1 { "" } else { "s" },
        if deviations == 1 { "" } else { "s" },
        counts.join(", ")
    );
}

fn learning(md: &mut String, report: &Report) {
    let learnt = if report.run_learnt {
        " This run is one of the runs it was learnt from."
    } else {
        ""
    };
    let text = match &report.learning {
        Learning::Judging { runs, agents } => format!(
            "done. The shared baseline holds {runs} run{} (from {agents} agent{}); runs are \
             judged against it.{learnt}",
            plural(*runs),
            plural(*agents as usize),
        ),
        Learning::Learning {
            runs,
            learning_runs,
            agents,
        } => format!(
            "in progress, {runs} of {learning_runs} runs learnt (from {agents} agent{}). \
             Deviations are reported once learning is done.{learnt}",
            plural(*agents as usize),
        ),
        Learning::NotShared => "not known to the collector: no agent shared a baseline for this \
             workload (the runner's `sensor status` shows it). An agent reports deviations only \
             once it has learnt a workload."
            .to_owned(),
        Learning::Unknown(reason) => format!(
            "unknown: the collector did not show the baseline ({}).",
            code(reason)
        ),
    };
    let _ = writeln!(md, "**Learning:** {text}\n");
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn incidents(md: &mut String, report: &Report) {
    if report.incidents.is_empty() {
        return;
    }
    let _ = writeln!(md, "#### Incidents\n");
    for incident in report.incidents.iter().take(MAX_INCIDENTS) {
        incident_item(md, incident);
    }
    if report.incidents.len() > MAX_INCIDENTS {
        let _ = writeln!(
            md,
            "- … and {} more incidents (`collector incidents --workload …` lists them)",
            report.incidents.len() - MAX_INCIDENTS
        );
    }
    md.push('\n');
}

fn incident_item(md: &mut String, incident: &Incident) {
    let _ = writeln!(
        md,
        "- **{}** {}",
        upper(incident.max_severity),
        story(&incident.story())
    );
    let shown: Vec<&Deviation> = incident
        .deviations()
        .filter(|d| shown_by_default(d))
        .collect();
    for deviation in shown.iter().take(MAX_LISTED) {
        let _ = writeln!(
            md,
            "  - {} {}: {}",
            severity_name(severity(deviation).into()),
            kind_name(deviation.kind),
            code(&deviation.summary)
        );
    }
    if shown.len() > MAX_LISTED {
        let _ = writeln!(md, "  - … and {} more", shown.len() - MAX_LISTED);
    }
    let collapsed = incident.collapsed();
    if collapsed.total() > 0 {
        let _ = writeln!(
            md,
            "  - and {} low, {} info not listed",
            collapsed.low, collapsed.info
        );
    }
}

fn destinations(md: &mut String, report: &Report) {
    let all = report.destinations();
    if all.is_empty() {
        return;
    }
    let _ = writeln!(md, "#### New destinations\n");
    for d in all.iter().take(MAX_LISTED) {
        let what = match d.novelty.as_ref().and_then(|n| n.what.as_ref()) {
            Some(What::Destination(dest)) => {
                let name = if dest.dns_name.is_empty() {
                    "no DNS name".to_owned()
                } else {
                    format!("resolved from {}", code(&dest.dns_name))
                };
                format!(
                    "{} {}, {name}",
                    code(&format!("{}:{}", dest.address, dest.port)),
                    code(&dest.protocol)
                )
            }
            Some(What::Dns(query)) => {
                format!("DNS name {} ({})", code(&query.name), code(&query.r#type))
            }
            _ => kind_name(d.kind).to_owned(),
        };
        let _ = writeln!(md, "- {what}, by {} ({})", by(d), severity_name(d.severity));
    }
    more(md, all.len());
}

fn tools(md: &mut String, report: &Report) {
    let all = report.tools();
    if all.is_empty() {
        return;
    }
    let _ = writeln!(md, "#### New tools\n");
    for d in all.iter().take(MAX_LISTED) {
        let what = match d.novelty.as_ref().and_then(|n| n.what.as_ref()) {
            Some(What::Executable(path)) => format!("{} (new executable)", code(path)),
            Some(What::ExecEdge(edge)) => format!(
                "{} started by {} for the first time",
                code(&edge.child_executable),
                code(&edge.parent_executable)
            ),
            _ => format!("{} ({})", code(by_path(d)), kind_name(d.kind)),
        };
        let _ = writeln!(md, "- {what} ({})", severity_name(d.severity));
    }
    more(md, all.len());
}

fn by_path(d: &Deviation) -> &str {
    d.process.as_ref().map_or("", |p| p.executable.as_str())
}

fn by(d: &Deviation) -> String {
    code(by_path(d))
}

fn more(md: &mut String, total: usize) {
    if total > MAX_LISTED {
        let _ = writeln!(md, "- … and {} more", total - MAX_LISTED);
    }
    md.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cannot_leave_their_code_span() {
        assert_eq!(code("/usr/bin/curl"), "`/usr/bin/curl`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`x``"), "``` `x`` ```");
        assert_eq!(code("[x](https://e)\n# h"), "`[x](https://e)?# h`");
        assert_eq!(code(""), "(empty)");
        assert!(code(&"a".repeat(500)).chars().count() < 170);
    }
}
