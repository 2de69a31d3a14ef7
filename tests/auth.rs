//! Production authentication: the client-secret and certificate flows against a
//! local token endpoint, the token cache seen from outside, the environment
//! credential, clouds, the `azure` adapter, and secrets kept out of `Debug`.
//!
//! One httpmock server on loopback plays both the token endpoint and the API.

mod common;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use defender_endpoint::{
    AccessToken, Client, ClientBuilder, ClientCertificateCredential, ClientSecretCredential, Cloud,
    EnvironmentCredential, Error, ExposeSecret, RateLimit, Region, RetryPolicy, StaticToken,
    TokenCredential, DEFAULT_AUTHORITY_HOST, DEFAULT_SCOPE,
};
use httpmock::{HttpMockRequest, HttpMockResponse, Method::GET, Method::POST, Mock, MockServer};
use serde_json::{json, Value};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT_ID: &str = "0b0e3a5c-1111-4a2b-9c3d-444455556666";
/// A client secret that must never show up in any output.
const SECRET: &str = "SENTINEL-secret-Qx7~v+/=&%";
const TOKEN_PATH: &str = "/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token";
const API_PATH: &str = "/api/users/user1/machines";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A request the token endpoint received.
#[derive(Clone, Debug)]
struct Seen {
    form: Vec<(String, String)>,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.form.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort_unstable();
        keys
    }
}

/// A token endpoint that issues `tok-1`, `tok-2`, … valid for `expires_in`
/// seconds, after `delay`, and records what it received.
struct TokenEndpoint<'a> {
    mock: Mock<'a>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl TokenEndpoint<'_> {
    fn calls(&self) -> usize {
        self.mock.calls()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn token_endpoint(server: &MockServer, expires_in: u64, delay: Duration) -> TokenEndpoint<'_> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let issued = Arc::new(AtomicUsize::new(0));
    let record = Arc::clone(&seen);
    let mock = server.mock(move |when, then| {
        when.method(POST).path(TOKEN_PATH);
        then.delay(delay)
            .respond_with(move |req: &HttpMockRequest| {
                let form = url::form_urlencoded::parse(req.body().as_ref())
                    .into_owned()
                    .collect();
                record.lock().unwrap().push(Seen {
                    form,
                    headers: req.headers_vec().clone(),
                });
                let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                HttpMockResponse::builder()
                    .status(200)
                    .header("content-type", "application/json; charset=utf-8")
                    .body(
                        json!({
                            "token_type": "Bearer",
                            "expires_in": expires_in,
                            "ext_expires_in": expires_in,
                            "access_token": format!("tok-{n}"),
                        })
                        .to_string(),
                    )
                    .build()
            });
    });
    TokenEndpoint { mock, seen }
}

/// The API: 200 with no machines for any request with a bearer token.
fn api(server: &MockServer) -> Mock<'_> {
    server.mock(|when, then| {
        when.method(GET)
            .path(API_PATH)
            .header_exists("authorization");
        then.status(200)
            .header("content-type", "application/json")
            .body(r#"{"value":[]}"#);
    })
}

fn builder(server: &MockServer) -> ClientBuilder {
    Client::builder()
        .base_url(server.base_url())
        .rate_limit(RateLimit::none())
        .retry(RetryPolicy::none())
}

fn secret_credential(server: &MockServer) -> ClientSecretCredential {
    ClientSecretCredential::new(TENANT, CLIENT_ID, SECRET)
        .authority_host(server.base_url())
        .unwrap()
}

/// A self-signed RSA certificate and its key, made once per test run.
struct TestCert {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn test_cert() -> &'static TestCert {
    static CERT: OnceLock<TestCert> = OnceLock::new();
    CERT.get_or_init(|| rsa_cert("defender-endpoint test app"))
}

fn rsa_cert(name: &str) -> TestCert {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    TestCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

fn sha1(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes)
        .as_ref()
        .to_vec()
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A file under the target directory's temp area, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "defender-endpoint-auth-{}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------- the two flows

#[tokio::test]
async fn client_secret_flow_posts_exactly_the_oauth_form() {
    let server = MockServer::start_async().await;
    let tokens = token_endpoint(&server, 3599, Duration::ZERO);
    let api = server.mock(|when, then| {
        when.method(GET)
            .path(API_PATH)
            .header("authorization", "Bearer tok-1");
        then.status(200).body(r#"{"value":[]}"#);
    });
    let client = builder(&server)
        .credential(secret_credential(&server))
        .build()
        .unwrap();

    assert!(client.user_machines("user1").await.unwrap().is_empty());

    assert_eq!(tokens.calls(), 1);
    api.assert();
    let seen = &tokens.seen()[0];
    assert_eq!(
        seen.keys(),
        ["client_id", "client_secret", "grant_type", "scope"]
    );
    assert_eq!(seen.field("grant_type"), Some("client_credentials"));
    assert_eq!(seen.field("client_id"), Some(CLIENT_ID));
    assert_eq!(seen.field("client_secret"), Some(SECRET));
    assert_eq!(seen.field("scope"), Some(DEFAULT_SCOPE));
    assert_eq!(
        seen.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert!(seen
        .header("user-agent")
        .is_some_and(|ua| ua.starts_with("defender-endpoint/")));
}

#[tokio::test]
async fn certificate_flow_posts_a_signed_rs256_assertion() {
    let server = MockServer::start_async().await;
    let tokens = token_endpoint(&server, 3599, Duration::ZERO);
    let cert = test_cert();
    let credential =
        ClientCertificateCredential::from_pem(TENANT, CLIENT_ID, &cert.cert_pem, &cert.key_pem)
            .unwrap()
            .authority_host(server.base_url())
            .unwrap();
    let thumbprint: String = sha1(&cert.der).iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(credential.thumbprint(), thumbprint);

    let first = credential.get_token(&[DEFAULT_SCOPE]).await.unwrap();
    let second = credential.get_token(&[DEFAULT_SCOPE]).await.unwrap();
    assert_eq!(first.token.expose_secret(), "tok-1");
    assert_eq!(second.token.expose_secret(), "tok-2");

    let seen = tokens.seen();
    assert_eq!(seen.len(), 2);
    let mut jtis = Vec::new();
    for request in &seen {
        assert_eq!(
            request.keys(),
            [
                "client_assertion",
                "client_assertion_type",
                "client_id",
                "grant_type",
                "scope"
            ]
        );
        assert_eq!(request.field("grant_type"), Some("client_credentials"));
        assert_eq!(request.field("client_id"), Some(CLIENT_ID));
        assert_eq!(request.field("scope"), Some(DEFAULT_SCOPE));
        assert_eq!(request.field("client_assertion_type"), Some(JWT_BEARER));

        let jwt = request.field("client_assertion").unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3, "{jwt}");
        let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).unwrap();
        let header: Value = serde_json::from_slice(&decode(parts[0])).unwrap();
        let claims: Value = serde_json::from_slice(&decode(parts[1])).unwrap();
        let signature = decode(parts[2]);

        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["x5t"], URL_SAFE_NO_PAD.encode(sha1(&cert.der)));

        assert_eq!(claims["aud"], server.url(TOKEN_PATH));
        assert_eq!(claims["iss"], CLIENT_ID);
        assert_eq!(claims["sub"], CLIENT_ID);
        let now = now_secs();
        let nbf = claims["nbf"].as_i64().unwrap();
        let exp = claims["exp"].as_i64().unwrap();
        assert!((now - 120..=now + 5).contains(&nbf), "nbf {nbf}, now {now}");
        assert!((300..=900).contains(&(exp - nbf)), "lifetime {}", exp - nbf);
        let jti = claims["jti"].as_str().unwrap().to_owned();
        assert_eq!(jti.len(), 36, "{jti}");
        jtis.push(jti);

        // The signature checks out against the certificate's public key.
        let der = rustls_pki_types::CertificateDer::from(cert.der.clone());
        let end_entity = webpki::EndEntityCert::try_from(&der).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        end_entity
            .verify_signature(
                webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
                signed.as_bytes(),
                &signature,
            )
            .expect("the assertion is signed by the certificate's key");
        // …and not against anything else.
        assert!(end_entity
            .verify_signature(
                webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
                format!("{signed}x").as_bytes(),
                &signature,
            )
            .is_err());
    }
    assert_ne!(jtis[0], jtis[1], "every assertion has its own jti");
}

#[tokio::test]
async fn certificate_credential_through_the_client() {
    let server = MockServer::start_async().await;
    let tokens = token_endpoint(&server, 3599, Duration::ZERO);
    let api = api(&server);
    let cert = test_cert();
    let credential = ClientCertificateCredential::from_pem(
        TENANT,
        CLIENT_ID,
        cert.cert_pem.as_bytes(),
        cert.key_pem.as_bytes(),
    )
    .unwrap()
    .authority_host(server.base_url())
    .unwrap();
    let client = builder(&server).credential(credential).build().unwrap();
    for _ in 0..3 {
        client.user_machines("user1@contoso.com").await.unwrap();
    }
    assert_eq!(tokens.calls(), 1);
    assert_eq!(api.calls(), 3);
}

#[test]
fn certificate_pem_forms() {
    let cert = test_cert();
    // One PEM holding both, in either order, as AZURE_CLIENT_CERTIFICATE_PATH holds them.
    for bundle in [
        format!("{}\n{}", cert.cert_pem, cert.key_pem),
        format!("{}\n{}", cert.key_pem, cert.cert_pem),
    ] {
        let c = ClientCertificateCredential::from_pem_bundle(TENANT, CLIENT_ID, &bundle).unwrap();
        let d = ClientCertificateCredential::from_pem(TENANT, CLIENT_ID, &bundle, &bundle).unwrap();
        assert_eq!(c.thumbprint(), d.thumbprint());
    }
    let file = TempFile::new("bundle.pem", &format!("{}{}", cert.cert_pem, cert.key_pem));
    ClientCertificateCredential::from_pem_file(TENANT, CLIENT_ID, &file.0).unwrap();

    // A chain in any order (some .pfx exports put the CA first), and an indented
    // block with CRLF line ends: the app's certificate is the one of the key.
    let expected: String = sha1(&cert.der).iter().map(|b| format!("{b:02X}")).collect();
    let ca = rsa_cert("defender-endpoint test CA");
    let indented: String = format!("{}{}", cert.cert_pem, cert.key_pem)
        .lines()
        .map(|line| format!("    {line}\r\n"))
        .collect();
    // What `openssl pkcs12 -in app.pfx -out app.pem -nodes` writes: each block
    // after lines of its bag's attributes.
    let openssl = format!(
        "Bag Attributes\n    localKeyID: 01 00 00 00 \n    friendlyName: app\n\
         Key Attributes: <No Attributes>\n{}\
         Bag Attributes\n    localKeyID: 01 00 00 00 \n\
         subject=CN = defender-endpoint test\nissuer=CN = defender-endpoint test CA\n{}\
         Bag Attributes: <No Attributes>\n\
         subject=CN = defender-endpoint test CA\nissuer=CN = defender-endpoint test CA\n{}",
        cert.key_pem, cert.cert_pem, ca.cert_pem
    );
    for bundle in [
        format!("{}{}{}", ca.cert_pem, cert.cert_pem, cert.key_pem),
        format!("{}{}{}", cert.key_pem, ca.cert_pem, cert.cert_pem),
        indented,
        openssl,
    ] {
        let c = ClientCertificateCredential::from_pem_bundle(TENANT, CLIENT_ID, &bundle)
            .unwrap_or_else(|e| panic!("{e}: {bundle}"));
        assert_eq!(c.thumbprint(), expected);
    }

    // Several keys: the app's is the one of a certificate given, whatever the order;
    // a second certificate with its key (a CA's) leaves the app's unknown.
    let unrelated = rsa_cert("unrelated");
    let bundle = format!("{}{}{}", unrelated.key_pem, cert.cert_pem, cert.key_pem);
    let c = ClientCertificateCredential::from_pem_bundle(TENANT, CLIENT_ID, &bundle).unwrap();
    assert_eq!(c.thumbprint(), expected);
    let bundle = format!(
        "{}{}{}{}",
        ca.cert_pem, cert.cert_pem, ca.key_pem, cert.key_pem
    );
    let err = ClientCertificateCredential::from_pem_bundle(TENANT, CLIENT_ID, &bundle).unwrap_err();
    assert!(
        err.to_string()
            .contains("2 certificates come with their private keys"),
        "{err}"
    );
    // The same certificate twice (a leaf and a full chain concatenated) is one.
    let bundle = format!(
        "{}{}{}{}",
        cert.cert_pem, ca.cert_pem, cert.cert_pem, cert.key_pem
    );
    let c = ClientCertificateCredential::from_pem_bundle(TENANT, CLIENT_ID, &bundle).unwrap();
    assert_eq!(c.thumbprint(), expected);
    // An encrypted PKCS#1 key in a bundle is named as such.
    let encrypted = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
        DEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n\
        -----END RSA PRIVATE KEY-----\n";
    let bundle = format!("{}{encrypted}", cert.cert_pem);
    let err = ClientCertificateCredential::from_pem_bundle(TENANT, CLIENT_ID, &bundle).unwrap_err();
    assert!(err.to_string().contains("encrypted"), "{err}");
    // Beside a key that can be used, it is passed over; beside a key of no
    // certificate given, it is what is reported.
    let bundle = format!("{}{encrypted}{}", cert.cert_pem, cert.key_pem);
    let c = ClientCertificateCredential::from_pem_bundle(TENANT, CLIENT_ID, &bundle).unwrap();
    assert_eq!(c.thumbprint(), expected);
    let key_pem = format!("{}{encrypted}", unrelated.key_pem);
    let err = ClientCertificateCredential::from_pem(TENANT, CLIENT_ID, &cert.cert_pem, &key_pem)
        .unwrap_err();
    assert!(err.to_string().contains("encrypted"), "{err}");
    // Malformed ids are refused with the PEM, not at the first token request.
    for (tenant, client_id, says) in [
        ("../evil", CLIENT_ID, "invalid tenant id"),
        ("", CLIENT_ID, "invalid tenant id"),
        (TENANT, SECRET, "not a GUID"),
    ] {
        let err =
            ClientCertificateCredential::from_pem(tenant, client_id, &cert.cert_pem, &cert.key_pem)
                .unwrap_err();
        assert!(matches!(err, Error::Credential { .. }), "{err:?}");
        assert!(err.to_string().contains(says), "{err}");
        assert!(!format!("{err} {err:?}").contains(SECRET), "{err:?}");
    }
    // The same key twice (the app's PEM joined with a full bundle) is one.
    let single = format!("{}{}", cert.cert_pem, cert.key_pem);
    let c = ClientCertificateCredential::from_pem_bundle(
        TENANT,
        CLIENT_ID,
        format!("{single}{single}"),
    )
    .unwrap();
    assert_eq!(c.thumbprint(), expected);
    // A byte order mark (Notepad's), at the start or where files were joined.
    for bundle in [
        format!("\u{feff}{single}"),
        format!("{}\u{feff}{}", ca.cert_pem, single.replace('\n', "\r\n")),
    ] {
        let c = ClientCertificateCredential::from_pem_bundle(TENANT, CLIENT_ID, &bundle).unwrap();
        assert_eq!(c.thumbprint(), expected);
    }
    let c = ClientCertificateCredential::from_pem(
        TENANT,
        CLIENT_ID,
        format!("\u{feff}{}", cert.cert_pem),
        format!("\u{feff}{}", cert.key_pem),
    )
    .unwrap();
    assert_eq!(c.thumbprint(), expected);

    let missing = std::env::temp_dir().join("defender-endpoint-no-such-file.pem");
    let err = ClientCertificateCredential::from_pem_file(TENANT, CLIENT_ID, &missing).unwrap_err();
    assert!(
        matches!(err, Error::Credential { .. }) && err.to_string().contains("cannot read"),
        "{err}"
    );
    // Made before any token is asked for: the message does not say one was.
    assert!(err.to_string().starts_with("credential error: "), "{err}");
    assert!(!err.to_string().contains("token"), "{err}");
}

/// A certificate path that is not a regular file (a pipe that may never end, a
/// device) or is too large to be a certificate is refused, not read.
#[cfg(unix)]
#[test]
fn a_certificate_path_that_is_not_a_certificate_file_is_refused_unread() {
    let fifo = std::env::temp_dir().join(format!("defender-endpoint-fifo-{}", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    // Opening a pipe for reading waits for a writer: one comes if the check
    // fails, so that the test ends (and fails) rather than hangs.
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            use std::os::unix::fs::OpenOptionsExt;
            std::thread::sleep(Duration::from_secs(3));
            // Without a reader this fails at once instead of waiting for one.
            drop(
                std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&fifo),
            );
        })
    };
    let started = std::time::Instant::now();
    for path in [fifo.as_path(), std::path::Path::new("/dev/zero")] {
        let result = ClientCertificateCredential::from_pem_file(TENANT, CLIENT_ID, path);
        assert!(
            matches!(&result, Err(e) if e.to_string().contains("not a regular file")),
            "{path:?}: {:?}",
            result.err()
        );
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    let huge = TempFile::new("huge.pem", &"x".repeat(1024 * 1024 + 1));
    let err = ClientCertificateCredential::from_pem_file(TENANT, CLIENT_ID, &huge.0).unwrap_err();
    assert!(err.to_string().contains("larger than 1024 KiB"), "{err}");
    writer.join().unwrap();
    let _ = std::fs::remove_file(&fifo);
}

