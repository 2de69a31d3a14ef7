//! `Client::machines_for_users`: bounded concurrency, de-duplication, per-user results.

mod common;

use std::{
    collections::HashMap,
    net::TcpListener,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use common::{builder, client, quick_retries, TOKEN};
use defender_endpoint::{types::Machine, Error, InvalidUserNameReason, RetryPolicy};
use futures_util::StreamExt;
use httpmock::{HttpMockRequest, HttpMockResponse, Method::GET, MockServer};
use serde_json::json;

type Results = HashMap<String, Result<Vec<Machine>, Error>>;

async fn collect(
    stream: impl futures_util::Stream<Item = (String, Result<Vec<Machine>, Error>)>,
) -> (Vec<String>, Results) {
    let mut order = Vec::new();
    let mut results = HashMap::new();
    futures_util::pin_mut!(stream);
    while let Some((user, result)) = stream.next().await {
        order.push(user.clone());
        assert!(
            results.insert(user.clone(), result).is_none(),
            "{user} yielded twice"
        );
    }
    (order, results)
}

fn one_machine(id: &str) -> serde_json::Value {
    json!({"value": [{"id": id, "computerDnsName": format!("{id}.corp.example.com")}]})
}

/// The answer to a request for a user's machines: one machine named after the user.
fn one_machine_answer(request: &HttpMockRequest) -> HttpMockResponse {
    HttpMockResponse::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(one_machine(&user_of(request)).to_string())
        .build()
}

/// The user segment of a request to `/api/users/{id}/machines`.
fn user_of(request: &HttpMockRequest) -> String {
    let path = request.uri().path().to_owned();
    path.trim_start_matches("/api/users/")
        .trim_end_matches("/machines")
        .to_owned()
}

/// Serves every user one machine named after the user, slowly, counting how
/// many requests are inside the server at once.
struct Counting {
    server: MockServer,
    max_in_flight: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

async fn counting_server(delay: Duration) -> Counting {
    let server = MockServer::start_async().await;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let (arrive, peak, count) = (in_flight.clone(), max_in_flight.clone(), calls.clone());
    let leave = in_flight;
    server
        .mock_async(move |when, then| {
            when.method(GET)
                .path_prefix("/api/users/")
                .header("authorization", format!("Bearer {TOKEN}"))
                // Runs when a request arrives, before the delay.
                .is_true(move |_| {
                    let now = arrive.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    count.fetch_add(1, Ordering::SeqCst);
                    true
                });
            // Runs after the delay, just before the answer leaves.
            then.delay(delay).respond_with(move |request| {
                leave.fetch_sub(1, Ordering::SeqCst);
                one_machine_answer(request)
            });
        })
        .await;
    Counting {
        server,
        max_in_flight,
        calls,
    }
}

#[tokio::test]
async fn never_more_than_the_concurrency_in_flight() {
    let counting = counting_server(Duration::from_millis(150)).await;
    let client = client(&counting.server);
    let users: Vec<String> = (0..12).map(|i| format!("user{i}@contoso.com")).collect();

    let (order, results) = collect(client.machines_for_users(&users, 3)).await;

    assert_eq!(order.len(), 12);
    for user in &users {
        let machines = results[user].as_ref().expect("every lookup succeeds");
        let name = user.trim_end_matches("@contoso.com");
        assert_eq!(machines.len(), 1);
        assert_eq!(machines[0].id, name);
    }
    assert_eq!(counting.calls.load(Ordering::SeqCst), 12);
    let peak = counting.max_in_flight.load(Ordering::SeqCst);
    assert!(peak <= 3, "{peak} requests were in flight at once");
    // The bound is a bound, not a queue of one: lookups did overlap.
    assert!(peak >= 2, "lookups never overlapped (peak {peak})");
}

/// A batch goes through the client's quota like single calls: with 2 calls per
/// 400 ms, five lookups cannot all start in less than 800 ms, however many may
/// be in flight.
#[tokio::test]
async fn a_batch_keeps_to_the_quota() {
    let counting = counting_server(Duration::ZERO).await;
    let client = builder(&counting.server)
        .rate_limit(defender_endpoint::RateLimit::new().window(2, Duration::from_millis(400)))
        .build()
        .unwrap();
    let users: Vec<String> = (0..5).map(|i| format!("user{i}")).collect();
    let started = std::time::Instant::now();
    let (order, _) = collect(client.machines_for_users(&users, 5)).await;
    assert_eq!(order.len(), 5);
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    assert!(client.stats().quota_wait >= Duration::from_millis(800));
}

#[tokio::test]
async fn concurrency_zero_means_one() {
    let counting = counting_server(Duration::from_millis(30)).await;
    let client = client(&counting.server);

    let (order, results) = collect(client.machines_for_users(["a", "b", "c", "d"], 0)).await;

    assert_eq!(order.len(), 4);
    assert!(results.values().all(Result::is_ok));
    assert_eq!(counting.max_in_flight.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn inputs_naming_the_same_user_share_one_request() {
    let server = MockServer::start_async().await;
    let user1 = server
        .mock_async(|when, then| {
            when.method(GET).path("/api/users/user1/machines");
            then.status(200)
                .header("content-type", "application/json")
                .json_body(common::seed());
        })
        .await;
    let user2 = server
        .mock_async(|when, then| {
            when.method(GET).path("/api/users/user2/machines");
            then.status(200)
                .header("content-type", "application/json")
                .json_body(one_machine("m2"));
        })
        .await;
    let client = client(&server);
    // The same user four ways, one of them twice, and another user.
    let inputs = [
        "user1@contoso.com",
        "CONTOSO\\user1",
        "user1",
        "  user1  ",
        "user2",
        "user1@contoso.com",
        "USER1@Contoso.com",
    ];

    let mut stream = Box::pin(client.machines_for_users(inputs, 4));
    let mut seen = Vec::new();
    while let Some((input, result)) = stream.next().await {
        let machines = result.unwrap();
        let ids: Vec<_> = machines.iter().map(|m| m.id.as_str()).collect();
        if input.to_lowercase().contains("user1") {
            assert_eq!(ids, ["machine-1", "machine-2"], "{input}");
        } else {
            assert_eq!(ids, ["m2"], "{input}");
        }
        seen.push(input);
    }

    // Every input got its answer, the repeated one twice …
    seen.sort();
    let mut expected: Vec<String> = inputs.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(seen, expected);
    // … from one request per user.
    user1.assert_calls_async(1).await;
    user2.assert_calls_async(1).await;
    assert_eq!(client.stats().attempts, 2);
}

/// Case is ignored as Windows ignores it, one character at a time: `K` (the
/// Kelvin sign) and `Ω` (the ohm sign) are not `k` and `ω`, though lower-casing
/// them gives `k` and `ω`, and `ı` and `ſ` are not `i` and `s`, though
/// upper-casing them gives `I` and `S`; each such name is looked up on its own.
#[tokio::test]
async fn names_that_only_lower_casing_merges_are_looked_up_apart() {
    let server = MockServer::start_async().await;
    let users = server
        .mock_async(|when, then| {
            when.method(GET).path_prefix("/api/users/");
            then.respond_with(one_machine_answer);
        })
        .await;
    let client = client(&server);
    let inputs = [
        "k",
        "K",
        "\u{212A}",
        "\u{3C9}",
        "\u{3A9}",
        "\u{2126}",
        "Éa",
        "éA",
        "admin",
        "adm\u{131}n",
        "sam",
        "\u{17F}am",
    ];
    let (_, results) = collect(client.machines_for_users(inputs, 2)).await;
    let looked_up = |input: &str| results[input].as_ref().unwrap()[0].id.clone();
    assert_eq!(looked_up("k"), looked_up("K"));
    assert_eq!(looked_up("\u{212A}"), "%E2%84%AA");
    assert_eq!(looked_up("\u{3C9}"), looked_up("\u{3A9}"));
    assert_eq!(looked_up("\u{2126}"), "%E2%84%A6");
    assert_eq!(looked_up("Éa"), looked_up("éA"));
    // Windows leaves the dotless i and the long s as they are.
    assert_eq!(looked_up("adm\u{131}n"), "adm%C4%B1n");
    assert_eq!(looked_up("\u{17F}am"), "%C5%BFam");
    // k, the Kelvin sign, ω, the ohm sign, éa, admin, admın, sam and ſam.
    users.assert_calls_async(9).await;
}

#[tokio::test]
async fn one_bad_user_does_not_stop_the_others() {
    let server = MockServer::start_async().await;
    let denied = server
        .mock_async(|when, then| {
            when.method(GET).path("/api/users/denied/machines");
            then.status(403)
                .header("content-type", "application/json")
                .json_body(json!({"error": {
                    "code": "Forbidden",
                    "message": "Missing Machine.Read.All",
                    "target": "5c1d1a8e-0c1f-4b0e-9d43-8f0b7c1f2a10",
                }}));
        })
        .await;
    let others = server
        .mock_async(|when, then| {
            when.method(GET)
                .path_prefix("/api/users/")
                .path_excludes("denied");
            then.respond_with(one_machine_answer);
        })
        .await;
    let client = client(&server);
    let inputs = [
        "alice",
        "bad/name",
        "denied@contoso.com",
        "",
        "CONTOSO\\denied",
        "bob",
    ];

    let (order, results) = collect(client.machines_for_users(inputs, 2)).await;

    assert_eq!(order.len(), inputs.len());
    assert_eq!(results["alice"].as_ref().unwrap()[0].id, "alice");
    assert_eq!(results["bob"].as_ref().unwrap()[0].id, "bob");
    match &results["bad/name"] {
        Err(Error::InvalidUserName(e)) => {
            assert_eq!(e.input(), "bad/name");
            assert!(
                matches!(e.reason(), InvalidUserNameReason::ForbiddenCharacter('/')),
                "{e:?}"
            );
        }
        other => panic!("bad/name: {other:?}"),
    }
    assert!(matches!(&results[""], Err(Error::InvalidUserName(_))));
    // Both spellings of `denied` get the same failure, target included, from one request.
    for input in ["denied@contoso.com", "CONTOSO\\denied"] {
        match &results[input] {
            Err(
                e @ Error::Api {
                    status: 403,
                    code,
                    target,
                    ..
                },
            ) => {
                assert_eq!(code.as_deref(), Some("Forbidden"));
                assert_eq!(
                    target.as_deref(),
                    Some("5c1d1a8e-0c1f-4b0e-9d43-8f0b7c1f2a10")
                );
                assert!(e
                    .to_string()
                    .contains("5c1d1a8e-0c1f-4b0e-9d43-8f0b7c1f2a10"));
            }
            other => panic!("{input}: {other:?}"),
        }
    }
    denied.assert_calls_async(1).await;
    // No request for the invalid names: only alice and bob reached the other mock.
    others.assert_calls_async(2).await;
}

#[tokio::test]
async fn a_transport_failure_is_shared_by_the_inputs_that_named_the_user() {
    // A port nothing listens on.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = defender_endpoint::Client::builder()
        .base_url(format!("http://127.0.0.1:{port}"))
        .credential(defender_endpoint::StaticToken::new(TOKEN))
        .rate_limit(defender_endpoint::RateLimit::none())
        .retry(RetryPolicy::none())
        .build()
        .unwrap();

    let (_, results) =
        collect(client.machines_for_users(["u@contoso.com", "CONTOSO\\u", "v"], 2)).await;

    let a = results["u@contoso.com"].as_ref().unwrap_err();
    let b = results["CONTOSO\\u"].as_ref().unwrap_err();
    assert!(matches!(a, Error::Transport(_)), "{a:?}");
    assert!(matches!(b, Error::Transport(_)), "{b:?}");
    assert_eq!(a.to_string(), b.to_string());
    // A failure that concerns one input only stays as it is.
    assert!(
        matches!(results["v"], Err(Error::Transport(_))),
        "{:?}",
        results["v"]
    );
    assert_eq!(client.stats().attempts, 2, "one attempt per distinct user");
}

#[tokio::test]
async fn lookups_go_through_the_retry_policy_and_are_counted() {
    let server = MockServer::start_async().await;
    let first = Arc::new(AtomicUsize::new(0));
    let seen = first.clone();
    server
        .mock_async(move |when, then| {
            when.method(GET).path("/api/users/user1/machines");
            then.respond_with(move |_| {
                if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                    HttpMockResponse::builder()
                        .status(429)
                        .header("retry-after", "0")
                        .build()
                } else {
                    HttpMockResponse::builder()
                        .status(200)
                        .header("content-type", "application/json")
                        .body(common::seed().to_string())
                        .build()
                }
            });
        })
        .await;
    let client = builder(&server).retry(quick_retries(3)).build().unwrap();

    let (_, results) = collect(client.machines_for_users(["user1", "user1@contoso.com"], 4)).await;

    assert_eq!(results["user1"].as_ref().unwrap().len(), 2);
    assert_eq!(results["user1@contoso.com"].as_ref().unwrap().len(), 2);
    let stats = client.stats();
    assert_eq!(stats.attempts, 2);
    assert_eq!(stats.retries, 1);
    assert_eq!(stats.throttled, 1);
}

#[tokio::test]
async fn the_stream_owns_its_client_and_can_move_to_a_task() {
    let counting = counting_server(Duration::ZERO).await;
    let stream = {
        let client = client(&counting.server);
        client.machines_for_users(vec!["a".to_string(), "b".to_string()], 2)
    };
    let (order, results) = tokio::spawn(collect(stream)).await.unwrap();
    assert_eq!(order.len(), 2);
    assert!(results.values().all(Result::is_ok));
}

#[tokio::test]
async fn nothing_is_sent_before_the_stream_is_polled() {
    let counting = counting_server(Duration::ZERO).await;
    let client = client(&counting.server);
    let stream = client.machines_for_users(["a", "b"], 2);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(counting.calls.load(Ordering::SeqCst), 0);
    drop(stream);
}

/// The lookups go on while the consumer is busy with an item: an answer that
/// arrives meanwhile is not lost to the request's timeout.
#[tokio::test]
async fn a_slow_consumer_does_not_make_lookups_time_out() {
    let server = MockServer::start_async().await;
    for (user, delay) in [("fast", 100), ("slow", 400)] {
        let body = one_machine(user).to_string();
        server
            .mock_async(move |when, then| {
                when.path(format!("/api/users/{user}/machines"));
                then.status(200)
                    .body(body)
                    .delay(Duration::from_millis(delay));
            })
            .await;
    }
    let client = builder(&server)
        .timeout(Duration::from_millis(1000))
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let mut results = Box::pin(client.machines_for_users(["fast", "slow"], 2));
    let (first, result) = results.next().await.unwrap();
    assert_eq!(first, "fast");
    result.unwrap();
    // Busy with the first item for longer than the second request may take.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (second, result) = results.next().await.unwrap();
    assert_eq!(second, "slow");
    assert_eq!(result.unwrap()[0].id, "slow");
}

/// Dropping the stream cancels the lookups it started: none of them goes on
/// to retry.
#[tokio::test]
async fn dropping_the_stream_cancels_its_lookups() {
    let server = MockServer::start_async().await;
    let first = server
        .mock_async(|when, then| {
            when.path("/api/users/first/machines");
            then.status(200).body(one_machine("first").to_string());
        })
        .await;
    let failing = server
        .mock_async(|when, then| {
            when.path_prefix("/api/users/slow");
            then.status(503).delay(Duration::from_millis(300));
        })
        .await;
    let client = builder(&server).retry(quick_retries(4)).build().unwrap();
    let mut results = Box::pin(client.machines_for_users(["first", "slow1", "slow2"], 3));
    assert_eq!(results.next().await.unwrap().0, "first");
    drop(results);
    // Long enough for the lookups, had they gone on, to get their 503s and retry.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    first.assert_calls_async(1).await;
    assert!(failing.calls_async().await <= 2);
    assert_eq!(client.stats().retries, 0);
}

/// Runs `future` to its end on this thread, with no Tokio runtime around it.
fn block_on_without_tokio<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut context = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    let started = std::time::Instant::now();
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        // A call that waits on a Tokio timer here would never be woken.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still pending after 10 s"
        );
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

/// Called outside a Tokio runtime, a lookup, a batch and a call through `raw`
/// return an error that says so, instead of panicking, and send nothing.
#[test]
fn calls_outside_a_tokio_runtime_are_an_error() {
    let server = MockServer::start();
    let api = server.mock(|when, then| {
        when.path("/api/users/user1/machines");
        then.status(200).body(r#"{"value":[]}"#);
    });
    let client = client(&server);
    let outside = |error: &Error| matches!(error, Error::Config(message) if message.contains("outside a Tokio runtime"));
    let error = block_on_without_tokio(client.user_machines("user1")).unwrap_err();
    assert!(outside(&error), "{error:?}");
    let results = block_on_without_tokio(
        client
            .machines_for_users(["user1", "user2"], 2)
            .collect::<Vec<_>>(),
    );
    assert_eq!(results.len(), 2);
    for (user, result) in results {
        assert!(outside(result.as_ref().unwrap_err()), "{user}: {result:?}");
    }
    // So does a call through `raw`.
    let id = defender_endpoint::types::GetUserMachinesId::try_from("user1").unwrap();
    let raw = block_on_without_tokio(client.raw().get_user_machines(&id)).unwrap_err();
    assert!(raw.to_string().contains("outside a Tokio runtime"), "{raw}");
    assert_eq!(api.calls(), 0);
    // The same client works inside one.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(runtime
        .block_on(client.user_machines("user1"))
        .unwrap()
        .is_empty());
    // A runtime without the time driver: the call panics inside Tokio, as the
    // README says (a runtime cannot be asked which drivers it has).
    let no_timers = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = no_timers.block_on(client.user_machines("user1"));
    }));
    assert!(panicked.is_err());
}

