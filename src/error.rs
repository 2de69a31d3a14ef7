//! The one error type of the crate.

use std::{borrow::Cow, fmt, sync::Arc, time::Duration};

use crate::user::InvalidUserName;

/// Everything that can go wrong when talking to Defender for Endpoint.
///
/// No variant ever holds a secret: tokens, client secrets and assertions are
/// kept out of messages, and the `Display` of every variant is safe to log as
/// far as secrets go. A user name may be in it: the one an `InvalidUserName`
/// was given, or the service's words in an `Api` message. (The client's own
/// logs leave it out below `debug` level.)
///
/// It is `Clone` (a transport error is shared behind an `Arc`), so one failure
/// can be handed to everyone who waited on it.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The user name broke the API's user-name rule; no request was sent.
    #[error(transparent)]
    InvalidUserName(#[from] InvalidUserName),

    /// A credential could not be made (a bad PEM, a missing environment variable)
    /// or could not obtain a token; `Display` starts with `credential error:`.
    #[error("{}", CredentialDisplay { message, status: *status, code: code.as_deref(), description: description.as_deref(), trace_id: trace_id.as_deref(), correlation_id: correlation_id.as_deref() })]
    Credential {
        /// What failed, in words.
        message: String,
        /// The HTTP status of the token endpoint's answer, when there was one.
        status: Option<u16>,
        /// The OAuth error code (`invalid_client`, `unauthorized_client`, …).
        code: Option<String>,
        /// The token endpoint's description, with its `AADSTS…` code.
        description: Option<String>,
        /// The numeric `AADSTS` codes (`7000215` for a wrong client secret, …).
        error_codes: Vec<u64>,
        /// The token endpoint's trace id, for Microsoft support.
        trace_id: Option<String>,
        /// The token endpoint's correlation id, for Microsoft support.
        correlation_id: Option<String>,
    },

    /// The API answered with an error status (anything but 2xx, 404 and 429), or
    /// a page that `@odata.nextLink` leads to is not found (404: the list of
    /// machines would be incomplete).
    ///
    /// The fields come from Defender's error envelope
    /// `{"error":{"code","message","target"}}` when the body holds one, each cut
    /// at 4,096 characters (marked with `…`), and any copy of the request's token
    /// in them replaced with `<redacted>`. A member of another shape (a numeric
    /// `code`, an OData `message` object with its `value`) is read as text where
    /// it can be, and the others are kept. Any other body (a gateway's JSON, an
    /// HTML page) is quoted in `message`, its first 200 characters.
    #[error("{}", ApiDisplay { status: *status, code: code.as_deref(), message: message.as_deref(), target: target.as_deref() })]
    Api {
        /// The HTTP status code.
        status: u16,
        /// Defender's error code (`Forbidden`, `InvalidInput`, …).
        code: Option<String>,
        /// Defender's free-text message, or the start of a body that was not an envelope.
        message: Option<String>,
        /// The tracking id that Microsoft support asks for.
        target: Option<String>,
    },

    /// The API answered 429 Too Many Requests, and waiting for another attempt
    /// was not possible within the retry policy.
    #[error("{}", ThrottledDisplay(*retry_after))]
    Throttled {
        /// How long the API asked to wait (`Retry-After`), when it said.
        retry_after: Option<Duration>,
    },

    /// The request could not be sent or its answer could not be received.
    ///
    /// `Display` shows the whole chain of causes (`… tcp connect error: Connection
    /// refused`), so `source()` is `None` and a report that walks the chain shows
    /// each cause once; the reqwest error itself is the field.
    #[error("transport error: {}", DisplayChain(&**.0))]
    Transport(Arc<reqwest::Error>),

    /// The request (or the wait for its answer) took longer than the configured timeout.
    #[error(
        "the request timed out (an attempt's ClientBuilder::timeout or connect_timeout, a \
         token request's, or the end of the retry budget)"
    )]
    Timeout,

    /// The answer could not be decoded into the expected shape.
    #[error("could not decode the answer (HTTP {status}): {message}")]
    Decode {
        /// The HTTP status of the answer.
        status: u16,
        /// What was wrong and where (line and column of the body).
        message: String,
    },

    /// A page's body, or the bodies of a call's pages together, were larger
    /// than the client's limit
    /// ([`ClientBuilder::max_response_bytes`](crate::ClientBuilder::max_response_bytes)).
    /// An error answer over the limit keeps its status instead: its body is cut.
    #[error(
        "the answer is larger than the limit of {limit} bytes (all pages of a call together; \
         ClientBuilder::max_response_bytes sets it)"
    )]
    ResponseTooLarge {
        /// The limit, in bytes (after decompression).
        limit: usize,
    },

    /// The client's configuration is unusable (bad base URL, plain http to a remote host, …).
    #[error("configuration error: {0}")]
    Config(String),
}

