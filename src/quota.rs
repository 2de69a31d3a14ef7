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
    /// Windows add up: [`RateLimit::new`] starts with none, so a limit meant to
    /// replace the default gives both of Defender's (a minute's and an hour's).
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
/// and the times reserved by callers waiting for their turn.
///
/// A caller reserves the earliest time every window allows, behind every
/// caller already waiting (so callers are served in arrival order), and then
/// waits for it without holding any lock: a caller that stops being polled
/// keeps only its own time, and one that is dropped gives its time back, upon
/// which the callers waiting behind it take earlier times if the windows allow.
/// What lets a request start is only the requests that did start: when its
/// time comes (or later, if its task was busy), a caller starts if every
/// window has room for it then, and otherwise takes a new time.
pub(crate) struct RateLimiter {
    windows: std::sync::Mutex<Vec<Window>>,
    enabled: bool,
    /// Woken when a reserved time or a start was given back and some waiting
    /// callers' times were made earlier, so that each reads its own again.
    moved: tokio::sync::Notify,
}

/// The time a waiting caller reserved, shared by its entries in the windows and
/// the caller (who reads it without searching), and told apart from others with
/// the same time by its address.
type Turn = std::sync::Arc<std::sync::Mutex<Instant>>;

fn read(turn: &Turn) -> Instant {
    *turn
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn set(turn: &Turn, at: Instant) {
    *turn
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = at;
}

struct Window {
    max: usize,
    per: Duration,
    /// Start times of requests, in order: those that still count.
    started: VecDeque<Instant>,
    /// Times reserved by callers that wait, in order, with the caller's turn
    /// (the same entries in every window).
    waiting: VecDeque<(Instant, Turn)>,
}

impl Window {
    /// Forgets starts that no longer count at `now`.
    fn prune(&mut self, now: Instant) {
        let span = self.per + guard(self.per);
        while self.started.front().is_some_and(|&t| t + span <= now) {
            self.started.pop_front();
        }
    }

    /// The earliest time at or after `now` that has room for one more start,
    /// counting the times of the first `ahead` waiting callers too.
    fn earliest(&self, now: Instant, ahead: usize) -> Instant {
        let span = self.per + guard(self.per);
        let mut at = now;
        let counted = self.started.len() + ahead;
        if let Some((last, _)) = ahead.checked_sub(1).and_then(|i| self.waiting.get(i)) {
            at = at.max(*last);
        }
        if counted >= self.max {
            // The start that must leave the window first: the `max`-th newest of
            // the starts and the times ahead (both in order).
            let oldest = kth(
                |i| self.started[i],
                self.started.len(),
                |i| self.waiting[i].0,
                ahead,
                counted - self.max,
            );
            at = at.max(oldest + span);
        }
        at
    }
}

/// The `k`-th smallest (from 0) of two sorted sequences of lengths `a_len` and
/// `b_len` read through `a` and `b`, in O(log n); `k` < `a_len + b_len`.
fn kth(
    a: impl Fn(usize) -> Instant,
    a_len: usize,
    b: impl Fn(usize) -> Instant,
    b_len: usize,
    k: usize,
) -> Instant {
    // Take `i` from `a` and `k + 1 - i` from `b`, so that neither holds back a
    // smaller one of the other's.
    let (mut lo, mut hi) = ((k + 1).saturating_sub(b_len), (k + 1).min(a_len));
    while lo < hi {
        let i = (lo + hi) / 2;
        let j = k + 1 - i;
        if j > 0 && b(j - 1) > a(i) {
            lo = i + 1;
        } else {
            hi = i;
        }
    }
    let j = k + 1 - lo;
    match (lo.checked_sub(1).map(&a), j.checked_sub(1).map(&b)) {
        (Some(x), Some(y)) => x.max(y),
        (Some(x), None) => x,
        (None, Some(y)) => y,
        // k < a_len + b_len: at least one is taken.
        (None, None) => a(0),
    }
}

/// A start in every window of a [`RateLimiter`]. Dropped before
/// [`keep`](Slot::keep), it is taken back, so a call that does not send its
/// request after all uses no quota.
pub(crate) struct Slot<'a> {
    limiter: &'a RateLimiter,
    /// The start; `None` when the limiter has no windows or the slot is kept.
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
            let mut windows = self.limiter.lock();
            for w in windows.iter_mut() {
                if let Some(i) = w.started.iter().rposition(|&t| t == at) {
                    w.started.remove(i);
                }
            }
            // A start given back: the callers waiting may go sooner.
            self.limiter.move_up(windows, 0);
        }
    }
}

