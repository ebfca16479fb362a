//! `sensor baseline ...`: inspect, export, import, diff and change the baselines of a state
//! directory, safely while an agent runs on it (see `baseline::requests`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde_json::{Value, json};

use crate::baseline::export::Export;
use crate::baseline::ops::{self, Operation, Stored};
use crate::baseline::version::{self, DimensionDiff};
use crate::baseline::{Behaviour, Dimension, requests};

#[derive(Debug, clap::Args)]
pub struct BaselineArgs {
    /// The state directory of the sensor whose baselines to use.
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/sensor",
        env = "SENSOR_STATE_DIR"
    )]
    pub state_dir: PathBuf,
    #[command(subcommand)]
    pub command: BaselineCommand,
}

#[derive(Debug, Subcommand)]
pub enum BaselineCommand {
    /// Every workload's baseline: learning state, runs learnt from, age, size, version.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// One workload's baseline: every behaviour by dimension, and its recent changes.
    Show {
        workload: String,
        #[arg(long)]
        json: bool,
    },
    /// Writes a workload's baseline as stable JSON (with its version) to stdout or a file.
    Export {
        workload: String,
        /// Write here instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Replaces a workload's baseline with an export (checked first; unknown format versions
    /// are refused).
    Import {
        file: PathBuf,
        /// Import under this workload id instead of the one in the file.
        #[arg(long = "as", value_name = "WORKLOAD")]
        as_workload: Option<String>,
    },
    /// What B has that A has not (added) and the reverse (removed), per dimension. A and B are
    /// each a workload (its current baseline), WORKLOAD@VERSION, or an exported file.
    Diff {
        a: String,
        b: String,
        #[arg(long)]
        json: bool,
    },
    /// Adds a deviation's behaviour to its workload's baseline: by deviation id, or with
    /// `--workload` and `--behaviour` (JSON as in an export, e.g.
    /// '{"executable":"/usr/bin/id"}').
    Accept {
        /// The id of a recently reported deviation.
        #[arg(required_unless_present = "workload", conflicts_with = "workload")]
        deviation: Option<String>,
        #[arg(long, requires = "behaviours")]
        workload: Option<String>,
        /// A behaviour as JSON (repeatable).
        #[arg(long = "behaviour", value_name = "JSON", requires = "workload")]
        behaviours: Vec<String>,
    },
    /// Forgets a workload's baseline: it learns afresh.
    Reset { workload: String },
    /// Stops a workload learning: nothing is added, every event is judged and reported.
    Freeze { workload: String },
    /// Lets a frozen workload learn again (if it is still in its learning runs or period).
    Unfreeze { workload: String },
}

/// Runs one `sensor baseline` command, printing its result.
pub fn run(args: &BaselineArgs) -> Result<(), String> {
    let state = &args.state_dir;
    if !state.is_dir() {
        return Err(format!(
            "no state directory {}: pass the --state-dir of the sensor (or set state_dir in its \
             config)",
            state.display()
        ));
    }
    let e = |e: &dyn std::fmt::Display| e.to_string();
    match &args.command {
        BaselineCommand::List { json } => {
            let all = ops::list(state).map_err(|x| e(&x))?;
            if *json {
                for s in &all {
                    println!("{}", summary_json(s));
                }
            } else {
                print!("{}", list_table(&all));
            }
        }
        BaselineCommand::Show { workload, json } => {
            let s = ops::load(state, workload).map_err(|x| e(&x))?;
            if *json {
                println!("{}", show_json(&s));
            } else {
                print!("{}", show_text(&s));
            }
        }
        BaselineCommand::Export { workload, output } => {
            let s = ops::load(state, workload).map_err(|x| e(&x))?;
            let mut text = serde_json::to_string_pretty(&s.export()).map_err(|x| e(&x))?;
            text.push('\n');
            match output {
                Some(path) => {
                    write_atomically(path, text.as_bytes())
                        .map_err(|x| format!("cannot write {}: {x}", path.display()))?;
                    eprintln!(
                        "exported {} (version {}, {} behaviours) to {}",
                        s.workload,
                        s.version,
                        s.behaviours().len(),
                        path.display()
                    );
                }
                None => print!("{text}"),
            }
        }
        BaselineCommand::Import { file, as_workload } => {
            let text =
                std::fs::read(file).map_err(|x| format!("cannot read {}: {x}", file.display()))?;
            let mut export =
                Export::parse(&text).map_err(|x| format!("{}: {x}", file.display()))?;
            if let Some(w) = as_workload {
                export.workload.clone_from(w);
            }
            report(requests::perform(state, Operation::Import { export }))?;
        }
        BaselineCommand::Diff { a, b, json } => {
            let (la, sa) = resolve(state, a)?;
            let (lb, sb) = resolve(state, b)?;
            let d = version::diff(&sa, &sb);
            if *json {
                println!("{}", diff_json(&la, &lb, &d));
            } else {
                print!("{}", diff_text(&la, &lb, &d));
            }
        }
        BaselineCommand::Accept {
            deviation,
            workload,
            behaviours,
        } => {
            let op = match (deviation, workload) {
                (Some(id), _) => Operation::AcceptDeviation { id: id.clone() },
                (None, Some(workload)) => Operation::Accept {
                    workload: workload.clone(),
                    behaviours: behaviours
                        .iter()
                        .map(|b| parse_behaviour(b))
                        .collect::<Result<_, _>>()?,
                },
                (None, None) => return Err("give a deviation id, or --workload".into()),
            };
            report(requests::perform(state, op))?;
        }
        BaselineCommand::Reset { workload } => report(requests::perform(
            state,
            Operation::Reset {
                workload: workload.clone(),
            },
        ))?,
        BaselineCommand::Freeze { workload } => report(requests::perform(
            state,
            Operation::Freeze {
                workload: workload.clone(),
            },
        ))?,
        BaselineCommand::Unfreeze { workload } => report(requests::perform(
            state,
            Operation::Unfreeze {
                workload: workload.clone(),
            },
        ))?,
    }
    Ok(())
}

fn report(result: Result<ops::Applied, ops::OpsError>) -> Result<(), String> {
    let applied = result.map_err(|e| e.to_string())?;
    println!(
        "{}: {} (version {})",
        applied.workload, applied.message, applied.version
    );
    Ok(())
}

fn parse_behaviour(text: &str) -> Result<Behaviour, String> {
    serde_json::from_str(text).map_err(|e| {
        format!(
            "invalid --behaviour {text:?} ({e}); write it as in an export, e.g. \
             '{{\"executable\":\"/usr/bin/id\"}}' or \
             '{{\"file\":{{\"path\":\"/etc/shadow\",\"intent\":\"read\"}}}}'"
        )
    })
}

/// A diff operand: an exported (or baseline) file, `workload@version`, or a workload.
fn resolve(state: &Path, spec: &str) -> Result<(String, BTreeSet<Behaviour>), String> {
    let path = Path::new(spec);
    if path.is_file() {
        let text =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        return match Export::parse(&text) {
            Ok(export) => Ok((
                format!("{spec} ({}@{})", export.workload, export.version),
                export.behaviour_set(),
            )),
            Err(crate::baseline::export::ImportError::NotAnExport(_)) => {
                let s = ops::open_file(path).map_err(|e| e.to_string())?;
                Ok((
                    format!("{spec} ({}@{})", s.workload, s.version),
                    s.behaviours().clone(),
                ))
            }
            Err(e) => Err(format!("{spec}: {e}")),
        };
    }
    let (workload, version) = match ops::load(state, spec) {
        Ok(s) => (s, None),
        Err(not_found) => match spec.rsplit_once('@') {
            Some((w, v)) if v.parse::<u64>().is_ok() => (
                ops::load(state, w).map_err(|e| e.to_string())?,
                v.parse().ok(),
            ),
            _ => return Err(not_found.to_string()),
        },
    };
    let set = workload.behaviours_at(version).map_err(|e| e.to_string())?;
    let label = format!(
        "{}@{}",
        workload.workload,
        version.unwrap_or(workload.version)
    );
    Ok((label, set))
}

/// A behaviour for people: its JSON without the kind, `key=value` for structured ones.
pub fn describe(b: &Behaviour) -> String {
    let value = serde_json::to_value(b).unwrap_or(Value::Null);
    let inner = value
        .as_object()
        .and_then(|o| o.values().next())
        .cloned()
        .unwrap_or(value);
    match inner {
        Value::String(s) => s,
        Value::Object(fields) => fields
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

fn by_dimension<'a>(
    behaviours: impl IntoIterator<Item = &'a Behaviour>,
) -> std::collections::BTreeMap<Dimension, Vec<&'a Behaviour>> {
    let mut out: std::collections::BTreeMap<Dimension, Vec<&Behaviour>> = Default::default();
    for b in behaviours {
        out.entry(b.dimension()).or_default().push(b);
    }
    out
}

fn age(s: &Stored) -> String {
    let Some(first) = s.first_seen_unix_nanos() else {
        return "-".into();
    };
    let now = crate::event::unix_nanos(std::time::SystemTime::now());
    let secs = u64::try_from(now.saturating_sub(first) / 1_000_000_000).unwrap_or(0);
    // Minutes are precise enough for an age.
    let rounded = if secs >= 60 { secs - secs % 60 } else { secs };
    humantime::format_duration(std::time::Duration::from_secs(rounded)).to_string()
}

fn size(bytes: u64) -> String {
    if bytes >= 1024 * 1024 {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    } else if bytes >= 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

fn summary_json(s: &Stored) -> Value {
    json!({
        "workload": s.workload,
        "state": s.state(),
        "frozen": s.frozen(),
        "runs": s.runs(),
        "first_seen_unix_nanos": s.first_seen_unix_nanos(),
        "behaviours": s.behaviours().len(),
        "bytes": s.bytes,
        "version": s.version,
    })
}

fn list_table(all: &[Stored]) -> String {
    if all.is_empty() {
        return "no baselines\n".into();
    }
    let rows: Vec<[String; 7]> = all
        .iter()
        .map(|s| {
            [
                s.workload.clone(),
                s.state().into(),
                s.runs().to_string(),
                age(s),
                s.behaviours().len().to_string(),
                size(s.bytes),
                s.version.to_string(),
            ]
        })
        .collect();
    let header = [
        "WORKLOAD",
        "STATE",
        "RUNS",
        "AGE",
        "BEHAVIOURS",
        "SIZE",
        "VERSION",
    ]
    .map(String::from);
    table(&header, &rows)
}

fn table<const N: usize>(header: &[String; N], rows: &[[String; N]]) -> String {
    let mut widths = header.each_ref().map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Changes shown by `show`.
const SHOWN_CHANGES: usize = 10;

fn show_json(s: &Stored) -> Value {
    let mut v = summary_json(s);
    let dims: serde_json::Map<String, Value> = by_dimension(s.behaviours())
        .into_iter()
        .map(|(d, bs)| (d.as_str().to_owned(), json!(bs)))
        .collect();
    v["dimensions"] = Value::Object(dims);
    let changes = s.changes();
    let recent = &changes[changes.len().saturating_sub(SHOWN_CHANGES)..];
    v["changes"] = recent
        .iter()
        .map(|c| {
            json!({"version": c.version, "unix_nanos": c.unix_nanos, "reason": c.reason,
                   "added": c.added.len(), "removed": c.removed.len(), "frozen": c.frozen})
        })
        .collect();
    v
}

fn show_text(s: &Stored) -> String {
    let mut out = format!(
        "{}: {}, version {}, {} runs learnt from, age {}, {} behaviours, {} on disk\n",
        s.workload,
        s.state(),
        s.version,
        s.runs(),
        age(s),
        s.behaviours().len(),
        size(s.bytes)
    );
    for (d, bs) in by_dimension(s.behaviours()) {
        out.push_str(&format!("\n{} ({}):\n", d.plural(), bs.len()));
        for b in bs {
            out.push_str(&format!("  {}\n", describe(b)));
        }
    }
    let changes = s.changes();
    if !changes.is_empty() {
        out.push_str("\nrecent changes:\n");
        let rows: Vec<[String; 4]> = changes[changes.len().saturating_sub(SHOWN_CHANGES)..]
            .iter()
            .map(|c| {
                let when = humantime::format_rfc3339_seconds(ops_time(c.unix_nanos)).to_string();
                let mut what = format!("+{} -{}", c.added.len(), c.removed.len());
                if let Some(f) = c.frozen {
                    what.push_str(if f { " frozen" } else { " unfrozen" });
                }
                [c.version.to_string(), when, c.reason.clone(), what]
            })
            .collect();
        let header = ["VERSION", "TIME", "REASON", "CHANGE"].map(String::from);
        out.push_str(&table(&header, &rows));
    }
    out
}

fn ops_time(nanos: i64) -> std::time::SystemTime {
    std::time::SystemTime::UNIX_EPOCH
        + std::time::Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
}

fn diff_json(a: &str, b: &str, d: &std::collections::BTreeMap<Dimension, DimensionDiff>) -> Value {
    let dims: serde_json::Map<String, Value> = d
        .iter()
        .map(|(dim, diff)| (dim.as_str().to_owned(), json!(diff)))
        .collect();
    json!({"a": a, "b": b, "dimensions": dims})
}

fn diff_text(a: &str, b: &str, d: &std::collections::BTreeMap<Dimension, DimensionDiff>) -> String {
    if d.is_empty() {
        return format!("{a} and {b} hold the same behaviours\n");
    }
    let mut out = format!("from {a} to {b}:\n");
    for (dim, diff) in d {
        out.push_str(&format!(
            "\n{} (+{} -{}):\n",
            dim.plural(),
            diff.added.len(),
            diff.removed.len()
        ));
        for b in &diff.added {
            out.push_str(&format!("  + {}\n", describe(b)));
        }
        for b in &diff.removed {
            out.push_str(&format!("  - {}\n", describe(b)));
        }
    }
    out
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_behaviours_compactly() {
        assert_eq!(
            describe(&Behaviour::Executable("/bin/sh".into())),
            "/bin/sh"
        );
        let f = Behaviour::File {
            path: "/etc/hosts".into(),
            intent: "read".parse().expect("intent"),
        };
        assert_eq!(describe(&f), "intent=read path=/etc/hosts");
    }

    #[test]
    fn diff_names_workload_versions_and_files() {
        let state = tempfile::tempdir().unwrap();
        let w = "github:a/b/ci/build";
        let exe = |p: &str| Behaviour::Executable(p.into());
        for p in ["/bin/a", "/bin/b"] {
            requests::perform(
                state.path(),
                Operation::Accept {
                    workload: w.into(),
                    behaviours: vec![exe(p)],
                },
            )
            .unwrap();
        }
        let (label, v1) = resolve(state.path(), &format!("{w}@1")).unwrap();
        assert_eq!(label, format!("{w}@1"));
        let (_, now) = resolve(state.path(), w).unwrap();
        let d = version::diff(&v1, &now);
        assert_eq!(d[&Dimension::Executable].added, [exe("/bin/b")]);
        let text = diff_text("a", "b", &d);
        assert!(
            text.contains("executables (+1 -0)") && text.contains("+ /bin/b"),
            "{text}"
        );

        let file = state.path().join("x.json");
        let s = ops::load(state.path(), w).unwrap();
        std::fs::write(&file, serde_json::to_vec(&s.export()).unwrap()).unwrap();
        let (_, from_file) = resolve(state.path(), file.to_str().unwrap()).unwrap();
        assert_eq!(from_file, now);
        assert!(resolve(state.path(), "nope@3").is_err());
        let listed = list_table(&ops::list(state.path()).unwrap());
        assert!(
            listed.starts_with("WORKLOAD") && listed.contains(w),
            "{listed}"
        );
    }
}
