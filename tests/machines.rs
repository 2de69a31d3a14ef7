//! `Client::user_machines` against a local Defender stand-in (httpmock, real HTTP on loopback).

mod common;

use common::{client, deflate, fixture, gzip, seed, TOKEN};
use defender_endpoint::{
    types::{
        DeviceValue, DeviceValueKnown, ExposureLevel, ExposureLevelKnown, HealthStatus,
        HealthStatusKnown, Machine, OnboardingStatus, OnboardingStatusKnown, RbacGroupId,
        RiskScore, RiskScoreKnown,
    },
    Error, UserName,
};
use httpmock::{Method::GET, MockServer};
use serde_json::{json, Value};

const JSON: &str = "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8";

/// Serves `body` for `user`'s machines, deflate-compressed like the seed's response.
async fn serve_deflate<'a>(server: &'a MockServer, user: &str, body: &str) -> httpmock::Mock<'a> {
    serve_encoded(server, user, "deflate", deflate(body.as_bytes())).await
}

/// Serves `body` for `user`'s machines as it is, with a JSON content type.
async fn serve_json(server: &MockServer, user: &str, body: impl Into<String>) {
    let (path, body) = (format!("/api/users/{user}/machines"), body.into());
    server
        .mock_async(move |when, then| {
            when.path(path);
            then.status(200).header("content-type", JSON).body(body);
        })
        .await;
}

/// Serves `bytes` for `user`'s machines as a body with `Content-Encoding: encoding`, to a
/// client that says it accepts gzip and deflate.
async fn serve_encoded<'a>(
    server: &'a MockServer,
    user: &str,
    encoding: &str,
    bytes: Vec<u8>,
) -> httpmock::Mock<'a> {
    let path = format!("/api/users/{user}/machines");
    server
        .mock_async(move |when, then| {
            when.method(GET)
                .path(path)
                .header("accept-encoding", "gzip, deflate");
            then.status(200)
                .header("content-type", JSON)
                .header("content-encoding", encoding)
                .header("odata-version", "4.0")
                .body(bytes);
        })
        .await
}

#[tokio::test]
async fn seed_response_parses_field_by_field() {
    let server = MockServer::start_async().await;
    let mock = serve_deflate(&server, "user1", &fixture("seed-user-machines.json")).await;

    let machines = client(&server)
        .user_machines("user1@contoso.com")
        .await
        .unwrap();
    mock.assert_async().await;
    assert_eq!(machines.len(), 2);

    let m = &machines[0];
    assert_eq!(m.id, "machine-1");
    assert_eq!(
        m.computer_dns_name.as_deref(),
        Some("device1.corp.example.com")
    );
    assert_eq!(
        m.first_seen.unwrap().to_rfc3339(),
        "2024-01-01T00:00:00+00:00"
    );
    assert_eq!(
        m.last_seen.unwrap().to_rfc3339(),
        "2024-01-02T00:00:00+00:00"
    );
    assert_eq!(m.os_platform.as_deref(), Some("Windows10"));
    assert_eq!(
        m.onboarding_status,
        Some(OnboardingStatus::Known(OnboardingStatusKnown::Onboarded))
    );
    assert_eq!(m.os_processor.as_deref(), Some("x64"));
    assert_eq!(m.version.as_deref(), Some("10.0.19045"));
    assert_eq!(m.os_build, Some(19045));
    assert_eq!(m.last_ip_address.as_deref(), Some("10.0.0.5"));
    assert_eq!(m.last_external_ip_address.as_deref(), Some("203.0.113.1"));
    assert_eq!(
        m.health_status,
        Some(HealthStatus::Known(HealthStatusKnown::Active))
    );
    assert_eq!(m.rbac_group_name.as_deref(), Some("Finance"));
    assert_eq!(
        m.rbac_group_id,
        Some(RbacGroupId::String("group-fin-001".into()))
    );
    assert_eq!(m.risk_score, Some(RiskScore::Known(RiskScoreKnown::Low)));
    assert_eq!(
        m.aad_device_id.as_deref(),
        Some("d9f1373e-1733-437e-8f4c-3f77f60d3c92")
    );
    assert_eq!(
        m.machine_tags,
        Some(vec!["laptop".to_string(), "finance".to_string()])
    );
    assert_eq!(
        m.exposure_level,
        Some(ExposureLevel::Known(ExposureLevelKnown::Medium))
    );
    assert_eq!(
        m.device_value,
        Some(DeviceValue::Known(DeviceValueKnown::High))
    );
    let ips = m.ip_addresses.as_ref().unwrap();
    assert_eq!(ips.len(), 2);
    assert_eq!(ips[0].ip_address.as_deref(), Some("10.0.0.5"));
    assert_eq!(ips[0].type_.as_deref(), Some("IPv4"));
    assert_eq!(ips[1].ip_address.as_deref(), Some("fe80::abcd"));
    assert_eq!(ips[1].type_.as_deref(), Some("IPv6"));
    assert_eq!(m.os_architecture.as_deref(), Some("64-bit"));
    assert!(m.extra.is_empty());

    let m = &machines[1];
    assert_eq!(m.id, "machine-2");
    assert_eq!(
        m.health_status,
        Some(HealthStatus::Known(HealthStatusKnown::Inactive))
    );
    assert_eq!(m.risk_score, Some(RiskScore::Known(RiskScoreKnown::Medium)));
    assert_eq!(m.aad_device_id, None);
    assert_eq!(
        m.device_value,
        Some(DeviceValue::Known(DeviceValueKnown::Normal))
    );
    assert_eq!(m.os_build, Some(22000));

    // Serialised back, every machine is the seed's object (its one null field left out).
    let seed = seed();
    for (machine, original) in machines.iter().zip(seed["value"].as_array().unwrap()) {
        let mut expected = original.clone();
        expected
            .as_object_mut()
            .unwrap()
            .retain(|_, v| !v.is_null());
        assert_eq!(serde_json::to_value(machine).unwrap(), expected);
    }
}

#[tokio::test]
async fn gzip_bodies_are_decoded() {
    let server = MockServer::start_async().await;
    let body = gzip(fixture("seed-user-machines.json").as_bytes());
    serve_encoded(&server, "user1", "gzip", body).await;
    let machines = client(&server).user_machines("user1").await.unwrap();
    assert_eq!(machines.len(), 2);
}

#[tokio::test]
async fn real_api_shapes_parse() {
    let server = MockServer::start_async().await;
    serve_deflate(&server, "user2", &fixture("real-api-machines.json")).await;
    let machines = client(&server).user_machines("user2").await.unwrap();
    let m = &machines[0];
    // 7 fractional digits.
    assert_eq!(
        m.first_seen
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "2018-08-02T14:55:03.779185600Z"
    );
    // An integer rbacGroupId stays an integer.
    assert_eq!(m.rbac_group_id, Some(RbacGroupId::Integer(140)));
    assert_eq!(serde_json::to_value(m).unwrap()["rbacGroupId"], json!(140));
    // The service's other capitalisation is kept as sent.
    assert_eq!(
        m.onboarding_status.as_ref().map(|s| s.to_string()),
        Some("Onboarded".to_string())
    );
    assert_eq!(m.is_aad_joined, Some(true));
    assert_eq!(m.agent_version.as_deref(), Some("10.8760.19041.1865"));
    assert_eq!(m.managed_by.as_deref(), Some("MicrosoftIntune"));
    assert_eq!(m.defender_av_status.as_deref(), Some("Updated"));
    assert_eq!(
        m.vm_metadata.as_ref().unwrap().cloud_provider.as_deref(),
        Some("Azure")
    );
    assert_eq!(
        m.ip_addresses.as_ref().unwrap()[0].mac_address.as_deref(),
        Some("00306332FA5C")
    );
    assert_eq!(m.ip_addresses.as_ref().unwrap()[1].mac_address, None);

    // Null and missing fields are None.
    let m = &machines[1];
    assert_eq!(m.rbac_group_id, Some(RbacGroupId::Integer(0)));
    assert_eq!(m.os_build, None);
    assert_eq!(m.exposure_level, None);
    assert_eq!(m.vm_metadata, None);
    assert_eq!(m.version, None);
    assert_eq!(m.last_ip_address, None);
    assert_eq!(m.machine_tags, Some(vec![]));
    assert_eq!(
        m.health_status,
        Some(HealthStatus::Known(
            HealthStatusKnown::NoSensorDataImpairedCommunication
        ))
    );
}

#[tokio::test]
async fn unknown_values_and_fields_are_kept() {
    let server = MockServer::start_async().await;
    let original: Value = common::fixture_json("future-api-machines.json");
    serve_deflate(&server, "user3", &original.to_string()).await;
    let machines = client(&server).user_machines("user3").await.unwrap();
    let m = &machines[0];
    assert!(
        matches!(&m.health_status, Some(HealthStatus::Other(v)) if v.as_str() == "Quarantined")
    );
    assert!(matches!(&m.risk_score, Some(RiskScore::Other(v)) if v.as_str() == "Critical"));
    assert!(matches!(&m.exposure_level, Some(ExposureLevel::Other(v)) if v.as_str() == "Extreme"));
    assert!(matches!(&m.device_value, Some(DeviceValue::Other(v)) if v.as_str() == "Priceless"));
    assert!(
        matches!(&m.onboarding_status, Some(OnboardingStatus::Other(v)) if v.as_str() == "PendingOffboarding")
    );
    assert_eq!(m.extra["anotherNewField"], json!(42.5));
    assert_eq!(
        m.extra["newSensorField"],
        json!({"nested": [1, 2, {"deep": true}]})
    );
    assert_eq!(
        m.ip_addresses.as_ref().unwrap()[0].extra["gateway"],
        json!("10.1.1.254")
    );
    assert_eq!(
        m.vm_metadata.as_ref().unwrap().extra["zone"],
        json!("europe-west1-b")
    );

    // Everything comes back out exactly as it came in.
    let back = serde_json::to_value(m).unwrap();
    let mut expected = original["value"][0].clone();
    // Timestamps are re-rendered with a fixed number of digits; compare the instant.
    let seen = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert_eq!(seen(&back["firstSeen"]), seen(&expected["firstSeen"]));
    expected.as_object_mut().unwrap().remove("firstSeen");
    let mut back = back;
    back.as_object_mut().unwrap().remove("firstSeen");
    assert_eq!(back, expected);
}

