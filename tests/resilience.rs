//! Retries, Retry-After, the client-side quota, timeouts and transport safety,
//! against local httpmock servers. Timing bounds are generous on purpose: these
//! tests check order and counts, not speed.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use common::{builder, quick_retries};
use defender_endpoint::{Client, Error, RateLimit, RetryPolicy, StaticToken};
use httpmock::MockServer;

const PATH: &str = "/api/users/user1/machines";
const ONE: &str = r#"{"value":[{"id":"m1"}]}"#;

async fn answer_once(server: &MockServer, status: u16, headers: &[(&str, String)]) -> usize {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let mock = server
        .mock_async(move |when, then| {
            when.path(PATH);
            let mut then = then.status(status);
            for (k, v) in headers {
                then = then.header(k, v);
            }
            then.body(r#"{"error":{"code":"x","message":"y","target":"t"}}"#);
        })
        .await;
    mock.up_to_n_times_async(1).await;
    mock.id()
}

/// Answers every request with `status`.
async fn always(server: &MockServer, status: u16) -> httpmock::Mock<'_> {
    server
        .mock_async(move |when, then| {
            when.path(PATH);
            then.status(status);
        })
        .await
}

/// Answers every request with `status` and one header.
async fn always_with<'a>(
    server: &'a MockServer,
    status: u16,
    (name, value): (&str, &str),
) -> httpmock::Mock<'a> {
    let (name, value) = (name.to_owned(), value.to_owned());
    server
        .mock_async(move |when, then| {
            when.path(PATH);
            then.status(status).header(name, value);
        })
        .await
}

async fn then_ok(server: &MockServer) -> httpmock::Mock<'_> {
    server
        .mock_async(|when, then| {
            when.path(PATH);
            then.status(200).body(ONE);
        })
        .await
}

#[tokio::test]
async fn waits_for_retry_after_seconds_then_succeeds() {
    let server = MockServer::start_async().await;
    answer_once(&server, 429, &[("retry-after", "1".into())]).await;
    let ok = then_ok(&server).await;
    let client = builder(&server)
        .retry(RetryPolicy::default())
        .build()
        .unwrap();
    let started = Instant::now();
    let machines = client.user_machines("user1").await.unwrap();
    assert_eq!(machines.len(), 1);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    ok.assert_calls_async(1).await;
}

#[tokio::test]
async fn waits_for_retry_after_http_date_then_succeeds() {
    let server = MockServer::start_async().await;
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    answer_once(&server, 429, &[("retry-after", at)]).await;
    let ok = then_ok(&server).await;
    let client = builder(&server)
        .retry(RetryPolicy::default())
        .build()
        .unwrap();
    let started = Instant::now();
    client.user_machines("user1").await.unwrap();
    // HTTP-dates have one-second resolution: at least one second was waited.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    ok.assert_calls_async(1).await;
}

#[tokio::test]
async fn transient_5xx_are_retried() {
    let server = MockServer::start_async().await;
    answer_once(&server, 503, &[]).await;
    answer_once(&server, 503, &[]).await;
    let ok = then_ok(&server).await;
    let client = builder(&server).retry(quick_retries(4)).build().unwrap();
    assert_eq!(client.user_machines("user1").await.unwrap().len(), 1);
    ok.assert_calls_async(1).await;
    // Three requests in all: two 503s (each limited to one call) and the 200.
    assert_eq!(client.stats().attempts, 3);
}

#[tokio::test]
async fn each_retried_status_is_retried() {
    // 429 without Retry-After waits the backoff instead.
    for status in [429u16, 500, 502, 503, 504] {
        let server = MockServer::start_async().await;
        answer_once(&server, status, &[]).await;
        let ok = then_ok(&server).await;
        let client = builder(&server).retry(quick_retries(4)).build().unwrap();
        let machines = client.user_machines("user1").await;
        assert_eq!(machines.map(|m| m.len()).ok(), Some(1), "{status}");
        ok.assert_calls_async(1).await;
        let stats = client.stats();
        assert_eq!((stats.attempts, stats.retries), (2, 1), "{status}");
        assert_eq!(stats.throttled, u64::from(status == 429), "{status}");
    }
}

#[tokio::test]
async fn other_4xx_are_not_retried() {
    for status in [400u16, 403, 405, 409] {
        let server = MockServer::start_async().await;
        let mock = always(&server, status).await;
        let client = builder(&server).retry(quick_retries(4)).build().unwrap();
        let err = client.user_machines("user1").await.unwrap_err();
        assert_eq!(err.status(), Some(status));
        mock.assert_calls_async(1).await;
    }
}

#[tokio::test]
async fn always_503_gives_up_after_the_attempts() {
    let server = MockServer::start_async().await;
    let mock = always(&server, 503).await;
    let client = builder(&server).retry(quick_retries(4)).build().unwrap();
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(matches!(err, Error::Api { status: 503, .. }), "{err:?}");
    mock.assert_calls_async(4).await;
}

#[tokio::test]
async fn always_503_gives_up_within_the_budget() {
    let server = MockServer::start_async().await;
    let mock = always(&server, 503).await;
    let policy = RetryPolicy::default()
        .max_attempts(100)
        .base_delay(Duration::from_millis(100))
        .max_delay(Duration::from_millis(200))
        .budget(Duration::from_millis(800));
    let client = builder(&server).retry(policy).build().unwrap();
    let started = Instant::now();
    let err = client.user_machines("user1").await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let calls = mock.calls_async().await;
    assert!((2..100).contains(&calls), "{calls} calls");
}

#[tokio::test]
async fn retry_after_beyond_the_budget_returns_throttled_at_once() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.path(PATH);
            then.status(429).header("retry-after", "120");
        })
        .await;
    let client = builder(&server)
        .retry(RetryPolicy::default())
        .build()
        .unwrap();
    let started = Instant::now();
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(
        matches!(err, Error::Throttled { retry_after: Some(d) } if d == Duration::from_secs(120))
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    mock.assert_calls_async(1).await;
}

#[tokio::test]
async fn a_hanging_server_times_out() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.path(PATH);
            then.status(200).body(ONE).delay(Duration::from_secs(10));
        })
        .await;
    let client = builder(&server)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(matches!(err, Error::Timeout), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // With retries, the whole call still ends within the budget.
    let client = builder(&server)
        .timeout(Duration::from_millis(200))
        .retry(quick_retries(3).budget(Duration::from_secs(2)))
        .build()
        .unwrap();
    let started = Instant::now();
    assert!(matches!(
        client.user_machines("user1").await,
        Err(Error::Timeout)
    ));
    assert!(started.elapsed() < Duration::from_secs(5));
    // A timeout is retried.
    assert!(client.stats().attempts >= 2, "{:?}", client.stats());
}

/// Answers one 429 asking to come back in a second, then 200 after `delay`.
async fn throttled_then_slow(server: &MockServer, delay: Duration) {
    answer_once(server, 429, &[("retry-after", "1".into())]).await;
    server
        .mock_async(|when, then| {
            when.path(PATH);
            then.status(200).body(ONE).delay(delay);
        })
        .await;
}

/// Checks that `took` is at least `from_ms` and less than `to_ms` milliseconds.
fn assert_between(took: Duration, from_ms: u64, to_ms: u64) {
    assert!(
        took >= Duration::from_millis(from_ms) && took < Duration::from_millis(to_ms),
        "{took:?}"
    );
}

/// How long `client` took to fail a lookup with `Error::Timeout`.
async fn times_out(client: &defender_endpoint::Client) -> Duration {
    let started = Instant::now();
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(matches!(err, Error::Timeout), "{err:?}");
    started.elapsed()
}

