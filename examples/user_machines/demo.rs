//! The local stand-in for Defender for Endpoint behind `--demo`.
//!
//! It behaves like the real service in the ways the client has to cope with:
//!
//! - a token endpoint (`POST /{tenant}/oauth2/v2.0/token`, client credentials)
//!   that issues [`DEMO_TOKEN`];
//! - a bearer check: a request without `Authorization: Bearer <DEMO_TOKEN>`
//!   gets 401 with Defender's error envelope;
//! - `GET /api/users/{id}/machines`, every answer `Content-Encoding: deflate`
//!   (zlib), as in the recorded response of the API:
//!   - `user1` gets the two machines of that recording
//!     (`tests/fixtures/seed-user-machines.json`);
//!   - `blocked` gets 403 Forbidden with a `target` tracking id;
//!   - every other user gets 0 to 3 synthetic machines, always the same ones for
//!     the same name; some users' first request is answered 429 with
//!     `Retry-After: 1`, so the client's retry path shows.

use std::{
    collections::HashSet,
    io::Write,
    sync::{Arc, Mutex},
};

use flate2::{write::ZlibEncoder, Compression};
use httpmock::{HttpMockRequest, HttpMockResponse, Method::GET, Method::POST, MockServer};
use serde_json::{json, Value};

/// The bearer token the stand-in's token endpoint issues and its API accepts.
pub const DEMO_TOKEN: &str = "demo-token-6a1f0c";
/// The tenant id the token endpoint serves.
pub const DEMO_TENANT: &str = "00000000-0000-4000-8000-00000000d3e0";
/// The client id the token endpoint accepts.
pub const DEMO_CLIENT_ID: &str = "11111111-1111-4111-8111-11111111d3e0";
/// The client secret the token endpoint accepts.
pub const DEMO_CLIENT_SECRET: &str = "demo-secret";
/// The user whose machines are the recorded ones of the API's documentation.
const SEED_USER: &str = "user1";
/// A user whose lookups Defender refuses (403).
const BLOCKED_USER: &str = "blocked";
/// The tracking id of the refusal.
const BLOCKED_TARGET: &str = "43f4cb08-8fac-4b65-9ecc-2d9a8b1ab8a4";

/// The recorded answer for `user1`: exactly the `json_body` of the API's example.
const SEED: &str = include_str!("../../tests/fixtures/seed-user-machines.json");

/// A running stand-in. It stops when dropped.
pub struct Demo {
    server: MockServer,
}

impl Demo {
    /// Starts the stand-in on a free loopback port.
    pub async fn start() -> Demo {
        let server = MockServer::start_async().await;
        let throttled_once = Arc::new(Mutex::new(HashSet::<String>::new()));

        server
            .mock_async(|when, then| {
                when.method(POST)
                    .path(format!("/{DEMO_TENANT}/oauth2/v2.0/token"))
                    .form_urlencoded_tuple("grant_type", "client_credentials")
                    .form_urlencoded_tuple("client_id", DEMO_CLIENT_ID)
                    .form_urlencoded_tuple("client_secret", DEMO_CLIENT_SECRET);
                then.status(200)
                    .header("content-type", "application/json; charset=utf-8")
                    .json_body(json!({
                        "token_type": "Bearer",
                        "expires_in": 3599,
                        "ext_expires_in": 3599,
                        "access_token": DEMO_TOKEN,
                    }));
            })
            .await;
        server
            .mock_async(|when, then| {
                when.method(POST).path_suffix("/oauth2/v2.0/token");
                then.status(401)
                    .header("content-type", "application/json; charset=utf-8")
                    .json_body(json!({
                        "error": "invalid_client",
                        "error_description": "AADSTS7000215: Invalid client secret provided.",
                        "error_codes": [7000215],
                        "trace_id": "8e1c52a4-2d33-4c2f-a1c0-5e0fd3a4e001",
                        "correlation_id": "0d7d3d5e-4f7a-4a55-9a52-2e5a7f1c9d01",
                    }));
            })
            .await;
        server
            .mock_async(move |when, then| {
                when.method(GET)
                    .path_prefix("/api/users/")
                    .path_suffix("/machines");
                then.respond_with(move |request| machines(request, &throttled_once));
            })
            .await;
        Demo { server }
    }

    /// The API base URL to give the client.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The sign-in authority to give a credential (its token endpoint is
    /// `{authority}/{DEMO_TENANT}/oauth2/v2.0/token`).
    pub fn authority_host(&self) -> String {
        self.server.base_url()
    }
}

/// Answers `GET /api/users/{id}/machines`.
fn machines(
    request: &HttpMockRequest,
    throttled_once: &Mutex<HashSet<String>>,
) -> HttpMockResponse {
    let authorized = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {DEMO_TOKEN}"));
    if !authorized {
        return error(
            401,
            "Unauthorized",
            "Authorization has been denied for this request.",
        );
    }
    let path = request.uri().path().to_owned();
    let segment = path
        .strip_prefix("/api/users/")
        .and_then(|rest| rest.strip_suffix("/machines"))
        .unwrap_or_default();
    let user = percent_decode(segment);

    if user == BLOCKED_USER {
        return error(
            403,
            "Forbidden",
            "The application does not have the Machine.Read.All permission.",
        );
    }
    if user != SEED_USER && hash(&user) % 5 == 2 {
        let mut seen = throttled_once.lock().unwrap_or_else(|e| e.into_inner());
        if seen.insert(user.clone()) {
            return HttpMockResponse::builder()
                .status(429)
                .header("retry-after", "1")
                .header("content-type", "application/json; charset=utf-8")
                .body(
                    json!({"error": {
                        "code": "TooManyRequests",
                        "message": "Rate limit is exceeded. Try again in 1 seconds.",
                        "target": format!("{:08x}-0000-4000-8000-{:012x}", hash(&user) as u32, hash(&user) >> 16),
                    }})
                    .to_string(),
                )
                .build();
        }
    }

    let body = if user == SEED_USER {
        SEED.to_owned()
    } else {
        json!({
            "@odata.context": "https://api.security.microsoft.com/api/$metadata#Machines",
            "value": synthetic_machines(&user),
        })
        .to_string()
    };
    HttpMockResponse::builder()
        .status(200)
        .header(
            "content-type",
            "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8",
        )
        .header("content-encoding", "deflate")
        .header("vary", "Accept-Encoding")
        .header("odata-version", "4.0")
        .body(deflate(body.as_bytes()))
        .build()
}