impl Error {
    /// The HTTP status behind this error, when there was an answer: the API's,
    /// or for [`Error::Credential`] the token endpoint's (a 401 there is a
    /// refused credential, not a refused token), and 429 for
    /// [`Error::Throttled`], also for a call held back by another call's 429.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::Decode { status, .. } => Some(*status),
            Error::Throttled { .. } => Some(429),
            Error::Credential { status, .. } => *status,
            Error::Transport(e) => e.status().map(|s| s.as_u16()),
            _ => None,
        }
    }

    /// How long the API asked to wait before trying again (`Retry-After` of a 429).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Throttled { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// Defender's tracking id (`error.target`) for this failure, if it sent one.
    ///
    /// Only [`Error::Api`] holds one. A 429's `target` is logged at `info`
    /// level with the call's span (`Error::Throttled` holds only the wait), so
    /// this is `None` for `Throttled`.
    pub fn target(&self) -> Option<&str> {
        match self {
            Error::Api { target, .. } => target.as_deref(),
            _ => None,
        }
    }

    /// An [`Error::Credential`] with only a message, for a [`TokenCredential`]
    /// of your own that cannot get a token (the other fields are for answers of
    /// Entra ID's token endpoint).
    ///
    /// ```
    /// use defender_endpoint::{AccessToken, Error, TokenCredential};
    ///
    /// struct FromVault(Option<String>);
    ///
    /// #[defender_endpoint::async_trait]
    /// impl TokenCredential for FromVault {
    ///     async fn get_token(&self, _scopes: &[&str]) -> Result<AccessToken, Error> {
    ///         match &self.0 {
    ///             Some(token) => Ok(AccessToken::never_expires(token.clone())),
    ///             None => Err(Error::credential("the vault holds no Defender token")),
    ///         }
    ///     }
    /// }
    /// ```
    ///
    /// [`TokenCredential`]: crate::TokenCredential
    pub fn credential(message: impl Into<String>) -> Self {
        Error::Credential {
            message: message.into(),
            status: None,
            code: None,
            description: None,
            error_codes: Vec::new(),
            trace_id: None,
            correlation_id: None,
        }
    }

    /// Replaces every occurrence of `secret` in the texts the API sent back
    /// (a gateway's error page may echo the request's token); see [`redact_text`].
    pub(crate) fn redact(&mut self, secret: &str) {
        self.scrub(|text| redact_text(text, secret));
    }

    /// Replaces each text the API sent back (an answer's code, message and
    /// target, a decoding error's message) with `clean` of it.
    pub(crate) fn scrub(&mut self, clean: impl for<'a> Fn(&'a str) -> Cow<'a, str>) {
        let scrub = |text: &mut String| {
            if let Cow::Owned(cleaned) = clean(text) {
                *text = cleaned;
            }
        };
        match self {
            Error::Api {
                code,
                message,
                target,
                ..
            } => {
                for text in [code, message, target].into_iter().flatten() {
                    scrub(text);
                }
            }
            Error::Decode { message, .. } => scrub(message),
            _ => {}
        }
    }

    /// Maps a reqwest error, telling timeouts apart. Of the request's URL only
    /// the origin is kept (`https://api.security.microsoft.com`), which says
    /// which server the request was for (the API, or the token endpoint's
    /// authority; after a redirect, reqwest reports the first request's URL, or
    /// that of the hop whose redirect was refused, and a call's mapping puts in
    /// the URL a followed redirect led to): the path holds the user name or the
    /// tenant.
    pub(crate) fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            return Error::Timeout;
        }
        let origin = e
            .url()
            .map(|url| url.origin())
            .filter(url::Origin::is_tuple)
            .and_then(|origin| reqwest::Url::parse(&origin.ascii_serialization()).ok());
        let e = e.without_url();
        Error::Transport(Arc::new(match origin {
            Some(origin) => e.with_url(origin),
            None => e,
        }))
    }
}

