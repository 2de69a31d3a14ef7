//! What the SDK costs over a bare HTTP call, and how it copes with big answers.
//!
//! Run with `cargo bench --bench overhead` (add `-- --quick` for a shorter run).
//! Every figure that matters is a ratio of two measurements taken in the same
//! run, interleaved, so that the noise of a shared machine hits both sides alike.
//!
//! 1. Parse: a 10,000-machine `MachineCollection` into `Vec<Machine>`, into
//!    `serde_json::Value` and into a minimal hand-written struct.
//! 2. Call overhead: client CPU time (user + sys of this process, from
//!    `getrusage`) and wall time per call of `Client::user_machines` against a
//!    bare `reqwest` GET + `serde_json` parse, both talking to the same minimal
//!    HTTP server (this binary run with `--serve`, in a child process so that
//!    its CPU time is not counted), for a 2- and a 1,000-machine answer,
//!    sequentially and with 16 concurrent callers.
//! 3. Peak memory: the maximum RSS of a child process that only parses the
//!    10,000-machine answer (and of one that fetches it with the client), as a
//!    ratio to the body size.
//! 4. Token single flight: token requests made for 1,000 concurrent calls.
//! 5. A Python baseline (`requests` + `json`) making the same sequential calls,
//!    when `python3` can import `requests`.
//!
//! Run without `--bench` (as `cargo test --benches` does) it only checks, quickly,
//! that the three parsers agree.

use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use defender_endpoint::{
    async_trait, types, AccessToken, Client, Error, RateLimit, RetryPolicy, StaticToken,
    TokenCredential,
};
use serde::Deserialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const SEED: &str = include_str!("../tests/fixtures/seed-user-machines.json");
/// A token of the size Microsoft Entra ID issues (a signed JWT of about 1.6 KB),
/// so that what every client does with it per request is measured at its real cost.
fn token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut rng = Rng(7);
        let mut part = |len: usize| -> String {
            (0..len)
                .map(|_| ALPHABET[rng.below(64) as usize] as char)
                .collect()
        };
        format!(
            "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.{}.{}",
            part(1_200),
            part(342)
        )
    })
}
/// User names the bench server maps to its three answers; any other name gets the seed.
const SMALL: &str = "user1";
const BIG: &str = "big";
const HUGE: &str = "huge";
const BIG_MACHINES: usize = 1_000;
const HUGE_MACHINES: usize = 10_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    match arg(0) {
        Some("--serve") => serve(),
        Some("--peak-parse") => peak_parse(arg(1).expect("file"), arg(2).expect("parser")),
        Some("--heap-parse") => heap_parse(arg(1).expect("file")),
        Some("--write-huge") => {
            std::fs::write(arg(1).expect("file"), collection(HUGE_MACHINES, 3)).unwrap()
        }
        Some("--peak-call") => peak_call(arg(1).expect("port"), arg(2).expect("client")),
        Some("--profile") => profile(arg(1).unwrap_or(""), arg(2).and_then(|n| n.parse().ok())),
        _ if args.iter().any(|a| a == "--bench") => {
            run(args.iter().any(|a| a == "--quick"));
        }
        _ => smoke(),
    }
}

// ---------------------------------------------------------------------------
// The answers: deterministic, realistic machines.
// ---------------------------------------------------------------------------

