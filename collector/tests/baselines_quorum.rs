//! Shared baselines against a lying agent, over real mutual TLS with one certificate per runner:
//! alone it cannot make a runner adopt its baseline; with honest runners its made-up behaviour is
//! never served; dropping its contribution (`collector baselines drop-agent`, the real binary)
//! restores the honest merge; a frozen baseline no longer changes.

mod common;

use std::time::Duration;

use collector::certs::{CertsPlan, create};
use collector::store::Store;
use common::tls::{TlsCollector, client, connect};
use proto::v1::baselines_client::BaselinesClient;
use proto::v1::{Baseline, BaselineDimension, BaselineReport, FetchBaselineRequest};
use tonic::Code;
use tonic::transport::Channel;

const WORKLOAD: &str = "github:acme/app/ci/build";
const EVIL: &str = r#"{"executable":"/tmp/.x/miner"}"#;
const MAKE: &str = r#"{"executable":"/usr/bin/make"}"#;
const BIN: &str = env!("CARGO_BIN_EXE_collector");

fn baseline(runs: &[&str], behaviours: &[&str], mature: bool) -> Baseline {
    Baseline {
        workload_id: WORKLOAD.to_owned(),
        runs: runs.iter().map(|r| r.to_string()).collect(),
        mature,
        dimensions: vec![BaselineDimension {
            name: "executable".to_owned(),
            behaviours: behaviours.iter().map(|b| b.to_string()).collect(),
        }],
        version: 0,
        agents: 0,
        next_page_token: String::new(),
    }
}

async fn as_agent(url: &str, certs: &std::path::Path, who: &str) -> BaselinesClient<Channel> {
    let channel = connect(url, &client(certs, Some(&format!("agent-{who}"))))
        .await
        .unwrap_or_else(|e| panic!("{who} connects: {e}"));
    BaselinesClient::new(channel)
}

async fn report(client: &mut BaselinesClient<Channel>, who: &str, b: Baseline) {
    client
        .report(BaselineReport {
            agent_id: who.to_owned(),
            baseline: Some(b),
        })
        .await
        .unwrap_or_else(|s| panic!("{who}'s report: {s:?}"));
}