struct ApiDisplay<'a> {
    status: u16,
    code: Option<&'a str>,
    message: Option<&'a str>,
    target: Option<&'a str>,
}

impl fmt::Display for ApiDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Defender API error: HTTP {}", self.status)?;
        if let Some(code) = self.code {
            write!(f, " {}", Shown(code))?;
        }
        match (self.message, self.status) {
            (Some(message), _) => write!(f, ": {}", Shown(message))?,
            // Without a word from the service, what these usually mean.
            (None, 401) => f.write_str(
                ": the token was refused (expired, not valid, or of another tenant); \
                 check the credential",
            )?,
            (None, 403) => f.write_str(
                ": the token may not read machines; the app needs the Machine.Read.All \
                 application permission (or Machine.Read, delegated) of WindowsDefenderATP, \
                 with admin consent, and a token for this cloud's API (the client's scope)",
            )?,
            (None, _) => {}
        }
        if let Some(target) = self.target {
            write!(f, " (target {})", Shown(target))?;
        }
        Ok(())
    }
}

struct ThrottledDisplay(Option<Duration>);

impl fmt::Display for ThrottledDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("throttled by the Defender API (HTTP 429)")?;
        if let Some(wait) = self.0 {
            write!(f, "; retry after {}", Wait(wait))?;
        }
        Ok(())
    }
}

/// A wait as an error message shows it, rounded up: in whole seconds, as
/// `Retry-After` gives it (`3600 s`), or in milliseconds below one second.
pub(crate) struct Wait(pub(crate) Duration);

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d >= Duration::from_secs(1) {
            let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
            write!(f, "{secs} s")
        } else {
            let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
            write!(f, "{ms} ms")
        }
    }
}

struct CredentialDisplay<'a> {
    message: &'a str,
    status: Option<u16>,
    code: Option<&'a str>,
    description: Option<&'a str>,
    trace_id: Option<&'a str>,
    correlation_id: Option<&'a str>,
}

impl fmt::Display for CredentialDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "credential error: {}", Shown(self.message))?;
        if let Some(status) = self.status.filter(|status| {
            // Not twice: "the token endpoint answered HTTP 502: …".
            !self
                .message
                .starts_with(&format!("the token endpoint answered HTTP {status}"))
        }) {
            write!(f, " (HTTP {status})")?;
        }
        if let Some(code) = self.code {
            write!(f, ": {}", Shown(code))?;
        }
        if let Some(description) = self.description {
            // Entra ID ends it with lines that repeat the ids shown below
            // ("Trace ID: …", "Correlation ID: …"): left out, and the other
            // lines joined into one.
            let repeated = |line: &str, label: &str, id: Option<&str>| {
                id.is_some_and(|id| {
                    line.strip_prefix(label)
                        .is_some_and(|rest| rest.trim() == id)
                })
            };
            let mut lines = description
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .filter(|line| {
                    !repeated(line, "Trace ID:", self.trace_id)
                        && !repeated(line, "Correlation ID:", self.correlation_id)
                });
            if let Some(first) = lines.next() {
                write!(f, ": {}", Shown(first))?;
                for line in lines {
                    write!(f, " {}", Shown(line))?;
                }
            }
        }
        if let Some(trace_id) = self.trace_id {
            write!(f, " [trace id {}]", Shown(trace_id))?;
        }
        if let Some(correlation_id) = self.correlation_id {
            write!(f, " [correlation id {}]", Shown(correlation_id))?;
        }
        Ok(())
    }
}