/// SplitMix64: a small deterministic generator, so every run parses the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn hex(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from_digit(self.below(16) as u32, 16).unwrap())
            .collect()
    }

    fn timestamp(&mut self) -> String {
        format!(
            "2024-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
            1 + self.below(12),
            1 + self.below(28),
            self.below(24),
            self.below(60),
            self.below(60),
            self.below(10_000_000)
        )
    }

    fn ipv4(&mut self) -> String {
        format!(
            "10.{}.{}.{}",
            self.below(256),
            self.below(256),
            1 + self.below(254)
        )
    }

    fn mac(&mut self) -> String {
        let h = self.hex(12).to_uppercase();
        format!(
            "{}-{}-{}-{}-{}-{}",
            &h[0..2],
            &h[2..4],
            &h[4..6],
            &h[6..8],
            &h[8..10],
            &h[10..12]
        )
    }

    fn uuid(&mut self) -> String {
        let h = self.hex(32);
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

/// A `MachineCollection` of `n` machines, about 1 KB each, in the shape the
/// service sends: every documented field (some null, open enumerations with
/// spellings outside the documented set, `rbacGroupId` mostly an integer) plus
/// fields the spec does not know.
fn collection(n: usize, seed: u64) -> Vec<u8> {
    use serde_json::{json, Value};
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(n * 1_100 + 100);
    out.extend_from_slice(
        br#"{"@odata.context":"https://api.security.microsoft.com/api/$metadata#Machines","value":["#,
    );
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        let windows = rng.below(5) != 0;
        let ips: Vec<Value> = (0..1 + rng.below(3))
            .map(|_| {
                json!({
                    "ipAddress": rng.ipv4(),
                    "macAddress": rng.mac(),
                    "type": rng.pick(&["Ethernet", "Wireless80211", "Ethernet"]),
                    "operationalStatus": rng.pick(&["Up", "Up", "Down"]),
                })
            })
            .collect();
        let vm = if rng.below(4) == 0 {
            json!({
                "vmId": rng.uuid(),
                "cloudProvider": "Azure",
                "resourceId": format!("/subscriptions/{}/resourceGroups/rg-{}/providers/Microsoft.Compute/virtualMachines/vm-{i}", rng.uuid(), rng.below(50)),
                "subscriptionId": rng.uuid(),
            })
        } else {
            Value::Null
        };
        let fields: Vec<(&str, Value)> = vec![
            ("id", json!(rng.hex(40))),
            (
                "computerDnsName",
                json!(format!(
                    "{}-{i:05}.corp.contoso.com",
                    rng.pick(&["desktop", "laptop", "srv", "kiosk"])
                )),
            ),
            ("firstSeen", json!(rng.timestamp())),
            ("lastSeen", json!(rng.timestamp())),
            (
                "osPlatform",
                json!(if windows {
                    rng.pick(&[
                        "Windows10",
                        "Windows11",
                        "WindowsServer2022",
                        "WindowsServer2019",
                    ])
                } else {
                    rng.pick(&["Linux", "macOS"])
                }),
            ),
            (
                "osVersion",
                if windows {
                    json!(format!("10.0.{}", 19_000 + rng.below(4_000)))
                } else {
                    Value::Null
                },
            ),
            ("osProcessor", json!("x64")),
            (
                "version",
                json!(rng.pick(&["22H2", "21H2", "23H2", "1809"])),
            ),
            ("lastIpAddress", json!(rng.ipv4())),
            (
                "lastExternalIpAddress",
                json!(format!("203.0.113.{}", rng.below(256))),
            ),
            (
                "agentVersion",
                json!(format!(
                    "10.8{}.{}.{}",
                    rng.below(10),
                    20_000 + rng.below(9_000),
                    1_000 + rng.below(8_000)
                )),
            ),
            (
                "osBuild",
                if rng.below(10) == 0 {
                    Value::Null
                } else {
                    json!(19_041 + rng.below(7_000))
                },
            ),
            (
                "healthStatus",
                json!(rng.pick(&[
                    "Active",
                    "Active",
                    "Active",
                    "Inactive",
                    "ImpairedCommunication",
                    "NoSensorData"
                ])),
            ),
            (
                "deviceValue",
                json!(rng.pick(&["Normal", "Normal", "High", "Low"])),
            ),
            (
                "rbacGroupId",
                if rng.below(10) == 0 {
                    json!(format!("group-{}", rng.below(100)))
                } else {
                    json!(rng.below(300))
                },
            ),
            (
                "rbacGroupName",
                if rng.below(6) == 0 {
                    Value::Null
                } else {
                    json!(format!("Tier {} devices", rng.below(20)))
                },
            ),
            (
                "riskScore",
                json!(rng.pick(&["None", "Informational", "Low", "Medium", "High"])),
            ),
            (
                "exposureLevel",
                json!(rng.pick(&["None", "Low", "Medium", "High"])),
            ),
            ("isAadJoined", json!(rng.below(3) != 0)),
            (
                "aadDeviceId",
                if rng.below(3) == 0 {
                    Value::Null
                } else {
                    json!(rng.uuid())
                },
            ),
            (
                "machineTags",
                json!((0..rng.below(4))
                    .map(|_| rng.pick(&["finance", "hr", "vip", "kiosk", "shared", "pilot"]))
                    .collect::<Vec<_>>()),
            ),
            (
                "onboardingStatus",
                json!(rng.pick(&[
                    "Onboarded",
                    "onboarded",
                    "CanBeOnboarded",
                    "InsufficientInfo"
                ])),
            ),
            (
                "osArchitecture",
                json!(rng.pick(&["64-bit", "64-bit", "32-bit"])),
            ),
            (
                "managedBy",
                json!(rng.pick(&["Intune", "MEM", "SCCM", "MDE"])),
            ),
            ("managedByStatus", json!(rng.pick(&["Success", "Unknown"]))),
            ("ipAddresses", Value::Array(ips)),
            ("vmMetadata", vm),
            (
                "defenderAvStatus",
                json!(rng.pick(&["Updated", "NotUpdated", "Disabled"])),
            ),
            ("isExcluded", json!(false)),
            ("exclusionReason", Value::Null),
            ("mergedIntoMachineId", Value::Null),
            ("isPotentialDuplication", json!(false)),
            // Fields this spec does not know (newer service versions send such fields).
            (
                "deviceCategory",
                json!(rng.pick(&["Endpoint", "Endpoint", "NetworkDevice"])),
            ),
            (
                "deviceType",
                json!(rng.pick(&["Workstation", "Server", "Workstation"])),
            ),
            ("exposureScore", json!(rng.below(1_000) as f64 / 10.0)),
            ("onboardingStatusReason", Value::Null),
            (
                "firmwareVersions",
                json!([{"type": "BIOS", "version": format!("1.{}.{}", rng.below(30), rng.below(10))}]),
            ),
        ];
        out.push(b'{');
        for (k, (key, value)) in fields.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, key).unwrap();
            out.push(b':');
            serde_json::to_writer(&mut out, value).unwrap();
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

// ---------------------------------------------------------------------------
// The minimal hand-written model: the same fields, nothing kept of unknown fields, open
// enumerations as plain strings.
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct HandCollection {
    #[serde(default)]
    value: Vec<HandMachine>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct HandMachine {
    id: String,
    computer_dns_name: Option<String>,
    first_seen: Option<DateTime<Utc>>,
    last_seen: Option<DateTime<Utc>>,
    os_platform: Option<String>,
    onboarding_status: Option<String>,
    os_processor: Option<String>,
    version: Option<String>,
    os_build: Option<i64>,
    last_ip_address: Option<String>,
    last_external_ip_address: Option<String>,
    health_status: Option<String>,
    rbac_group_name: Option<String>,
    rbac_group_id: Option<serde_json::Value>,
    risk_score: Option<String>,
    aad_device_id: Option<String>,
    machine_tags: Option<Vec<String>>,
    exposure_level: Option<String>,
    device_value: Option<String>,
    ip_addresses: Option<Vec<HandIp>>,
    os_architecture: Option<String>,
    is_aad_joined: Option<bool>,
    agent_version: Option<String>,
    os_version: Option<String>,
    managed_by: Option<String>,
    managed_by_status: Option<String>,
    defender_av_status: Option<String>,
    is_excluded: Option<bool>,
    exclusion_reason: Option<String>,
    merged_into_machine_id: Option<String>,
    is_potential_duplication: Option<bool>,
    vm_metadata: Option<HandVm>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct HandIp {
    ip_address: Option<String>,
    mac_address: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    operational_status: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct HandVm {
    vm_id: Option<String>,
    cloud_provider: Option<String>,
    resource_id: Option<String>,
    subscription_id: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Parser {
    Sdk,
    Value,
    Hand,
}

impl Parser {
    const ALL: [Parser; 3] = [Parser::Sdk, Parser::Value, Parser::Hand];

    fn name(self) -> &'static str {
        match self {
            Parser::Sdk => "sdk",
            Parser::Value => "value",
            Parser::Hand => "hand",
        }
    }

    fn from_name(name: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .unwrap_or_else(|| panic!("unknown parser {name}"))
    }

    /// Parses `body` and returns how many machines it held.
    fn parse(self, body: &[u8]) -> usize {
        self.parse_timed(body).0
    }

    /// Parses `body`; returns how many machines it held and how long parsing
    /// took (dropping the result is not counted).
    fn parse_timed(self, body: &[u8]) -> (usize, Duration) {
        fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
            let started = Instant::now();
            let value = std::hint::black_box(f());
            (value, started.elapsed())
        }
        match self {
            Parser::Sdk => {
                let (c, t) = timed(|| {
                    serde_json::from_slice::<types::MachineCollection>(body)
                        .unwrap()
                        .value
                });
                (c.len(), t)
            }
            Parser::Value => {
                let (v, t) = timed(|| serde_json::from_slice::<serde_json::Value>(body).unwrap());
                (v["value"].as_array().unwrap().len(), t)
            }
            Parser::Hand => {
                let (c, t) = timed(|| {
                    serde_json::from_slice::<HandCollection>(body)
                        .unwrap()
                        .value
                });
                (c.len(), t)
            }
        }
    }
}

fn smoke() {
    let body = collection(100, 1);
    for parser in Parser::ALL {
        assert_eq!(parser.parse(&body), 100, "{}", parser.name());
    }
    let c: types::MachineCollection = serde_json::from_slice(&body).unwrap();
    assert!(c
        .value
        .iter()
        .all(|m| m.extra.contains_key("deviceCategory")));
    println!("overhead: the parsers agree (run `cargo bench --bench overhead` to measure)");
}

// ---------------------------------------------------------------------------
// Measuring.
// ---------------------------------------------------------------------------

/// CPU time (user + system) of this process so far, all threads.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage only writes into the struct it is given.
    let usage = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()), 0);
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// A field of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `min-max` of `xs`, for showing the spread of per-round ratios.
fn range(xs: &[f64]) -> String {
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.2}-{max:.2}")
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

#[derive(Default, Clone, Copy)]
struct Sample {
    calls: u64,
    cpu: Duration,
    wall: Duration,
}

impl Sample {
    fn add(&mut self, other: Sample) {
        self.calls += other.calls;
        self.cpu += other.cpu;
        self.wall += other.wall;
    }
    fn cpu_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.calls as f64
    }
    fn wall_us(&self) -> f64 {
        self.wall.as_secs_f64() * 1e6 / self.calls as f64
    }
    fn per_sec(&self) -> f64 {
        self.calls as f64 / self.wall.as_secs_f64()
    }
}