/// `firstSeen` and `lastSeen` read as `chrono`'s own `Deserialize` reads them,
/// from JSON text and from a `serde_json::Value`: the service's shape directly,
/// every other one through `chrono`, with the same instants, the same refusals and
/// the same messages.
#[test]
fn timestamps_read_as_chronos_deserialize_reads_them() {
    #[derive(serde::Deserialize, Debug)]
    struct Reference {
        #[serde(rename = "firstSeen", default)]
        first_seen: Option<chrono::DateTime<chrono::Utc>>,
        #[serde(rename = "lastSeen", default)]
        last_seen: Option<chrono::DateTime<chrono::Utc>>,
    }
    type Seen = Option<chrono::DateTime<chrono::Utc>>;
    let ours = |read: Result<Machine, serde_json::Error>| -> Result<(Seen, Seen), String> {
        read.map(|m| (m.first_seen, m.last_seen))
            .map_err(|e| e.to_string())
    };
    let reference = |read: Result<Reference, serde_json::Error>| -> Result<(Seen, Seen), String> {
        read.map(|r| (r.first_seen, r.last_seen))
            .map_err(|e| e.to_string())
    };
    // (So that the table compares values too, not only refusals.)
    let mut accepted = 0;
    for value in [
        r#""2018-08-02T14:55:03.7791856Z""#,
        r#""2018-08-02T14:55:03Z""#,
        r#""2024-02-29T23:59:59.123456789Z""#,
        // An escape: the text reaches the reader as an owned string.
        r#""2018-08-02T14:55:03.7791856\u005a""#,
        r#""2018-08-02T14:55:03.7791856\u005A""#,
        r#""2018-08-02T14:55:03+02:00""#,
        r#""2018-08-02 14:55:03.5z""#,
        r#""2016-12-31T23:59:60.25Z""#,
        r#""2018-08-02T14:55:03.1234567891Z""#,
        r#""2023-02-29T00:00:00Z""#,
        r#""2018-08-02T24:00:00Z""#,
        r#""2018-08-02T14:55:03""#,
        r#""""#,
        r#""yesterday""#,
        "null",
        "17",
        "-1.5",
        "true",
        "{}",
        "[]",
        r#"["2018-08-02T14:55:03Z"]"#,
    ] {
        for key in ["firstSeen", "lastSeen"] {
            let text = format!(r#"{{"id":"m","{key}":{value}}}"#);
            let expected = reference(serde_json::from_str(&text));
            assert_eq!(ours(serde_json::from_str(&text)), expected, "{text}");
            if let Ok((first, last)) = expected {
                accepted += usize::from(first.or(last).is_some());
            }
            let tree: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                ours(serde_json::from_value(tree.clone())),
                reference(serde_json::from_value(tree)),
                "{text} as a Value"
            );
        }
    }
    assert_eq!(accepted, 2 * 9, "the table's values that chrono accepts");
}

/// What the docs of `max_response_bytes` say a decoded machine costs: several
/// hundred bytes however few fields it has, so an answer of bare ids (ten bytes
/// of text each) takes far more memory than its text.
#[test]
fn a_decoded_machine_takes_several_hundred_bytes() {
    let size = std::mem::size_of::<Machine>();
    assert!((300..1_024).contains(&size), "{size} bytes");
    assert!(size > 30 * r#"{"id":""},"#.len());
}

/// A list grown one element at a time has room for four; the answer's lists hold
/// no more room than they need once read, so a large answer takes less memory.
#[tokio::test]
async fn lists_read_from_an_answer_hold_no_spare_room() {
    let server = MockServer::start_async().await;
    let mut body = seed();
    let machine = body["value"][0].clone();
    body["value"] = json!([machine.clone(), machine.clone(), machine]);
    body["value"][0]["machineTags"] = json!(["a"]);
    body["value"][1]["ipAddresses"] = json!([{"ipAddress": "10.0.0.1"}, {"ipAddress": "10.0.0.2"}]);
    serve_json(&server, "user1", body.to_string()).await;
    let machines = client(&server).user_machines("user1").await.unwrap();
    assert_eq!(machines.len(), 3);
    for m in &machines {
        if let Some(tags) = &m.machine_tags {
            assert_eq!(tags.capacity(), tags.len());
        }
        if let Some(ips) = &m.ip_addresses {
            assert_eq!(ips.capacity(), ips.len());
        }
    }
    assert_eq!(machines[0].machine_tags.as_ref().unwrap().len(), 1);
    assert_eq!(machines[1].ip_addresses.as_ref().unwrap().len(), 2);
    // Read from text, where the length of a list is not known in advance.
    let page: defender_endpoint::types::MachineCollection =
        serde_json::from_str(&body.to_string()).unwrap();
    assert_eq!(page.value.capacity(), 3);
}

#[tokio::test]
async fn every_field_may_be_missing_but_id() {
    let server = MockServer::start_async().await;
    serve_deflate(&server, "u", r#"{"value":[{"id":"only-id"},{"id":"nulls","osBuild":null,"healthStatus":null,"rbacGroupId":null,"ipAddresses":null,"machineTags":null,"vmMetadata":null,"firstSeen":null}]}"#).await;
    let machines = client(&server).user_machines("u").await.unwrap();
    assert_eq!(machines.len(), 2);
    assert_eq!(machines[0].id, "only-id");
    assert_eq!(machines[0].computer_dns_name, None);
    assert_eq!(machines[1].health_status, None);
    assert_eq!(machines[1].ip_addresses, None);
    assert_eq!(machines[1].first_seen, None);
}

#[tokio::test]
async fn requests_carry_exactly_the_bearer_token_and_user_agent() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/api/users/user1/machines")
                .header("authorization", format!("Bearer {TOKEN}"))
                .header(
                    "user-agent",
                    format!("defender-endpoint/{}", env!("CARGO_PKG_VERSION")),
                )
                .header_missing("api-version");
            then.status(200)
                .header("content-type", JSON)
                .body(r#"{"value":[]}"#);
        })
        .await;
    let machines = client(&server)
        .user_machines(r"CONTOSO\user1")
        .await
        .unwrap();
    assert!(machines.is_empty());
    mock.assert_async().await;
}

#[tokio::test]
async fn unknown_users_yield_no_machines() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/nobody/machines");
            then.status(200)
                .header("content-type", JSON)
                .body(r#"{"@odata.context":"https://api.security.microsoft.com/api/$metadata#Machines","value":[]}"#);
        })
        .await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/olduser/machines");
            then.status(404).header("content-type", "application/json").body(
                r#"{"error":{"code":"ResourceNotFound","message":"User olduser was not found","target":"a1"}}"#,
            );
        })
        .await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/bare404/machines");
            then.status(404);
        })
        .await;
    let client = client(&server);
    for user in ["nobody", "olduser@contoso.com", "bare404"] {
        assert_eq!(
            client.user_machines(user).await.unwrap(),
            Vec::<Machine>::new(),
            "{user}"
        );
    }
}

async fn error_for(
    status: u16,
    body: &'static str,
    headers: &[(&'static str, &'static str)],
) -> Error {
    error_after(status, body, headers, 1).await
}

/// The error for an answer, checking how many requests were made (`calls`).
async fn error_after(
    status: u16,
    body: &'static str,
    headers: &[(&'static str, &'static str)],
    calls: usize,
) -> Error {
    let server = MockServer::start_async().await;
    let headers = headers.to_vec();
    let mock = server
        .mock_async(move |when, then| {
            when.path("/api/users/user1/machines");
            let mut then = then.status(status);
            for (k, v) in headers {
                then = then.header(k, v);
            }
            then.body(body);
        })
        .await;
    let err = client(&server).user_machines("user1").await.unwrap_err();
    mock.assert_calls_async(calls).await;
    err
}

