//! Retry policy: which failures are retried, how long to wait, when to give up.

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    time::{Duration, SystemTime},
};

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// How failed calls are retried.
///
/// Retried: 429 (after what `Retry-After` asks), 500, 502, 503 (after its
/// `Retry-After`, when it sends one), 504, connection
/// errors and timeouts; also a 429, 500, 502, 503 or 504 from the token
/// endpoint (after its `Retry-After`, or the backoff). Never retried: other 4xx (a 401 gets one token refresh and
/// one retry of its own). Between 5xx attempts the client waits an exponential
/// backoff with full jitter: a random time up to `min(max_delay, base_delay × 2ⁿ)`;
/// so it does after a 429 without a `Retry-After` it can read, each call
/// drawing its own.
///
/// The default: 4 attempts in all, a 60 s budget for the whole call, base delay
/// 0.5 s, maximum delay 30 s. If `Retry-After` asks for more than the budget has
/// left, or for more than a day whatever the budget, the call returns at once:
/// [`Error::Throttled`](crate::Error::Throttled) after a 429,
/// [`Error::Api`](crate::Error::Api) after a 503.
/// A `Retry-After` of the API holds for every call of the client (and of its
/// clones, and calls through [`Client::raw`](crate::Client::raw)): until it has passed (five minutes at most), each call waits before
/// sending when the wait ends within its budget, or returns at once with what
/// is left of the wait the API asked for (a day at most): `Throttled` after a
/// 429, `Error::Api` (503, "not sent: …") after a 503. After a wait, the request gets at least
/// a second, as every attempt does.
/// Time spent waiting for the client-side quota ([`RateLimit`](crate::RateLimit))
/// does not count against the budget.
///
/// ```
/// use std::time::Duration;
/// use defender_endpoint::RetryPolicy;
///
/// let patient = RetryPolicy::default()
///     .max_attempts(6)
///     .budget(Duration::from_secs(300));
/// let never = RetryPolicy::none();
/// # let _ = (patient, never);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a policy applies only once given to `ClientBuilder::retry`"]
pub struct RetryPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) budget: Duration,
    pub(crate) base_delay: Duration,
    pub(crate) max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            budget: Duration::from_secs(60),
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retries.
    pub fn none() -> Self {
        Self::default().max_attempts(1)
    }

    /// Attempts in all for each request, the first included (at least 1): for
    /// each page, when an answer comes in pages (`@odata.nextLink`).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The most time one call may take, its attempts, the waits between them
    /// and every page of a paged answer included, before the client gives up. Waits for the client-side quota are
    /// not counted. An attempt, or its token request, still running when the
    /// budget runs out ends with [`Error::Timeout`](crate::Error::Timeout), though
    /// every attempt gets at least one second (so a budget of zero still makes
    /// one attempt).
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// The first backoff ceiling; it doubles with each attempt.
    pub fn base_delay(mut self, delay: Duration) -> Self {
        self.base_delay = delay;
        self
    }

    /// The largest backoff ceiling.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// The backoff before attempt `retry + 1` (`retry` counts from 1): full jitter.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.max_delay);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        // `checked_add`: a ceiling of u64::MAX ns (a policy of Duration::MAX delays)
        // leaves every value possible.
        Duration::from_nanos(match nanos.checked_add(1) {
            Some(bound) => random_u64() % bound,
            None => random_u64(),
        })
    }
}

/// A random number from the standard library's per-process hash keys.
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default(),
    );
    hasher.finish()
}

/// Parses `Retry-After`: delta-seconds or an HTTP-date (a date in the past means now).
/// Seconds with a decimal fraction (`1.5`), which some servers send, are read
/// too; a sign, an exponent, `inf` or `NaN` make it unreadable.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    // A number too large for the clock still means "not for a long time".
    let forever = Duration::from_secs(u64::MAX);
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(value.parse().map_or(forever, Duration::from_secs));
    }
    let decimal = value.split_once('.').is_some_and(|(whole, fraction)| {
        !whole.is_empty()
            && !fraction.is_empty()
            && whole
                .bytes()
                .chain(fraction.bytes())
                .all(|b| b.is_ascii_digit())
    });
    if let Some(seconds) = decimal.then(|| value.parse::<f64>().ok()).flatten() {
        return match seconds {
            s if (0.0..1e9).contains(&s) => Some(Duration::from_secs_f64(s)),
            s if s >= 1e9 => Some(forever),
            _ => None,
        };
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn a_retry_after_too_large_for_the_clock_is_the_longest_wait() {
        let forever = Some(Duration::from_secs(u64::MAX));
        assert_eq!(retry_after(&headers("99999999999999999999999")), forever);
        assert_eq!(retry_after(&headers("18446744073709551616")), forever);
        assert_eq!(retry_after(&headers("99999999999.5")), forever);
        assert_eq!(retry_after(&headers("-5")), None);
        for unreadable in [
            "1e30", "1e0", "+1", "inf", "infinity", "NaN", "1.", ".5", "1.2.3",
        ] {
            assert_eq!(retry_after(&headers(unreadable)), None, "{unreadable}");
        }
        assert_eq!(
            retry_after(&headers("1.5")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(retry_after(&headers("soon")), None);
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(retry_after(&headers("7")), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&headers(" 2 ")), Some(Duration::from_secs(2)));
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
        let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let d = retry_after(&headers(&future)).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(retry_after(&headers("soon")), None);
        assert_eq!(retry_after(&headers("-3")), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy::default();
        for retry in 1..40 {
            let ceiling = (p.base_delay * 2u32.pow((retry - 1).min(20))).min(p.max_delay);
            assert!(p.backoff(retry) <= ceiling);
        }
        assert_eq!(RetryPolicy::none().max_attempts, 1);
        assert_eq!(RetryPolicy::default().max_attempts(0).max_attempts, 1);
    }

    #[test]
    fn the_largest_delays_do_not_overflow() {
        let p = RetryPolicy::default()
            .base_delay(Duration::MAX)
            .max_delay(Duration::MAX);
        for retry in [1, 2, 30, u32::MAX] {
            p.backoff(retry);
        }
    }
}
