//! Attacks from a fake server on the wire: asking for the admin password in cleartext or as
//! MD5, and plaintext connections where they are not allowed.
//!
//! The fake is a TCP listener on loopback that answers an SSLRequest (`N`, or `S` and TLS with a
//! self-signed certificate), reads the startup packet, asks for the password in cleartext (or as
//! MD5) and records every byte it receives. pgplane must send it nothing after the startup
//! packet: no PasswordMessage, no password.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgplane_testkit::{AppOptions, TestApp};

use crate::on_each_version;
use serde_json::{json, Value};
use std::io::{Read, Write};

use tokio::net::TcpListener;

/// What the fake asks for.
#[derive(Clone, Copy)]
enum Ask {
    Cleartext,
    Md5,
}

impl Ask {
    /// The AuthenticationCleartextPassword or AuthenticationMD5Password message.
    fn request(self) -> Vec<u8> {
        match self {
            Ask::Cleartext => vec![b'R', 0, 0, 0, 8, 0, 0, 0, 3],
            Ask::Md5 => vec![b'R', 0, 0, 0, 12, 0, 0, 0, 5, 1, 2, 3, 4],
        }
    }

    /// What pgplane's refusal names.
    fn word(self) -> &'static str {
        match self {
            Ask::Cleartext => "cleartext",
            Ask::Md5 => "MD5",
        }
    }
}

/// One connection the fake accepted: its startup packet, and every byte received after it.
#[derive(Debug, Default, Clone)]
struct Seen {
    startup: Vec<u8>,
    after: Vec<u8>,
}

/// A fake PostgreSQL server on 127.0.0.1 that asks for a password pgplane must not send.
struct FakeServer {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    /// A fake that answers `N` to an SSLRequest.
    async fn start(ask: Ask) -> Self {
        Self::start_with(ask, None).await
    }

    /// A fake that speaks TLS with a self-signed certificate when asked to.
    async fn start_tls(ask: Ask) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            )
            .unwrap();
        Self::start_with(ask, Some(Arc::new(config))).await
    }

    async fn start_with(ask: Ask, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fake server");
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (record, tls) = (record.clone(), tls.clone());
                let socket = socket.into_std().unwrap();
                socket.set_nonblocking(false).unwrap();
                tokio::task::spawn_blocking(move || {
                    let slot = {
                        let mut all = record.lock().unwrap();
                        all.push(Seen::default());
                        all.len() - 1
                    };
                    let _ = converse(socket, ask, tls, &record, slot);
                });
            }
        });
        Self { port, seen, task }
    }

    /// The connections seen so far.
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Asserts that the fake was reached and got nothing after any startup packet, and the
    /// password nowhere.
    fn assert_nothing_sent(&self, password: &str) {
        let seen = self.seen();
        assert!(!seen.is_empty(), "pgplane reached the fake server");
        for s in &seen {
            assert!(!s.startup.is_empty(), "a startup packet: {s:?}");
            assert!(s.after.is_empty(), "nothing after the startup packet (no PasswordMessage): {s:?}");
            let all = [s.startup.as_slice(), s.after.as_slice()].concat();
            assert!(!contains(&all, password.as_bytes()), "the password reached the fake server");
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// One length-prefixed packet's body.
fn packet(stream: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length)?;
    let mut body = vec![0u8; (u32::from_be_bytes(length) as usize).saturating_sub(4)];
    stream.read_exact(&mut body)?;
    Ok(body)
}

/// Reads packets until the startup packet (answering an SSLRequest with `S` and TLS when the
/// fake has a certificate, `N` otherwise), asks for the password, then records whatever
/// arrives until the client closes (or 10 s pass).
fn converse(
    mut socket: std::net::TcpStream,
    ask: Ask,
    tls: Option<Arc<rustls::ServerConfig>>,
    record: &Mutex<Vec<Seen>>,
    slot: usize,
) -> std::io::Result<()> {
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    loop {
        let body = packet(&mut socket)?;
        if !body.starts_with(&80877103u32.to_be_bytes()) {
            return ask_and_record(&mut socket, body, ask, record, slot);
        }
        if let Some(config) = &tls {
            socket.write_all(b"S")?;
            let connection = rustls::ServerConnection::new(config.clone()).map_err(std::io::Error::other)?;
            let mut stream = rustls::StreamOwned::new(connection, socket);
            let startup = packet(&mut stream)?;
            return ask_and_record(&mut stream, startup, ask, record, slot);
        }
        socket.write_all(b"N")?;
    }
}

fn ask_and_record(
    stream: &mut (impl Read + Write),
    startup: Vec<u8>,
    ask: Ask,
    record: &Mutex<Vec<Seen>>,
    slot: usize,
) -> std::io::Result<()> {
    record.lock().unwrap()[slot].startup = startup;
    stream.write_all(&ask.request())?;
    stream.flush()?;
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(n) if n > 0 => record.lock().unwrap()[slot].after.extend_from_slice(&buf[..n]),
            _ => return Ok(()),
        }
    }
}

