//! The token cache every client puts in front of its credential.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use futures_util::future::{BoxFuture, FutureExt, WeakShared};
use reqwest::header::HeaderValue;
use secrecy::ExposeSecret;
use tokio::runtime::Handle;

use super::{AccessToken, TokenCredential};
use crate::Error;

/// The longest the cache spares a token endpoint that asked (`Retry-After`).
const MAX_TOKEN_THROTTLE: Duration = Duration::from_secs(5 * 60);

/// How long before expiry a token is replaced (shortened to half the lifetime of short-lived tokens).
pub(crate) const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// After a refresh started or failed, how long the current token is used before
/// the next try (shortened to half of what is left of its life).
const REFRESH_RETRY: Duration = Duration::from_secs(30);

/// The longest a credential may take to answer the cache; after that the fetch
/// fails with [`Error::Timeout`] and the next caller starts another.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// When to try again to replace `bearer`, from now: [`REFRESH_RETRY`], or half of
/// what is left of its life if that is sooner.
fn retry_refresh_at(bearer: &Bearer) -> Instant {
    let now = Instant::now();
    let left = bearer
        .0
        .expires
        .map(|expires| expires.saturating_duration_since(now));
    now + left.map_or(REFRESH_RETRY, |left| REFRESH_RETRY.min(left / 2))
}

struct Cached {
    bearer: Bearer,
    /// When to fetch a new token; `None` = never.
    refresh_at: Option<Instant>,
}

/// A token handed out by the cache, as the `Authorization` header value that
/// carries it (`Bearer …`, marked sensitive). Made once per token, so a call
/// costs a reference count, not a copy and a check of a 2 KB token.
#[derive(Clone)]
pub(crate) struct Bearer(Arc<BearerInner>);

struct BearerInner {
    header: HeaderValue,
    /// When the token stops being valid; `None` = never.
    expires: Option<Instant>,
    /// Set when the API refused the token (401).
    rejected: std::sync::atomic::AtomicBool,
}

/// The longest token sent: far more than Entra ID issues (a few KB), and more
/// than servers take in one header.
const MAX_TOKEN_BYTES: usize = 32 * 1024;

/// `None` when `token` is an RFC 6750 `b64token`: `1*( ALPHA / DIGIT / "-" /
/// "." / "_" / "~" / "+" / "/" ) *"="`, as every Entra ID token (a JWT) is;
/// otherwise what kind of character keeps it from being one (not the
/// character itself: the token is a secret).
fn not_b64token(token: &str) -> Option<&'static str> {
    let body = token.trim_end_matches('=');
    if body.is_empty() {
        return Some("only '='");
    }
    let first = body
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || "-._~+/".contains(c)))?;
    Some(match first {
        '=' => "'=' before its end",
        c if c.is_control() => "a control character (such as a line break)",
        c if c.is_whitespace() => "white space",
        c if !c.is_ascii() => "a non-ASCII character",
        _ => "punctuation",
    })
}

impl Bearer {
    /// `expires`: when the token stops being valid; `None` = never.
    fn new(token: &str, expires: Option<Instant>) -> Result<Self, Error> {
        // White space around a token (a line break at the end of a file it was
        // read from) is not part of it.
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::credential("the credential gave an empty token"));
        }
        // Not shown: a token is a secret, whatever its shape.
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Error::credential(format!(
                "the credential gave a token of {} bytes, more than the {MAX_TOKEN_BYTES} \
                 any server takes in a header",
                token.len()
            )));
        }
        if let Some(problem) = not_b64token(token) {
            return Err(Error::credential(format!(
                "the credential gave a token that is not a bearer token (RFC 6750): it \
                 holds {problem}, where only letters, digits, '-', '.', '_', '~', '+' and '/' \
                 (then '=' at its end) may be",
            )));
        }
        let mut value = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
            Error::credential(
                "the token contains characters that are not allowed in an HTTP header",
            )
        })?;
        value.set_sensitive(true);
        Ok(Self(Arc::new(BearerInner {
            header: value,
            expires,
            rejected: Default::default(),
        })))
    }

    /// The `Authorization` header value.
    pub(crate) fn header(&self) -> HeaderValue {
        HeaderValue::clone(&self.0.header)
    }

    /// Whether the token may still be sent: not past its expiry (it may be due
    /// for a refresh) and not refused by the API.
    pub(crate) fn usable(&self) -> bool {
        !self.0.rejected.load(std::sync::atomic::Ordering::Relaxed)
            && self
                .0
                .expires
                .is_none_or(|expires| Instant::now() < expires)
    }

    /// The token itself, as it travels (for scrubbing it from what the API echoes).
    pub(crate) fn secret(&self) -> std::borrow::Cow<'_, str> {
        let bytes = self.0.header.as_bytes();
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
/// no valid token share a single fetch ("single flight"), and its outcome: a
/// failure reaches every caller that waited for it, and is not cached, unless
/// the token endpoint asked (429 or 503 with `Retry-After`) to be spared: then
/// callers get it without a request until then (five minutes at most).
///
/// The fetch is a shared future, run as a task of the runtime and driven by
/// every waiting caller too, so a caller that stops being polled holds up no
/// one, and one that gives up (its attempt timed out) does not cut it short: the
/// next caller finds it under way. It ends within [`FETCH_TIMEOUT`], and the
/// next caller then starts a new one. Callers on another runtime than the one
/// the fetch runs on share one of their own (see [`Flight`]); a fetch that ends
/// after a later one stored its token stores nothing. Dropping the cache stops
/// its fetches.
pub(crate) struct TokenCache {
    credential: Arc<dyn TokenCredential>,
    scope: Arc<str>,
    state: Arc<Mutex<State>>,
    /// [`FETCH_TIMEOUT`], shorter in tests.
    fetch_timeout: Duration,
}

