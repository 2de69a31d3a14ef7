//! [`Client`] and [`ClientBuilder`]: the calls users make.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures_util::{stream, Stream, StreamExt};
use tracing::Instrument;

use crate::{
    auth::{
        cache::{Bearer, TokenCache},
        IntoCredential, TokenCredential,
    },
    cloud::Cloud,
    error::redact_cut,
    generated,
    hooks::{self, Attempt, Inner, Shared, ATTEMPT},
    quota::{RateLimit, RateLimiter},
    retry::RetryPolicy,
    types::{self, Machine},
    Error, UserName,
};

/// The commercial cloud's API base, the default of [`ClientBuilder::base_url`].
pub const DEFAULT_BASE_URL: &str = "https://api.security.microsoft.com";

/// The `User-Agent` of every request: `defender-endpoint/<version>`.
pub const USER_AGENT: &str = concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_PKG_VERSION"));

/// The most pages one call fetches, the first included: a server that keeps
/// sending new `@odata.nextLink`s costs a call no more than this many requests
/// of the quota. (Defender pages its lists at 10,000 entities at most.)
const MAX_PAGES: usize = 100;

/// A byte order mark, which may come before JSON and which a parser may ignore
/// (RFC 8259, 8.1).
pub(crate) const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The least time an attempt gets, however little of the retry budget is left:
/// a call that waited as `Retry-After` asked, up to the end of its budget, still
/// gets an answer (or its 429) instead of a timeout at once.
pub(crate) const MIN_ATTEMPT: Duration = Duration::from_secs(1);