/// The budget bounds the attempt in flight too: a call ends when the budget does,
/// not a whole timeout later.
#[tokio::test]
async fn the_budget_ends_an_attempt_in_flight() {
    let server = MockServer::start_async().await;
    let hanging = server
        .mock_async(|when, then| {
            when.path(PATH);
            then.status(200).body(ONE).delay(Duration::from_secs(10));
        })
        .await;
    // The first attempt times out after 2 s; the second has 1.5 s of budget left.
    let client = builder(&server)
        .timeout(Duration::from_secs(2))
        .retry(quick_retries(3).budget(Duration::from_millis(3_500)))
        .build()
        .unwrap();
    let took = times_out(&client).await;
    assert_between(took, 3_400, 4_300);
    hanging.assert_calls_async(2).await;

    // A budget shorter than the timeout bounds the first attempt; with the
    // caller's own HTTP client (whose timeout the client cannot know) too.
    for own in [false, true] {
        let mut b = builder(&server)
            .timeout(Duration::from_secs(30))
            .retry(RetryPolicy::none().budget(Duration::from_millis(1_500)));
        if own {
            b = b.http_client(common::own_http_client());
        }
        let took = times_out(&b.build().unwrap()).await;
        assert_between(took, 1_400, 2_300);
    }
}

/// The budget is the whole call's: the pages of a paged answer share it, and do
/// not get one each.
#[tokio::test]
async fn the_pages_of_an_answer_share_one_budget() {
    let server = MockServer::start_async().await;
    for page in 0..4 {
        let body = if page < 3 {
            format!(
                r#"{{"value":[{{"id":"m{page}"}}],"@odata.nextLink":"/api/users/user1/machines?page={}"}}"#,
                page + 1
            )
        } else {
            r#"{"value":[{"id":"m3"}]}"#.to_owned()
        };
        server
            .mock_async(|when, then| {
                let when = when.path(PATH);
                if page == 0 {
                    when.query_param_missing("page");
                } else {
                    when.query_param("page", page.to_string());
                }
                then.status(200)
                    .body(body)
                    .delay(Duration::from_millis(1_500));
            })
            .await;
    }
    // Four pages of 1.5 s each: 6 s, three times the budget.
    let client = builder(&server)
        .retry(quick_retries(2).budget(Duration::from_secs(2)))
        .build()
        .unwrap();
    let took = times_out(&client).await;
    assert_between(took, 2_000, 3_800);
}

/// A token request that hangs is part of its attempt: bounded by the attempt's
/// timeout, and, over the attempts the policy allows, by the budget.
#[tokio::test]
async fn the_budget_ends_a_hanging_token_request() {
    struct Hanging;
    #[defender_endpoint::async_trait]
    impl defender_endpoint::TokenCredential for Hanging {
        async fn get_token(&self, _: &[&str]) -> Result<defender_endpoint::AccessToken, Error> {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Err(Error::Config("never".into()))
        }
    }
    let server = MockServer::start_async().await;
    let client = builder(&server)
        .credential(Hanging)
        .timeout(Duration::from_millis(500))
        .retry(RetryPolicy::none().budget(Duration::from_millis(1_500)))
        .build()
        .unwrap();
    let took = times_out(&client).await;
    assert_between(took, 400, 1_300);
    let client = builder(&server)
        .credential(Hanging)
        .timeout(Duration::from_millis(500))
        .retry(quick_retries(10).budget(Duration::from_millis(1_500)))
        .build()
        .unwrap();
    let took = times_out(&client).await;
    assert_between(took, 1_400, 2_300);
    assert!(client.stats().attempts >= 2, "{:?}", client.stats());
}

/// After a `Retry-After` wait, the attempt that follows gets only what is left of
/// the budget...
#[tokio::test]
async fn an_attempt_after_a_throttled_wait_ends_with_the_budget() {
    let server = MockServer::start_async().await;
    throttled_then_slow(&server, Duration::from_secs(10)).await;
    let client = builder(&server)
        .timeout(Duration::from_secs(5))
        .retry(RetryPolicy::default().budget(Duration::from_millis(2_500)))
        .build()
        .unwrap();
    let took = times_out(&client).await;
    assert_between(took, 2_400, 3_300);
}

/// ... but at least a second: a wait that uses up the budget is still followed by
/// a real attempt, and a budget of zero still makes one.
#[tokio::test]
async fn every_attempt_gets_at_least_a_second() {
    let server = MockServer::start_async().await;
    // Slower than what is left of the budget after the wait, within a second.
    throttled_then_slow(&server, Duration::from_millis(300)).await;
    let client = builder(&server)
        .retry(RetryPolicy::default().budget(Duration::from_millis(1_100)))
        .build()
        .unwrap();
    assert_eq!(client.user_machines("user1").await.unwrap().len(), 1);
    let client = builder(&server)
        .retry(RetryPolicy::none().budget(Duration::ZERO))
        .build()
        .unwrap();
    assert_eq!(client.user_machines("user1").await.unwrap().len(), 1);
}

#[tokio::test]
async fn connection_failures_are_transport_errors() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}"))
        .credential(StaticToken::new("t"))
        .rate_limit(RateLimit::none())
        .retry(quick_retries(2))
        .build()
        .unwrap();
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert!(!err.to_string().is_empty());
    // Retried: both attempts of the policy were made.
    assert_eq!(client.stats().attempts, 2);
    // The cause is in the message, once: not repeated by `source()`, which
    // error reports (anyhow's `{:#}`) append.
    assert!(err.to_string().contains("Connection refused"), "{err}");
    assert!(std::error::Error::source(&err).is_none());
    // The server that could not be reached is named by its origin; the path,
    // which holds the user name, is not shown.
    let api = format!("http://127.0.0.1:{port}/");
    assert!(err.to_string().contains(&format!("({api})")), "{err}");
    assert!(!format!("{err} {err:?}").contains("user1"), "{err:?}");

    // A token endpoint that cannot be reached is named the same way, without
    // the tenant of its path.
    let server = MockServer::start_async().await;
    let api = server.mock(|when, then| {
        when.any_request();
        then.status(200).body(ONE);
    });
    let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let credential = defender_endpoint::ClientSecretCredential::new(
        tenant,
        "0b0e3a5c-1111-4a2b-9c3d-444455556666",
        "app-secret",
    )
    .authority_host(format!("http://127.0.0.1:{port}"))
    .unwrap();
    let err = Client::builder()
        .base_url(server.base_url())
        .cloud(defender_endpoint::Cloud::Custom {
            api_base: server.base_url(),
            authority_host: format!("http://127.0.0.1:{port}"),
            scope: "api://test/.default".into(),
        })
        .credential(credential)
        .rate_limit(RateLimit::none())
        .retry(quick_retries(2))
        .build()
        .unwrap()
        .user_machines("user1")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(
        text.contains(&format!("(http://127.0.0.1:{port}/)")),
        "{text}"
    );
    assert!(!text.contains(tenant) && !text.contains("oauth2"), "{text}");
    assert_eq!(api.calls(), 0);
}

/// Records when each request arrives.
async fn recording_server() -> (MockServer, Arc<Mutex<Vec<Instant>>>) {
    let server = MockServer::start_async().await;
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let record = arrivals.clone();
    server
        .mock_async(move |when, then| {
            when.is_true(move |_| {
                record.lock().unwrap().push(Instant::now());
                true
            });
            then.status(200).body(ONE);
        })
        .await;
    (server, arrivals)
}