#[derive(Default)]
struct State {
    current: Option<Cached>,
    /// The number of the fetch `current` came from.
    current_from: Option<u64>,
    /// The fetches under way, one at most for each runtime.
    flights: Vec<Flight>,
    /// The number of the next fetch.
    fetches: u64,
    /// The token endpoint asked (`Retry-After`) not to be asked again before this
    /// time; until then callers get its refusal without a request.
    throttled: Option<(Instant, Error)>,
    /// The token endpoint's 429 answers that no call has waited out yet: each
    /// is counted in [`ClientStats::throttled`](crate::ClientStats::throttled)
    /// by the first call that does (one no call waits out is counted by the
    /// next call that waits out another).
    uncounted_429: u64,
}

tokio::task_local! {
    /// The `Retry-After` of the token endpoint's last answer, set by the app
    /// credentials while a fetch of the cache awaits them.
    pub(crate) static RETRY_AFTER: std::cell::Cell<Option<Duration>>;
}

type Fetch = BoxFuture<'static, Result<Bearer, Error>>;

/// A fetch under way, and the runtime it runs on: its timers and sockets are
/// that runtime's, so only callers on the same runtime join it (another runtime
/// may be idle, or shut down while they wait).
struct Flight {
    /// Its number: fetches are numbered in the order they start.
    number: u64,
    runtime: Option<tokio::runtime::Id>,
    fetch: Option<WeakShared<Fetch>>,
    /// The task that runs it, stopped when the cache is dropped.
    task: Option<tokio::task::AbortHandle>,
    /// When it started: one older than the fetch timeout (its runtime ran too
    /// little since) is not joined.
    started: Instant,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    fn valid(&self) -> Option<Bearer> {
        let cached = self.current.as_ref()?;
        match cached.refresh_at {
            Some(at) if Instant::now() >= at => None,
            _ => Some(cached.bearer.clone()),
        }
    }
}

impl TokenCache {
    pub(crate) fn new(credential: Arc<dyn TokenCredential>, scope: String) -> Self {
        Self {
            credential,
            scope: scope.into(),
            state: Arc::default(),
            fetch_timeout: FETCH_TIMEOUT,
        }
    }

    pub(crate) fn scope(&self) -> &str {
        &self.scope
    }

    /// The cached token, if it is still valid; never fetches.
    pub(crate) fn cached(&self) -> Option<Bearer> {
        lock(&self.state).valid()
    }

    /// A valid token, fetched only when the cached one is missing or about to expire.
    ///
    /// A token due for a refresh but not yet expired is handed out at once, while
    /// a fetch of its own, run as a task of the runtime, replaces it: callers do
    /// not wait for the token endpoint, and a failed refresh fails no call while
    /// the token lasts (it is tried again a little later; see `fetch`).
    pub(crate) async fn token(&self) -> Result<Bearer, Error> {
        let runtime = Handle::try_current().ok();
        let (flight, started, due) = {
            let mut state = lock(&self.state);
            if let Some(token) = state.valid() {
                return Ok(token);
            }
            let due = state
                .current
                .as_ref()
                .map(|cached| cached.bearer.clone())
                .filter(Bearer::usable);
            if let Some((until, error)) = &state.throttled {
                if Instant::now() < *until {
                    return due.ok_or_else(|| error.clone());
                }
                state.throttled = None;
            }
            // Fetches whose runtime has gone (and dropped them) are forgotten.
            state
                .flights
                .retain(|f| f.fetch.as_ref().is_some_and(|w| w.upgrade().is_some()));
            let here = runtime.as_ref().map(Handle::id);
            let joined = state
                .flights
                .iter()
                .filter(|flight| flight.runtime == here)
                .filter(|flight| flight.started.elapsed() < self.fetch_timeout)
                .find_map(|flight| flight.fetch.as_ref()?.upgrade());
            match joined {
                Some(flight) => (flight, false, due),
                None => {
                    let number = state.fetches;
                    state.fetches += 1;
                    let flight = self.fetch(number, state.current_from).shared();
                    // A fetch runs as a task of its own, to its end (`FETCH_TIMEOUT`
                    // at most), whoever waits for it: a caller whose attempt timed
                    // out does not cut it short, so the next attempt finds it under
                    // way or its token cached. (Not in the caller's span, which
                    // would then stay open until the fetch ends.)
                    let task = runtime
                        .as_ref()
                        .map(|runtime| runtime.spawn(flight.clone().map(drop)).abort_handle());
                    state.flights.push(Flight {
                        number,
                        runtime: here,
                        fetch: flight.downgrade(),
                        task,
                        started: Instant::now(),
                    });
                    if let (Some(_), Some(current)) = (&due, state.current.as_mut()) {
                        // The next refresh is not before a little later, even if
                        // this one is cut short (its runtime shut down): calls in
                        // between take the current token without starting another.
                        current.refresh_at = Some(retry_refresh_at(&current.bearer));
                    }
                    (flight, true, due)
                }
            }
        };
        let running = started && runtime.is_some();
        match due {
            None => flight.await,
            Some(due) if running || !started => Ok(due),
            // Outside a Tokio runtime: the caller runs the fetch, and goes on with
            // the token it has if the fetch fails.
            Some(due) => Ok(flight.await.unwrap_or(due)),
        }
    }