/// The default limit on the size of an answer's body (after decompression): 64 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// A client of the Defender for Endpoint API.
///
/// Cheap to clone (clones share the connection pool, the token cache and the
/// quota) and `Send + Sync`. Its `Debug` never shows a token. Its calls run on
/// a Tokio runtime (with time and I/O); outside one they return
/// [`Error::Config`], and in a runtime built without time or I/O they panic
/// inside Tokio.
///
/// ```no_run
/// # async fn run(token: String) -> Result<(), defender_endpoint::Error> {
/// use defender_endpoint::{Client, StaticToken};
///
/// let client = Client::builder().credential(StaticToken::new(token)).build()?;
/// for machine in client.user_machines("user1@contoso.com").await? {
///     println!("{} {:?}", machine.id, machine.computer_dns_name);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    raw: generated::Client,
    retry: RetryPolicy,
    counters: Arc<Counters>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.raw.baseurl)
            .field("scope", &self.raw.inner.0.tokens.scope())
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts configuring a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The API base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.raw.baseurl
    }

    /// The generated client underneath, for operations this wrapper does not cover.
    ///
    /// Requests made through it still pass the hooks (token, path guard, quota,
    /// body limit) but get no retries and no error mapping. They go out through
    /// this client's HTTP transport (its redirect and proxy rules), even from a
    /// generated client made anew on its hooks around another `reqwest::Client`.
    /// While the API asks to be spared (a `Retry-After` any call of the client
    /// got), they are not sent, and fail as that answer did (429, or 503).
    pub fn raw(&self) -> &raw::Client {
        &self.raw
    }

    /// The machines related to `user` (`GET /api/users/{id}/machines`).
    ///
    /// `user` may be a UPN (`user1@contoso.com`), a down-level name
    /// (`CONTOSO\user1`) or a bare user name; it is normalised by
    /// [`UserName::parse`], and nothing is sent if that fails. A user Defender
    /// does not know yields an empty list (whether the service answers 200 with
    /// an empty `value` or, as it used to, 404; a 404 without Defender's error
    /// envelope is logged as a warning, since a wrong base URL gets one too). A
    /// 200 answer without a `value`
    /// array (an error object, a single machine, a misspelt member) is an
    /// [`Error::Decode`], not a user without machines.
    ///
    /// Failed attempts are retried as the client's [`RetryPolicy`] says. The
    /// collection's own members (`@odata.context`, …) are left out;
    /// [`user_machine_pages`](Self::user_machine_pages) keeps them.
    pub async fn user_machines(&self, user: impl AsRef<str>) -> Result<Vec<Machine>, Error> {
        let name = UserName::parse(user.as_ref())?;
        self.machines_of(&name).await
    }

    /// [`user_machines`](Self::user_machines) for a name that is already parsed.
    pub async fn machines_of(&self, user: &UserName) -> Result<Vec<Machine>, Error> {
        // Cannot fail: the user-name rule is stricter than the spec's length limits.
        let id = types::GetUserMachinesId::try_from(user.as_str())
            .map_err(|e| Error::Config(format!("user name outside the spec's limits: {e}")))?;
        self.collect(user, || self.raw.get_user_machines(&id)).await
    }

    /// The machines of `user` as the API sent them, each a JSON object, without
    /// decoding them into [`Machine`].
    ///
    /// The same call as [`user_machines`](Self::user_machines): the same user-name
    /// rule, hooks, quota, retries, error answers and paging. For when a field
    /// holds what the spec does not allow (say `"osBuild": "19045"`), which makes
    /// `user_machines` fail with an [`Error::Decode`] that names the field and the
    /// machine, and the machines are still wanted; each one may then be decoded
    /// on its own, `serde_json::from_value::<Machine>(Value::Object(m))`.
    ///
    /// ```no_run
    /// # async fn run(client: defender_endpoint::Client) -> Result<(), defender_endpoint::Error> {
    /// for machine in client.user_machines_json("user1@contoso.com").await? {
    ///     println!("{:?} {:?}", machine.get("id"), machine.get("osBuild"));
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn user_machines_json(
        &self,
        user: impl AsRef<str>,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, Error> {
        let user = UserName::parse(user.as_ref())?;
        // The URL the generated operation builds; the request hook checks it the same way.
        let url = self.machines_url(&user)?;
        self.collect(&user, || self.get_page::<JsonPage>(url.clone()))
            .await
    }

    /// Every page of the answer for `user`, each as the API sent it: its machines,
    /// its `@odata.context`, and in `extra` any other member of the collection
    /// (`@odata.count`, the `@odata.nextLink` that led to the next page, members
    /// the spec does not describe), which [`user_machines`](Self::user_machines)
    /// leaves out. Serialised, each page gives back what the API sent (see
    /// [`types`](crate::types) for what a round trip keeps).
    ///
    /// The same call as `user_machines`: the same user-name rule, hooks, quota,
    /// retries, error answers and paging. A user Defender does not know yields no
    /// pages when the service answers 404, and one page with an empty `value` when
    /// it answers 200.
    ///
    /// ```no_run
    /// # async fn run(client: defender_endpoint::Client) -> Result<(), defender_endpoint::Error> {
    /// let pages = client.user_machine_pages("user1@contoso.com").await?;
    /// if let Some(first) = pages.first() {
    ///     println!("{:?}: {} machines", first.odata_context, first.value.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn user_machine_pages(
        &self,
        user: impl AsRef<str>,
    ) -> Result<Vec<types::MachineCollection>, Error> {
        let user = UserName::parse(user.as_ref())?;
        let url = self.machines_url(&user)?;
        self.collect(&user, || self.get_page::<WholePage>(url.clone()))
            .await
    }

    /// One call for the machines of `user`: its first page from `first`, under
    /// the retry policy, then every page `@odata.nextLink` leads to.
    async fn collect<P: Page, F, Fut>(
        &self,
        user: &UserName,
        first: F,
    ) -> Result<Vec<P::Item>, Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<
            Output = Result<raw::ResponseValue<P>, raw::Error<types::ErrorEnvelope>>,
        >,
    {
        let span = tracing::info_span!(
            "defender.call",
            operation = "get_user_machines",
            attempts = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        tracing::debug!(parent: &span, user = %user, "looking up the machines of a user");
        if let Some(oddity) = user.oddity() {
            // The name itself only at debug level, above.
            tracing::warn!(
                parent: &span,
                "the user name {oddity}: Defender is unlikely to know it, and answers \
                 such a name with no machines"
            );
        }
        async {
            // One budget for the whole call, every page included.
            let mut budget = Budget::start(self.raw.inner.0.max_body);
            let first = self.with_retries(first, user, &mut budget).await;
            match first? {
                Some((first, token)) => {
                    let all = self
                        .follow_next_links(first, token, user, &mut budget)
                        .await;
                    // A next page that cannot be had fails the call: said in its
                    // span, as the retry loop says its own failures.
                    if let Err(error) = &all {
                        if !budget.failure_logged {
                            tracing::warn!(
                                attempts = budget.sent(),
                                error = %logged(error, user),
                                "giving up: the rest of the answer cannot be had"
                            );
                        }
                    }
                    all
                }
                None => {
                    // (A next page's 404 fails the call instead.)
                    if budget.foreign_404 {
                        tracing::warn!(
                            "404 without Defender's error envelope, taken as an unknown \
                             user; if every user gets it, check the base URL"
                        );
                    }
                    Ok(Vec::new())
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Collects the machines of `page` and of every page its `@odata.nextLink` leads to.
    ///
    /// Defender documents no paging for this endpoint, but OData services add
    /// `@odata.nextLink` when an answer is cut; following it means no machine is
    /// silently dropped. A link must lead to the same user's machines, which are
    /// fetched from the client's base URL whatever host the link names (see
    /// `next_page_url`), and may not repeat.
    async fn follow_next_links<P: Page>(
        &self,
        mut page: P,
        mut token: Option<Bearer>,
        user: &UserName,
        budget: &mut Budget,
    ) -> Result<Vec<P::Item>, Error> {
        let mut machines = page.take_items();
        let mut followed = std::collections::HashSet::new();
        // The first page's URL, made when there is a next page.
        let mut first_url: Option<reqwest::Url> = None;
        loop {
            // The link as it may be shown: without the token the page's request
            // carried (the service could echo it), and cut short.
            // (Only for an error: reading the token out of its header is not free.)
            let shown = |link: &str| {
                let secret = token.as_ref().map(Bearer::secret);
                redact_cut(link, secret.as_deref().unwrap_or(""), 200)
            };
            let link = match page.next_link() {
                None | Some(serde_json::Value::Null) => break,
                Some(serde_json::Value::String(link)) => link,
                Some(other) => {
                    return Err(Error::Decode {
                        status: 200,
                        message: format!(
                            "@odata.nextLink is {}, not a link: the rest of the machines \
                             cannot be fetched",
                            json_kind(other)
                        ),
                    })
                }
            };
            let first = match &mut first_url {
                Some(url) => &*url,
                None => {
                    let url = self.machines_url(user)?;
                    // The first page is followed too: a link back to it (`""`,
                    // `"#top"`) repeats it.
                    followed.insert(url.clone());
                    first_url.insert(url)
                }
            };
            let url = self
                .next_page_url(link, first, user)
                .map_err(|message| Error::Decode {
                    status: 200,
                    message: format!(
                        "refusing to follow @odata.nextLink {:?}: {message}",
                        shown(link)
                    ),
                })?;
            // `followed` holds every page fetched so far.
            if followed.len() >= MAX_PAGES || !followed.insert(url.clone()) {
                return Err(Error::Decode {
                    status: 200,
                    message: format!(
                        "@odata.nextLink {:?} repeats or leads past {MAX_PAGES} pages",
                        shown(link)
                    ),
                });
            }
            tracing::debug!(page = followed.len(), "following @odata.nextLink");
            (page, token) = match self
                .with_retries(|| self.get_page::<P>(url.clone()), user, budget)
                .await?
            {
                Some(next) => next,
                // The first page said there is more: a missing page is a failure,
                // not the end of the list.
                None => {
                    return Err(Error::Api {
                        status: 404,
                        code: None,
                        message: Some(format!(
                            "page {} of the answer (@odata.nextLink) is not found; \
                             the list of machines would be incomplete",
                            followed.len()
                        )),
                        target: None,
                    })
                }
            };
            machines.append(&mut page.take_items());
        }
        Ok(machines)
    }

    /// The URL of `user`'s machines on the client's base URL, as the generated
    /// operation builds it.
    fn machines_url(&self, user: &UserName) -> Result<reqwest::Url, Error> {
        let url = format!(
            "{}/api/users/{}/machines",
            self.raw.baseurl,
            crate::user::encode_segment(user.as_str())
        );
        match hooks::operation_url(&self.raw.inner.0, &self.raw.baseurl, &url) {
            Some(parsed) => Ok(parsed),
            None => reqwest::Url::parse(&url)
                .map_err(|e| Error::Config(format!("cannot build the request URL: {e}"))),
        }
    }

    /// The URL of the page a next-page link leads to: the machines of the same
    /// `user` (the service may spell the name in another case), with the link's
    /// query, always on the client's own base URL. A link written for another
    /// host (a former API host name, or the service behind a proxy) is fetched
    /// from the base URL too, so the token never leaves it; a link to anything
    /// but this user's machines is refused. A relative link is read against
    /// `first`, the URL of the answer's first page.
    fn next_page_url(
        &self,
        link: &str,
        first: &reqwest::Url,
        user: &UserName,
    ) -> Result<reqwest::Url, String> {
        let url = first
            .join(link)
            .map_err(|e| format!("it is not a URL: {e}"))?;
        // The path's own words in any case (OData paths are not case-sensitive):
        // the next request is made with the path spelt as the spec has it.
        let path = url.path();
        let lower = path.to_ascii_lowercase();
        let segment = lower
            .strip_suffix("/machines")
            .and_then(|rest| rest.rfind("/api/users/").map(|at| (at, rest.len())))
            .map(|(at, end)| &path[at + "/api/users/".len()..end])
            .filter(|segment| {
                !segment.contains('/')
                    && percent_encoding::percent_decode_str(segment)
                        .decode_utf8()
                        .is_ok_and(|name| user.is_same_name(&name))
            });
        let Some(segment) = segment.filter(|_| matches!(url.scheme(), "https" | "http")) else {
            return Err(format!(
                "it leaves the machines of this user at {}",
                self.raw.baseurl
            ));
        };
        // The user as the link spells it, under the client's base URL.
        let base = &self.raw.inner.0.base_url;
        let mut next = base.clone();
        next.set_path(&format!(
            "{}/api/users/{segment}/machines",
            base.path().trim_end_matches('/')
        ));
        next.set_query(url.query());
        if url.origin() != base.origin() || url.path() != next.path() {
            tracing::debug!(
                "@odata.nextLink names another host or base path: following it on the \
                 client's base URL"
            );
        }
        Ok(next)
    }

    /// One page at `url`, through the same hooks as the generated call.
    async fn get_page<T: serde::de::DeserializeOwned>(
        &self,
        url: reqwest::Url,
    ) -> Result<raw::ResponseValue<T>, raw::Error<types::ErrorEnvelope>> {
        use progenitor_client::{ClientHooks, OperationInfo};
        let mut request = self
            .raw
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .build()?;
        let info = OperationInfo {
            operation_id: "get_user_machines",
        };
        self.raw.pre(&mut request, &info).await?;
        let result = self.raw.exec(request, &info).await;
        self.raw.post(&result, &info).await?;
        let response = result?;
        match response.status().as_u16() {
            200 => crate::hooks::response_value(response).await,
            400..=599 => Err(raw::Error::ErrorResponse(
                crate::hooks::response_value(response).await?,
            )),
            _ => Err(raw::Error::UnexpectedResponse(response)),
        }
    }

    /// The machines of many users, looked up at most `concurrency` at a time
    /// (`0` counts as `1`).
    ///
    /// Yields one `(input, result)` pair for every input, in the order the
    /// lookups finish (not the input order). Each input has its own result: a
    /// name that breaks the user-name rule yields [`Error::InvalidUserName`] for
    /// that input only (and sends nothing), and a failed call fails only the
    /// inputs it was made for.
    ///
    /// Inputs that normalise to the same [`UserName`] (`user1@contoso.com`,
    /// `CONTOSO\user1`, `user1`), ignoring case as Windows does (`USER1`; each
    /// character upper-cased on its own, so `K`, the Kelvin sign, is not `k`),
    /// are looked up once, with the first input's spelling, and every one of
    /// them gets the answer (machines and errors are cloned).
    ///
    /// The lookups go through this client, so its quota ([`RateLimit`]) and
    /// [`RetryPolicy`] apply to each of them, and [`stats`](Self::stats) counts them.
    /// The inputs are read up front; nothing is sent until the stream is polled.
    /// Read it with `StreamExt::next` of the `futures-util` (or `futures`)
    /// crate, a dependency of your own, as below.
    /// Each lookup then runs as a Tokio task of its own, so it goes on while the
    /// consumer is busy between items, and dropping the stream cancels the
    /// lookups in flight. The stream owns a clone of the client, so it can outlive
    /// `self` and be moved to another task.
    ///
    /// ```no_run
    /// # async fn run(client: defender_endpoint::Client) {
    /// use futures_util::StreamExt;
    ///
    /// let users = ["user1@contoso.com", "CONTOSO\\user2", "user3"];
    /// let mut results = client.machines_for_users(users, 4);
    /// while let Some((user, result)) = results.next().await {
    ///     match result {
    ///         Ok(machines) => println!("{user}: {} machines", machines.len()),
    ///         Err(error) => eprintln!("{user}: {error}"),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn machines_for_users<I>(
        &self,
        users: I,
        concurrency: usize,
    ) -> impl Stream<Item = (String, Result<Vec<Machine>, Error>)> + Send + 'static
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let mut rejected = Vec::new();
        let mut groups: Vec<(UserName, Vec<String>)> = Vec::new();
        // User names are case-insensitive in Active Directory and in the API,
        // compared character by character upper-cased (`UserName::case_key`).
        let mut seen: HashMap<String, usize> = HashMap::new();
        for input in users {
            let input: String = input.into();
            match UserName::parse(&input) {
                Err(e) => rejected.push((input, Err(Error::InvalidUserName(e)))),
                Ok(name) => match seen.entry(UserName::case_key(name.as_str()).collect()) {
                    std::collections::hash_map::Entry::Occupied(i) => {
                        groups[*i.get()].1.push(input)
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(groups.len());
                        groups.push((name, vec![input]));
                    }
                },
            }
        }
        let client = self.clone();
        let lookups = stream::iter(groups)
            .map(move |(name, inputs)| {
                // A task of its own, so that a lookup goes on while the consumer is
                // busy between items: a request nobody polls would run into its
                // timeout. Dropping the stream cancels the lookups in flight.
                let client = client.clone();
                let lookup = async move { client.machines_of(&name).await };
                let lookup = match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => Ok(Lookup(runtime.spawn(lookup.in_current_span()))),
                    Err(_) => Err(no_runtime()),
                };
                async move {
                    let result = match lookup {
                        Ok(lookup) => lookup.await,
                        Err(error) => Err(error),
                    };
                    stream::iter(share(inputs, result))
                }
            })
            .buffer_unordered(concurrency.max(1))
            .flatten();
        stream::iter(rejected).chain(lookups)
    }

    /// What this client (and its clones) did so far: attempts, retries, and
    /// the time spent waiting for 429s and for the client-side quota.
    pub fn stats(&self) -> ClientStats {
        let c = &*self.counters;
        let micros = |a: &AtomicU64| Duration::from_micros(a.load(Ordering::Relaxed));
        ClientStats {
            attempts: c.attempts.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
            throttle_wait: micros(&c.throttle_wait_us),
            quota_wait: micros(&c.quota_wait_us),
        }
    }

    /// Runs one generated call under the retry policy, mapping its outcome to
    /// [`Error`]; `None` for a 404 (an unknown user). `budget` is the whole
    /// call's: every page of an answer draws on it.
    async fn with_retries<T: serde::de::DeserializeOwned, F, Fut>(
        &self,
        call: F,
        user: &UserName,
        budget: &mut Budget,
    ) -> Result<Option<(T, Option<Bearer>)>, Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<
            Output = Result<raw::ResponseValue<T>, raw::Error<types::ErrorEnvelope>>,
        >,
    {
        let policy = &self.retry;
        let mut attempt = 0u32;
        let mut refreshed = false;
        let counters = &*self.counters;
        let shared = &self.raw.inner.0;
        loop {
            attempt += 1;
            // What is left of the budget bounds the attempt too (its token request,
            // and its request when that would end before the attempt's own
            // timeout), though every attempt gets at least `MIN_ATTEMPT`.
            let left = policy.budget.saturating_sub(budget.spent());
            // (A budget too large for the clock, `Duration::MAX`, is a year: no
            // deadline at all is how the hooks know a call through `raw`.)
            let now = Instant::now();
            let deadline = now
                .checked_add(left.max(MIN_ATTEMPT))
                .or_else(|| now.checked_add(crate::quota::MAX_WINDOW));
            let report = Box::new(Attempt {
                deadline: deadline.into(),
                budget_end: now.checked_add(left).into(),
                body_left: Some(budget.body_left).into(),
                ..Attempt::default()
            });
            let (result, mut report) = {
                let scoped = std::pin::pin!(ATTEMPT.scope(report, async {
                    let result = call().await;
                    (result, ATTEMPT.with(|a| a.take()))
                }));
                // Counts the request if it went out, also when the call is
                // dropped while it waits for the answer.
                let mut counted = CountSent {
                    attempt: scoped,
                    sent: &budget.sent,
                    counters,
                    finished: false,
                };
                let ended = counted.attempt.as_mut().await;
                counted.finished = true;
                ended
            };
            // An attempt that ended counts, sent or refused here; one dropped
            // before it sent its request does not (see `CountSent`).
            counters.attempts.fetch_add(1, Ordering::Relaxed);
            counters.add_wait(&counters.quota_wait_us, report.quota_wait);
            counters.add_wait(&counters.throttle_wait_us, report.spared_wait);
            budget.quota_waited += report.quota_wait;
            budget.status = report.status.or(budget.status);
            let outcome = classify(result, &mut report, user);
            let mut error = match outcome {
                Ok(value) => {
                    // Only a page that came whole counts against the limit, not
                    // an attempt that failed (cut short, say, after its length
                    // was declared).
                    budget.body_left = budget.body_left.saturating_sub(report.body_read);
                    return Ok(Some((value.into_inner(), report.token)));
                }
                Err(Outcome::Empty { defenders }) => {
                    budget.foreign_404 = !defenders;
                    return Ok(None);
                }
                Err(Outcome::Fail(error)) => error,
            };
            if let Some(token) = &report.token {
                error.redact(&token.secret());
            }
            // The user name is logged at debug level only: where the service's
            // words repeat it, it is blanked from what is logged.
            let logged = logged(&error, user);
            if let Some(target) = error.target() {
                let target = blank_user(target, user);
                tracing::warn!(attempt = budget.sent(), target, error = %logged, "Defender API error");
            }

            // 401: the token may have been revoked or expired early; refresh once.
            if error.status() == Some(401) && !refreshed {
                if let Some(token) = &report.token {
                    refreshed = true;
                    self.raw.inner.0.tokens.invalidate(token);
                    tracing::debug!(
                        attempt = budget.sent(),
                        "401: refreshing the token and retrying once"
                    );
                    counters.retries.fetch_add(1, Ordering::Relaxed);
                    attempt -= 1;
                    continue;
                }
            }

            // (A `Retry-After` of the API holds for every call of the client:
            // the hooks note it as the answer comes.)
            let wait = match &error {
                // A 429 that does not say how long: this call backs off on its
                // own. (Held back together, the client's calls would all be
                // sent again at the one moment the longest backoff ends; drawn
                // apart, they are spread, and the quota bounds their rate.)
                Error::Throttled { retry_after } => {
                    Some(retry_after.unwrap_or_else(|| policy.backoff(attempt)))
                }
                // A 503 may say when to come back; otherwise back off.
                Error::Api {
                    status: 500 | 502 | 503 | 504,
                    ..
                } => Some(
                    report
                        .retry_after
                        .unwrap_or_else(|| policy.backoff(attempt)),
                ),
                Error::Transport(e) if !e.is_builder() && !e.is_redirect() => {
                    Some(policy.backoff(attempt))
                }
                // Entra ID throttles and fails transiently too, and may say when
                // to come back (kept by the token cache for every caller).
                Error::Credential {
                    status: Some(429 | 500 | 502 | 503 | 504),
                    ..
                } => Some(
                    self.raw
                        .inner
                        .0
                        .tokens
                        .throttled_for()
                        .unwrap_or_else(|| policy.backoff(attempt)),
                ),
                Error::Timeout => Some(policy.backoff(attempt)),
                _ => None,
            };
            let Some(wait) = wait else {
                // (An error answer with a target was logged above.)
                if error.target().is_none() {
                    tracing::warn!(attempts = budget.sent(), error = %logged, "giving up: not retried");
                }
                budget.failure_logged = true;
                return Err(error);
            };
            if attempt >= policy.max_attempts {
                tracing::warn!(attempts = budget.sent(), error = %logged, "giving up: no attempts left");
                budget.failure_logged = true;
                return Err(error);
            }
            // A wait of more than a day (a `Retry-After` of 99999999999999999999),
            // the most that is reported as asked, is not waited for, whatever
            // the budget.
            if budget.spent().saturating_add(wait) > policy.budget
                || wait > crate::hooks::Shared::MAX_ASKED
            {
                tracing::warn!(
                    attempts = budget.sent(),
                    wait_ms = wait.as_millis() as u64,
                    error = %logged,
                    "giving up: waiting would exceed the retry budget"
                );
                budget.failure_logged = true;
                return Err(error);
            }
            tracing::info!(attempt = budget.sent(), wait_ms = wait.as_millis() as u64, error = %logged, "retrying");
            // A wait a 429 asked for counts as throttling, as far as it went
            // (a call may be dropped during it).
            let throttled = matches!(
                error,
                Error::Throttled { .. }
                    | Error::Credential {
                        status: Some(429),
                        ..
                    }
            );
            let waiting = ThrottleWait {
                counters,
                since: throttled.then(Instant::now),
            };
            tokio::time::sleep(wait).await;
            drop(waiting);
            // Counted once waited: a call dropped during the wait did not retry.
            counters.retries.fetch_add(1, Ordering::Relaxed);
            // The token endpoint's 429 is counted once, by the first call that
            // waited it out.
            let counted = match error {
                Error::Throttled { .. } => true,
                _ => throttled && shared.tokens.waited_on_429(),
            };
            if counted {
                counters.throttled.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// `error` as it is logged: the user name (which is logged at debug level only)
/// blanked where the service's words repeat it, as a word of its own (not
/// `admin` in `administrators`). A name of fewer than three characters cannot
/// be told apart from other words, and is left alone.
fn logged(error: &Error, user: &UserName) -> String {
    // In the texts as the service sent them, before `Display` escapes them: as
    // it is, in any ASCII case, or as a request's path writes it
    // (percent-encoded) or another escape, where it stands as a word.
    let mut error = error.clone();
    error.scrub(|text| blank_user(text, user).into());
    error.to_string()
}

/// `text` with `user` blanked as [`logged`] blanks it.
fn blank_user(text: &str, user: &UserName) -> String {
    let name = user.as_str();
    if name.chars().count() < 3 {
        return text.to_owned();
    }
    crate::auth::endpoint::blank_word(text, name, USER)
}

/// What a user name is logged as, where it is not logged.
const USER: &str = "<user>";

/// The time one call has taken so far, against [`RetryPolicy::budget`].
struct Budget {
    started: Instant,
    /// The requests sent, on every page (see [`CountSent`]), and the last
    /// answer's status.
    sent: AtomicU32,
    /// Whether the retry loop has logged the failure that ends the call.
    failure_logged: bool,
    status: Option<u16>,
    /// What is left of the body limit, which the bodies of every page count
    /// against.
    body_left: usize,
    /// Whether the last answer was a 404 without Defender's error envelope.
    foreign_404: bool,
    /// The call's span, which gets `attempts` and `status` when the call ends
    /// (or is dropped), once: a field recorded again is shown again by some
    /// subscribers, once more for every attempt and page.
    span: tracing::Span,
    /// Waiting for the client-side quota is not the API's doing: it does not
    /// count against the retry budget, or a call queued behind a busy minute
    /// could never retry a 429.
    quota_waited: Duration,
}

impl Budget {
    fn start(body_limit: usize) -> Self {
        Self {
            started: Instant::now(),
            sent: AtomicU32::new(0),
            failure_logged: false,
            status: None,
            body_left: body_limit,
            span: tracing::Span::current(),
            foreign_404: false,
            quota_waited: Duration::ZERO,
        }
    }

    /// The time that counts against the budget.
    fn spent(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.quota_waited)
    }
}

/// One attempt of a call, which adds its request to the call's count of
/// requests sent when it ends, or is dropped, if the request went out.
struct CountSent<'a, F: std::future::Future> {
    attempt: std::pin::Pin<&'a mut tokio::task::futures::TaskLocalFuture<Box<Attempt>, F>>,
    sent: &'a AtomicU32,
    counters: &'a Counters,
    /// The attempt ended (its report is counted by the retry loop): only the
    /// request is counted here.
    finished: bool,
}

impl<F: std::future::Future> Drop for CountSent<'_, F> {
    fn drop(&mut self) {
        if let Some(attempt) = self.attempt.as_mut().take_value() {
            if attempt.sent.get() {
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            if !self.finished {
                // Dropped: the request counts as an attempt if it went out, and
                // the waits count as far as they went.
                let counters = self.counters;
                if attempt.sent.get() {
                    counters.attempts.fetch_add(1, Ordering::Relaxed);
                }
                let so_far = |since: Option<Instant>| since.map_or(Duration::ZERO, |t| t.elapsed());
                counters.add_wait(
                    &counters.quota_wait_us,
                    attempt.quota_wait.get() + so_far(attempt.quota_since.get()),
                );
                counters.add_wait(
                    &counters.throttle_wait_us,
                    attempt.spared_wait.get() + so_far(attempt.spared_since.get()),
                );
            }
        }
    }
}

/// A wait of the retry loop, counted as throttling from `since` (when it is one)
/// to its end or to the drop of the call during it.
struct ThrottleWait<'a> {
    counters: &'a Counters,
    since: Option<Instant>,
}

impl Drop for ThrottleWait<'_> {
    fn drop(&mut self) {
        if let Some(since) = self.since {
            let counters = self.counters;
            counters.add_wait(&counters.throttle_wait_us, since.elapsed());
        }
    }
}

impl Budget {
    /// The requests sent so far.
    fn sent(&self) -> u32 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        self.span.record("attempts", self.sent());
        if let Some(status) = self.status {
            self.span.record("status", status);
        }
    }
}