#[test]
fn bad_certificate_pems_are_clear_credential_errors() {
    let cert = test_cert();
    let other = rsa_cert("another app");
    let ec_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap()
        .serialize_pem();
    let cases: [(&str, &str, &str); 6] = [
        ("", &cert.key_pem, "no certificate found"),
        ("not a pem", &cert.key_pem, "no certificate found"),
        (&cert.cert_pem, "", "no private key found"),
        (&cert.cert_pem, &cert.cert_pem, "no private key found"),
        (
            &cert.cert_pem,
            &other.key_pem,
            "does not belong to the certificate",
        ),
        (&cert.cert_pem, &ec_key, "only RSA keys are supported"),
    ];
    for (cert_pem, key_pem, words) in cases {
        let err = ClientCertificateCredential::from_pem(TENANT, CLIENT_ID, cert_pem, key_pem)
            .unwrap_err();
        assert!(matches!(err, Error::Credential { .. }), "{err:?}");
        assert!(
            err.to_string().contains(words),
            "{err} (expected {words:?})"
        );
        // A rejected key is never quoted back.
        let shown = format!("{err} {err:?}");
        for line in key_pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!shown.contains(line), "{err}");
        }
    }
}

// ---------------------------------------------------------------- the token cache

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_first_calls_make_one_token_request() {
    let server = MockServer::start_async().await;
    // A slow token endpoint, so that the calls really wait together.
    let tokens = token_endpoint(&server, 3599, Duration::from_millis(300));
    let api = api(&server);
    let client = builder(&server)
        .credential(secret_credential(&server))
        .build()
        .unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let client = client.clone();
        tasks.spawn(async move { client.user_machines("user1").await });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(tokens.calls(), 1);
    assert_eq!(api.calls(), 64);
}

#[tokio::test]
async fn ten_sequential_calls_make_one_token_request() {
    let server = MockServer::start_async().await;
    let tokens = token_endpoint(&server, 3599, Duration::ZERO);
    let api = api(&server);
    let client = builder(&server)
        .credential(secret_credential(&server))
        .build()
        .unwrap();
    for _ in 0..10 {
        client.user_machines("user1").await.unwrap();
    }
    assert_eq!(tokens.calls(), 1);
    assert_eq!(api.calls(), 10);
}