#[tokio::test]
async fn api_errors_with_the_envelope() {
    let envelope = r#"{"error":{"code":"Forbidden","message":"The application does not have any of the required application roles","target":"43f4cb08-8fac-4b65-9db1-745c2ae65f3a"}}"#;
    let err = error_for(403, envelope, &[("content-type", "application/json")]).await;
    match &err {
        Error::Api {
            status,
            code,
            message,
            target,
        } => {
            assert_eq!(*status, 403);
            assert_eq!(code.as_deref(), Some("Forbidden"));
            assert!(message
                .as_deref()
                .unwrap()
                .starts_with("The application does not"));
            assert_eq!(
                target.as_deref(),
                Some("43f4cb08-8fac-4b65-9db1-745c2ae65f3a")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.status(), Some(403));
    assert!(
        err.to_string()
            .contains("43f4cb08-8fac-4b65-9db1-745c2ae65f3a"),
        "{err}"
    );

    // A 401 gets one token refresh and one retry; the static token is the same, so
    // the retry gets 401 too.
    let err = error_after(
        401,
        r#"{"error":{"code":"Unauthorized","message":"Unauthorized","target":"t-401"}}"#,
        &[],
        2,
    )
    .await;
    assert!(matches!(&err, Error::Api { status: 401, code: Some(c), .. } if c == "Unauthorized"));

    let err = error_for(
        500,
        r#"{"error":{"code":"InternalServerError","message":"try again","target":"t-500"}}"#,
        &[],
    )
    .await;
    assert!(matches!(&err, Error::Api { status: 500, target: Some(t), .. } if t == "t-500"));
}

#[tokio::test]
async fn api_errors_without_the_envelope() {
    let err = error_for(403, "", &[]).await;
    assert!(matches!(
        err,
        Error::Api {
            status: 403,
            code: None,
            message: None,
            target: None
        }
    ));

    let err = error_for(
        500,
        "<html><body>Service Unavailable</body></html>",
        &[("content-type", "text/html")],
    )
    .await;
    match err {
        Error::Api {
            status: 500,
            code: None,
            message: Some(m),
            target: None,
        } => {
            assert!(m.contains("Service Unavailable"))
        }
        other => panic!("{other:?}"),
    }

    let err = error_for(400, r#"{"unexpected":"shape"}"#, &[]).await;
    assert!(
        matches!(
            &err,
            Error::Api {
                status: 400,
                code: None,
                message: Some(m),
                ..
            } if m == r#"{"unexpected":"shape"}"#
        ),
        "{err:?}"
    );
}

/// JSON that is not Defender's envelope (an API gateway's, ASP.NET's) is quoted
/// as the message, as any other body is: it says what went wrong, and a 403
/// from a gateway's quota is not a missing permission.
#[tokio::test]
async fn another_services_json_error_is_quoted() {
    let gateway = r#"{"statusCode":403,"message":"Out of call volume quota. Quota will be replenished in 00:00:59."}"#;
    let err = error_for(403, gateway, &[("content-type", "application/json")]).await;
    assert!(
        matches!(&err, Error::Api { status: 403, code: None, message: Some(m), target: None }
            if m.contains("Out of call volume quota")),
        "{err:?}"
    );
    assert!(!err.to_string().contains("Machine.Read.All"), "{err}");

    let err = error_for(500, r#"{"Message":"An error has occurred."}"#, &[]).await;
    assert!(
        matches!(&err, Error::Api { message: Some(m), .. } if m.contains("An error has occurred.")),
        "{err:?}"
    );
    let err = error_for(500, r#"{"error":null,"message":"boom"}"#, &[]).await;
    assert!(
        matches!(&err, Error::Api { message: Some(m), .. } if m.contains("boom")),
        "{err:?}"
    );

    // Quoted as it came, not as it reads back: members in their order, numbers
    // as written.
    let long = format!(
        r#"{{"statusCode":403,"message":"Out of call volume quota.","activityId":"{}","n":1.50}}"#,
        "a".repeat(250)
    );
    let err = error_for(403, Box::leak(long.into_boxed_str()), &[]).await;
    assert!(
        matches!(&err, Error::Api { message: Some(m), .. }
            if m.starts_with(r#"{"statusCode":403,"message":"Out of call volume quota.","activityId":"aaa"#)
                && m.chars().count() == 201 && m.ends_with('…')),
        "{err:?}"
    );
    let err = error_for(500, r#"{"Message":"An error has occurred.","n":1.50}"#, &[]).await;
    assert!(
        matches!(&err, Error::Api { message: Some(m), .. } if m == r#"{"Message":"An error has occurred.","n":1.50}"#),
        "{err:?}"
    );

    // Nothing to quote: the status's usual meaning is given instead.
    let err = error_for(403, "{}", &[]).await;
    assert!(matches!(&err, Error::Api { message: None, .. }), "{err:?}");
    assert!(err.to_string().contains("Machine.Read.All"), "{err}");
}

/// An envelope with one member of another shape (a numeric `code`, an OData
/// `message` object) keeps the members that can be read, `target` above all.
#[tokio::test]
async fn an_envelope_with_an_odd_member_keeps_the_others() {
    let err = error_for(
        400,
        r#"{"error":{"code":400,"message":"Bad","target":"t-3"}}"#,
        &[],
    )
    .await;
    assert!(
        matches!(&err, Error::Api { status: 400, code: Some(c), message: Some(m), target: Some(t) }
            if c == "400" && m == "Bad" && t == "t-3"),
        "{err:?}"
    );

    let err = error_for(
        400,
        r#"{"error":{"code":"BadRequest","message":{"lang":"en-US","value":"Bad input"},"target":"t-2"}}"#,
        &[],
    )
    .await;
    assert!(
        matches!(&err, Error::Api { code: Some(c), message: Some(m), target: Some(t), .. }
            if c == "BadRequest" && m == "Bad input" && t == "t-2"),
        "{err:?}"
    );

    // A message that cannot be read as text: the body is quoted instead.
    let err = error_for(
        400,
        r#"{"error":{"code":"BadRequest","message":[1],"target":"t-1"}}"#,
        &[],
    )
    .await;
    assert!(
        matches!(&err, Error::Api { code: Some(c), message: Some(m), target: Some(t), .. }
            if c == "BadRequest" && m.contains("[1]") && t == "t-1"),
        "{err:?}"
    );
}

/// A 503 that says when to come back says so beside what its body says.
#[tokio::test]
async fn a_503_with_a_body_still_says_when_to_come_back() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/user1/machines");
            then.status(503)
                .header("retry-after", "3600")
                .header("content-type", "text/html")
                .body("<html>Service Unavailable</html>");
        })
        .await;
    let err = client(&server).user_machines("user1").await.unwrap_err();
    assert!(
        matches!(&err, Error::Api { status: 503, message: Some(m), .. }
            if m.contains("Service Unavailable") && m.contains("called again in 3600 s")),
        "{err:?}"
    );
}

#[tokio::test]
async fn throttling_is_its_own_error() {
    let err = error_for(
        429,
        r#"{"error":{"code":"429","message":"Too many requests","target":"t"}}"#,
        &[("retry-after", "17")],
    )
    .await;
    assert!(matches!(err, Error::Throttled { retry_after: Some(d) } if d.as_secs() == 17));
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.retry_after().map(|d| d.as_secs()), Some(17));

    let err = error_for(429, "", &[]).await;
    assert!(matches!(err, Error::Throttled { retry_after: None }));
}

/// A body that starts with a byte order mark is read without it (RFC 8259 lets a
/// parser ignore one), by both calls; what follows must still be JSON.
#[tokio::test]
async fn a_byte_order_mark_is_ignored() {
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend_from_slice(fixture("seed-user-machines.json").as_bytes());
    let server = MockServer::start_async().await;
    serve_deflate(&server, "user1", std::str::from_utf8(&body).unwrap()).await;
    serve_deflate(&server, "user2", "\u{FEFF}{\"value\":[{\"id\":7}]}").await;
    let client = client(&server);
    assert_eq!(client.user_machines("user1").await.unwrap().len(), 2);
    assert_eq!(client.user_machines_json("user1").await.unwrap().len(), 2);
    let err = client.user_machines("user2").await.unwrap_err();
    assert!(
        matches!(&err, Error::Decode { status: 200, message } if message.contains("value[0].id")),
        "{err:?}"
    );

    // An error answer's envelope too.
    server
        .mock_async(|when, then| {
            when.path("/api/users/user3/machines");
            then.status(403).body(
                "\u{FEFF}{\"error\":{\"code\":\"Forbidden\",\"message\":\"no\",\"target\":\"t-1\"}}",
            );
        })
        .await;
    let err = client.user_machines("user3").await.unwrap_err();
    assert!(
        matches!(&err, Error::Api { status: 403, code: Some(c), target: Some(t), .. }
            if c == "Forbidden" && t == "t-1"),
        "{err:?}"
    );
}

/// serde quotes the odd value in its message: a huge one is cut, and the message
/// still says which field of which machine it was.
#[tokio::test]
async fn a_huge_odd_value_gives_an_error_of_readable_size() {
    let body = format!(
        r#"{{"value":[{{"id":"odd-one","osBuild":"{}"}}]}}"#,
        "A".repeat(2_000_000)
    );
    let server = MockServer::start_async().await;
    serve_json(&server, "user1", body).await;
    let err = client(&server).user_machines("user1").await.unwrap_err();
    let shown = err.to_string();
    assert!(shown.len() < 6_000, "{} bytes", shown.len());
    assert!(format!("{err:?}").len() < 6_000);
    assert!(
        shown.contains(r#"(at value[0].osBuild, machine id "odd-one")"#),
        "{}",
        &shown[shown.len() - 200..]
    );
}

#[tokio::test]
async fn malformed_answers_are_decode_errors() {
    for (body, needle) in [
        (r#"{"value":[{"id":"x",}]}"#, "line 1"),
        (
            r#"{"value":[{"computerDnsName":"no id"}]}"#,
            "missing field `id`",
        ),
        (r#"{"value":{"id":"x"}}"#, "invalid type"),
        (
            "",
            "EOF while parsing a value at line 1 column 0: the body is empty",
        ),
        (" \n ", "the body is blank"),
        // JSON cut short is not said to be something else.
        (r#""abc"#, "EOF while parsing a string at line 1 column 4"),
        ("[]", "invalid type"),
        // Not JSON at all (a proxy's login page): what it starts with, cut,
        // with the token blanked and control characters escaped.
        (
            "  <html><head><title>Sign in</title></head>\n<body>Bearer test-token-7d1f0e ...",
            r#"expected value at line 1 column 3: the body is not JSON; it starts with "<html><head><title>Sign in</title></head>\n<body>Bearer <reda…""#,
        ),
        // One odd field among many machines: the message says which field of which machine.
        (
            r#"{"value":[{"id":"m1","osBuild":19045},{"id":"odd-one","osBuild":"19045"}]}"#,
            r#"(at value[1].osBuild, machine id "odd-one")"#,
        ),
        (
            r#"{"value":[{"id":"m1","lastSeen":"yesterday"}]}"#,
            r#"(at value[0].lastSeen, machine id "m1")"#,
        ),
        // A date-time without its zone: what was wanted is said.
        (
            r#"{"value":[{"id":"m1"},{"id":"m2","firstSeen":"2024-01-01T00:00:00.1234567"}]}"#,
            r#": "2024-01-01T00:00:00.1234567" is not a date or time as the spec writes it (RFC 3339; a date-time has its time zone, as in 2018-08-02T14:55:03.7791856Z) (at value[1].firstSeen, machine id "m2")"#,
        ),
        // The same key twice: the hint quotes only a value that fails as a date.
        (
            r#"{"value":[{"id":"m1","firstSeen":"2024-01-01T00:00:00","firstSeen":"2024-01-01T00:00:00Z","osBuild":"abc"}]}"#,
            "premature end of input at line 1 column 54 (at value[0].osBuild",
        ),
        (
            r#"{"value":[{"id":"m1","ipAddresses":[null]}]}"#,
            "(at value[0].ipAddresses[0]",
        ),
        // A machine that is not an object at all, beside one or after one
        // the types cannot hold.
        (r#"{"value":[{"id":"m1"},7]}"#, "(at value[1])"),
        (r#"{"value":[{"id":5},7]}"#, "(at value[0].id)"),
        // A link the JSON call cannot follow either.
        (
            r#"{"value":[{"id":5}],"@odata.nextLink":5}"#,
            "(at value[0].id)",
        ),
        // A link whether the JSON call can follow it is not known here (this
        // one is to another host): no hint.
        (
            r#"{"value":[{"id":5}],"@odata.nextLink":"https://elsewhere.example/api/users/user1/machines?$skip=1"}"#,
            "(at value[0].id)",
        ),
        // The answer's own member given twice.
        (r#"{"value":[],"value":[{"id":5}]}"#, "duplicate field"),
        // A member of the collection that is not what the spec describes.
        (
            r#"{"@odata.context":5,"value":[{"id":"m1"}]}"#,
            "invalid type",
        ),
    ] {
        let server = MockServer::start_async().await;
        serve_json(&server, "user1", body).await;
        match client(&server).user_machines("user1").await {
            Err(Error::Decode {
                status: 200,
                message,
            }) => {
                assert!(message.contains(needle), "{body}: {message}");
                // Only what does not start as JSON is said not to be JSON.
                assert_eq!(
                    message.contains("not JSON"),
                    body.trim_start().starts_with('<'),
                    "{body}: {message}"
                );
                // The JSON call is pointed to exactly when it reads the answer.
                let json_reads_it = client(&server).user_machines_json("user1").await.is_ok();
                assert_eq!(
                    message.contains("Client::user_machines_json reads"),
                    json_reads_it,
                    "{body}: {message}"
                );
            }
            other => panic!("{body}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_known_key_given_twice_is_an_error_and_the_json_call_keeps_the_last() {
    let body = r#"{"value":[{"id":"first","id":"second","extra":1,"extra":2}]}"#;
    let server = MockServer::start_async().await;
    serve_json(&server, "user1", body).await;
    let client = client(&server);
    match client.user_machines("user1").await {
        Err(Error::Decode { message, .. }) => {
            assert!(message.contains("duplicate field `id`"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let machines = client.user_machines_json("user1").await.unwrap();
    assert_eq!(
        Value::Object(machines[0].clone()),
        json!({"id": "second", "extra": 2})
    );
    assert_eq!(machines.len(), 1);
    // An unknown key given twice in the typed answer: the last is kept.
    let server = MockServer::start_async().await;
    serve_json(
        &server,
        "user1",
        r#"{"value":[{"id":"m","extra":1,"extra":2}]}"#,
    )
    .await;
    let machines = common::client(&server)
        .user_machines("user1")
        .await
        .unwrap();
    assert_eq!(machines[0].extra["extra"], json!(2));
}

#[tokio::test]
async fn invalid_user_names_send_nothing() {
    let server = MockServer::start_async().await;
    let any = server
        .mock_async(|_, then| {
            then.status(200).body(r#"{"value":[]}"#);
        })
        .await;
    let client = client(&server);
    for bad in [
        "",
        "  ",
        ".",
        "..",
        "a/b",
        "@contoso.com",
        "user1@",
        r"\u",
        r"D\",
        "a@b@c",
        r"A\B\c",
        "x\ny",
        "\u{1b}[31m",
        "\u{0}",
        &"a".repeat(257),
    ] {
        match client.user_machines(bad).await {
            Err(Error::InvalidUserName(e)) => assert_eq!(e.input(), bad),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    any.assert_calls_async(0).await;
}

#[tokio::test]
async fn each_form_reaches_its_one_segment() {
    let server = MockServer::start_async().await;
    let client = client(&server);
    for (input, path) in [
        ("user1@contoso.com", "/api/users/user1/machines"),
        (r"CONTOSO\user1", "/api/users/user1/machines"),
        (" user1 ", "/api/users/user1/machines"),
        ("o'brien j", "/api/users/o'brien%20j/machines"),
        ("jörg", "/api/users/j%C3%B6rg/machines"),
        ("a#b?c%", "/api/users/a%23b%3Fc%25/machines"),
        ("...", "/api/users/.../machines"),
    ] {
        let mock = server
            .mock_async(|when, then| {
                when.is_true(move |req| req.uri().path() == path);
                then.status(200).body(r#"{"value":[]}"#);
            })
            .await;
        client
            .user_machines(input)
            .await
            .unwrap_or_else(|e| panic!("{input}: {e}"));
        mock.assert_calls_async(1).await;
        mock.delete_async().await;
    }
    // A parsed name goes the same way.
    let mock = server
        .mock_async(|when, then| {
            when.path("/api/users/o'brien%20j/machines");
            then.status(200).body(r#"{"value":[{"id":"m"}]}"#);
        })
        .await;
    let name = UserName::parse("o'brien j@contoso.com").unwrap();
    assert_eq!(client.machines_of(&name).await.unwrap().len(), 1);
    mock.assert_async().await;
}

#[tokio::test]
async fn debug_output_never_shows_the_token() {
    let server = MockServer::start_async().await;
    let client = client(&server);
    let shown = format!("{client:?} {client:#?} {:?}", client.raw());
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(shown.contains(&server.base_url()));
}

#[tokio::test]
async fn oversized_answers_are_refused() {
    let server = MockServer::start_async().await;
    serve_deflate(&server, "user1", &fixture("seed-user-machines.json")).await;
    let err = common::builder(&server)
        .max_response_bytes(1000)
        .build()
        .unwrap()
        .user_machines("user1")
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ResponseTooLarge { limit: 1000 }),
        "{err:?}"
    );
}

#[test]
fn the_client_is_clone_send_sync() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<defender_endpoint::Client>();
    fn assert_error<T: std::error::Error + Clone + Send + Sync + 'static>() {}
    assert_error::<Error>();
}

/// The calls' futures and the batch stream can go to `tokio::spawn`: `Send`, and
/// `'static` once they own what they borrow.
#[test]
fn calls_can_be_spawned() {
    fn spawnable<T: Send + 'static>(_: &T) {}
    fn sendable<T: Send>(_: &T) {}
    let server = MockServer::start();
    let client = client(&server);
    let owned = client.clone();
    spawnable(&async move { owned.user_machines("user1").await });
    sendable(&client.user_machines("user1"));
    sendable(&client.user_machines_json("user1"));
    let batch = client.machines_for_users(["user1".to_string()], 2);
    spawnable(&batch);
}

/// Records the scopes it is asked for.
#[derive(Default)]
struct Recording(std::sync::Mutex<Vec<Vec<String>>>);

#[defender_endpoint::async_trait]
impl defender_endpoint::TokenCredential for Recording {
    async fn get_token(&self, scopes: &[&str]) -> Result<defender_endpoint::AccessToken, Error> {
        self.0
            .lock()
            .unwrap()
            .push(scopes.iter().map(|s| s.to_string()).collect());
        Ok(defender_endpoint::AccessToken::never_expires(
            "from-recording",
        ))
    }
}

#[tokio::test]
async fn tokens_are_requested_for_the_defender_scope_once() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.header("authorization", "Bearer from-recording");
            then.status(200).body(r#"{"value":[]}"#);
        })
        .await;
    let credential = std::sync::Arc::new(Recording::default());
    let client = common::builder(&server)
        .credential(credential.clone())
        .build()
        .unwrap();
    for _ in 0..3 {
        client.user_machines("user1").await.unwrap();
    }
    mock.assert_calls_async(3).await;
    assert_eq!(
        *credential.0.lock().unwrap(),
        vec![vec![
            "https://api.securitycenter.microsoft.com/.default".to_string()
        ]]
    );
}

#[tokio::test]
async fn a_credential_failure_is_a_credential_error_and_sends_nothing() {
    struct Failing;
    #[defender_endpoint::async_trait]
    impl defender_endpoint::TokenCredential for Failing {
        async fn get_token(&self, _: &[&str]) -> Result<defender_endpoint::AccessToken, Error> {
            Err(Error::Credential {
                message: "vault unreachable".into(),
                status: Some(503),
                code: None,
                description: None,
                error_codes: vec![],
                trace_id: None,
                correlation_id: None,
            })
        }
    }
    let server = MockServer::start_async().await;
    let any = server
        .mock_async(|_, then| {
            then.status(200).body(r#"{"value":[]}"#);
        })
        .await;
    let client = common::builder(&server)
        .credential(Failing)
        .build()
        .unwrap();
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(
        matches!(&err, Error::Credential { message, status: Some(503), .. } if message == "vault unreachable"),
        "{err:?}"
    );
    any.assert_calls_async(0).await;
}

#[tokio::test]
async fn next_links_are_followed_so_no_machine_is_lost() {
    let server = MockServer::start_async().await;
    let next = format!("{}/api/users/user1/machines?$skip=2", server.base_url());
    let first = server
        .mock_async(move |when, then| {
            when.path("/api/users/user1/machines")
                .is_true(|req| req.uri().query().is_none());
            then.status(200).body(
                json!({"value": [{"id": "m1"}, {"id": "m2"}], "@odata.nextLink": next}).to_string(),
            );
        })
        .await;
    let second = server
        .mock_async(|when, then| {
            when.path("/api/users/user1/machines")
                .query_param("$skip", "2")
                .header("authorization", format!("Bearer {TOKEN}"));
            then.status(200).body(r#"{"value":[{"id":"m3"}]}"#);
        })
        .await;
    let machines = client(&server).user_machines("user1").await.unwrap();
    let ids: Vec<_> = machines.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["m1", "m2", "m3"]);
    first.assert_calls_async(1).await;
    second.assert_calls_async(1).await;
}

/// Serves `pages` as user1's machines: the first with no query, page `k` for
/// `$skip=k`; one mock each, in order.
async fn serve_pages(server: &MockServer, pages: Vec<String>) -> Vec<httpmock::Mock<'_>> {
    let mut mocks = Vec::new();
    for (skip, body) in pages.into_iter().enumerate() {
        mocks.push(
            server
                .mock_async(move |when, then| {
                    let when = when.path("/api/users/user1/machines");
                    if skip == 0 {
                        when.is_true(|req| req.uri().query().is_none());
                    } else {
                        when.query_param("$skip", skip.to_string());
                    }
                    then.status(200).body(body);
                })
                .await,
        );
    }
    mocks
}

/// A server that keeps sending new next links costs a call 100 requests at
/// most, and the call fails rather than return a list that may be incomplete.
#[tokio::test]
async fn a_call_fetches_at_most_a_hundred_pages() {
    let server = MockServer::start_async().await;
    let next = |page: usize| {
        json!({"value": [{"id": format!("m{page}")}],
               "@odata.nextLink": format!("/api/users/user1/machines?$skip={}", page + 1)})
        .to_string()
    };
    let pages = serve_pages(&server, (0..=100).map(next).collect()).await;
    let err = client(&server).user_machines("user1").await.unwrap_err();
    assert!(
        matches!(&err, Error::Decode { status: 200, message } if message.contains("leads past 100 pages")),
        "{err:?}"
    );
    // The first page and 99 next ones: page 100 is not asked for.
    for (page, mock) in pages.iter().enumerate() {
        mock.assert_calls_async(usize::from(page < 100)).await;
    }
}

/// The body limit holds for a whole call: every page's body counts against it.
#[tokio::test]
async fn the_body_limit_holds_for_all_the_pages_of_a_call() {
    let server = MockServer::start_async().await;
    let page = |skip: u32| {
        json!({"value": [{"id": format!("m{skip}"), "computerDnsName": "x".repeat(300)}],
               "@odata.nextLink": format!("/api/users/user1/machines?$skip={}", skip + 1)})
        .to_string()
    };
    let size = page(0).len();
    let mut pages: Vec<String> = (0..6).map(page).collect();
    pages.push(json!({"value": [{"id": "m6"}]}).to_string());
    serve_pages(&server, pages).await;
    // Each page is well under the limit; six of them are not.
    let limit = size * 4;
    let built = |limit: usize| {
        common::builder(&server)
            .max_response_bytes(limit)
            .build()
            .unwrap()
    };
    let err = built(limit).user_machines("user1").await.unwrap_err();
    assert!(
        matches!(err, Error::ResponseTooLarge { limit: l } if l == limit),
        "{err:?}"
    );
    // So do the pages of the call that returns the machines as JSON.
    let err = built(limit).user_machines_json("user1").await.unwrap_err();
    assert!(matches!(err, Error::ResponseTooLarge { .. }), "{err:?}");
    // With room for all of them, the call has every machine.
    let machines = built(size * 7).user_machines("user1").await.unwrap();
    assert_eq!(machines.len(), 7);
}

/// An error answer is held to the limit on its own and does not count against
/// the call's: a retried 429 on a later page, or a 503 with a long page of its
/// own, fails nothing that fits.
#[tokio::test]
async fn error_answers_do_not_count_against_the_call_limit() {
    let server = MockServer::start_async().await;
    let first = json!({"value": [{"id": "m1", "computerDnsName": "x".repeat(300)}],
                       "@odata.nextLink": "/api/users/user1/machines?$skip=1"})
    .to_string();
    let second = json!({"value": [{"id": "m2"}]}).to_string();
    let limit = first.len() + second.len() + 10;
    let unavailable = server
        .mock_async(|when, then| {
            when.path("/api/users/user1/machines")
                .is_true(|req| req.uri().query().is_none());
            then.status(503).body("e".repeat(limit - 1));
        })
        .await;
    unavailable.up_to_n_times_async(1).await;
    server
        .mock_async(move |when, then| {
            when.path("/api/users/user1/machines")
                .is_true(|req| req.uri().query().is_none());
            then.status(200).body(first);
        })
        .await;
    let throttled = server
        .mock_async(|when, then| {
            when.path("/api/users/user1/machines").query_param("$skip", "1");
            then.status(429).header("retry-after", "0").body(
                r#"{"error":{"code":"TooManyRequests","message":"Too many requests, slow down","target":"t-1"}}"#,
            );
        })
        .await;
    throttled.up_to_n_times_async(1).await;
    server
        .mock_async(move |when, then| {
            when.path("/api/users/user1/machines")
                .query_param("$skip", "1");
            then.status(200).body(second);
        })
        .await;
    let machines = common::builder(&server)
        .max_response_bytes(limit)
        .retry(common::quick_retries(3))
        .build()
        .unwrap()
        .user_machines("user1")
        .await
        .unwrap();
    assert_eq!(machines.len(), 2);
    unavailable.assert_calls_async(1).await;
    throttled.assert_calls_async(1).await;
}

#[tokio::test]
async fn a_missing_next_page_is_an_error_not_a_shorter_list() {
    let server = MockServer::start_async().await;
    let next = format!("{}/api/users/user1/machines?$skip=1", server.base_url());
    server
        .mock_async(move |when, then| {
            when.path("/api/users/user1/machines")
                .is_true(|req| req.uri().query().is_none());
            then.status(200)
                .body(json!({"value": [{"id": "m1"}], "@odata.nextLink": next}).to_string());
        })
        .await;
    let second = server
        .mock_async(|when, then| {
            when.path("/api/users/user1/machines")
                .query_param("$skip", "1");
            then.status(404);
        })
        .await;
    let err = client(&server).user_machines("user1").await.unwrap_err();
    assert!(matches!(err, Error::Api { status: 404, .. }), "{err:?}");
    assert!(err.to_string().contains("incomplete"), "{err}");
    second.assert_calls_async(1).await;
}

#[tokio::test]
async fn an_error_body_that_echoes_the_token_does_not_reveal_it() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/user1/machines");
            then.status(400).body(format!(
                r#"{{"error":{{"code":"BadRequest","message":"bad header: Bearer {TOKEN}","target":"t-{TOKEN}"}}}}"#
            ));
        })
        .await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/user2/machines");
            then.status(502).body(format!(
                "<html>gateway saw Authorization: Bearer {TOKEN}</html>"
            ));
        })
        .await;
    // Texts the error shows only the start of: the body of a gateway's page is cut at
    // 200 characters and a machine id at 64, here in the middle of the token.
    server
        .mock_async(|when, then| {
            when.path("/api/users/user3/machines");
            then.status(502)
                .body(format!("{}Bearer {TOKEN} and more", "x".repeat(183)));
        })
        .await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/user4/machines");
            then.status(200).body(format!(
                r#"{{"value":[{{"id":"{}{TOKEN}","osBuild":"odd"}}]}}"#,
                "x".repeat(50)
            ));
        })
        .await;
    let client = client(&server);
    for user in ["user1", "user2", "user3", "user4"] {
        let err = client.user_machines(user).await.unwrap_err();
        for shown in [err.to_string(), format!("{err:?}")] {
            // Not even the part of the token that would precede a cut.
            assert!(!shown.contains(&TOKEN[..10]), "{user}: {shown}");
            assert!(shown.contains("<redacted>"), "{user}: {shown}");
        }
    }
}

/// An opaque token (a vault's, a gateway's) echoed escaped or cut short is
/// blanked as the client secret is in what Entra ID sends back: percent-encoded,
/// HTML- or JSON-escaped, or its first characters only.
#[tokio::test]
async fn a_token_echoed_in_another_spelling_is_not_shown() {
    const OPAQUE: &str = "opaque+tok/enABCDEFGHIJKLMNOP=";
    let bodies = [
        (
            401,
            "Unauthorized: Bearer opaque%2Btok%2FenABCDEFGHIJKLMNOP%3D",
        ),
        (
            401,
            "<p>Bearer opaque&#43;tok&#47;enABCDEFGHIJKLMNOP&#61;</p>",
        ),
        (401, r#"{"detail":"Bearer opaque+tok\/enABCDEFGHIJKLMNOP=""#),
        (
            400,
            r#"{"error":{"code":"BadRequest","message":"Bearer opaque%2Btok%2FenABCDEFGHIJKLMNOP%3D","target":"t"}}"#,
        ),
        (502, "token 'opaque+tok/enABCD...' refused"),
    ];
    let server = MockServer::start_async().await;
    for (i, (status, body)) in bodies.iter().enumerate() {
        let (status, body) = (*status, *body);
        server
            .mock_async(move |when, then| {
                when.path(format!("/api/users/user{i}/machines"));
                then.status(status).body(body);
            })
            .await;
    }
    let client = defender_endpoint::Client::builder()
        .base_url(server.base_url())
        .credential(defender_endpoint::StaticToken::new(OPAQUE))
        .retry(defender_endpoint::RetryPolicy::none())
        .build()
        .unwrap();
    for i in 0..bodies.len() {
        let err = client.user_machines(format!("user{i}")).await.unwrap_err();
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains("ABCD"), "{i}: {shown}");
            assert!(
                !shown.contains("tok%2F") && !shown.contains("tok&#47;"),
                "{i}: {shown}"
            );
            assert!(shown.contains("<redacted>"), "{i}: {shown}");
        }
    }
}

#[tokio::test]
async fn a_success_status_other_than_200_is_a_decode_error() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/user1/machines");
            then.status(204);
        })
        .await;
    let err = client(&server).user_machines("user1").await.unwrap_err();
    assert!(matches!(err, Error::Decode { status: 204, .. }), "{err:?}");
}

#[tokio::test]
async fn next_links_away_from_the_api_or_in_a_loop_are_refused() {
    for (user, link) in [
        ("away", "https://attacker.example/steal?away".to_string()),
        ("other", "/api/machines".to_string()),
        ("loop", "/api/users/loop/machines?$skip=0".to_string()),
    ] {
        let server = MockServer::start_async().await;
        let path = format!("/api/users/{user}/machines");
        let body = json!({"value": [{"id": "m1"}], "@odata.nextLink": link}).to_string();
        let mock = server
            .mock_async(move |when, then| {
                when.path(path);
                then.status(200).body(body);
            })
            .await;
        let err = client(&server).user_machines(user).await.unwrap_err();
        match user {
            "other" => assert!(err.to_string().contains("refusing"), "{err}"),
            _ => assert!(matches!(err, Error::Decode { .. }), "{user}: {err:?}"),
        }
        assert!(mock.calls_async().await <= 2, "{user}");
    }
}

#[tokio::test]
async fn a_corrupt_compressed_body_is_an_error_not_retried() {
    let server = MockServer::start_async().await;
    let mock = serve_encoded(
        &server,
        "user1",
        "deflate",
        b"this is not deflate data at all".to_vec(),
    )
    .await;
    let client = common::builder(&server)
        .retry(common::quick_retries(4))
        .build()
        .unwrap();
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(matches!(err, Error::Decode { status: 200, .. }), "{err:?}");
    mock.assert_calls_async(1).await;
}

#[tokio::test]
async fn raw_deflate_bodies_are_decoded_too() {
    use std::io::Write;
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(fixture("seed-user-machines.json").as_bytes())
        .unwrap();
    let raw = e.finish().unwrap();
    let server = MockServer::start_async().await;
    let mock = serve_encoded(&server, "user1", "deflate", raw).await;
    let machines = client(&server).user_machines("user1").await.unwrap();
    assert_eq!(machines.len(), 2);
    assert_eq!(machines[1].id, "machine-2");
    mock.assert_async().await;
}

#[tokio::test]
async fn a_deflate_bomb_stops_at_the_limit() {
    // 50 MB of zeros compress to about 50 KB.
    let bomb = deflate(&vec![b' '; 50 * 1024 * 1024]);
    assert!(bomb.len() < 200 * 1024);
    let server = MockServer::start_async().await;
    serve_encoded(&server, "user1", "deflate", bomb).await;
    let err = common::builder(&server)
        .max_response_bytes(1024 * 1024)
        .build()
        .unwrap()
        .user_machines("user1")
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ResponseTooLarge { limit: 1048576 }),
        "{err:?}"
    );
}

/// Serves alice's machine `a1` with an `@odata.nextLink` of `link` (any JSON value).
async fn alice_with_next_link<'a>(
    server: &'a MockServer,
    link: impl Into<Value>,
) -> httpmock::Mock<'a> {
    let body = json!({"value": [{"id": "a1"}], "@odata.nextLink": link.into()}).to_string();
    server
        .mock_async(|when, then| {
            when.path("/api/users/alice/machines");
            then.status(200).body(body);
        })
        .await
}

/// `user_machine_pages` gives back every page whole: the collection's members
/// `user_machines` leaves out, the link that led on, and the machines, each page
/// serialising to what the API sent.
#[tokio::test]
async fn every_page_is_kept_whole_by_user_machine_pages() {
    let server = MockServer::start_async().await;
    let mut first = seed();
    first["@odata.context"] = json!("https://api.security.microsoft.com/api/$metadata#Machines");
    first["@odata.count"] = json!(3);
    first["warning"] = json!({"partial": true, "reason": "a new member"});
    first["@odata.nextLink"] = json!("/api/users/alice/machines?$skip=2");
    let second = json!({
        "@odata.context": "https://api.security.microsoft.com/api/$metadata#Machines",
        "value": [{"id": "a3", "newField": [1, 2.5, "x"]}],
        "trailer": null,
    });
    for (page, skip) in [(&first, None), (&second, Some("2"))] {
        let body = page.to_string();
        server
            .mock_async(|when, then| {
                let when = when.path("/api/users/alice/machines");
                match skip {
                    Some(skip) => when.query_param("$skip", skip),
                    None => when.query_param_missing("$skip"),
                };
                then.status(200).body(body);
            })
            .await;
    }
    let client = client(&server);
    let pages = client
        .user_machine_pages("alice@contoso.com")
        .await
        .unwrap();
    assert_eq!(pages.len(), 2);
    // A documented field sent as null is left out when serialised (see `types`).
    let mut sent = first.clone();
    let null = sent["value"][1]
        .as_object_mut()
        .unwrap()
        .remove("aadDeviceId");
    assert_eq!(null, Some(Value::Null));
    assert_eq!(serde_json::to_value(&pages[0]).unwrap(), sent);
    assert_eq!(serde_json::to_value(&pages[1]).unwrap(), second);
    assert_eq!(pages[0].extra.get("@odata.count"), Some(&json!(3)));
    // The same machines as user_machines, which leaves the rest out.
    let machines = client.user_machines("alice").await.unwrap();
    let paged: Vec<_> = pages.into_iter().flat_map(|p| p.value).collect();
    assert_eq!(paged, machines);
    assert_eq!(machines.len(), 3);

    // An unknown user: no pages for a 404, one empty page for a 200.
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/gone/machines");
            then.status(404)
                .json_body(json!({"error": {"code": "ResourceNotFound", "message": "m"}}));
        })
        .await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/nobody/machines");
            then.status(200).body(r#"{"value":[]}"#);
        })
        .await;
    let client = common::client(&server);
    assert!(client.user_machine_pages("gone").await.unwrap().is_empty());
    let pages = client.user_machine_pages("nobody").await.unwrap();
    assert_eq!(pages.len(), 1);
    assert!(pages[0].value.is_empty());
    // Nothing is sent for a name the rule refuses.
    let err = client.user_machine_pages("a@b@c").await.unwrap_err();
    assert!(matches!(err, Error::InvalidUserName(_)), "{err:?}");
}