/// A lookup of [`Client::machines_for_users`] running as a task; cancelled when dropped.
struct Lookup(tokio::task::JoinHandle<Result<Vec<Machine>, Error>>);

impl Drop for Lookup {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::future::Future for Lookup {
    type Output = Result<Vec<Machine>, Error>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|e| match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => Err(Error::Config(
                    "the lookup was cancelled: its runtime is shutting down".into(),
                )),
            })
        })
    }
}

/// One page of the machines of a user: its machines and the link to the next page.
trait Page: serde::de::DeserializeOwned {
    /// One machine.
    type Item;
    /// Takes the page's machines out.
    fn take_items(&mut self) -> Vec<Self::Item>;
    /// The page's `@odata.nextLink`, if it has one.
    fn next_link(&self) -> Option<&serde_json::Value>;
}

impl Page for types::MachineCollection {
    type Item = Machine;

    fn take_items(&mut self) -> Vec<Machine> {
        std::mem::take(&mut self.value)
    }

    fn next_link(&self) -> Option<&serde_json::Value> {
        self.extra.get(NEXT_LINK)
    }
}

/// A page of [`Client::user_machine_pages`]: the whole collection is its item.
#[derive(serde::Deserialize)]
#[serde(transparent)]
struct WholePage(types::MachineCollection);