/// A reserved time of a caller that waits; given back if the caller is dropped
/// before it comes, and the callers behind it then move up.
struct Reservation<'a> {
    limiter: &'a RateLimiter,
    turn: Turn,
    /// Its time came, and its entry went in the same step as the start or the
    /// new reservation that follows (so that no caller slips in between).
    used: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.used {
            return;
        }
        let mut windows = self.limiter.lock();
        if let Some(i) = take(&mut windows, &self.turn) {
            self.limiter.move_up(windows, i);
        }
    }
}

/// Removes the entries of `turn` from every window; where they were.
fn take(windows: &mut [Window], turn: &Turn) -> Option<usize> {
    let i = windows.first().and_then(|w| {
        w.waiting
            .iter()
            .position(|(_, t)| std::sync::Arc::ptr_eq(t, turn))
    })?;
    for w in windows.iter_mut() {
        w.waiting.remove(i);
    }
    Some(i)
}

/// Gives the waiting callers from the `from`-th on the earliest time every window
/// allows, counting the callers ahead of each (never a later time than they have),
/// after a turn was given back; whether any time changed.
fn retime(windows: &mut [Window], from: usize) -> bool {
    let now = Instant::now();
    for w in windows.iter_mut() {
        w.prune(now);
    }
    let waiting = windows.first().map_or(0, |w| w.waiting.len());
    let mut moved = false;
    for i in from..waiting {
        let at = windows
            .iter()
            .map(|w| w.earliest(now, i))
            .fold(now, Instant::max);
        if at < windows[0].waiting[i].0 {
            // Still in order: `at` is no earlier than the times ahead of it.
            for w in windows.iter_mut() {
                w.waiting[i].0 = at;
            }
            set(&windows[0].waiting[i].1, at);
            moved = true;
        }
    }
    moved
}

impl RateLimiter {
    /// After a turn was given back: re-times the callers waiting from the
    /// `from`-th on, and wakes them if any time moved (after the lock is let go).
    fn move_up(&self, mut windows: std::sync::MutexGuard<'_, Vec<Window>>, from: usize) {
        let moved = retime(&mut windows, from);
        drop(windows);
        if moved {
            self.moved.notify_waiters();
        }
    }

