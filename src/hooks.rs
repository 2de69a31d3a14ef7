//! The generated client's hooks: every request made through it passes here.
//!
//! `pre` checks the path against the operation's template, attaches the bearer
//! token (marked sensitive) and waits for the client-side quota. `exec` sends the
//! request and bounds the size of the body: one of known length within the bound
//! goes on untouched, any other is read (and decoded, when reqwest has not) here, up to
//! the bound.

use std::{
    cell::{Cell, RefCell},
    fmt,
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use progenitor_client::{ClientHooks, ClientInfo, OperationInfo};
use std::io::Read;

use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH};

use crate::{
    auth::cache::{Bearer, TokenCache},
    quota::RateLimiter,
    Error,
};

mod operations {
    include!(concat!(env!("OUT_DIR"), "/operations.rs"));
}

/// What the generated client carries besides its `reqwest::Client` and base URL:
/// the token cache, the quota and the limits shared by all clones of a client.
/// It can only be made by [`ClientBuilder::build`](crate::ClientBuilder::build).
#[derive(Clone)]
pub struct Inner(pub(crate) Arc<Shared>);

/// Shared by all clones of a client.
pub(crate) struct Shared {
    pub(crate) tokens: TokenCache,
    pub(crate) limiter: RateLimiter,
    pub(crate) max_body: usize,
    /// The API base URL, parsed.
    pub(crate) base_url: reqwest::Url,
    /// The API base URL as the generated client has it (`https://host/stem`, no
    /// trailing `/`), and the path of `base_url` that a request's path goes
    /// after: what [`request`] needs to make a request's URL without parsing
    /// the base again.
    pub(crate) base_text: Box<str>,
    pub(crate) base_path: Box<str>,
    /// Whether the HTTP client is the caller's own, whose redirect policy may follow
    /// a redirect to another path: the answer's final URL is then checked.
    pub(crate) own_http_client: bool,
    /// The longest one attempt may take ([`ClientBuilder::timeout`](crate::ClientBuilder::timeout)).
    pub(crate) attempt_timeout: Duration,
    /// The HTTP client every request goes through: the one built (or checked) by
    /// `ClientBuilder::build`, with its redirect policy and proxy rule, even for a
    /// generated client made anew on these hooks around another `reqwest::Client`.
    pub(crate) http: reqwest::Client,
    /// Until when the API asked to be spared (a `Retry-After`), in nanoseconds
    /// after `epoch`; 0 when it did not.
    pub(crate) api_spared_until: std::sync::atomic::AtomicU64,
    /// Until when the API asked to be spared, as it asked it (a day at most):
    /// what a call refused meanwhile reports (`Error::retry_after`), though
    /// calls are sent again after `MAX_SPARED`.
    pub(crate) api_asked_until: std::sync::atomic::AtomicU64,
    /// The status of the answer that asked (429 or 503): a call refused
    /// meanwhile is reported as that answer would be.
    pub(crate) api_asked_by: std::sync::atomic::AtomicU16,
    pub(crate) epoch: std::time::Instant,
}

impl Shared {
    /// The longest the API is spared for one `Retry-After`, whatever it asks: as
    /// long as the token endpoint is (see `TokenCache`).
    const MAX_SPARED: Duration = Duration::from_secs(300);

    /// Notes that the API asked, with a `Retry-After` of `wait`, to be sent nothing
    /// for that long: every call of the client waits for it.
    pub(crate) fn spare_api_for(&self, wait: Duration, status: u16) {
        let now = std::time::Instant::now();
        let after_epoch = |wait: Duration| {
            let nanos = (now + wait).duration_since(self.epoch).as_nanos();
            u64::try_from(nanos).unwrap_or(u64::MAX).max(1)
        };
        let spared = after_epoch(wait.min(Self::MAX_SPARED));
        let asked = after_epoch(wait.min(Self::MAX_ASKED));
        // The answer whose ask is the one that holds is the one reported.
        let holds = if self.api_spared_for().is_none() {
            // The API has been sent calls again since any earlier ask: this one
            // replaces it, even if shorter.
            self.api_asked_until
                .store(asked, std::sync::atomic::Ordering::Relaxed);
            true
        } else {
            self.api_asked_until
                .fetch_max(asked, std::sync::atomic::Ordering::Relaxed)
                <= asked
        };
        if holds {
            self.api_asked_by
                .store(status, std::sync::atomic::Ordering::Relaxed);
        }
        self.api_spared_until
            .fetch_max(spared, std::sync::atomic::Ordering::Relaxed);
    }