/// A client kept in a `static` serves one Tokio runtime after another, each
/// shut down after its calls: nothing it keeps (connections, the token and its
/// refresh, the quota's queue) is tied to a runtime that is gone.
#[test]
fn a_static_client_serves_one_runtime_after_another() {
    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    static CLIENT: std::sync::OnceLock<defender_endpoint::Client> = std::sync::OnceLock::new();
    let server = MockServer::start();
    let api = server.mock(|when, then| {
        when.path("/api/users/user1/machines");
        then.status(200).body(r#"{"value":[]}"#);
    });
    // Tokens that last a second: each round (a second apart) fetches its own.
    let tokens = server.mock(|when, then| {
        when.method(httpmock::Method::POST)
            .path(format!("/{TENANT}/oauth2/v2.0/token"));
        then.status(200)
            .json_body(json!({"token_type": "Bearer", "expires_in": 1, "access_token": "tok"}));
    });
    let client = CLIENT.get_or_init(|| {
        let credential = defender_endpoint::ClientSecretCredential::new(
            TENANT,
            "0b0e3a5c-1111-4a2b-9c3d-444455556666",
            "secret",
        )
        .authority_host(server.base_url())
        .unwrap();
        builder(&server)
            .credential(credential)
            // Three calls a round, two a window: the third queues.
            .rate_limit(defender_endpoint::RateLimit::new().window(2, Duration::from_millis(200)))
            .build()
            .unwrap()
    });
    for round in 0..3 {
        let runtime = if round % 2 == 0 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            tokio::runtime::Builder::new_multi_thread()
        }
        .enable_all()
        .build()
        .unwrap();
        let machines = runtime.block_on(async {
            let lookups = (0..3).map(|_| client.user_machines("user1"));
            futures_util::future::join_all(lookups).await
        });
        drop(runtime);
        for result in machines {
            assert!(result.unwrap().is_empty(), "round {round}");
        }
        std::thread::sleep(Duration::from_millis(1_100));
    }
    assert_eq!(api.calls(), 9);
    assert!(tokens.calls() >= 3, "{} token requests", tokens.calls());
    assert!(
        client.stats().quota_wait >= Duration::from_millis(100),
        "{:?}",
        client.stats()
    );
}