#[tokio::test]
async fn a_short_lived_token_is_refreshed_on_a_later_call() {
    let server = MockServer::start_async().await;
    // Valid for 2 s: the cache replaces it after half its lifetime.
    let tokens = token_endpoint(&server, 2, Duration::ZERO);
    let first = server.mock(|when, then| {
        when.path(API_PATH).header("authorization", "Bearer tok-1");
        then.status(200).body(r#"{"value":[]}"#);
    });
    let second = server.mock(|when, then| {
        when.path(API_PATH).header("authorization", "Bearer tok-2");
        then.status(200).body(r#"{"value":[]}"#);
    });
    let client = builder(&server)
        .credential(secret_credential(&server))
        .build()
        .unwrap();

    client.user_machines("user1").await.unwrap();
    assert_eq!(tokens.calls(), 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    client.user_machines("user1").await.unwrap();
    assert_eq!(tokens.calls(), 2);
    assert_eq!((first.calls(), second.calls()), (1, 1));
}

#[tokio::test]
async fn api_401_refreshes_the_token_and_retries_once() {
    let server = MockServer::start_async().await;
    let tokens = token_endpoint(&server, 3599, Duration::ZERO);
    let revoked = server.mock(|when, then| {
        when.path(API_PATH).header("authorization", "Bearer tok-1");
        then.status(401)
            .body(r#"{"error":{"code":"Unauthorized","message":"expired","target":"t-1"}}"#);
    });
    let fresh = server.mock(|when, then| {
        when.path(API_PATH).header("authorization", "Bearer tok-2");
        then.status(200).body(r#"{"value":[]}"#);
    });
    let client = builder(&server)
        .credential(secret_credential(&server))
        .build()
        .unwrap();

    client.user_machines("user1").await.unwrap();
    assert_eq!(tokens.calls(), 2);
    assert_eq!((revoked.calls(), fresh.calls()), (1, 1));

    // The new token is kept.
    client.user_machines("user1").await.unwrap();
    assert_eq!(tokens.calls(), 2);
}

#[tokio::test]
async fn a_second_401_is_returned_as_an_api_error() {
    let server = MockServer::start_async().await;
    let tokens = token_endpoint(&server, 3599, Duration::ZERO);
    let api = server.mock(|when, then| {
        when.path(API_PATH);
        then.status(401)
            .body(r#"{"error":{"code":"Unauthorized","message":"no","target":"t-2"}}"#);
    });
    let client = builder(&server)
        .credential(secret_credential(&server))
        // Retries allowed: a 401 still gets exactly one refresh.
        .retry(RetryPolicy::default().base_delay(Duration::from_millis(1)))
        .build()
        .unwrap();

    let err = client.user_machines("user1").await.unwrap_err();
    assert!(
        matches!(&err, Error::Api { status: 401, code: Some(code), target: Some(target), .. }
            if code == "Unauthorized" && target == "t-2"),
        "{err:?}"
    );
    assert_eq!(tokens.calls(), 2);
    assert_eq!(api.calls(), 2);
}

/// Hands out a token that cannot travel in an HTTP header, counting its calls.
struct NewlineToken(AtomicUsize);

#[defender_endpoint::async_trait]
impl TokenCredential for NewlineToken {
    async fn get_token(&self, _scopes: &[&str]) -> Result<AccessToken, Error> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(AccessToken::expires_in(
            "tok\r\nX-Injected: 1",
            Duration::from_secs(3600),
        ))
    }
}

#[tokio::test]
async fn a_token_unfit_for_a_header_is_a_credential_error_and_is_not_cached() {
    let server = MockServer::start_async().await;
    let api = server.mock(|when, then| {
        when.path(API_PATH);
        then.status(200).body(r#"{"value":[]}"#);
    });
    let credential = Arc::new(NewlineToken(AtomicUsize::new(0)));
    let client = builder(&server)
        .credential(credential.clone())
        .build()
        .unwrap();

    for calls in 1..=2 {
        let err = client.user_machines("user1").await.unwrap_err();
        assert!(matches!(err, Error::Credential { .. }), "{err:?}");
        assert!(err.to_string().contains("not a bearer token"), "{err}");
        assert!(!err.to_string().contains("X-Injected"), "{err}");
        assert_eq!(credential.0.load(Ordering::SeqCst), calls);
    }
    assert_eq!(api.calls(), 0);
}

/// Entra ID answers 429 and 5xx at times; those follow the retry policy like the
/// API's, while a refusal (400, 401) is final.
/// `authority_host` can fail, so it returns a `Result`; the builder takes that
/// `Result` as it is and `build()` reports its error, before anything is sent.
#[tokio::test]
async fn a_fallible_credential_step_chains_into_the_builder() {
    let server = MockServer::start_async().await;
    let tokens = token_endpoint(&server, 3599, Duration::ZERO);
    let api = api(&server);
    let client = builder(&server)
        .credential(
            ClientSecretCredential::new(TENANT, CLIENT_ID, SECRET)
                .authority_host(server.base_url()),
        )
        .build()
        .unwrap();
    client.user_machines("user1").await.unwrap();
    assert_eq!((tokens.calls(), api.calls()), (1, 1));

    let err = builder(&server)
        .credential(
            ClientSecretCredential::new(TENANT, CLIENT_ID, SECRET)
                .authority_host("http://login.example.com"),
        )
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("login.example.com"), "{err}");
    let err = builder(&server)
        .credential(ClientCertificateCredential::from_pem(
            TENANT, CLIENT_ID, "", "",
        ))
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Credential { .. }), "{err:?}");
    assert_eq!(tokens.calls(), 1);
}

/// A cloud that signs in elsewhere than the credential does is refused by
/// `build()`: the tenant's secret would go to the other cloud's sign-in, for a
/// token this cloud's API does not take.
#[test]
fn a_credential_at_another_clouds_sign_in_is_refused() {
    use defender_endpoint::{Cloud, StaticToken, TokenCredential};
    let secret = || ClientSecretCredential::new(TENANT, CLIENT_ID, SECRET);
    let err = Client::builder()
        .cloud(Cloud::UsGovGccHigh)
        .credential(secret())
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("https://login.microsoftonline.com")
            && text.contains("https://login.microsoftonline.us")
            && text.contains("authority_host"),
        "{text}"
    );
    assert!(!text.contains(SECRET), "{text}");
    // The same through an `Arc<dyn TokenCredential>`, and the other way round.
    let shared: std::sync::Arc<dyn TokenCredential> = std::sync::Arc::new(secret());
    assert!(Client::builder()
        .cloud(Cloud::UsGovDod)
        .credential(shared)
        .build()
        .is_err());
    let gov = || {
        secret()
            .authority_host(Cloud::UsGovGccHigh.authority_host())
            .unwrap()
    };
    assert!(Client::builder()
        .cloud(Cloud::Commercial)
        .credential(gov())
        .build()
        .is_err());
    // Matching sign-ins build.
    for cloud in [Cloud::UsGovGccHigh, Cloud::UsGovDod] {
        Client::builder()
            .cloud(cloud)
            .credential(gov())
            .build()
            .unwrap();
    }
    Client::builder()
        .cloud(Cloud::UsGovGcc)
        .credential(secret())
        .build()
        .unwrap();
    // Without `cloud()` (a base URL and scope of one's own), a custom cloud, a
    // custom sign-in (a proxy) or a credential of another kind: not checked.
    Client::builder().credential(gov()).build().unwrap();
    let custom = Cloud::Custom {
        api_base: "https://api.example.com".into(),
        authority_host: "https://login.example.com".into(),
        scope: "https://api.example.com/.default".into(),
    };
    Client::builder()
        .cloud(custom)
        .credential(secret())
        .build()
        .unwrap();
    // A custom cloud naming a known sign-in, however written, is checked too.
    let gov_custom = Cloud::Custom {
        api_base: "https://api-gov.securitycenter.microsoft.us".into(),
        authority_host: "LOGIN.microsoftonline.us/".into(),
        scope: "https://api-gov.securitycenter.microsoft.us/.default".into(),
    };
    assert!(Client::builder()
        .cloud(gov_custom)
        .credential(secret())
        .build()
        .is_err());
    // The commercial sign-in's other names, and a trailing dot, are known too.
    for authority in [
        "https://login.microsoft.com",
        "https://login.windows.net",
        "https://login.microsoftonline.com.",
    ] {
        let credential = secret().authority_host(authority).unwrap();
        assert!(
            Client::builder()
                .cloud(Cloud::UsGovGccHigh)
                .credential(credential)
                .build()
                .is_err(),
            "{authority}"
        );
    }
    let dotted = secret()
        .authority_host("https://login.microsoftonline.us.")
        .unwrap();
    Client::builder()
        .cloud(Cloud::UsGovGccHigh)
        .credential(dotted)
        .build()
        .unwrap();
    let proxied = secret()
        .authority_host("https://login-proxy.example.com")
        .unwrap();
    Client::builder()
        .cloud(Cloud::UsGovGccHigh)
        .credential(proxied)
        .build()
        .unwrap();
    Client::builder()
        .cloud(Cloud::UsGovGccHigh)
        .credential(StaticToken::new("t"))
        .build()
        .unwrap();
}

/// A credential that panics fails the calls that waited for its token with an
/// error; it does not panic them (the token request is shared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_credential_fails_the_calls_without_panicking_them() {
    struct Panics;
    #[defender_endpoint::async_trait]
    impl defender_endpoint::TokenCredential for Panics {
        async fn get_token(&self, _: &[&str]) -> Result<defender_endpoint::AccessToken, Error> {
            tokio::time::sleep(Duration::from_millis(50)).await;
            panic!("a bug in the credential");
        }
    }
    let server = MockServer::start_async().await;
    let api = api(&server);
    let client = builder(&server).credential(Panics).build().unwrap();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.user_machines("user1").await })
        })
        .collect();
    for call in calls {
        let err = call.await.expect("no panic").unwrap_err();
        assert!(
            matches!(&err, Error::Credential { message, .. } if message.contains("panicked")),
            "{err:?}"
        );
    }
    // And the next call asks again, and fails the same way.
    assert!(client.user_machines("user1").await.is_err());
    assert_eq!(api.calls(), 0);
}

/// An authority given with the tenant or the token path would have them twice:
/// refused by `build()`, before anything is sent (and, for a credential used on
/// its own, by `get_token`). A proxy's own path prefix is kept.
#[tokio::test]
async fn an_authority_with_the_tenant_in_it_is_refused() {
    let server = MockServer::start_async().await;
    let tokens = token_endpoint(&server, 3599, Duration::ZERO);
    for authority in [
        format!("{}/{TENANT}", server.base_url()),
        format!("{}/{}/", server.base_url(), TENANT.to_uppercase()),
        // Microsoft's own hosts take no path at all.
        "https://login.microsoftonline.com/contoso.onmicrosoft.com".to_owned(),
        "https://LOGIN.microsoftonline.us/OAuth2".to_owned(),
        "https://login.microsoftonline.com/common".to_owned(),
        "https://login.windows.net./common".to_owned(),
    ] {
        let credential = ClientSecretCredential::new(TENANT, CLIENT_ID, SECRET)
            .authority_host(authority.as_str())
            .unwrap();
        let err = credential.get_token(&[DEFAULT_SCOPE]).await.unwrap_err();
        assert!(
            matches!(&err, Error::Credential { message, .. } if message.contains("holds a path")),
            "{authority}: {err:?}"
        );
        let err = builder(&server).credential(credential).build().unwrap_err();
        assert!(
            matches!(&err, Error::Credential { message, .. } if message.contains("holds a path")),
            "{authority}: {err:?}"
        );
    }
    // The certificate credential the same way, also boxed or shared.
    let cert = test_cert();
    let certificate = || {
        ClientCertificateCredential::from_pem(TENANT, CLIENT_ID, &cert.cert_pem, &cert.key_pem)
            .unwrap()
            .authority_host("https://login.microsoftonline.com/common")
            .unwrap()
    };
    let boxed: Box<dyn TokenCredential> = Box::new(certificate());
    let shared: Arc<dyn TokenCredential> = Arc::new(certificate());
    for err in [
        builder(&server)
            .credential(certificate())
            .build()
            .unwrap_err(),
        builder(&server).credential(boxed).build().unwrap_err(),
        builder(&server).credential(shared).build().unwrap_err(),
    ] {
        assert!(
            matches!(&err, Error::Credential { message, .. } if message.contains("holds a path")),
            "{err:?}"
        );
    }
    assert_eq!(tokens.calls(), 0);
    // A proxy's own prefix is kept.
    let credential = ClientSecretCredential::new(TENANT, CLIENT_ID, SECRET)
        .authority_host(format!("{}/aad/oauth2", server.base_url()))
        .unwrap();
    let client = builder(&server).credential(credential).build().unwrap();
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(!err.to_string().contains("holds a path"), "{err}");
    // A token that expires as it is issued is refused, not asked for again on
    // every call.
    let server = MockServer::start_async().await;
    let expired = server.mock(|when, then| {
        when.method(POST).path(TOKEN_PATH);
        then.status(200)
            .json_body(json!({"token_type": "Bearer", "expires_in": 0.9, "access_token": "t"}));
    });
    let client = builder(&server)
        .credential(secret_credential(&server))
        .build()
        .unwrap();
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(err.to_string().contains("within a second"), "{err}");
    assert!(!err.to_string().contains("expires_in 0"), "{err}");
    assert_eq!(expired.calls(), 1);
}

/// Ids given in each other's place, or a secret given as an id: `build()`
/// refuses them (and the credential, used on its own, at its first token
/// request), sending nothing, and neither its `Debug` nor the error shows them.
#[tokio::test]
async fn ids_that_are_not_ids_are_refused_and_not_shown() {
    let server = MockServer::start_async().await;
    let tokens = token_endpoint(&server, 3599, Duration::ZERO);
    for (tenant, client_id) in [
        (TENANT, SECRET),
        (SECRET, CLIENT_ID),
        (TENANT, "app"),
        (TENANT, "{0b0e3a5c-1111-4a2b-9c3d-444455556666}"),
        ("../evil", CLIENT_ID),
        ("t?x=1", CLIENT_ID),
        ("", CLIENT_ID),
    ] {
        let credential = ClientSecretCredential::new(tenant, client_id, SECRET)
            .authority_host(server.base_url())
            .unwrap();
        let shown = format!("{credential:?}");
        assert!(!shown.contains(SECRET), "{shown}");
        let alone = credential.get_token(&[DEFAULT_SCOPE]).await.unwrap_err();
        let err = builder(&server).credential(credential).build().unwrap_err();
        assert!(matches!(err, Error::Credential { .. }), "{err:?}");
        assert_eq!(alone.to_string(), err.to_string());
        let text = format!("{err} {err:?}");
        assert!(!text.contains(SECRET), "{text}");
        assert!(
            text.contains("not a GUID") || text.contains("invalid tenant id"),
            "{text}"
        );
    }
    assert_eq!(tokens.calls(), 0);
}