/// A service's text as it came, but for the characters that could drive a
/// terminal or hide text (control, format and other unprintable characters),
/// which are shown escaped (`\n`, `\u{1b}`, `\u{202e}`). Quotes and
/// backslashes are left as they are.
pub(crate) struct Shown<'a>(pub(crate) &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['\'', '"', '\\']) {
            write!(f, "{}", rest[..at].escape_debug())?;
            f.write_str(&rest[at..at + 1])?;
            rest = &rest[at + 1..];
        }
        write!(f, "{}", rest.escape_debug())
    }
}

/// Shows an error with its sources, `a: b: c`.
struct DisplayChain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// `text` with every echo of `secret` replaced by `<redacted>`: the secret as it
/// is, percent-, JSON- or HTML-escaped, or its start cut short (from 8
/// characters on, but for a JWT's public header); the same rule as for what
/// Entra ID's token endpoint sends back. Secrets shorter than 8 bytes are left
/// alone: they cannot be told apart from ordinary words. A text that is to be
/// cut is redacted with [`redact_cut`], so that no part of a token survives at
/// the cut.
pub(crate) fn redact_text<'a>(text: &'a str, secret: &str) -> Cow<'a, str> {
    if secret.trim().len() < 8 {
        return Cow::Borrowed(text);
    }
    let clean = crate::auth::endpoint::redacted_as(text, &[secret], &[], usize::MAX, REDACTED);
    if clean == text {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(clean)
    }
}

/// The first `max_chars` characters of `text` (see [`shorten`]), redacted as
/// [`redact_text`] does; only as much of `text` is read as is shown.
pub(crate) fn redact_cut(text: &str, secret: &str, max_chars: usize) -> String {
    if secret.trim().len() < 8 {
        return shorten(text, max_chars);
    }
    crate::auth::endpoint::redacted_as(text, &[secret], &[], max_chars, REDACTED)
}

/// What an echo of the request's token is replaced with.
const REDACTED: &str = "<redacted>";