    /// Notes that the API answered a call: what it asked before is over.
    pub(crate) fn api_answered(&self) {
        // Read first: on the usual path nothing is written to the shared line.
        if self
            .api_asked_until
            .load(std::sync::atomic::Ordering::Relaxed)
            != 0
        {
            self.api_asked_until
                .store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The longest `Retry-After` reported as it was asked.
    pub(crate) const MAX_ASKED: Duration = Duration::from_secs(24 * 3600);

    /// How much longer the API is spared, if at all.
    pub(crate) fn api_spared_for(&self) -> Option<Duration> {
        self.left(&self.api_spared_until)
    }

    /// How much longer the API asked to be spared, if at all (which may be more
    /// than it is spared).
    pub(crate) fn api_asked_for(&self) -> Option<Duration> {
        self.left(&self.api_asked_until)
    }

    fn left(&self, until: &std::sync::atomic::AtomicU64) -> Option<Duration> {
        let nanos = until.load(std::sync::atomic::Ordering::Relaxed);
        if nanos == 0 {
            return None;
        }
        let until = self.epoch + Duration::from_nanos(nanos);
        let left = until.saturating_duration_since(std::time::Instant::now());
        (!left.is_zero()).then_some(left)
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner")
            .field("scope", &self.0.tokens.scope())
            .field("credential", &"<dyn TokenCredential>")
            .field("limiter", &self.0.limiter)
            .field("max_body", &self.0.max_body)
            .finish_non_exhaustive()
    }
}

tokio::task_local! {
    /// What the hooks learn during one attempt of a call made by [`crate::Client`].
    // Boxed: the task-local is swapped in and out on every poll, so it is kept to a pointer.
    pub(crate) static ATTEMPT: Box<Attempt>;
}

/// Filled in by the hooks during one attempt; read by the caller afterwards.
#[derive(Default)]
pub(crate) struct Attempt {
    /// A typed error a hook could only report as a string to the generated code.
    pub(crate) error: RefCell<Option<Error>>,
    /// The status of the answer, once there was one.
    pub(crate) status: Cell<Option<u16>>,
    /// The `Retry-After` of the answer, parsed.
    pub(crate) retry_after: Cell<Option<Duration>>,
    /// The token the request carried, so that a 401 can invalidate exactly it.
    pub(crate) token: RefCell<Option<Bearer>>,
    /// How long the request waited for the client-side quota.
    pub(crate) quota_wait: Cell<Duration>,
    /// How long the request waited for the API, which asked to be spared (a
    /// `Retry-After` any call of the client got).
    pub(crate) spared_wait: Cell<Duration>,
    /// Whether the request went out (the request hook let it).
    pub(crate) sent: Cell<bool>,
    /// When a wait for the client-side quota began, while it lasts: the wait
    /// of a call dropped during it is counted too.
    pub(crate) quota_since: Cell<Option<std::time::Instant>>,
    /// When a wait for the API (another call's `Retry-After`) began, while it lasts.
    pub(crate) spared_since: Cell<Option<std::time::Instant>>,
    /// When what is left of the retry budget runs out (but at least
    /// [`MIN_ATTEMPT`](crate::client::MIN_ATTEMPT) after the attempt starts), not
    /// counting this attempt's quota wait: a token request, or a request in flight,
    /// ends then.
    pub(crate) deadline: Cell<Option<std::time::Instant>>,
    /// When the retry budget runs out, not counting this attempt's quota wait
    /// (`None`: never); a wait for the API that would end later is not made.
    pub(crate) budget_end: Cell<Option<std::time::Instant>>,
    /// The body of an error answer, as it came (decompressed), for the error
    /// to quote when it is not Defender's envelope.
    pub(crate) error_body: RefCell<Option<Bytes>>,
    /// What is left of the call's body limit (every page of it counts), when
    /// the request is one of a call's: a 2xx body may be no larger.
    pub(crate) body_left: Cell<Option<usize>>,
    /// The size of a 2xx answer's body (decompressed), once read or known.
    pub(crate) body_read: Cell<usize>,
    /// The URL a request was sent to and the one its last followed redirect
    /// led to (the client's own redirect policy notes it), so that a transport
    /// error after the redirect names the server that failed.
    /// (Boxed: the report is made for every attempt, a redirect is rare.)
    pub(crate) redirected: RefCell<Option<Box<(reqwest::Url, reqwest::Url)>>>,
}

/// An answer `exec` refused, carried in the response's extensions to [`post`]'s
/// check, with an empty body in place of the refused one.
///
/// [`post`]: ClientHooks::post
#[derive(Clone)]
struct Refused(Error);

/// How many times a call whose token expired while it waited for the quota
/// fetches a new one and queues again.
const MAX_TOKEN_ROUNDS: u32 = 3;

/// Reports `error` to the caller through [`ATTEMPT`] and gives the generated code its string form.
fn fail<E>(error: Error) -> progenitor_client::Error<E> {
    let text = error.to_string();
    let _ = ATTEMPT.try_with(|a| *a.error.borrow_mut() = Some(error));
    progenitor_client::Error::Custom(text)
}

impl ClientHooks<Inner> for crate::generated::Client {
    async fn pre<E>(
        &self,
        request: &mut reqwest::Request,
        info: &OperationInfo,
    ) -> Result<(), progenitor_client::Error<E>> {
        let shared = &self.inner().0;
        check_url(request.url(), &shared.base_url, info.operation_id).map_err(fail)?;
        // Before any timer: a call's timers and connections are Tokio's (the
        // one check for every call, through `Client::raw` too).
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(fail(crate::client::no_runtime()));
        }

        // The token first, then the quota: a call that cannot get a token uses no
        // slot, and time spent fetching one does not come between the slot's start
        // and the request's. A wait for the quota may outlast the token: then the
        // slot is given back and a new token fetched first.
        // (Read when needed: a wait for the API raises it.)
        let deadline = || ATTEMPT.try_with(|a| a.deadline.get()).ok().flatten();
        // A token request is part of the attempt: bounded by its timeout too.
        let token_deadline = |deadline: Option<std::time::Instant>| {
            let attempt = std::time::Instant::now().checked_add(shared.attempt_timeout);
            match (deadline, attempt) {
                (Some(deadline), Some(attempt)) => Some(deadline.min(attempt)),
                (deadline, attempt) => deadline.or(attempt),
            }
        };
        // A token request after `waited` in the quota: that long later.
        let fetch = |waited: Duration| {
            let deadline = deadline().and_then(|d| d.checked_add(waited));
            within(token_deadline(deadline), shared.tokens.token())
        };
        let mut token = match shared.tokens.cached() {
            Some(token) => token,
            None => fetch(Duration::ZERO).await.map_err(fail)?,
        };
        let mut waited = Duration::ZERO;
        // Rounds of fetching a token that expired while the call queued: a few at
        // most (a token that cannot outlast a wait is sent as it is, and a 401
        // refreshes it).
        let mut rounds = 0;
        let slot = loop {
            // (Noted only when the call queues: a call dropped while it waits
            // counts its wait too.)
            let slot = shared
                .limiter
                .acquire_noting(|since| {
                    let since = since.map(tokio::time::Instant::into_std);
                    let _ = ATTEMPT.try_with(|a| a.quota_since.set(since));
                })
                .await;
            waited += slot.waited();
            if !slot.waited().is_zero() {
                let _ = ATTEMPT.try_with(|a| a.quota_wait.set(waited));
                match shared.tokens.cached() {
                    Some(current) => token = current,
                    // Due for a refresh, but still valid (and not refused by the
                    // API): good for this request (the next call refreshes it),
                    // and the call keeps its turn.
                    None if token.usable() || rounds == MAX_TOKEN_ROUNDS => {}
                    None => {
                        // Expired (or refused) during the wait: the slot is given
                        // back, a new token fetched, and the call queues once more.
                        rounds += 1;
                        drop(slot);
                        token = fetch(waited).await.map_err(fail)?;
                        continue;
                    }
                }
            }
            // The API may have asked to be spared while this request queued (a
            // `Retry-After` another call got): the turn is given back, and the
            // request waits for it when the wait ends within the attempt's time
            // (what is left of the retry budget), as the retry loop would wait,
            // or is not sent. The request then gets at least `MIN_ATTEMPT`, as
            // any attempt does. A call through `Client::raw`, which has no such
            // time, is not sent.
            let Some(wait) = shared.api_spared_for() else {
                break slot;
            };
            drop(slot);
            let now = std::time::Instant::now();
            let in_time = ATTEMPT
                .try_with(|a| match a.budget_end.get() {
                    Some(end) => end.checked_add(waited).is_none_or(|end| now + wait <= end),
                    // A budget too large for the clock.
                    None => true,
                })
                .unwrap_or(false);
            if !in_time {
                // What the API asked for, though it is spared five minutes at most,
                // reported as the answer that asked was.
                let asked = wait.max(shared.api_asked_for().unwrap_or_default());
                let by = shared
                    .api_asked_by
                    .load(std::sync::atomic::Ordering::Relaxed);
                // Told to the retry loop as an answer's `Retry-After` is: the call
                // waits for it within its budget, or gives up at once.
                let _ = ATTEMPT.try_with(|a| a.retry_after.set(Some(asked)));
                return Err(fail(if by == 503 {
                    Error::Api {
                        status: 503,
                        code: None,
                        message: Some(format!(
                            "not sent: the service answered 503 and asked to be called again \
                             in {}",
                            crate::error::Wait(asked)
                        )),
                        target: None,
                    }
                } else {
                    Error::Throttled {
                        retry_after: Some(asked),
                    }
                }));
            }
            tracing::debug!(
                wait_ms = wait.as_millis() as u64,
                "sparing the API as it asked"
            );
            let _ = ATTEMPT.try_with(|a| a.spared_since.set(Some(std::time::Instant::now())));
            tokio::time::sleep(wait).await;
            let _ = ATTEMPT.try_with(|a| {
                a.spared_since.set(None);
                a.spared_wait.set(a.spared_wait.get() + wait);
                // At least `MIN_ATTEMPT` for the request (and its token), from now.
                let least = std::time::Instant::now()
                    .checked_add(crate::client::MIN_ATTEMPT)
                    .and_then(|t| t.checked_sub(a.quota_wait.get()));
                if let (Some(d), Some(least)) = (a.deadline.get(), least) {
                    a.deadline.set(Some(d.max(least)));
                }
            });
            // The token may have run out meanwhile; the call then queues again,
            // and the token is checked once more if that takes a while.
            if let Some(current) = shared.tokens.cached() {
                token = current;
            } else if !token.usable() {
                token = fetch(waited).await.map_err(fail)?;
            }
        };
        slot.keep();
        if !waited.is_zero() {
            tracing::debug!(
                wait_ms = waited.as_millis() as u64,
                "waited for the client-side quota"
            );
        }
        request.headers_mut().insert(AUTHORIZATION, token.header());
        // The request goes out: the call counts it.
        let _ = ATTEMPT.try_with(|a| {
            *a.token.borrow_mut() = Some(token);
            a.sent.set(true);
        });
        Ok(())
    }

    /// Turns an answer `exec` refused (too large, not decompressible, redirected
    /// elsewhere) into the generated code's error, for calls through
    /// [`Client::raw`](crate::Client::raw) too; the wrapper reads the typed error.
    async fn post<E>(
        &self,
        result: &reqwest::Result<reqwest::Response>,
        _info: &OperationInfo,
    ) -> Result<(), progenitor_client::Error<E>> {
        match result {
            Ok(response) => match response.extensions().get::<Refused>() {
                Some(Refused(error)) => Err(fail(error.clone())),
                None => Ok(()),
            },
            Err(_) => Ok(()),
        }
    }

    async fn exec(
        &self,
        request: reqwest::Request,
        _info: &OperationInfo,
    ) -> reqwest::Result<reqwest::Response> {
        let shared = &self.inner().0;
        let deadline = ATTEMPT
            .try_with(|a| a.deadline.get()?.checked_add(a.quota_wait.get()))
            .ok()
            .flatten()
            .filter(|deadline| {
                shared.own_http_client
                    || deadline.saturating_duration_since(std::time::Instant::now())
                        < shared.attempt_timeout
            });
        let Some(deadline) = deadline else {
            return send(self, request, false).await;
        };
        // The retry budget ends before the attempt's own timeout would (or that
        // timeout, the caller's client's, is unknown): the answer is read whole
        // here, under the budget's deadline.
        let deadline = tokio::time::Instant::from_std(deadline);
        match tokio::time::timeout_at(deadline, send(self, request, true)).await {
            Ok(result) => result,
            Err(_) => Ok(refused(
                reqwest::StatusCode::REQUEST_TIMEOUT,
                Error::Timeout,
            )),
        }
    }
}

/// `work`, ended with [`Error::Timeout`] at `deadline` (the end of the retry budget).
async fn within<T>(
    deadline: Option<std::time::Instant>,
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match deadline {
        None => work.await,
        Some(deadline) => {
            let deadline = tokio::time::Instant::from_std(deadline);
            tokio::time::timeout_at(deadline, work)
                .await
                .unwrap_or(Err(Error::Timeout))
        }
    }
}

/// An empty answer with `status` that [`post`](ClientHooks::post) turns into `error`.
fn refused(status: reqwest::StatusCode, error: Error) -> reqwest::Response {
    let mut empty = http::Response::new(Bytes::new());
    *empty.status_mut() = status;
    empty.extensions_mut().insert(Refused(error));
    reqwest::Response::from(empty)
}

/// Sends `request` and bounds the size of the answer's body; `read_whole` reads
/// it here even when its length is known.
async fn send(
    client: &crate::generated::Client,
    request: reqwest::Request,
    read_whole: bool,
) -> reqwest::Result<reqwest::Response> {
    let sent_path = client
        .inner()
        .0
        .own_http_client
        .then(|| request.url().path().to_owned());
    let mut response = client.inner().0.http.execute(request).await?;
    if let Some(sent_path) = sent_path.filter(|p| p != response.url().path()) {
        // The answer is another endpoint's: report it, and give the generated
        // code an empty body, which it cannot mistake for an answer.
        let error = Error::Decode {
            status: response.status().as_u16(),
            message: format!(
                "refusing an answer redirected from {sent_path:?} to another path, {:?}",
                response.url().path()
            ),
        };
        return Ok(refused(response.status(), error));
    }
    let status = response.status();
    let version = response.version();
    // 429 and 503 may say when to come back.
    let retry_after = if status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::SERVICE_UNAVAILABLE
    {
        crate::retry::retry_after(response.headers())
    } else {
        None
    };
    let _ = ATTEMPT.try_with(|a| {
        a.status.set(Some(status.as_u16()));
        a.retry_after.set(retry_after);
    });
    // What the API asks holds for every call of the client, `raw()`'s included;
    // an answer that asks nothing ends what it asked before.
    match retry_after {
        Some(wait) => client.inner().0.spare_api_for(wait, status.as_u16()),
        None if status.is_success() => client.inner().0.api_answered(),
        None => {}
    }

    let coding = Encoding::of(response.headers());

    // A body whose exact length is known (and enforced by the HTTP layer) needs no
    // bounded read: hand the response on as it is. What a call's earlier pages
    // read counts against its limit: a page's body may be no larger than what is
    // left (`cap`), and is refused with the limit as configured. An error answer
    // (which a retry may follow) is held to the limit alone, and not counted.
    let limit = client.inner().0.max_body;
    let page = status.is_success();
    let cap = ATTEMPT
        .try_with(|a| a.body_left.get())
        .ok()
        .flatten()
        .filter(|_| page)
        .map_or(limit, |left| left.min(limit));
    let note_read = |len: usize| {
        if page {
            let _ = ATTEMPT.try_with(|a| a.body_read.set(len));
        }
    };
    if coding.is_none() && !read_whole {
        if let Some(len) = response.content_length().filter(|&len| len <= cap as u64) {
            note_read(len as usize);
            return Ok(response);
        }
    }
    let mut headers = std::mem::take(response.headers_mut());

    // Read the (already decompressed) body, refusing to hold more than `max_body` bytes.
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    let mut total = 0usize;
    let too_large = loop {
        let Some(mut chunk) = response.chunk().await? else {
            break false;
        };
        total = total.saturating_add(chunk.len());
        let over = total > cap;
        if over {
            if page {
                break true;
            }
            // An error answer's body is kept up to the limit (see below).
            chunk.truncate(chunk.len() - (total - cap));
        }
        match &first {
            None => first = Some(chunk),
            Some(head) => {
                if rest.is_empty() {
                    // The declared length sizes the buffer, but only up to what
                    // a default client may read: a server can declare anything.
                    let hint = usize::try_from(response.content_length().unwrap_or(0))
                        .unwrap_or(usize::MAX)
                        .min(cap)
                        .min(crate::DEFAULT_MAX_RESPONSE_BYTES);
                    rest.reserve(hint.max(head.len() + chunk.len()));
                    rest.extend_from_slice(head);
                }
                rest.extend_from_slice(&chunk);
            }
        }
        if over {
            break true;
        }
    };
    // An error answer's status says more than its body: one too large goes on
    // with the start that was read (so a 429 is still `Throttled`, a 404 an
    // unknown user), as one that cannot be decoded goes on without it.
    let body = if too_large && page {
        Err(Error::ResponseTooLarge { limit })
    } else if rest.is_empty() {
        Ok(first.unwrap_or_default())
    } else {
        Ok(rest.freeze())
    };
    let body = match (body, coding) {
        (Ok(body), Some(coding)) => {
            let decoded = match decompress(&coding, &body, cap) {
                // An error answer's status says more than its unreadable body:
                // it goes on without the body (so a 429 is still `Throttled`).
                Err(Inflate::TooLarge | Inflate::Invalid(_)) if !page => Ok(Bytes::new()),
                Err(Inflate::TooLarge) => Err(Error::ResponseTooLarge { limit }),
                Err(Inflate::Invalid(e)) => Err(Error::Decode {
                    status: status.as_u16(),
                    message: format!(
                        "the {:?} body could not be decoded: {e}",
                        Encoding::name(&headers)
                    ),
                }),
                Ok(decoded) => Ok(decoded),
            };
            headers.remove(CONTENT_ENCODING);
            headers.remove(CONTENT_LENGTH);
            decoded
        }
        (other, _) => other,
    };
    let (body, refused) = match body {
        Ok(body) => (body, None),
        Err(error) => (Bytes::new(), Some(Refused(error))),
    };
    note_read(body.len());

    let mut rebuilt = http::Response::new(body);
    if let Some(refused) = refused {
        rebuilt.extensions_mut().insert(refused);
    }
    *rebuilt.status_mut() = status;
    *rebuilt.version_mut() = version;
    *rebuilt.headers_mut() = headers;
    Ok(reqwest::Response::from(rebuilt))
}

/// How a body that reached the hook is still encoded: its content codings in the
/// order the server applied them.
struct Encoding {
    codings: Vec<Coding>,
}

#[derive(Clone, Copy)]
enum Coding {
    Deflate,
    Gzip,
    /// A coding this client does not decode (`br`, `zstd`, …).
    Unsupported,
}

/// The most content codings, one applied over another, the hook undoes.
const MAX_CODINGS: usize = 3;

impl Encoding {
    /// The encoding of a body sent with `headers`, or `None` when there is
    /// nothing to decode (no coding but `identity`). Several `Content-Encoding`
    /// lines are one list, in order.
    ///
    /// Codings are case-insensitive; `x-gzip` is `gzip`. The client this crate
    /// builds leaves every coding to this; a caller's own `reqwest::Client` built
    /// with gzip decodes a lone `gzip` line itself and removes the header.
    fn of(headers: &reqwest::header::HeaderMap) -> Option<Encoding> {
        // Most answers have none: nothing to collect then.
        headers.get(CONTENT_ENCODING)?;
        let codings: Vec<Coding> = headers
            .get_all(CONTENT_ENCODING)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"identity"))
            .map(|c| {
                if c.eq_ignore_ascii_case(b"deflate") {
                    Coding::Deflate
                } else if c.eq_ignore_ascii_case(b"gzip") || c.eq_ignore_ascii_case(b"x-gzip") {
                    Coding::Gzip
                } else {
                    Coding::Unsupported
                }
            })
            .collect();
        (!codings.is_empty()).then_some(Encoding { codings })
    }

    /// The `Content-Encoding` of `headers` as the server wrote it, cut short: for
    /// an error message. The attempt's token is blanked first, so that no part
    /// of it survives the cut.
    fn name(headers: &reqwest::header::HeaderMap) -> String {
        let values: Vec<_> = headers
            .get_all(CONTENT_ENCODING)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
            .collect();
        let values = values.join(", ");
        let secret = ATTEMPT
            .try_with(|a| a.token.borrow().as_ref().map(|t| t.secret().into_owned()))
            .ok()
            .flatten();
        crate::error::redact_cut(&values, secret.as_deref().unwrap_or(""), 40)
    }
}