#[tokio::test]
async fn a_transient_token_endpoint_failure_is_retried() {
    let server = MockServer::start_async().await;
    let mut outage = server.mock(|when, then| {
        when.method(POST).path(TOKEN_PATH);
        then.status(503)
            .json_body(json!({"error": "temporarily_unavailable", "error_description": "AADSTS90033: try again"}));
    });
    let api = api(&server);
    let client = builder(&server)
        .credential(secret_credential(&server))
        .retry(
            RetryPolicy::default()
                .max_attempts(3)
                .base_delay(Duration::from_millis(10)),
        )
        .build()
        .unwrap();
    // Every attempt gets the 503: the call fails after the policy's attempts.
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Credential {
                status: Some(503),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(outage.calls(), 3);
    outage.delete();

    // A 503 once, then a token: the call succeeds.
    let hits = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&hits);
    let flaky = server.mock(move |when, then| {
        when.method(POST)
            .path(TOKEN_PATH)
            .is_true(move |_| count.fetch_add(1, Ordering::SeqCst) == 0);
        then.status(503).body("");
    });
    let tokens = token_endpoint(&server, 3599, Duration::ZERO);
    client.user_machines("user1").await.unwrap();
    assert_eq!((flaky.calls(), tokens.calls()), (1, 1));
    assert_eq!(api.calls(), 1);

    // A refusal is not retried.
    let refused = MockServer::start_async().await;
    let refusal = refused.mock(|when, then| {
        when.method(POST).path(TOKEN_PATH);
        then.status(401)
            .json_body(json!({"error": "invalid_client"}));
    });
    let client = builder(&refused)
        .credential(secret_credential(&refused))
        .retry(RetryPolicy::default().max_attempts(3))
        .build()
        .unwrap();
    client.user_machines("user1").await.unwrap_err();
    assert_eq!(refusal.calls(), 1);
}

#[tokio::test]
async fn an_empty_token_is_a_credential_error_and_sends_nothing() {
    let server = MockServer::start_async().await;
    let api = api(&server);
    for token in ["", "   "] {
        let client = builder(&server)
            .credential(StaticToken::new(token))
            .build()
            .unwrap();
        let err = client.user_machines("user1").await.unwrap_err();
        assert!(matches!(err, Error::Credential { .. }), "{err:?}");
        assert!(err.to_string().contains("empty token"), "{err}");
    }
    assert_eq!(api.calls(), 0);
}

/// A client secret that is empty, or white space only, is refused before
/// anything is sent to the token endpoint: by `build()`, and by the credential
/// used on its own.
#[tokio::test]
async fn an_empty_client_secret_sends_nothing() {
    let server = MockServer::start_async().await;
    let tokens = token_endpoint(&server, 3599, Duration::ZERO);
    for secret in ["", " \n\t "] {
        let credential = ClientSecretCredential::new(TENANT, CLIENT_ID, secret)
            .authority_host(server.base_url())
            .unwrap();
        let err = credential.get_token(&[DEFAULT_SCOPE]).await.unwrap_err();
        assert!(
            err.to_string().contains("the client secret is empty"),
            "{err}"
        );
        let err = builder(&server).credential(credential).build().unwrap_err();
        assert!(
            err.to_string().contains("the client secret is empty"),
            "{err}"
        );
    }
    assert_eq!(tokens.mock.calls(), 0);
}

#[tokio::test]
async fn refusal_fields_cannot_forge_log_lines() {
    let server = MockServer::start_async().await;
    server.mock(|when, then| {
        when.method(POST).path(TOKEN_PATH);
        then.status(401).json_body(json!({
            "error": "invalid_client\n2026-01-01T00:00:00Z INFO forged",
            "error_description": "AADSTS7000215: bad",
            "trace_id": "t\r\nforged",
            "correlation_id": "c\u{1b}[2J"
        }));
    });
    let client = builder(&server)
        .credential(secret_credential(&server))
        .build()
        .unwrap();
    let err = client.user_machines("user1").await.unwrap_err();
    let shown = err.to_string();
    assert!(matches!(err, Error::Credential { .. }), "{err:?}");
    assert!(!shown.contains(['\n', '\r', '\u{1b}']), "{shown:?}");
    // The fields themselves keep what was sent.
    if let Error::Credential { code, .. } = &err {
        assert_eq!(
            code.as_deref(),
            Some("invalid_client\n2026-01-01T00:00:00Z INFO forged")
        );
    }
}

// ---------------------------------------------------------------- token endpoint errors

#[tokio::test]
async fn token_endpoint_errors_carry_the_aadsts_details_and_no_secret() {
    let server = MockServer::start_async().await;
    let refusal = server.mock(|when, then| {
        when.method(POST).path(TOKEN_PATH);
        then.status(401)
            .header("content-type", "application/json")
            .json_body(json!({
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.\r\nTrace ID: 0b5a7c1e\r\nCorrelation ID: 5d2f\r\nTimestamp: 2024-05-01 10:00:00Z",
                "error_codes": [7000215],
                "timestamp": "2024-05-01 10:00:00Z",
                "trace_id": "0b5a7c1e-aaaa-bbbb-cccc-1234567890ab",
                "correlation_id": "5d2f0000-1111-2222-3333-444455556666",
                "error_uri": "https://login.microsoftonline.com/error?code=7000215"
            }));
    });
    let api = api(&server);
    let client = builder(&server)
        .credential(secret_credential(&server))
        .build()
        .unwrap();

    let err = client.user_machines("user1").await.unwrap_err();
    match &err {
        Error::Credential {
            status,
            code,
            description,
            error_codes,
            trace_id,
            correlation_id,
            ..
        } => {
            assert_eq!(*status, Some(401));
            assert_eq!(code.as_deref(), Some("invalid_client"));
            assert!(description.as_deref().unwrap().starts_with("AADSTS7000215"));
            assert_eq!(error_codes, &[7000215]);
            assert_eq!(
                trace_id.as_deref(),
                Some("0b5a7c1e-aaaa-bbbb-cccc-1234567890ab")
            );
            assert_eq!(
                correlation_id.as_deref(),
                Some("5d2f0000-1111-2222-3333-444455556666")
            );
        }
        other => panic!("expected Error::Credential, got {other:?}"),
    }
    assert_eq!(err.status(), Some(401));
    assert!(
        err.to_string()
            .starts_with("credential error: the token endpoint refused to issue a token (HTTP 401): invalid_client: AADSTS7000215"),
        "{err}"
    );
    let shown = format!("{err} {err:?} {err:#?}");
    assert!(shown.contains("AADSTS7000215"), "{shown}");
    assert!(
        shown.contains("0b5a7c1e-aaaa-bbbb-cccc-1234567890ab"),
        "{shown}"
    );
    assert!(!shown.contains("SENTINEL"), "{shown}");
    assert_eq!(api.calls(), 0, "no API call without a token");
    assert_eq!(refusal.calls(), 1);
}

#[tokio::test]
async fn a_failed_token_request_is_not_cached() {
    let server = MockServer::start_async().await;
    let mut outage = server.mock(|when, then| {
        when.method(POST).path(TOKEN_PATH);
        then.status(503)
            .header("content-type", "text/html")
            .body("<html><body>Service Unavailable</body></html>");
    });
    let api = api(&server);
    let client = builder(&server)
        .credential(secret_credential(&server))
        .build()
        .unwrap();

    let err = client.user_machines("user1").await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Credential {
                status: Some(503),
                code: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("Service Unavailable"), "{err}");
    assert!(!format!("{err:?}").contains("SENTINEL"));
    outage.delete();

    let tokens = token_endpoint(&server, 3599, Duration::ZERO);
    client.user_machines("user1").await.unwrap();
    assert_eq!(tokens.calls(), 1);
    assert_eq!(api.calls(), 1);
}

