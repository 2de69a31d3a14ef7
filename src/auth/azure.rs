//! [`AzureCredential`]: any `azure_core` credential (feature `azure`).

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use azure_core::{credentials, error::ErrorKind, time::OffsetDateTime};
use secrecy::SecretString;

use super::{AccessToken, TokenCredential};
use crate::Error;

/// Adapts any [`azure_core::credentials::TokenCredential`] — managed identity,
/// workload identity, the Azure CLI, a chain of them from `azure_identity` —
/// into this crate's [`TokenCredential`]. Needs the feature `azure`.
///
/// The client asks it for its scope (see [`Cloud::scope`](crate::Cloud::scope))
/// and caches the tokens it returns like any other credential's.
///
/// ```no_run
/// # fn run(azure: std::sync::Arc<dyn azure_core::credentials::TokenCredential>) -> Result<(), defender_endpoint::Error> {
/// use defender_endpoint::{AzureCredential, Client};
///
/// // e.g. azure_identity::ManagedIdentityCredential::new(None)?
/// let client = Client::builder().credential(AzureCredential::new(azure)).build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "azure")))]
pub struct AzureCredential {
    inner: Arc<dyn credentials::TokenCredential>,
}

impl AzureCredential {
    /// Wraps an `azure_core` credential.
    pub fn new(credential: Arc<dyn credentials::TokenCredential>) -> Self {
        Self { inner: credential }
    }
}

impl From<Arc<dyn credentials::TokenCredential>> for AzureCredential {
    fn from(credential: Arc<dyn credentials::TokenCredential>) -> Self {
        Self::new(credential)
    }
}

/// `ClientBuilder::credential(arc)` takes any `azure_core` credential as it is.
#[cfg_attr(docsrs, doc(cfg(feature = "azure")))]
impl super::IntoCredential for Arc<dyn credentials::TokenCredential> {
    fn into_credential(self) -> Result<Arc<dyn TokenCredential>, Error> {
        Ok(Arc::new(AzureCredential::new(self)))
    }
}

impl fmt::Debug for AzureCredential {
    /// Does not show the wrapped credential, whose `Debug` this crate cannot vouch for.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureCredential")
            .field(
                "credential",
                &"<dyn azure_core::credentials::TokenCredential>",
            )
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenCredential for AzureCredential {
    async fn get_token(&self, scopes: &[&str]) -> Result<AccessToken, Error> {
        let token = self
            .inner
            .get_token(scopes, None)
            .await
            .map_err(from_azure)?;
        Ok(AccessToken {
            token: SecretString::from(token.token.secret().to_owned()),
            expires_on: to_instant(token.expires_on, OffsetDateTime::now_utc(), Instant::now()),
        })
    }
}

/// The instant on the monotonic clock that corresponds to the wall-clock time
/// `expires_on`, given that `now_wall` and `now` are the same moment. A time in
/// the past maps to `now` (the token is refreshed on next use); one beyond what
/// `Instant` can hold maps to `None` (no expiry).
pub(crate) fn to_instant(
    expires_on: OffsetDateTime,
    now_wall: OffsetDateTime,
    now: Instant,
) -> Option<Instant> {
    let remaining = expires_on - now_wall;
    if !remaining.is_positive() {
        return Some(now);
    }
    let remaining = Duration::try_from(remaining).ok()?;
    now.checked_add(remaining)
}

fn from_azure(e: azure_core::Error) -> Error {
    let (status, code) = match e.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => (Some(u16::from(*status)), error_code.clone()),
        _ => (None, None),
    };
    Error::Credential {
        message: format!(
            "the Azure credential failed: {}",
            crate::error::Shown(&e.to_string())
        ),
        status,
        code,
        description: None,
        error_codes: Vec::new(),
        trace_id: None,
        correlation_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_conversion() {
        let wall = OffsetDateTime::now_utc();
        let now = Instant::now();
        let hour = azure_core::time::Duration::hours(1);
        assert_eq!(
            to_instant(wall + hour, wall, now),
            Some(now + Duration::from_secs(3600))
        );
        assert_eq!(to_instant(wall - hour, wall, now), Some(now));
        assert_eq!(to_instant(wall, wall, now), Some(now));
    }
}