/// A link written for another host (the former `api.securitycenter.microsoft.com`,
/// or the service behind a proxy that has a base path of its own) is followed on
/// the client's own base URL, with its query: the other host gets nothing.
#[tokio::test]
async fn a_next_link_on_another_host_is_followed_on_the_base_url() {
    let server = MockServer::start_async().await;
    let other = MockServer::start_async().await;
    let anything = other
        .mock_async(|when, then| {
            when.any_request();
            then.status(200).body(r#"{"value":[{"id":"stolen"}]}"#);
        })
        .await;
    for (base, link) in [
        (
            server.base_url(),
            "https://api.securitycenter.microsoft.com/api/users/alice/machines?$skiptoken=p2"
                .to_string(),
        ),
        (
            format!("{}/defender", server.base_url()),
            format!(
                "{}/api/users/Alice/machines?$skiptoken=p2",
                other.base_url()
            ),
        ),
    ] {
        let prefix = base.strip_prefix(&server.base_url()).unwrap().to_owned();
        let body = json!({"value": [{"id": "a1"}], "@odata.nextLink": link}).to_string();
        let first = server
            .mock_async(|when, then| {
                when.path(format!("{prefix}/api/users/alice/machines"))
                    .query_param_missing("$skiptoken");
                then.status(200).body(body);
            })
            .await;
        let second = server
            .mock_async(|when, then| {
                when.path_matches(format!("^{prefix}/api/users/(alice|Alice)/machines$"))
                    .query_param("$skiptoken", "p2");
                then.status(200).body(r#"{"value":[{"id":"a2"}]}"#);
            })
            .await;
        let client = common::builder(&server).base_url(&base).build().unwrap();
        let machines = client.user_machines("alice").await.unwrap();
        let ids: Vec<&str> = machines.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a1", "a2"], "{link}");
        first.assert_calls_async(1).await;
        second.assert_calls_async(1).await;
        first.delete_async().await;
        second.delete_async().await;
    }
    anything.assert_calls_async(0).await;
}

/// A link back to the first page (`""`, `"#more"`) is a loop, refused before it is
/// fetched again.
#[tokio::test]
async fn a_next_link_back_to_the_first_page_is_refused_at_once() {
    for link in ["", "#more", "/api/users/alice/machines"] {
        let server = MockServer::start_async().await;
        let first = alice_with_next_link(&server, link).await;
        let err = client(&server).user_machines("alice").await.unwrap_err();
        assert!(err.to_string().contains("repeats"), "{link:?}: {err}");
        first.assert_calls_async(1).await;
    }
}

#[tokio::test]
async fn a_next_link_to_another_users_machines_is_refused() {
    let server = MockServer::start_async().await;
    alice_with_next_link(&server, "/api/users/mallory/machines?$skip=1").await;
    let mallory = server
        .mock_async(|when, then| {
            when.path("/api/users/mallory/machines");
            then.status(200).body(r#"{"value":[{"id":"m1"}]}"#);
        })
        .await;
    let err = client(&server).user_machines("alice").await.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("mallory"), "{err}");
    mallory.assert_calls_async(0).await;
}

/// A link may spell the same user in another case, and the path's own words too
/// (OData paths are not case-sensitive): it is followed, with the user as the link
/// spells it and the path as the spec has it.
#[tokio::test]
async fn a_next_link_may_spell_the_user_and_the_path_in_another_case() {
    for (link, user) in [
        ("/api/users/Alice/machines?$skip=1", "Alice"),
        (
            "https://api.security.microsoft.com/API/Users/ALICE/Machines?$skip=1",
            "ALICE",
        ),
    ] {
        let server = MockServer::start_async().await;
        alice_with_next_link(&server, link).await;
        server
            .mock_async(|when, then| {
                when.path(format!("/api/users/{user}/machines"))
                    .query_param("$skip", "1");
                then.status(200).body(r#"{"value":[{"id":"a2"}]}"#);
            })
            .await;
        let machines = client(&server).user_machines("alice").await.unwrap();
        let ids: Vec<&str> = machines.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a1", "a2"], "{link}");
    }
    // Another user's machines are refused however the path is spelt.
    let server = MockServer::start_async().await;
    alice_with_next_link(&server, "/API/USERS/mallory/MACHINES").await;
    let err = client(&server).user_machines("alice").await.unwrap_err();
    assert!(
        err.to_string().contains("leaves the machines of this user"),
        "{err}"
    );
}

/// `K` (the Kelvin sign) is not `k` to Windows, though lower-casing merges them:
/// a link from `k`'s machines to the Kelvin sign's is another user's, and refused.
#[tokio::test]
async fn a_next_link_to_a_name_only_lower_casing_merges_is_refused() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/k/machines");
            then.status(200).json_body(json!({
                "value": [{"id": "k1"}],
                "@odata.nextLink": "/api/users/%E2%84%AA/machines",
            }));
        })
        .await;
    let kelvin = server
        .mock_async(|when, then| {
            when.path("/api/users/%E2%84%AA/machines");
            then.status(200).body(r#"{"value":[{"id":"kelvin1"}]}"#);
        })
        .await;
    let err = client(&server).user_machines("k").await.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    kelvin.assert_calls_async(0).await;
}

#[tokio::test]
async fn api_error_fields_cannot_forge_log_lines() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/user1/machines");
            then.status(403).json_body(json!({"error": {
                "code": "Forbidden\n2026-01-01T00:00:00Z INFO forged\u{1b}[2J",
                "message": "m\r\nforged",
                "target": "t\nforged"
            }}));
        })
        .await;
    let err = client(&server).user_machines("user1").await.unwrap_err();
    let shown = err.to_string();
    assert!(!shown.contains(['\n', '\r', '\u{1b}']), "{shown:?}");
    assert!(shown.contains("INFO forged"), "{shown:?}");
    // The fields themselves keep what was sent.
    assert_eq!(err.target(), Some("t\nforged"));
}