enum Inflate {
    TooLarge,
    Invalid(std::io::Error),
}

/// Reads a response's body into the generated client's `ResponseValue`, as
/// `ResponseValue::from_response` does, but takes the response's headers instead
/// of copying them: the response is consumed, so a copy only costs an allocation
/// per header list and a reference count per header on every call. The generated
/// operations call this in its place (see `build.rs`).
pub(crate) async fn response_value<T: serde::de::DeserializeOwned, E>(
    mut response: reqwest::Response,
) -> Result<progenitor_client::ResponseValue<T>, progenitor_client::Error<E>> {
    let status = response.status();
    let headers = std::mem::take(response.headers_mut());
    let full = response
        .bytes()
        .await
        .map_err(progenitor_client::Error::ResponseBodyError)?;
    if !status.is_success() {
        let _ = ATTEMPT.try_with(|a| *a.error_body.borrow_mut() = Some(full.clone()));
    }
    let inner = serde_json::from_slice(&full)
        .map_err(|e| progenitor_client::Error::InvalidResponsePayload(full, e))?;
    Ok(progenitor_client::ResponseValue::new(
        inner, status, headers,
    ))
}

/// Decodes a body sent with `encoding`, the last coding applied first, never
/// producing more than `limit` bytes. `deflate` is zlib (RFC 1950, what the HTTP
/// standard means) or, failing that, raw deflate (RFC 1951, what some servers send).
fn decompress(encoding: &Encoding, compressed: &[u8], limit: usize) -> Result<Bytes, Inflate> {
    fn read_all(reader: impl Read, limit: usize) -> Result<Vec<u8>, Inflate> {
        let mut out = Vec::new();
        reader
            .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
            .read_to_end(&mut out)
            .map_err(Inflate::Invalid)?;
        if out.len() > limit {
            return Err(Inflate::TooLarge);
        }
        Ok(out)
    }
    /// The gzip members of `input`, one after another, as `MultiGzDecoder` reads
    /// them, stopping at bytes that do not start another member: padding after
    /// the last one (a line break, zeros) is left, as HTTP clients leave it.
    fn gunzip(mut input: &[u8], limit: usize) -> Result<Vec<u8>, Inflate> {
        let mut out = Vec::new();
        loop {
            let mut member = flate2::bufread::GzDecoder::new(input);
            let part = read_all(&mut member, limit - out.len())?;
            out.extend_from_slice(&part);
            input = member.into_inner();
            if !input.starts_with(&[0x1f, 0x8b]) {
                return Ok(out);
            }
        }
    }
    // An empty body (a 404 or 429 without one) has nothing to decode.
    if compressed.is_empty() {
        return Ok(Bytes::new());
    }
    let invalid = |why: &str| Err(Inflate::Invalid(std::io::Error::other(why)));
    if encoding.codings.len() > MAX_CODINGS {
        return invalid("more codings, one over another, than this client undoes");
    }
    let mut decoded: Option<Vec<u8>> = None;
    for coding in encoding.codings.iter().rev() {
        let input = decoded.as_deref().unwrap_or(compressed);
        decoded = Some(match coding {
            Coding::Gzip => gunzip(input, limit)?,
            Coding::Deflate => match read_all(flate2::read::ZlibDecoder::new(input), limit) {
                Err(Inflate::Invalid(_)) => {
                    read_all(flate2::read::DeflateDecoder::new(input), limit)?
                }
                other => other?,
            },
            Coding::Unsupported => return invalid("this client decodes only gzip and deflate"),
        });
    }
    Ok(decoded.map(Bytes::from).unwrap_or_default())
}

