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
    /// Windows that cannot work (no calls, or no length), refused by `build()`.
    unusable: Vec<(u32, Duration)>,
}

impl RateLimit {
    /// No limits yet: add them with [`window`](Self::window). Without any window this is
    /// the same as [`none`](Self::none).
    pub fn new() -> Self {
        Self {
            windows: Vec::new(),
            unusable: Vec::new(),
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
    /// `per` is capped at [`MAX_WINDOW`]. A window with `max_calls == 0` (which
    /// would never let a request through) or a zero `per` (which would limit
    /// nothing) makes [`ClientBuilder::build`](crate::ClientBuilder::build) fail
    /// with [`Error::Config`](crate::Error::Config); [`RateLimit::none`] is the
    /// way to have no limit.
    pub fn window(mut self, max_calls: u32, per: Duration) -> Self {
        if max_calls > 0 && !per.is_zero() {
            self.windows.push((max_calls, per.min(MAX_WINDOW)));
        } else {
            self.unusable.push((max_calls, per));
        }
        self
    }

    /// Why this quota cannot be used, if it cannot.
    pub(crate) fn problem(&self) -> Option<String> {
        let &(max_calls, per) = self.unusable.first()?;
        let why = if max_calls == 0 {
            "0 calls would never let a request through (RateLimit::none() is no limit)"
        } else {
            "a window of no length limits nothing"
        };
        Some(format!(
            "unusable rate-limit window of {max_calls} calls per {per:?}: {why}"
        ))
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

/// The running state of a [`RateLimit`]: the start times of recent requests,
/// and of those that have a slot reserved and are waiting for it.
///
/// A caller reserves the earliest start time every window allows, behind every
/// earlier reservation (so callers are served in arrival order), and then waits
/// for it without holding any lock: a caller that stops being polled holds up
/// no one but itself, and one that is dropped gives its slot back.
pub(crate) struct RateLimiter {
    windows: std::sync::Mutex<Vec<Window>>,
    enabled: bool,
    /// How late after its reserved time a request may still start in that slot:
    /// half the spacing [`guard`] adds, which others' slots already allow for
    /// (the other half is left for the network), and at least [`TIMER_SLACK`].
    tolerance: Duration,
}

struct Window {
    max: usize,
    per: Duration,
    /// Start times, past and reserved, in order: those still inside the window.
    starts: VecDeque<Instant>,
}

/// A start time reserved in every window of a [`RateLimiter`]. Dropped before
/// [`keep`](Slot::keep), it is given back, so a call that is cancelled while it
/// waits, or that does not send its request after all, uses no quota.
pub(crate) struct Slot<'a> {
    limiter: &'a RateLimiter,
    /// `None` when the limiter has no windows.
    at: Option<Instant>,
    waited: Duration,
}

impl Slot<'_> {
    /// How long the caller waited for this slot.
    pub(crate) fn waited(&self) -> Duration {
        self.waited
    }

    /// The request is being sent: the slot counts as used.
    pub(crate) fn keep(mut self) {
        self.at = None;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(at) = self.at {
            self.limiter.release(at);
        }
    }
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
            tolerance: (windows
                .iter()
                .map(|w| guard(w.per))
                .min()
                .unwrap_or_default()
                / 2)
            .max(TIMER_SLACK),
            windows: std::sync::Mutex::new(windows),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Window>> {
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until a request may start and returns its slot; the caller
    /// [`keep`](Slot::keep)s it when it sends the request.
    pub(crate) async fn acquire(&self) -> Slot<'_> {
        if !self.enabled {
            return Slot {
                limiter: self,
                at: None,
                waited: Duration::ZERO,
            };
        }
        let arrived = Instant::now();
        let mut slept = false;
        loop {
            let at = self.reserve();
            let mut slot = Slot {
                limiter: self,
                at: Some(at),
                waited: Duration::ZERO,
            };
            let now = Instant::now();
            // A caller polled again only well after its time (its task was busy or
            // parked) would start later than the others' slots allow for: it gives
            // the slot back and queues again.
            if at > now {
                tokio::time::sleep_until(at).await;
                slept = true;
                let now = Instant::now();
                if now <= at + self.tolerance {
                    slot.waited = now - arrived;
                    return slot;
                }
            } else {
                if slept {
                    slot.waited = now - arrived;
                }
                return slot;
            }
        }
    }

    /// Reserves the earliest start time that every window allows and that comes
    /// after every earlier reservation.
    fn reserve(&self) -> Instant {
        let now = Instant::now();
        let mut windows = self.lock();
        let mut at = now;
        for w in windows.iter_mut() {
            // Starts that left the window no longer count. (Any `max + 1` starts
            // in a row span more than `per`, so this also keeps at most `max`
            // past ones.)
            while w.starts.front().is_some_and(|&t| t + w.per <= now) {
                w.starts.pop_front();
            }
            if let Some(&last) = w.starts.back() {
                at = at.max(last);
            }
            if w.starts.len() >= w.max {
                let oldest_counted = w.starts[w.starts.len() - w.max];
                at = at.max(oldest_counted + w.per + guard(w.per));
            }
        }
        for w in windows.iter_mut() {
            w.starts.push_back(at);
        }
        at
    }

    /// Gives back a slot reserved for `at`.
    fn release(&self, at: Instant) {
        for w in self.lock().iter_mut() {
            if let Some(i) = w.starts.iter().rposition(|&t| t == at) {
                w.starts.remove(i);
            }
        }
    }
}

/// How late a timer may wake a caller on a busy runtime without the caller
/// losing its slot.
const TIMER_SLACK: Duration = Duration::from_millis(5);

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

    /// Takes a slot and uses it, as a request does; returns how long that waited.
    async fn start(limiter: &RateLimiter) -> Duration {
        let slot = limiter.acquire().await;
        let waited = slot.waited();
        slot.keep();
        waited
    }

    /// A caller that reserves its slot and is then left alone (not polled).
    async fn park(
        limiter: &RateLimiter,
    ) -> std::pin::Pin<Box<impl std::future::Future<Output = Slot<'_>> + '_>> {
        let mut parked = Box::pin(limiter.acquire());
        let polled = tokio::time::timeout(Duration::from_millis(1), &mut parked).await;
        assert!(polled.is_err(), "the slot was free");
        parked
    }

    #[test]
    fn windows_are_checked() {
        let limit = RateLimit::new().window(2, Duration::MAX);
        assert_eq!(limit.windows(), &[(2, MAX_WINDOW)]);
        assert_eq!(limit.problem(), None);
        let never = RateLimit::new().window(0, Duration::from_secs(1));
        assert!(never.problem().unwrap().contains("never"));
        let nothing = limit.window(3, Duration::ZERO);
        assert!(nothing.problem().unwrap().contains("limits nothing"));
        assert_eq!(nothing.windows(), &[(2, MAX_WINDOW)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_window_makes_the_next_call_wait() {
        let limiter = RateLimiter::new(&RateLimit::new().window(2, Duration::from_secs(10)));
        assert_eq!(start(&limiter).await, Duration::ZERO);
        assert_eq!(start(&limiter).await, Duration::ZERO);
        let waited = start(&limiter).await;
        assert!(waited >= Duration::from_secs(10), "{waited:?}");
        // A huge window does not overflow the clock.
        let limiter = RateLimiter::new(&RateLimit::new().window(1, Duration::MAX));
        assert_eq!(start(&limiter).await, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn every_window_is_kept() {
        let limiter = RateLimiter::new(
            &RateLimit::new()
                .window(2, Duration::from_secs(1))
                .window(3, Duration::from_secs(10)),
        );
        let t0 = Instant::now();
        let mut started = Vec::new();
        for _ in 0..4 {
            start(&limiter).await;
            started.push(t0.elapsed());
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
        start(&limiter).await;
        let served = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut callers = Vec::new();
        for i in 0..5 {
            let (limiter, served) = (limiter.clone(), served.clone());
            callers.push(tokio::spawn(async move {
                start(&limiter).await;
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

    #[tokio::test(start_paused = true)]
    async fn a_slot_not_used_is_given_back() {
        let limiter = RateLimiter::new(&RateLimit::new().window(1, Duration::from_secs(10)));
        let t0 = Instant::now();
        // Taken but not used (the request was not sent after all).
        drop(limiter.acquire().await);
        assert_eq!(start(&limiter).await, Duration::ZERO);
        // A caller that gives up while it waits for the slot at 10 s leaves it
        // to the next one.
        let gave_up = tokio::time::timeout(Duration::from_secs(1), start(&limiter)).await;
        assert!(gave_up.is_err());
        start(&limiter).await;
        let next = t0.elapsed();
        assert!(
            next >= Duration::from_secs(10) && next < Duration::from_secs(11),
            "{next:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_is_not_polled_holds_up_no_one() {
        let limiter = RateLimiter::new(&RateLimit::new().window(1, Duration::from_secs(10)));
        let t0 = Instant::now();
        start(&limiter).await;
        // Reserves the slot at 10 s, and is then left alone.
        let parked = park(&limiter).await;
        // The next caller gets the slot after the parked one's.
        start(&limiter).await;
        let second = t0.elapsed();
        assert!(
            second >= Duration::from_secs(20) && second < Duration::from_secs(21),
            "{second:?}"
        );
        // Polled again long after its time, the parked caller queues again,
        // behind the second: its late start would crowd the second's window.
        let slot = parked.await;
        let late = t0.elapsed();
        assert!(late >= Duration::from_secs(30), "{late:?}");
        slot.keep();
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_queues_again_reports_all_its_wait() {
        let limiter = RateLimiter::new(&RateLimit::new().window(1, Duration::from_secs(10)));
        let t0 = Instant::now();
        start(&limiter).await;
        let parked = park(&limiter).await;
        // Polled again at 15 s, past its slot at 10 s: it queues again, and the
        // window has room at once.
        tokio::time::sleep_until(t0 + Duration::from_secs(15)).await;
        let slot = parked.await;
        assert!(
            slot.waited() >= Duration::from_secs(15),
            "{:?}",
            slot.waited()
        );
        slot.keep();
    }
}