/// The most arrivals in any span of length `per`.
fn busiest(arrivals: &[Instant], per: Duration) -> usize {
    let mut sorted = arrivals.to_vec();
    sorted.sort();
    (0..sorted.len())
        .map(|i| {
            sorted[i..]
                .iter()
                .take_while(|t| **t - sorted[i] < per)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_custom_window_is_never_exceeded() {
    let (server, arrivals) = recording_server().await;
    let per = Duration::from_secs(2);
    let client = builder(&server)
        .rate_limit(RateLimit::new().window(5, per))
        .build()
        .unwrap();
    let calls = (0..12).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.user_machines("user1").await })
    });
    for call in calls.collect::<Vec<_>>() {
        assert_eq!(call.await.unwrap().unwrap().len(), 1);
    }
    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 12);
    assert!(
        busiest(&arrivals, per) <= 5,
        "{} in one window",
        busiest(&arrivals, per)
    );
}

#[tokio::test]
async fn clones_share_the_quota() {
    let (server, arrivals) = recording_server().await;
    let per = Duration::from_secs(1);
    let first = builder(&server)
        .rate_limit(RateLimit::new().window(3, per))
        .build()
        .unwrap();
    let second = first.clone();
    let started = Instant::now();
    let (a, b) = tokio::join!(
        async {
            for _ in 0..3 {
                first.user_machines("user1").await.unwrap();
            }
        },
        async {
            for _ in 0..3 {
                second.user_machines("user1").await.unwrap();
            }
        }
    );
    let _ = (a, b);
    // Six calls at three a second cannot all start within the first second.
    assert!(started.elapsed() >= Duration::from_millis(900));
    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 6);
    assert!(busiest(&arrivals, per) <= 3);
}

/// Issues `tok-0`, `tok-1`, … each valid for `lifetime`.
struct NumberedTokens {
    issued: std::sync::atomic::AtomicUsize,
    lifetime: Duration,
}

impl NumberedTokens {
    fn lasting(lifetime: Duration) -> Self {
        Self {
            issued: Default::default(),
            lifetime,
        }
    }
}

#[defender_endpoint::async_trait]
impl defender_endpoint::TokenCredential for NumberedTokens {
    async fn get_token(&self, _scopes: &[&str]) -> Result<defender_endpoint::AccessToken, Error> {
        let n = self
            .issued
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(defender_endpoint::AccessToken::expires_in(
            format!("tok-{n}"),
            self.lifetime,
        ))
    }
}

#[tokio::test]
async fn a_call_that_waited_for_the_quota_carries_a_fresh_token() {
    let server = MockServer::start_async().await;
    let stale = server
        .mock_async(|when, then| {
            when.path(PATH).header("authorization", "Bearer tok-0");
            then.status(200).body(ONE);
        })
        .await;
    let fresh = server
        .mock_async(|when, then| {
            when.path(PATH).header("authorization", "Bearer tok-1");
            then.status(200).body(ONE);
        })
        .await;
    let client = builder(&server)
        .credential(NumberedTokens::lasting(Duration::from_secs(1)))
        .rate_limit(RateLimit::new().window(1, Duration::from_secs(2)))
        .build()
        .unwrap();

    client.user_machines("user1").await.unwrap();
    // This call waits about 2 s for the quota, by which time tok-0 has expired.
    client.user_machines("user1").await.unwrap();
    assert_eq!((stale.calls(), fresh.calls()), (1, 1));
}

#[test]
fn a_window_that_cannot_work_is_refused_by_build() {
    for (limit, expected) in [
        (RateLimit::new().window(0, Duration::from_secs(60)), "never"),
        (
            RateLimit::defender().window(5, Duration::ZERO),
            "limits nothing",
        ),
    ] {
        let err = Client::builder()
            .credential(StaticToken::new("t"))
            .rate_limit(limit)
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains(expected)),
            "{err:?}"
        );
    }
}

#[test]
fn the_default_quota_is_defenders() {
    assert_eq!(
        RateLimit::default().windows(),
        &[
            (100, Duration::from_secs(60)),
            (1_500, Duration::from_secs(3_600))
        ]
    );
    assert!(RateLimit::none().windows().is_empty());
}

#[test]
fn plain_http_to_a_remote_host_is_refused() {
    for url in [
        "http://api.security.microsoft.com",
        "http://10.1.2.3:8080",
        "http://[2001:db8::1]/",
    ] {
        let err = Client::builder()
            .base_url(url)
            .credential(StaticToken::new("t"))
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{url}: {err:?}");
    }
    for url in [
        "http://127.0.0.1:1",
        "http://localhost:8080",
        "http://[::1]:9",
    ] {
        Client::builder()
            .base_url(url)
            .credential(StaticToken::new("t"))
            .build()
            .unwrap();
    }
}

/// Neither the token nor, in a `Referer`, the user looked up goes to another host.
#[tokio::test]
async fn a_cross_host_redirect_drops_the_token() {
    let origin = MockServer::start_async().await;
    let other = MockServer::start_async().await;
    // Same machine, another host name and port.
    let target = format!("http://localhost:{}{PATH}", other.port());
    origin
        .mock_async(move |when, then| {
            when.path(PATH);
            then.status(302).header("location", target);
        })
        .await;
    let leaked = other
        .mock_async(|when, then| {
            when.path(PATH).header_exists("authorization");
            then.status(200).body(ONE);
        })
        .await;
    let clean = other
        .mock_async(|when, then| {
            when.path(PATH)
                .header_missing("authorization")
                .header_missing("referer");
            then.status(200).body(ONE);
        })
        .await;
    let referer = other
        .mock_async(|when, then| {
            when.path(PATH).header_exists("referer");
            then.status(200).body(ONE);
        })
        .await;
    let client = builder(&origin).build().unwrap();
    assert_eq!(client.user_machines("user1").await.unwrap().len(), 1);
    leaked.assert_calls_async(0).await;
    referer.assert_calls_async(0).await;
    clean.assert_calls_async(1).await;
}

/// A transport error after a followed redirect names the server the redirect
/// led to, which failed, not the API, which answered.
#[tokio::test]
async fn a_transport_error_after_a_redirect_names_the_server_that_failed() {
    let origin = MockServer::start_async().await;
    // A port nothing listens on, under another host name (a redirect back to
    // the API's own host is not followed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    origin
        .mock_async(move |when, then| {
            when.path(PATH);
            then.status(307)
                .header("location", format!("http://localhost:{port}{PATH}"));
        })
        .await;
    let client = builder(&origin).retry(RetryPolicy::none()).build().unwrap();
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert!(err.to_string().contains("Connection refused"), "{err}");
    let failed = format!("(http://localhost:{port}/)");
    assert!(err.to_string().contains(&failed), "{err}");
    assert!(!err.to_string().contains(&origin.base_url()), "{err}");
    assert!(!format!("{err} {err:?}").contains("user1"), "{err:?}");

    // With an HTTP client of the caller's own, whose redirect policy is its
    // own, the error names the origin reqwest reports: the API's.
    let own = reqwest::Client::builder().no_proxy().build().unwrap();
    let client = builder(&origin)
        .http_client(own)
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("({}/)", origin.base_url())),
        "{err}"
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused_even_when_chunked() {
    let server = MockServer::start_async().await;
    let big = format!(
        r#"{{"value":[{}]}}"#,
        vec![r#"{"id":"x"}"#; 20_000].join(",")
    );
    server
        .mock_async(move |when, then| {
            when.path(PATH);
            then.status(200).body(big);
        })
        .await;
    let client = builder(&server)
        .max_response_bytes(64 * 1024)
        .build()
        .unwrap();
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(
        matches!(err, Error::ResponseTooLarge { limit: 65536 }),
        "{err:?}"
    );
    let client = builder(&server).build().unwrap();
    assert_eq!(client.user_machines("user1").await.unwrap().len(), 20_000);
}

#[tokio::test]
async fn a_redirect_to_plain_http_on_a_remote_host_is_not_followed() {
    let origin = MockServer::start_async().await;
    origin
        .mock_async(|when, then| {
            when.path(PATH);
            then.status(302).header(
                "location",
                "http://defender.invalid/api/users/user1/machines",
            );
        })
        .await;
    let err = builder(&origin)
        .build()
        .unwrap()
        .user_machines("user1")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert!(err.to_string().contains("plain http"), "{err}");
}

#[tokio::test]
async fn a_503_with_retry_after_is_waited_out_as_asked() {
    let server = MockServer::start_async().await;
    answer_once(&server, 503, &[("retry-after", "1".into())]).await;
    let ok = then_ok(&server).await;
    // The backoff alone would wait at most 50 ms.
    let client = builder(&server).retry(quick_retries(3)).build().unwrap();
    let started = Instant::now();
    client.user_machines("user1").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    ok.assert_calls_async(1).await;
}

/// A redirect on the API's own host to another path would be another endpoint's
/// answer, fetched with the token: it is not followed, whatever the path.
#[tokio::test]
async fn a_redirect_to_another_path_is_not_followed() {
    for location in [
        "/api/machines",
        "/api/users/other/machines",
        "/api/users/user1/machines/../../../api/alerts",
    ] {
        let server = MockServer::start_async().await;
        server
            .mock_async(move |when, then| {
                when.path(PATH);
                then.status(302).header("location", location);
            })
            .await;
        let elsewhere = server
            .mock_async(|when, then| {
                when.path_excludes("/api/users/user1/machines");
                then.status(200).body(ONE);
            })
            .await;
        let err = builder(&server)
            .build()
            .unwrap()
            .user_machines("user1")
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("another path"),
            "{location}: {err}"
        );
        elsewhere.assert_calls_async(0).await;
    }
}