/// The test's registration body, pointed at `port` on loopback in plaintext.
fn at_fake(app: &TestApp, name: &str, port: u16) -> Value {
    let mut body = app.registration(&app.unique(name).replace('_', "-"));
    body["pgplane"]["host"] = json!("127.0.0.1");
    body["pgplane"]["port"] = json!(port);
    body["pgplane"]["sslmode"] = json!("disable");
    body
}

async fn a_fake_server_asking_for_a_cleartext_or_md5_password_gets_nothing_at_registration(major: u32) {
    let app =
        TestApp::spawn_with(AppOptions { target_major: major, register: false, ..Default::default() }).await;
    for ask in [Ask::Cleartext, Ask::Md5] {
        let fake = FakeServer::start(ask).await;
        // The registration, and its dry run.
        for path in ["/v2/databases", "/v2/databases?dry_run=true"] {
            let (status, body) = app.post(path, at_fake(&app, "fake", fake.port)).await;
            assert_eq!(status, 422, "{path}: {body}");
            let message = body["message"].as_str().unwrap();
            assert!(message.contains(ask.word()) && message.contains("SCRAM"), "{path}: {message}");
            assert!(!message.contains(&app.admin_password), "{message}");
        }
        fake.assert_nothing_sent(&app.admin_password);
    }
    let (_, list) = app.get("/v2/databases").await;
    assert_eq!(list["databases"], json!([]), "nothing was registered");
}
on_each_version!(a_fake_server_asking_for_a_cleartext_or_md5_password_gets_nothing_at_registration);

async fn a_registered_cluster_moved_to_such_a_server_sends_it_nothing(major: u32) {
    let app = TestApp::spawn(major).await;
    let fake = FakeServer::start(Ask::Cleartext).await;

    // PUT …/pgplane to the fake: refused, and the cluster keeps its connection.
    let (status, body) =
        app.put(&app.cluster_path("/pgplane"), at_fake(&app, "x", fake.port)["pgplane"].clone()).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("cleartext"), "{body}");
    let (_, cluster) = app.get(&app.cluster_path("")).await;
    assert_eq!(cluster["database"]["pgplane"]["port"], json!(app.target.port), "{cluster}");
    fake.assert_nothing_sent(&app.admin_password);

    // The registration now leads to the fake (as a DNS change or a re-used port would): the
    // pass refuses it and says why.
    let meta = app.metadata_session().await;
    let id: uuid::Uuid = app.cluster_id.parse().unwrap();
    meta.execute(
        "UPDATE clusters SET port = $1 WHERE cluster_id::text = $2",
        &[&i32::from(fake.port), &app.cluster_id],
    )
    .await
    .expect("point the cluster at the fake");
    let refused = app
        .eventually(Duration::from_secs(30), || async {
            let _ = app.reconciler.reconcile_now(id).await;
            let (_, cluster) = app.get(&app.cluster_path("")).await;
            cluster["database"]["pgplane"]["last_error"].as_str().is_some_and(|e| e.contains("cleartext"))
        })
        .await;
    assert!(refused, "the pass says why: {:?}", app.get(&app.cluster_path("")).await.1);
    fake.assert_nothing_sent(&app.admin_password);
    // Put the cluster back so that the test's cleanup finds its objects where they are.
    meta.execute(
        "UPDATE clusters SET port = $1 WHERE cluster_id::text = $2",
        &[&i32::from(app.target.port), &app.cluster_id],
    )
    .await
    .unwrap();
}
on_each_version!(a_registered_cluster_moved_to_such_a_server_sends_it_nothing);

async fn over_tls_a_server_that_does_not_bind_scram_to_the_channel_gets_nothing(major: u32) {
    let app =
        TestApp::spawn_with(AppOptions { target_major: major, register: false, ..Default::default() }).await;
    for ask in [Ask::Cleartext, Ask::Md5] {
        let fake = FakeServer::start_tls(ask).await;
        let mut body = at_fake(&app, "tls-fake", fake.port);
        body["pgplane"]["sslmode"] = json!("require");
        let (status, answer) = app.post("/v2/databases", body).await;
        assert_eq!(status, 422, "{answer}");
        assert!(answer["message"].as_str().unwrap().contains("channel binding"), "{answer}");
        fake.assert_nothing_sent(&app.admin_password);
    }
    let (_, list) = app.get("/v2/databases").await;
    assert_eq!(list["databases"], json!([]), "nothing was registered");
}
on_each_version!(over_tls_a_server_that_does_not_bind_scram_to_the_channel_gets_nothing);
