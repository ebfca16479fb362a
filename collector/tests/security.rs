//! The collector's security over real TLS sockets, with certificates made by `collector certs`'
//! code: who is refused, who may send as whom, who may query; health and reflection; plain text
//! off loopback; the web API's token off loopback. Hostile messages are in `hostile.rs`.

mod common;

use std::sync::Arc;

use collector::credentials::ClientArgs;
use collector::metrics::Metrics;
use collector::query::{QueryError, list_with};
use collector::server::{Security, SecuritySettings};
use collector::store::Store;
use common::temp_db;
use common::tls::{Agent, TOKEN, TlsCollector, client, connect, deployment, one, stored};
use proto::v1::ListDeviationsRequest;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Code;

const DEADLINE: std::time::Duration = common::tls::DEADLINE;

/// How an agent with `credentials` is refused: at the handshake, opening its stream, or at its
/// first batch. Panics if the batch is acknowledged.
async fn refusal(url: &str, credentials: &ClientArgs) -> String {
    let channel = match connect(url, credentials).await {
        Err(e) => return e,
        Ok(channel) => channel,
    };
    let mut agent = match Agent::open(channel).await {
        Err(status) => return format!("{status:?}"),
        Ok(agent) => agent,
    };
    match agent.send(one("intruder", "agent-a", 1)).await {
        Err(status) => format!("{status:?}"),
        Ok(ack) => panic!("acknowledged: {ack:?}"),
    }
}