/// `usize::MAX` is the natural way to say "no limit"; deflate bodies still decode.
#[tokio::test]
async fn the_largest_body_limit_still_decodes_deflate() {
    let server = MockServer::start_async().await;
    serve_deflate(&server, "user1", &fixture("seed-user-machines.json")).await;
    let client = common::builder(&server)
        .max_response_bytes(usize::MAX)
        .build()
        .unwrap();
    assert_eq!(client.user_machines("user1").await.unwrap().len(), 2);
}

/// The escape hatch passes the same hooks: an answer over the size limit is an
/// error there too, not an empty body.
#[tokio::test]
async fn the_raw_client_reports_what_the_hooks_refused() {
    let server = MockServer::start_async().await;
    serve_deflate(&server, "user1", &fixture("seed-user-machines.json")).await;
    let client = common::builder(&server)
        .max_response_bytes(16)
        .build()
        .unwrap();
    let id = defender_endpoint::types::GetUserMachinesId::try_from("user1").unwrap();
    let err = client.raw().get_user_machines(&id).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("larger than the limit of 16 bytes"),
        "{err}"
    );
    // Through the wrapper, the same answer is the typed error.
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(
        matches!(err, Error::ResponseTooLarge { limit: 16 }),
        "{err:?}"
    );
}

/// A next page is read through the same hooks, with the same limit.
#[tokio::test]
async fn a_next_page_over_the_limit_is_too_large() {
    let server = MockServer::start_async().await;
    let big = json!({"value": vec![json!({"id": "x".repeat(100)}); 100]}).to_string();
    server
        .mock_async(|when, then| {
            when.path("/api/users/alice/machines")
                .query_param("$skip", "1");
            then.status(200)
                .header("content-encoding", "deflate")
                .body(deflate(big.as_bytes()));
        })
        .await;
    // Created after the page it leads to, which httpmock would otherwise not reach.
    alice_with_next_link(&server, "/api/users/alice/machines?$skip=1").await;
    let client = common::builder(&server)
        .max_response_bytes(4096)
        .build()
        .unwrap();
    let err = client.user_machines("alice").await.unwrap_err();
    assert!(
        matches!(err, Error::ResponseTooLarge { limit: 4096 }),
        "{err:?}"
    );
}