/// A redirect from the token endpoint never takes the client secret along, even
/// through a caller's own `reqwest::Client` that follows redirects: a 307 or 308
/// is not followed (the form cannot be sent twice), and what a 301, 302 or 303
/// leads to (a GET without the form) is refused.
#[tokio::test]
async fn a_token_endpoint_redirect_never_carries_the_secret() {
    for status in [307, 308, 302, 301, 303] {
        let server = MockServer::start_async().await;
        let elsewhere = MockServer::start_async().await;
        // The Location echoes the secret, form-encoded: it is not shown.
        let encoded: String = url::form_urlencoded::byte_serialize(SECRET.as_bytes()).collect();
        let target = format!("{}/steal?client_secret={encoded}", elsewhere.base_url());
        server.mock(|when, then| {
            when.method(POST).path(TOKEN_PATH);
            then.status(status).header("location", &target);
        });
        let stolen = elsewhere.mock(|when, then| {
            when.body_includes("SENTINEL");
            then.status(200)
                .header("content-type", "application/json")
                .body(r#"{"token_type":"Bearer","expires_in":3599,"access_token":"stolen"}"#);
        });
        let other = elsewhere.mock(|when, then| {
            when.any_request();
            then.status(200)
                .header("content-type", "application/json")
                .body(r#"{"token_type":"Bearer","expires_in":3599,"access_token":"other"}"#);
        });
        let api = api(&server);
        let credential = secret_credential(&server).http_client(common::own_http_client());
        let client = builder(&server).credential(credential).build().unwrap();
        let err = client.user_machines("user1").await.unwrap_err();
        assert!(
            matches!(&err, Error::Credential { .. }) && err.to_string().contains("redirected"),
            "{status}: {err:?}"
        );
        assert!(!format!("{err} {err:?}").contains("SENTINEL"), "{err}");
        assert_eq!(stolen.calls(), 0, "{status}");
        assert_eq!(api.calls(), 0, "{status}");
        // Only a 301, 302 or 303 reaches the other host, as a GET without the form.
        let expected = usize::from(matches!(status, 301..=303));
        assert_eq!(other.calls(), expected, "{status}");
    }
}

/// A token that is not an RFC 6750 bearer token (a space, a comma, a letter
/// beyond ASCII) is refused before anything is sent to the API.
#[tokio::test]
async fn a_malformed_token_never_reaches_the_api() {
    for token in ["abc def", "a,b", "t\u{f6}k"] {
        let server = MockServer::start_async().await;
        server.mock(|when, then| {
            when.method(POST).path(TOKEN_PATH);
            then.status(200).json_body(
                json!({"token_type": "Bearer", "expires_in": 3599, "access_token": token}),
            );
        });
        let api = api(&server);
        let client = builder(&server)
            .credential(secret_credential(&server))
            .build()
            .unwrap();
        let err = client.user_machines("user1").await.unwrap_err();
        assert!(
            matches!(err, Error::Credential { .. }),
            "{token:?}: {err:?}"
        );
        assert!(err.to_string().contains("RFC 6750"), "{err}");
        assert!(!format!("{err} {err:?}").contains(token), "{err:?}");
        assert_eq!(api.calls(), 0, "{token:?}");
    }
}

/// A credential of the caller's own that hands back a token that has already
/// expired (a stale one from a vault or a file): it is sent, as the API decides
/// (the instant may come from a wall clock that runs ahead); the API's 401 makes
/// the client ask once more, and then the call fails with that 401, which says
/// the token may have expired. It is not kept for the next call.
#[tokio::test]
async fn an_expired_token_from_a_credential_is_sent_once_and_not_kept() {
    struct Stale(AtomicUsize);
    #[defender_endpoint::async_trait]
    impl TokenCredential for Stale {
        async fn get_token(&self, _scopes: &[&str]) -> Result<AccessToken, Error> {
            self.0.fetch_add(1, Ordering::SeqCst);
            let past = std::time::Instant::now()
                .checked_sub(Duration::from_secs(10))
                .unwrap();
            Ok(AccessToken::new("stale-token", past))
        }
    }
    let server = MockServer::start_async().await;
    let refused = server.mock(|when, then| {
        when.method(GET).path(API_PATH);
        then.status(401);
    });
    let stale = Arc::new(Stale(AtomicUsize::new(0)));
    let client = builder(&server)
        .credential(stale.clone())
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    for call in 1..=2 {
        let err = client.user_machines("user1").await.unwrap_err();
        assert_eq!(err.status(), Some(401), "{err:?}");
        assert!(err.to_string().contains("expired"), "{err}");
        assert!(!format!("{err} {err:?}").contains("stale-token"), "{err:?}");
        // Sent, refused, asked for again once, sent again and refused.
        assert_eq!(refused.calls(), 2 * call);
        assert_eq!(stale.0.load(Ordering::SeqCst), 2 * call);
    }
}

/// A 429 of the token endpoint that no call waits out (the policy makes no
/// retries) held nothing back: it is not counted as throttling. (That each one
/// waited out counts once is checked with 16 callers in
/// `the_token_endpoints_retry_after_is_kept_for_every_caller`, and with two
/// answers in `tests/resilience.rs`.)
#[tokio::test]
async fn a_token_429_no_call_waits_on_is_not_counted() {
    let server = MockServer::start_async().await;
    server.mock(|when, then| {
        when.method(POST).path(TOKEN_PATH);
        then.status(429)
            .header("retry-after", "1")
            .header("content-type", "application/json")
            .body(r#"{"error":"temporarily_unavailable","error_description":"AADSTS50196: busy"}"#);
    });
    let client = builder(&server)
        .credential(secret_credential(&server))
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let err = client.user_machines("user1").await.unwrap_err();
    assert_eq!(err.status(), Some(429), "{err}");
    let stats = client.stats();
    assert_eq!((stats.attempts, stats.throttled), (1, 0), "{stats:?}");
    assert_eq!(stats.throttle_wait, Duration::ZERO, "{stats:?}");
}

/// A token endpoint that asks to be spared (429 or 503 with `Retry-After`) is
/// asked again only when it said, once for all waiting callers, not once each.
#[tokio::test]
async fn the_token_endpoints_retry_after_is_kept_for_every_caller() {
    for status in [429, 503] {
        let server = MockServer::start_async().await;
        let mut busy = server.mock(|when, then| {
            when.method(POST).path(TOKEN_PATH);
            then.status(status)
                .header("retry-after", "2")
                .header("content-type", "application/json")
                .body(r#"{"error":"temporarily_unavailable","error_description":"AADSTS50196: busy"}"#);
        });
        let api = api(&server);
        let client = builder(&server)
            .credential(secret_credential(&server))
            .retry(RetryPolicy::default())
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        let calls: Vec<_> = (0..16)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.user_machines("user1").await })
            })
            .collect();
        // Until it answers, every caller waits the two seconds it asked for.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(busy.calls(), 1, "{status}");
        busy.delete();
        let tokens = token_endpoint(&server, 3599, Duration::ZERO);
        for call in calls {
            call.await.unwrap().unwrap();
        }
        assert!(started.elapsed() >= Duration::from_secs(2), "{status}");
        assert_eq!(tokens.calls(), 1, "{status}");
        assert_eq!(api.calls(), 16, "{status}");
        // The token endpoint's 429 is counted as throttling once, however many
        // callers waited on it (their waits add up); a 503 is not.
        let stats = client.stats();
        if status == 429 {
            assert_eq!(stats.throttled, 1, "{stats:?}");
            assert!(stats.throttle_wait >= Duration::from_secs(16), "{stats:?}");
        } else {
            assert_eq!(stats.throttled, 0, "{stats:?}");
        }
    }
}

/// While the token endpoint asked to be spared, a new call gets its refusal
/// without asking again; after that time, it asks. A `Retry-After` longer than
/// the retry budget has left ends the call at once with that refusal.
#[tokio::test]
async fn a_call_while_the_token_endpoint_is_spared_sends_nothing() {
    let server = MockServer::start_async().await;
    let busy = server.mock(|when, then| {
        when.method(POST).path(TOKEN_PATH);
        then.status(429)
            .header("retry-after", "1")
            .header("content-type", "application/json")
            .body(r#"{"error":"temporarily_unavailable","error_description":"AADSTS50196: busy"}"#);
    });
    let api = api(&server);
    let client = builder(&server)
        .credential(secret_credential(&server))
        .build()
        .unwrap();
    for _ in 0..3 {
        let err = client.user_machines("user1").await.unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Credential {
                    status: Some(429),
                    ..
                }
            ),
            "{err:?}"
        );
    }
    assert_eq!(busy.calls(), 1, "one request for the three calls");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(client.user_machines("user1").await.is_err());
    assert_eq!(busy.calls(), 2, "asked again once the time has passed");
    assert_eq!(api.calls(), 0);

    // With retries, but a budget shorter than the time asked for: no wait.
    let server = MockServer::start_async().await;
    let busy = server.mock(|when, then| {
        when.method(POST).path(TOKEN_PATH);
        then.status(503).header("retry-after", "60");
    });
    let client = builder(&server)
        .credential(secret_credential(&server))
        .retry(RetryPolicy::default().budget(Duration::from_secs(5)))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Credential {
                status: Some(503),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(busy.calls(), 1);
}

/// Only the token endpoint's own, latest answer says how long to spare it: not
/// that of a host a caller's client was redirected to, nor an earlier answer of
/// a credential that asks twice.
#[tokio::test]
async fn only_the_last_answer_of_the_token_endpoint_is_spared() {
    // A caller's client follows a redirect to a host that answers 429 for a minute.
    let server = MockServer::start_async().await;
    let elsewhere = MockServer::start_async().await;
    elsewhere.mock(|when, then| {
        when.any_request();
        then.status(429).header("retry-after", "60");
    });
    let target = format!("{}/busy", elsewhere.base_url());
    let mut redirect = server.mock(|when, then| {
        when.method(POST).path(TOKEN_PATH);
        then.status(302).header("location", &target);
    });
    let answers = api(&server);
    let credential = secret_credential(&server).http_client(common::own_http_client());
    let client = builder(&server).credential(credential).build().unwrap();
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(err.to_string().contains("redirected"), "{err}");
    redirect.delete();
    let tokens = token_endpoint(&server, 3599, Duration::ZERO);
    client.user_machines("user1").await.unwrap();
    assert_eq!((tokens.calls(), answers.calls()), (1, 1));

    // A credential that asks a second endpoint when the first is busy: the second's
    // refusal (no Retry-After) is not kept for the first's minute.
    struct Fallback(ClientSecretCredential, ClientSecretCredential);
    #[defender_endpoint::async_trait]
    impl defender_endpoint::TokenCredential for Fallback {
        async fn get_token(
            &self,
            scopes: &[&str],
        ) -> Result<defender_endpoint::AccessToken, Error> {
            match self.0.get_token(scopes).await {
                Err(_) => self.1.get_token(scopes).await,
                ok => ok,
            }
        }
    }
    let busy = MockServer::start_async().await;
    busy.mock(|when, then| {
        when.method(POST).path(TOKEN_PATH);
        then.status(429).header("retry-after", "60");
    });
    let server = MockServer::start_async().await;
    let mut refusing = server.mock(|when, then| {
        when.method(POST).path(TOKEN_PATH);
        then.status(400)
            .header("content-type", "application/json")
            .body(r#"{"error":"invalid_request","error_description":"AADSTS900144: bad"}"#);
    });
    let answers = api(&server);
    let client = builder(&server)
        .credential(Fallback(
            secret_credential(&busy),
            secret_credential(&server),
        ))
        .build()
        .unwrap();
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(err.to_string().contains("AADSTS900144"), "{err}");
    refusing.delete();
    let tokens = token_endpoint(&server, 3599, Duration::ZERO);
    client.user_machines("user1").await.unwrap();
    assert_eq!((tokens.calls(), answers.calls()), (1, 1));
}

#[tokio::test]
async fn bad_configuration_is_reported_before_anything_is_sent() {
    let server = MockServer::start_async().await;
    let tokens = token_endpoint(&server, 3599, Duration::ZERO);

    for url in [
        "http://login.example.com",
        "ftp://127.0.0.1",
        "https://h/?x=1",
    ] {
        let err = ClientSecretCredential::new(TENANT, CLIENT_ID, SECRET)
            .authority_host(url)
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{url}: {err:?}");
    }

    for tenant in ["", "../admin", "a/b", "contoso tenant"] {
        let credential = ClientSecretCredential::new(tenant, CLIENT_ID, SECRET)
            .authority_host(server.base_url())
            .unwrap();
        let err = credential.get_token(&[DEFAULT_SCOPE]).await.unwrap_err();
        assert!(
            matches!(&err, Error::Credential { .. }) && err.to_string().contains("tenant"),
            "{tenant}: {err}"
        );
    }
    let credential = secret_credential(&server);
    assert!(credential.get_token(&[]).await.is_err());
    assert_eq!(tokens.calls(), 0);
}

// ---------------------------------------------------------------- environment

fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| vars.get(name).cloned()
}

fn env_error(vars: &[(&str, &str)]) -> String {
    match EnvironmentCredential::from_lookup(lookup(vars)) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => {
            let text = e.to_string();
            assert!(!format!("{text} {e:?}").contains("SENTINEL"), "{text}");
            text
        }
    }
}

#[test]
fn environment_credential_names_missing_variables() {
    let text = env_error(&[]);
    for name in [
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH",
    ] {
        assert!(text.contains(name), "{text}");
    }

    let text = env_error(&[
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_CLIENT_SECRET", SECRET),
    ]);
    assert!(text.contains("AZURE_TENANT_ID"), "{text}");
    assert!(!text.contains("AZURE_CLIENT_ID"), "{text}");

    let text = env_error(&[("AZURE_TENANT_ID", TENANT), ("AZURE_CLIENT_SECRET", SECRET)]);
    assert!(text.contains("AZURE_CLIENT_ID") && !text.contains("AZURE_TENANT_ID"));

    // Empty counts as unset.
    let text = env_error(&[
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_CLIENT_SECRET", ""),
        ("AZURE_CLIENT_CERTIFICATE_PATH", "  "),
    ]);
    assert!(
        text.contains("AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH")
            && !text.contains("AZURE_TENANT_ID"),
        "{text}"
    );
}

