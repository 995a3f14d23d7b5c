//! TLS: pgplane reaches targets with sslmode require and verify-full (against a CA given at
//! registration), refuses certificates its CA did not sign, and serves its API over TLS when
//! given a certificate; a cluster answers its registered CA (`GET …/ca`), and its pools reach
//! the server over TLS too. The CA and certificates are made for each test (rcgen).

use std::path::PathBuf;

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use pgplane_testkit::{AppOptions, OwnServer, TestApp};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::json;

use crate::pools::{create_pool, ready_pool, through_pool};

/// A CA and a server certificate for localhost and 127.0.0.1, signed by it.
struct TestPki {
    ca_pem: String,
    dir: PathBuf,
}

impl TestPki {
    fn new(suffix: &str) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "pgplane test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        // Its own name: OpenSSL (PgBouncer's) takes a certificate named as its issuer for a
        // self-signed one.
        let mut server_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        server_params.distinguished_name.push(DnType::CommonName, "localhost");
        let server = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();
        let dir = std::env::temp_dir().join(format!("pgplane-tls-{suffix}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("server.crt"), server.pem()).unwrap();
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
        Self { ca_pem: ca.pem(), dir }
    }

    fn server_cert(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("server.crt")).unwrap()
    }

    fn server_key(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("server.key")).unwrap()
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_are_reached_over_tls_and_verified_against_the_registered_ca() {
    if !pgplane_testkit::own_containers() {
        return;
    }
    let suffix = pgplane_testkit::unique_suffix();
    let pki = TestPki::new(&suffix);
    let target = OwnServer::start_with_tls(15, &pki.dir).await;
    let mut app = TestApp::spawn_with(AppOptions {
        target_server: Some(target.server.clone()),
        register: false,
        ..Default::default()
    })
    .await;

    let stranger = TestPki::new(&format!("{suffix}-other"));
    let refusals = [
        ("verify-full", Some(stranger.ca_pem.clone()), "certificate"),
        ("verify-full", None, "needs the CA certificate"),
        ("verify-full", Some("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n".into()), "TLS"),
        ("verify-ca", Some(pki.ca_pem.clone()), "not supported"),
    ];
    for (sslmode, ca, expected) in refusals {
        let mut body = app.registration(&format!("t-{}", app.suffix));
        body["pgplane"]["sslmode"] = json!(sslmode);
        body["pgplane"]["ca_certificate"] = json!(ca);
        let (status, answer) = app.post("/v2/databases", body).await;
        assert_eq!(status, 422, "{sslmode}: {answer}");
        assert!(answer["message"].as_str().unwrap().contains(expected), "{sslmode}: {answer}");
    }

    let mut body = app.registration(&format!("t-{}", app.suffix));
    body["pgplane"]["sslmode"] = json!("verify-full");
    body["pgplane"]["ca_certificate"] = json!(pki.ca_pem);
    let (status, cluster) = app.post("/v2/databases", body).await;
    assert_eq!(status, 201, "{cluster}");
    assert_eq!(cluster["database"]["status"], "online");
    assert_eq!(cluster["database"]["connection"]["ssl"], true);
    assert!(cluster["database"]["connection"]["uri"].as_str().unwrap().ends_with("sslmode=verify-full"));
    let id = cluster["database"]["id"].as_str().unwrap().to_string();
    app.cluster_id = id.clone();
    let name = app.unique("over_tls");
    let (status, _) = app.post(&format!("/v2/databases/{id}/users"), json!({ "name": name })).await;
    assert_eq!(status, 201);
    assert!(app.role_exists(&name).await);
    // The registered CA, as DigitalOcean answers it: base64 of the PEM.
    let (status, ca) = app.get(&format!("/v2/databases/{id}/ca")).await;
    assert_eq!(status, 200, "{ca}");
    let pem = B64.decode(ca["ca"]["certificate"].as_str().expect("certificate")).expect("base64");
    assert_eq!(String::from_utf8(pem).unwrap(), pki.ca_pem);
    // pgplane's own sessions on the target are encrypted.
    let encrypted = app
        .target_strings(
            "SELECT bool_and(s.ssl)::text FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = $1",
            &[&app.admin_user],
        )
        .await;
    assert_eq!(encrypted, ["true"]);
    // A pool on this cluster: PgBouncer reaches the server over TLS too, verifying it against
    // the same CA.
    let pooler = app.start_pooler().await;
    create_pool(&app, json!({"name": "tls-pool", "mode": "session", "size": 1, "db": app.default_db})).await;
    ready_pool(&app, "tls-pool").await;
    let password = app.primary_password().await;
    let client =
        through_pool(pooler.port, "127.0.0.1", "tls-pool", &app.primary_user, &password).await.unwrap();
    let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let ssl: bool =
        client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = $1", &[&pid]).await.unwrap().get(0);
    assert!(ssl, "PgBouncer's server connection is not encrypted");

    // sslmode=require encrypts without checking the certificate.
    let mut body = app.registration(&format!("r-{}", app.suffix));
    body["pgplane"]["sslmode"] = json!("require");
    body["pgplane"]["primary_user"] = json!(app.unique("req_admin"));
    body["pgplane"]["default_database"] = json!(app.unique("reqdb"));
    let (status, answer) = app.post("/v2/databases", body).await;
    assert_eq!(status, 201, "{answer}");
    // Registered without a CA: there is none to answer.
    let (status, answer) =
        app.get(&format!("/v2/databases/{}/ca", answer["database"]["id"].as_str().unwrap())).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["id"], "not_found");
    assert!(answer["message"].as_str().unwrap().contains("no CA certificate"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_is_refused_by_a_target_without_tls() {
    let app = TestApp::spawn_with(AppOptions { register: false, ..Default::default() }).await;
    let mut body = app.registration(&format!("n-{}", app.suffix));
    body["pgplane"]["sslmode"] = json!("require");
    let (status, answer) = app.post("/v2/databases", body).await;
    assert_eq!(status, 422, "{answer}");
    let (_, list) = app.get("/v2/databases").await;
    assert_eq!(list["databases"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_served_over_tls_when_given_a_certificate() {
    let app = TestApp::spawn_with(AppOptions { register: false, ..Default::default() }).await;
    let pki = TestPki::new(&app.suffix);
    let tls = pgplane_gateway::server_config(&pki.server_cert(), &pki.server_key()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let limits = pgplane_gateway::ServeLimits {
        header_read_timeout: std::time::Duration::from_secs(2),
        ..Default::default()
    };
    let config = pgplane_gateway::GatewayConfig::default();
    let api = pgplane_app::Api { listener, tls: Some(tls), config, limits };
    let server = app.start_process(pgplane_app::Parts { api: Some(api), ..Default::default() });
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let response = client
        .get(format!("https://localhost:{port}/v2/databases"))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap(), json!({"databases": []}));
    let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/healthz")).send().await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true), "no plain HTTP on the TLS port");
    let untrusting = reqwest::Client::new().get(format!("https://localhost:{port}/healthz")).send().await;
    assert!(untrusting.is_err(), "a client that does not trust the CA refuses the server");
    // A client that opens a connection and never finishes the handshake is cut off.
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stalled, &[0x16, 0x03, 0x01]).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tokio::io::AsyncReadExt::read(&mut stalled, &mut buf),
    )
    .await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "a stalled TLS handshake is cut off: {closed:?}");
    server.stop().await.unwrap();
}

/// The metadata connection as `--database-ca-file` makes it (`sslmode=verify-full` and
/// `sslrootcert` in the URL): encrypted and verified against the given CA; a server whose
/// certificate another CA signed is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_connection_verifies_the_server_against_its_ca() {
    if !pgplane_testkit::own_containers() {
        return;
    }
    let suffix = pgplane_testkit::unique_suffix();
    let pki = TestPki::new(&suffix);
    let server = OwnServer::start_with_tls(17, &pki.dir).await;
    let url = |ca: &std::path::Path| {
        format!("{}?sslmode=verify-full&sslrootcert={}", server.server.url("postgres"), ca.display())
    };
    std::fs::write(pki.dir.join("ca.crt"), &pki.ca_pem).unwrap();
    let store = pgplane_core::Store::connect_lazy(&url(&pki.dir.join("ca.crt")), 1).unwrap();
    let ssl: bool = sqlx::query_scalar("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .expect("connects over verified TLS");
    assert!(ssl, "the session is encrypted");

    let stranger = TestPki::new(&format!("{suffix}-other"));
    std::fs::write(stranger.dir.join("ca.crt"), &stranger.ca_pem).unwrap();
    let store = pgplane_core::Store::connect_lazy(&url(&stranger.dir.join("ca.crt")), 1).unwrap();
    let refused = sqlx::query("select 1").execute(store.pool()).await;
    assert!(refused.is_err(), "a certificate another CA signed is refused");
}