/// A redirect within the API's host, even to the same path, would be one more
/// request to the API than the quota counts: it is not followed.
#[tokio::test]
async fn a_redirect_within_the_host_is_not_followed() {
    let server = MockServer::start_async().await;
    let first = server
        .mock_async(|when, then| {
            when.path(PATH).query_param_missing("hop");
            then.status(307).header("location", format!("{PATH}?hop=1"));
        })
        .await;
    let hop = server
        .mock_async(|when, then| {
            when.path(PATH).query_param_exists("hop");
            then.status(200).body(ONE);
        })
        .await;
    let client = builder(&server)
        .rate_limit(RateLimit::new().window(1, Duration::from_secs(60)))
        .build()
        .unwrap();
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(
        matches!(&err, Error::Transport(e) if e.is_redirect()),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("quota") || format!("{err:?}").contains("quota"),
        "{err:?}"
    );
    first.assert_calls_async(1).await;
    hop.assert_calls_async(0).await;
}

/// Nor is a chain that leaves the host and comes back to it.
#[tokio::test]
async fn a_redirect_back_to_the_host_is_not_followed() {
    let server = MockServer::start_async().await;
    let port = server.port();
    let by_address = server
        .mock_async(move |when, then| {
            when.path(PATH).header("host", format!("127.0.0.1:{port}"));
            then.status(307)
                .header("location", format!("http://localhost:{port}{PATH}"));
        })
        .await;
    let by_name = server
        .mock_async(move |when, then| {
            when.path(PATH).header("host", format!("localhost:{port}"));
            then.status(307)
                .header("location", format!("http://127.0.0.1:{port}{PATH}"));
        })
        .await;
    let err = builder(&server)
        .build()
        .unwrap()
        .user_machines("user1")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Transport(e) if e.is_redirect()),
        "{err:?}"
    );
    by_address.assert_calls_async(1).await;
    by_name.assert_calls_async(1).await;
}

/// With the caller's own `reqwest::Client`, its redirect policy applies, but an
/// answer it fetched from another path is still refused.
#[tokio::test]
async fn an_own_http_client_cannot_bring_back_another_endpoints_answer() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.path(PATH);
            then.status(302).header("location", "/api/machines");
        })
        .await;
    server
        .mock_async(|when, then| {
            when.path("/api/machines");
            then.status(200).body(ONE);
        })
        .await;
    let client = builder(&server)
        .http_client(common::own_http_client())
        .build()
        .unwrap();
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(matches!(err, Error::Decode { status: 200, .. }), "{err:?}");
    assert!(err.to_string().contains("/api/machines"), "{err}");
}

/// A call that first waited for the client-side quota can still retry a 429: the
/// quota wait is not the API's and does not use up the retry budget.
#[tokio::test]
async fn waiting_for_the_quota_does_not_use_up_the_retry_budget() {
    let server = MockServer::start_async().await;
    let first = server
        .mock_async(|when, then| {
            when.path(PATH);
            then.status(200).body(ONE);
        })
        .await;
    first.up_to_n_times_async(1).await;
    answer_once(&server, 429, &[("retry-after", "0".into())]).await;
    let ok = then_ok(&server).await;
    let client = builder(&server)
        .rate_limit(RateLimit::new().window(1, Duration::from_millis(1500)))
        .retry(quick_retries(3).budget(Duration::from_secs(1)))
        .build()
        .unwrap();
    client.user_machines("user1").await.unwrap();
    // Waits 1.5 s for the quota (more than the budget), gets the 429, and still
    // retries it (after another 1.5 s for the quota).
    let started = Instant::now();
    let machines = client.user_machines("user1").await.unwrap();
    assert_eq!(machines.len(), 1);
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    ok.assert_calls_async(1).await;
    assert_eq!(client.stats().retries, 1);
}

/// `Client::stats` counts what happened: a call dropped while it waits for a
/// `Retry-After` made no retry and did not wait the whole time.
#[tokio::test]
async fn a_call_dropped_during_its_wait_is_not_counted_as_retried() {
    let server = MockServer::start_async().await;
    always_with(&server, 429, ("retry-after", "5")).await;
    let client = builder(&server)
        .retry(RetryPolicy::default())
        .build()
        .unwrap();
    let call = client.user_machines("user1");
    assert!(tokio::time::timeout(Duration::from_millis(500), call)
        .await
        .is_err());
    let stats = client.stats();
    assert_eq!((stats.attempts, stats.retries, stats.throttled), (1, 0, 0));
    // What of the wait passed before the drop counts, not the whole of it.
    assert!(
        stats.throttle_wait >= Duration::from_millis(100)
            && stats.throttle_wait < Duration::from_secs(5),
        "{stats:?}"
    );
}

/// Calls dropped while they queue for the client-side quota sent nothing: no
/// attempts are counted for them, but the time they waited is.
#[tokio::test]
async fn calls_dropped_in_the_quota_queue_count_their_wait_but_no_attempt() {
    let server = MockServer::start_async().await;
    let ok = then_ok(&server).await;
    let client = builder(&server)
        .rate_limit(RateLimit::new().window(2, Duration::from_secs(30)))
        .build()
        .unwrap();
    client.user_machines("user1").await.unwrap();
    client.user_machines("user1").await.unwrap();
    // The window is full: each of these waits 50 ms in the queue and is dropped.
    for _ in 0..10 {
        let call = client.user_machines("user1");
        assert!(tokio::time::timeout(Duration::from_millis(50), call)
            .await
            .is_err());
    }
    ok.assert_calls_async(2).await;
    let stats = client.stats();
    assert_eq!((stats.attempts, stats.retries), (2, 0), "{stats:?}");
    assert!(
        stats.quota_wait >= Duration::from_millis(400),
        "ten waits of 50 ms: {stats:?}"
    );
}

/// A refusal of the token endpoint with `status`, as the app credentials
/// report one.
fn token_endpoint_error(status: u16, message: &str) -> Error {
    Error::Credential {
        message: message.into(),
        status: Some(status),
        code: None,
        description: None,
        error_codes: Vec::new(),
        trace_id: None,
        correlation_id: None,
    }
}