/// What a fresh runner learning from 5 runs would adopt: `Err` with the code when refused.
async fn fetch(client: &mut BaselinesClient<Channel>) -> Result<Baseline, Code> {
    client
        .fetch(FetchBaselineRequest {
            workload_id: WORKLOAD.to_owned(),
            agent_id: "fresh".to_owned(),
            learning_runs: 5,
            ..FetchBaselineRequest::default()
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| s.code())
}

fn behaviours(b: &Baseline) -> Vec<String> {
    b.dimensions
        .iter()
        .flat_map(|d| d.behaviours.clone())
        .collect()
}

fn baselines_cli(db: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(BIN)
        .arg("baselines")
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .expect("run collector baselines");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_lying_agent_cannot_poison_what_runners_adopt() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    create(&CertsPlan {
        dir: certs.clone(),
        server_names: vec!["collector.test".to_owned()],
        agents: ["liar", "runner-1", "runner-2", "runner-3", "fresh"]
            .map(str::to_owned)
            .to_vec(),
        query_clients: Vec::new(),
        validity: Duration::from_secs(86_400),
    })
    .expect("certificates");
    let db = dir.path().join("collector.db");
    let server = TlsCollector::start_on(Store::open(&db).unwrap(), &certs).await;
    let url = server.url();
    let mut fresh = as_agent(&url, &certs, "fresh").await;

    // The liar alone: ten made-up runs, "mature", and its miner as normal behaviour.
    let mut liar = as_agent(&url, &certs, "liar").await;
    let runs: Vec<String> = (0..10).map(|i| format!("fake-{i}")).collect();
    let runs: Vec<&str> = runs.iter().map(String::as_str).collect();
    report(&mut liar, "liar", baseline(&runs, &[MAKE, EVIL], true)).await;
    assert_eq!(
        fetch(&mut fresh).await,
        Err(Code::NotFound),
        "one agent is below the quorum of 3: nothing is adopted"
    );

    // Three honest runners, one run each.
    for (n, who) in ["runner-1", "runner-2", "runner-3"].iter().enumerate() {
        let mut honest = as_agent(&url, &certs, who).await;
        let run = format!("{}", n + 1);
        report(&mut honest, who, baseline(&[&run], &[MAKE], false)).await;
    }
    let served = fetch(&mut fresh).await.expect("quorum reached: served");
    assert_eq!(
        behaviours(&served),
        [MAKE],
        "the miner only the liar claims is never served"
    );
    assert_eq!(
        served.runs.len(),
        13,
        "the liar's made-up runs still count..."
    );
    assert!(served.mature, "...and make it look mature for 5 runs");

    // The operator drops the liar: the merge is the honest one again (3 runs, not mature).
    let shown = baselines_cli(&db, &["show", WORKLOAD]);
    assert!(shown.contains("agent liar: 10 runs"), "{shown}");
    let dropped = baselines_cli(&db, &["drop-agent", WORKLOAD, "liar"]);
    assert!(dropped.contains("dropped liar"), "{dropped}");
    let honest = fetch(&mut fresh).await.expect("still three agents");
    assert_eq!(behaviours(&honest), [MAKE]);
    assert_eq!(honest.runs, ["1", "2", "3"]);
    assert!(!honest.mature, "3 honest runs of the 5 needed");
    let merged = Store::open(&db)
        .unwrap()
        .baseline(WORKLOAD)
        .unwrap()
        .unwrap();
    assert!(
        !behaviours(&merged.baseline).contains(&EVIL.to_owned()),
        "the merged baseline no longer holds the liar's behaviour"
    );
    assert_eq!(merged.agent_ids, ["runner-1", "runner-2", "runner-3"]);

    // Frozen: the liar's new report is kept as its contribution but changes nothing served.
    let frozen = baselines_cli(&db, &["freeze", WORKLOAD]);
    assert!(frozen.contains("frozen"), "{frozen}");
    report(&mut liar, "liar", baseline(&["fake-99"], &[EVIL], true)).await;
    assert_eq!(fetch(&mut fresh).await.expect("frozen is served"), honest);
    let listed = baselines_cli(&db, &["list"]);
    assert!(
        listed.contains(&format!("{WORKLOAD}\trunner-1,runner-2,runner-3\t3\t1")),
        "{listed}"
    );
    server.stop().await;
}

/// `baseline_scopes`: a certificate of one team's runner reads and feeds only that team's
/// baselines; another team's, and every baseline for a certificate no scope names, are refused.
#[tokio::test]
async fn an_agent_reads_and_feeds_only_the_baselines_of_its_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let agents = [
        "runner-acme-1",
        "runner-acme-2",
        "runner-acme-3",
        "runner-globex-1",
        "laptop",
    ];
    create(&CertsPlan {
        dir: certs.clone(),
        server_names: vec!["collector.test".to_owned()],
        agents: agents.map(str::to_owned).to_vec(),
        query_clients: Vec::new(),
        validity: Duration::from_secs(86_400),
    })
    .expect("certificates");
    let scopes = [
        "runner-acme-*=github:acme/*".to_owned(),
        "runner-globex-*=github:globex/*".to_owned(),
    ];
    let db = dir.path().join("collector.db");
    let server = TlsCollector::start_scoped(Store::open(&db).unwrap(), &certs, &scopes).await;
    let url = server.url();

    // acme's three runners feed acme's baseline (WORKLOAD is github:acme/...).
    for (n, who) in agents[..3].iter().enumerate() {
        let mut runner = as_agent(&url, &certs, who).await;
        report(
            &mut runner,
            who,
            baseline(&[&n.to_string()], &[MAKE], false),
        )
        .await;
    }
    let mut acme = as_agent(&url, &certs, "runner-acme-1").await;
    assert_eq!(
        behaviours(&fetch(&mut acme).await.expect("acme reads acme's")),
        [MAKE]
    );

    // globex's runner and a certificate no scope names read nothing of acme's, and cannot add to it.
    for who in ["runner-globex-1", "laptop"] {
        let mut other = as_agent(&url, &certs, who).await;
        assert_eq!(
            fetch(&mut other).await,
            Err(Code::PermissionDenied),
            "{who} reads acme's"
        );
        let refused = other
            .report(BaselineReport {
                agent_id: who.to_owned(),
                baseline: Some(baseline(&["x"], &[EVIL], true)),
            })
            .await
            .expect_err("a report outside its scopes");
        assert_eq!(refused.code(), Code::PermissionDenied, "{who}: {refused:?}");
        assert!(refused.message().contains("baseline_scopes"), "{refused:?}");
    }
    let merged = Store::open(&db)
        .unwrap()
        .baseline(WORKLOAD)
        .unwrap()
        .unwrap();
    assert_eq!(
        merged.agent_ids,
        ["runner-acme-1", "runner-acme-2", "runner-acme-3"]
    );
    assert!(!behaviours(&merged.baseline).contains(&EVIL.to_owned()));

    // globex's runner still reads and feeds its own team's workloads.
    let mut globex = as_agent(&url, &certs, "runner-globex-1").await;
    let mut own = baseline(&["1"], &[MAKE], false);
    own.workload_id = "github:globex/api/ci/test".to_owned();
    report(&mut globex, "runner-globex-1", own).await;
    let fetched = globex
        .fetch(FetchBaselineRequest {
            workload_id: "github:globex/api/ci/test".to_owned(),
            agent_id: "runner-globex-1".to_owned(),
            learning_runs: 5,
            ..FetchBaselineRequest::default()
        })
        .await
        .expect_err("in scope, but one agent is below the quorum");
    assert_eq!(fetched.code(), Code::NotFound, "{fetched:?}");
    server.stop().await;
}
