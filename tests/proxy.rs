//! Plain http goes to loopback only, and never through a proxy of the environment,
//! which may be on another host: neither the token request (with the client
//! secret) nor the API request (with the token) may reach it.
//!
//! A test binary of its own, because it sets `HTTP_PROXY` for the whole process.

mod common;

use defender_endpoint::{
    Client, ClientSecretCredential, Error, RateLimit, RetryPolicy, TokenCredential,
};
use httpmock::{Method::POST, MockServer};

#[tokio::test]
async fn loopback_http_never_goes_through_a_proxy() {
    let proxy = MockServer::start_async().await;
    let anything = proxy
        .mock_async(|when, then| {
            when.any_request();
            then.status(502);
        })
        .await;
    for name in ["HTTP_PROXY", "http_proxy"] {
        std::env::set_var(name, proxy.base_url());
    }
    for name in ["NO_PROXY", "no_proxy"] {
        std::env::remove_var(name);
    }

    let server = MockServer::start_async().await;
    let tokens = server
        .mock_async(|when, then| {
            when.method(POST)
                .path("/contoso.onmicrosoft.com/oauth2/v2.0/token");
            then.status(200)
                .header("content-type", "application/json")
                .body(r#"{"token_type":"Bearer","expires_in":3599,"access_token":"tok"}"#);
        })
        .await;
    let api = server
        .mock_async(|when, then| {
            when.path("/api/users/user1/machines")
                .header("authorization", "Bearer tok");
            then.status(200)
                .header("content-type", "application/json")
                .body(r#"{"value":[{"id":"m1"}]}"#);
        })
        .await;
    // A credential first used at an https authority (its HTTP client is built
    // then, through the proxy), then pointed at a loopback one.
    let first = ClientSecretCredential::new(
        "contoso.onmicrosoft.com",
        "0b0e3a5c-1111-4a2b-9c3d-444455556666",
        "secret",
    )
    .authority_host("https://login.invalid")
    .unwrap();
    let _ = first.get_token(&["scope"]).await;
    let credential = first.authority_host(server.base_url()).unwrap();
    let client = Client::builder()
        .base_url(server.base_url())
        .credential(credential)
        .rate_limit(RateLimit::none())
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let machines = client.user_machines("user1").await.unwrap();
    assert_eq!(machines.len(), 1);
    tokens.assert_calls_async(1).await;
    api.assert_calls_async(1).await;
    anything.assert_calls_async(0).await;

    // A caller's own reqwest::Client consults HTTP_PROXY unless built with
    // no_proxy(): for plain http it is refused before anything is sent, for the
    // API (at build) and for the token endpoint (at the token request).
    let credential = ClientSecretCredential::new(
        "contoso.onmicrosoft.com",
        "0b0e3a5c-1111-4a2b-9c3d-444455556666",
        "secret",
    )
    .authority_host(server.base_url())
    .unwrap();
    let err = Client::builder()
        .base_url(server.base_url())
        .http_client(reqwest::Client::new())
        .credential(credential.clone())
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains("no_proxy()")),
        "{err:?}"
    );
    let own = ClientSecretCredential::new(
        "contoso.onmicrosoft.com",
        "0b0e3a5c-1111-4a2b-9c3d-444455556666",
        "the-secret",
    )
    .authority_host(server.base_url())
    .unwrap()
    .http_client(reqwest::Client::new());
    let err = own.get_token(&["scope"]).await.unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains("no_proxy()")),
        "{err:?}"
    );
    let client = Client::builder()
        .base_url(server.base_url())
        .http_client(common::own_http_client())
        .credential(credential.http_client(common::own_http_client()))
        .rate_limit(RateLimit::none())
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    assert_eq!(client.user_machines("user1").await.unwrap().len(), 1);
    tokens.assert_calls_async(2).await;
    api.assert_calls_async(2).await;
    anything.assert_calls_async(0).await;
}