impl Page for WholePage {
    type Item = types::MachineCollection;

    /// The page, leaving behind only the members `next_link` reads.
    fn take_items(&mut self) -> Vec<Self::Item> {
        vec![types::MachineCollection {
            odata_context: self.0.odata_context.take(),
            value: std::mem::take(&mut self.0.value),
            extra: self.0.extra.clone(),
        }]
    }

    fn next_link(&self) -> Option<&serde_json::Value> {
        self.0.extra.get(NEXT_LINK)
    }
}

/// A page of [`Client::user_machines_json`]: the collection's shape, each machine
/// any JSON object.
/// Decoded like the generated `MachineCollection`: an object with a `value`
/// array, other members (the last of a repeated one) kept aside.
#[derive(serde::Deserialize)]
struct JsonPage {
    value: Vec<serde_json::Map<String, serde_json::Value>>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl Page for JsonPage {
    type Item = serde_json::Map<String, serde_json::Value>;

    fn take_items(&mut self) -> Vec<Self::Item> {
        std::mem::take(&mut self.value)
    }

    fn next_link(&self) -> Option<&serde_json::Value> {
        self.rest.get(NEXT_LINK)
    }
}

/// What kind of JSON value `value` is, for messages that must not quote it.
fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The OData annotation that links to the next page of an answer.
const NEXT_LINK: &str = "@odata.nextLink";

/// How an attempt ended, when it did not succeed.
enum Outcome {
    /// 404: the user is unknown, which the API used to say this way; whether
    /// the answer was Defender's error envelope.
    Empty {
        defenders: bool,
    },
    Fail(Error),
}

impl Attempt {
    fn take(&self) -> Report {
        Report {
            error: self.error.borrow_mut().take(),
            status: self.status.get(),
            retry_after: self.retry_after.get(),
            token: self.token.borrow_mut().take(),
            quota_wait: self.quota_wait.get(),
            spared_wait: self.spared_wait.get(),
            body_read: self.body_read.get(),
            error_body: self.error_body.borrow_mut().take(),
            redirected: self.redirected.borrow_mut().take(),
        }
    }
}

/// What the hooks saw during one attempt.
struct Report {
    error: Option<Error>,
    status: Option<u16>,
    retry_after: Option<Duration>,
    token: Option<Bearer>,
    quota_wait: Duration,
    spared_wait: Duration,
    body_read: usize,
    error_body: Option<bytes::Bytes>,
    redirected: Option<Box<(reqwest::Url, reqwest::Url)>>,
}

/// What a client did since it was built, summed over all its clones
/// ([`Client::stats`]).
///
/// A lookup of [`Client::machines_for_users`] runs as a task of its own: when
/// the stream is dropped, what it did is counted as the runtime ends the task,
/// at its next turn, not at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Attempts made, retries included: each request sent, and each attempt
    /// that ended without sending one (refused here: no token, or a wait for
    /// the API longer than the budget). A call dropped before its request went
    /// out (while it queued for the quota, say) adds none.
    pub attempts: u64,
    /// Attempts repeated after a failure (429, 5xx, timeouts and connection
    /// errors, and the token refresh after a 401).
    pub retries: u64,
    /// 429 answers that held the client back: each of the API's that a call
    /// waited out before trying again, and each of the token endpoint's once,
    /// by the first call that waits it out, however many do (one that no call
    /// waits out is counted when a call waits out a later one).
    pub throttled: u64,
    /// The time spent waiting as 429 answers asked, and as the API asked
    /// another call to; summed over calls, so calls that wait at the same time
    /// add up to more than the time that passed. A call dropped during a wait
    /// adds what of it passed.
    pub throttle_wait: Duration,
    /// The time requests waited for the client-side quota ([`RateLimit`]),
    /// summed over calls like `throttle_wait`, a call dropped while it waited
    /// included.
    pub quota_wait: Duration,
}

/// The running counters behind [`ClientStats`], shared by a client's clones.
#[derive(Default)]
struct Counters {
    attempts: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    throttle_wait_us: AtomicU64,
    quota_wait_us: AtomicU64,
}

