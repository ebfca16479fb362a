//! The deviations of a detecting CI run and of a clean one, as an agent sends them: a job that
//! reads an SSH key, runs curl (new, with the 20 libraries it loads as low file accesses) and
//! connects to 127.0.0.1:9 without DNS; and a run with two low git temporary files.

use proto::v1::{
    Deviation, DeviationKind, ExecEdge, FileAccess, FileOperation, NetworkDestination, Novelty,
    Process, Severity, Workload, WorkloadKind, novelty::What,
};

/// The story `collector incidents` tells of [`attack_run`] (its first three steps).
pub const ATTACK_STORY: &str =
    "read ~/.ssh/id_rsa (a credential) → ran curl (new) → connected to 127.0.0.1:9 (new, no DNS)";
/// A path a watched process chose, made to break out of Markdown and HTML.
pub const HOSTILE_PATH: &str = "/tmp/[x](https://evil.example)<img src=x>`|\n# owned";
/// Libraries the new curl loads, each a low deviation.
pub const LIBRARIES: usize = 20;

fn deviation(
    id: String,
    time_ns: i64,
    (workload, run): (&str, &str),
    (kind, severity): (DeviationKind, Severity),
    executable: &str,
    what: What,
    summary: String,
) -> Deviation {
    Deviation {
        id,
        time_unix_nanos: time_ns,
        host: "runner-1".to_owned(),
        workload: Some(Workload {
            id: workload.to_owned(),
            kind: WorkloadKind::GithubJob.into(),
            run_id: run.to_owned(),
        }),
        kind: kind.into(),
        severity: severity.into(),
        summary,
        process: Some(Process {
            pid: 4242,
            ppid: 4200,
            executable: executable.to_owned(),
            ..Process::default()
        }),
        novelty: Some(Novelty { what: Some(what) }),
        incident_id: format!("{run:0>16}"),
        ..Deviation::default()
    }
}

/// The detecting run, starting at `start_ns`: 26 deviations, the highest critical.
pub fn attack_run(workload: &str, run: &str, start_ns: i64) -> Vec<Deviation> {
    let s = 1_000_000_000;
    let id = |name: &str| format!("{run}-{name}");
    let mut key = deviation(
        id("key"),
        start_ns,
        (workload, run),
        (DeviationKind::NewFileAccess, Severity::High),
        "/usr/bin/bash",
        What::File(FileAccess {
            path: "/root/.ssh/id_rsa".to_owned(),
            intent: "read".to_owned(),
        }),
        "new file access /root/.ssh/id_rsa (read) by /usr/bin/bash".to_owned(),
    );
    key.signals = vec!["credential".to_owned()];
    let curl = deviation(
        id("curl"),
        start_ns + s,
        (workload, run),
        (DeviationKind::NewExecutable, Severity::High),
        "/usr/bin/curl",
        What::Executable("/usr/bin/curl".to_owned()),
        "new executable /usr/bin/curl".to_owned(),
    );
    let edge = deviation(
        id("edge"),
        start_ns + s + 1,
        (workload, run),
        (DeviationKind::NewExecEdge, Severity::Medium),
        "/usr/bin/curl",
        What::ExecEdge(ExecEdge {
            parent_executable: "/usr/bin/bash".to_owned(),
            child_executable: "/usr/bin/curl".to_owned(),
        }),
        "new exec edge /usr/bin/bash → /usr/bin/curl".to_owned(),
    );
    let libraries = (0..LIBRARIES).map(|n| {
        let path = format!("/usr/lib/x86_64-linux-gnu/lib{n}.so.1");
        deviation(
            id(&format!("lib{n}")),
            start_ns + s + 2 + n as i64,
            (workload, run),
            (DeviationKind::NewFileAccess, Severity::Low),
            "/usr/bin/curl",
            What::File(FileAccess {
                path: path.clone(),
                intent: "read".to_owned(),
            }),
            format!("new file access {path} (read) by /usr/bin/curl"),
        )
    });
    let mut connect = deviation(
        id("connect"),
        start_ns + 2 * s,
        (workload, run),
        (DeviationKind::NewNetworkDestination, Severity::Critical),
        "/usr/bin/curl",
        What::Destination(NetworkDestination {
            address: "127.0.0.1".to_owned(),
            port: 9,
            protocol: "tcp".to_owned(),
            dns_name: String::new(),
        }),
        "new destination 127.0.0.1:9/tcp by /usr/bin/curl".to_owned(),
    );
    connect.signals = vec!["no-dns".to_owned(), "after-credential-access".to_owned()];
    let hostile = deviation(
        id("hostile"),
        start_ns + 3 * s,
        (workload, run),
        (DeviationKind::NewFileAccess, Severity::Medium),
        "/usr/bin/curl",
        What::File(FileAccess {
            path: HOSTILE_PATH.to_owned(),
            intent: "write|create".to_owned(),
        }),
        format!("new file access {HOSTILE_PATH} (write|create) by /usr/bin/curl"),
    );
    let cleanup = deviation(
        id("cleanup"),
        start_ns + 4 * s,
        (workload, run),
        (DeviationKind::NewFileOperation, Severity::Info),
        "/usr/bin/rm",
        What::FileOperation(FileOperation {
            operation: "unlink".to_owned(),
            path: "/tmp/upload".to_owned(),
            detail: String::new(),
        }),
        "new file operation unlink /tmp/upload by /usr/bin/rm".to_owned(),
    );
    let mut all = vec![key, curl, edge];
    all.extend(libraries);
    all.extend([connect, hostile, cleanup]);
    all
}

/// A clean run after learning: two low deviations (git temporary object files).
pub fn clean_run(workload: &str, run: &str, start_ns: i64) -> Vec<Deviation> {
    (0..2)
        .map(|n| {
            let path = format!("/work/repo/.git/objects/3{n}/tmp_obj_a8Bc{n}Z");
            deviation(
                format!("{run}-git{n}"),
                start_ns + n,
                (workload, run),
                (DeviationKind::NewFileAccess, Severity::Low),
                "/usr/bin/git",
                What::File(FileAccess {
                    path: path.clone(),
                    intent: "write|create".to_owned(),
                }),
                format!("new file access {path} (write|create) by /usr/bin/git"),
            )
        })
        .collect()
}