    pub(crate) fn new(limit: &RateLimit) -> Self {
        let windows = limit
            .windows
            .iter()
            .map(|&(max, per)| Window {
                max: max as usize,
                per,
                started: VecDeque::with_capacity((max as usize).min(4096)),
                waiting: VecDeque::new(),
            })
            .collect::<Vec<_>>();
        Self {
            enabled: !windows.is_empty(),
            windows: std::sync::Mutex::new(windows),
            moved: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Window>> {
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until a request may start and returns its slot; the caller
    /// [`keep`](Slot::keep)s it when it sends the request.
    #[cfg(test)]
    pub(crate) async fn acquire(&self) -> Slot<'_> {
        self.acquire_noting(|_| {}).await
    }

    /// [`acquire`](Self::acquire), telling `waiting` when the caller starts to
    /// wait (`Some` of when it arrived, once it is queued) and when it stops
    /// (`None`); a caller that does not wait is told nothing.
    pub(crate) async fn acquire_noting(&self, waiting: impl Fn(Option<Instant>)) -> Slot<'_> {
        if !self.enabled {
            return Slot {
                limiter: self,
                at: None,
                waited: Duration::ZERO,
            };
        }
        let arrived = Instant::now();
        let mut queue = true;
        // The reservation whose time has come, handed back in the same step as
        // the start or the new reservation.
        let mut due: Option<Reservation<'_>> = None;
        loop {
            let result = self.start_or_reserve(queue, due.as_ref().map(|r| &r.turn));
            if let Some(mut used) = due.take() {
                used.used = true;
            }
            let reservation = match result {
                Ok(at) => {
                    let waited = if queue { Duration::ZERO } else { at - arrived };
                    if !queue {
                        waiting(None);
                    }
                    return Slot {
                        limiter: self,
                        at: Some(at),
                        waited,
                    };
                }
                Err(turn) => {
                    if queue {
                        waiting(Some(arrived));
                    }
                    Reservation {
                        limiter: self,
                        turn,
                        used: false,
                    }
                }
            };
            // Listening from now on, and then reading the reserved time: a time
            // made anew since the reservation is not missed.
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(read(&reservation.turn)) => break,
                    () = &mut moved => {
                        moved.set(self.moved.notified());
                        moved.as_mut().enable();
                    }
                }
            }
            // Its time has come: the caller keeps its place, and is not queued
            // again behind those who came later.
            queue = false;
            due = Some(reservation);
        }
    }

    /// Starts a request now if every window has room, behind the waiting
    /// callers when `queue` is set (`Ok(now)`); otherwise reserves the earliest
    /// time that may have room (`Err` with the caller's turn). `due`, the turn
    /// of a reservation whose time has come, is taken out first.
    fn start_or_reserve(&self, queue: bool, due: Option<&Turn>) -> Result<Instant, Turn> {
        let mut windows = self.lock();
        if let Some(turn) = due {
            take(&mut windows, turn);
        }
        // Read with the lock held, so that starts are recorded in order.
        let now = Instant::now();
        let mut at = now;
        for w in windows.iter_mut() {
            w.prune(now);
            at = at.max(w.earliest(now, if queue { w.waiting.len() } else { 0 }));
        }
        if at <= now {
            for w in windows.iter_mut() {
                w.started.push_back(now);
            }
            Ok(now)
        } else {
            let turn = Turn::new(std::sync::Mutex::new(at));
            for w in windows.iter_mut() {
                let i = w.waiting.partition_point(|(t, _)| *t <= at);
                w.waiting.insert(i, (at, turn.clone()));
            }
            Err(turn)
        }
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
        // Polled again long after its time, the parked caller finds the
        // second's start in the window, and takes the next time after it.
        let slot = parked.await;
        let late = t0.elapsed();
        assert!(late >= Duration::from_secs(30), "{late:?}");
        slot.keep();
    }

    /// Callers that give their turn back (dropped while they wait, or with a
    /// slot they do not use) let those waiting behind them go sooner.
    #[tokio::test(start_paused = true)]
    async fn turns_given_back_go_to_those_waiting_behind() {
        let limiter = RateLimiter::new(&RateLimit::new().window(1, Duration::from_secs(2)));
        let t0 = Instant::now();
        start(&limiter).await;
        // Three callers reserve 2 s, 4 s and 6 s; a fourth, 8 s, until the three
        // are dropped.
        let ahead = [
            park(&limiter).await,
            park(&limiter).await,
            park(&limiter).await,
        ];
        let (waited, ()) = tokio::join!(start(&limiter), async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(ahead);
        });
        let at = t0.elapsed();
        let turn = Duration::from_secs(2) + guard(Duration::from_secs(2));
        assert!(
            at >= turn && at < turn + Duration::from_millis(50),
            "{at:?}"
        );
        assert!(
            waited <= at && waited + Duration::from_millis(50) > at,
            "{waited:?}"
        );

        // A slot taken and then not used is a turn given back too.
        let unused = limiter.acquire().await;
        let behind = Box::pin(limiter.acquire());
        let t1 = Instant::now();
        let (slot, ()) = tokio::join!(behind, async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(unused);
        });
        slot.keep();
        assert!(
            t1.elapsed() < Duration::from_millis(50),
            "{:?}",
            t1.elapsed()
        );
    }

    /// A caller whose time has come starts before any caller that arrived after
    /// it, also when another thread tries to start in the same instant (its
    /// reservation goes in the same step as its start).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_due_caller_keeps_its_place_against_other_threads() {
        use futures_util::FutureExt;
        use std::sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        };
        let per = Duration::from_millis(20);
        let span = per + guard(per);
        let until = std::time::Instant::now() + Duration::from_millis(1_500);
        while std::time::Instant::now() < until {
            let limiter = Arc::new(RateLimiter::new(&RateLimit::new().window(1, per)));
            limiter.acquire().await.keep();
            let done = Arc::new(AtomicBool::new(false));
            let due = {
                let (limiter, done) = (limiter.clone(), done.clone());
                tokio::spawn(async move {
                    let slot = limiter.acquire().await;
                    let at = slot.at.unwrap();
                    slot.keep();
                    done.store(true, Ordering::SeqCst);
                    at
                })
            };
            while limiter.lock()[0].waiting.is_empty() && !due.is_finished() {
                tokio::task::yield_now().await;
            }
            if due.is_finished() {
                continue;
            }
            let turn = limiter.lock()[0].waiting[0].0;
            let others: Vec<_> = (0..3)
                .map(|_| {
                    let (limiter, done) = (limiter.clone(), done.clone());
                    tokio::spawn(async move {
                        while !done.load(Ordering::SeqCst) {
                            if let Some(slot) = limiter.acquire().now_or_never() {
                                let at = slot.at.unwrap();
                                slot.keep();
                                return Some(at);
                            }
                            tokio::task::yield_now().await;
                        }
                        None
                    })
                })
                .collect();
            let due_at = due.await.unwrap();
            for other in others {
                if let Some(at) = other.await.unwrap() {
                    assert!(
                        at >= due_at || at >= turn + span,
                        "a later caller went first"
                    );
                }
            }
        }
    }

    #[test]
    fn kth_is_the_kth_smallest_of_both() {
        let t0 = Instant::now();
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        for _ in 0..500 {
            let mut a: Vec<Instant> = (0..next() % 6)
                .map(|_| t0 + Duration::from_millis(next() % 8))
                .collect();
            let mut b: Vec<Instant> = (0..next() % 6)
                .map(|_| t0 + Duration::from_millis(next() % 8))
                .collect();
            a.sort();
            b.sort();
            let mut all: Vec<Instant> = a.iter().chain(&b).copied().collect();
            all.sort();
            for (k, expected) in all.iter().enumerate() {
                let got = kth(|i| a[i], a.len(), |i| b[i], b.len(), k);
                assert_eq!(got, *expected, "{a:?} {b:?} {k}");
            }
        }
    }

    /// Callers that share a reserved time (a window of more than one call) move up
    /// too, each counting only those ahead of it.
    #[tokio::test(start_paused = true)]
    async fn callers_sharing_a_time_move_up_together() {
        let limiter = RateLimiter::new(&RateLimit::new().window(2, Duration::from_secs(10)));
        let t0 = Instant::now();
        start(&limiter).await;
        start(&limiter).await;
        // Two callers share the first turn, two more the second.
        let ahead = [park(&limiter).await, park(&limiter).await];
        let behind = [park(&limiter).await, park(&limiter).await];
        drop(ahead);
        let [c, d] = behind;
        let (c, d) = tokio::join!(c, d);
        let at = t0.elapsed();
        c.keep();
        d.keep();
        let turn = Duration::from_secs(10) + guard(Duration::from_secs(10));
        assert!(
            at >= turn && at < turn + Duration::from_millis(50),
            "{at:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_polled_late_reports_all_its_wait() {
        let limiter = RateLimiter::new(&RateLimit::new().window(1, Duration::from_secs(10)));
        let t0 = Instant::now();
        start(&limiter).await;
        let parked = park(&limiter).await;
        // Polled again at 15 s, past its time at 10 s: the window has room, and
        // it starts then.
        tokio::time::sleep_until(t0 + Duration::from_secs(15)).await;
        let slot = parked.await;
        assert!(
            slot.waited() >= Duration::from_secs(15),
            "{:?}",
            slot.waited()
        );
        slot.keep();
    }

    #[tokio::test(start_paused = true)]
    async fn callers_always_polled_late_still_start() {
        let limiter = RateLimiter::new(&RateLimit::new().window(1, Duration::from_secs(10)));
        start(&limiter).await;
        let mut callers = [Some(park(&limiter).await), Some(park(&limiter).await)];
        // The runtime is busy for 15 s at a time: whenever a caller is polled
        // again, its time is long past.
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(15)).await;
            for caller in callers.iter_mut() {
                if let Some(future) = caller {
                    let polled = tokio::time::timeout(Duration::from_millis(1), future).await;
                    if let Ok(slot) = polled {
                        slot.keep();
                        *caller = None;
                    }
                }
            }
        }
        assert!(
            callers.iter().all(Option::is_none),
            "a late caller never started"
        );
    }

    /// Callers that arrive, give up, are dropped with their slot unused, or are
    /// polled late, at random: the starts never exceed any window.
    #[tokio::test(start_paused = true)]
    async fn no_mix_of_callers_exceeds_a_window() {
        let windows = [(3, Duration::from_secs(2)), (5, Duration::from_secs(10))];
        let limiter = std::sync::Arc::new(RateLimiter::new(
            &windows
                .iter()
                .fold(RateLimit::new(), |l, &(max, per)| l.window(max, per)),
        ));
        let starts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut callers = Vec::new();
        for _ in 0..60 {
            let (limiter, starts) = (limiter.clone(), starts.clone());
            let (kind, late) = (next(4), Duration::from_millis(next(3_000)));
            callers.push(tokio::spawn(async move {
                let wait = limiter.acquire();
                let slot = match kind {
                    // Gives up after a while.
                    0 => match tokio::time::timeout(late, wait).await {
                        Ok(slot) => slot,
                        Err(_) => return,
                    },
                    // Polled once, then busy elsewhere for a while.
                    1 => {
                        let mut wait = Box::pin(wait);
                        if let Ok(slot) =
                            tokio::time::timeout(Duration::from_millis(1), &mut wait).await
                        {
                            slot
                        } else {
                            tokio::time::sleep(late).await;
                            wait.await
                        }
                    }
                    _ => wait.await,
                };
                // Does not send after all.
                if kind == 2 && late < Duration::from_millis(1_000) {
                    return drop(slot);
                }
                starts.lock().unwrap().push(Instant::now());
                slot.keep();
            }));
            tokio::time::sleep(Duration::from_millis(next(700))).await;
        }
        for caller in callers {
            caller.await.unwrap();
        }
        let mut starts = starts.lock().unwrap().clone();
        starts.sort();
        assert!(starts.len() > 20, "{}", starts.len());
        for (max, per) in windows {
            for (i, &t) in starts.iter().enumerate() {
                let in_window = starts[i..].iter().take_while(|&&u| u - t < per).count();
                assert!(
                    in_window <= max as usize,
                    "{in_window} starts within {per:?}"
                );
            }
        }
    }
}
