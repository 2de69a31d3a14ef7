//! Client-side quota: never start more calls than Defender allows.

use std::{collections::VecDeque, fmt, time::Duration};

// tokio's clock: the same as std's, and controllable in tests.
use tokio::time::Instant;

/// The longest window a [`RateLimit`] keeps track of: one year.
pub const MAX_WINDOW: Duration = Duration::from_secs(365 * 24 * 3600);

/// Client-side limits on how many requests may start in a sliding window.
///
/// Defender for Endpoint allows **100 calls per minute and 1,500 per hour** for
/// each application and tenant; [`RateLimit::default`] applies exactly those. A
/// call over the quota waits for its turn (first come, first served) instead of
/// failing, and retries count like any other request. All clones of a
/// [`Client`](crate::Client) share one quota.
///
/// ```
/// use std::time::Duration;
/// use defender_endpoint::RateLimit;
///
/// let custom = RateLimit::new()
///     .window(5, Duration::from_secs(2))
///     .window(50, Duration::from_secs(60));
/// let off = RateLimit::none();
/// # let _ = (custom, off);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a quota applies only once given to `ClientBuilder::rate_limit`"]
pub struct RateLimit {
    windows: Vec<(u32, Duration)>,
}

impl RateLimit {
    /// No limits yet: add them with [`window`](Self::window). Without any window this is
    /// the same as [`none`](Self::none).
    pub fn new() -> Self {
        Self {
            windows: Vec::new(),
        }
    }

    /// No client-side limit at all.
    pub fn none() -> Self {
        Self::new()
    }

    /// Defender's documented limits: 100 calls per 60 s and 1,500 per 3,600 s.
    pub fn defender() -> Self {
        Self::new()
            .window(100, Duration::from_secs(60))
            .window(1_500, Duration::from_secs(3_600))
    }

    /// Adds a window: at most `max_calls` requests started in any span of length `per`.
    ///
    /// A window with `max_calls == 0` or a zero `per` is ignored, since it could never
    /// let a request through (or would not limit anything); `per` is capped at
    /// [`MAX_WINDOW`].
    pub fn window(mut self, max_calls: u32, per: Duration) -> Self {
        if max_calls > 0 && !per.is_zero() {
            self.windows.push((max_calls, per.min(MAX_WINDOW)));
        }
        self
    }

    /// The configured windows, as `(max_calls, per)`.
    pub fn windows(&self) -> &[(u32, Duration)] {
        &self.windows
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::defender()
    }
}

/// The running state of a [`RateLimit`]: the start times of recent requests.
pub(crate) struct RateLimiter {
    /// One log per window, holding at most `max_calls` instants, oldest first.
    /// The async mutex is fair (FIFO), and is held while a caller waits for its slot,
    /// so callers are served in arrival order.
    windows: tokio::sync::Mutex<Vec<Window>>,
    enabled: bool,
}

struct Window {
    max: usize,
    per: Duration,
    starts: VecDeque<Instant>,
}

impl RateLimiter {
    pub(crate) fn new(limit: &RateLimit) -> Self {
        let windows = limit
            .windows
            .iter()
            .map(|&(max, per)| Window {
                max: max as usize,
                per,
                starts: VecDeque::with_capacity((max as usize).min(4096)),
            })
            .collect::<Vec<_>>();
        Self {
            enabled: !windows.is_empty(),
            windows: tokio::sync::Mutex::new(windows),
        }
    }

    /// Waits until a request may start, records its start, and returns how long it waited.
    pub(crate) async fn acquire(&self) -> Duration {
        if !self.enabled {
            return Duration::ZERO;
        }
        let mut windows = self.windows.lock().await;
        let arrived = Instant::now();
        loop {
            let now = Instant::now();
            // The earliest instant at which every full window has a free slot.
            let ready_at = windows
                .iter()
                .filter(|w| w.starts.len() >= w.max)
                .filter_map(|w| {
                    w.starts
                        .front()
                        .map(|&oldest| oldest + w.per + guard(w.per))
                })
                .max();
            match ready_at {
                Some(at) if at > now => tokio::time::sleep_until(at).await,
                _ => break,
            }
        }
        let now = Instant::now();
        for w in windows.iter_mut() {
            while w.starts.front().is_some_and(|&t| t + w.per <= now) {
                w.starts.pop_front();
            }
            if w.starts.len() >= w.max {
                w.starts.pop_front();
            }
            w.starts.push_back(now);
        }
        now - arrived
    }
}

/// Extra spacing when a window rolls over, so that a server measuring arrival times
/// (which lag start times by a varying network delay) still never counts one too many.
fn guard(per: Duration) -> Duration {
    (per / 20).min(Duration::from_millis(100))
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_sanitised() {
        let limit = RateLimit::new()
            .window(0, Duration::from_secs(1))
            .window(3, Duration::ZERO)
            .window(2, Duration::MAX);
        assert_eq!(limit.windows(), &[(2, MAX_WINDOW)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_window_makes_the_next_call_wait() {
        let limiter = RateLimiter::new(&RateLimit::new().window(2, Duration::from_secs(10)));
        assert_eq!(limiter.acquire().await, Duration::ZERO);
        assert_eq!(limiter.acquire().await, Duration::ZERO);
        let waited = limiter.acquire().await;
        assert!(waited >= Duration::from_secs(10), "{waited:?}");
        // A huge window does not overflow the clock.
        let limiter = RateLimiter::new(&RateLimit::new().window(1, Duration::MAX));
        assert_eq!(limiter.acquire().await, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn every_window_is_kept() {
        let limiter = RateLimiter::new(
            &RateLimit::new()
                .window(2, Duration::from_secs(1))
                .window(3, Duration::from_secs(10)),
        );
        let start = Instant::now();
        let mut started = Vec::new();
        for _ in 0..4 {
            limiter.acquire().await;
            started.push(start.elapsed());
        }
        // Two at once; the third when the 1 s window has room; the fourth when
        // the 10 s window has.
        assert_eq!(started[..2], [Duration::ZERO, Duration::ZERO]);
        assert!(
            started[2] >= Duration::from_secs(1) && started[2] < Duration::from_secs(2),
            "{started:?}"
        );
        assert!(started[3] >= Duration::from_secs(10), "{started:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_callers_are_served_in_arrival_order() {
        let limiter = std::sync::Arc::new(RateLimiter::new(
            &RateLimit::new().window(1, Duration::from_secs(1)),
        ));
        limiter.acquire().await;
        let served = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut callers = Vec::new();
        for i in 0..5 {
            let (limiter, served) = (limiter.clone(), served.clone());
            callers.push(tokio::spawn(async move {
                limiter.acquire().await;
                served.lock().unwrap().push(i);
            }));
            // The next caller arrives later.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for caller in callers {
            caller.await.unwrap();
        }
        assert_eq!(*served.lock().unwrap(), [0, 1, 2, 3, 4]);
    }
}