#[test]
fn environment_credential_rejects_unusable_values() {
    fn with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut vars = vec![("AZURE_TENANT_ID", TENANT), ("AZURE_CLIENT_ID", CLIENT_ID)];
        vars.extend_from_slice(extra);
        vars
    }

    let text = env_error(&with(&[
        ("AZURE_CLIENT_SECRET", SECRET),
        ("AZURE_AUTHORITY_HOST", "http://login.example.com"),
    ]));
    assert!(text.contains("AZURE_AUTHORITY_HOST"), "{text}");
    // One with a path on Microsoft's sign-in host: said when the variables
    // are read, naming the variable.
    let text = env_error(&with(&[
        ("AZURE_CLIENT_SECRET", SECRET),
        (
            "AZURE_AUTHORITY_HOST",
            "https://login.microsoftonline.com/common",
        ),
    ]));
    assert!(
        text.contains("AZURE_AUTHORITY_HOST: the authority host") && text.contains("holds a path"),
        "{text}"
    );

    // A tenant id that cannot be one URL path segment: said when the variables
    // are read, not at the first token request.
    for tenant in ["bad tenant/..", "..", "contoso.com/x"] {
        let text = env_error(&[
            ("AZURE_TENANT_ID", tenant),
            ("AZURE_CLIENT_ID", CLIENT_ID),
            ("AZURE_CLIENT_SECRET", SECRET),
        ]);
        assert!(
            text.contains("AZURE_TENANT_ID") && text.contains("invalid tenant id"),
            "{text}"
        );
    }

    // A secret set in the place of an id: refused, and not shown.
    let text = env_error(&[
        ("AZURE_TENANT_ID", SECRET),
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_CLIENT_SECRET", SECRET),
    ]);
    assert!(text.contains("invalid tenant id"), "{text}");
    let text = env_error(&[
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", SECRET),
        ("AZURE_CLIENT_SECRET", CLIENT_ID),
    ]);
    assert!(
        text.contains("AZURE_CLIENT_ID") && text.contains("not a GUID"),
        "{text}"
    );
    for text in [&text, &env_error(&[("AZURE_TENANT_ID", SECRET)])] {
        assert!(!text.contains(SECRET), "{text}");
    }
    // A secret of white space only is no secret: the variables lack one.
    let text = env_error(&[
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_CLIENT_SECRET", " \n"),
    ]);
    assert!(
        text.contains("missing environment variable AZURE_CLIENT_SECRET or"),
        "{text}"
    );

    let missing = "/nonexistent/defender-endpoint/app.pem";
    let text = env_error(&with(&[("AZURE_CLIENT_CERTIFICATE_PATH", missing)]));
    assert!(
        text.contains("AZURE_CLIENT_CERTIFICATE_PATH") && text.contains(missing),
        "{text}"
    );

    let cert = test_cert();
    let file = TempFile::new("env-cert-only.pem", &cert.cert_pem);
    let path = file.0.to_str().unwrap();
    let text = env_error(&with(&[("AZURE_CLIENT_CERTIFICATE_PATH", path)]));
    assert!(text.contains("no private key found"), "{text}");

    let text = env_error(&with(&[
        ("AZURE_CLIENT_CERTIFICATE_PATH", path),
        ("AZURE_CLIENT_CERTIFICATE_PASSWORD", "SENTINEL-pw"),
    ]));
    assert!(text.contains("AZURE_CLIENT_CERTIFICATE_PASSWORD"), "{text}");
}

#[tokio::test]
async fn environment_credential_with_a_secret() {
    let server = MockServer::start_async().await;
    let tokens = token_endpoint(&server, 3599, Duration::ZERO);
    let authority = server.base_url();
    let credential = EnvironmentCredential::from_lookup(lookup(&[
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_CLIENT_SECRET", SECRET),
        // Ignored: a secret wins over a certificate, as in the Azure SDKs.
        ("AZURE_CLIENT_CERTIFICATE_PATH", "/nonexistent.pem"),
        ("AZURE_AUTHORITY_HOST", authority.as_str()),
    ]))
    .unwrap();
    let debug = format!("{credential:?}");
    assert!(debug.contains("ClientSecretCredential"), "{debug}");
    assert!(!debug.contains("SENTINEL"), "{debug}");

    let token = credential.get_token(&["scope-a/.default"]).await.unwrap();
    assert_eq!(token.token.expose_secret(), "tok-1");
    let seen = &tokens.seen()[0];
    assert_eq!(seen.field("client_secret"), Some(SECRET));
    assert_eq!(seen.field("client_id"), Some(CLIENT_ID));
    assert_eq!(seen.field("scope"), Some("scope-a/.default"));
}

#[tokio::test]
async fn environment_credential_with_a_certificate_file() {
    let server = MockServer::start_async().await;
    let tokens = token_endpoint(&server, 3599, Duration::ZERO);
    let cert = test_cert();
    let file = TempFile::new(
        "env-bundle.pem",
        &format!("{}{}", cert.cert_pem, cert.key_pem),
    );
    let authority = server.base_url();
    let credential = EnvironmentCredential::from_lookup(lookup(&[
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_CLIENT_CERTIFICATE_PATH", file.0.to_str().unwrap()),
        ("AZURE_AUTHORITY_HOST", authority.as_str()),
    ]))
    .unwrap();
    assert!(format!("{credential:?}").contains("ClientCertificateCredential"));

    credential.get_token(&[DEFAULT_SCOPE]).await.unwrap();
    let seen = &tokens.seen()[0];
    assert_eq!(seen.field("client_assertion_type"), Some(JWT_BEARER));
    assert_eq!(seen.field("client_secret"), None);
}

#[test]
fn environment_credential_defaults_to_the_commercial_authority() {
    let credential = EnvironmentCredential::from_lookup(lookup(&[
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_CLIENT_SECRET", SECRET),
    ]))
    .unwrap();
    assert!(format!("{credential:?}").contains(DEFAULT_AUTHORITY_HOST));

    let credential = EnvironmentCredential::from_lookup(lookup(&[
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_CLIENT_SECRET", SECRET),
        ("AZURE_AUTHORITY_HOST", "login.microsoftonline.us"),
    ]))
    .unwrap();
    assert!(format!("{credential:?}").contains("https://login.microsoftonline.us"));
}

/// `from_env` reads the real process environment. The variables are set for a
/// child process running [`from_env_in_a_child_process`], so that no test of
/// this process ever changes its own environment.
#[test]
fn from_env_reads_the_process_environment() {
    let run = |vars: &[(&str, &std::ffi::OsStr)], expect: &str| {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "from_env_in_a_child_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("DEFENDER_ENDPOINT_EXPECT", expect);
        for name in [
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_ID",
            "AZURE_CLIENT_SECRET",
            "AZURE_CLIENT_CERTIFICATE_PATH",
            "AZURE_CLIENT_CERTIFICATE_PASSWORD",
            "AZURE_AUTHORITY_HOST",
        ] {
            command.env_remove(name);
        }
        command.envs(vars.iter().copied());
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "child failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("1 passed"),
            "the child ran no test"
        );
    };
    let os = std::ffi::OsStr::new;
    run(
        &[
            ("AZURE_TENANT_ID", os(TENANT)),
            ("AZURE_CLIENT_ID", os(CLIENT_ID)),
            ("AZURE_CLIENT_SECRET", os(SECRET)),
        ],
        "ClientSecretCredential",
    );
    run(
        &[("AZURE_CLIENT_ID", os(CLIENT_ID))],
        "error:AZURE_TENANT_ID",
    );
    // A value that is not UTF-8 is named as such, not taken as unset.
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        run(
            &[
                ("AZURE_TENANT_ID", os(TENANT)),
                ("AZURE_CLIENT_ID", os(CLIENT_ID)),
                (
                    "AZURE_CLIENT_CERTIFICATE_PATH",
                    std::ffi::OsStr::from_bytes(b"/tmp/caf\xe9.pem"),
                ),
            ],
            "error:AZURE_CLIENT_CERTIFICATE_PATH is set, but not to valid UTF-8",
        );
        // Beside a secret, which is then used, the path is not read at all.
        run(
            &[
                ("AZURE_TENANT_ID", os(TENANT)),
                ("AZURE_CLIENT_ID", os(CLIENT_ID)),
                ("AZURE_CLIENT_SECRET", os(SECRET)),
                (
                    "AZURE_CLIENT_CERTIFICATE_PATH",
                    std::ffi::OsStr::from_bytes(b"/tmp/caf\xe9.pem"),
                ),
            ],
            "ClientSecretCredential",
        );
        run(
            &[
                ("AZURE_TENANT_ID", os(TENANT)),
                ("AZURE_CLIENT_ID", os(CLIENT_ID)),
                ("AZURE_CLIENT_SECRET", os(SECRET)),
                (
                    "AZURE_AUTHORITY_HOST",
                    std::ffi::OsStr::from_bytes(b"https://login.\xff.example"),
                ),
            ],
            "error:AZURE_AUTHORITY_HOST is set, but not to valid UTF-8",
        );
    }
}

#[test]
#[ignore = "run by from_env_reads_the_process_environment in a child process"]
fn from_env_in_a_child_process() {
    let expect = std::env::var("DEFENDER_ENDPOINT_EXPECT").unwrap();
    match (
        EnvironmentCredential::from_env(),
        expect.strip_prefix("error:"),
    ) {
        (Ok(c), None) => assert!(format!("{c:?}").contains(&expect), "{c:?}"),
        (Err(e), Some(name)) => assert!(e.to_string().contains(name), "{e}"),
        (result, _) => panic!("unexpected {result:?} for {expect}"),
    }
}

// ---------------------------------------------------------------- clouds

#[test]
fn every_cloud_has_its_three_values() {
    let commercial_scope = "https://api.securitycenter.microsoft.com/.default";
    let public_login = "https://login.microsoftonline.com";
    let gov_login = "https://login.microsoftonline.us";
    let mut table = vec![
        (
            Cloud::Commercial,
            "https://api.security.microsoft.com",
            public_login,
            commercial_scope,
        ),
        (
            Cloud::UsGovGcc,
            "https://api-gcc.securitycenter.microsoft.us",
            public_login,
            "https://api-gcc.securitycenter.microsoft.us/.default",
        ),
        (
            Cloud::UsGovGccHigh,
            "https://api-gov.securitycenter.microsoft.us",
            gov_login,
            "https://api-gov.securitycenter.microsoft.us/.default",
        ),
        (
            Cloud::UsGovDod,
            "https://api-gov.securitycenter.microsoft.us",
            gov_login,
            "https://api-gov.securitycenter.microsoft.us/.default",
        ),
    ];
    let geo = [
        (Region::Us, "https://us.api.security.microsoft.com"),
        (Region::Eu, "https://eu.api.security.microsoft.com"),
        (Region::Uk, "https://uk.api.security.microsoft.com"),
        (Region::Au, "https://au.api.security.microsoft.com"),
        (Region::Swa, "https://swa.api.security.microsoft.com"),
        (Region::Ina, "https://ina.api.security.microsoft.com"),
        (Region::Aea, "https://aea.api.security.microsoft.com"),
    ];
    for (region, base) in geo {
        table.push((Cloud::Geo(region), base, public_login, commercial_scope));
    }
    for (cloud, base, authority, scope) in &table {
        assert_eq!(cloud.api_base(), *base, "{cloud}");
        assert_eq!(cloud.authority_host(), *authority, "{cloud}");
        assert_eq!(cloud.scope(), *scope, "{cloud}");
    }
    assert_eq!(Cloud::default(), Cloud::Commercial);
    assert_eq!(Cloud::Commercial.scope(), DEFAULT_SCOPE);
    assert_eq!(Cloud::Commercial.authority_host(), DEFAULT_AUTHORITY_HOST);

    let custom = Cloud::Custom {
        api_base: "https://proxy.contoso.com/defender".into(),
        authority_host: "https://login.contoso.com".into(),
        scope: "api://defender/.default".into(),
    };
    assert_eq!(custom.api_base(), "https://proxy.contoso.com/defender");
    assert_eq!(custom.authority_host(), "https://login.contoso.com");
    assert_eq!(custom.scope(), "api://defender/.default");
}

