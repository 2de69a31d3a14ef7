//! Credentials: where bearer tokens come from.
//!
//! Every credential implements [`TokenCredential`]. The client asks its credential
//! for a token through a [`TokenCache`](cache) of its own, so tokens are reused
//! until shortly before they expire and concurrent calls share one fetch.

// `Error` is the crate's one error type and carries the token endpoint's details by value.

#[cfg(feature = "azure")]
mod azure;
pub(crate) mod cache;
mod certificate;
pub(crate) mod endpoint;
mod environment;
mod secret;

#[cfg(feature = "azure")]
pub use azure::AzureCredential;
pub use certificate::ClientCertificateCredential;
pub use endpoint::DEFAULT_AUTHORITY_HOST;
pub use environment::EnvironmentCredential;
pub use secret::ClientSecretCredential;

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

pub use secrecy::{ExposeSecret, SecretString};

use crate::Error;

/// The scope of the Defender for Endpoint API in the commercial cloud.
///
/// The audience is `https://api.securitycenter.microsoft.com` even when the
/// client calls `api.security.microsoft.com`.
pub const DEFAULT_SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";

/// A bearer token and when it stops being valid.
///
/// `Debug` never shows the token.
#[derive(Clone)]
pub struct AccessToken {
    /// The secret token, sent as `Authorization: Bearer {token}`.
    pub token: SecretString,
    /// The instant (monotonic clock) after which the token must not be used;
    /// `None` for a token that does not expire on its own. A token whose
    /// instant has passed when the client gets it is still sent, once: the API
    /// decides (the instant may come from a wall clock that runs ahead), and
    /// answers 401 for a token that has expired, which makes the client ask
    /// the credential once more and then fail with [`Error::Api`] 401. (A call
    /// that first waits for the client-side quota asks the credential again,
    /// up to three times, before it sends the token.) It is not kept: the next
    /// call asks the credential again.
    pub expires_on: Option<Instant>,
}

impl AccessToken {
    /// A token valid until `expires_on`.
    pub fn new(token: impl Into<String>, expires_on: Instant) -> Self {
        Self {
            token: SecretString::from(token.into()),
            expires_on: Some(expires_on),
        }
    }

    /// A token valid for `lifetime` from now (the `expires_in` of an OAuth answer).
    pub fn expires_in(token: impl Into<String>, lifetime: Duration) -> Self {
        let now = Instant::now();
        Self {
            token: SecretString::from(token.into()),
            expires_on: now.checked_add(lifetime),
        }
    }

    /// A token with no known expiry.
    pub fn never_expires(token: impl Into<String>) -> Self {
        Self {
            token: SecretString::from(token.into()),
            expires_on: None,
        }
    }

    /// Whether the token is still usable for at least `margin` from now.
    pub fn is_valid_for(&self, margin: Duration) -> bool {
        match self.expires_on {
            None => true,
            Some(at) => Instant::now()
                .checked_add(margin)
                .is_some_and(|deadline| deadline < at),
        }
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"***")
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

/// A source of bearer tokens, shaped like `azure_core`'s `TokenCredential`.
///
/// Implement it with [`async_trait`](https://docs.rs/async-trait):
///
/// ```
/// use defender_endpoint::{AccessToken, Error, TokenCredential};
///
/// #[derive(Debug)]
/// struct FromVault;
///
/// #[defender_endpoint::async_trait]
/// impl TokenCredential for FromVault {
///     async fn get_token(&self, scopes: &[&str]) -> Result<AccessToken, Error> {
///         assert_eq!(scopes, ["https://api.securitycenter.microsoft.com/.default"]);
///         Ok(AccessToken::never_expires("token-from-the-vault"))
///     }
/// }
/// ```
///
/// The trait is object safe: the client holds an `Arc<dyn TokenCredential>`.
/// It caches what `get_token` returns, so implementations need no cache of
/// their own.
#[async_trait::async_trait]
pub trait TokenCredential: Send + Sync {
    /// Gets a token for `scopes` (the client passes exactly one scope, the API's `/.default`).
    async fn get_token(&self, scopes: &[&str]) -> Result<AccessToken, Error>;

    /// The authority host the credential signs in at, when it is one of this
    /// crate's (`https://login.microsoftonline.com`): `build()` refuses a
    /// [`Cloud`](crate::Cloud) that signs in elsewhere. Not for other credentials.
    #[doc(hidden)]
    fn signs_in_at(&self) -> Option<&str> {
        None
    }

    /// Whether the token is asked for the scope given: so for every credential
    /// but [`StaticToken`], whose token was minted elsewhere. `build()` then
    /// refuses a base URL of another cloud's API than the scope's.
    #[doc(hidden)]
    fn uses_scope(&self) -> bool {
        true
    }

