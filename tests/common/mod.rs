//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::{io::Write, path::PathBuf, time::Duration};

use defender_endpoint::{Client, ClientBuilder, RateLimit, RetryPolicy, StaticToken};

/// The bearer token the test clients send.
pub const TOKEN: &str = "test-token-7d1f0e";

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A fixture's text.
pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name)).unwrap()
}

/// A fixture as JSON.
pub fn fixture_json(name: &str) -> serde_json::Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

/// The seed's response body: the machines of `user1`.
pub fn seed() -> serde_json::Value {
    fixture_json("seed-user-machines.json")
}

/// A builder pointed at `server` with a static token, no quota and no retries.
pub fn builder(server: &httpmock::MockServer) -> ClientBuilder {
    Client::builder()
        .base_url(server.base_url())
        .credential(StaticToken::new(TOKEN))
        .rate_limit(RateLimit::none())
        .retry(RetryPolicy::none())
}

pub fn client(server: &httpmock::MockServer) -> Client {
    builder(server).build().unwrap()
}

/// A `reqwest::Client` of the caller's own for the loopback test servers: plain
/// http, so it must not consult the environment's proxies (the client refuses one
/// that may).
pub fn own_http_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Fast retries for tests: `attempts` in all, short backoff.
pub fn quick_retries(attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(attempts)
        .base_delay(Duration::from_millis(10))
        .max_delay(Duration::from_millis(50))
}

/// zlib-wrapped deflate, which is what `Content-Encoding: deflate` means in HTTP.
pub fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The OpenAPI document, `openapi/defender.yaml`, as JSON.
pub fn spec() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/openapi/defender.yaml"
    ))
    .unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}