    /// One request to the credential; stores the token it gets.
    ///
    /// `number` is the fetch's, and `replacing` that of the fetch the current
    /// token came from: a failure acts on the current token only if it is still
    /// that one, not one a fetch that started before stored meanwhile.
    fn fetch(&self, number: u64, replacing: Option<u64>) -> Fetch {
        let (credential, scope, state, timeout) = (
            self.credential.clone(),
            self.scope.clone(),
            Arc::downgrade(&self.state),
            self.fetch_timeout,
        );
        Box::pin(async move {
            let fetched_at = Instant::now();
            tracing::debug!(scope = %scope, "requesting a token");
            let (outcome, retry_after) = RETRY_AFTER
                .scope(std::cell::Cell::new(None), async {
                    // Bounded: a credential that never answers holds up no one for
                    // good (in a runtime, whose timers this needs).
                    let scopes = [&*scope];
                    // A credential that panics fails this fetch, not every caller
                    // waiting for it (the fetch is shared).
                    let get = async {
                        use futures_util::FutureExt;
                        std::panic::AssertUnwindSafe(credential.get_token(&scopes))
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|_| {
                                Err(Error::credential(
                                    "the credential panicked while fetching a token",
                                ))
                            })
                    };
                    let outcome = match Handle::try_current() {
                        Ok(_) => tokio::time::timeout(timeout, get)
                            .await
                            .unwrap_or(Err(Error::Timeout)),
                        Err(_) => get.await,
                    };
                    (outcome, RETRY_AFTER.with(std::cell::Cell::get))
                })
                .await;
            let outcome = outcome.and_then(|token| {
                let AccessToken { token, expires_on } = token;
                let bearer = Bearer::new(token.expose_secret(), expires_on)?;
                let refresh_at = expires_on.map(|expires| {
                    let lifetime = expires.saturating_duration_since(fetched_at);
                    expires
                        .checked_sub(REFRESH_MARGIN.min(lifetime / 2))
                        .unwrap_or(fetched_at)
                });
                Ok(Cached { bearer, refresh_at })
            });
            let Some(state) = state.upgrade() else {
                return outcome.map(|cached| cached.bearer);
            };
            let mut state = lock(&state);
            if let Err(Error::Credential {
                status: Some(429), ..
            }) = &outcome
            {
                state.uncounted_429 += 1;
            }
            // This fetch is over: the next caller without a valid token starts another.
            state.flights.retain(|f| f.number != number);
            // This fetch's outcome goes to its own callers only when a fetch that
            // started later has stored its token, and, for a failure, when any
            // other fetch has stored one since this one started (the failure says
            // nothing about that token).
            let later_stored = state.current_from.is_some_and(|from| from > number);
            let replaced_meanwhile = state.current_from != replacing;
            if later_stored || (outcome.is_err() && replaced_meanwhile) {
                return outcome.map(|cached| cached.bearer);
            }
            if let Err(error) = &outcome {
                // A failed refresh: the current token, while it lasts, serves until
                // the next try, a little later, so that a token endpoint that is down
                // gets one request every half minute, not one a call.
                if let Some(current) = state.current.as_mut().filter(|c| c.bearer.usable()) {
                    let next = retry_refresh_at(&current.bearer);
                    current.refresh_at = Some(next);
                    tracing::warn!(
                        error = %error,
                        retry_in_ms = next.saturating_duration_since(Instant::now()).as_millis() as u64,
                        "refreshing the token failed; the current one is used while it lasts"
                    );
                }
            }
            if let (Err(error), Some(wait)) = (&outcome, retry_after) {
                // Shared by every caller, so that many of them do not multiply the
                // requests the token endpoint asked to be spared; for a few minutes
                // at most, so that no answer can stop the client for good.
                if let Some(until) = Instant::now().checked_add(wait.min(MAX_TOKEN_THROTTLE)) {
                    state.throttled = Some((until, error.clone()));
                }
            }
            let cached = outcome?;
            let bearer = cached.bearer.clone();
            state.current = Some(cached);
            state.current_from = Some(number);
            // The endpoint answered: whatever it asked before is over.
            state.throttled = None;
            Ok(bearer)
        })
    }

    /// A call waited as the token endpoint's 429 asked: whether an answer is
    /// left for it to count (so that each is counted once).
    pub(crate) fn waited_on_429(&self) -> bool {
        let mut state = lock(&self.state);
        let left = state.uncounted_429 > 0;
        state.uncounted_429 = state.uncounted_429.saturating_sub(1);
        left
    }

    /// How long the token endpoint asked (`Retry-After`) not to be asked again,
    /// from now; `None` when it did not, or that time has passed.
    pub(crate) fn throttled_for(&self) -> Option<Duration> {
        let state = lock(&self.state);
        let (until, _) = state.throttled.as_ref()?;
        Some(until.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
    }

    /// Forgets `rejected` (a token the API refused with 401), unless it was already replaced.
    pub(crate) fn invalidate(&self, rejected: &Bearer) {
        rejected
            .0
            .rejected
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut state = lock(&self.state);
        if state
            .current
            .as_ref()
            .is_some_and(|c| c.bearer.same(rejected))
        {
            state.current = None;
        }
    }
}