impl Counters {
    fn add_wait(&self, counter: &AtomicU64, wait: Duration) {
        if !wait.is_zero() {
            let micros = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
            counter.fetch_add(micros, Ordering::Relaxed);
        }
    }
}

/// The error of a call made outside a Tokio runtime.
pub(crate) fn no_runtime() -> Error {
    Error::Config(
        "the client was called outside a Tokio runtime, and its timers and connections \
         are Tokio's: call it from one (such as #[tokio::main])"
            .into(),
    )
}

/// Gives the result of one lookup to every input that named the user.
fn share(
    mut inputs: Vec<String>,
    result: Result<Vec<Machine>, Error>,
) -> Vec<(String, Result<Vec<Machine>, Error>)> {
    let Some(last) = inputs.pop() else {
        return Vec::new();
    };
    let mut out: Vec<_> = inputs
        .into_iter()
        .map(|input| (input, result.clone()))
        .collect();
    out.push((last, result));
    out
}

fn classify<T: serde::de::DeserializeOwned>(
    result: Result<raw::ResponseValue<T>, raw::Error<types::ErrorEnvelope>>,
    report: &mut Report,
    user: &UserName,
) -> Result<raw::ResponseValue<T>, Outcome> {
    use progenitor_client::Error as E;
    let error = match result {
        Ok(value) => return Ok(value),
        Err(error) => error,
    };
    // Taken, not left in the report for as long as the retry loop waits.
    let error_body = report.error_body.take();
    if let Some(error) = report.error.take() {
        return Err(Outcome::Fail(error));
    }
    let report = &*report;
    // What the API sent back is scrubbed of the request's token before it is cut
    // or logged; the error as a whole is scrubbed again by the caller.
    let token = report.token.as_ref().map(|t| t.secret());
    let token = token.as_deref().unwrap_or("");
    let from_status =
        |status: u16, envelope: Option<&types::ErrorEnvelope>, body: Option<&[u8]>| {
            let detail = envelope.and_then(|e| e.error.as_ref());
            if status == 404 {
                // Defender's envelope has `error`; an empty 404, a proxy's page
                // or its JSON (`{"statusCode":404}`) is what a wrong path gets too.
                return Outcome::Empty {
                    defenders: detail.is_some(),
                };
            }
            if status == 429 {
                if let Some(target) = detail.and_then(|d| d.target.as_deref()) {
                    let target = blank_user(&redact_cut(target, token, MAX_ERROR_TEXT), user);
                    tracing::info!(target, "Defender throttled the call (429)");
                }
                return Outcome::Fail(Error::Throttled {
                    retry_after: report.retry_after,
                });
            }
            if (200..300).contains(&status) {
                return Outcome::Fail(Error::Decode {
                    status,
                    message: format!(
                        "unexpected success status {status}: this operation answers 200 with a body"
                    ),
                });
            }
            // The envelope's texts as sent, unless a hostile or broken server sends
            // pages of them: an error stays a readable size.
            let field = |text: &Option<String>| {
                text.as_deref()
                    .map(|t| redact_cut(t, token, MAX_ERROR_TEXT))
            };
            // A 503 that said when to come back says so when nothing else does
            // (`Error::Api` has no field for it).
            let asked = (status == 503)
                .then_some(report.retry_after)
                .flatten()
                .map(|wait| {
                    format!(
                        "the service asked to be called again in {}",
                        crate::error::Wait(wait)
                    )
                });
            // Without Defender's envelope, what was sent (a gateway's
            // `{"statusCode":403,"message":"Out of call volume quota…"}`, an HTML
            // page): the start of it, as it came.
            let sent = || body.and_then(|body| body_excerpt(body, token));
            let message = match (detail.and_then(|d| field(&d.message)).or_else(sent), asked) {
                (Some(message), Some(asked)) => Some(format!("{message}; {asked}")),
                (message, asked) => message.or(asked),
            };
            Outcome::Fail(Error::Api {
                status,
                code: detail.and_then(|d| field(&d.code)),
                message,
                target: detail.and_then(|d| field(&d.target)),
            })
        };
    Err(match error {
        E::ErrorResponse(value) => {
            // Defender's envelope says what went wrong; any other JSON is quoted.
            let body = error_body
                .as_deref()
                .filter(|_| value.error.is_none() && !value.extra.is_empty());
            from_status(value.status().as_u16(), Some(value.as_ref()), body)
        }
        E::InvalidResponsePayload(body, e) => match report.status {
            Some(status) if !(200..300).contains(&status) => {
                // An error envelope after a byte order mark still counts.
                let body = body.strip_prefix(BOM).unwrap_or(&body);
                let envelope = serde_json::from_slice::<types::ErrorEnvelope>(body)
                    .ok()
                    .or_else(|| lenient_envelope(body));
                from_status(status, envelope.as_ref(), Some(body))
            }
            status => {
                let status = status.unwrap_or(200);
                // After a byte order mark: the JSON itself.
                if let Some(rest) = body.strip_prefix(BOM) {
                    let parsed = serde_json::from_slice::<T>(rest);
                    return match parsed {
                        Ok(value) => Ok(raw::ResponseValue::new(
                            value,
                            reqwest::StatusCode::from_u16(status).unwrap_or_default(),
                            reqwest::header::HeaderMap::new(),
                        )),
                        Err(e) => Err(Outcome::Fail(Error::Decode {
                            status,
                            message: decode_message::<T>(rest, &e, token),
                        })),
                    };
                }
                Outcome::Fail(Error::Decode {
                    status,
                    message: decode_message::<T>(&body, &e, token),
                })
            }
        },
        E::UnexpectedResponse(response) => from_status(response.status().as_u16(), None, None),
        // A body that arrived but cannot be decompressed will not get better on a
        // retry. One the connection cut short, or that stalled, is the network's
        // failure (reqwest calls any failed read of a body it may decompress "decode").
        // An error answer's status says more than its unreadable body, as in the hooks.
        E::CommunicationError(e) | E::ResponseBodyError(e)
            if e.is_decode() && !e.is_timeout() && !cut_short(&e) =>
        {
            match report.status {
                Some(status) if !(200..300).contains(&status) => from_status(status, None, None),
                status => Outcome::Fail(Error::Decode {
                    status: status.unwrap_or(200),
                    message: format!("the body could not be decompressed: {}", e.without_url()),
                }),
            }
        }
        E::CommunicationError(e) | E::ResponseBodyError(e) | E::InvalidUpgrade(e) => {
            // reqwest reports the URL first asked for, even when the failure was
            // at the server a redirect led to.
            let e = match report.redirected.as_deref() {
                Some((from, to)) if e.url() == Some(from) => e.with_url(to.clone()),
                _ => e,
            };
            Outcome::Fail(Error::from_reqwest(e))
        }
        E::InvalidRequest(message) | E::Custom(message) => Outcome::Fail(Error::Config(message)),
    })
}