/// The ways of making one call that are compared.
#[derive(Clone)]
enum Caller {
    /// `Client::user_machines`.
    Sdk(Client),
    /// reqwest GET + `serde_json` into the hand-written struct.
    BareHand(reqwest::Client, String),
    /// reqwest GET + `serde_json` into the generated `MachineCollection`.
    BareTyped(reqwest::Client, String),
    /// reqwest GET + `serde_json` checking the syntax only (`IgnoredAny`): what any
    /// client that reads the JSON at all costs at least.
    BareSyntax(reqwest::Client, String),
    /// reqwest GET, reading the body and nothing more.
    BareFetch(reqwest::Client, String),
}

impl Caller {
    fn label(&self) -> &'static str {
        match self {
            Caller::Sdk(_) => "sdk",
            Caller::BareHand(..) => "bare reqwest + hand struct",
            Caller::BareTyped(..) => "bare reqwest + generated types",
            Caller::BareSyntax(..) => "bare reqwest + JSON syntax check only",
            Caller::BareFetch(..) => "bare reqwest, body read only",
        }
    }

    async fn call(&self, user: &str) -> usize {
        match self {
            Caller::Sdk(client) => client.user_machines(user).await.unwrap().len(),
            Caller::BareHand(http, base) => {
                let body = bare_get(http, base, user).await;
                serde_json::from_slice::<HandCollection>(&body)
                    .unwrap()
                    .value
                    .len()
            }
            Caller::BareTyped(http, base) => {
                let body = bare_get(http, base, user).await;
                serde_json::from_slice::<types::MachineCollection>(&body)
                    .unwrap()
                    .value
                    .len()
            }
            Caller::BareSyntax(http, base) => {
                let body = bare_get(http, base, user).await;
                serde_json::from_slice::<serde::de::IgnoredAny>(&body).unwrap();
                body.len()
            }
            Caller::BareFetch(http, base) => bare_get(http, base, user).await.len(),
        }
    }

    /// `calls` calls split over `callers` concurrent tasks, stopping early at `deadline`.
    async fn block(
        &self,
        user: &'static str,
        callers: usize,
        calls: u64,
        limit: Duration,
    ) -> Sample {
        let per_task = calls.div_ceil(callers as u64);
        let started = Instant::now();
        let cpu = cpu_time();
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let caller = self.clone();
                tokio::spawn(async move {
                    let mut done = 0u64;
                    while done < per_task && started.elapsed() < limit {
                        std::hint::black_box(caller.call(user).await);
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        let mut done = 0;
        for task in tasks {
            done += task.await.unwrap();
        }
        Sample {
            calls: done,
            cpu: cpu_time() - cpu,
            wall: started.elapsed(),
        }
    }
}

async fn bare_get(http: &reqwest::Client, base: &str, user: &str) -> bytes::Bytes {
    http.get(format!("{base}/api/users/{user}/machines"))
        .bearer_auth(token())
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .bytes()
        .await
        .unwrap()
}

/// A few calls of each caller for both answers before anything is measured, so
/// that connections are open and buffers have grown.
fn warm_up(rt: &tokio::runtime::Runtime, callers: &[Caller]) {
    rt.block_on(async {
        for c in callers {
            for user in [SMALL, BIG] {
                for _ in 0..16 {
                    assert!(c.call(user).await > 0);
                }
            }
        }
    });
}

fn sdk_client(base: &str, credential: impl TokenCredential + 'static) -> Client {
    Client::builder()
        .base_url(base)
        .credential(credential)
        .rate_limit(RateLimit::none())
        .retry(RetryPolicy::none())
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------
// The server: static answers over HTTP/1.1 with keep-alive.
// ---------------------------------------------------------------------------

fn response(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json; odata.metadata=minimal\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Runs the server until its standard input closes (or for at most an hour).
fn serve() {
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(3_600));
        std::process::exit(0);
    });
    let answers: Arc<[Vec<u8>; 3]> = Arc::new([
        response(SEED.as_bytes()),
        response(&collection(BIG_MACHINES, 2)),
        response(&collection(HUGE_MACHINES, 3)),
    ]);
    // One thread: every connection is served alike, whichever client it belongs to.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("port {}", listener.local_addr().unwrap().port());
        std::io::stdout().flush().unwrap();
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(connection(socket, Arc::clone(&answers)));
        }
    });
}