    /// What the credential can tell is wrong with itself before it asks for a
    /// token (an empty secret, a malformed tenant or client id, an authority
    /// that holds a path): `build()` returns it. Not for
    /// other credentials, which report such problems from `get_token`.
    #[doc(hidden)]
    fn problem(&self) -> Option<Error> {
        None
    }
}

#[async_trait::async_trait]
impl<T: TokenCredential + ?Sized> TokenCredential for std::sync::Arc<T> {
    async fn get_token(&self, scopes: &[&str]) -> Result<AccessToken, Error> {
        (**self).get_token(scopes).await
    }

    fn signs_in_at(&self) -> Option<&str> {
        (**self).signs_in_at()
    }

    fn uses_scope(&self) -> bool {
        (**self).uses_scope()
    }

    fn problem(&self) -> Option<Error> {
        (**self).problem()
    }
}

#[async_trait::async_trait]
impl<T: TokenCredential + ?Sized> TokenCredential for Box<T> {
    async fn get_token(&self, scopes: &[&str]) -> Result<AccessToken, Error> {
        (**self).get_token(scopes).await
    }

    fn signs_in_at(&self) -> Option<&str> {
        (**self).signs_in_at()
    }

    fn uses_scope(&self) -> bool {
        (**self).uses_scope()
    }

    fn problem(&self) -> Option<Error> {
        (**self).problem()
    }
}

/// What [`ClientBuilder::credential`](crate::ClientBuilder::credential) accepts.
///
/// - any [`TokenCredential`] (including `Arc<dyn TokenCredential>`);
/// - a `Result` of one, so that a credential's fallible builder step chains
///   straight in; an `Err` is what [`ClientBuilder::build`](crate::ClientBuilder::build)
///   then returns, before anything is sent;
/// - with the feature `azure`, an `Arc<dyn azure_core::credentials::TokenCredential>`
///   (managed identity, workload identity, the Azure CLI, …), wrapped in
///   `AzureCredential`. The `Arc` of a concrete `azure_identity` credential
///   goes through `AzureCredential::new`, where it coerces.
///
/// ```no_run
/// use defender_endpoint::{Client, ClientSecretCredential, Error};
///
/// fn client(secret: String) -> Result<Client, Error> {
///     Client::builder()
///         .credential(
///             ClientSecretCredential::new(
///                 "72f988bf-86f1-41af-91ab-2d7cd011db47",
///                 "0b0e3a5c-1111-4a2b-9c3d-444455556666",
///                 secret,
///             )
///             .authority_host("https://login.microsoftonline.us"),
///         )
///         .build()
/// }
/// ```
pub trait IntoCredential {
    /// The credential, or the error that `build()` returns.
    fn into_credential(self) -> Result<Arc<dyn TokenCredential>, Error>;
}

impl<T: TokenCredential + 'static> IntoCredential for T {
    fn into_credential(self) -> Result<Arc<dyn TokenCredential>, Error> {
        Ok(Arc::new(self))
    }
}

impl<T: TokenCredential + 'static> IntoCredential for Result<T, Error> {
    fn into_credential(self) -> Result<Arc<dyn TokenCredential>, Error> {
        self.map(|credential| Arc::new(credential) as Arc<dyn TokenCredential>)
    }
}

/// The space-separated `scope` parameter of a token request.
fn join_scopes(scopes: &[&str]) -> Result<String, Error> {
    let scope = scopes
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if scope.is_empty() {
        return Err(Error::credential("no scope to request a token for"));
    }
    Ok(scope)
}

/// A fixed bearer token, for tokens obtained elsewhere (and for tests).
///
/// The token is used as long as the client lives: it is not refreshed.
#[derive(Clone)]
pub struct StaticToken {
    token: SecretString,
}

impl StaticToken {
    /// Wraps an existing bearer token (without the `Bearer ` prefix).
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: SecretString::from(token.into()),
        }
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticToken")
            .field("token", &"***")
            .finish()
    }
}

#[async_trait::async_trait]
impl TokenCredential for StaticToken {
    async fn get_token(&self, _scopes: &[&str]) -> Result<AccessToken, Error> {
        Ok(AccessToken {
            token: self.token.clone(),
            expires_on: None,
        })
    }

    fn uses_scope(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_tokens() {
        let sentinel = "SENTINEL-TOKEN-5f2c";
        assert!(!format!("{:?}", StaticToken::new(sentinel)).contains(sentinel));
        assert!(!format!("{:?}", AccessToken::never_expires(sentinel)).contains(sentinel));
        assert!(!format!(
            "{:#?}",
            AccessToken::expires_in(sentinel, Duration::from_secs(5))
        )
        .contains(sentinel));
    }

    #[test]
    fn validity() {
        assert!(AccessToken::never_expires("t").is_valid_for(Duration::from_secs(3600)));
        let t = AccessToken::expires_in("t", Duration::from_secs(60));
        assert!(t.is_valid_for(Duration::from_secs(30)));
        assert!(!t.is_valid_for(Duration::from_secs(300)));
    }
}
