//! `collector report` end to end: the real `collector serve` binary over SQLite, a baseline
//! shared by an agent over gRPC (`Baselines/Report`) and the deviations of a detecting run
//! streamed over gRPC, then the real `collector report` writing the job summary.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::attack::{HOSTILE_PATH, attack_run};
use common::serve::{Serve, collector};
use common::{AgentStream, batch};
use proto::v1::{Baseline, BaselineDimension, BaselineReport, baselines_client::BaselinesClient};

const JOB: &str = "github:acme/app/ci/build";
const YOUNG_JOB: &str = "github:acme/app/ci/lint";

fn now_ns() -> i64 {
    (SystemTime::now() - Duration::from_secs(120))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Shares a baseline of `runs` for `workload`, as an agent does after learning, and streams the
/// detecting run 6 of `JOB`.
fn agent(url: &str, shared: &[(&str, usize)]) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut baselines = BaselinesClient::connect(url.to_owned()).await.unwrap();
        for &(workload, runs) in shared {
            baselines
                .report(BaselineReport {
                    agent_id: "runner-1".to_owned(),
                    baseline: Some(Baseline {
                        workload_id: workload.to_owned(),
                        runs: (1..=runs).map(|r| r.to_string()).collect(),
                        mature: runs >= 5,
                        dimensions: vec![BaselineDimension {
                            name: "executable".to_owned(),
                            behaviours: vec![r#"{"executable":"/usr/bin/make"}"#.to_owned()],
                        }],
                        ..Baseline::default()
                    }),
                })
                .await
                .expect("baseline report");
        }
        let mut stream = AgentStream::open(url).await;
        let ack = stream
            .send(batch("runner-1", 1, attack_run(JOB, "6", now_ns())))
            .await
            .expect("batch stored");
        assert_eq!(ack.stored, 26);
    });
}

/// `markdown` without its code spans: what GitHub would interpret as Markdown.
fn outside_code(markdown: &str) -> String {
    let mut out = String::new();
    let mut rest = markdown;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let fence_len = rest[start..].chars().take_while(|&c| c == '`').count();
        let fence = "`".repeat(fence_len);
        let after = &rest[start + fence_len..];
        let end = after
            .find(&fence)
            .unwrap_or_else(|| panic!("unclosed code span in:\n{markdown}"));
        rest = &after[end + fence_len..];
    }
    out.push_str(rest);
    out
}

#[test]
fn the_markdown_summary_of_a_detecting_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    let serve = Serve::start(db.to_str().unwrap());
    agent(&serve.url, &[(JOB, 5), (YOUNG_JOB, 3)]);
    let report = |workload: &str, run: &str, format: &str| {
        collector(&[
            "report",
            "--server",
            &serve.url,
            "--workload",
            workload,
            "--run",
            run,
            "--format",
            format,
        ])
    };

    let md = report(JOB, "6", "markdown");
    let expect = [
        "### Behaviour sensor: `github:acme/app/ci/build` run `6`\n\n",
        "**CRITICAL — 1 incident, 26 deviations** (1 critical, 2 high, 2 medium, 20 low, 1 info).\n",
        "**Learning:** done. The shared baseline holds 5 runs (from 1 agent); runs are judged \
         against it.\n",
        "#### Incidents\n\n- **CRITICAL** read `~/.ssh/id_rsa` (a credential) → ran `curl` (new) \
         → connected to `127.0.0.1:9` (new, no DNS) → created ``/tmp/[x](https://evil.example)<img src=x>`|?# owned``\n",
        "  - critical new-network-destination: `new destination 127.0.0.1:9/tcp by /usr/bin/curl`\n",
        "  - and 20 low, 1 info not listed\n",
        "#### New destinations\n\n- `127.0.0.1:9` `tcp`, no DNS name, by `/usr/bin/curl` \
         (critical)\n",
        "#### New tools\n\n- `/usr/bin/curl` (new executable) (high)\n\
         - `/usr/bin/curl` started by `/usr/bin/bash` for the first time (medium)\n",
    ];
    for text in expect {
        assert!(md.contains(text), "{text:?} missing in:\n{md}");
    }
    assert!(
        !md.contains("lib0.so.1"),
        "low deviations are counted, not listed:\n{md}"
    );
    // Link-free, whatever the watched processes named: nothing outside code spans is a link,
    // an image, HTML, or a line the hostile path started.
    let plain = outside_code(&md);
    for bad in ["](", "http", "<", "\n# owned", "www."] {
        assert!(
            !plain.contains(bad),
            "{bad:?} outside a code span:\n{plain}"
        );
    }
    assert!(
        md.contains("evil.example"),
        "the hostile path is shown, quoted"
    );
    assert!(!md.contains(HOSTILE_PATH), "its newline is not kept");

    let json: serde_json::Value = serde_json::from_str(&report(JOB, "6", "json")).unwrap();
    assert_eq!(json["learning"]["state"], "judging");
    assert_eq!(json["learning"]["runs"], 5);
    assert_eq!(json["run_learnt"], false);
    assert_eq!(json["max_severity"], "critical");
    assert_eq!(json["by_severity"]["low"], 20);
    assert_eq!(json["incidents"].as_array().unwrap().len(), 1);
    assert_eq!(json["new_destinations"][0]["address"], "127.0.0.1");
    assert_eq!(json["new_destinations"][0]["port"], 9);
    assert_eq!(json["new_tools"][0]["executable"], "/usr/bin/curl");
    assert_eq!(json["new_tools"][1]["parent_executable"], "/usr/bin/bash");

    // A clean run of the same job, a job still learning, and one that shared no baseline.
    let clean = report(JOB, "7", "markdown");
    assert!(
        clean.contains(
            "**Nothing new.** This run did nothing its job's learned behaviour does not hold."
        ) && !clean.contains("#### Incidents"),
        "{clean}"
    );
    let young = report(YOUNG_JOB, "4", "markdown");
    assert!(
        young.contains("**Learning:** in progress, 3 of 5 runs learnt (from 1 agent).")
            && young.contains("not judged yet"),
        "{young}"
    );
    let unknown = report("github:acme/app/ci/other", "1", "markdown");
    assert!(
        unknown.contains("**Learning:** not known to the collector"),
        "{unknown}"
    );
}