async fn connection(mut socket: TcpStream, answers: Arc<[Vec<u8>; 3]>) {
    let _ = socket.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
        let path = line.split(|&b| b == b' ').nth(1).unwrap_or_default();
        let answer = if path.starts_with(format!("/api/users/{HUGE}/").as_bytes()) {
            &answers[2]
        } else if path.starts_with(format!("/api/users/{BIG}/").as_bytes()) {
            &answers[1]
        } else {
            &answers[0]
        };
        if socket.write_all(answer).await.is_err() {
            return;
        }
        buf.drain(..end);
    }
}

/// The server child process; killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start() -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the bench server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().strip_prefix("port ").unwrap().parse().unwrap();
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Peak memory children.
// ---------------------------------------------------------------------------

/// Reads the body from `file`, parses it, and prints `baseline_kib body_bytes peak_kib`.
///
/// `sdk-reader` parses into the generated types straight from the file (a
/// buffered reader), without holding the body: the least a parse that streams
/// the answer could peak at.
fn peak_parse(file: &str, parser: &str) {
    let baseline = status_kib("VmHWM");
    if parser == "sdk-reader" {
        let reader = std::io::BufReader::new(std::fs::File::open(file).unwrap());
        let c: types::MachineCollection = serde_json::from_reader(reader).unwrap();
        assert_eq!(c.value.len(), HUGE_MACHINES);
        let len = std::fs::metadata(file).unwrap().len();
        println!("{baseline} {len} {}", status_kib("VmHWM"));
        return;
    }
    let parser = Parser::from_name(parser);
    let body = std::fs::read(file).unwrap();
    let n = parser.parse(&body);
    assert_eq!(n, HUGE_MACHINES);
    println!("{baseline} {} {}", body.len(), status_kib("VmHWM"));
}

/// Where the heap goes when the 10,000-machine body in `file` is parsed into the
/// generated types, from the allocator's own count of the bytes it has handed
/// out (`mallinfo2`: chunk sizes, so malloc's overhead is included). Prints
/// `body vec_len_bytes vec_capacity_bytes unknown_fields_bytes rest_bytes`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_parse(file: &str) {
    fn heap() -> u64 {
        // SAFETY: `mallinfo2` only reads the allocator's counters.
        let info = unsafe { libc::mallinfo2() };
        (info.uordblks + info.hblkhd) as u64
    }
    let body = std::fs::read(file).unwrap();
    let with_body = heap();
    let mut c: types::MachineCollection = serde_json::from_slice(&body).unwrap();
    let parsed = heap();
    let size = std::mem::size_of::<types::Machine>() as u64;
    let (len, capacity) = (
        c.value.len() as u64 * size,
        c.value.capacity() as u64 * size,
    );
    for m in &mut c.value {
        m.extra = Default::default();
        for ip in m.ip_addresses.iter_mut().flatten() {
            ip.extra = Default::default();
        }
        if let Some(vm) = &mut m.vm_metadata {
            vm.extra = Default::default();
        }
    }
    let without_unknown = heap();
    println!(
        "{} {len} {capacity} {} {}",
        body.len(),
        parsed - without_unknown,
        without_unknown - with_body - capacity
    );
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_parse(_file: &str) {
    println!("0 0 0 0 0");
}