/// A server can declare any `Content-Length`; the buffer for a body read in
/// chunks is not sized by it beyond the default limit, even with no limit set.
#[tokio::test]
async fn a_lying_content_length_cannot_make_the_client_allocate_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 4096];
        let _ = socket.read(&mut request).await;
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                    content-encoding: deflate\r\ncontent-length: 1000000000000000\r\n\r\n";
        socket.write_all(head.as_bytes()).await.unwrap();
        socket.write_all(&[0x78; 64]).await.unwrap();
        socket.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        socket.write_all(&[0x9c; 64]).await.unwrap();
        socket.flush().await.unwrap();
        // Then the connection ends, far short of the declared length.
    });
    let client = defender_endpoint::Client::builder()
        .base_url(base)
        .credential(defender_endpoint::StaticToken::new(TOKEN))
        .rate_limit(defender_endpoint::RateLimit::none())
        .retry(defender_endpoint::RetryPolicy::none())
        .max_response_bytes(usize::MAX)
        .build()
        .unwrap();
    // The process is still here to see the error: the body ends short.
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(
        matches!(err, Error::Decode { .. } | Error::Transport(_)),
        "{err:?}"
    );
}

/// When one field holds what the spec does not allow, the typed call fails and
/// names it; the JSON call still gets every machine, through the same hooks.
#[tokio::test]
async fn the_json_call_gets_machines_the_types_cannot_hold() {
    let server = MockServer::start_async().await;
    let body = r#"{"value":[{"id":"m1","osBuild":19045},{"id":"odd-one","osBuild":"19045","newField":[1]}],
                   "@odata.nextLink":"/api/users/user1/machines?$skip=2"}"#;
    let page2 = server
        .mock_async(|when, then| {
            when.path("/api/users/user1/machines")
                .query_param("$skip", "2")
                .header("authorization", format!("Bearer {TOKEN}"));
            then.status(200).body(r#"{"value":[{"id":"m3"}]}"#);
        })
        .await;
    serve_deflate(&server, "user1", body).await;
    let client = client(&server);

    let err = client.user_machines("user1@contoso.com").await.unwrap_err();
    assert!(err.to_string().contains("odd-one"), "{err}");

    let machines = client
        .user_machines_json("user1@contoso.com")
        .await
        .unwrap();
    let ids: Vec<&str> = machines.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["m1", "odd-one", "m3"]);
    assert_eq!(machines[1]["osBuild"], "19045");
    assert_eq!(machines[1]["newField"], json!([1]));
    // Each machine decodes on its own, but the odd one.
    let typed: Vec<bool> = machines
        .iter()
        .map(|m| serde_json::from_value::<Machine>(Value::Object(m.clone())).is_ok())
        .collect();
    assert_eq!(typed, [true, false, true]);
    // Asked for once: the typed call stopped at the first page.
    page2.assert_calls_async(1).await;
}