/// Issues tokens that expire at once (so every call asks again), failing its
/// `fail_on`-th request with a 503 of the token endpoint.
struct FlakyTokens {
    calls: std::sync::atomic::AtomicUsize,
    fail_on: usize,
}

#[defender_endpoint::async_trait]
impl defender_endpoint::TokenCredential for FlakyTokens {
    async fn get_token(&self, _: &[&str]) -> Result<defender_endpoint::AccessToken, Error> {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n == self.fail_on {
            return Err(token_endpoint_error(
                503,
                "the token endpoint is unavailable",
            ));
        }
        Ok(defender_endpoint::AccessToken::new(
            common::TOKEN,
            Instant::now(),
        ))
    }
}

/// Refuses its first `busy` token requests as a throttled token endpoint does
/// (429), then issues tokens.
struct ThrottledTokens {
    calls: std::sync::atomic::AtomicUsize,
    busy: usize,
}

#[defender_endpoint::async_trait]
impl defender_endpoint::TokenCredential for ThrottledTokens {
    async fn get_token(&self, _: &[&str]) -> Result<defender_endpoint::AccessToken, Error> {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n <= self.busy {
            return Err(token_endpoint_error(
                429,
                "the token endpoint refused to issue a token",
            ));
        }
        Ok(defender_endpoint::AccessToken::expires_in(
            common::TOKEN,
            Duration::from_secs(3600),
        ))
    }
}

/// Each 429 of the token endpoint that calls waited out counts once in
/// `throttled`, also when two calls each got one of their own.
#[tokio::test]
async fn each_token_429_waited_out_counts_once() {
    let server = MockServer::start_async().await;
    let ok = then_ok(&server).await;
    let credential = Arc::new(ThrottledTokens {
        calls: Default::default(),
        busy: 2,
    });
    let client = builder(&server)
        .credential(credential.clone())
        .retry(quick_retries(5))
        .build()
        .unwrap();
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.user_machines("user1").await }
    });
    // (This call runs first, and the one spawned asks for its own token when
    // it runs: the endpoint's 429s are two answers, one for each.)
    let second = client.user_machines("user1").await;
    first.await.unwrap().unwrap();
    second.unwrap();
    ok.assert_calls_async(2).await;
    assert_eq!(
        credential.calls.load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    let stats = client.stats();
    assert_eq!(stats.throttled, 2, "{stats:?}");
}

/// The quota wait of an attempt whose token request failed is not the call's own
/// time either: the token request is still retried.
#[tokio::test]
async fn a_quota_wait_before_a_failed_token_request_does_not_use_up_the_budget() {
    let server = MockServer::start_async().await;
    let ok = then_ok(&server).await;
    let client = builder(&server)
        .credential(FlakyTokens {
            calls: Default::default(),
            fail_on: 3,
        })
        .rate_limit(RateLimit::new().window(1, Duration::from_millis(1500)))
        .retry(quick_retries(3).budget(Duration::from_secs(1)))
        .build()
        .unwrap();
    client.user_machines("user1").await.unwrap();
    // Gets a token, waits 1.5 s for the quota, by which time the token has expired,
    // gets the 503 for the new one, and still retries.
    client.user_machines("user1").await.unwrap();
    ok.assert_calls_async(2).await;
    let stats = client.stats();
    assert!(stats.quota_wait >= Duration::from_millis(1400), "{stats:?}");
    assert_eq!(stats.retries, 1, "{stats:?}");
}

/// A body the connection cuts short is the network's failure: retried, and
/// reported as a transport error, not as a body that cannot be decoded.
#[tokio::test]
async fn a_body_cut_short_is_retried_as_a_transport_failure() {
    for encoding in [None, Some("gzip")] {
        let server = MockServer::start_async().await;
        let mock = server
            .mock_async(|when, then| {
                when.path(PATH);
                let then = then.status(200).header("content-length", "1000");
                match encoding {
                    Some(encoding) => then
                        .header("content-encoding", encoding)
                        .body(&common::gzip(ONE.repeat(20).as_bytes())[..20]),
                    None => then.body(r#"{"value":[{"id":"#),
                };
            })
            .await;
        let client = builder(&server).retry(quick_retries(2)).build().unwrap();
        let err = client.user_machines("user1").await.unwrap_err();
        assert!(matches!(err, Error::Transport(_)), "{encoding:?}: {err:?}");
        mock.assert_calls_async(2).await;
    }
}

/// A generated client built anew on the client's hooks (`raw::Client::new`)
/// cannot carry the token to another server.
#[tokio::test]
async fn the_token_goes_only_to_the_base_url() {
    use progenitor_client::ClientInfo;
    let server = MockServer::start_async().await;
    let elsewhere = MockServer::start_async().await;
    let stolen = elsewhere
        .mock_async(|when, then| {
            when.any_request();
            then.status(200).body(ONE);
        })
        .await;
    let client = builder(&server).build().unwrap();
    let other =
        defender_endpoint::raw::Client::new(&elsewhere.base_url(), client.raw().inner().clone());
    let id = defender_endpoint::types::GetUserMachinesId::try_from("user1").unwrap();
    let err = other.get_user_machines(&id).await.unwrap_err();
    assert!(err.to_string().contains("refusing"), "{err}");
    stolen.assert_calls_async(0).await;
}

/// A generated client built anew on the client's hooks, on the same base URL but
/// with a `reqwest::Client` of its own, still sends through the client's own: a
/// redirect to another endpoint of the same host is not followed with the token.
#[tokio::test]
async fn a_client_made_anew_on_the_hooks_sends_through_the_client_s_transport() {
    use progenitor_client::ClientInfo;
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/user1/machines");
            then.status(302).header("location", "/api/machines");
        })
        .await;
    let other_endpoint = server
        .mock_async(|when, then| {
            when.path("/api/machines");
            then.status(200).body(ONE);
        })
        .await;
    let client = builder(&server).build().unwrap();
    for raw in [
        defender_endpoint::raw::Client::new(&server.base_url(), client.raw().inner().clone()),
        defender_endpoint::raw::Client::new_with_client(
            &server.base_url(),
            reqwest::Client::new(),
            client.raw().inner().clone(),
        ),
    ] {
        let id = defender_endpoint::types::GetUserMachinesId::try_from("user1").unwrap();
        let result = raw.get_user_machines(&id).await;
        assert!(result.is_err(), "{result:?}");
    }
    other_endpoint.assert_calls_async(0).await;
}

/// Takes a second to issue a token that never expires.
struct SlowTokens;

#[defender_endpoint::async_trait]
impl defender_endpoint::TokenCredential for SlowTokens {
    async fn get_token(&self, _: &[&str]) -> Result<defender_endpoint::AccessToken, Error> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(defender_endpoint::AccessToken::never_expires(common::TOKEN))
    }
}

/// The time a token takes to arrive does not come between a request's slot in
/// the quota and its start, where it would let more requests reach the server
/// in one window than the quota allows.
#[tokio::test]
async fn a_slow_token_does_not_crowd_a_window() {
    let (server, arrivals) = recording_server().await;
    let per = Duration::from_secs(2);
    let client = builder(&server)
        .credential(SlowTokens)
        .rate_limit(RateLimit::new().window(2, per))
        .build()
        .unwrap();
    let calls = (0..4).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.user_machines("user1").await })
    });
    for call in calls.collect::<Vec<_>>() {
        call.await.unwrap().unwrap();
    }
    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 4);
    assert!(busiest(&arrivals, per) <= 2, "{arrivals:?}");
}