#[tokio::test]
async fn a_client_without_a_valid_certificate_is_refused() {
    let (dir, db) = temp_db();
    let certs = deployment(dir.path());
    let server = TlsCollector::start(&db, &certs).await;

    // No client certificate: TLS 1.3 lets the client finish its side of the handshake; the
    // server's alert arrives with the first call.
    let refused = refusal(&server.url(), &client(&certs, None)).await;
    assert!(refused.contains("CertificateRequired"), "{refused}");

    // A certificate for the same name from another deployment's CA.
    let other = deployment(&dir.path().join("other"));
    let foreign = ClientArgs {
        server_ca: Some(certs.join("ca.pem")),
        ..client(&other, Some("agent-agent-a"))
    };
    let refused = refusal(&server.url(), &foreign).await;
    assert!(refused.contains("UnknownCA"), "{refused}");

    // And an agent refuses a collector whose certificate another CA signed.
    let distrusting = client(&other, Some("agent-agent-a"));
    let refused = refusal(&server.url(), &distrusting).await;
    assert!(refused.contains("UnknownIssuer"), "{refused}");

    assert!(stored(&server.url(), &certs).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn an_agent_cannot_claim_another_identity_and_is_stored_under_its_own() {
    let (dir, db) = temp_db();
    let certs = deployment(dir.path());
    let server = TlsCollector::start(&db, &certs).await;
    let channel = connect(&server.url(), &client(&certs, Some("agent-agent-a")))
        .await
        .expect("agent-a connects");

    let mut agent = Agent::open(channel.clone()).await.expect("stream opens");
    let status = agent.send(one("forged", "agent-b", 1)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("\"agent-b\"") && status.message().contains("\"agent-a\""),
        "names both identities: {}",
        status.message()
    );
    assert!(
        status.metadata().get("sensor-rejected-sequence").is_none(),
        "not a bad batch to drop: the agent keeps it until its identity is fixed"
    );

    let mut agent = Agent::open(channel).await.expect("stream reopens");
    let ack = agent.send(one("honest", "agent-a", 1)).await.expect("ack");
    assert_eq!((ack.sequence, ack.stored), (1, 1));
    assert_eq!(
        stored(&server.url(), &certs).await,
        [("agent-a".to_owned(), "honest".to_owned())],
        "only the honest batch, under the certificate's identity"
    );

    // A query client's certificate may not send deviations at all.
    let ops = connect(&server.url(), &client(&certs, Some("query-ops")))
        .await
        .expect("ops connects");
    let status = match Agent::open(ops).await {
        Err(status) => status,
        Ok(mut agent) => agent.send(one("ops", "ops", 1)).await.unwrap_err(),
    };
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(stored(&server.url(), &certs).await.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn the_query_api_refuses_an_unauthenticated_caller() {
    let (dir, db) = temp_db();
    let certs = deployment(dir.path());
    let server = TlsCollector::start(&db, &certs).await;
    let url = server.url();
    let code = |result: Result<_, QueryError>| match result {
        Ok(_) => Code::Ok,
        Err(QueryError::Status { status, .. }) => status.code(),
        Err(other) => panic!("unexpected error: {other}"),
    };
    let request = ListDeviationsRequest::default;

    // An agent's certificate without a token, or with a wrong one.
    let agent = client(&certs, Some("agent-agent-a"));
    let result = list_with(&url, request(), &agent).await;
    let Err(QueryError::Status { status, .. }) = &result else {
        panic!("expected a refusal, got {result:?}");
    };
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("query_clients"), "{status:?}");
    let wrong = ClientArgs {
        token: Some("guess".to_owned()),
        ..agent.clone()
    };
    assert_eq!(
        code(list_with(&url, request(), &wrong).await),
        Code::Unauthenticated
    );

    // The token, or a query client's certificate, is enough.
    let with_token = ClientArgs {
        token: Some(TOKEN.to_owned()),
        ..agent
    };
    assert_eq!(
        code(list_with(&url, request(), &with_token).await),
        Code::Ok
    );
    let ops = client(&certs, Some("query-ops"));
    assert_eq!(code(list_with(&url, request(), &ops).await), Code::Ok);
    server.stop().await;
}

#[tokio::test]
async fn health_and_reflection_answer_stock_clients_over_mtls() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    let (dir, db) = temp_db();
    let certs = deployment(dir.path());
    let server = TlsCollector::start(&db, &certs).await;
    let channel = connect(&server.url(), &client(&certs, Some("agent-agent-b")))
        .await
        .expect("connects");
    let mut health = HealthClient::new(channel.clone());
    for service in [
        "",
        "sensor.v1.Ingest",
        "sensor.v1.Query",
        "sensor.v1.Baselines",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap_or_else(|e| panic!("check {service:?}: {e}"))
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "sensor.v1.Ingest".to_owned(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.unwrap().expect("first status");
    assert_eq!(first.status(), ServingStatus::Serving);

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers.message().await.unwrap().expect("an answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("expected a service list, got {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "sensor.v1.Ingest",
        "sensor.v1.Query",
        "sensor.v1.Baselines",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }

    // Shutting down, the collector tells its watchers first.
    server.shutdown.cancel();
    let next = tokio::time::timeout(DEADLINE, watch.message())
        .await
        .expect("a status in time");
    if let Ok(Some(next)) = next {
        assert_eq!(next.status(), ServingStatus::NotServing);
    } else {
        panic!("expected NOT_SERVING before the stream ends, got {next:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn plaintext_is_refused_off_loopback_and_allowed_on_it() {
    let settings = SecuritySettings::default();
    let e = Security::load(&settings, "0.0.0.0:50051".parse().unwrap())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("refusing to serve plain text on 0.0.0.0:50051") && e.contains("tls_cert"),
        "{e}"
    );
    let loopback = Security::load(&settings, "127.0.0.1:50051".parse().unwrap()).unwrap();
    assert!(loopback.tls.is_none());
    assert!(loopback.access.queries_open());
}

#[tokio::test]
async fn baseline_scopes_need_tls_and_a_valid_shape() {
    let loopback = "127.0.0.1:50051".parse().unwrap();
    let scoped = |scope: &str| SecuritySettings {
        baseline_scopes: vec![scope.to_owned()],
        ..SecuritySettings::default()
    };
    let e = Security::load(&scoped("runner-*=github:acme/*"), loopback)
        .err()
        .expect("scopes without TLS are refused")
        .to_string();
    assert!(e.contains("baseline_scopes is set but TLS is not"), "{e}");
    let e = Security::load(&scoped("github:acme/*"), loopback)
        .err()
        .expect("a scope without AGENTS= is refused")
        .to_string();
    assert!(e.contains("AGENTS=WORKLOAD"), "{e}");
}

#[tokio::test]
async fn the_web_api_needs_the_token_off_loopback() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let (dir, db) = temp_db();
    let token_file = dir.path().join("tokens");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let store = Arc::new(Store::open(&db).unwrap());
    let metrics = Arc::new(Metrics::new());
    let any: std::net::IpAddr = "0.0.0.0".parse().unwrap();
    let open = collector::auth::Access::default();
    assert!(
        collector::web::Web::new(Arc::clone(&store), Arc::clone(&metrics), any)
            .with_access(Arc::new(open))
            .is_err(),
        "an open API off loopback is refused"
    );
    let access = collector::auth::Access::new(
        false,
        collector::auth::read_tokens(&token_file).unwrap(),
        [],
    );
    let web = collector::web::Web::new(store, metrics, any)
        .with_access(Arc::new(access))
        .unwrap();
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cancel = CancellationToken::new();
    tokio::spawn(collector::web::serve(
        listener,
        Arc::new(web),
        cancel.clone(),
    ));
    let get = async |path: &str, auth: Option<&str>| {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        let head = format!("GET {path} HTTP/1.1\r\nHost: collector.example\r\n{auth}\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer.lines().next().unwrap_or_default().to_owned()
    };
    assert!(get("/api/deviations", None).await.contains(" 401 "));
    assert!(
        get("/api/deviations", Some("Bearer wrong"))
            .await
            .contains(" 401 ")
    );
    assert!(
        get("/api/deviations", Some(&format!("Bearer {TOKEN}")))
            .await
            .contains(" 200 ")
    );
    assert!(get("/", None).await.contains(" 200 "), "the page itself");
    cancel.cancel();
}

/// Agent B (a stolen runner certificate) knows the id agent A will give a real attack and sends it
/// first; then A reports the attack. A's row must still be stored, B's stays B's, and B cannot file
/// a row under A's host. Run over real mTLS on both SQLite and PostgreSQL.
async fn no_agent_can_pre_empt_or_overwrite_another(store: Store, certs: &std::path::Path) {
    let server = TlsCollector::start_on(store, certs).await;
    let url = server.url();
    let as_agent = async |who: &str| {
        let channel = connect(&url, &client(certs, Some(&format!("agent-{who}"))))
            .await
            .unwrap_or_else(|e| panic!("{who} connects: {e}"));
        Agent::open(channel).await.expect("stream opens")
    };
    let attack_id = "d-0123456789abcdef";

    let mut b = as_agent("agent-b").await;
    let mut decoy = one(attack_id, "agent-b", 1);
    decoy.deviations[0].summary = "harmless decoy".to_owned();
    let ack = b.send(decoy.clone()).await.expect("B's own row is stored");
    assert_eq!((ack.stored, ack.duplicates), (1, 0));

    // B cannot write under A's host name, not even with its own agent_id.
    let mut forged = one(attack_id, "agent-b", 2);
    forged.deviations[0].host = "agent-a".to_owned();
    let status = b.send(forged).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("host"), "{status:?}");

    let mut a = as_agent("agent-a").await;
    let mut attack = one(attack_id, "agent-a", 1);
    attack.deviations[0].summary = "curl | sh in the release job".to_owned();
    let ack = a.send(attack).await.expect("A's attack is acknowledged");
    assert_eq!(
        (ack.stored, ack.duplicates),
        (1, 0),
        "A's row is not a duplicate of B's"
    );
    // A resending its own deviation (a new batch, same id) is a duplicate, of A's own row.
    let ack = a.send(one(attack_id, "agent-a", 2)).await.expect("ack");
    assert_eq!((ack.stored, ack.duplicates), (0, 1));

    let credentials = collector::credentials::ClientArgs {
        token: Some(TOKEN.to_owned()),
        ..client(certs, Some("agent-agent-a"))
    };
    let mut rows: Vec<(String, String, String)> =
        list_with(&url, ListDeviationsRequest::default(), &credentials)
            .await
            .expect("query")
            .into_iter()
            .map(|s| {
                let d = s.deviation.expect("body");
                (s.agent_id, d.host, d.summary)
            })
            .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            (
                "agent-a".to_owned(),
                "agent-a".to_owned(),
                "curl | sh in the release job".to_owned()
            ),
            (
                "agent-b".to_owned(),
                "agent-b".to_owned(),
                "harmless decoy".to_owned()
            ),
        ],
        "each agent's row under its own identity, A's not overwritten by B's"
    );
    server.stop().await;
}

#[tokio::test]
async fn deviation_ids_are_namespaced_by_the_certificate_on_sqlite() {
    let (dir, db) = temp_db();
    let certs = deployment(dir.path());
    no_agent_can_pre_empt_or_overwrite_another(Store::open(&db).unwrap(), &certs).await;
}

#[tokio::test]
async fn deviation_ids_are_namespaced_by_the_certificate_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let certs = deployment(dir.path());
    let cluster = common::postgres::PgCluster::start();
    let url = cluster.database("namespaced");
    let store = tokio::task::spawn_blocking(move || Store::connect(&url).expect("connect"))
        .await
        .unwrap();
    no_agent_can_pre_empt_or_overwrite_another(store, &certs).await;
}

#[tokio::test]
async fn the_web_api_needs_the_token_on_loopback_too_once_a_token_file_is_set() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let (dir, db) = temp_db();
    let token_file = dir.path().join("tokens");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let store = Arc::new(Store::open(&db).unwrap());
    let loopback: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let access = collector::auth::Access::new(
        false,
        collector::auth::read_tokens(&token_file).unwrap(),
        [],
    );
    let web = collector::web::Web::new(store, Arc::new(Metrics::new()), loopback)
        .with_access(Arc::new(access))
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cancel = CancellationToken::new();
    tokio::spawn(collector::web::serve(
        listener,
        Arc::new(web),
        cancel.clone(),
    ));
    let get = async |path: &str, auth: Option<&str>| {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    };
    for api in [
        "/api/deviations",
        "/api/incidents",
        "/api/workloads",
        "/api/agents",
    ] {
        let refused = get(api, None).await;
        assert!(refused.starts_with("HTTP/1.1 401 "), "{api}: {refused}");
        assert!(!refused.contains("\"deviations\""), "{api}: no data");
        let refused = get(api, Some("Bearer wrong")).await;
        assert!(refused.starts_with("HTTP/1.1 401 "), "{api}: {refused}");
        let answered = get(api, Some(&format!("Bearer {TOKEN}"))).await;
        assert!(answered.starts_with("HTTP/1.1 200 "), "{api}: {answered}");
    }
    // The page itself carries no data, and sends the token it is given (`#token=`).
    let page = get("/app.js", None).await;
    assert!(page.starts_with("HTTP/1.1 200 "));
    assert!(
        page.contains("Authorization = \"Bearer \""),
        "the page sends the token"
    );
    cancel.cancel();
}