/// Defender's error envelope read member by member, for one whose `error`
/// does not have the spec's shape (a numeric `code`, an OData `message` object
/// `{"lang","value"}`): each of `code`, `message` and `target` that can be read
/// as text is kept, so that one odd member does not lose the others.
fn lenient_envelope(body: &[u8]) -> Option<types::ErrorEnvelope> {
    use serde_json::Value;
    let Ok(Value::Object(mut top)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let Some(Value::Object(error)) = top.remove("error") else {
        return None;
    };
    let text = |value: Option<&Value>| match value? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Object(message) => match message.get("value") {
            Some(Value::String(text)) => Some(text.clone()),
            _ => None,
        },
        _ => None,
    };
    Some(types::ErrorEnvelope {
        error: Some(types::ErrorDetail {
            code: text(error.get("code")),
            message: text(error.get("message")),
            target: text(error.get("target")),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Whether reading a body failed in the HTTP layer (the connection closed or
/// reset before the body's end), as opposed to in its decompression.
fn cut_short(error: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<hyper::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// serde's message for a body that did not parse, plus where in the document it
/// failed (`value[3].osBuild`) and which machine that is, so that one odd field
/// among thousands of machines can be found. Runs only after a failure.
fn decode_message<T: serde::de::DeserializeOwned>(
    body: &[u8],
    error: &serde_json::Error,
    token: &str,
) -> String {
    // serde quotes the offending value, which may be anything the service sent:
    // scrubbed of the token, then cut, so that an error stays a readable size.
    let mut message = redact_cut(&error.to_string(), token, MAX_ERROR_TEXT);
    // An answer that is not JSON at all (a proxy's login page, a gateway's
    // text): what it starts with says more than "expected value".
    let start = body.trim_ascii_start();
    let json_starts = |b: &u8| b"{[\"-0123456789tfn".contains(b);
    if !error.is_data() && !start.first().is_some_and(json_starts) {
        // (Enough of it to find a token it may echo, before it is cut.)
        let text = String::from_utf8_lossy(&start[..start.len().min(64 * 1024)]);
        let text = redact_cut(&text, token, 60);
        if body.is_empty() {
            message.push_str(": the body is empty");
        } else if text.is_empty() {
            message.push_str(": the body is blank");
        } else {
            message.push_str(&format!(
                ": the body is not JSON; it starts with \"{}\"",
                crate::error::Shown(&text)
            ));
        }
        return message;
    }
    if !error.is_data() {
        return message;
    }
    // Parsed once as a tree: to locate the failure, and to read the machine's id.
    let Ok(tree) = serde_json::from_slice::<serde_json::Value>(body) else {
        return message;
    };
    let Err(located) = serde_path_to_error::deserialize::<_, T>(&tree) else {
        return message;
    };
    let path = located.path().to_string();
    if path.is_empty() || path == "." {
        return message;
    }
    // chrono's words for a date-time it cannot read say nothing of what it
    // wanted: say it, with the value (a time without a zone is the likely one).
    let date_time = [
        "premature end of input",
        "input contains invalid characters",
        "input is out of range",
        "trailing input",
        "input is not enough for unique date and time",
        "no possible date and time matching input",
    ];
    // (The tree's error too: with a key given twice, the tree keeps the last
    // value, and may fail elsewhere.)
    let again = located.inner().to_string();
    if date_time
        .iter()
        .any(|words| message.starts_with(words) && again.starts_with(words))
    {
        if let Some(serde_json::Value::String(value)) = value_at(&tree, located.path()) {
            let value = redact_cut(value, token, 64);
            message.push_str(&format!(
                ": \"{}\" is not a date or time as the spec writes it (RFC 3339; a \
                 date-time has its time zone, as in 2018-08-02T14:55:03.7791856Z)",
                value.escape_debug()
            ));
        }
    }
    message.push_str(&format!(" (at {path}"));
    // `value[3]…`: name the machine by its id when it has one.
    let id = path
        .strip_prefix("value[")
        .and_then(|rest| rest.split(']').next())
        .and_then(|index| tree.pointer(&format!("/value/{index}/id")))
        .and_then(serde_json::Value::as_str);
    if let Some(id) = id {
        let id = redact_cut(id, token, 64);
        message.push_str(&format!(", machine id \"{}\"", id.escape_debug()));
    }
    message.push(')');
    // (The tree of a large answer is large: not kept while the page is read again.)
    drop(tree);
    // An answer that is JSON but not what the spec describes (a machine
    // without an id, a null in a list) may still be read by the JSON call: it
    // is pointed to when it reads this page as it reads pages, and the page is
    // the last (whether a next link can be followed is not known here).
    let json_reads_it = serde_json::from_slice::<JsonPage>(body)
        .is_ok_and(|page| matches!(page.next_link(), None | Some(serde_json::Value::Null)));
    if json_reads_it {
        message.push_str(
            "; Client::user_machines_json reads this page, each machine as JSON, without \
             the spec's types",
        );
    }
    message
}

/// The value at `path` in `tree`.
fn value_at<'a>(
    tree: &'a serde_json::Value,
    path: &serde_path_to_error::Path,
) -> Option<&'a serde_json::Value> {
    use serde_path_to_error::Segment;
    path.iter().try_fold(tree, |value, segment| match segment {
        Segment::Seq { index } => value.get(index),
        Segment::Map { key } => value.get(key),
        Segment::Enum { .. } | Segment::Unknown => None,
    })
}

/// The most characters of one text of Defender's error envelope, or of serde's
/// message for a body that did not parse, an [`Error`] keeps.
const MAX_ERROR_TEXT: usize = 4_096;

/// The start of a body that was not an error envelope, as text, for `Error::Api::message`.
fn body_excerpt(body: &[u8], token: &str) -> Option<String> {
    let text = redact_cut(String::from_utf8_lossy(body).trim(), token, 200);
    (!text.is_empty()).then_some(text)
}

/// Configures a [`Client`]. Start with [`Client::builder`].
///
/// Everything has a default except the credential.
#[derive(Clone)]
#[must_use = "a builder does nothing until `build()` is called"]
pub struct ClientBuilder {
    base_url: Option<String>,
    /// The credential, or why it could not be had (returned by `build`).
    credential: Option<Result<Arc<dyn TokenCredential>, Error>>,
    cloud: Cloud,
    /// Whether [`cloud`](Self::cloud) was called.
    cloud_set: bool,
    scope: Option<String>,
    retry: RetryPolicy,
    rate_limit: RateLimit,
    timeout: Duration,
    connect_timeout: Duration,
    max_body: usize,
    http: Option<reqwest::Client>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            base_url: None,
            credential: None,
            cloud: Cloud::default(),
            cloud_set: false,
            scope: None,
            retry: RetryPolicy::default(),
            rate_limit: RateLimit::default(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_body: DEFAULT_MAX_RESPONSE_BYTES,
            http: None,
        }
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field(
                "base_url",
                &self.base_url.as_deref().map(hooks::redact_user_info),
            )
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "<dyn TokenCredential>"),
            )
            .field("cloud", &self.cloud)
            .field("scope", &self.scope)
            .field("retry", &self.retry)
            .field("rate_limit", &self.rate_limit)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_response_bytes", &self.max_body)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// The API base URL; default the cloud's ([`DEFAULT_BASE_URL`] for the
    /// commercial cloud, see [`cloud`](Self::cloud)).
    ///
    /// Any `https://` URL is accepted (a path prefix too, for proxies); `http://`
    /// only for loopback hosts (`127.0.0.0/8`, `::1`, `localhost`), so that
    /// tokens never cross a network in clear text. [`build`](Self::build) refuses
    /// a URL with a query, a fragment, user info, or a `.` or `..` path segment
    /// (which would be resolved into another path), one of the Defender API's
    /// own hosts with a path or a port (the API is at their root; the client
    /// adds `/api/users/…`), and a host that is another
    /// cloud's Defender API than [`cloud`](Self::cloud)'s, which would refuse
    /// the tokens asked for the cloud's scope (not checked for a
    /// [`StaticToken`](crate::StaticToken), whose token may have been minted
    /// for any, nor when [`scope`](Self::scope) or a
    /// [`Cloud::Custom`] is given). [`Client::base_url`] shows it
    /// as the URL standard writes it (host in lower case, no default port), without
    /// a trailing `/`.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Where tokens come from: any [`TokenCredential`] (including
    /// `Arc<dyn TokenCredential>`), a `Result` of one (its error is what
    /// [`build`](Self::build) returns), or with the feature `azure` any
    /// `Arc<dyn azure_core::credentials::TokenCredential>`; see [`IntoCredential`].
    pub fn credential(mut self, credential: impl IntoCredential) -> Self {
        self.credential = Some(credential.into_credential());
        self
    }

    /// The cloud to talk to; default [`Cloud::Commercial`].
    ///
    /// Sets the API base ([`Cloud::api_base`]) and the scope tokens are requested
    /// for ([`Cloud::scope`]) together. [`base_url`](Self::base_url) and
    /// [`scope`](Self::scope), in any order, still override either alone. The
    /// credential signs in at its own authority: give it [`Cloud::authority_host`].
    /// [`build`](Self::build) refuses one of this crate's credentials that signs
    /// in at another cloud's authority (`https://login.microsoftonline.com`, its
    /// default, for a US Government cloud).
    ///
    /// ```no_run
    /// # fn run(secret: String) -> Result<(), defender_endpoint::Error> {
    /// use defender_endpoint::{Client, ClientSecretCredential, Cloud};
    ///
    /// let cloud = Cloud::UsGovGccHigh;
    /// let (tenant, client_id) = (
    ///     "72f988bf-86f1-41af-91ab-2d7cd011db47",
    ///     "0b0e3a5c-1111-4a2b-9c3d-444455556666",
    /// );
    /// let credential = ClientSecretCredential::new(tenant, client_id, secret)
    ///     .authority_host(cloud.authority_host())?;
    /// let client = Client::builder().cloud(cloud).credential(credential).build()?;
    /// # Ok(()) }
    /// ```
    pub fn cloud(mut self, cloud: Cloud) -> Self {
        self.cloud = cloud;
        self.cloud_set = true;
        self
    }

    /// The scope tokens are requested for; default the cloud's ([`DEFAULT_SCOPE`](crate::DEFAULT_SCOPE)
    /// for the commercial cloud).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// How failed calls are retried; default [`RetryPolicy::default`].
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The client-side quota; default [`RateLimit::default`] (Defender's documented limits).
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = limit;
        self
    }

    /// The longest one attempt may take, from sending to the end of the body; default 30 s.
    /// Waiting for a token request counts as part of the attempt (the request
    /// goes on, and the next attempt gets its token). Zero is refused by
    /// [`build`](Self::build): no attempt could ever end well.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest connecting may take; default 10 s. Zero is refused by
    /// [`build`](Self::build).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The most body (after decompression) one call reads, the bodies of all its
    /// pages together; default 64 MiB. Beyond it, the call fails with
    /// [`Error::ResponseTooLarge`]. Only pages that came whole count: not an
    /// attempt that failed (each attempt is held to the limit on its own), and
    /// not an error answer (which a retry may follow), whose body is read up to
    /// the limit and cut there (a compressed one that inflates past it goes on
    /// without its body), its status deciding the error (a 429 is still
    /// [`Error::Throttled`]). A call through [`Client::raw`] counts its one answer.
    ///
    /// Decoded machines take more memory than their text: about 3x for answers
    /// as Defender writes them, and far more for machines that are nothing but an
    /// `id` (`{"id":""}`), since each decoded machine takes several hundred bytes
    /// however few fields it has; a lower limit bounds that too.
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_body = limit;
        self
    }

    /// Uses a `reqwest::Client` of your own (proxies, custom TLS roots, …).
    /// Its timeouts, user agent, redirect and `Referer` policies then apply instead of
    /// the builder's (the [`RetryPolicy`]'s budget still bounds every call; the
    /// builder's own client sends no `Referer`, which names the user, and yours
    /// should not either: `reqwest::Client::builder().referer(false)`);
    /// an answer its redirect policy fetched from another path is refused
    /// ([`Error::Decode`]), though the request may then have carried the token there.
    /// (The builder's own client does not follow such a redirect: the call fails
    /// with an [`Error::Transport`] whose error `is_redirect()`.)
    ///
    /// Its redirects are its own: a hop it follows within the API's host is one
    /// more request than the client's [`RateLimit`] counts (the builder's own
    /// client follows none). `reqwest::redirect::Policy::none()` avoids that.
    ///
    /// For a plain-http (loopback) base URL, build it with
    /// `reqwest::ClientBuilder::no_proxy()`: a client that may use a proxy (its
    /// own, or `HTTP_PROXY` of the environment, which may be on another host and
    /// would see the token in clear) makes [`build`](Self::build) fail with
    /// [`Error::Config`].
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Checks the configuration and builds the client.
    ///
    /// Fails with the credential's error when [`credential`](Self::credential)
    /// was given an `Err` or, for a credential of this crate, an empty client
    /// secret, a malformed tenant or client id or an authority host that holds
    /// a path, and with [`Error::Config`] for a base URL that is not an absolute
    /// `https://` URL (or `http://` to a loopback host), that holds a query,
    /// fragment, user info or a `.` or `..` path segment, that is one of the
    /// Defender API's own hosts with a path or a port, or that is another
    /// cloud's Defender API than [`cloud`](Self::cloud)'s (for any credential
    /// but a [`StaticToken`](crate::StaticToken), unless [`scope`](Self::scope)
    /// or a [`Cloud::Custom`] was given), when no credential was given, for a
    /// credential of this crate that signs in at another cloud's authority than
    /// [`cloud`](Self::cloud)'s, for a zero `timeout` or `connect_timeout`, when
    /// the HTTP client cannot be built, for a
    /// [`RateLimit`] window of 0 calls or of no length, and for a plain-http base
    /// URL with an [`http_client`](Self::http_client) that may use a proxy.
    pub fn build(self) -> Result<Client, Error> {
        if let Some(problem) = self.rate_limit.problem() {
            return Err(Error::Config(problem));
        }
        for (name, timeout) in [
            ("timeout", self.timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if timeout.is_zero() {
                return Err(Error::Config(format!(
                    "{name} is zero: every request would time out"
                )));
            }
        }
        let base_url =
            normalise_base_url(self.base_url.as_deref().unwrap_or(self.cloud.api_base()))?;
        let parsed_base = reqwest::Url::parse(&base_url)
            .map_err(|e| Error::Config(format!("invalid base URL: {e}")))?;
        // The API's own hosts serve it at their root, on the default port: a
        // path there (`/api`, which the client adds itself) or a port would
        // send every call where it finds nothing, which reads as no machines.
        if let Some(host) = parsed_base
            .host_str()
            .filter(|host| crate::cloud::cloud_of_api_host(host).is_some())
        {
            let what = match (parsed_base.path(), parsed_base.port()) {
                ("/", None) => None,
                ("/", Some(port)) => Some(format!("a port ({port})")),
                (path, _) => Some(format!("a path ({path})")),
            };
            if let Some(what) = what {
                return Err(Error::Config(format!(
                    "the base URL {base_url} has {what}, but {host} serves the Defender API \
                     at its root: give {}://{host} (the client adds /api/users/... itself)",
                    parsed_base.scheme()
                )));
            }
        }
        let credential = self.credential.ok_or_else(|| {
            Error::Config("no credential: call ClientBuilder::credential(..)".into())
        })??;
        // What a credential of this crate can tell is wrong with itself (an
        // empty secret, a malformed id, an authority with a path), now rather
        // than at the first call.
        if let Some(problem) = credential.problem() {
            return Err(problem);
        }
        // A base URL of one cloud's API while tokens are asked for another
        // cloud's scope: every token would be refused there (403). Checked for
        // credentials that ask for the scope (all but a static token, which may
        // have been minted for any), unless the scope or a custom cloud was given.
        if credential.uses_scope()
            && self.scope.is_none()
            && !matches!(self.cloud, Cloud::Custom { .. })
        {
            let host = parsed_base.host_str().unwrap_or_default();
            if let Some(theirs) = crate::cloud::cloud_of_api_host(host)
                .filter(|theirs| theirs.scope() != self.cloud.scope())
            {
                let named = match theirs {
                    Cloud::UsGovGccHigh => "Cloud::UsGovGccHigh (or Cloud::UsGovDod)",
                    Cloud::UsGovGcc => "Cloud::UsGovGcc",
                    _ => "Cloud::Commercial (or its Cloud::Geo)",
                };
                // Its sign-in too, when the credential signs in elsewhere.
                let sign_in = match credential.signs_in_at() {
                    Some(at) if signs_in_elsewhere(at, theirs.authority_host()) => format!(
                        ", and give the credential .authority_host({:?})",
                        theirs.authority_host()
                    ),
                    _ => String::new(),
                };
                return Err(Error::Config(format!(
                    "the base URL {base_url} is the API of another cloud than {:?}, which \
                     refuses its tokens (for {}): set ClientBuilder::cloud({named}){sign_in}",
                    self.cloud,
                    self.cloud.scope()
                )));
            }
        }
        // A credential of this crate left at another cloud's sign-in (the
        // commercial one is the default) would send the tenant's secret there
        // and get no token this cloud's API takes.
        if let Some(signs_in_at) = credential.signs_in_at() {
            let wanted = self.cloud.authority_host();
            if self.cloud_set && signs_in_elsewhere(signs_in_at, wanted) {
                return Err(Error::Config(format!(
                    "the credential signs in at {signs_in_at}, but {:?} signs in at {wanted}: \
                     give the credential .authority_host(cloud.authority_host()) (or set \
                     AZURE_AUTHORITY_HOST)",
                    self.cloud
                )));
            }
        }
        let own_http_client = self.http.is_some();
        let http = match self.http {
            Some(client) => {
                hooks::check_own_client_for_plain_http(&client, &base_url, "base URL")?;
                client
            }
            None => {
                let builder = reqwest::Client::builder()
                    .user_agent(USER_AGENT)
                    .timeout(self.timeout)
                    .connect_timeout(self.connect_timeout)
                    .redirect(redirect_policy())
                    // A redirect must not tell its target which user was looked up.
                    .referer(false)
                    // The hooks decode every coding, however the server lists them
                    // (several `Content-Encoding` lines are one list); they also
                    // accept raw deflate.
                    .gzip(false)
                    .deflate(false)
                    .default_headers(accept_encoding());
                hooks::direct_for_plain_http(builder, &base_url)
                    .build()
                    .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?
            }
        };
        let shared = Shared {
            tokens: TokenCache::new(
                credential,
                self.scope.unwrap_or_else(|| self.cloud.scope().into()),
            ),
            limiter: RateLimiter::new(&self.rate_limit),
            max_body: self.max_body,
            base_text: base_url.as_str().into(),
            base_path: hooks::base_path(&parsed_base),
            base_url: parsed_base,
            own_http_client,
            attempt_timeout: self.timeout,
            http: http.clone(),
            api_spared_until: std::sync::atomic::AtomicU64::new(0),
            api_asked_until: std::sync::atomic::AtomicU64::new(0),
            api_asked_by: std::sync::atomic::AtomicU16::new(0),
            epoch: std::time::Instant::now(),
        };
        Ok(Client {
            raw: generated::Client::new_with_client(&base_url, http, Inner(Arc::new(shared))),
            retry: self.retry,
            counters: Arc::default(),
        })
    }
}

/// Whether `authority` and `wanted` are both Microsoft sign-ins, of different
/// clouds (an authority this crate does not know is not judged).
fn signs_in_elsewhere(authority: &str, wanted: &str) -> bool {
    let (theirs, ours) = (sign_in_cloud(authority), sign_in_cloud(wanted));
    theirs.is_some() && ours.is_some() && theirs != ours
}

/// Which cloud's sign-in `authority` is, for Microsoft's own hosts (their other
/// names and a trailing dot included); `None` for any other host.
fn sign_in_cloud(authority: &str) -> Option<&'static str> {
    let url = crate::auth::endpoint::normalise_authority(authority).ok()?;
    crate::auth::endpoint::microsoft_sign_in(reqwest::Url::parse(&url).ok()?.host_str()?)
}

/// `Accept-Encoding: gzip, deflate`, which the hooks decode.
fn accept_encoding() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::ACCEPT_ENCODING,
        reqwest::header::HeaderValue::from_static("gzip, deflate"),
    );
    headers
}