/// Fetches the 10,000-machine answer once and prints `baseline_kib peak_kib`.
fn peak_call(port: &str, client: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let baseline = status_kib("VmHWM");
    let caller = match client {
        "sdk" => Caller::Sdk(sdk_client(&base, StaticToken::new(token()))),
        _ => Caller::BareHand(reqwest::Client::new(), base),
    };
    let n = rt.block_on(caller.call(HUGE));
    assert_eq!(n, HUGE_MACHINES);
    println!("{baseline} {}", status_kib("VmHWM"));
}

fn child_output(args: &[&str]) -> Vec<u64> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(args)
        .output()
        .expect("run a child");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

// ---------------------------------------------------------------------------
// Profiling: one kind of work only, for `valgrind --tool=callgrind`.
// ---------------------------------------------------------------------------

/// `--profile parse-{sdk,value,hand} [rounds]` parses the 10,000-machine answer;
/// `--profile calls-{sdk,bare,typed} [calls]` makes sequential 2-machine calls
/// (`calls-big-*` for the 1,000-machine answer) against a server child process.
fn profile(what: &str, count: Option<u64>) {
    if what == "quota-cancel" {
        return quota_cancel(count.unwrap_or(16_000) as usize);
    }
    if let Some(parser) = what.strip_prefix("parse-") {
        let parser = Parser::from_name(parser);
        let body = collection(HUGE_MACHINES, 3);
        for _ in 0..count.unwrap_or(1) {
            assert_eq!(parser.parse(&body), HUGE_MACHINES);
        }
        return;
    }
    let (rest, callers) = match (what.strip_prefix("calls-"), what.strip_prefix("calls16-")) {
        (Some(rest), _) => (rest, 1),
        (_, Some(rest)) => (rest, 16),
        _ => panic!(
            "--profile parse-{{sdk,value,hand}} | calls[16]-[big-]{{sdk,bare,typed}} | quota-cancel [count]"
        ),
    };
    let (user, kind) = match rest.strip_prefix("big-") {
        Some(kind) => (BIG, kind),
        None => (SMALL, rest),
    };
    let server = Server::start();
    let rt = if callers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    let caller = match kind {
        "sdk" => Caller::Sdk(sdk_client(&server.base, StaticToken::new(token()))),
        "bare" => Caller::BareHand(reqwest::Client::new(), server.base.clone()),
        _ => Caller::BareTyped(reqwest::Client::new(), server.base.clone()),
    };
    let calls = count.unwrap_or(1_000);
    if callers == 1 {
        rt.block_on(async {
            for _ in 0..calls {
                std::hint::black_box(caller.call(user).await);
            }
        });
    } else {
        let done = rt.block_on(caller.block(user, callers, calls, Duration::MAX));
        assert_eq!(done.calls, calls.div_ceil(callers as u64) * callers as u64);
        eprintln!(
            "{:.1} us CPU/call, {:.0} calls/s",
            done.cpu_us(),
            done.per_sec()
        );
    }
}

/// `--profile quota-cancel [calls]`: a client whose quota window (10 calls a
/// minute) is full queues `calls` more, which all time out together after
/// 500 ms; prints the CPU time that took beyond the first `calls / 16`'s.
fn quota_cancel(calls: usize) {
    let server = Server::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = Client::builder()
        .base_url(&server.base)
        .credential(StaticToken::new(token()))
        .rate_limit(RateLimit::new().window(10, Duration::from_secs(60)))
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    rt.block_on(async {
        for _ in 0..10 {
            client.user_machines(SMALL).await.unwrap();
        }
        let queue = |n: usize| {
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    let client = client.clone();
                    tokio::spawn(async move {
                        let call = client.user_machines(SMALL);
                        let wait = tokio::time::timeout(Duration::from_millis(500), call);
                        assert!(wait.await.is_err(), "the window is full");
                    })
                })
                .collect();
            async move {
                let cpu = cpu_time();
                for task in tasks {
                    task.await.unwrap();
                }
                cpu_time() - cpu
            }
        };
        let small = queue(calls / 16).await;
        let all = queue(calls).await;
        eprintln!(
            "{} calls cancelled together: {:.1} ms CPU; {}: {:.1} ms CPU ({:.1}x the CPU for 16x the calls)",
            calls,
            all.as_secs_f64() * 1e3,
            calls / 16,
            small.as_secs_f64() * 1e3,
            all.as_secs_f64() / small.as_secs_f64()
        );
    });
}

// ---------------------------------------------------------------------------
// Token single flight.
// ---------------------------------------------------------------------------

struct CountingCredential(AtomicUsize);

#[async_trait]
impl TokenCredential for CountingCredential {
    async fn get_token(&self, _scopes: &[&str]) -> Result<AccessToken, Error> {
        self.0.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(AccessToken::expires_in(token(), Duration::from_secs(3_600)))
    }
}