/// An answer with Defender's error envelope.
fn error(status: u16, code: &str, message: &str) -> HttpMockResponse {
    HttpMockResponse::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(
            json!({"error": {"code": code, "message": message, "target": BLOCKED_TARGET}})
                .to_string(),
        )
        .build()
}

/// zlib-wrapped deflate, which is what HTTP's `deflate` means.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&segment[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// FNV-1a: the same name always gives the same machines.
fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64, a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A timestamp as the API writes it: 7 fractional digits and `Z`.
fn api_timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    use chrono::Timelike;
    format!(
        "{}.{:07}Z",
        at.format("%Y-%m-%dT%H:%M:%S"),
        at.nanosecond() % 1_000_000_000 / 100
    )
}

/// 0 to 3 machines for `user`, in the shape the real API sends (integer
/// `rbacGroupId`, 7-digit fractional timestamps, `Onboarded` capitalised).
fn synthetic_machines(user: &str) -> Vec<Value> {
    let mut rng = Rng(hash(user));
    let count = rng.below(4);
    let stem: String = user
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect::<String>()
        .to_ascii_lowercase();
    let stem = if stem.is_empty() { "user".into() } else { stem };
    // The recording's `Date`: synthetic machines were last seen before it.
    let recorded = chrono::DateTime::parse_from_rfc3339("2025-05-26T09:21:18Z")
        .expect("a valid timestamp")
        .to_utc();
    let kinds: [(&str, &str, Option<i64>, &str); 5] = [
        ("lt", "Windows11", Some(22631), "10.0.22631"),
        ("ws", "Windows10", Some(19045), "10.0.19045"),
        ("srv", "WindowsServer2022", Some(20348), "10.0.20348"),
        ("mac", "macOS", None, "14.5"),
        ("lnx", "Linux", None, "6.8"),
    ];
    let groups = [
        (140, "Finance"),
        (141, "HR"),
        (0, "UnassignedGroup"),
        (142, "IT"),
    ];
    let tags = [
        "vip", "laptop", "finance", "byod", "server", "lab", "london", "berlin",
    ];
    (0..count)
        .map(|n| {
            let (kind, platform, build, version) = *rng.pick(&kinds);
            let id: String = (0..3)
                .map(|_| format!("{:016x}", rng.next()))
                .collect::<String>()[..40]
                .to_owned();
            let last_seen = recorded
                - chrono::Duration::minutes(rng.below(60 * 24 * 45) as i64)
                - chrono::Duration::nanoseconds(rng.below(1_000_000_000) as i64 / 100 * 100);
            let first_seen = last_seen - chrono::Duration::days(30 + rng.below(900) as i64);
            let (group_id, group_name) = *rng.pick(&groups);
            let ip = format!("10.{}.{}.{}", rng.below(256), rng.below(256), 2 + rng.below(250));
            let mut machine_tags: Vec<&str> = Vec::new();
            for _ in 0..rng.below(3) {
                let tag = *rng.pick(&tags);
                if !machine_tags.contains(&tag) {
                    machine_tags.push(tag);
                }
            }
            json!({
                "id": id,
                "computerDnsName": format!("{stem}-{kind}{:02}.corp.example.com", n + 1),
                "firstSeen": api_timestamp(first_seen),
                "lastSeen": api_timestamp(last_seen),
                "osPlatform": platform,
                "osVersion": null,
                "osProcessor": "x64",
                "version": version,
                "osBuild": build,
                "lastIpAddress": ip,
                "lastExternalIpAddress": format!("203.0.113.{}", 1 + rng.below(254)),
                "agentVersion": "10.8760.19045.5011",
                "healthStatus": rng.pick(&["Active", "Active", "Active", "Inactive", "ImpairedCommunication", "NoSensorData"]),
                "onboardingStatus": "Onboarded",
                "deviceValue": rng.pick(&["Normal", "Normal", "Low", "High"]),
                "rbacGroupId": group_id,
                "rbacGroupName": group_name,
                "riskScore": rng.pick(&["None", "Informational", "Low", "Medium", "High"]),
                "exposureLevel": rng.pick(&["None", "Low", "Medium", "High"]),
                "isAadJoined": rng.below(2) == 1,
                "aadDeviceId": null,
                "machineTags": machine_tags,
                "managedBy": "Intune",
                "managedByStatus": "Success",
                "defenderAvStatus": "Updated",
                "ipAddresses": [{
                    "ipAddress": ip,
                    "macAddress": format!("{:012X}", rng.next() & 0xffff_ffff_ffff),
                    "type": "Ethernet",
                    "operationalStatus": "Up",
                }],
                "osArchitecture": "64-bit",
                "vmMetadata": null,
            })
        })
        .collect()
}