/// Follows up to 10 redirects, never to a plain-http remote host, never to
/// another path (which would be another endpoint, with the token if on the same
/// host), and never to a host it was at before (`api.example.com.` is
/// `api.example.com`): each such hop would be one more request to the API that
/// the quota did not count. reqwest itself drops
/// `Authorization` whenever a redirect changes host, port or scheme.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let sent_path = attempt.previous().first().map(|url| url.path());
        // Any host the request was at before, not only the last: a chain that
        // leaves a host and comes back is one more request to it too.
        let host = |url: &reqwest::Url| {
            let mut url = url.clone();
            if let Some(name) = url.host_str().and_then(|h| h.strip_suffix('.')) {
                let name = name.to_owned();
                let _ = url.set_host(Some(&name));
            }
            url.origin()
        };
        let same_origin = attempt
            .previous()
            .iter()
            .any(|from| host(from) == host(attempt.url()));
        if attempt.previous().len() >= 10 {
            attempt.error("too many redirects")
        } else if !hooks::is_secure(attempt.url()) {
            attempt.error("refusing to follow a redirect to plain http on a remote host")
        } else if sent_path.is_some_and(|path| path != attempt.url().path()) {
            attempt.error("refusing to follow a redirect to another path")
        } else if same_origin {
            attempt.error(
                "refusing to follow a redirect within the same host: it would be one more \
                 request to the API than the client's quota counts",
            )
        } else {
            if let Some(from) = attempt.previous().first() {
                let followed = Box::new((from.clone(), attempt.url().clone()));
                let _ = ATTEMPT.try_with(|a| *a.redirected.borrow_mut() = Some(followed));
            }
            attempt.follow()
        }
    })
}

