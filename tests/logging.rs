//! What the client logs: the retries, waits and Defender's tracking id, never the
//! token, and the user name only at `debug` level.

mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use common::{builder, quick_retries, TOKEN};
use httpmock::MockServer;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Runs a throttled-then-successful call and a failing call, returning the log text.
async fn logs_at(level: tracing::Level) -> String {
    let server = MockServer::start_async().await;
    let throttled = server
        .mock_async(|when, then| {
            when.path("/api/users/alice.secretname/machines");
            then.status(429)
                .header("retry-after", "0")
                .body(r#"{"error":{"code":"TooManyRequests","message":"slow down","target":"throttle-777"}}"#);
        })
        .await;
    throttled.up_to_n_times_async(1).await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/alice.secretname/machines");
            then.status(200).body(r#"{"value":[]}"#);
        })
        .await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/bob/machines");
            then.status(403).body(
                r#"{"error":{"code":"Forbidden","message":"no role","target":"track-1234"}}"#,
            );
        })
        .await;
    // A 404 that is not Defender's (a proxy's page): still no machines, but a warning.
    server
        .mock_async(|when, then| {
            when.path("/api/users/carol/machines");
            then.status(404).body("<html>Not Found</html>");
        })
        .await;
    // A proxy's JSON 404 is no envelope of Defender's either; Defender's own
    // 404 gets no warning, nor does a next page's (which fails the call).
    server
        .mock_async(|when, then| {
            when.path("/api/users/hank/machines");
            then.status(404)
                .body(r#"{"statusCode":404,"message":"Resource not found"}"#);
        })
        .await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/ivan/machines");
            then.status(404).body(
                r#"{"error":{"code":"ResourceNotFound","message":"User not found","target":"t-404"}}"#,
            );
        })
        .await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/jane/machines")
                .is_true(|req| req.uri().query().is_none());
            then.status(200).body(
                r#"{"value":[{"id":"j1"}],"@odata.nextLink":"/api/users/jane/machines?$skip=1"}"#,
            );
        })
        .await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/jane/machines")
                .query_param("$skip", "1");
            then.status(404);
        })
        .await;
    // A 503 that asks to wait longer than the caller will.
    server
        .mock_async(|when, then| {
            when.path("/api/users/gina/machines");
            then.status(503).header("retry-after", "5");
        })
        .await;
    // … and one without a body at all.
    server
        .mock_async(|when, then| {
            when.path("/api/users/frank/machines");
            then.status(404);
        })
        .await;
    // A 429 whose tracking id echoes the request's token (a misbehaving gateway).
    let echo = server
        .mock_async(|when, then| {
            when.path("/api/users/dave/machines");
            then.status(429).header("retry-after", "0").body(format!(
                r#"{{"error":{{"code":"429","message":"slow down","target":"Bearer {TOKEN}"}}}}"#
            ));
        })
        .await;
    echo.up_to_n_times_async(1).await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/dave/machines");
            then.status(200).body(r#"{"value":[]}"#);
        })
        .await;
    // An error whose message repeats the user name.
    server
        .mock_async(|when, then| {
            when.path("/api/users/karl.secretname/machines");
            then.status(400).body(
                r#"{"error":{"code":"BadRequest","message":"Invalid user name KARL.secretname","target":"t-400 karl.secretname"}}"#,
            );
        })
        .await;
    // A 401 every time: the refreshed request is numbered on.
    server
        .mock_async(|when, then| {
            when.path("/api/users/mona/machines");
            then.status(401)
                .body(r#"{"error":{"code":"Unauthorized","message":"no","target":"t-401"}}"#);
        })
        .await;
    // A gateway that writes the request's path, the name percent-encoded, in
    // its message.
    server
        .mock_async(|when, then| {
            when.path("/api/users/j%C3%BCrgen.m%C3%BCller/machines");
            then.status(503).body(
                r#"{"error":{"code":"ServiceUnavailable","message":"backend down for /api/users/j%C3%BCrgen.m%C3%BCller/machines"}}"#,
            );
        })
        .await;
    // A failure that is not retried and has no target.
    server
        .mock_async(|when, then| {
            when.path("/api/users/nina/machines");
            then.status(400).body("bad request");
        })
        .await;
    // An answer that comes too late for its caller.
    server
        .mock_async(|when, then| {
            when.path("/api/users/lena/machines");
            then.status(200)
                .body(r#"{"value":[]}"#)
                .delay(std::time::Duration::from_millis(500));
        })
        .await;
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .finish();
    let client = builder(&server).retry(quick_retries(3)).build().unwrap();
    let _guard = tracing::subscriber::set_default(subscriber);
    client
        .user_machines("alice.secretname@contoso.com")
        .await
        .unwrap();
    client.user_machines("bob").await.unwrap_err();
    assert!(client.user_machines("carol").await.unwrap().is_empty());
    assert!(client.user_machines("frank").await.unwrap().is_empty());
    assert!(client.user_machines("hank").await.unwrap().is_empty());
    assert!(client.user_machines("ivan").await.unwrap().is_empty());
    client.user_machines("jane").await.unwrap_err();
    client.user_machines("dave").await.unwrap();
    // A name the rule keeps but Defender will not know: a warning, without the name.
    let _ = client.user_machines("erin.secretname @contoso.com").await;
    // A call dropped while it waits to retry: its span still gets what it did.
    let dropped = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        client.user_machines("gina"),
    )
    .await;
    assert!(dropped.is_err(), "{dropped:?}");
    client.user_machines("karl.secretname").await.unwrap_err();
    client.user_machines("mona").await.unwrap_err();
    client.user_machines("nina").await.unwrap_err();
    client.user_machines("jürgen.müller").await.unwrap_err();
    // A call dropped while its request is in flight made that request.
    let dropped = tokio::time::timeout(
        std::time::Duration::from_millis(100),
        client.user_machines("lena"),
    )
    .await;
    assert!(dropped.is_err(), "{dropped:?}");
    drop(_guard);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    text
}