#[test]
fn a_base_url_of_another_clouds_api_is_refused() {
    // An app credential, which asks for the scope, at the sign-in of `login`.
    let app = |login: &str| {
        ClientSecretCredential::new(TENANT, CLIENT_ID, SECRET)
            .authority_host(login)
            .unwrap()
    };
    let (public_login, gov_login) = (
        "https://login.microsoftonline.com",
        "https://login.microsoftonline.us",
    );
    let build = |cloud: Option<Cloud>,
                 base: &str,
                 scope: Option<&str>,
                 credential: Arc<dyn TokenCredential>| {
        let mut builder = Client::builder().base_url(base).credential(credential);
        if let Some(cloud) = cloud {
            builder = builder.cloud(cloud);
        }
        if let Some(scope) = scope {
            builder = builder.scope(scope);
        }
        // The error, if any: a client is not wanted.
        builder.build().err()
    };
    let gov = "https://api-gov.securitycenter.microsoft.us";
    let gcc = "https://api-gcc.securitycenter.microsoft.us";
    // (cloud, base URL, the credential's sign-in, what the message must name)
    for (cloud, base, login, named) in [
        (
            None,
            gov,
            public_login,
            r#"ClientBuilder::cloud(Cloud::UsGovGccHigh (or Cloud::UsGovDod)), and give the credential .authority_host("https://login.microsoftonline.us")"#,
        ),
        (
            None,
            "https://API-GCC.security.microsoft.us./",
            public_login,
            "ClientBuilder::cloud(Cloud::UsGovGcc)",
        ),
        (
            Some(Cloud::Geo(Region::Eu)),
            gov,
            gov_login,
            "ClientBuilder::cloud(Cloud::UsGovGccHigh (or Cloud::UsGovDod))",
        ),
        (
            Some(Cloud::UsGovGcc),
            gov,
            public_login,
            "Cloud::UsGovDod)), and give the credential .authority_host(",
        ),
        (
            Some(Cloud::UsGovGccHigh),
            gcc,
            gov_login,
            r#"ClientBuilder::cloud(Cloud::UsGovGcc), and give the credential .authority_host("https://login.microsoftonline.com")"#,
        ),
        (
            Some(Cloud::UsGovDod),
            "https://api.security.microsoft.com",
            gov_login,
            r#"ClientBuilder::cloud(Cloud::Commercial (or its Cloud::Geo)), and give the credential .authority_host("https://login.microsoftonline.com")"#,
        ),
        (
            Some(Cloud::UsGovGcc),
            "https://eu.api.security.microsoft.com",
            public_login,
            "ClientBuilder::cloud(Cloud::Commercial (or its Cloud::Geo))",
        ),
        (
            Some(Cloud::UsGovGcc),
            "https://api-us.securitycenter.microsoft.com",
            public_login,
            "Cloud::Commercial",
        ),
    ] {
        match build(cloud.clone(), base, None, Arc::new(app(login))) {
            Some(Error::Config(message)) => {
                assert!(message.contains("another cloud"), "{message}");
                assert!(message.contains(named), "{message}");
                // Only the fix that is needed.
                if !named.contains("authority_host") {
                    assert!(!message.contains("authority_host"), "{message}");
                }
            }
            other => panic!("{cloud:?} with {base}: {other:?}"),
        }
    }
    // A credential signing in at a host this crate does not know is not told
    // which Microsoft sign-in to use.
    let unknown = ClientSecretCredential::new(TENANT, CLIENT_ID, SECRET)
        .authority_host("https://login.example.net")
        .unwrap();
    match build(None, gov, None, Arc::new(unknown)) {
        Some(Error::Config(message)) => {
            assert!(message.contains("Cloud::UsGovGccHigh"), "{message}");
            assert!(!message.contains("authority_host"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // A credential of the caller's own is asked for the scope too.
    match build(None, gov, None, Arc::new(Recording::default())) {
        Some(Error::Config(message)) => {
            assert!(message.contains("another cloud"), "{message}");
            assert!(message.contains("Cloud::UsGovGccHigh"), "{message}");
            assert!(!message.contains("authority_host"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // The cloud that the host is, a scope of the caller's own, a custom cloud,
    // a host this crate does not know, or a credential that need not ask for
    // the scope (a token minted elsewhere): built as asked.
    let token = || -> Arc<dyn TokenCredential> { Arc::new(StaticToken::new("t")) };
    for (cloud, base, scope, credential) in [
        (
            None,
            "https://api.security.microsoft.com",
            None,
            Arc::new(app(public_login)) as Arc<dyn TokenCredential>,
        ),
        (
            None,
            "https://api.securitycenter.microsoft.com",
            None,
            Arc::new(app(public_login)),
        ),
        (
            None,
            "https://uk.api.security.microsoft.com/",
            None,
            Arc::new(app(public_login)),
        ),
        (
            None,
            "https://api-eu.securitycenter.microsoft.com",
            None,
            Arc::new(app(public_login)),
        ),
        (
            Some(Cloud::Geo(Region::Au)),
            "https://api.security.microsoft.com",
            None,
            Arc::new(app(public_login)),
        ),
        (
            Some(Cloud::UsGovGccHigh),
            gov,
            None,
            Arc::new(app(gov_login)),
        ),
        (
            Some(Cloud::UsGovDod),
            "https://api-gov.security.microsoft.us",
            None,
            Arc::new(app(gov_login)),
        ),
        (
            Some(Cloud::UsGovGcc),
            gcc,
            None,
            Arc::new(app(public_login)),
        ),
        (
            None,
            gov,
            Some("https://api-gov.securitycenter.microsoft.us/.default"),
            Arc::new(app(public_login)),
        ),
        (
            Some(Cloud::Custom {
                api_base: gov.into(),
                authority_host: gov_login.into(),
                scope: "api://proxy/.default".into(),
            }),
            gov,
            None,
            Arc::new(app(gov_login)),
        ),
        (
            Some(Cloud::UsGovGcc),
            "https://proxy.contoso.com/defender",
            None,
            Arc::new(app(public_login)),
        ),
        (
            None,
            "https://api.security.microsoft.com.evil.example",
            None,
            Arc::new(app(public_login)),
        ),
        (None, gov, None, token()),
        (
            Some(Cloud::UsGovGcc),
            "https://api.security.microsoft.com",
            None,
            token(),
        ),
    ] {
        if let Some(e) = build(cloud.clone(), base, scope, credential) {
            panic!("{cloud:?} with {base} and {scope:?}: {e}");
        }
    }
}

/// The API's own hosts serve it at their root: a path there (the client adds
/// `/api/users/…` itself) or a port would find nothing, which reads as a user
/// without machines.
#[test]
fn a_base_url_on_the_apis_own_host_with_a_path_or_a_port_is_refused() {
    // The error, if any: a client is not wanted.
    let build = |base: &str| {
        Client::builder()
            .base_url(base)
            .credential(StaticToken::new("t"))
            .build()
            .err()
    };
    for (base, what, origin) in [
        (
            "https://api.security.microsoft.com/api",
            "a path (/api)",
            "https://api.security.microsoft.com ",
        ),
        (
            "https://api.security.microsoft.com/api/",
            "a path (/api)",
            "https://api.security.microsoft.com ",
        ),
        (
            "https://API.Security.Microsoft.com./api/users/user1/machines",
            "a path (/api/users/user1/machines)",
            "https://api.security.microsoft.com. ",
        ),
        (
            "https://eu.api.security.microsoft.com:8443",
            "a port (8443)",
            "https://eu.api.security.microsoft.com ",
        ),
        (
            "https://api-gov.securitycenter.microsoft.us/v1.0",
            "a path (/v1.0)",
            "https://api-gov.securitycenter.microsoft.us ",
        ),
        (
            "https://api.securitycenter.microsoft.com:8443/api",
            "a path (/api)",
            "https://api.securitycenter.microsoft.com ",
        ),
    ] {
        match build(base) {
            Some(Error::Config(message)) => {
                assert!(message.contains(what), "{base}: {message}");
                assert!(
                    message.contains(&format!("give {origin}")),
                    "{base}: {message}"
                );
            }
            other => panic!("{base}: {other:?}"),
        }
    }
    // A custom cloud whose API base is one of those hosts with a path.
    let custom = Client::builder()
        .cloud(Cloud::Custom {
            api_base: "https://api.security.microsoft.com/api".into(),
            authority_host: "https://login.microsoftonline.com".into(),
            scope: "https://api.securitycenter.microsoft.com/.default".into(),
        })
        .credential(StaticToken::new("t"))
        .build()
        .err();
    match custom {
        Some(Error::Config(message)) => assert!(message.contains("a path (/api)"), "{message}"),
        other => panic!("{other:?}"),
    }
    // The host alone (a trailing `/`, the default port written out), and a
    // path on a host that is not the API's (a proxy): built as given.
    for base in [
        "https://api.security.microsoft.com/",
        "https://api.security.microsoft.com:443",
        "https://proxy.contoso.com/api",
        "https://api.security.microsoft.com.proxy.example/api",
    ] {
        if let Some(e) = build(base) {
            panic!("{base}: {e}");
        }
    }
}

#[test]
fn clouds_parse_from_their_names() {
    for (name, cloud) in [
        ("commercial", Cloud::Commercial),
        ("Commercial", Cloud::Commercial),
        ("us", Cloud::Geo(Region::Us)),
        ("EU", Cloud::Geo(Region::Eu)),
        ("uk", Cloud::Geo(Region::Uk)),
        ("au", Cloud::Geo(Region::Au)),
        ("swa", Cloud::Geo(Region::Swa)),
        ("ina", Cloud::Geo(Region::Ina)),
        ("aea", Cloud::Geo(Region::Aea)),
        ("gcc", Cloud::UsGovGcc),
        ("GCC-High", Cloud::UsGovGccHigh),
        (" dod ", Cloud::UsGovDod),
    ] {
        assert_eq!(name.parse::<Cloud>().unwrap(), cloud, "{name}");
        assert_eq!(cloud.to_string().parse::<Cloud>().unwrap(), cloud);
    }
    for bad in ["", "azure", "gcc high", "usgov", "china"] {
        let err = bad.parse::<Cloud>().unwrap_err();
        let text = err.to_string();
        for name in ["commercial", "eu", "gcc", "gcc-high", "dod"] {
            assert!(text.contains(name), "{text}");
        }
    }
}

/// A credential that records the scopes it is asked for.
#[derive(Debug, Default)]
struct Recording {
    scopes: Mutex<Vec<String>>,
}

#[defender_endpoint::async_trait]
impl TokenCredential for Recording {
    async fn get_token(&self, scopes: &[&str]) -> Result<AccessToken, Error> {
        self.scopes
            .lock()
            .unwrap()
            .extend(scopes.iter().map(|s| s.to_string()));
        Ok(AccessToken::never_expires("recorded"))
    }
}

#[tokio::test]
async fn builder_cloud_sets_base_and_scope_and_base_url_overrides_the_base_alone() {
    let built = Client::builder()
        .cloud(Cloud::UsGovGcc)
        .credential(StaticToken::new("t"))
        .build()
        .unwrap();
    assert_eq!(
        built.base_url(),
        "https://api-gcc.securitycenter.microsoft.us"
    );
    let debug = format!("{built:?}");
    assert!(
        debug.contains("https://api-gcc.securitycenter.microsoft.us/.default"),
        "{debug}"
    );

    let eu = Client::builder()
        .cloud("eu".parse().unwrap())
        .credential(StaticToken::new("t"))
        .build()
        .unwrap();
    assert_eq!(eu.base_url(), "https://eu.api.security.microsoft.com");

    // base_url before or after cloud: the base is overridden, the scope is the cloud's.
    let server = MockServer::start_async().await;
    let api = api(&server);
    for base_url_first in [true, false] {
        let credential = Arc::new(Recording::default());
        let mut b = Client::builder().rate_limit(RateLimit::none());
        if base_url_first {
            b = b.base_url(server.base_url()).cloud(Cloud::UsGovGccHigh);
        } else {
            b = b.cloud(Cloud::UsGovGccHigh).base_url(server.base_url());
        }
        let client = b.credential(Arc::clone(&credential)).build().unwrap();
        assert_eq!(client.base_url(), server.base_url());
        client.user_machines("user1").await.unwrap();
        assert_eq!(
            *credential.scopes.lock().unwrap(),
            ["https://api-gov.securitycenter.microsoft.us/.default"]
        );
    }
    assert_eq!(api.calls(), 2);

    // An explicit scope wins over the cloud's.
    let credential = Arc::new(Recording::default());
    let client = Client::builder()
        .scope("api://custom/.default")
        .cloud(Cloud::UsGovDod)
        .base_url(server.base_url())
        .rate_limit(RateLimit::none())
        .credential(Arc::clone(&credential))
        .build()
        .unwrap();
    client.user_machines("user1").await.unwrap();
    assert_eq!(
        *credential.scopes.lock().unwrap(),
        ["api://custom/.default"]
    );
}

// ---------------------------------------------------------------- secrets never print

#[tokio::test]
async fn debug_never_shows_secret_material() {
    let server = MockServer::start_async().await;
    let _tokens = server.mock(|when, then| {
        when.method(POST).path(TOKEN_PATH);
        then.status(200).json_body(json!({
            "token_type": "Bearer",
            "expires_in": 3599,
            "access_token": "SENTINEL-access-token",
        }));
    });
    let _api = api(&server);
    let cert = test_cert();
    let key_lines: Vec<&str> = cert
        .key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();

    let secret = secret_credential(&server);
    let certificate =
        ClientCertificateCredential::from_pem(TENANT, CLIENT_ID, &cert.cert_pem, &cert.key_pem)
            .unwrap()
            .authority_host(server.base_url())
            .unwrap();
    let environment = EnvironmentCredential::from_lookup(lookup(&[
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_CLIENT_SECRET", SECRET),
    ]))
    .unwrap();
    let token = secret.get_token(&[DEFAULT_SCOPE]).await.unwrap();
    assert_eq!(token.token.expose_secret(), "SENTINEL-access-token");

    let builder = builder(&server).credential(secret.clone());
    let client = builder.clone().build().unwrap();
    client.user_machines("user1").await.unwrap(); // the token is now cached

    let shown = [
        format!("{secret:?}"),
        format!("{secret:#?}"),
        format!("{certificate:?}"),
        format!("{certificate:#?}"),
        format!("{environment:?}"),
        format!("{environment:#?}"),
        format!("{token:?}"),
        format!("{token:#?}"),
        format!("{builder:?}"),
        format!("{client:?}"),
        format!("{client:#?}"),
        format!("{:?}", StaticToken::new("SENTINEL-static")),
    ];
    for text in &shown {
        assert!(!text.contains("SENTINEL"), "{text}");
        for line in &key_lines {
            assert!(!text.contains(line), "key material in {text}");
        }
    }
    // What is shown helps: ids, authority and thumbprint.
    assert!(shown[0].contains(CLIENT_ID) && shown[0].contains(TENANT));
    assert!(shown[2].contains(&certificate.thumbprint()));
}

// ---------------------------------------------------------------- feature `azure`

#[cfg(feature = "azure")]
mod azure {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    };

    use azure_core::{
        credentials::{self, TokenRequestOptions},
        error::ErrorKind,
        http::StatusCode,
        time::{Duration as AzDuration, OffsetDateTime},
    };
    use defender_endpoint::{AzureCredential, Client, Error, RateLimit, DEFAULT_SCOPE};
    use httpmock::MockServer;

    /// A hand-written azure_core credential: issues `az-1`, `az-2`, … that expire
    /// `lifetime` from now, or fails when `fail` is set. Its `Debug` shows its
    /// secret on purpose, to prove the adapter does not forward it.
    #[derive(Debug)]
    struct Handmade {
        lifetime: AzDuration,
        fail: bool,
        #[allow(dead_code)] // only shown by `Debug`
        secret: &'static str,
        calls: AtomicUsize,
        scopes: Mutex<Vec<String>>,
    }

    impl Handmade {
        fn new(lifetime: AzDuration) -> Arc<Self> {
            Arc::new(Self {
                lifetime,
                fail: false,
                secret: "SENTINEL-azure-secret",
                calls: AtomicUsize::new(0),
                scopes: Mutex::new(Vec::new()),
            })
        }
    }

    #[async_trait::async_trait]
    impl credentials::TokenCredential for Handmade {
        async fn get_token(
            &self,
            scopes: &[&str],
            _options: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<credentials::AccessToken> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            self.scopes
                .lock()
                .unwrap()
                .extend(scopes.iter().map(|s| s.to_string()));
            if self.fail {
                return Err(azure_core::Error::with_message(
                    ErrorKind::HttpResponse {
                        status: StatusCode::BadRequest,
                        error_code: Some("invalid_request".into()),
                        raw_response: None,
                    },
                    "no managed identity endpoint found",
                ));
            }
            Ok(credentials::AccessToken::new(
                format!("az-{n}"),
                OffsetDateTime::now_utc() + self.lifetime,
            ))
        }
    }

    fn api<'a>(server: &'a MockServer, token: &str) -> httpmock::Mock<'a> {
        let header = format!("Bearer {token}");
        server.mock(move |when, then| {
            when.path(super::API_PATH).header("authorization", header);
            then.status(200).body(r#"{"value":[]}"#);
        })
    }

    fn client(server: &MockServer, credential: Arc<Handmade>) -> Client {
        let credential: Arc<dyn credentials::TokenCredential> = credential;
        Client::builder()
            .base_url(server.base_url())
            .rate_limit(RateLimit::none())
            .credential(AzureCredential::new(credential))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn an_azure_credential_is_asked_for_the_scope_and_cached() {
        let server = MockServer::start_async().await;
        let api = api(&server, "az-1");
        let credential = Handmade::new(AzDuration::hours(1));
        let client = client(&server, Arc::clone(&credential));
        for _ in 0..3 {
            client.user_machines("user1").await.unwrap();
        }
        assert_eq!(api.calls(), 3);
        assert_eq!(credential.calls.load(Ordering::SeqCst), 1);
        assert_eq!(*credential.scopes.lock().unwrap(), [DEFAULT_SCOPE]);
    }

    /// The `Arc` an `azure_identity` credential comes in goes to the builder as it is.
    #[tokio::test]
    async fn the_builder_takes_an_azure_credential_as_it_is() {
        let server = MockServer::start_async().await;
        let api = api(&server, "az-1");
        let credential: Arc<dyn credentials::TokenCredential> = Handmade::new(AzDuration::hours(1));
        let client = Client::builder()
            .base_url(server.base_url())
            .rate_limit(RateLimit::none())
            .credential(credential)
            .build()
            .unwrap();
        client.user_machines("user1").await.unwrap();
        assert_eq!(api.calls(), 1);
    }

    /// An `azure_core` credential is asked for the cloud's scope, so a base URL of
    /// another cloud's API is refused, in both of the forms the builder takes.
    #[test]
    fn another_clouds_api_is_refused_for_an_azure_credential() {
        let gov = "https://api-gov.securitycenter.microsoft.us";
        let as_is: Arc<dyn credentials::TokenCredential> = Handmade::new(AzDuration::hours(1));
        let adapted = AzureCredential::new(Arc::clone(&as_is));
        for built in [
            Client::builder().base_url(gov).credential(as_is).build(),
            Client::builder().base_url(gov).credential(adapted).build(),
        ] {
            match built {
                Err(Error::Config(message)) => {
                    assert!(message.contains("another cloud"), "{message}");
                    assert!(message.contains("Cloud::UsGovGccHigh"), "{message}");
                }
                other => panic!("{:?}", other.err()),
            }
        }
    }

    #[tokio::test]
    async fn an_expired_azure_token_is_fetched_again() {
        let server = MockServer::start_async().await;
        let first = api(&server, "az-1");
        let second = api(&server, "az-2");
        let credential = Handmade::new(AzDuration::seconds(-5));
        let client = client(&server, Arc::clone(&credential));
        client.user_machines("user1").await.unwrap();
        client.user_machines("user1").await.unwrap();
        assert_eq!(credential.calls.load(Ordering::SeqCst), 2);
        assert_eq!((first.calls(), second.calls()), (1, 1));
    }

    #[tokio::test]
    async fn azure_failures_become_credential_errors() {
        let server = MockServer::start_async().await;
        let api = api(&server, "az-1");
        let credential = Arc::new(Handmade {
            fail: true,
            ..Arc::into_inner(Handmade::new(AzDuration::hours(1))).unwrap()
        });
        let client = client(&server, Arc::clone(&credential));
        let err = client.user_machines("user1").await.unwrap_err();
        match &err {
            Error::Credential {
                message,
                status,
                code,
                ..
            } => {
                assert!(
                    message.contains("no managed identity endpoint"),
                    "{message}"
                );
                assert_eq!(*status, Some(400));
                assert_eq!(code.as_deref(), Some("invalid_request"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(api.calls(), 0);
    }

    #[test]
    fn the_adapter_does_not_show_the_wrapped_credential() {
        let inner: Arc<dyn credentials::TokenCredential> = Handmade::new(AzDuration::hours(1));
        assert!(format!("{inner:?}").contains("SENTINEL"));
        let adapter = AzureCredential::from(inner);
        assert!(!format!("{adapter:?} {adapter:#?}").contains("SENTINEL"));
    }
}

/// A client signing in at `server`'s token endpoint, with attempts of 1 s.
fn with_1s_attempts(server: &MockServer, retry: RetryPolicy) -> Client {
    builder(server)
        .credential(secret_credential(server))
        .timeout(Duration::from_secs(1))
        .retry(retry)
        .build()
        .unwrap()
}

/// A token request made for a call is part of its attempt: a token endpoint that
/// does not answer costs the attempt's timeout, not the credential's 30 s.
#[tokio::test]
async fn a_silent_token_endpoint_costs_the_attempt_timeout() {
    let server = MockServer::start_async().await;
    let tokens = token_endpoint(&server, 3599, Duration::from_secs(60));
    let answers = api(&server);
    let client = with_1s_attempts(&server, RetryPolicy::none());
    let started = std::time::Instant::now();
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(matches!(err, Error::Timeout), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(tokens.calls(), 1);
    assert_eq!(answers.calls(), 0);
}

/// A token endpoint slower than an attempt's timeout: the attempt times out,
/// but the token request goes on, and the next attempt gets its token instead
/// of asking again.
#[tokio::test]
async fn a_token_request_outlives_an_attempt_that_timed_out() {
    let server = MockServer::start_async().await;
    let tokens = token_endpoint(&server, 3599, Duration::from_millis(1_500));
    let answers = api(&server);
    let retry = common::quick_retries(4).budget(Duration::from_secs(30));
    let client = with_1s_attempts(&server, retry);
    client.user_machines("user1").await.unwrap();
    assert_eq!(tokens.calls(), 1);
    assert_eq!(answers.calls(), 1);
    assert!(client.stats().attempts >= 2, "{:?}", client.stats());
}
