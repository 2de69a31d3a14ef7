//! [`ClientSecretCredential`]: an app registration's client secret.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use super::{endpoint::TokenEndpoint, AccessToken, TokenCredential};
use crate::Error;

/// Signs in as a Microsoft Entra ID app registration with a client secret
/// (OAuth 2.0 client credentials grant).
///
/// Each token request is a form-encoded `POST {authority}/{tenant}/oauth2/v2.0/token`
/// with `grant_type=client_credentials`, `client_id`, `client_secret` and the
/// client's `scope`. The client caches the tokens, so one request serves
/// every call until shortly before the token expires.
///
/// The secret is held in a [`SecretString`] (wiped from memory when dropped)
/// and `Debug` never shows it.
///
/// ```no_run
/// # fn run() -> Result<(), defender_endpoint::Error> {
/// use defender_endpoint::{Client, ClientSecretCredential};
///
/// let credential = ClientSecretCredential::new(
///     "00000000-0000-0000-0000-000000000001", // tenant id
///     "00000000-0000-0000-0000-000000000002", // application (client) id
///     std::env::var("DEFENDER_CLIENT_SECRET").unwrap_or_default(),
/// );
/// let client = Client::builder().credential(credential).build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientSecretCredential {
    endpoint: TokenEndpoint,
    secret: SecretString,
}

impl ClientSecretCredential {
    /// A credential for the app `client_id` of the tenant `tenant_id` (a GUID or
    /// a domain like `contoso.onmicrosoft.com`), signing in with `client_secret`
    /// at the commercial cloud's authority ([`DEFAULT_AUTHORITY_HOST`](crate::DEFAULT_AUTHORITY_HOST)).
    ///
    /// White space around either id is removed (neither a GUID nor a domain holds
    /// any; a value read from a file often ends in a newline). Nothing is sent
    /// until the first token is needed. An empty secret, a malformed tenant id, a
    /// client id that is not a GUID, or an authority that holds a path is reported by
    /// [`ClientBuilder::build`](crate::ClientBuilder::build) (and, for the
    /// credential used on its own, at its first token request), as an
    /// [`Error::Credential`], before anything is sent.
    pub fn new(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<SecretString>,
    ) -> Self {
        Self {
            endpoint: TokenEndpoint::new(tenant_id.into(), client_id.into()),
            secret: client_secret.into(),
        }
    }

    /// Signs in at another authority, such as a US Government cloud's
    /// ([`Cloud::authority_host`](crate::Cloud::authority_host)).
    ///
    /// `https://` is required, except for loopback hosts; a bare host name
    /// gets `https://`. Fails with [`Error::Config`] otherwise, and for a URL
    /// with a query, a fragment, user info or a `.` or `..` path segment. The
    /// host alone:
    /// one with the tenant in its path, or any path on Microsoft's sign-in hosts,
    /// is refused by [`ClientBuilder::build`](crate::ClientBuilder::build) (and,
    /// for the credential used on its own, at its first token request) with
    /// [`Error::Credential`].
    pub fn authority_host(mut self, url: impl AsRef<str>) -> Result<Self, Error> {
        self.endpoint.set_authority(url.as_ref())?;
        Ok(self)
    }

    /// Sends token requests through a `reqwest::Client` of your own (a proxy,
    /// custom TLS roots, …) instead of the credential's (30 s timeout, no redirects).
    /// Whatever its redirect policy, a redirect never carries the form: a 307 or 308
    /// is not followed, and the answer a followed 301, 302 or 303 leads to is refused
    /// ([`Error::Credential`](crate::Error::Credential)). For a plain-http (loopback)
    /// authority, build it with `reqwest::ClientBuilder::no_proxy()`: a token request
    /// through a client that may use a proxy fails with
    /// [`Error::Config`](crate::Error::Config), as the proxy would see the form in clear.
    #[must_use]
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.endpoint.set_http_client(client);
        self
    }
}

impl fmt::Debug for ClientSecretCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSecretCredential")
            .field("endpoint", &self.endpoint)
            .field("client_secret", &"***")
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenCredential for ClientSecretCredential {
    async fn get_token(&self, scopes: &[&str]) -> Result<AccessToken, Error> {
        let url = self.checked_url()?;
        let scope = super::join_scopes(scopes)?;
        let secret = self.secret.expose_secret();
        self.endpoint
            .request(
                &url,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", self.endpoint.client_id()),
                    ("client_secret", secret),
                    ("scope", &scope),
                ],
                &[secret],
            )
            .await
    }

    fn signs_in_at(&self) -> Option<&str> {
        Some(self.endpoint.authority())
    }

    fn problem(&self) -> Option<Error> {
        self.checked_url().err()
    }
}

impl ClientSecretCredential {
    /// The token endpoint's URL, once the secret, the ids and the authority
    /// are known to be usable.
    fn checked_url(&self) -> Result<String, Error> {
        // (White space alone is no secret either, and is not sent.)
        if self.secret.expose_secret().trim().is_empty() {
            return Err(Error::credential("the client secret is empty"));
        }
        self.endpoint.url()
    }
}