/// A call that is not polled for a while keeps its own place in the quota, and
/// no other call waits behind it.
#[tokio::test]
async fn a_call_left_unpolled_holds_up_no_other_call() {
    let (server, _) = recording_server().await;
    let client = builder(&server)
        .rate_limit(RateLimit::new().window(1, Duration::from_secs(1)))
        .build()
        .unwrap();
    client.user_machines("user1").await.unwrap();
    // Takes the next slot and waits for it; then it is left alone.
    let mut parked = Box::pin(client.user_machines("user1"));
    let polled = tokio::time::timeout(Duration::from_millis(50), &mut parked).await;
    assert!(polled.is_err());
    let other = client.clone();
    let call = tokio::time::timeout(Duration::from_secs(10), other.user_machines("user1")).await;
    call.expect("a call on a clone waited behind the unpolled one")
        .unwrap();
    drop(parked);
}

/// However often a call waits for the quota, the token it sends has not expired:
/// after a wait that outlasted its token, a call fetches a new one and queues
/// again, and after that second wait the token is checked once more.
#[tokio::test]
async fn no_call_sends_a_token_that_expired_while_it_waited() {
    // The first two tokens last a second, later ones a minute; each is
    // remembered with when it expires.
    #[derive(Default)]
    struct Expiring(Mutex<Vec<Instant>>);
    #[defender_endpoint::async_trait]
    impl defender_endpoint::TokenCredential for Expiring {
        async fn get_token(&self, _: &[&str]) -> Result<defender_endpoint::AccessToken, Error> {
            let mut issued = self.0.lock().unwrap();
            let lifetime = Duration::from_secs(if issued.len() < 2 { 1 } else { 60 });
            issued.push(Instant::now() + lifetime);
            Ok(defender_endpoint::AccessToken::expires_in(
                format!("tok-{}", issued.len() - 1),
                lifetime,
            ))
        }
    }
    let credential = Arc::new(Expiring::default());
    let server = MockServer::start_async().await;
    let expiries = credential.clone();
    let expired = server
        .mock_async(move |when, then| {
            when.is_true(move |req| {
                let header = req
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let n: usize = header.trim_start_matches("Bearer tok-").parse().unwrap();
                expiries.0.lock().unwrap()[n] <= Instant::now()
            });
            then.status(500);
        })
        .await;
    let fresh = then_ok(&server).await;
    let client = builder(&server)
        .credential(SharedCredential(credential))
        .rate_limit(RateLimit::new().window(1, Duration::from_millis(1_200)))
        .build()
        .unwrap();
    // A starts at once with tok-0; B's turn (1.2 s) comes after tok-0 expired, so
    // it fetches tok-1 and queues behind C (3.6 s), by when tok-1 has expired too.
    let mut calls = Vec::new();
    for _ in 0..3 {
        let client = client.clone();
        calls.push(tokio::spawn(
            async move { client.user_machines("user1").await },
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    expired.assert_calls_async(0).await;
    fresh.assert_calls_async(3).await;
}

/// A credential shared with the test, which reads what it recorded.
struct SharedCredential<T>(Arc<T>);

#[defender_endpoint::async_trait]
impl<T: defender_endpoint::TokenCredential> defender_endpoint::TokenCredential
    for SharedCredential<T>
{
    async fn get_token(&self, scopes: &[&str]) -> Result<defender_endpoint::AccessToken, Error> {
        self.0.get_token(scopes).await
    }
}

/// A token that falls due for its refresh while a call waits for the quota is
/// still valid: the call keeps its turn and sends it.
#[tokio::test]
async fn a_refresh_due_during_the_wait_does_not_cost_the_call_its_turn() {
    let (server, arrivals) = recording_server().await;
    let client = builder(&server)
        // Each token is due for a refresh two seconds into its four.
        .credential(NumberedTokens::lasting(Duration::from_secs(4)))
        .rate_limit(RateLimit::new().window(1, Duration::from_secs(2)))
        .build()
        .unwrap();
    let started = Instant::now();
    let mut calls = Vec::new();
    for _ in 0..3 {
        let client = client.clone();
        calls.push(tokio::spawn(
            async move { client.user_machines("user1").await },
        ));
        // The next caller arrives later.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    // The second call's slot comes at about 2 s, when tok-0 is due for a refresh
    // but valid: it goes then, not behind the third (at about 4 s).
    let mut arrivals = arrivals.lock().unwrap().clone();
    arrivals.sort();
    assert_eq!(arrivals.len(), 3);
    let second = arrivals[1] - started;
    assert!(second < Duration::from_millis(3500), "{second:?}");
    let last = arrivals[2] - started;
    assert!(last < Duration::from_millis(5500), "{last:?}");
}

/// A `Retry-After` the API sends to one call holds for every call of the client
/// (and its clones): none is sent before it has passed, and a call whose budget
/// cannot wait that long gets `Throttled` at once, sending nothing.
#[tokio::test]
async fn a_retry_after_holds_for_every_call_of_the_client() {
    let server = MockServer::start_async().await;
    let slow_down = |user: &'static str, seconds: &'static str| {
        let server = &server;
        async move {
            server
                .mock_async(|when, then| {
                    when.path(format!("/api/users/{user}/machines"));
                    then.status(429)
                        .header("retry-after", seconds)
                        .body(r#"{"error":{"code":"TooManyRequests","message":"slow down"}}"#);
                })
                .await
        }
    };
    slow_down("user1", "2").await;
    let (user2, arrivals) = user2_recorded(&server).await;
    let client = builder(&server)
        .retry(RetryPolicy::none().budget(Duration::from_secs(10)))
        .build()
        .unwrap();
    let asked = Instant::now();
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(
        matches!(err, Error::Throttled { retry_after: Some(wait) } if wait == Duration::from_secs(2)),
        "{err:?}"
    );
    // Another call, on a clone, waits for what is left of the two seconds.
    let machines = client.clone().user_machines("user2").await.unwrap();
    assert_eq!(machines.len(), 1);
    let sent = arrivals.lock().unwrap()[0];
    assert!(
        sent >= asked + Duration::from_millis(1900),
        "{:?}",
        sent - asked
    );
    // That wait is counted as waiting for a 429 (the first call, with no
    // retries, did not wait).
    let stats = client.stats();
    assert!(
        stats.throttle_wait >= Duration::from_millis(1_800),
        "{stats:?}"
    );

    // Asked to wait longer than the budget allows: given up at once.
    slow_down("user3", "60").await;
    client.user_machines("user3").await.unwrap_err();
    let started = Instant::now();
    match client.user_machines("user2").await.unwrap_err() {
        Error::Throttled {
            retry_after: Some(wait),
        } => assert!(wait > Duration::from_secs(50), "{wait:?}"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    // However long the API asks, the other calls spare it five minutes at most
    // (a unit test of `hooks` checks that), but a call refused meanwhile reports
    // the wait the API asked for (a client of its own, which the API has not yet
    // asked to be spared).
    slow_down("user4", "3600").await;
    let client = builder(&server).build().unwrap();
    client.user_machines("user4").await.unwrap_err();
    let refused = client.user_machines("user2").await.unwrap_err();
    match &refused {
        Error::Throttled {
            retry_after: Some(wait),
        } => assert!(
            (Duration::from_secs(3590)..=Duration::from_secs(3600)).contains(wait),
            "{wait:?}"
        ),
        other => panic!("{other:?}"),
    }
    // Shown in whole seconds, rounded up.
    assert!(
        refused.to_string().ends_with("; retry after 3600 s"),
        "{refused}"
    );
    user2.assert_calls_async(1).await;
}

/// A 503 that asks to wait longer than the budget allows: its wait is in the
/// error's message, and a call refused meanwhile reports the 503 it waits for,
/// not a 429 the API never sent.
#[tokio::test]
async fn a_long_retry_after_of_a_503_is_reported_as_a_503() {
    let server = MockServer::start_async().await;
    let unavailable = server
        .mock_async(|when, then| {
            when.path_includes("/machines");
            then.status(503).header("retry-after", "3600");
        })
        .await;
    let client = builder(&server).retry(quick_retries(3)).build().unwrap();
    for (user, said) in [
        ("user1", "the service asked to be called again in 3600 s"),
        (
            "user2",
            "not sent: the service answered 503 and asked to be called again in 3600 s",
        ),
    ] {
        let before = client.stats().attempts;
        match client.user_machines(user).await.unwrap_err() {
            Error::Api {
                status: 503,
                message: Some(message),
                ..
            } => assert_eq!(message, said),
            other => panic!("{user}: {other:?}"),
        }
        // Given up at once, not retried after a backoff.
        assert_eq!(client.stats().attempts - before, 1, "{user}");
    }
    unavailable.assert_calls_async(1).await;
}

/// A `Retry-After` that arrives while another call queues for the client-side
/// quota holds for that call too: its turn is given back and it is sent once the
/// API may be asked again; a call through `Client::raw` is not sent meanwhile.
#[tokio::test]
async fn a_retry_after_holds_for_a_call_already_queued() {
    let server = MockServer::start_async().await;
    let (user2, arrivals) = user2_recorded(&server).await;
    let started = Instant::now();
    let (client, first, second) =
        queued_behind_a_retry_after(&server, Duration::from_secs(20)).await;
    assert!(matches!(first, Err(Error::Throttled { .. })), "{first:?}");
    assert_eq!(second.unwrap().len(), 1);
    let sent = arrivals.lock().unwrap()[0];
    assert!(
        sent >= started + Duration::from_millis(4_400),
        "{:?}",
        sent - started
    );

    // Through `Client::raw`, while the API is spared: nothing is sent.
    client.user_machines("user1").await.unwrap_err();
    let id = defender_endpoint::types::GetUserMachinesId::try_from("user2").unwrap();
    let err = client.raw().get_user_machines(&id).await.unwrap_err();
    assert!(
        err.to_string().contains("throttled") || err.to_string().contains("429"),
        "{err}"
    );
    user2.assert_calls_async(1).await;
}

type Machines = Result<Vec<defender_endpoint::types::Machine>, Error>;

/// user1's call gets a 429 asking for 4 s, answered half a second late; user2's
/// call, started meanwhile, queues behind it for a quota of one call per 2 s.
/// The client (with a retry budget of `budget`) and both outcomes.
async fn queued_behind_a_retry_after(
    server: &MockServer,
    budget: Duration,
) -> (Client, Machines, Machines) {
    server
        .mock_async(|when, then| {
            when.path("/api/users/user1/machines");
            then.status(429)
                .header("retry-after", "4")
                .delay(Duration::from_millis(500));
        })
        .await;
    let client = builder(server)
        .rate_limit(RateLimit::new().window(1, Duration::from_secs(2)))
        .retry(RetryPolicy::none().budget(budget))
        .build()
        .unwrap();
    let second = async {
        // Queued behind the first call's turn, before its 429 arrives.
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.user_machines("user2").await
    };
    let (first, second) = tokio::join!(client.user_machines("user1"), second);
    (client, first, second)
}

/// Serves user2's one machine, recording when each request arrives.
async fn user2_recorded(server: &MockServer) -> (httpmock::Mock<'_>, Arc<Mutex<Vec<Instant>>>) {
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let record = arrivals.clone();
    let mock = server
        .mock_async(move |when, then| {
            when.path("/api/users/user2/machines").is_true(move |_| {
                record.lock().unwrap().push(Instant::now());
                true
            });
            then.status(200).body(ONE);
        })
        .await;
    (mock, arrivals)
}

/// A `Retry-After` answered to a call through `Client::raw` holds for the
/// client's other calls too: a call whose budget cannot wait for it gets
/// `Throttled` at once, sending nothing.
#[tokio::test]
async fn a_retry_after_answered_through_raw_holds_for_every_call() {
    for status in [429, 503] {
        let server = MockServer::start_async().await;
        server
            .mock_async(|when, then| {
                when.path(PATH);
                then.status(status).header("retry-after", "30");
            })
            .await;
        let (user2, _) = user2_recorded(&server).await;
        let client = builder(&server)
            .retry(RetryPolicy::none().budget(Duration::from_secs(5)))
            .build()
            .unwrap();
        let id = defender_endpoint::types::GetUserMachinesId::try_from("user1").unwrap();
        client.raw().get_user_machines(&id).await.unwrap_err();
        let err = client.clone().user_machines("user2").await.unwrap_err();
        assert_eq!(err.status(), Some(status), "{err:?}");
        user2.assert_calls_async(0).await;
    }
}

/// A 429 that does not say how long to wait is backed off by its own call
/// only: another call of the client is sent at once (held back together, the
/// calls would all be sent again at the one moment the longest backoff ends).
#[tokio::test]
async fn a_429_without_retry_after_holds_back_only_its_own_call() {
    let server = MockServer::start_async().await;
    let throttled = always(&server, 429).await;
    let (user2, _) = user2_recorded(&server).await;
    // A backoff of up to a day: the first call is still waiting when the
    // second is made.
    let day = Duration::from_secs(86_400);
    let client = builder(&server)
        .retry(
            RetryPolicy::default()
                .max_attempts(2)
                .base_delay(day)
                .max_delay(day)
                .budget(day * 2),
        )
        .build()
        .unwrap();
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.user_machines("user1").await }
    });
    while throttled.calls_async().await == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Time for the first call to read its answer and start its backoff.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = tokio::time::timeout(Duration::from_secs(20), client.user_machines("user2"))
        .await
        .expect("not held back");
    assert_eq!(second.unwrap().len(), 1);
    user2.assert_calls_async(1).await;
    assert!(!first.is_finished());
    first.abort();
}

/// A queued call whose budget ends before the API may be asked again is not
/// sent: `Throttled`, not a timeout.
#[tokio::test]
async fn a_queued_call_without_time_left_after_a_retry_after_is_not_sent() {
    let server = MockServer::start_async().await;
    let (user2, _) = user2_recorded(&server).await;
    let (_, _, second) = queued_behind_a_retry_after(&server, Duration::from_secs(2)).await;
    assert!(matches!(second, Err(Error::Throttled { .. })), "{second:?}");
    user2.assert_calls_async(0).await;
}

/// user1's call gets a 429 asking for 3 s; user2's call, on the same client,
/// starts 200 ms later. The client (with `policy`) and user2's outcome, once
/// user1's call is over too.
async fn behind_anothers_retry_after(
    server: &MockServer,
    policy: RetryPolicy,
) -> (Client, Machines) {
    server
        .mock_async(|when, then| {
            when.path("/api/users/user1/machines");
            then.status(429).header("retry-after", "3");
        })
        .await;
    let client = builder(server).retry(policy).build().unwrap();
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.user_machines("user1").await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = client.user_machines("user2").await;
    let _ = first.await.unwrap();
    (client, second)
}

/// A call held back by another call's `Retry-After` waits for it when its
/// budget covers the wait, as the retry loop waits for its own 429: a budget of
/// 3.5 s covers the 2.8 s left, though not 2.8 s and a whole second more.
#[tokio::test]
async fn a_call_whose_budget_covers_anothers_retry_after_waits_for_it() {
    let server = MockServer::start_async().await;
    let (user2, arrivals) = user2_recorded(&server).await;
    let started = Instant::now();
    let (client, second) = behind_anothers_retry_after(
        &server,
        RetryPolicy::none().budget(Duration::from_millis(3_500)),
    )
    .await;
    assert_eq!(second.unwrap().len(), 1);
    assert!(arrivals.lock().unwrap()[0] >= started + Duration::from_millis(2_900));
    user2.assert_calls_async(1).await;
    // Two attempts, both sent; no 429 was waited on and retried.
    let stats = client.stats();
    assert_eq!(
        (stats.attempts, stats.retries, stats.throttled),
        (2, 0, 0),
        "{stats:?}"
    );
}

/// The wait for another call's `Retry-After` is neither an attempt of its own nor
/// a 429: with retries, the stats count only what the API answered.
#[tokio::test]
async fn a_wait_for_anothers_retry_after_is_not_counted_as_a_429() {
    let server = MockServer::start_async().await;
    let (user2, _) = user2_recorded(&server).await;
    let (client, second) = behind_anothers_retry_after(
        &server,
        quick_retries(4).budget(Duration::from_millis(3_500)),
    )
    .await;
    assert_eq!(second.unwrap().len(), 1);
    user2.assert_calls_async(1).await;
    // user1: its 429, waited on, then another 429 (after 3 s, the budget has no
    // room for another wait); user2: one attempt.
    let stats = client.stats();
    assert_eq!(
        (stats.attempts, stats.retries, stats.throttled),
        (3, 1, 1),
        "{stats:?}"
    );
}

/// A budget too large for the clock (`Duration::MAX`) is no budget: a call waits
/// out another call's `Retry-After` rather than being refused as a call through
/// `Client::raw` is.
#[tokio::test]
async fn an_unbounded_budget_waits_out_anothers_retry_after() {
    let server = MockServer::start_async().await;
    let (user2, _) = user2_recorded(&server).await;
    let (_, second) =
        behind_anothers_retry_after(&server, RetryPolicy::none().budget(Duration::MAX)).await;
    assert_eq!(second.unwrap().len(), 1);
    user2.assert_calls_async(1).await;
}

/// A `Retry-After` of more than a day is not waited for, whatever the budget:
/// the call returns `Throttled` at once.
#[tokio::test]
async fn a_retry_after_of_more_than_a_day_is_not_waited_for() {
    let server = MockServer::start_async().await;
    let throttled = server
        .mock_async(|when, then| {
            when.path("/api/users/user1/machines");
            then.status(429)
                .header("retry-after", "99999999999999999999");
        })
        .await;
    let client = builder(&server)
        .retry(RetryPolicy::default().budget(Duration::MAX))
        .build()
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), client.user_machines("user1"))
        .await
        .expect("not waited for")
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Throttled {
                retry_after: Some(_)
            }
        ),
        "{err:?}"
    );
    throttled.assert_calls_async(1).await;
}