/// Validates a base URL and returns it without a trailing `/`.
fn normalise_base_url(input: &str) -> Result<String, Error> {
    hooks::normalise_service_url(input.trim(), "base URL", input)
}

/// The generated client, for operations the wrapper does not cover ([`Client::raw`]).
///
/// This is progenitor's output for `openapi/defender.yaml`; its requests go
/// through the same hooks as the wrapper's.
pub mod raw {
    pub use crate::generated::{ByteStream, Client, Error, ResponseValue};
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The user name is blanked from a logged error where it stands as a word,
    /// written as it is, in another case, or percent-encoded; words and other
    /// names that only start like it are left as they are.
    #[test]
    fn logged_errors_blank_the_user_name_and_nothing_else() {
        let api = |message: &str| Error::Api {
            status: 400,
            code: None,
            message: Some(message.to_owned()),
            target: None,
        };
        let shown = |user: &str, message: &str| {
            let text = logged(&api(message), &UserName::parse(user).unwrap());
            text.strip_prefix("Defender API error: HTTP 400: ")
                .unwrap()
                .to_owned()
        };
        for (user, message, expected) in [
            (
                "administrator",
                "administration rights are required",
                "administration rights are required",
            ),
            (
                "administrator",
                "no such user Administrator.",
                "no such user <user>.",
            ),
            ("admin", "Administrators only", "Administrators only"),
            ("admin", "user admin: not found", "user <user>: not found"),
            (
                "jonathan.smith@contoso.com",
                "manager is jonathan.smythe@contoso.com, not jonathan.smith@contoso.com",
                "manager is jonathan.smythe@contoso.com, not <user>@contoso.com",
            ),
            (
                "jonathan.smith",
                "jonathan.smith2 and jonathan.smith",
                "jonathan.smith2 and <user>",
            ),
            (
                "jürgen.müller",
                "down for /api/users/j%C3%BCrgen.m%c3%bcller/machines",
                "down for /api/users/<user>/machines",
            ),
            ("bo", "bob and bo", "bob and bo"),
            // Beside escaped separators, and before the message is escaped for
            // `Display` (a line break shows as `\n`).
            ("admin", "hello%20admin b", "hello%20<user> b"),
            (
                "admin",
                "next=%2Fapi%2Fusers%2Fadmin%2Fmachines",
                "next=%2Fapi%2Fusers%2F<user>%2Fmachines",
            ),
            ("admin", "unknown:\nadmin", "unknown:\\n<user>"),
            // Another name, written percent-encoded.
            ("admin", "user admin%C3%A9 x", "user admin%C3%A9 x"),
            ("admin", "user admin%32 x", "user admin%32 x"),
            // Beside punctuation beyond ASCII, written as it is or escaped.
            (
                "admin",
                "user \u{2018}admin\u{2019} not found",
                "user \u{2018}<user>\u{2019} not found",
            ),
            ("admin", "user \u{ab}admin\u{bb}", "user \u{ab}<user>\u{bb}"),
            ("admin", "user\u{a0}admin", "user\\u{a0}<user>"),
            (
                "admin",
                "\u{30e6}\u{30fc}\u{30b6}\u{30fc}\u{ff1a}admin",
                "\u{30e6}\u{30fc}\u{30b6}\u{30fc}\u{ff1a}<user>",
            ),
            ("admin", "%C2%ABadmin%C2%BB", "%C2%AB<user>%C2%BB"),
            (
                "admin",
                "\u{e9}admin and admin\u{e9}",
                "\u{e9}admin and admin\u{e9}",
            ),
        ] {
            assert_eq!(shown(user, message), expected, "{user}: {message}");
        }
        // No word: nothing to blank (and no end to the search otherwise).
        assert_eq!(
            crate::auth::endpoint::blank_word(" a ", "", "<user>"),
            " a "
        );
    }

    #[test]
    fn a_password_in_the_base_url_is_never_shown() {
        let builder = Client::builder()
            .base_url("https://svc:PROXY-PASSWORD@proxy.example/")
            .credential(crate::StaticToken::new("t"));
        let debug = format!("{builder:?}");
        assert!(debug.contains("https://***@proxy.example/"), "{debug}");
        assert!(!debug.contains("PROXY-PASSWORD"), "{debug}");
        let err = builder.build().unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains("PROXY-PASSWORD"), "{shown}");
            assert!(shown.contains("user info"), "{shown}");
        }
    }

    #[test]
    fn documented_defaults() {
        let b = ClientBuilder::default();
        assert_eq!(b.timeout, Duration::from_secs(30));
        assert_eq!(b.connect_timeout, Duration::from_secs(10));
        assert_eq!(b.max_body, 64 * 1024 * 1024);
        assert_eq!(b.retry, RetryPolicy::default());
        assert_eq!(b.retry.max_attempts, 4);
        assert_eq!(b.retry.budget, Duration::from_secs(60));
        assert_eq!(b.retry.base_delay, Duration::from_millis(500));
        assert_eq!(b.retry.max_delay, Duration::from_secs(30));
        assert_eq!(b.rate_limit, RateLimit::defender());
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            normalise_base_url("https://api.security.microsoft.com/").unwrap(),
            "https://api.security.microsoft.com"
        );
        assert_eq!(
            normalise_base_url("https://proxy.example/defender/").unwrap(),
            "https://proxy.example/defender"
        );
        assert_eq!(
            normalise_base_url("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        for bad in [
            "api.security.microsoft.com",
            "http://api.security.microsoft.com",
            "ftp://127.0.0.1",
            "https://h/?x=1",
            "https://h/#f",
            "https://user:pw@h/",
            "",
        ] {
            assert!(
                matches!(normalise_base_url(bad), Err(Error::Config(_))),
                "{bad}"
            );
        }
        // A host without its scheme is told how to write it.
        let err = normalise_base_url("api.security.microsoft.com/").unwrap_err();
        assert!(
            err.to_string().ends_with(
                "it has no scheme: write it with https://, as https://api.security.microsoft.com"
            ),
            "{err}"
        );
    }

    /// A `.` or `..` in the base URL's path, which the URL parser would resolve
    /// (`/defender/../other` is `/other`), is refused rather than altered.
    #[test]
    fn dot_segments_in_a_base_url_are_refused() {
        for bad in [
            "https://proxy.example/defender/../other",
            "https://proxy.example/defender/%2e%2e/other",
            "https://proxy.example/defender/%2E.",
            "https://proxy.example/defender/..",
            "https://proxy.example/./defender",
            "https://proxy.example\\defender\\..\\other",
            "https://proxy.example/defender/.%2e/",
        ] {
            let error = normalise_base_url(bad).unwrap_err();
            assert!(
                error.to_string().contains("`.` or `..` segment"),
                "{bad}: {error}"
            );
        }
        // Dots inside a segment, or in the host, are a name like any other.
        for good in [
            "https://proxy.example/def.ender/..x/.y",
            "https://proxy.example./defender",
            "https://proxy.example/%2e%2ex",
        ] {
            assert!(normalise_base_url(good).is_ok(), "{good}");
        }
    }
}