#[tokio::test]
async fn the_json_call_keeps_every_rule_of_the_typed_one() {
    let server = MockServer::start_async().await;
    let any = server
        .mock_async(|when, then| {
            when.path_prefix("/api/users/");
            then.status(404);
        })
        .await;
    let lookups = client(&server);
    // An unknown user: no machines.
    assert!(lookups
        .user_machines_json("nobody")
        .await
        .unwrap()
        .is_empty());
    // A name that breaks the rule: nothing sent.
    let err = lookups.user_machines_json("..").await.unwrap_err();
    assert!(matches!(err, Error::InvalidUserName(_)), "{err:?}");
    any.assert_calls_async(1).await;
    // A next link to another user is refused.
    let server = MockServer::start_async().await;
    alice_with_next_link(&server, "/api/users/mallory/machines").await;
    let err = client(&server)
        .user_machines_json("alice")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("mallory"), "{err}");
}

/// The JSON call reads a page as the typed call does: a page must be an object with
/// a `value` array (an answer without one is not a user without machines), and a
/// repeated member keeps its last value.
#[tokio::test]
async fn both_calls_read_a_page_the_same_way() {
    for (body, machines) in [
        (r#"{"value":[]}"#, Some(0)),
        ("{}", None),
        (r#"{"@odata.context":"x"}"#, None),
        (r#"{"Value":[{"id":"a"},{"id":"b"}]}"#, None),
        (r#"{"error":{"code":"Unauthorized","message":"no"}}"#, None),
        (
            r#"{"@odata.context":"x#Machines/$entity","id":"abc"}"#,
            None,
        ),
        (r#"[[{"id":"m"}]]"#, None),
        (r#"{"value":[{"id":"m"}],"value":[]}"#, None),
        (
            r#"{"value":[{"id":"m"}],"@odata.nextLink":"/elsewhere","@odata.nextLink":null}"#,
            Some(1),
        ),
    ] {
        let server = MockServer::start_async().await;
        serve_deflate(&server, "user1", body).await;
        let client = client(&server);
        let typed = client.user_machines("user1").await.map(|m| m.len());
        let json = client.user_machines_json("user1").await.map(|m| m.len());
        assert_eq!(typed.as_ref().ok(), machines.as_ref(), "{body}: {typed:?}");
        assert_eq!(json.as_ref().ok(), machines.as_ref(), "{body}: {json:?}");
        if machines.is_none() {
            assert!(matches!(typed, Err(Error::Decode { .. })), "{body}");
            assert!(matches!(json, Err(Error::Decode { .. })), "{body}");
        }
    }
}

#[tokio::test]
async fn content_codings_are_read_in_any_letter_case() {
    let seed = fixture("seed-user-machines.json");
    for (encoding, body) in [
        ("GZIP", gzip(seed.as_bytes())),
        ("Gzip", gzip(seed.as_bytes())),
        ("DEFLATE", deflate(seed.as_bytes())),
    ] {
        let server = MockServer::start_async().await;
        serve_encoded(&server, "user1", encoding, body).await;
        let machines = client(&server).user_machines("user1").await.unwrap();
        assert_eq!(machines.len(), 2, "{encoding}");
    }
}

/// `x-gzip` is gzip; and a caller's own `reqwest::Client` built without gzip support
/// leaves a gzip body to the client, which decodes it.
#[tokio::test]
async fn gzip_is_decoded_whoever_sent_it_and_however_it_is_named() {
    let seed = fixture("seed-user-machines.json");
    let server = MockServer::start_async().await;
    serve_encoded(&server, "user1", "x-gzip", gzip(seed.as_bytes())).await;
    let machines = client(&server).user_machines("user1").await.unwrap();
    assert_eq!(machines.len(), 2);

    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/user1/machines");
            then.status(200)
                .header("content-type", JSON)
                .header("content-encoding", "gzip")
                .body(gzip(seed.as_bytes()));
        })
        .await;
    let own = reqwest::Client::builder()
        .no_proxy()
        .no_gzip()
        .build()
        .unwrap();
    let client = common::builder(&server).http_client(own).build().unwrap();
    let machines = client.user_machines("user1").await.unwrap();
    assert_eq!(machines.len(), 2);
    assert_eq!(machines[1].id, "machine-2");
}

/// A list of codings is undone last first, and `identity` in it is no coding.
#[tokio::test]
async fn lists_of_content_codings_are_undone_in_order() {
    let seed = fixture("seed-user-machines.json");
    for (encoding, body) in [
        ("gzip, identity", gzip(seed.as_bytes())),
        ("identity", seed.clone().into_bytes()),
        ("deflate, gzip", gzip(&deflate(seed.as_bytes()))),
        ("GZIP,deflate", deflate(&gzip(seed.as_bytes()))),
        // Three, the most undone.
        (
            "gzip, deflate, gzip",
            gzip(&deflate(&gzip(seed.as_bytes()))),
        ),
        // Padding after a gzip member is left, as HTTP clients leave it; a
        // second member is read on.
        ("gzip", [gzip(seed.as_bytes()), b"\r\n".to_vec()].concat()),
        ("gzip", [gzip(seed.as_bytes()), vec![0; 8]].concat()),
        (
            "gzip",
            [gzip(&seed.as_bytes()[..10]), gzip(&seed.as_bytes()[10..])].concat(),
        ),
    ] {
        let server = MockServer::start_async().await;
        serve_encoded(&server, "user1", encoding, body).await;
        let machines = client(&server).user_machines("user1").await;
        assert_eq!(machines.map(|m| m.len()).ok(), Some(2), "{encoding}");
    }

    // Two header lines are one list.
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/user1/machines");
            then.status(200)
                .header("content-encoding", "deflate")
                .header("content-encoding", "x-gzip")
                .body(gzip(&deflate(seed.as_bytes())));
        })
        .await;
    let machines = client(&server).user_machines("user1").await.unwrap();
    assert_eq!(machines.len(), 2);
    // Also when the first line is a lone `gzip`, which an HTTP client may take
    // for the whole list.
    for (lines, body) in [
        (["gzip", "deflate"], deflate(&gzip(seed.as_bytes()))),
        (["gzip", "gzip"], gzip(&gzip(seed.as_bytes()))),
        (["gzip", "identity"], gzip(seed.as_bytes())),
    ] {
        let server = MockServer::start_async().await;
        server
            .mock_async(|when, then| {
                when.path("/api/users/user1/machines");
                then.status(200)
                    .header("content-encoding", lines[0])
                    .header("content-encoding", lines[1])
                    .body(body);
            })
            .await;
        let machines = client(&server).user_machines("user1").await;
        assert_eq!(machines.map(|m| m.len()).ok(), Some(2), "{lines:?}");
    }

    // A fourth is refused, named, rather than inflated once more.
    let server = MockServer::start_async().await;
    let four = gzip(&gzip(&deflate(&gzip(seed.as_bytes()))));
    serve_encoded(&server, "user1", "gzip, deflate, gzip, gzip", four).await;
    match client(&server).user_machines("user1").await.unwrap_err() {
        Error::Decode {
            status: 200,
            message,
        } => assert!(message.contains("gzip, deflate, gzip, gzip"), "{message}"),
        other => panic!("{other:?}"),
    }
}

/// A coding the client does not decode is named in the error, not reported as bad
/// JSON; on an error answer, the status still counts.
#[tokio::test]
async fn an_unknown_content_coding_is_named() {
    for (status, encoding) in [(200, "br"), (200, "gzip, br"), (429, "br"), (503, "zstd")] {
        let server = MockServer::start_async().await;
        server
            .mock_async(|when, then| {
                when.path("/api/users/user1/machines");
                then.status(status)
                    .header("content-type", JSON)
                    .header("content-encoding", encoding)
                    .body(b"\x1b\x8f\x00\xf8\x25\x09\x60\x1d");
            })
            .await;
        let err = client(&server).user_machines("user1").await.unwrap_err();
        match status {
            200 => match &err {
                Error::Decode {
                    status: 200,
                    message,
                } => {
                    assert!(message.contains(encoding), "{message}")
                }
                other => panic!("{encoding}: {other:?}"),
            },
            429 => assert!(matches!(err, Error::Throttled { .. }), "{err:?}"),
            _ => assert!(matches!(err, Error::Api { status: 503, .. }), "{err:?}"),
        }
    }
}

/// A corrupt compressed body on an error answer: the status is what the caller gets.
#[tokio::test]
async fn a_corrupt_compressed_error_answer_keeps_its_status() {
    for encoding in ["gzip", "deflate"] {
        let server = MockServer::start_async().await;
        server
            .mock_async(|when, then| {
                when.path("/api/users/user1/machines");
                then.status(500)
                    .header("content-encoding", encoding)
                    .body("not compressed at all");
            })
            .await;
        let err = client(&server).user_machines("user1").await.unwrap_err();
        assert!(
            matches!(err, Error::Api { status: 500, .. }),
            "{encoding}: {err:?}"
        );
    }
}

/// An error answer may say it is compressed and have no body at all: its status still counts.
#[tokio::test]
async fn an_empty_compressed_error_answer_keeps_its_status() {
    for encoding in ["deflate", "gzip", "GZIP"] {
        for status in [404, 429, 500] {
            let server = MockServer::start_async().await;
            server
                .mock_async(|when, then| {
                    when.path("/api/users/user1/machines");
                    then.status(status).header("content-encoding", encoding);
                })
                .await;
            let result = common::builder(&server)
                .retry(defender_endpoint::RetryPolicy::none())
                .build()
                .unwrap()
                .user_machines("user1")
                .await;
            match status {
                404 => assert!(result.unwrap().is_empty(), "{encoding}"),
                429 => assert!(
                    matches!(result, Err(Error::Throttled { .. })),
                    "{encoding}: {result:?}"
                ),
                _ => assert!(
                    matches!(result, Err(Error::Api { status: 500, .. })),
                    "{encoding}: {result:?}"
                ),
            }
        }
    }
}

#[tokio::test]
async fn a_next_link_that_is_not_a_string_is_an_error_not_the_end() {
    for link in [
        json!(42),
        json!({"href": "/api/users/alice/machines?$skip=1"}),
        json!([]),
    ] {
        let server = MockServer::start_async().await;
        alice_with_next_link(&server, link.clone()).await;
        let err = client(&server).user_machines("alice").await.unwrap_err();
        assert!(
            matches!(err, Error::Decode { status: 200, .. }),
            "{link}: {err:?}"
        );
        assert!(err.to_string().contains("@odata.nextLink"), "{err}");
        let err = client(&server)
            .user_machines_json("alice")
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Decode { status: 200, .. }),
            "{link}: {err:?}"
        );
    }
    // A null link is no link: the last page.
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/alice/machines");
            then.status(200)
                .body(r#"{"value":[{"id":"a1"}],"@odata.nextLink":null}"#);
        })
        .await;
    assert_eq!(
        client(&server).user_machines("alice").await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn a_refused_next_link_does_not_show_the_token() {
    let token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.secret-part.signature";
    let server = MockServer::start_async().await;
    let links = [
        format!("https://evil.example/steal?t={token}"),
        format!("/api/users/alice/machines?t={token}"),
    ];
    for (i, link) in links.iter().enumerate() {
        let mock = alice_with_next_link(&server, link.as_str()).await;
        let client = common::builder(&server)
            .credential(defender_endpoint::StaticToken::new(token))
            .build()
            .unwrap();
        let err = client.user_machines("alice").await.unwrap_err();
        // The second link repeats the first page, which is refused as a loop.
        assert!(
            matches!(err, Error::Decode { status: 200, .. }),
            "{i}: {err:?}"
        );
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains("secret-part"), "{i}: {shown}");
            assert!(shown.contains("<redacted>"), "{i}: {shown}");
        }
        mock.delete_async().await;
    }
}