/// The builder of a generated operation's request for `method` to `url`, which
/// the generated code formats as the generated client's base URL followed by the
/// operation's path; `build.rs` has every operation call this.
///
/// `reqwest` would parse `url` whole, host included (the host name goes through
/// IDNA processing even when it is ASCII): about 7 k instructions, a twentieth of
/// a call for a small answer. When the generated client's base URL is the one
/// [`ClientBuilder::build`](crate::ClientBuilder::build) parsed, the URL is that
/// parsed base URL with the path set: only the path is read. Anything else (a
/// generated client made anew with another base URL, a path with a query or
/// outside printable ASCII) is parsed whole, as `reqwest` would.
pub(crate) fn request(
    client: &crate::generated::Client,
    method: reqwest::Method,
    url: String,
) -> reqwest::RequestBuilder {
    match operation_url(&client.inner.0, &client.baseurl, &url) {
        Some(parsed) => client.client.request(method, parsed),
        None => client.client.request(method, url),
    }
}

/// `url` (`base` followed by a path) read as [`request`] says, or `None` when it
/// must be parsed whole.
pub(crate) fn operation_url(shared: &Shared, base: &str, url: &str) -> Option<reqwest::Url> {
    let path = url.strip_prefix(base)?;
    let plain = |b: u8| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'\\');
    if base != &*shared.base_text || !path.starts_with('/') || !path.bytes().all(plain) {
        return None;
    }
    let mut parsed = shared.base_url.clone();
    if shared.base_path.is_empty() {
        parsed.set_path(path);
    } else {
        parsed.set_path(&[&shared.base_path, path].concat());
    }
    Some(parsed)
}

