//! The data flow of `lib.rs`, checked on the source: no top-level module imports one that comes
//! after it in the pipeline, no pipeline stage imports the wiring around it, and no two
//! top-level modules import each other, however indirectly.
//!
//! It reads every `crate::<module>` path in each top-level module's files (comments aside), so
//! `use` lines and inline paths both count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The pipeline, in flow order; modules on one line share a stage. `event` is the vocabulary the
/// kernel stage decodes into, so the two share the first stage.
const STAGES: &[&[&str]] = &[
    &["kernel", "event"],
    &["attribute"],
    &["behaviour"],
    &["baseline"],
    &["detect"],
    &["report"],
    &["transport"],
];

/// Modules around the pipeline: they may use any stage, no stage may use them.
const WIRING: &[&str] = &[
    "agent",
    "baseline_cli",
    "baseline_sync",
    "cli",
    "config",
    "install",
    "metrics",
    "status",
    "flow_tests",
    "pipeline_tests",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file of top-level module `name` (its file, or its directory).
fn files(name: &str) -> Vec<PathBuf> {
    let file = src().join(format!("{name}.rs"));
    let mut out = Vec::new();
    if file.is_file() {
        out.push(file);
    }
    let mut dirs = vec![src().join(name)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out
}

/// The top-level modules `lib.rs` declares.
fn modules() -> Vec<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("read lib.rs");
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l
                .strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))?;
            Some(rest.trim_end_matches(';').to_owned())
        })
        .collect()
}

/// The other top-level modules that `text` names as `crate::<module>`, comments skipped.
fn uses(text: &str, known: &[String], me: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name != me && known.contains(&name) {
                out.insert(name);
            }
            // `use crate::{a, b}`: each name in the group.
            if let Some(group) = rest.strip_prefix('{') {
                for part in group.split([',', '}']) {
                    let name = part.trim().split("::").next().unwrap_or("").to_owned();
                    if name != me && known.contains(&name) {
                        out.insert(name);
                    }
                }
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let known = modules();
    known
        .iter()
        .map(|m| {
            let mut used = BTreeSet::new();
            for file in files(m) {
                let text = std::fs::read_to_string(&file).expect("read source");
                used.extend(uses(&text, &known, m));
            }
            (m.clone(), used)
        })
        .collect()
}

fn stage(module: &str) -> Option<usize> {
    STAGES.iter().position(|s| s.contains(&module))
}

/// Every import from a stage to a later stage or to the wiring, as `a -> b`.
fn wrong_way(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for (from, used) in graph {
        let Some(at) = stage(from) else { continue };
        for to in used {
            let later = stage(to).is_some_and(|s| s > at);
            if later || WIRING.contains(&to.as_str()) {
                out.push(format!("{from} -> {to}"));
            }
        }
    }
    out
}

/// A cycle of imports, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

#[test]
fn every_module_is_placed() {
    for m in modules() {
        assert!(
            stage(&m).is_some() || WIRING.contains(&m.as_str()),
            "top-level module `{m}` is neither a pipeline stage nor wiring: place it in \
             flow_tests.rs"
        );
    }
}

#[test]
fn data_flows_one_way() {
    let graph = graph();
    assert!(
        graph["detect"].contains("baseline") && graph["report"].contains("detect"),
        "the check reads the source: {graph:?}"
    );
    assert_eq!(
        wrong_way(&graph),
        Vec::<String>::new(),
        "downstream imports"
    );
    assert_eq!(
        cycle(&graph),
        None,
        "an import cycle between top-level modules"
    );
}

#[test]
fn the_check_fails_on_a_downstream_import_and_a_cycle() {
    let mut graph = graph();
    graph
        .get_mut("baseline")
        .expect("baseline")
        .insert("detect".into());
    assert_eq!(wrong_way(&graph), ["baseline -> detect"]);
    assert_eq!(
        cycle(&graph).map(|c| c.len()),
        Some(3),
        "baseline -> detect -> baseline"
    );
    let known = modules();
    assert_eq!(
        uses(
            "use crate::{event::Event, kernel};\n// crate::agent\nlet x = crate::report::y;",
            &known,
            "me"
        ),
        ["event", "kernel", "report"]
            .map(String::from)
            .into_iter()
            .collect()
    );
}
