//! Property test: whatever string a caller passes, the only request that can leave
//! the client is `GET /api/users/{one segment}/machines`, whose decoded segment is
//! exactly `UserName::parse(input)` and which holds only what RFC 3986 allows in
//! a path segment; inputs the rule rejects send nothing.

mod common;

use std::sync::{Arc, Mutex};

use defender_endpoint::{Error, UserName};
use httpmock::MockServer;
use proptest::{
    prelude::*,
    test_runner::{Config, TestRunner},
};

/// Strings built from the characters that matter to URLs and to the rule.
fn hostile() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(".".to_string()),
        Just("..".to_string()),
        Just("/".to_string()),
        Just("\\".to_string()),
        Just("@".to_string()),
        Just("%".to_string()),
        Just("%2e".to_string()),
        Just("%2F".to_string()),
        Just("%5c".to_string()),
        Just("?".to_string()),
        Just("#".to_string()),
        Just("[]|^;".to_string()),
        Just("!$&'()*+,=:".to_string()),
        Just(" ".to_string()),
        Just("\t".to_string()),
        Just("\n".to_string()),
        Just("\u{0}".to_string()),
        Just("\u{7f}".to_string()),
        Just("\u{85}".to_string()),
        Just("\u{202e}".to_string()),
        Just("\u{ff0f}".to_string()),
        Just("é".to_string()),
        Just("用户".to_string()),
        Just("user1".to_string()),
        Just("contoso.com".to_string()),
        Just("CONTOSO".to_string()),
        "[a-z0-9'_-]{1,6}",
        any::<char>().prop_map(String::from),
    ];
    prop_oneof![
        proptest::collection::vec(piece, 0..8).prop_map(|p| p.concat()),
        any::<String>(),
        "[.\\\\/@% a-z]{0,6}",
    ]
}

/// What RFC 3986 allows in a path segment as it is (`pchar`), `%` of the
/// percent-encoding included, but not `;`, which some servers read as the start
/// of path parameters.
fn is_segment_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~%!$&'()*+,=:@".contains(&byte)
}

fn decode(segment: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(segment).collect()
}

#[test]
fn only_one_segment_ever_leaves_the_client() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = MockServer::start();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    server.mock(move |when, then| {
        when.is_true(move |req| {
            record.lock().unwrap().push(req.uri().path().to_string());
            true
        });
        then.status(200).body(r#"{"value":[]}"#);
    });
    let client = common::client(&server);

    let mut runner = TestRunner::new(Config {
        cases: 3000,
        ..Config::default()
    });
    runner
        .run(&hostile(), |input| {
            seen.lock().unwrap().clear();
            let result = rt.block_on(client.user_machines(&input));
            let paths = seen.lock().unwrap().clone();
            match UserName::parse(&input) {
                Ok(name) => {
                    prop_assert!(result.is_ok(), "{input:?}: {result:?}");
                    prop_assert_eq!(paths.len(), 1, "{:?}", input);
                    let path = &paths[0];
                    let segment = path
                        .strip_prefix("/api/users/")
                        .and_then(|rest| rest.strip_suffix("/machines"));
                    prop_assert!(segment.is_some(), "{input:?} reached {path}");
                    let segment = segment.unwrap();
                    prop_assert!(!segment.contains('/'), "{input:?} reached {path}");
                    prop_assert!(
                        segment.bytes().all(is_segment_byte),
                        "{input:?} sent {segment:?}, not a valid path segment"
                    );
                    prop_assert_eq!(
                        decode(segment),
                        name.as_str().as_bytes().to_vec(),
                        "{:?}",
                        input
                    );
                }
                Err(_) => {
                    prop_assert!(
                        matches!(result, Err(Error::InvalidUserName(_))),
                        "{input:?}: {result:?}"
                    );
                    prop_assert!(paths.is_empty(), "{input:?} sent {paths:?}");
                }
            }
            Ok(())
        })
        .unwrap();
}

/// The hazard this guards against, shown with the generated client directly: the
/// request hook refuses a path that left its template even when the caller bypasses
/// `UserName`.
#[test]
fn the_request_hook_refuses_escaped_paths() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = MockServer::start();
    let any = server.mock(|_, then| {
        then.status(200).body(r#"{"value":[]}"#);
    });
    let client = common::client(&server);
    for id in ["..", ".", r"..\..\x", r"CONTOSO\user1", "%2e%2e"] {
        let id = defender_endpoint::types::GetUserMachinesId::try_from(id).unwrap();
        let result = rt.block_on(client.raw().get_user_machines(&id));
        // `%2e%2e` is encoded as `%252e%252e`, one harmless segment; the others must not leave.
        if id.as_str() == "%2e%2e" {
            assert!(result.is_ok());
        } else {
            let err = result.unwrap_err().to_string();
            assert!(err.contains("refusing"), "{id:?}: {err}");
        }
    }
    any.assert_calls(1);
}