/// After waiting for another call's `Retry-After`, the request gets at least a
/// second, as every attempt does, though the budget has less left.
#[tokio::test]
async fn a_request_after_waiting_for_anothers_retry_after_gets_a_second() {
    let server = MockServer::start_async().await;
    let user2 = server
        .mock_async(|when, then| {
            when.path("/api/users/user2/machines");
            then.status(200).body(ONE).delay(Duration::from_millis(700));
        })
        .await;
    // Sent about 2.8 s in, with 0.4 s of the budget left: the answer comes 0.7 s later.
    let (_, second) = behind_anothers_retry_after(
        &server,
        RetryPolicy::none().budget(Duration::from_millis(3_200)),
    )
    .await;
    assert_eq!(second.unwrap().len(), 1);
    user2.assert_calls_async(1).await;
}

/// A call with less than a second of its budget left does not wait for another
/// call's `Retry-After` that ends later than its budget, though every attempt
/// may run for a second: `Throttled` at once.
#[tokio::test]
async fn a_budget_under_a_second_is_not_stretched_by_anothers_retry_after() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/user1/machines");
            then.status(429).header("retry-after", "1");
        })
        .await;
    let (user2, _) = user2_recorded(&server).await;
    let client = builder(&server)
        .retry(RetryPolicy::none().budget(Duration::from_millis(300)))
        .build()
        .unwrap();
    client.user_machines("user1").await.unwrap_err();
    let started = Instant::now();
    let second = client.user_machines("user2").await;
    assert!(matches!(second, Err(Error::Throttled { .. })), "{second:?}");
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    user2.assert_calls_async(0).await;
}