// ---------------------------------------------------------------------------
// Python baseline.
// ---------------------------------------------------------------------------

const PYTHON: &str = r#"
import json, sys, time
import requests
url, n, limit, token = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
session = requests.Session()
headers = {"Authorization": "Bearer " + token}
for _ in range(5):
    json.loads(session.get(url, headers=headers).content)["value"]
cpu, wall, calls = time.process_time(), time.perf_counter(), 0
while calls < n and time.perf_counter() - wall < limit:
    response = session.get(url, headers=headers)
    response.raise_for_status()
    machines = json.loads(response.content)["value"]
    calls += 1
print(calls, time.process_time() - cpu, time.perf_counter() - wall)
"#;

fn python_available() -> bool {
    Command::new("python3")
        .args(["-c", "import requests"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn python(base: &str, user: &str, calls: u64, limit: Duration) -> Option<Sample> {
    let out = Command::new("python3")
        .args([
            "-c",
            PYTHON,
            &format!("{base}/api/users/{user}/machines"),
            &calls.to_string(),
            &limit.as_secs_f64().to_string(),
            token(),
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "python baseline failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let mut fields = text.split_whitespace();
    let calls: u64 = fields.next()?.parse().ok()?;
    let cpu: f64 = fields.next()?.parse().ok()?;
    let wall: f64 = fields.next()?.parse().ok()?;
    Some(Sample {
        calls,
        cpu: Duration::from_secs_f64(cpu),
        wall: Duration::from_secs_f64(wall),
    })
}

// ---------------------------------------------------------------------------
// The run.
// ---------------------------------------------------------------------------

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split(':')
                    .nth(1)
                    .map(|v| v.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

fn check(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

fn run(quick: bool) {
    let scale = if quick { 1 } else { 3 };
    let mut report: Vec<String> = Vec::new();
    // The same calls against a baseline that parses into the same generated types:
    // what the layer (hooks, retries, quota, normalisation) costs on its own.
    let mut layer: Vec<String> = Vec::new();
    println!("machine: {}", machine());
    println!(
        "size_of::<Machine>() = {} bytes, size_of::<HandMachine>() = {} bytes",
        std::mem::size_of::<types::Machine>(),
        std::mem::size_of::<HandMachine>()
    );

    // 1. Parse.
    let body = collection(HUGE_MACHINES, 3);
    let mb = body.len() as f64 / 1e6;
    println!("\n## Parse: {HUGE_MACHINES} machines, {:.2} MB", mb);
    let rounds = 4 * scale + 1;
    let mut times: [Vec<f64>; 3] = Default::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    for round in 0..rounds {
        for k in 0..3 {
            let i = (round + k) % 3;
            let (n, took) = Parser::ALL[i].parse_timed(&body);
            times[i].push(took.as_secs_f64());
            assert_eq!(n, HUGE_MACHINES);
        }
        if Instant::now() > deadline {
            break;
        }
    }
    let med: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
    for (i, p) in Parser::ALL.iter().enumerate() {
        println!(
            "  {:<6} median {:>7.1} ms  {:>6.0} MB/s  ({} rounds)",
            p.name(),
            med[i] * 1e3,
            mb / med[i],
            times[i].len()
        );
    }
    let vs_value = med[0] / med[1];
    let vs_hand = med[0] / med[2];
    println!(
        "  Vec<Machine> time / Value time: {vs_value:.2} (target <= 1.00: {})",
        check(vs_value <= 1.0)
    );
    println!(
        "  Vec<Machine> time / hand time:  {vs_hand:.2} (target <= 1.50: {})",
        check(vs_hand <= 1.5)
    );
    report.push(format!(
        "| Parse 10,000 machines ({mb:.1} MB): `Vec<Machine>` / `serde_json::Value` time | {vs_value:.2} ({:.0} vs {:.0} MB/s) | <= 1.00 | {} |",
        mb / med[0], mb / med[1], check(vs_value <= 1.0)
    ));
    report.push(format!(
        "| Parse 10,000 machines: `Vec<Machine>` / hand-written struct time | {vs_hand:.2} ({:.0} MB/s hand) | <= 1.50 | {} |",
        mb / med[2], check(vs_hand <= 1.5)
    ));

    // 3. Peak memory (children, before this process grows).
    let file = std::env::temp_dir().join(format!("defender-bench-{}.json", std::process::id()));
    std::fs::write(&file, &body).unwrap();
    drop(body);
    println!("\n## Peak RSS parsing the 10,000-machine answer (child processes)");
    let mut sdk_peak_ratio = f64::NAN;
    for parser in Parser::ALL
        .map(Parser::name)
        .into_iter()
        .chain(["sdk-reader"])
    {
        let v = child_output(&["--peak-parse", file.to_str().unwrap(), parser]);
        let (baseline, len, peak) = (v[0] as f64 * 1024.0, v[1] as f64, v[2] as f64 * 1024.0);
        let ratio = peak / len;
        println!(
            "  {:<10} peak {:>6.1} MB = {ratio:.2}x body ({:.1} MB before reading; {:.2}x body above that)",
            parser,
            peak / 1e6,
            baseline / 1e6,
            (peak - baseline) / len
        );
        if parser == Parser::Sdk.name() {
            sdk_peak_ratio = ratio;
        }
    }
    let v = child_output(&["--heap-parse", file.to_str().unwrap()]);
    if v[0] > 0 {
        let of_body = |bytes: u64| bytes as f64 / v[0] as f64;
        println!(
            "  heap of the parsed Vec<Machine> (malloc's count, body = 1.00): {:.2} the \
             machines' Vec ({:.2} of it written), {:.2} the unknown fields (`extra`), {:.2} the \
             rest (strings and lists of the known fields)",
            of_body(v[2]),
            of_body(v[1]),
            of_body(v[3]),
            of_body(v[4])
        );
    }
    let _ = std::fs::remove_file(&file);
    report.push(format!(
        "| Peak RSS parsing 10,000 machines into `Vec<Machine>` / body size | {sdk_peak_ratio:.2} | < 3 | {} |",
        check(sdk_peak_ratio < 3.0)
    ));

    let server = Server::start();
    let base = server.base.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let huge_len = (collection(HUGE_MACHINES, 3).len()) as f64;
    let port = base.rsplit(':').next().unwrap().to_owned();
    for client in ["sdk", "bare"] {
        let v = child_output(&["--peak-call", &port, client]);
        println!(
            "  whole call ({client}): peak {:.1} MB = {:.2}x body",
            v[1] as f64 * 1024.0 / 1e6,
            v[1] as f64 * 1024.0 / huge_len
        );
    }

    // 2. Call overhead. Sequential callers run on a current-thread runtime, so that
    // where tokio happens to place a connection's task does not change the figures;
    // the 16 callers on a 2-worker runtime. Each runtime has its own clients.
    let seq_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let callers_for = |rt: &tokio::runtime::Runtime| {
        let callers = [
            Caller::Sdk(sdk_client(&base, StaticToken::new(token()))),
            Caller::BareHand(reqwest::Client::new(), base.clone()),
            Caller::BareTyped(reqwest::Client::new(), base.clone()),
        ];
        warm_up(rt, &callers);
        callers
    };
    let seq_callers = callers_for(&seq_rt);
    let par_callers = callers_for(&rt);
    println!("\n## Calls (client CPU = user+sys of this process; server in a child process)");
    for (user, machines, calls, block_limit) in [
        (SMALL, 2usize, 200u64 * scale as u64, Duration::from_secs(4)),
        (
            BIG,
            BIG_MACHINES,
            8u64 * scale as u64,
            Duration::from_secs(6),
        ),
    ] {
        for parallel in [1usize, 16] {
            let calls = if parallel == 1 { calls } else { calls * 2 };
            let (rt, callers) = if parallel == 1 {
                (&seq_rt, &seq_callers)
            } else {
                (&rt, &par_callers)
            };
            let mut totals = [Sample::default(); 3];
            let mut cpu_ratios = Vec::new();
            let mut tput_ratios = Vec::new();
            let mut typed_ratios = Vec::new();
            let mut tput_typed_ratios = Vec::new();
            for round in 0..(3 * scale) {
                let mut this = [Sample::default(); 3];
                for k in 0..3 {
                    let i = (round + k) % 3;
                    this[i] = rt.block_on(callers[i].block(user, parallel, calls, block_limit));
                    totals[i].add(this[i]);
                }
                cpu_ratios.push(this[0].cpu_us() / this[1].cpu_us());
                typed_ratios.push(this[0].cpu_us() / this[2].cpu_us());
                tput_ratios.push(this[0].per_sec() / this[1].per_sec());
                tput_typed_ratios.push(this[0].per_sec() / this[2].per_sec());
            }
            println!("  {machines} machines, {parallel} caller(s):");
            for (i, c) in callers.iter().enumerate() {
                let t = totals[i];
                println!(
                    "    {:<32} {:>9.1} us CPU/call {:>9.1} us wall/call {:>8.0} calls/s ({} calls)",
                    c.label(),
                    t.cpu_us(),
                    t.wall_us(),
                    t.per_sec(),
                    t.calls
                );
            }
            let (cpu_range, typed_range, tput_range, tput_typed_range) = (
                range(&cpu_ratios),
                range(&typed_ratios),
                range(&tput_ratios),
                range(&tput_typed_ratios),
            );
            let cpu_ratio = median(&mut cpu_ratios);
            let typed_ratio = median(&mut typed_ratios);
            let tput_ratio = median(&mut tput_ratios);
            let tput_typed_ratio = median(&mut tput_typed_ratios);
            println!(
                "    medians of {} rounds [min-max]: sdk / bare+hand CPU per call {cpu_ratio:.2} [{cpu_range}]; sdk / bare+generated types CPU {typed_ratio:.2} [{typed_range}]; throughput sdk / bare+hand {tput_ratio:.2} [{tput_range}], sdk / bare+generated types {tput_typed_ratio:.2} [{tput_typed_range}]",
                cpu_ratios.len()
            );
            let what = format!(
                "{machines}-machine answer, {parallel} caller{}",
                if parallel == 1 { "" } else { "s" }
            );
            report.push(format!(
                "| Client CPU per call, sdk / bare reqwest + hand struct, {what} | {cpu_ratio:.2} [{cpu_range}] ({:.0} vs {:.0} us) | <= 1.15 | {} |",
                totals[0].cpu_us(), totals[1].cpu_us(), check(cpu_ratio <= 1.15)
            ));
            layer.push(format!(
                "| Client CPU per call, sdk / bare reqwest + generated types, {what} | {typed_ratio:.2} [{typed_range}] ({:.0} vs {:.0} us) | <= 1.15 | {} |",
                totals[0].cpu_us(), totals[2].cpu_us(), check(typed_ratio <= 1.15)
            ));
            if parallel == 16 {
                report.push(format!(
                    "| Throughput, sdk / bare reqwest + hand struct, {what} | {tput_ratio:.2} [{tput_range}] ({:.0} vs {:.0} calls/s) | >= 0.90 | {} |",
                    totals[0].per_sec(), totals[1].per_sec(), check(tput_ratio >= 0.9)
                ));
                layer.push(format!(
                    "| Throughput, sdk / bare reqwest + generated types, {what} | {tput_typed_ratio:.2} [{tput_typed_range}] ({:.0} vs {:.0} calls/s) | >= 0.90 | {} |",
                    totals[0].per_sec(), totals[2].per_sec(), check(tput_typed_ratio >= 0.9)
                ));
            }
        }
    }

    // 4. Token single flight.
    let credential = Arc::new(CountingCredential(AtomicUsize::new(0)));
    let client = sdk_client(&base, Arc::clone(&credential));
    let ok = rt.block_on(async {
        let tasks: Vec<_> = (0..1_000)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move { client.user_machines(format!("user{i}")).await.is_ok() })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.unwrap());
        }
        ok
    });
    let fetched = credential.0.load(Ordering::SeqCst);
    println!("\n## Token single flight: {fetched} token request(s) for 1,000 concurrent calls ({ok} succeeded)");
    report.push(format!(
        "| Token requests per 1,000 concurrent calls | {fetched} ({ok} calls succeeded) | 1 | {} |",
        check(fetched == 1 && ok == 1_000)
    ));

    // 5. Python, interleaved with the SDK's sequential calls.
    println!("\n## Python baseline (requests + json, sequential, interleaved with the sdk)");
    if python_available() {
        // What a client costs that reads the body and no more, or checks its JSON
        // syntax and builds nothing (how far below Python any client can go), and
        // what a hand-written Rust client costs, in the same rounds.
        let floors = [
            Caller::BareFetch(reqwest::Client::new(), base.clone()),
            Caller::BareSyntax(reqwest::Client::new(), base.clone()),
            Caller::BareHand(reqwest::Client::new(), base.clone()),
        ];
        warm_up(&seq_rt, &floors);
        for (user, machines, calls) in [
            (SMALL, 2, 300 * scale as u64),
            (BIG, BIG_MACHINES, 20 * scale as u64),
        ] {
            let (mut py_total, mut sdk_total) = (Sample::default(), Sample::default());
            let mut ratios = Vec::new();
            let mut floor_ratios = [Vec::new(), Vec::new(), Vec::new()];
            let mut floor_totals = [Sample::default(); 3];
            // The SDK and the other clients run after Python in each round, in an
            // order rotated from round to round.
            let clients: Vec<&Caller> = std::iter::once(&seq_callers[0]).chain(&floors).collect();
            for round in 0..(scale + 1) {
                let Some(py) = python(&base, user, calls, Duration::from_secs(30)) else {
                    break;
                };
                let mut this = [Sample::default(); 4];
                for k in 0..clients.len() {
                    let i = (k + round) % clients.len();
                    this[i] =
                        seq_rt.block_on(clients[i].block(user, 1, calls, Duration::from_secs(10)));
                }
                let [sdk, rest @ ..] = this;
                ratios.push(py.cpu_us() / sdk.cpu_us());
                for ((floor, ratios), total) in rest
                    .into_iter()
                    .zip(&mut floor_ratios)
                    .zip(&mut floor_totals)
                {
                    ratios.push(py.cpu_us() / floor.cpu_us());
                    total.add(floor);
                }
                py_total.add(py);
                sdk_total.add(sdk);
            }
            if ratios.is_empty() {
                continue;
            }
            let spread = range(&ratios);
            let ratio = median(&mut ratios);
            println!(
                "  {machines} machines: python {:.0} us CPU/call, {:.0} us wall/call ({} calls); sdk {:.0} us CPU/call; python / sdk CPU = {ratio:.1} (median of rounds) [{spread}]",
                py_total.cpu_us(),
                py_total.wall_us(),
                py_total.calls,
                sdk_total.cpu_us(),
            );
            report.push(format!(
                "| Client CPU per call, Python requests+json / sdk, {machines}-machine answer, sequential | {ratio:.1} [{spread}] ({:.0} vs {:.0} us) | >= 10 | {} |",
                py_total.cpu_us(), sdk_total.cpu_us(), check(ratio >= 10.0)
            ));
            for ((floor, mut ratios), total) in floors.iter().zip(floor_ratios).zip(floor_totals) {
                let spread = range(&ratios);
                let ratio = median(&mut ratios);
                println!(
                    "    for scale: {} {:.0} us CPU/call; python / it CPU = {ratio:.1} [{spread}]",
                    floor.label(),
                    total.cpu_us()
                );
                report.push(format!(
                    "| For scale: Python / {}, {machines}-machine answer | {ratio:.1} [{spread}] ({:.0} vs {:.0} us) | (none) | |",
                    floor.label(),
                    py_total.cpu_us(),
                    total.cpu_us()
                ));
            }
        }
    } else {
        println!("  skipped: python3 with `requests` importable was not found");
    }
    drop(server);

    println!("\n## Summary (paste into BENCHMARKS.md)\n");
    println!("| measure | ratio (figures) | target | |");
    println!("|---|---|---|---|");
    for line in report {
        println!("{line}");
    }
    println!("\nThe layer alone (the baseline parses into the same generated types):\n");
    println!("| measure | ratio (figures) | target | |");
    println!("|---|---|---|---|");
    for line in layer {
        println!("{line}");
    }
}