impl Drop for TokenCache {
    /// Stops the fetches under way: nothing is left to store their tokens, and
    /// their tasks would keep the credential alive.
    fn drop(&mut self) {
        for flight in lock(&self.state).flights.drain(..) {
            if let Some(task) = flight.task {
                task.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rfc_6750_tokens_of_sane_size_are_sent() {
        let expires = None;
        for token in ["eyJ0eXAi.eyJhdWQi.c2ln-_~+/", "abc==", "tok", "a.b.c"] {
            assert!(Bearer::new(token, expires).is_ok(), "{token}");
        }
        // White space around a token is not part of it.
        let padded = Bearer::new(" tok\n", expires).unwrap();
        assert_eq!(padded.header().to_str().unwrap(), "Bearer tok");
        for (token, kind) in [
            ("abc def", "holds white space,"),
            ("abc\u{a0}def", "holds white space,"),
            ("abc\tdef", "holds a control character"),
            ("tok\r\nX: y", "holds a control character"),
            ("t\u{f6}k", "holds a non-ASCII character,"),
            ("a,b", "holds punctuation,"),
            ("=", "holds only '=',"),
            ("abc=def", "holds '=' before its end,"),
            ("a\nb", "holds a control character"),
        ] {
            let err = Bearer::new(token, expires).unwrap_err().to_string();
            assert!(
                err.contains("not a bearer token (RFC 6750)") && err.contains(kind),
                "{token:?}: {err}"
            );
        }
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        let err = Bearer::new(&huge, expires).unwrap_err().to_string();
        assert!(err.contains("32769 bytes"), "{err}");
        assert!(!err.contains("aaaa"), "{err}");
        assert!(Bearer::new(&huge[1..], expires).is_ok());
    }

    /// Refuses, asking (as the app credentials report a `Retry-After`) to be
    /// spared for `0`; counts the requests in `1`.
    struct Busy(Duration, std::sync::atomic::AtomicUsize);

    #[async_trait::async_trait]
    impl TokenCredential for Busy {
        async fn get_token(&self, _: &[&str]) -> Result<AccessToken, Error> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = RETRY_AFTER.try_with(|r| r.set(Some(self.0)));
            Err(Error::credential("busy"))
        }
    }

    /// However long the token endpoint asks to be spared, a few minutes at most:
    /// no answer can stop a client for good.
    #[tokio::test]
    async fn a_token_endpoint_is_spared_for_five_minutes_at_most() {
        for asked in [
            Duration::from_secs(2),
            Duration::from_secs(99_999_999),
            Duration::from_secs(u64::MAX),
        ] {
            let busy = Arc::new(Busy(asked, Default::default()));
            let cache = TokenCache::new(busy.clone(), "scope".into());
            assert!(cache.token().await.is_err());
            let spared = cache.throttled_for().expect("spared");
            assert!(
                spared <= asked.min(MAX_TOKEN_THROTTLE),
                "{asked:?}: {spared:?}"
            );
            assert!(spared > asked.min(MAX_TOKEN_THROTTLE) - Duration::from_secs(1));
            // Until then, the refusal without a request.
            assert!(cache.token().await.is_err());
            assert_eq!(busy.1.load(std::sync::atomic::Ordering::SeqCst), 1);
        }
    }

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
        let refresh_at = lock(&cache.state).current.as_ref().unwrap().refresh_at;
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

    /// Answers its calls in turn: after a delay, a token `n` (the call's number)
    /// lasting the given time, or (`None`) an error; counts its calls.
    struct Turns(
        Vec<(Duration, Option<Duration>)>,
        std::sync::atomic::AtomicUsize,
    );

    #[async_trait::async_trait]
    impl TokenCredential for Turns {
        async fn get_token(&self, _: &[&str]) -> Result<AccessToken, Error> {
            let n = self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (delay, lifetime) = self.0[n.min(self.0.len() - 1)];
            tokio::time::sleep(delay).await;
            let lifetime = lifetime.ok_or_else(|| Error::credential("the endpoint is down"))?;
            Ok(AccessToken::new(
                format!("token-{n}"),
                Instant::now() + lifetime,
            ))
        }
    }

    impl Turns {
        fn calls(&self) -> usize {
            self.1.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// A token due for a refresh is handed out at once while the refresh runs; the
    /// refreshed one follows.
    #[tokio::test]
    async fn a_token_due_for_a_refresh_is_used_while_it_is_refreshed() {
        let turns = Arc::new(Turns(
            vec![(ms(0), Some(ms(4_000))), (ms(3_000), Some(ms(3_600_000)))],
            Default::default(),
        ));
        let cache = TokenCache::new(turns.clone(), "scope".into());
        assert_eq!(cache.token().await.unwrap().secret(), "token-0");
        // Past half its life: due, not expired.
        tokio::time::sleep(ms(2_100)).await;
        let asked = Instant::now();
        for _ in 0..5 {
            assert_eq!(cache.token().await.unwrap().secret(), "token-0");
        }
        // Well before the refresh (3 s) ends.
        assert!(asked.elapsed() < ms(2_000), "{:?}", asked.elapsed());
        tokio::time::sleep(ms(3_500)).await;
        // Refreshed meanwhile: no wait for it now either.
        let asked = Instant::now();
        assert_eq!(cache.token().await.unwrap().secret(), "token-1");
        assert!(asked.elapsed() < ms(1_500), "{:?}", asked.elapsed());
        assert_eq!(turns.calls(), 2);
    }

    /// A refresh whose credential never answers ends at the fetch timeout: once
    /// the token expires, the next caller fetches anew instead of joining it.
    #[tokio::test]
    async fn a_refresh_that_never_ends_is_given_up() {
        let turns = Arc::new(Turns(
            vec![
                (ms(0), Some(ms(2_000))),
                (ms(3_600_000), None),
                (ms(0), Some(ms(3_600_000))),
            ],
            Default::default(),
        ));
        let mut cache = TokenCache::new(turns.clone(), "scope".into());
        cache.fetch_timeout = ms(1_000);
        assert_eq!(cache.token().await.unwrap().secret(), "token-0");
        tokio::time::sleep(ms(1_100)).await;
        assert_eq!(cache.token().await.unwrap().secret(), "token-0");
        // Expired, and the refresh given up.
        tokio::time::sleep(ms(1_300)).await;
        let token = tokio::time::timeout(ms(5_000), cache.token()).await;
        assert_eq!(token.expect("not stuck").unwrap().secret(), "token-2");
        assert_eq!(turns.calls(), 3);
    }

    /// A refresh cut short by the end of its runtime (a runtime per call) is not
    /// started again by every call that follows.
    #[test]
    fn a_refresh_cut_short_by_its_runtime_is_not_restarted_by_every_call() {
        let turns = Arc::new(Turns(
            vec![(ms(0), Some(ms(6_000))), (ms(300), Some(ms(3_600_000)))],
            Default::default(),
        ));
        let cache = TokenCache::new(turns.clone(), "scope".into());
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        assert_eq!(
            runtime().block_on(cache.token()).unwrap().secret(),
            "token-0"
        );
        std::thread::sleep(ms(3_100));
        for _ in 0..8 {
            // The runtime lives on a little after the call, long enough for a
            // refresh to start, not to end.
            let token = runtime().block_on(async {
                let token = cache.token().await;
                tokio::time::sleep(ms(20)).await;
                token
            });
            assert_eq!(token.unwrap().secret(), "token-0");
        }
        assert_eq!(turns.calls(), 2);
    }

    /// A refresh that fails only after the first delay has passed moves the next
    /// try on again: calls after the failure do not start another at once.
    #[tokio::test]
    async fn a_refresh_that_fails_late_is_not_tried_again_at_once() {
        let turns = Arc::new(Turns(
            vec![(ms(0), Some(ms(8_000))), (ms(2_500), None)],
            Default::default(),
        ));
        let cache = TokenCache::new(turns.clone(), "scope".into());
        cache.token().await.unwrap();
        tokio::time::sleep(ms(4_100)).await;
        // The refresh starts, and fails at about 6.6 s.
        assert_eq!(cache.token().await.unwrap().secret(), "token-0");
        tokio::time::sleep(ms(2_700)).await;
        assert_eq!(cache.token().await.unwrap().secret(), "token-0");
        tokio::time::sleep(ms(50)).await;
        assert_eq!(turns.calls(), 2);
    }

    /// A caller that finds the token due while a refresh is under way takes the
    /// token it has, without waiting for the refresh.
    #[tokio::test]
    async fn a_caller_during_a_refresh_does_not_wait_for_it() {
        let turns = Arc::new(Turns(
            vec![(ms(0), Some(ms(4_000))), (ms(3_000), Some(ms(3_600_000)))],
            Default::default(),
        ));
        let cache = TokenCache::new(turns.clone(), "scope".into());
        cache.token().await.unwrap();
        tokio::time::sleep(ms(2_100)).await;
        assert_eq!(cache.token().await.unwrap().secret(), "token-0");
        // Past the point the refresh moved on (about 3 s), before it ends (5.1 s)
        // and before the token expires (4 s).
        tokio::time::sleep(ms(1_200)).await;
        let asked = Instant::now();
        assert_eq!(cache.token().await.unwrap().secret(), "token-0");
        assert!(asked.elapsed() < ms(500), "{:?}", asked.elapsed());
        assert_eq!(turns.calls(), 2);
    }

    /// A fetch runs on the runtime of the caller that started it: a caller on
    /// another runtime (which may be idle, or shut down) starts one of its own
    /// instead of joining it.
    #[test]
    fn callers_on_another_runtime_do_not_join_a_fetch() {
        let turns = Arc::new(Turns(
            vec![(ms(3_600_000), None), (ms(0), Some(ms(3_600_000)))],
            Default::default(),
        ));
        let cache = Arc::new(TokenCache::new(turns.clone(), "scope".into()));
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        // A runtime that starts a fetch and is then left idle.
        let idle = runtime();
        let gave_up = idle.block_on(async { tokio::time::timeout(ms(100), cache.token()).await });
        assert!(gave_up.is_err());
        let token =
            runtime().block_on(async { tokio::time::timeout(ms(5_000), cache.token()).await });
        assert_eq!(token.expect("not stuck").unwrap().secret(), "token-1");
        assert_eq!(turns.calls(), 2);
    }

    fn worker() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    /// The callers of each runtime share one fetch, however their calls
    /// alternate between runtimes.
    #[test]
    fn the_callers_of_each_runtime_share_one_fetch() {
        let turns = Arc::new(Turns(
            vec![(ms(1_000), Some(ms(3_600_000)))],
            Default::default(),
        ));
        let cache = Arc::new(TokenCache::new(turns.clone(), "scope".into()));
        let (a, b) = (worker(), worker());
        let calls: Vec<_> = (0..10)
            .map(|i| {
                let cache = cache.clone();
                let call = [&a, &b][i % 2].spawn(async move { cache.token().await });
                std::thread::sleep(ms(20));
                call
            })
            .collect();
        for call in calls {
            assert!(a.block_on(call).unwrap().is_ok());
        }
        assert!(turns.calls() <= 2, "{} token requests", turns.calls());
    }

    /// A fetch that ends after a later one stored its token stores nothing: not
    /// its older token, and not, when it failed, a nearer refresh.
    #[test]
    fn a_fetch_that_ends_after_a_later_one_stores_nothing() {
        for first in [Some(ms(3_600_000)), None] {
            let turns = Arc::new(Turns(
                vec![(ms(1_500), first), (ms(0), Some(ms(3_600_000)))],
                Default::default(),
            ));
            let cache = Arc::new(TokenCache::new(turns.clone(), "scope".into()));
            let (a, b) = (worker(), worker());
            let gave_up = a.block_on(async { tokio::time::timeout(ms(100), cache.token()).await });
            assert!(gave_up.is_err());
            assert_eq!(b.block_on(cache.token()).unwrap().secret(), "token-1");
            // The first fetch ends.
            std::thread::sleep(ms(2_000));
            assert_eq!(turns.calls(), 2);
            assert_eq!(cache.cached().unwrap().secret(), "token-1", "{first:?}");
            let refresh_at = lock(&cache.state).current.as_ref().unwrap().refresh_at;
            assert!(refresh_at.unwrap() > Instant::now() + Duration::from_secs(600));
        }
    }

    /// Answers its calls in turn: after a delay, a token lasting the given time,
    /// or an error that asks (as `Retry-After`) to be spared for the given time.
    struct Script(
        Vec<(Duration, Result<Duration, Duration>)>,
        std::sync::atomic::AtomicUsize,
    );

    #[async_trait::async_trait]
    impl TokenCredential for Script {
        async fn get_token(&self, _: &[&str]) -> Result<AccessToken, Error> {
            let n = self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (delay, answer) = self.0[n.min(self.0.len() - 1)];
            tokio::time::sleep(delay).await;
            match answer {
                Ok(lifetime) => Ok(AccessToken::new(
                    format!("token-{n}"),
                    Instant::now() + lifetime,
                )),
                Err(wait) => {
                    let _ = RETRY_AFTER.try_with(|r| r.set(Some(wait)));
                    Err(Error::credential("busy"))
                }
            }
        }
    }

    /// Starts `cache.token()` on `a`, and a little later on `b`, and waits until
    /// both fetches have ended.
    fn fetch_on_two_runtimes(cache: &Arc<TokenCache>) {
        let (a, b) = (worker(), worker());
        let first = cache.clone();
        let first = a.spawn(async move { first.token().await });
        std::thread::sleep(ms(50));
        let second = cache.clone();
        let second = b.spawn(async move { second.token().await });
        let _ = a.block_on(first);
        let _ = b.block_on(second);
        std::thread::sleep(ms(100));
    }

    /// A fetch that fails after one that started before it stored a token says
    /// nothing about that token: no nearer refresh, no `Retry-After`.
    #[test]
    fn a_failure_after_an_earlier_fetch_stored_its_token_changes_nothing() {
        let script = Arc::new(Script(
            vec![
                (ms(500), Ok(ms(3_600_000))),
                (ms(1_500), Err(Duration::from_secs(300))),
            ],
            Default::default(),
        ));
        let cache = Arc::new(TokenCache::new(script.clone(), "scope".into()));
        fetch_on_two_runtimes(&cache);
        assert_eq!(cache.cached().unwrap().secret(), "token-0");
        assert_eq!(cache.throttled_for(), None);
        let refresh_at = lock(&cache.state).current.as_ref().unwrap().refresh_at;
        assert!(refresh_at.unwrap() > Instant::now() + Duration::from_secs(600));
    }

    /// A token stored ends a `Retry-After` an earlier failure set.
    #[test]
    fn a_token_ends_the_wait_a_failure_asked_for() {
        let script = Arc::new(Script(
            vec![
                (ms(1_500), Ok(ms(3_600_000))),
                (ms(0), Err(Duration::from_secs(300))),
            ],
            Default::default(),
        ));
        let cache = Arc::new(TokenCache::new(script.clone(), "scope".into()));
        fetch_on_two_runtimes(&cache);
        assert_eq!(cache.cached().unwrap().secret(), "token-0");
        assert_eq!(cache.throttled_for(), None);
    }

    /// A fetch started on a runtime that then ran too little to end it (a runtime
    /// driven only during calls) is not joined once the fetch timeout has passed.
    #[test]
    fn a_fetch_older_than_the_fetch_timeout_is_not_joined() {
        let turns = Arc::new(Turns(
            vec![
                (ms(0), Some(ms(3_000))),
                (ms(3_600_000), Some(ms(3_600_000))),
                (ms(200), Some(ms(3_600_000))),
            ],
            Default::default(),
        ));
        let mut cache = TokenCache::new(turns.clone(), "scope".into());
        cache.fetch_timeout = ms(1_000);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(cache.token()).unwrap();
        std::thread::sleep(ms(1_600));
        // Due: the refresh starts, and the runtime stops running after 50 ms.
        runtime
            .block_on(async {
                let token = cache.token().await;
                tokio::time::sleep(ms(50)).await;
                token
            })
            .unwrap();
        // Expired, and the refresh older than the fetch timeout.
        std::thread::sleep(ms(2_000));
        let token = runtime.block_on(cache.token());
        assert_eq!(token.unwrap().secret(), "token-2");
    }

    /// Fetches whose runtime has gone are forgotten, not kept one per runtime.
    #[test]
    fn fetches_of_runtimes_that_are_gone_are_forgotten() {
        let turns = Arc::new(Turns(
            vec![(ms(300), Some(ms(3_600_000)))],
            Default::default(),
        ));
        let cache = TokenCache::new(turns.clone(), "scope".into());
        for _ in 0..5 {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let gave_up =
                runtime.block_on(async { tokio::time::timeout(ms(50), cache.token()).await });
            assert!(gave_up.is_err());
        }
        assert!(lock(&cache.state).flights.len() <= 1);
    }

    /// A refresh runs outside the span of the call that started it, which would
    /// otherwise stay open until the refresh ends.
    #[test]
    fn a_refresh_runs_outside_the_callers_span() {
        struct Spans(Mutex<Vec<Option<tracing::Id>>>);
        #[async_trait::async_trait]
        impl TokenCredential for Spans {
            async fn get_token(&self, _: &[&str]) -> Result<AccessToken, Error> {
                self.0.lock().unwrap().push(tracing::Span::current().id());
                Ok(AccessToken::new("t", Instant::now() + ms(2_000)))
            }
        }
        use tracing::Instrument;
        let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry());
        let spans = Arc::new(Spans(Mutex::default()));
        let cache = TokenCache::new(spans.clone(), "scope".into());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            cache.token().await.unwrap();
            tokio::time::sleep(ms(1_100)).await;
            // Due: handed out, and refreshed by a task of its own.
            let call = tracing::info_span!("call");
            cache.token().instrument(call).await.unwrap();
            tokio::time::sleep(ms(100)).await;
        });
        let seen = spans.0.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1], None);
    }

    /// A 401 for a token already replaced forgets nothing.
    #[tokio::test]
    async fn a_late_refusal_of_a_replaced_token_forgets_nothing() {
        let turns = Arc::new(Turns(
            vec![(ms(0), Some(ms(3_600_000)))],
            Default::default(),
        ));
        let cache = TokenCache::new(turns.clone(), "scope".into());
        let first = cache.token().await.unwrap();
        cache.invalidate(&first);
        assert_eq!(cache.token().await.unwrap().secret(), "token-1");
        cache.invalidate(&first);
        assert_eq!(cache.cached().unwrap().secret(), "token-1");
        assert_eq!(turns.calls(), 2);
    }

    /// Dropping the cache (the last clone of its client) stops its fetches.
    #[test]
    fn dropping_the_cache_stops_its_fetches() {
        struct Finishing(std::sync::atomic::AtomicUsize);
        #[async_trait::async_trait]
        impl TokenCredential for Finishing {
            async fn get_token(&self, _: &[&str]) -> Result<AccessToken, Error> {
                tokio::time::sleep(ms(1_000)).await;
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(AccessToken::never_expires("t"))
            }
        }
        let credential = Arc::new(Finishing(Default::default()));
        let cache = TokenCache::new(credential.clone(), "scope".into());
        let runtime = worker();
        let gave_up =
            runtime.block_on(async { tokio::time::timeout(ms(100), cache.token()).await });
        assert!(gave_up.is_err());
        drop(cache);
        std::thread::sleep(ms(1_500));
        assert_eq!(credential.0.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(Arc::strong_count(&credential), 1);
    }

    /// Outside a Tokio runtime the caller runs the fetch itself.
    #[test]
    fn outside_a_runtime_the_caller_runs_the_fetch() {
        let cache = TokenCache::new(Arc::new(Lasting(ms(3_600_000))), "scope".into());
        let mut call = Box::pin(cache.token());
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match std::future::Future::poll(call.as_mut(), &mut context) {
            std::task::Poll::Ready(token) => assert!(token.unwrap().usable()),
            std::task::Poll::Pending => panic!("a credential that answers at once"),
        }
    }

    /// A failed refresh fails no call while the token lasts, and is tried again
    /// a little later, not on every call; once the token expires, calls get the error.
    #[tokio::test]
    async fn a_failed_refresh_keeps_the_token_while_it_lasts() {
        let turns = Arc::new(Turns(
            vec![(ms(0), Some(ms(6_000))), (ms(0), None)],
            Default::default(),
        ));
        let cache = TokenCache::new(turns.clone(), "scope".into());
        assert_eq!(cache.token().await.unwrap().secret(), "token-0");
        tokio::time::sleep(ms(3_100)).await;
        assert_eq!(cache.token().await.unwrap().secret(), "token-0");
        tokio::time::sleep(ms(50)).await;
        assert_eq!(turns.calls(), 2);
        for _ in 0..20 {
            assert_eq!(cache.token().await.unwrap().secret(), "token-0");
            // Time for a refresh a call might have started to run.
            tokio::time::sleep(ms(10)).await;
        }
        // Tried again after half of what was left (about 1.4 s), not 20 times.
        assert_eq!(turns.calls(), 2);
        tokio::time::sleep(ms(3_000)).await;
        assert!(cache.token().await.is_err());
        assert!(turns.calls() >= 3);
    }

    /// Answers after `delay`, with a token or (`fail`) an error; counts its calls.
    struct Slow {
        delay: Duration,
        fail: bool,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl Slow {
        fn new(delay_secs: u64, fail: bool) -> Arc<Self> {
            Arc::new(Self {
                delay: Duration::from_secs(delay_secs),
                fail,
                calls: Default::default(),
            })
        }

        fn calls(&self) -> usize {
            self.calls.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[async_trait::async_trait]
    impl TokenCredential for Slow {
        async fn get_token(&self, _: &[&str]) -> Result<AccessToken, Error> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            if self.fail {
                return Err(Error::credential("no token today"));
            }
            Ok(AccessToken::new(
                "a-token",
                Instant::now() + Duration::from_secs(3600),
            ))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn callers_waiting_for_a_failed_fetch_all_get_its_error() {
        let credential = Slow::new(1, true);
        let cache = Arc::new(TokenCache::new(credential.clone(), "scope".into()));
        let callers: Vec<_> = (0..10)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.token().await })
            })
            .collect();
        for caller in callers {
            let err = caller.await.unwrap().unwrap_err();
            assert!(err.to_string().contains("no token today"), "{err}");
        }
        assert_eq!(credential.calls(), 1);
        // A failure is not kept: the next caller asks again.
        assert!(cache.token().await.is_err());
        assert_eq!(credential.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_is_not_polled_holds_up_no_one() {
        let credential = Slow::new(5, false);
        let cache = TokenCache::new(credential.clone(), "scope".into());
        // Starts the fetch, and is then left alone.
        let mut parked = Box::pin(cache.token());
        let polled = tokio::time::timeout(Duration::from_millis(1), &mut parked).await;
        assert!(polled.is_err());
        // Another caller drives the same fetch to its end.
        let started = tokio::time::Instant::now();
        cache.token().await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(6));
        assert_eq!(credential.calls(), 1);
        parked.await.unwrap();
        assert_eq!(credential.calls(), 1);
    }

    /// A caller that gives up (its attempt timed out) does not cut the fetch
    /// short: the next caller finds it under way, and no second request is made.
    #[tokio::test(start_paused = true)]
    async fn a_fetch_goes_on_when_its_caller_gives_up() {
        let credential = Slow::new(5, false);
        let cache = TokenCache::new(credential.clone(), "scope".into());
        let gave_up = tokio::time::timeout(Duration::from_secs(1), cache.token()).await;
        assert!(gave_up.is_err());
        let started = tokio::time::Instant::now();
        cache.token().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(credential.calls(), 1);
        // Which is then reused.
        cache.token().await.unwrap();
        assert_eq!(credential.calls(), 1);
    }

    /// A credential that never answers fails its fetch after the fetch timeout,
    /// and the next caller starts another.
    #[tokio::test(start_paused = true)]
    async fn a_credential_that_never_answers_holds_up_no_one_for_good() {
        let credential = Slow::new(3_600, false);
        let mut cache = TokenCache::new(credential.clone(), "scope".into());
        cache.fetch_timeout = Duration::from_secs(2);
        let started = tokio::time::Instant::now();
        assert!(matches!(cache.token().await, Err(Error::Timeout)));
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(matches!(cache.token().await, Err(Error::Timeout)));
        assert_eq!(credential.calls(), 2);
    }

    #[tokio::test]
    async fn a_token_the_api_refused_is_not_usable() {
        let cache = TokenCache::new(Arc::new(Lasting(Duration::from_secs(3600))), "s".into());
        let token = cache.token().await.unwrap();
        assert!(token.usable());
        cache.invalidate(&token);
        assert!(!token.usable());
        assert!(cache.cached().is_none());
        assert!(cache.token().await.unwrap().usable());
    }
}