/// Hands out tokens that last 600 ms, each after 200 ms.
struct ShortLived;

#[defender_endpoint::async_trait]
impl defender_endpoint::TokenCredential for ShortLived {
    async fn get_token(&self, _: &[&str]) -> Result<defender_endpoint::AccessToken, Error> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(defender_endpoint::AccessToken::expires_in(
            "short-lived-token",
            Duration::from_millis(600),
        ))
    }
}

/// A token fetched again after a wait for another call's `Retry-After` (the
/// one the call had ran out meanwhile) has the second the request gets, though
/// the budget ends sooner.
#[tokio::test]
async fn a_token_fetched_after_waiting_for_anothers_retry_after_gets_the_second() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.path("/api/users/user1/machines");
            then.status(429).header("retry-after", "1");
        })
        .await;
    let (user2, _) = user2_recorded(&server).await;
    let client = Client::builder()
        .base_url(server.base_url())
        .credential(ShortLived)
        .rate_limit(RateLimit::none())
        .retry(RetryPolicy::none().budget(Duration::from_millis(1_100)))
        .build()
        .unwrap();
    client.user_machines("user1").await.unwrap_err();
    // Waits about a second, then fetches a token for 200 ms, past the budget's end.
    assert_eq!(client.user_machines("user2").await.unwrap().len(), 1);
    user2.assert_calls_async(1).await;
}

/// An attempt whose answer was cut short (its length declared, its body not
/// all sent) is retried, and does not count against the call's body limit:
/// the whole answer that follows is read.
#[tokio::test]
async fn an_answer_cut_short_does_not_use_up_the_body_limit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let answers = [
            // 1,000 bytes declared, 10 sent, then the connection closes.
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\
             connection: close\r\n\r\n{\"value\":["
                .to_owned(),
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{ONE}",
                ONE.len()
            ),
        ];
        for answer in answers {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            socket.write_all(answer.as_bytes()).await.unwrap();
            let _ = socket.shutdown().await;
        }
    });
    let client = Client::builder()
        .base_url(base)
        .credential(StaticToken::new(common::TOKEN))
        .rate_limit(RateLimit::none())
        .retry(quick_retries(2))
        .max_response_bytes(1_000)
        .build()
        .unwrap();
    assert_eq!(client.user_machines("user1").await.unwrap().len(), 1);
    assert_eq!(client.stats().attempts, 2);
}

/// An error answer with a body larger than the limit is still the error its
/// status says: a 429 `Throttled` and retried after its `Retry-After`, a 503
/// retried, a 404 an unknown user. The body is read up to the limit only.
#[tokio::test]
async fn an_error_answer_too_large_to_read_keeps_its_status() {
    let server = MockServer::start_async().await;
    let page = format!("<html>{}</html>", "x".repeat(2_000));
    let mut mocks = Vec::new();
    for (user, status) in [("user1", 429), ("user2", 503), ("user3", 404)] {
        let page = page.clone();
        mocks.push(
            server
                .mock_async(move |when, then| {
                    when.path(format!("/api/users/{user}/machines"));
                    then.status(status)
                        .header("retry-after", "0")
                        .header("content-type", "text/html")
                        .body(page);
                })
                .await,
        );
    }
    let client = builder(&server)
        .retry(quick_retries(2))
        .max_response_bytes(1_000)
        .build()
        .unwrap();
    let err = client.user_machines("user1").await.unwrap_err();
    assert!(matches!(err, Error::Throttled { .. }), "{err:?}");
    let err = client.user_machines("user2").await.unwrap_err();
    assert!(
        matches!(&err, Error::Api { status: 503, message: Some(m), .. } if m.starts_with("<html>xxx")),
        "{err:?}"
    );
    assert!(client.user_machines("user3").await.unwrap().is_empty());
    for (mock, calls) in mocks.iter().zip([2, 2, 1]) {
        mock.assert_calls_async(calls).await;
    }
}