#[tokio::test]
async fn an_envelope_with_pages_of_text_gives_an_error_of_readable_size() {
    let server = MockServer::start_async().await;
    let huge = "x".repeat(2_000_000);
    let body = json!({"error": {"code": huge, "message": huge, "target": huge}}).to_string();
    server
        .mock_async(|when, then| {
            when.path("/api/users/user1/machines");
            then.status(400).body(body);
        })
        .await;
    let err = client(&server).user_machines("user1").await.unwrap_err();
    let Error::Api {
        code,
        message,
        target,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    for text in [code, message, target] {
        let text = text.as_deref().unwrap();
        assert_eq!(text.chars().count(), 4_097, "cut, and marked as cut");
        assert!(text.ends_with("x…"));
    }
    assert!(err.to_string().len() < 20_000);
}

/// The raw client's answer carries the response's status and headers with the
/// body, for a success and for an error answer.
#[tokio::test]
async fn the_raw_client_keeps_the_status_and_headers_of_an_answer() {
    let server = MockServer::start_async().await;
    let answer = |user: &str, status: u16, request_id: &str, body: String| {
        let path = format!("/api/users/{user}/machines");
        let request_id = request_id.to_owned();
        server.mock_async(move |when, then| {
            when.method(GET).path(path);
            then.status(status)
                .header("content-type", JSON)
                .header("x-ms-request-id", request_id)
                .body(body);
        })
    };
    answer("user1", 200, "0d1c2b3a", fixture("seed-user-machines.json")).await;
    let forbidden = r#"{"error":{"code":"Forbidden","message":"Missing role"}}"#;
    answer("nobody", 403, "4e5f", forbidden.into()).await;
    let client = client(&server);
    let id = defender_endpoint::types::GetUserMachinesId::try_from("user1").unwrap();
    let answer = client.raw().get_user_machines(&id).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["x-ms-request-id"], "0d1c2b3a");
    assert_eq!(answer.value.len(), 2);
    assert_eq!(answer.into_inner().value[0].id, seed()["value"][0]["id"]);

    let id = defender_endpoint::types::GetUserMachinesId::try_from("nobody").unwrap();
    match client.raw().get_user_machines(&id).await.unwrap_err() {
        defender_endpoint::raw::Error::ErrorResponse(answer) => {
            assert_eq!(answer.status(), 403);
            assert_eq!(answer.headers()["x-ms-request-id"], "4e5f");
            assert_eq!(
                answer.error.as_ref().unwrap().code.as_deref(),
                Some("Forbidden")
            );
        }
        other => panic!("{other:?}"),
    }
}

/// `RbacGroupId` is read by a deserialiser of its own (see `build.rs`); it takes and
/// refuses what serde's derive for the same untagged enum does, with the same
/// errors at the same places, from JSON text, from a `Value` and from YAML.
#[test]
fn the_group_id_is_read_as_the_untagged_derive_reads_it() {
    mod derived {
        /// The same enum as the generator writes it, with serde's derive.
        #[derive(Debug, serde::Deserialize)]
        #[serde(untagged)]
        pub enum RbacGroupId {
            Integer(i64),
            String(String),
        }
    }
    use derived::RbacGroupId as Derived;
    fn same(ours: RbacGroupId, derived: Derived) -> bool {
        match (ours, derived) {
            (RbacGroupId::Integer(a), Derived::Integer(b)) => a == b,
            (RbacGroupId::String(a), Derived::String(b)) => a == b,
            _ => false,
        }
    }
    fn agree<E: std::fmt::Display>(
        input: &str,
        ours: Result<RbacGroupId, E>,
        derived: Result<Derived, E>,
    ) {
        match (ours, derived) {
            (Ok(a), Ok(b)) => {
                let shown = format!("{a:?} against {b:?}");
                assert!(same(a, b), "{input}: {shown}");
            }
            // A value read on its own: the derive's mismatch names no place (it is
            // found once the value is read), this one names the end of the value.
            (Err(a), Err(b)) => {
                let (a, b) = (a.to_string(), b.to_string());
                assert!(
                    a == b || a.starts_with(&format!("{b} at line ")),
                    "{input}: {a} against {b}"
                );
            }
            (a, b) => panic!(
                "{input}: {:?} against {:?}",
                a.map_err(|e| e.to_string()),
                b.map_err(|e| e.to_string())
            ),
        }
    }
    let inputs = [
        "0",
        "140",
        "-7",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "18446744073709551615",
        "1e3",
        "1.5",
        "-0.0",
        r#""group-fin-001""#,
        r#""""#,
        r#""caf\u00e9 \ud83d\ude00""#,
        r#""140""#,
        "true",
        "null",
        "[]",
        r#"[1,"a",[{}]]"#,
        "{}",
        r#"{"a":[1,{"b":2}]}"#,
        "[1,",
        r#"{"a":}"#,
        r#""\ud800""#,
        "  \n 42",
        "[1,2] ",
    ];
    for input in inputs {
        agree(
            input,
            serde_json::from_str::<RbacGroupId>(input),
            serde_json::from_str::<Derived>(input),
        );
        // As a field: the error names the place in the whole object.
        let object = format!(r#"{{"id":"m","rbacGroupId":{input}}}"#);
        let ours = serde_json::from_str::<Machine>(&object).map(|m| m.rbac_group_id);
        #[derive(Debug, serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Holder {
            #[allow(dead_code)]
            id: String,
            rbac_group_id: Option<Derived>,
        }
        let derived = serde_json::from_str::<Holder>(&object).map(|h| h.rbac_group_id);
        match (ours, derived) {
            (Ok(Some(a)), Ok(Some(b))) => assert!(same(a, b), "{object}"),
            (Ok(None), Ok(None)) => {}
            // The same message; placed at the end of the value, where the derive
            // places it after the object's closing brace.
            (Err(a), Err(b)) => {
                let shown = format!("{object}: {a} against {b}");
                let message = |e: &serde_json::Error| {
                    let place = format!(" at line {} column {}", e.line(), e.column());
                    e.to_string().strip_suffix(&place).map(str::to_owned)
                };
                assert_eq!(message(&a), message(&b), "{shown}");
                assert_eq!(a.line(), b.line(), "{shown}");
                let value_starts = object.find(input).unwrap();
                assert!((value_starts..=b.column()).contains(&a.column()), "{shown}");
            }
            (a, b) => panic!("{object}: {a:?} against {b:?}"),
        }
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(input) {
            agree(
                input,
                serde_json::from_value::<RbacGroupId>(value.clone()),
                serde_json::from_value::<Derived>(value),
            );
        }
    }
    for yaml in [
        "140",
        "group-fin-001",
        "'140'",
        "1.5",
        "true",
        "~",
        "[1]",
        "{a: 1}",
        "0x10",
        // Beyond 64 bits, and enum input: values the derive cannot even buffer.
        "99999999999999999999",
        "-99999999999999999999",
        "!Tag 5",
        "[99999999999999999999]",
        "[1, !T 1]",
        "{a: !T 1}",
        "{a: [{b: -99999999999999999999}]}",
    ] {
        agree(
            yaml,
            serde_yaml_ng::from_str::<RbacGroupId>(yaml),
            serde_yaml_ng::from_str::<Derived>(yaml),
        );
    }
    // From bytes: UTF-8 is a string, anything else is refused.
    use serde::de::{value::BytesDeserializer, Deserialize, IntoDeserializer};
    for bytes in [&b"group"[..], b"\xff"] {
        let ours =
            RbacGroupId::deserialize(BytesDeserializer::<serde::de::value::Error>::new(bytes));
        let derived =
            Derived::deserialize(BytesDeserializer::<serde::de::value::Error>::new(bytes));
        agree(&format!("{bytes:?}"), ours, derived);
    }
    // Values the derive cannot buffer, from serde's own deserialisers.
    type ValueError = serde::de::value::Error;
    use serde::de::value::{EnumAccessDeserializer, SeqDeserializer, StrDeserializer};
    let big = || IntoDeserializer::<ValueError>::into_deserializer(5i128);
    agree(
        "5i128",
        RbacGroupId::deserialize(big()),
        Derived::deserialize(big()),
    );
    let big = || IntoDeserializer::<ValueError>::into_deserializer(5u128);
    agree(
        "5u128",
        RbacGroupId::deserialize(big()),
        Derived::deserialize(big()),
    );
    let list = || SeqDeserializer::<_, ValueError>::new(vec![1i128, 2].into_iter());
    agree(
        "[1i128, 2]",
        RbacGroupId::deserialize(list()),
        Derived::deserialize(list()),
    );
    let variant = || EnumAccessDeserializer::new(StrDeserializer::<ValueError>::new("V"));
    agree(
        "enum V",
        RbacGroupId::deserialize(variant()),
        Derived::deserialize(variant()),
    );
    let ours = RbacGroupId::deserialize(
        IntoDeserializer::<serde::de::value::Error>::into_deserializer('x'),
    );
    let derived =
        Derived::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer('x'));
    agree("'x'", ours, derived);
}

/// A coding the client cannot decode is named in the error, cut short, and a
/// token the server echoes in it is blanked before the cut: no part of it shows.
#[tokio::test]
async fn an_unknown_coding_that_echoes_the_token_does_not_show_it() {
    let token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.payload-of-the-token";
    let server = MockServer::start_async().await;
    let coding = format!("br, {}{token}", "a".repeat(30));
    server
        .mock_async(|when, then| {
            when.path("/api/users/user1/machines");
            then.status(200)
                .header("content-encoding", coding.as_str())
                .body(b"\x1b\x8f\x00");
        })
        .await;
    let client = common::builder(&server)
        .credential(defender_endpoint::StaticToken::new(token.to_string()))
        .build()
        .unwrap();
    let err = client.user_machines("user1").await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(matches!(err, Error::Decode { .. }), "{shown}");
    assert!(!shown.contains("eyJ0"), "{shown}");
}

#[test]
fn a_zero_timeout_is_refused() {
    let server = MockServer::start();
    for builder in [
        common::builder(&server).timeout(std::time::Duration::ZERO),
        common::builder(&server).connect_timeout(std::time::Duration::ZERO),
    ] {
        match builder.build() {
            Err(Error::Config(message)) => {
                assert!(message.contains("timeout is zero"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}
