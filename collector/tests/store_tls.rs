//! TLS to PostgreSQL: a real server started with `ssl=on`, a certificate made here by a CA made
//! here, TCP accepted only over TLS with a client certificate. The collector's store connects
//! with `sslmode=verify-full`, stores a batch and reads it back; a wrong CA, no client
//! certificate or no TLS at all are refused with errors that say why.

mod common;

use std::path::Path;

use collector::store::{BatchKey, Store};
use common::postgres::{PgCluster, ServerTls};
use proto::v1::{DeviationKind, Severity};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A CA: its certificate (PEM) and what signs with it.
fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// A certificate for `names` (its common name the first) signed by `issuer`: (cert, key) PEM.
fn leaf(names: &[&str], issuer: &Issuer<'_, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, pem: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path.display().to_string()
}

fn connect_error(url: &str) -> String {
    match Store::connect(url) {
        Ok(_) => panic!("{url} connected"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_store_connects_to_postgresql_over_verified_tls_only() {
    let files = tempfile::tempdir().unwrap();
    let (ca_pem, ca) = new_ca("test PostgreSQL CA");
    let (server_cert, server_key) = leaf(&["127.0.0.1", "localhost"], &ca);
    // `cert` authentication: the client certificate's common name is the database user.
    let (client_cert, client_key) = leaf(&["postgres"], &ca);
    let (other_ca_pem, _) = new_ca("some other CA");
    let cluster = PgCluster::start_tls(&ServerTls {
        cert: server_cert,
        key: server_key,
        client_ca: ca_pem.clone(),
    });
    let plain = cluster.database("tls");
    let root = write(files.path(), "ca.pem", &ca_pem);
    let wrong_root = write(files.path(), "other-ca.pem", &other_ca_pem);
    let cert = write(files.path(), "client.pem", &client_cert);
    let key = write(files.path(), "client.key", &client_key);
    let verified = format!("{plain}?sslmode=verify-full&sslrootcert={root}");
    let with_client = format!("{verified}&sslcert={cert}&sslkey={key}");

    let store = Store::connect(&with_client)
        .unwrap_or_else(|e| panic!("verify-full with the right CA: {e}\n{}", cluster.log()));
    let deviation = common::deviation(
        "tls-1",
        1_700_000_000,
        "github:acme/app/ci/build",
        DeviationKind::NewExecutable,
        Severity::High,
    );
    let key_of = BatchKey {
        agent_id: "agent-1",
        spool_id: "spool",
        sequence: 1,
    };
    let outcome = store.store_batch(key_of, vec![deviation], 1).unwrap();
    assert_eq!(outcome.stored, 1);
    let listed = store.list(&Default::default()).unwrap();
    assert_eq!(listed.len(), 1, "the batch went over TLS and back");
    drop(store);

    let wrong = connect_error(&format!(
        "{plain}?sslmode=verify-full&sslrootcert={wrong_root}&sslcert={cert}&sslkey={key}"
    ));
    assert!(
        wrong.contains("certificate") && wrong.contains("UnknownIssuer"),
        "a server certificate from another CA is refused, saying so: {wrong}"
    );
    let no_client_cert = connect_error(&verified);
    assert!(
        no_client_cert.contains("certificate"),
        "the server wants a client certificate: {no_client_cert}"
    );
    let no_tls = connect_error(&plain);
    assert!(
        no_tls.contains("no encryption") || no_tls.contains("pg_hba.conf"),
        "the server refuses plain TCP, so the first connection was TLS: {no_tls}"
    );
}