/// What a request's path goes after, for a parsed base URL: its path without
/// one trailing `/` (the root's, or one a dot segment left, as in `/stem/.`,
/// which the request's path then follows as `/stem/./api/…` would).
pub(crate) fn base_path(base_url: &reqwest::Url) -> Box<str> {
    let path = base_url.path();
    path.strip_suffix('/').unwrap_or(path).into()
}

/// The second, independent guard against requests leaving their endpoint: the
/// request's URL must be the operation's path template under the base URL, each
/// parameter filling exactly one real segment, and bearer tokens only travel over
/// https or to a loopback host.
pub(crate) fn check_url(
    url: &reqwest::Url,
    base_url: &reqwest::Url,
    operation: &str,
) -> Result<(), Error> {
    if !is_secure(url) {
        return Err(Error::Config(format!(
            "refusing to send a bearer token over plain http to {}",
            url.host_str().unwrap_or("<no host>")
        )));
    }
    // A generated client built anew on the same hooks (`raw::Client::new`) could
    // point anywhere: the token goes only to the client's own origin.
    let same_origin = url.scheme() == base_url.scheme()
        && url.host_str() == base_url.host_str()
        && url.port_or_known_default() == base_url.port_or_known_default();
    if !same_origin {
        return Err(Error::Config(format!(
            "refusing to send the bearer token to {}: it goes only to the client's base URL",
            url.host_str().unwrap_or("<no host>")
        )));
    }
    let template = operations::OPERATIONS
        .iter()
        .find(|(id, _)| *id == operation)
        .map(|(_, template)| *template)
        .ok_or_else(|| Error::Config(format!("unknown operation {operation}")))?;
    let refused = || {
        Error::Config(format!(
            "refusing a request whose path does not match {template} (operation {operation})"
        ))
    };
    let path = path_under(url, base_url).ok_or_else(refused)?;
    if path_matches(path, template) {
        Ok(())
    } else {
        Err(refused())
    }
}

/// The path of `url` below the base URL's path (`/api/users/…`), if it is below it.
pub(crate) fn path_under<'a>(url: &'a reqwest::Url, base_url: &reqwest::Url) -> Option<&'a str> {
    url.path()
        .strip_prefix(base_url.path().trim_end_matches('/'))
}

/// Whether `path` has the segments of `template`: each literal segment equal,
/// each `{parameter}` exactly one non-empty segment once decoded.
fn path_matches(path: &str, template: &str) -> bool {
    // In one pass: the literal text before each `{parameter}` is a prefix of what
    // is left of the path, and the parameter fills the path up to its next `/`.
    let (mut path, mut template) = (path.as_bytes(), template.as_bytes());
    let mut at_start = true;
    loop {
        let literal_len = template
            .iter()
            .position(|&b| b == b'{')
            .unwrap_or(template.len());
        let (literal, rest) = template.split_at(literal_len);
        let Some(after_literal) = path.strip_prefix(literal) else {
            return false;
        };
        path = after_literal;
        if rest.is_empty() {
            return path.is_empty();
        }
        // `{name}` is a whole segment of the template: it follows a `/` (or starts
        // the template) and is followed by a `/` or the end. A template with a
        // parameter elsewhere matches no path.
        let Some(close) = rest.iter().position(|&b| b == b'}') else {
            return false;
        };
        if rest[..close].contains(&b'/') {
            return false;
        }
        template = &rest[close + 1..];
        let starts_segment = literal.ends_with(b"/") || at_start && literal.is_empty();
        if !starts_segment || !(template.is_empty() || template.starts_with(b"/")) {
            return false;
        }
        at_start = false;
        let end = path.iter().position(|&b| b == b'/').unwrap_or(path.len());
        if !is_single_segment(&path[..end]) {
            return false;
        }
        path = &path[end..];
    }
}

/// Whether `segment` (as it appears in a URL) is exactly one path segment once decoded.
fn is_single_segment(segment: &[u8]) -> bool {
    // Without a `%` it is what it decodes to.
    if !segment.contains(&b'%') {
        return !segment.is_empty()
            && segment != b"."
            && segment != b".."
            && !segment.iter().any(|b| matches!(b, b'/' | b'\\'));
    }
    let mut len = 0usize;
    let mut only_dots = true;
    for byte in percent_encoding::percent_decode(segment) {
        if matches!(byte, b'/' | b'\\') {
            return false;
        }
        only_dots &= byte == b'.';
        len += 1;
    }
    len > 0 && !(only_dots && len <= 2)
}