#[tokio::test(flavor = "current_thread")]
async fn info_logs_show_retries_and_targets_but_no_user_or_token() {
    let logs = logs_at(tracing::Level::INFO).await;
    assert!(logs.contains("retrying"), "{logs}");
    assert!(logs.contains("throttle-777"), "{logs}");
    // carol, frank, hank, and erin (whom the server does not know at all).
    assert_eq!(logs.matches("check the base URL").count(), 4, "{logs}");
    assert!(logs.contains("track-1234"), "{logs}");
    assert!(logs.contains("Bearer <redacted>"), "{logs}");
    assert!(
        logs.contains("the user name begins or ends with white space"),
        "{logs}"
    );
    // The span carries the operation, and when the call ends the attempts it
    // made and the last status, recorded once; the retry event its attempt and
    // wait.
    assert!(
        logs.contains(r#"defender.call{operation="get_user_machines"}: defender_endpoint::client: retrying attempt=1 wait_ms=0"#),
        "{logs}"
    );
    // alice (a 429, then an answer), bob (a 403), and gina, dropped while it
    // waited to retry a 503.
    for fields in [
        "attempts=2 status=200",
        "attempts=1 status=403",
        "attempts=1 status=503",
    ] {
        let close = format!(
            r#"defender.call{{operation="get_user_machines" {fields}}}: defender_endpoint::client: close"#
        );
        assert!(logs.contains(&close), "{fields}: {logs}");
    }
    assert_eq!(
        logs.lines()
            .filter(|l| l.matches("attempts=").count() > 1)
            .count(),
        0,
        "{logs}"
    );
    assert!(!logs.contains(TOKEN), "{logs}");
    // Not even where the service's message repeats it.
    assert!(!logs.contains("secretname"), "{logs}");
    assert!(logs.contains("Invalid user name <user>"), "{logs}");
    // The request after a 401's token refresh is the second.
    assert!(logs.contains(r#"attempt=1 target="t-401""#), "{logs}");
    assert!(logs.contains(r#"attempt=2 target="t-401""#), "{logs}");
    assert!(logs.contains("giving up: not retried attempts=1"), "{logs}");
    assert!(
        !logs.contains("C3%BCller") && logs.contains("/api/users/<user>/machines"),
        "{logs}"
    );
    // jane: her second page is not found, after two requests in all.
    assert!(
        logs.contains("giving up: the rest of the answer cannot be had attempts=2"),
        "{logs}"
    );
    // lena: dropped while its request was in flight, so one attempt and no status.
    assert!(
        logs.contains(r#"defender.call{operation="get_user_machines" attempts=1}: defender_endpoint::client: close"#),
        "{logs}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn trace_logs_never_show_the_token() {
    let logs = logs_at(tracing::Level::TRACE).await;
    assert!(!logs.contains(TOKEN), "{logs}");
    // The user name appears, at debug level.
    assert!(logs.contains("secretname"), "{logs}");
}

/// A call dropped while it waits for the client-side quota sent nothing: its
/// span says so.
#[tokio::test(flavor = "current_thread")]
async fn a_call_dropped_in_the_quota_counts_no_attempt() {
    let server = MockServer::start_async().await;
    let api = server
        .mock_async(|when, then| {
            when.path_includes("/machines");
            then.status(200).body(r#"{"value":[]}"#);
        })
        .await;
    let client = builder(&server)
        .rate_limit(
            defender_endpoint::RateLimit::new().window(1, std::time::Duration::from_secs(60)),
        )
        .build()
        .unwrap();
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    client.user_machines("alice").await.unwrap();
    let dropped = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        client.user_machines("bob"),
    )
    .await;
    assert!(dropped.is_err(), "{dropped:?}");
    drop(_guard);
    api.assert_calls_async(1).await;
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("attempts=1 status=200}"), "{logs}");
    assert!(
        logs.contains(r#"defender.call{operation="get_user_machines" attempts=0}"#),
        "{logs}"
    );
}