/// The first `max_chars` characters of `text`, with `…` when something was cut.
/// Redact before shortening (see [`redact_text`]).
pub(crate) fn shorten(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The service's words are shown as they came, quotes and backslashes
    /// included; what could drive a terminal or hide text is escaped.
    #[test]
    fn service_texts_keep_their_quotes_and_escape_control_characters() {
        let api = Error::Api {
            status: 400,
            code: Some("InvalidInput".into()),
            message: Some("Invalid user name \"a'b\\c\" \u{1b}[31mred\u{202e}x\r\ny".into()),
            target: Some("t-1".into()),
        };
        assert_eq!(
            api.to_string(),
            "Defender API error: HTTP 400 InvalidInput: Invalid user name \"a'b\\c\" \
             \\u{1b}[31mred\\u{202e}x\\r\\ny (target t-1)"
        );
    }

    /// Entra ID's description ends with lines that repeat the trace and
    /// correlation ids: shown once, on one line; and a status the message
    /// already gives is not given again.
    #[test]
    fn a_credential_refusal_says_each_thing_once() {
        let refused = Error::Credential {
            message: "the token endpoint refused the credential".into(),
            status: Some(401),
            code: Some("invalid_client".into()),
            description: Some(
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being \
                 sent is the client secret value, not the secret ID, for a secret added \
                 to app '0b0e'.\r\nTrace ID: tr-1\r\nCorrelation ID: co-1\r\n\
                 Timestamp: 2026-11-30 19:00:00Z"
                    .into(),
            ),
            error_codes: vec![7000215],
            trace_id: Some("tr-1".into()),
            correlation_id: Some("co-1".into()),
        };
        let shown = refused.to_string();
        assert_eq!(
            shown,
            "credential error: the token endpoint refused the credential (HTTP 401): \
             invalid_client: AADSTS7000215: Invalid client secret provided. Ensure the \
             secret being sent is the client secret value, not the secret ID, for a \
             secret added to app '0b0e'. Timestamp: 2026-11-30 19:00:00Z [trace id tr-1] \
             [correlation id co-1]"
        );
        // Without the ids beside it, the description keeps its lines for them.
        let mut bare = refused.clone();
        if let Error::Credential {
            trace_id,
            correlation_id,
            ..
        } = &mut bare
        {
            (*trace_id, *correlation_id) = (None, None);
        }
        assert!(
            bare.to_string()
                .contains("Trace ID: tr-1 Correlation ID: co-1"),
            "{bare}"
        );
        let credential_error = crate::auth::endpoint::credential_error;
        let gateway = credential_error(502, "the token endpoint answered HTTP 502: <html>");
        assert_eq!(
            gateway.to_string(),
            "credential error: the token endpoint answered HTTP 502: <html>"
        );
        // A status the service's words only seem to give is still given, and
        // a line break in a credential's message (a library's error text) is
        // escaped: it cannot forge a log line.
        let odd = credential_error(
            200,
            "the token endpoint issued a token of type \"HTTP 200\"\r\nfake: line",
        );
        assert_eq!(
            odd.to_string(),
            "credential error: the token endpoint issued a token of type \"HTTP 200\"\\r\\nfake: \
             line (HTTP 200)"
        );
    }

    /// A 401 or 403 the service sent without a message says what it usually
    /// means; with one, the service's own words are shown.
    #[test]
    fn a_bare_401_or_403_says_what_to_check() {
        let api = |status: u16, message: Option<&str>| {
            Error::Api {
                status,
                code: None,
                message: message.map(str::to_owned),
                target: None,
            }
            .to_string()
        };
        assert!(api(401, None).ends_with(
            "HTTP 401: the token was refused (expired, not valid, or of another tenant); check the credential"
        ));
        assert!(api(403, None).contains("HTTP 403: the token may not read machines; the app needs the Machine.Read.All application permission"));
        assert!(api(403, None).ends_with("a token for this cloud's API (the client's scope)"));
        assert_eq!(
            api(403, Some("no role")),
            "Defender API error: HTTP 403: no role"
        );
        assert_eq!(api(500, None), "Defender API error: HTTP 500");
    }

    #[test]
    fn a_throttled_wait_is_shown_rounded_up() {
        let shown = |wait: Option<Duration>| {
            Error::Throttled { retry_after: wait }
                .to_string()
                .replace("throttled by the Defender API (HTTP 429)", "")
        };
        assert_eq!(shown(None), "");
        assert_eq!(shown(Some(Duration::from_secs(30))), "; retry after 30 s");
        assert_eq!(
            shown(Some(Duration::from_nanos(299_999_856_888))),
            "; retry after 300 s"
        );
        assert_eq!(
            shown(Some(Duration::from_millis(1_001))),
            "; retry after 2 s"
        );
        assert_eq!(
            shown(Some(Duration::from_millis(500))),
            "; retry after 500 ms"
        );
        assert_eq!(shown(Some(Duration::from_micros(1))), "; retry after 1 ms");
        assert_eq!(shown(Some(Duration::ZERO)), "; retry after 0 ms");
        assert_eq!(
            shown(Some(Duration::MAX)),
            format!("; retry after {} s", u64::MAX)
        );
    }

    #[test]
    fn shorten_cuts_at_characters_and_marks_the_cut() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcd", 3), "abc…");
        assert_eq!(shorten("ééé€", 3), "ééé…");
        assert_eq!(shorten("", 3), "");
    }

    #[test]
    fn redact_text_leaves_short_secrets_and_clean_texts_alone() {
        assert_eq!(
            redact_text("a secret-123 b", "secret-123"),
            "a <redacted> b"
        );
        assert!(matches!(
            redact_text("clean", "secret-123"),
            Cow::Borrowed(_)
        ));
        assert_eq!(redact_text("a tok b", "tok"), "a tok b");
    }
}