/// Validates the URL of a service tokens are sent to (the API base, an
/// authority) and returns it without a trailing `/`: absolute, https (http only
/// to loopback), with a host and without query, fragment or user info.
/// `what` names it and `shown` is the caller's input, for the error message.
pub(crate) fn normalise_service_url(url: &str, what: &str, shown: &str) -> Result<String, Error> {
    let bad = |why: &str| {
        Error::Config(format!(
            "invalid {what} \"{}\": {why}",
            redact_user_info(shown).escape_debug()
        ))
    };
    // The URL parser drops tabs and line breaks anywhere, which would quietly
    // make the URL another one than the one written.
    if url.chars().any(char::is_control) {
        return Err(bad("it holds a control character"));
    }
    // The parser resolves `.` and `..` (`%2e` too): `/proxy/../other` would
    // quietly become `/other`.
    if has_dot_segment(url) {
        return Err(bad(
            "its path holds a `.` or `..` segment, which would be resolved away; \
             write the path it stands for",
        ));
    }
    let url = reqwest::Url::parse(url).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => {
            bad("it has no scheme: write it with https://, as https://api.security.microsoft.com")
        }
        e => bad(&e.to_string()),
    })?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(bad("the scheme must be https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    if let Some(url::Host::Domain(host)) = url.host() {
        // `https//host` or `https;//host`, read as a bare host name: the host
        // would be `https`, or `https;`.
        let name = host.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
        if name.eq_ignore_ascii_case("https") || name.eq_ignore_ascii_case("http") {
            return Err(bad("its host is a scheme's name: is `://` mistyped?"));
        }
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(bad("its host is not a host name"));
        }
    }
    if !is_secure(&url) {
        return Err(bad(
            "plain http is only allowed to loopback hosts (127.0.0.0/8, ::1, localhost); use https",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("it must not hold user info"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Whether the path of the URL `input` holds a `.` or `..` segment, written
/// plainly or percent-encoded (`%2e`), as the URL parser reads one (`\\` counts
/// as `/`).
fn has_dot_segment(input: &str) -> bool {
    let rest = input.trim().split_once(':').map_or("", |(_, rest)| rest);
    let rest = rest.trim_start_matches(['/', '\\']);
    let Some(start) = rest.find(['/', '\\', '?', '#']) else {
        return false;
    };
    let path = rest[start..].split(['?', '#']).next().unwrap_or_default();
    path.split(['/', '\\']).any(|segment| {
        matches!(
            segment.to_ascii_lowercase().as_str(),
            "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
        )
    })
}

/// `input` with the user info of its authority (`user:password@`) replaced by
/// `***@`, so that a URL can be shown in a message or in `Debug`. Works on text
/// that is not a valid URL too. A user name may hold an `@`, and a password a
/// `/`, `?` or `#` that ends the authority early (`https://svc:2024/pw@host` even
/// reads as a URL whose path holds the `@`), so everything after the scheme up to
/// the last `@` is hidden: an `@` in the path of a base URL is hidden with it,
/// which errs on the safe side.
pub(crate) fn redact_user_info(input: &str) -> std::borrow::Cow<'_, str> {
    // After the scheme and the slashes that follow it, however many: `https:/h`
    // and `https:\h` read as `https://h`.
    let slashes = |from: usize| {
        input[from..]
            .bytes()
            .take_while(|&b| matches!(b, b'/' | b'\\'))
            .count()
    };
    // The URL parser first drops what leads up to the scheme: spaces and control
    // characters.
    let lead = input.len() - input.trim_start_matches(|c: char| c <= ' ').len();
    let start = scheme_len(&input[lead..])
        .map(|n| lead + n + 1)
        .filter(|&after| slashes(after) > 0)
        .map_or(0, |after| after + slashes(after));
    let with_user_info = reqwest::Url::parse(input).is_ok_and(|url| {
        url.has_host() && (!url.username().is_empty() || url.password().is_some())
    });
    // Up to the last `@`, even when the parser reads user info that ends sooner:
    // a user name may hold an `@` and a password read as a port and a path
    // (`https://svc@corp.example:2024/PW@h`).
    let at = input[start..].rfind('@');
    match at {
        Some(at) => format!("{}***{}", &input[..start], &input[start + at..]).into(),
        // The parser found user info where this reading did not (a tab or a line
        // break it drops, inside the scheme or after it): everything up to the
        // last `@` is hidden.
        None if with_user_info => match input.rfind('@') {
            Some(at) => format!("***{}", &input[at..]).into(),
            None => "***".into(),
        },
        None => input.into(),
    }
}

/// The length of the scheme `input` starts with (`https` of `https:…`), if it
/// starts with one: a letter, then letters, digits, `+`, `-` or `.`, then `:`.
pub(crate) fn scheme_len(input: &str) -> Option<usize> {
    let colon = input.find(':')?;
    let scheme = &input.as_bytes()[..colon];
    let valid = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    valid.then_some(colon)
}

/// `builder`, kept off any proxy of the environment (`HTTP_PROXY`, which may be
/// remote) when `url` is plain http: that is allowed to loopback only (see
/// [`is_secure`]), and must stay there.
pub(crate) fn direct_for_plain_http(
    builder: reqwest::ClientBuilder,
    url: &str,
) -> reqwest::ClientBuilder {
    if url.starts_with("http://") {
        builder.no_proxy()
    } else {
        builder
    }
}

/// Whether `client` may send a request through a proxy: one it was given, or
/// the environment's (`HTTP_PROXY`, `ALL_PROXY`, …), which reqwest consults for
/// every client not built with `no_proxy()`. reqwest has no accessor for this;
/// its `Client`'s `Debug` lists `proxies` exactly when there are any, which a
/// unit test pins. Anything else that spells `proxies` errs on the safe side.
fn may_use_a_proxy(client: &reqwest::Client) -> bool {
    format!("{client:?}").contains("proxies")
}

/// Refuses a caller's `client` for the plain-http `url` (loopback, see
/// [`is_secure`]) when it may go through a proxy, which may be on another host
/// and would see the token or the client secret in clear.
pub(crate) fn check_own_client_for_plain_http(
    client: &reqwest::Client,
    url: &str,
    what: &str,
) -> Result<(), Error> {
    if url.starts_with("http://") && may_use_a_proxy(client) {
        return Err(Error::Config(format!(
            "the {what} \"{}\" is plain http, and the reqwest::Client given for it may send \
             requests through a proxy (its own, or HTTP_PROXY or ALL_PROXY of the \
             environment), which would see them in clear: build that client with \
             reqwest::ClientBuilder::no_proxy(), or use https",
            redact_user_info(url).escape_debug()
        )));
    }
    Ok(())
}

/// https, or http to a loopback address or `localhost`.
pub(crate) fn is_secure(url: &reqwest::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
            None => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// A client of the commercial cloud, with a static token.
    fn client() -> crate::Client {
        crate::Client::builder()
            .credential(crate::StaticToken::new("t"))
            .build()
            .unwrap()
    }

    /// `build.rs` has every generated operation read its answer through
    /// [`response_value`]; a change in how the generator spells the call it
    /// replaces would otherwise go unnoticed (the answers read the same, only
    /// with their headers copied).
    #[test]
    fn generated_operations_read_answers_through_response_value() {
        let code = include_str!(concat!(env!("OUT_DIR"), "/codegen.rs"));
        assert!(!code.contains("from_response"), "a call was not replaced");
        assert!(code.contains("crate::hooks::response_value(response)"));
        // … and encode path parameters with the crate's own rule.
        assert!(code.starts_with("use crate::user::encode_segment as encode_path;"));
        // … and start their requests on the parsed base URL.
        assert!(
            !code.contains("self.client.get("),
            "a request was not replaced"
        );
        assert!(code.contains("crate::hooks::request(self, ::reqwest::Method::GET, url)"));
    }

    /// The API is spared five minutes at most, whatever it asks, and the wait it
    /// asked for is what is reported; a shorter `Retry-After` after a longer
    /// one shortens neither.
    #[test]
    fn the_api_is_spared_five_minutes_at_most() {
        let client = client();
        let shared = &client.raw().inner.0;
        assert_eq!(shared.api_spared_for(), None);
        assert_eq!(shared.api_asked_for(), None);
        shared.spare_api_for(Duration::from_secs(3600), 429);
        shared.spare_api_for(Duration::from_secs(2), 429);
        let spared = shared.api_spared_for().unwrap();
        let asked = shared.api_asked_for().unwrap();
        assert!(spared > Duration::from_secs(299), "{spared:?}");
        assert!(spared <= Duration::from_secs(300), "{spared:?}");
        assert!(asked > Duration::from_secs(3599), "{asked:?}");
        assert!(asked <= Duration::from_secs(3600), "{asked:?}");
        // A day at most, even as reported.
        shared.spare_api_for(Duration::from_secs(u64::MAX / 4), 429);
        let asked = shared.api_asked_for().unwrap();
        assert!(asked <= Duration::from_secs(24 * 3600), "{asked:?}");
        assert!(shared.api_spared_for().unwrap() <= Duration::from_secs(300));
    }

    /// A newer `Retry-After`, after the API was sent calls again, replaces an
    /// older, longer one; an answer ends what was asked.
    #[test]
    fn a_new_retry_after_replaces_one_that_is_over() {
        let client = client();
        let shared = &client.raw().inner.0;
        shared.spare_api_for(Duration::from_secs(3600), 429);
        // Five minutes later: calls are sent again.
        shared.api_spared_until.store(1, Ordering::Relaxed);
        assert_eq!(shared.api_spared_for(), None);
        shared.spare_api_for(Duration::from_secs(10), 429);
        let asked = shared.api_asked_for().unwrap();
        assert!(asked <= Duration::from_secs(10), "{asked:?}");
        // While it holds, a longer ask extends it, a shorter one does not.
        shared.spare_api_for(Duration::from_secs(20), 429);
        assert!(shared.api_asked_for().unwrap() > Duration::from_secs(19));
        shared.spare_api_for(Duration::from_secs(1), 503);
        assert!(shared.api_asked_for().unwrap() > Duration::from_secs(19));
        // The answer whose ask holds is the one reported.
        assert_eq!(shared.api_asked_by.load(Ordering::Relaxed), 429);
        shared.spare_api_for(Duration::from_secs(30), 503);
        assert_eq!(shared.api_asked_by.load(Ordering::Relaxed), 503);
        shared.api_answered();
        assert_eq!(shared.api_asked_for(), None);
    }

    /// A call refused because the API asked to be spared does not extend how
    /// long it is spared: it reports the wait, and the API is asked again once
    /// the five minutes (here, what is left of them) have passed.
    #[tokio::test]
    async fn a_refused_call_does_not_extend_the_wait() {
        let server = httpmock::MockServer::start_async().await;
        server
            .mock_async(|when, then| {
                when.path("/api/users/user1/machines");
                then.status(429).header("retry-after", "3600");
            })
            .await;
        let client = crate::Client::builder()
            .base_url(server.base_url())
            .credential(crate::StaticToken::new("t"))
            .build()
            .unwrap();
        let shared = &client.raw().inner.0;
        client.user_machines("user1").await.unwrap_err();
        assert!(shared.api_spared_for().unwrap() > Duration::from_secs(299));
        // As if 200 s had passed.
        let later = (std::time::Instant::now() + Duration::from_secs(100))
            .duration_since(shared.epoch)
            .as_nanos();
        shared
            .api_spared_until
            .store(u64::try_from(later).unwrap(), Ordering::Relaxed);
        match client.user_machines("user2").await.unwrap_err() {
            Error::Throttled {
                retry_after: Some(wait),
            } => assert!(wait > Duration::from_secs(3590), "{wait:?}"),
            other => panic!("{other:?}"),
        }
        let left = shared.api_spared_for().unwrap();
        assert!(left <= Duration::from_secs(100), "{left:?}");
    }

    /// A request's URL made from the parsed base URL is the one parsing the
    /// whole text gives, for every base URL `build()` takes and any path; what
    /// it cannot make that way is parsed whole.
    #[test]
    fn request_urls_made_on_the_parsed_base_are_the_parsed_ones() {
        let bases = [
            "https://api.security.microsoft.com",
            "https://API.Security.Microsoft.com:443/",
            "https://api-gcc.securitycenter.microsoft.us",
            "https://proxy.example/defender",
            "https://proxy.example/defender/",
            "https://proxy.example/a/b/./",
            "https://proxy.example/a/.",
            "https://proxy.example/a/..",
            "https://proxy.example/a/%2e",
            "https://proxy.example/a/%2E%2e/b",
            "https://proxy.example/a//",
            "https://proxy.example//",
            "https://proxy.example/%7Euser/st%C3%A4m",
            "https://proxy.example/st\u{e4}m",
            "https://proxy.example/a b",
            "https://xn--bcher-kva.example",
            "https://b\u{fc}cher.example:8443/x",
            "https://[::1]:8080/p",
            "http://127.0.0.1:1234",
            "http://localhost:80/",
            "https://svc:pw@proxy.example/x",
        ];
        let paths = [
            "/api/users/user1/machines",
            "/api/users/user1%40contoso.com/machines",
            "/api/users/../machines",
            "/api/users/%2e%2e/machines",
            "/api/users/./machines",
            "/api/users/.%2E/machines",
            "/api/users//machines",
            "//api/users/u/machines",
            "/",
            "/..",
            "/api/users/u/machines/",
            "/api/users/%/machines",
            "/api/users/%zz%41/machines",
            "/api/users/a:b/machines",
            "/api/users/~!$&'()*+,;=:@/machines",
            "/api/users/[x]{y}|^`\"<>/machines",
            "/api/users/u/machines?$top=1",
            "/api/users/u#f/machines",
            "/api/users/a\\b/machines",
            "/api/users/a b/machines",
            "/api/users/a\tb/machines",
            "/api/users/\u{e4}/machines",
            "api/users/u/machines",
            "",
        ];
        let (mut made, mut built) = (0, 0);
        for base in bases {
            // (Refused by `build()`: with user info, or a dot segment.)
            let Ok(client) = crate::Client::builder()
                .base_url(base)
                .credential(crate::StaticToken::new("t"))
                .build()
            else {
                continue;
            };
            built += 1;
            let shared = &client.raw().inner.0;
            let base = client.raw().baseurl.as_str();
            for path in paths {
                let text = format!("{base}{path}");
                let made_here = operation_url(shared, base, &text);
                let Ok(whole) = reqwest::Url::parse(&text) else {
                    assert_eq!(made_here, None, "{text:?}");
                    continue;
                };
                if let Some(url) = made_here {
                    assert_eq!(url.as_str(), whole.as_str(), "{text:?}");
                    assert_eq!(url, whole, "{text:?}");
                    made += 1;
                }
            }
            // Another base URL than the client's is parsed whole.
            let other = "https://elsewhere.example/api/users/u/machines";
            assert_eq!(
                operation_url(shared, "https://elsewhere.example", other),
                None
            );
            assert_eq!(operation_url(shared, base, other), None);
        }
        assert_eq!(built, bases.len() - 6, "{built}");
        assert!(made > built * 10, "{made}");
    }

    /// [`response_value`] reads answers as the generator's `from_response` does,
    /// which it stands in for: a progenitor-client release that changed that
    /// function makes this fail.
    #[tokio::test]
    async fn response_value_reads_answers_as_from_response_does() {
        use progenitor_client::{Error as RawError, ResponseValue};
        type Read = Result<ResponseValue<serde_json::Value>, RawError<()>>;
        let response = |status: u16, body: &'static [u8]| {
            let answer = http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .header("x-many", "1")
                .header("x-many", "2")
                .body(body)
                .unwrap();
            reqwest::Response::from(answer)
        };
        let shown = |read: Read| match read {
            Ok(value) => {
                let head = format!("ok {} {:?}", value.status(), value.headers());
                format!("{head} {}", value.into_inner())
            }
            Err(RawError::InvalidResponsePayload(bytes, e)) => format!("payload {bytes:?} {e}"),
            Err(other) => format!("other {other}"),
        };
        for (status, body) in [
            (200, &br#"{"value":[{"id":"m1"}]}"#[..]),
            (404, br#"{"error":{"code":"NotFound"}}"#),
            (200, b""),
            (200, b"not json"),
            (200, b"\xEF\xBB\xBF{}"),
            (500, br#"{"a":1} trailing"#),
        ] {
            let ours: Read = response_value(response(status, body)).await;
            let theirs: Read = ResponseValue::from_response(response(status, body)).await;
            assert_eq!(shown(ours), shown(theirs), "{status} {body:?}");
        }
    }

    /// Checks `url` against a base URL on its own origin.
    fn check(url: &str) -> Result<(), Error> {
        let url = reqwest::Url::parse(url).unwrap();
        let base = reqwest::Url::parse(&url[..url::Position::BeforePath]).unwrap();
        check_url(&url, &base, "get_user_machines")
    }

    #[test]
    fn guard_refuses_another_origin() {
        let base = reqwest::Url::parse("https://api.security.microsoft.com").unwrap();
        for url in [
            "https://evil.example/api/users/u/machines",
            "https://api.security.microsoft.com:8443/api/users/u/machines",
            "http://127.0.0.1/api/users/u/machines",
        ] {
            let url = reqwest::Url::parse(url).unwrap();
            let err = check_url(&url, &base, "get_user_machines").unwrap_err();
            assert!(
                err.to_string().contains("only to the client's base URL"),
                "{err}"
            );
        }
    }

    #[test]
    fn guard_accepts_one_segment() {
        check("https://api.security.microsoft.com/api/users/user1/machines").unwrap();
        check("https://h/api/users/o'brien%20j/machines").unwrap();
        check("https://h/api/users/.../machines").unwrap();
        check("https://h/api/users/%2525/machines").unwrap();
        check_url(
            &reqwest::Url::parse("https://proxy/defender/api/users/u/machines").unwrap(),
            &reqwest::Url::parse("https://proxy/defender").unwrap(),
            "get_user_machines",
        )
        .unwrap();
    }

    #[test]
    fn a_template_s_parameters_each_fill_one_segment() {
        let two = "/a/{x}/b/{y}";
        assert!(path_matches("/a/1/b/2", two));
        assert!(path_matches("/a/%31/b/two%20words", two));
        for path in [
            "/a/1/b",
            "/a/1/b/",
            "/a/1/b/2/",
            "/a//b/2",
            "/a/1/c/2",
            "/a/1/2/b/3",
            "",
        ] {
            assert!(!path_matches(path, two), "{path}");
        }
        assert!(path_matches("/a/x", "/a/{x}"));
        assert!(!path_matches("/a/x/", "/a/{x}"));
        assert!(path_matches("x/a", "{x}/a"));
        assert!(path_matches("/a", "/a"));
        assert!(!path_matches("/a/", "/a"));
        // A parameter inside a segment, or one left open, matches nothing.
        for template in [
            "/a/x{y}",
            "/a/{y}x",
            "/a/{y}{z}",
            "/a/{y",
            "/{/{y}",
            "/a/{y/z}",
        ] {
            assert!(!path_matches("/a/xy", template), "{template}");
            assert!(!path_matches("/a/y", template), "{template}");
            assert!(!path_matches("/a", template), "{template}");
        }
    }

    #[test]
    fn guard_refuses_other_paths() {
        for url in [
            "https://h/api/machines",
            "https://h/api/users/a/b/machines",
            "https://h/api/users//machines",
            "https://h/api/users/%2e%2e/machines",
            "https://h/api/users/%2E/machines",
            "https://h/api/users/a%2Fb/machines",
            "https://h/api/users/a%5cb/machines",
            "https://h/api/users/u/machines/x",
            "https://h/api/users/u/machines/",
            "https://h/api/users/u/machinesx",
            "https://h/api/usersx/u/machines",
            "https://h/api/users/u",
            "https://h/x/api/users/u/machines",
            "http://example.com/api/users/u/machines",
        ] {
            assert!(check(url).is_err(), "{url} was accepted");
        }
        assert!(check_url(
            &reqwest::Url::parse("https://h/api/users/u/machines").unwrap(),
            &reqwest::Url::parse("https://h").unwrap(),
            "no_such_operation"
        )
        .is_err());
    }

    #[test]
    fn user_info_is_redacted() {
        for (input, shown) in [
            (
                "https://svc:PW@proxy.example/x",
                "https://***@proxy.example/x",
            ),
            ("https://PW@h", "https://***@h"),
            ("svc:PW@h/a@b", "***@b"),
            ("https://a@b:PW@h?q=@", "https://***@"),
            (
                "https://svc@corp.example:2024/PWSECRET@h/",
                "https://***@h/",
            ),
            // An `@` in a path is hidden with what comes before it: a password
            // `2024/pw` reads as a port and a path.
            ("https://h/p@x", "https://***@x"),
            (
                "https://svc:2024/PW@proxy.example",
                "https://***@proxy.example",
            ),
            ("https://svc:42?PW@h", "https://***@h"),
            ("https://h/path", "https://h/path"),
            // Not URLs: a `/`, `?`, `#` or `\` in the password ends the authority.
            (
                "https://svc:pa/ss-PW@proxy.example",
                "https://***@proxy.example",
            ),
            ("https://svc:pa?ss-PW@h/x", "https://***@h/x"),
            ("https://svc:pa#ss-PW@h", "https://***@h"),
            ("https://svc:pa\\ss-PW@h", "https://***@h"),
            ("https://svc:PW@h:99999", "https://***@h:99999"),
            ("not a url", "not a url"),
            ("", ""),
            // Read as URLs with user info, however many slashes follow the scheme.
            ("https:/svc:PW@proxy.example", "https:/***@proxy.example"),
            ("https:///svc:PW@h/x", "https:///***@h/x"),
            ("HTTPS:/svc:PW@h", "HTTPS:/***@h"),
            ("http:/svc:PW@127.0.0.1:8080", "http:/***@127.0.0.1:8080"),
            ("https:/\\svc:PW@h", "https:/\\***@h"),
            ("https:svc:PW@h", "***@h"),
            // What the parser drops before the scheme does not hide user info.
            (" https://svc:PW@h/", " https://***@h/"),
            ("\thttps:/svc:PW@h", "\thttps:/***@h"),
            // Nor what it drops inside the scheme or after it.
            ("ht\ttps://svc:PW@h", "***@h"),
            ("https:\t//svc:PW@h", "***@h"),
            ("https:/\t/svc:PW@h/x", "https:/***@h/x"),
            ("https:\n//svc:PW@h", "***@h"),
        ] {
            assert_eq!(redact_user_info(input), shown, "{input}");
        }
        let err = normalise_service_url("https://svc:PW@h", "base URL", "https://svc:PW@h")
            .unwrap_err()
            .to_string();
        assert!(err.contains("user info") && !err.contains("PW"), "{err}");
        // Not quietly another URL: the parser would drop these.
        for url in [
            "https://h/p\tq",
            "https://h/defen\nder",
            "https://lo\rgin.example",
        ] {
            let err = normalise_service_url(url, "base URL", url)
                .unwrap_err()
                .to_string();
            assert!(err.contains("control character"), "{err}");
        }
    }

    /// `may_use_a_proxy` reads reqwest's `Debug`: this fails if that changes.
    #[test]
    fn clients_that_may_use_a_proxy_are_recognised() {
        let plain = reqwest::Client::new();
        let direct = reqwest::Client::builder().no_proxy().build().unwrap();
        let proxied = reqwest::Client::builder()
            .no_proxy()
            .proxy(reqwest::Proxy::http("http://proxy.example:3128").unwrap())
            .build()
            .unwrap();
        assert!(may_use_a_proxy(&plain));
        assert!(!may_use_a_proxy(&direct));
        assert!(may_use_a_proxy(&proxied));
        let url = "http://127.0.0.1:9";
        let err = check_own_client_for_plain_http(&plain, url, "base URL").unwrap_err();
        assert!(err.to_string().contains("no_proxy()"), "{err}");
        assert!(check_own_client_for_plain_http(&direct, url, "base URL").is_ok());
        assert!(check_own_client_for_plain_http(&plain, "https://h", "base URL").is_ok());
    }

    #[test]
    fn loopback_only_for_http() {
        for ok in [
            "https://example.com",
            "http://127.0.0.1:8080",
            "http://127.9.9.9",
            "http://[::1]:1",
            "http://localhost:3000",
            "http://LOCALHOST",
        ] {
            assert!(is_secure(&reqwest::Url::parse(ok).unwrap()), "{ok}");
        }
        for bad in [
            "http://example.com",
            "http://10.0.0.1",
            "http://localhost.example.com",
            "http://[::2]",
            "ftp://127.0.0.1",
        ] {
            assert!(!is_secure(&reqwest::Url::parse(bad).unwrap()), "{bad}");
        }
    }
}
