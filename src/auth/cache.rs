//! The token cache every client puts in front of its credential.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use reqwest::header::HeaderValue;
use secrecy::ExposeSecret;

use super::{AccessToken, TokenCredential};
use crate::Error;

/// How long before expiry a token is replaced (shortened to half the lifetime of short-lived tokens).
pub(crate) const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

struct Cached {
    bearer: Bearer,
    /// When to fetch a new token; `None` = never.
    refresh_at: Option<Instant>,
}

/// A token handed out by the cache, as the `Authorization` header value that
/// carries it (`Bearer …`, marked sensitive). Made once per token, so a call
/// costs a reference count, not a copy and a check of a 2 KB token.
#[derive(Clone)]
pub(crate) struct Bearer(Arc<HeaderValue>);

impl Bearer {
    fn new(token: &str) -> Result<Self, Error> {
        if token.trim().is_empty() {
            return Err(Error::credential("the credential gave an empty token"));
        }
        let mut value = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
            Error::credential(
                "the token contains characters that are not allowed in an HTTP header",
            )
        })?;
        value.set_sensitive(true);
        Ok(Self(Arc::new(value)))
    }

    /// The `Authorization` header value.
    pub(crate) fn header(&self) -> HeaderValue {
        HeaderValue::clone(&self.0)
    }

    /// The token itself, as it travels (for scrubbing it from what the API echoes).
    pub(crate) fn secret(&self) -> std::borrow::Cow<'_, str> {
        let bytes = self.0.as_bytes();
        String::from_utf8_lossy(bytes.strip_prefix(b"Bearer ").unwrap_or(bytes))
    }

    /// Whether both came from the same fetch.
    fn same(&self, other: &Bearer) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(<redacted>)")
    }
}

/// Reuses a token until shortly before it expires; concurrent callers that find
/// no valid token share a single fetch ("single flight"). Failures are not cached.
pub(crate) struct TokenCache {
    credential: Arc<dyn TokenCredential>,
    scope: String,
    current: Mutex<Option<Cached>>,
    /// Held while fetching, so only one fetch runs at a time.
    fetch: tokio::sync::Mutex<()>,
}

impl TokenCache {
    pub(crate) fn new(credential: Arc<dyn TokenCredential>, scope: String) -> Self {
        Self {
            credential,
            scope,
            current: Mutex::new(None),
            fetch: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn scope(&self) -> &str {
        &self.scope
    }

    fn valid(&self) -> Option<Bearer> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let cached = current.as_ref()?;
        match cached.refresh_at {
            Some(at) if Instant::now() >= at => None,
            _ => Some(cached.bearer.clone()),
        }
    }

    /// A valid token, fetched only when the cached one is missing or about to expire.
    pub(crate) async fn token(&self) -> Result<Bearer, Error> {
        if let Some(token) = self.valid() {
            return Ok(token);
        }
        let _flight = self.fetch.lock().await;
        // Another caller may have fetched while this one waited.
        if let Some(token) = self.valid() {
            return Ok(token);
        }
        let fetched_at = Instant::now();
        tracing::debug!(scope = %self.scope, "requesting a token");
        let AccessToken { token, expires_on } = self.credential.get_token(&[&self.scope]).await?;
        let bearer = Bearer::new(token.expose_secret())?;
        let refresh_at = expires_on.map(|expires| {
            let lifetime = expires.saturating_duration_since(fetched_at);
            expires
                .checked_sub(REFRESH_MARGIN.min(lifetime / 2))
                .unwrap_or(fetched_at)
        });
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(Cached {
            bearer: bearer.clone(),
            refresh_at,
        });
        Ok(bearer)
    }

    /// Forgets `rejected` (a token the API refused with 401), unless it was already replaced.
    pub(crate) fn invalidate(&self, rejected: &Bearer) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|c| c.bearer.same(rejected)) {
            *current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issues tokens that expire `lifetime` after they are asked for.
    struct Lasting(Duration);

    #[async_trait::async_trait]
    impl TokenCredential for Lasting {
        async fn get_token(&self, _: &[&str]) -> Result<AccessToken, Error> {
            Ok(AccessToken::new("a-token", Instant::now() + self.0))
        }
    }

    async fn refresh_lead(lifetime: Duration) -> Duration {
        let cache = TokenCache::new(Arc::new(Lasting(lifetime)), "scope".into());
        let before = Instant::now();
        cache.token().await.unwrap();
        let after = Instant::now();
        let refresh_at = cache.current.lock().unwrap().as_ref().unwrap().refresh_at;
        let refresh_at = refresh_at.expect("an expiring token is refreshed");
        // The token expires between `before + lifetime` and `after + lifetime`.
        let lead = (before + lifetime).saturating_duration_since(refresh_at);
        assert!(refresh_at <= after + lifetime);
        lead
    }

    #[tokio::test]
    async fn a_token_is_replaced_five_minutes_before_it_expires() {
        let lead = refresh_lead(Duration::from_secs(3599)).await;
        let margin = Duration::from_secs(5 * 60);
        assert!(
            lead <= margin && lead + Duration::from_secs(1) >= margin,
            "{lead:?}"
        );
        // A token that lives less than ten minutes is replaced after half its life.
        let lead = refresh_lead(Duration::from_secs(4 * 60)).await;
        let half = Duration::from_secs(2 * 60);
        assert!(
            lead <= half && lead + Duration::from_secs(1) >= half,
            "{lead:?}"
        );
    }
}
