//! The OAuth 2.0 token endpoint of Microsoft Entra ID, shared by the app credentials.

use std::{
    fmt,
    sync::OnceLock,
    time::{Duration, Instant},
};

use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use serde_json::{Map, Value};

use super::AccessToken;
use crate::{client::USER_AGENT, error::shorten, hooks, Error};

/// The commercial cloud's sign-in authority, the default of the app credentials.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";

/// The longest a token request may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The longest connecting to the token endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from the token endpoint.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// How much of an answer that is not JSON goes into an error message.
const EXCERPT_CHARS: usize = 200;
/// The longest text kept of each field of an OAuth error answer (Entra ID's
/// descriptions run to a few hundred characters).
const FIELD_CHARS: usize = 4_096;
/// The longest `token_type` an error shows.
const TYPE_CHARS: usize = 40;
/// How long a token whose answer gives no `expires_in` is used (a 401 before
/// then refreshes it anyway).
const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 5 * 60;
/// The longest a token is used, whatever `expires_in` says (Entra ID's last at
/// most a day).
const MAX_TOKEN_LIFETIME_SECS: u64 = 24 * 60 * 60;

/// Where and as whom an app credential asks for tokens.
#[derive(Clone)]
pub(crate) struct TokenEndpoint {
    authority: String,
    tenant_id: String,
    client_id: String,
    http: OnceLock<reqwest::Client>,
    /// Whether `http` is the caller's client, whose redirect policy is unknown.
    own_http_client: bool,
}

impl fmt::Debug for TokenEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An id that is not one (a secret given in its place, say) is not shown.
        let shown = |id: &str, ok: bool| {
            if ok {
                format!("{id:?}")
            } else {
                format!("<not valid, {} characters>", id.chars().count())
            }
        };
        f.debug_struct("TokenEndpoint")
            .field("authority_host", &self.authority)
            .field(
                "tenant_id",
                &format_args!(
                    "{}",
                    shown(&self.tenant_id, check_tenant(&self.tenant_id).is_ok())
                ),
            )
            .field(
                "client_id",
                &format_args!("{}", shown(&self.client_id, is_guid(&self.client_id))),
            )
            .finish_non_exhaustive()
    }
}

impl TokenEndpoint {
    pub(crate) fn new(tenant_id: String, client_id: String) -> Self {
        Self {
            authority: DEFAULT_AUTHORITY_HOST.to_owned(),
            tenant_id: tenant_id.trim().to_owned(),
            client_id: client_id.trim().to_owned(),
            http: OnceLock::new(),
            own_http_client: false,
        }
    }

    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The authority host, normalised (`https://login.microsoftonline.com`).
    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    pub(crate) fn set_authority(&mut self, url: &str) -> Result<(), Error> {
        self.authority = normalise_authority(url)?;
        if !self.own_http_client {
            // Built for the former authority (a proxy is bypassed for plain http only).
            self.http = OnceLock::new();
        }
        Ok(())
    }

    pub(crate) fn set_http_client(&mut self, client: reqwest::Client) {
        self.http = OnceLock::from(client);
        self.own_http_client = true;
    }

    /// `{authority}/{tenant}/oauth2/v2.0/token`, once the tenant and client ids are checked.
    pub(crate) fn url(&self) -> Result<String, Error> {
        check_tenant(&self.tenant_id)?;
        // The authority is the host alone: one given with the tenant or the
        // token path (`https://login.microsoftonline.com/<tenant>`) would have
        // them twice. Microsoft's sign-in hosts take no path of their own; a
        // proxy's own path prefix is left as it is, unless it names the tenant.
        let url = reqwest::Url::parse(&self.authority).ok();
        let path = url.as_ref().map_or("", |u| u.path().trim_matches('/'));
        let microsofts = url
            .as_ref()
            .and_then(|u| u.host_str())
            .and_then(microsoft_sign_in)
            .is_some();
        if !path.is_empty()
            && (microsofts
                || path
                    .split('/')
                    .any(|segment| segment.eq_ignore_ascii_case(&self.tenant_id)))
        {
            return Err(Error::credential(format!(
                "the authority host {} holds a path (the tenant, or the token path): give \
                 the host alone, such as https://login.microsoftonline.com (the tenant and \
                 /oauth2/v2.0/token are added to it)",
                self.authority
            )));
        }
        if self.client_id.is_empty() {
            return Err(Error::credential("the client id is empty"));
        }
        if !is_guid(&self.client_id) {
            // Not shown: it may be a secret given in its place.
            return Err(Error::credential(format!(
                "the client id ({} characters) is not a GUID: it is the app \
                 registration's Application (client) ID, such as \
                 0b0e3a5c-1111-4a2b-9c3d-444455556666",
                self.client_id.chars().count()
            )));
        }
        Ok(format!(
            "{}/{}/oauth2/v2.0/token",
            self.authority, self.tenant_id
        ))
    }

    fn http(&self) -> Result<&reqwest::Client, Error> {
        if let Some(client) = self.http.get() {
            if self.own_http_client {
                hooks::check_own_client_for_plain_http(client, &self.authority, "authority host")?;
            }
            return Ok(client);
        }
        let builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        let builder = crate::hooks::direct_for_plain_http(builder, &self.authority);
        let client = builder.build().map_err(|e| {
            Error::Config(format!(
                "cannot build the HTTP client of the token endpoint: {e}"
            ))
        })?;
        Ok(self.http.get_or_init(|| client))
    }

    /// Posts `form` to `url` and reads the answer. `secrets` (the client secret or
    /// assertion) are blanked out of anything the answer echoes into an error.
    pub(crate) async fn request(
        &self,
        url: &str,
        form: &[(&str, &str)],
        secrets: &[&str],
    ) -> Result<AccessToken, Error> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        // Through a caller's client, whose redirect policy may follow redirects, a
        // body that cannot be sent twice: a 307 or 308 cannot carry the secret to
        // another URL (reqwest then returns the redirect as it is). The credential's
        // own client follows no redirect, and keeps a body reqwest may resend on a
        // refused HTTP/2 stream.
        let length = body.len();
        let body = if self.own_http_client {
            reqwest::Body::wrap_stream(futures_util::stream::iter([Ok::<_, std::io::Error>(
                bytes::Bytes::from(body),
            )]))
        } else {
            reqwest::Body::from(body)
        };
        let sent_at = Instant::now();
        tracing::debug!(url, client_id = %self.client_id, "requesting a token from Microsoft Entra ID");
        let mut response = self
            .http()?
            .post(url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(CONTENT_LENGTH, length)
            .header(ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let elsewhere = reqwest::Url::parse(url).ok().as_ref() != Some(response.url());
        if response.status().is_redirection() || elsewhere {
            // A 301/302/303 followed by a caller's client is a GET without the form:
            // nothing secret went along, but the answer is not the token endpoint's
            // (and its status is not one the client retries).
            let to = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .map_or_else(|| response.url().to_string(), str::to_owned);
            return Err(Error::credential(format!(
                "the token endpoint redirected the request (HTTP {status}) to {:?}; token \
                 requests are never sent elsewhere",
                redacted(&to, secrets, &[], EXCERPT_CHARS)
            )));
        }
        // For the token cache, which spares the endpoint until then; set for every
        // answer, so that an earlier one's does not outlive it.
        let retry_after = matches!(status, 429 | 503)
            .then(|| crate::retry::retry_after(response.headers()))
            .flatten();
        let _ = super::cache::RETRY_AFTER.try_with(|r| r.set(retry_after));
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(credential_error(
                    status,
                    format!("the token endpoint's answer is larger than {MAX_ANSWER_BYTES} bytes"),
                ));
            }
            answer.extend_from_slice(&chunk);
        }
        let result = parse_answer(status, &answer, sent_at, secrets);
        if let Err(error) = &result {
            // The call that asked logs what it does about it, in its span.
            tracing::debug!(error = %error, "the token endpoint did not issue a token");
        }
        result
    }
}

/// Transport failures keep their kind, so the client's retry policy applies.
fn transport(e: reqwest::Error) -> Error {
    Error::from_reqwest(e)
}

pub(crate) fn credential_error(status: u16, message: impl Into<String>) -> Error {
    Error::Credential {
        message: message.into(),
        status: Some(status),
        code: None,
        description: None,
        error_codes: Vec::new(),
        trace_id: None,
        correlation_id: None,
    }
}

/// Turns the token endpoint's answer into a token or an [`Error::Credential`].
///
/// Success: `{"token_type":"Bearer","expires_in":3599,"access_token":"…"}`; the
/// token's lifetime counts from `sent_at` so that it never outlives the real one.
/// Failure: `{"error","error_description","error_codes","trace_id","correlation_id"}`,
/// or any other body, of which a short excerpt is kept.
pub(crate) fn parse_answer(
    status: u16,
    body: &[u8],
    sent_at: Instant,
    secrets: &[&str],
) -> Result<AccessToken, Error> {
    let body = body.strip_prefix(crate::client::BOM).unwrap_or(body);
    let json = serde_json::from_slice::<Value>(body).ok();
    // An OAuth error (`"error": "invalid_client"`, …), even sent with 200, and
    // even beside a token: an answer that says both is not trusted with it
    // (which is then blanked where the error repeats it).
    let oauth_error = |json: &Option<Value>| match json {
        Some(Value::Object(fields))
            if fields
                .get("error")
                .and_then(Value::as_str)
                .is_some_and(|error| !error.trim().is_empty()) =>
        {
            let token = fields.get("access_token").and_then(Value::as_str);
            let secrets: Vec<&str> = secrets.iter().copied().chain(token).collect();
            Some(refusal(status, fields, &secrets))
        }
        _ => None,
    };
    if let Some(refused) = oauth_error(&json) {
        return Err(refused);
    }
    if !(200..300).contains(&status) {
        // A JSON body is shown as serde_json writes it, so that a secret it echoes
        // with escapes (`\u007e` for `~`) reads as itself and is blanked out;
        // so are the tokens it may hold.
        let shown = json.as_ref().map(|json| json.to_string().into_bytes());
        let issued: Vec<&str> = match &json {
            Some(Value::Object(fields)) => ["access_token", "refresh_token", "id_token"]
                .iter()
                .filter_map(|key| fields.get(*key)?.as_str())
                .collect(),
            _ => Vec::new(),
        };
        return Err(credential_error(
            status,
            match excerpt(shown.as_deref().unwrap_or(body), secrets, &issued) {
                Some(text) => format!("the token endpoint answered HTTP {status}: {text}"),
                None => format!("the token endpoint answered HTTP {status} with no body"),
            },
        ));
    }
    let Some(Value::Object(fields)) = json else {
        return Err(credential_error(
            status,
            "the token endpoint's answer is not a JSON object",
        ));
    };
    if let Some(kind) = fields.get("token_type").filter(|kind| !kind.is_null()) {
        if !kind
            .as_str()
            .is_some_and(|k| k.eq_ignore_ascii_case("bearer"))
        {
            // Shown only as a short string, without the secrets or the token the
            // answer may hold: a type of another JSON kind is named, not shown.
            let shown = match kind {
                Value::String(kind) => {
                    let token = fields.get("access_token").and_then(Value::as_str);
                    let issued: Vec<&str> = token.into_iter().collect();
                    let kind = redacted(kind, secrets, &issued, TYPE_CHARS);
                    format!("\"{}\"", crate::error::Shown(&kind))
                }
                Value::Object(_) => "an object".to_owned(),
                Value::Array(_) => "an array".to_owned(),
                _ => shorten(&kind.to_string(), TYPE_CHARS),
            };
            return Err(credential_error(
                status,
                format!("the token endpoint issued a token of type {shown}, not Bearer"),
            ));
        }
    }
    let token = match fields.get("access_token") {
        Some(Value::String(token)) if !token.trim().is_empty() => token.trim(),
        _ => {
            return Err(credential_error(
                status,
                "the token endpoint's answer holds no access_token",
            ))
        }
    };
    // Seconds, rounded down: a number (`3599`, `3599.0`, `3599.5`) or, from the v1
    // endpoint and some proxies, a string. RFC 6749 only recommends it: when it is
    // missing, the token is taken to last `DEFAULT_TOKEN_LIFETIME_SECS`.
    let seconds = |f: f64| (f.is_finite() && f >= 0.0).then(|| f.min(u64::MAX as f64) as u64);
    let lifetime = match fields.get("expires_in") {
        None | Some(Value::Null) => Some(DEFAULT_TOKEN_LIFETIME_SECS),
        Some(Value::Number(n)) => n.as_u64().or_else(|| n.as_f64().and_then(seconds)),
        Some(Value::String(s)) => {
            let s = s.trim();
            s.parse::<u64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(seconds))
        }
        _ => None,
    }
    .ok_or_else(|| {
        credential_error(
            status,
            "the token endpoint's answer holds no valid expires_in",
        )
    })?;
    // A token that expires as it is issued could be sent nowhere, and each call
    // would ask for another.
    if lifetime == 0 {
        return Err(credential_error(
            status,
            "the token endpoint issued a token that expires within a second (expires_in under 1)",
        ));
    }
    // No token is kept longer than a day, whatever the answer claims.
    let lifetime = Duration::from_secs(lifetime.min(MAX_TOKEN_LIFETIME_SECS));
    let expires_on = sent_at
        .checked_add(lifetime)
        .ok_or_else(|| credential_error(status, "the token's expires_in is out of range"))?;
    Ok(AccessToken::new(token.to_owned(), expires_on))
}

/// An OAuth error answer of Microsoft Entra ID.
fn refusal(status: u16, fields: &Map<String, Value>, secrets: &[&str]) -> Error {
    let text = |key: &str| {
        fields
            .get(key)
            .and_then(Value::as_str)
            .map(|s| redacted(s.trim(), secrets, &[], FIELD_CHARS))
            .filter(|s| !s.is_empty())
    };
    Error::Credential {
        message: "the token endpoint refused to issue a token".to_owned(),
        status: Some(status),
        code: text("error"),
        description: text("error_description"),
        error_codes: fields
            .get("error_codes")
            .and_then(Value::as_array)
            .map(|codes| codes.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default(),
        trace_id: text("trace_id"),
        correlation_id: text("correlation_id"),
    }
}

/// The start of a body that was not an OAuth error, with secrets and the tokens
/// it holds blanked out.
fn excerpt(body: &[u8], secrets: &[&str], issued: &[&str]) -> Option<String> {
    let text = redacted(
        String::from_utf8_lossy(body).trim(),
        secrets,
        issued,
        EXCERPT_CHARS,
    );
    (!text.is_empty()).then(|| crate::error::Shown(&text).to_string())
}

/// The first `chars` characters of `text` (with `…` where it was cut), every echo
/// of a secret in it replaced by `***`: the secret as it is, or with any of its
/// characters written in one of the escapes an answer may use (see
/// [`echo_len`]), in any mix. `issued` are tokens the answer itself holds, which
/// need no such care (a token's characters are never escaped) and are replaced
/// as they are.
///
/// The text is read only as far as what is shown reaches, so that the work stays
/// bounded by `chars` whatever the answer's size, and no echo is cut in two.
fn redacted(text: &str, secrets: &[&str], issued: &[&str], chars: usize) -> String {
    redacted_as(text, secrets, issued, chars, "***")
}

/// [`redacted`], with `mark` in place of each echo. A secret's white space at
/// either end is not looked for: a server may echo the secret without it.
pub(crate) fn redacted_as(
    text: &str,
    secrets: &[&str],
    issued: &[&str],
    chars: usize,
    mark: &str,
) -> String {
    let secrets: Vec<&str> = secrets
        .iter()
        .map(|s| s.trim())
        .filter(|s| s.len() >= 4)
        .collect();
    let issued: Vec<&str> = issued.iter().copied().filter(|t| t.len() >= 4).collect();
    let mut out = String::new();
    let mut shown = 0usize;
    let mut rest = text;
    'text: while let Some(c) = rest.chars().next() {
        if shown > chars {
            break;
        }
        for token in &issued {
            if rest.starts_with(token) {
                out.push_str(mark);
                shown += mark.chars().count();
                rest = &rest[token.len()..];
                continue 'text;
            }
        }
        for secret in &secrets {
            if let Some(len) = echo_len(rest.as_bytes(), secret) {
                out.push_str(mark);
                shown += mark.chars().count();
                rest = &rest[len..];
                continue 'text;
            }
        }
        out.push(c);
        shown += 1;
        rest = &rest[c.len_utf8()..];
    }
    shorten(&out, chars)
}

/// `text` with every echo of a secret replaced by `***` (see [`redacted`]).
#[cfg(test)]
fn redact(text: &str, secrets: &[&str]) -> String {
    redacted(text, secrets, &[], usize::MAX)
}

/// The length of the longest echo of `secret` at the start of `text`: each of its
/// characters as it is; percent-encoded (either case of hex digits, `+` for a
/// space); JSON-escaped (`\uXXXX`, a surrogate pair, `\"`, `\\`, `\/`, `\n`, …);
/// or HTML-escaped (`&#NN;`, `&#xHH;`, `&amp;`, `&lt;`, `&gt;`, `&quot;`,
/// `&apos;`). An echo always ends on a character boundary of `text`.
fn echo_len(text: &[u8], secret: &str) -> Option<usize> {
    echo_len_of(text, secret, true)
}

/// `text` with every echo of `word` that stands as a word of its own (not next
/// to a letter, digit, `_` or `-`) replaced by `mark`: in any ASCII case, as it
/// is or written in one of the escapes [`echo_len`] knows, but not cut short.
/// For what is not secret but kept out of a log, such as a user name.
pub(crate) fn blank_word(text: &str, word: &str, mark: &str) -> String {
    if word.is_empty() {
        return text.to_owned();
    }
    let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    // ASCII lower case keeps every byte where it is; escapes read either case.
    let (lower, word) = (text.to_ascii_lowercase(), word.to_ascii_lowercase());
    let bytes = lower.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(c) = lower[at..].chars().next() {
        if !char_before(&lower, at).is_some_and(is_word) {
            if let Some(len) = echo_len_of(&bytes[at..], &word, false) {
                if !char_after(&lower, at + len).is_some_and(is_word) {
                    out.push_str(mark);
                    at += len;
                    continue;
                }
            }
        }
        out.push_str(&text[at..at + c.len_utf8()]);
        at += c.len_utf8();
    }
    out
}

/// The byte a `%XX` escape spells.
fn percent_byte(escape: &[u8]) -> Option<u8> {
    match escape {
        [b'%', hi, lo] => hex_value(&[*hi, *lo]).and_then(|v| u8::try_from(v).ok()),
        _ => None,
    }
}

/// The character of `text` that ends at byte `at`, read through the `%XX`
/// escapes of its UTF-8 bytes if it is written so.
fn char_before(text: &str, at: usize) -> Option<char> {
    let bytes = text.as_bytes();
    let mut utf8 = [0u8; 4];
    for n in 1..=4 {
        let Some(from) = at.checked_sub(3 * n) else {
            break;
        };
        let Some(byte) = percent_byte(&bytes[from..from + 3]) else {
            break;
        };
        utf8[4 - n] = byte;
        if let Ok(decoded) = std::str::from_utf8(&utf8[4 - n..]) {
            return decoded.chars().next();
        }
    }
    text[..at].chars().next_back()
}

/// The character of `text` that starts at byte `at`, read through `%XX`
/// escapes as [`char_before`] reads them.
fn char_after(text: &str, at: usize) -> Option<char> {
    let bytes = text.as_bytes();
    let mut utf8 = [0u8; 4];
    for n in 1..=4 {
        let Some(byte) = bytes
            .get(at + 3 * (n - 1)..at + 3 * n)
            .and_then(percent_byte)
        else {
            break;
        };
        utf8[n - 1] = byte;
        if let Ok(decoded) = std::str::from_utf8(&utf8[..n]) {
            return decoded.chars().next();
        }
    }
    text[at..].chars().next()
}

/// [`echo_len`], with echoes cut short (`cut_short`) or whole ones only.
fn echo_len_of(text: &[u8], secret: &str, cut_short: bool) -> Option<usize> {
    // The ends of the echoes of the secret's first characters; few, as each
    // form of a character starts differently.
    // At most `WIDEST` of them are followed, which bounds the work for a secret
    // made of characters with many forms (`\\`, `%`, `&`): an echo that needs
    // more is one of a few of a long run of such characters, not missed by any
    // real spelling.
    const WIDEST: usize = 8;
    // (Fixed arrays: this runs at every character of a text that is scanned.)
    let (mut ends, mut count) = ([0usize; WIDEST], 1);
    for (matched, c) in secret.chars().enumerate() {
        let (mut next, mut found) = ([0usize; WIDEST], 0);
        for &at in &ends[..count] {
            for len in char_echoes(&text[at..], c).into_iter().flatten() {
                if found < WIDEST && !next[..found].contains(&(at + len)) {
                    next[found] = at + len;
                    found += 1;
                }
            }
        }
        if found == 0 {
            // The start of the secret, cut short (`secret starts with 'Zq8~ab…'`,
            // a form body cut at a length): echoed too, from `MIN_PREFIX` on. For
            // a signed token or assertion (a JWT, `eyJ…`), from `MIN_PREFIX`
            // characters past its header, which is public (the same as many
            // other JWTs').
            let public = if secret.starts_with("eyJ") {
                secret.find('.').map_or(secret.len(), |dot| dot + 1)
            } else {
                0
            };
            let prefix = cut_short && matched >= public + MIN_PREFIX;
            return prefix
                .then(|| ends[..count].iter().copied().max())
                .flatten();
        }
        (ends, count) = (next, found);
    }
    ends[..count].iter().copied().max()
}

/// The fewest characters of a secret's start that count as its echo when the
/// rest does not follow: fewer could be chance; more, and an echo cut short at
/// that length would show that much of the secret.
const MIN_PREFIX: usize = 8;

/// The lengths of the forms of `c` that `text` starts with (see [`echo_len`]).
fn char_echoes(text: &[u8], c: char) -> [Option<usize>; 7] {
    let mut buf = [0u8; 4];
    let utf8 = c.encode_utf8(&mut buf).as_bytes();
    let plain = text.starts_with(utf8).then_some(utf8.len());
    // A space as `+`, and that `+` encoded again as `%2B`.
    let plus = match text {
        [b'+', ..] if c == ' ' => Some(1),
        [b'%', b'2', b'b' | b'B', ..] if c == ' ' => Some(3),
        _ => None,
    };
    // Each byte of the UTF-8 form as `%XX`, or encoded twice as `%25XX` (a form
    // body quoted inside a URL).
    let percent = |prefix: &[u8]| {
        let mut at = 0;
        for &byte in utf8 {
            let rest = text.get(at..)?.strip_prefix(prefix)?;
            let [hi, lo, ..] = rest else {
                return None;
            };
            (hex_value(&[*hi, *lo])? == u32::from(byte)).then_some(())?;
            at += prefix.len() + 2;
        }
        Some(at)
    };
    let (percent_once, percent_twice) = (percent(b"%"), percent(b"%25"));
    let json = json_escape_len(text, c);
    let html = html_escape_len(text, c);
    // Escaped twice for HTML, the reference's own `&` is `&amp;`.
    let html_twice = text
        .strip_prefix(b"&amp;")
        .and_then(|rest| {
            // A reference is at most 12 bytes: no more is copied.
            let mut reference = [0u8; 13];
            let head = &rest[..rest.len().min(12)];
            reference[0] = b'&';
            reference[1..=head.len()].copy_from_slice(head);
            html_escape_len(&reference[..=head.len()], c)
        })
        .map(|len| len + 4);
    [
        plain,
        plus,
        percent_once,
        percent_twice,
        json,
        html,
        html_twice,
    ]
}

/// The length of a JSON escape of `c` that `text` starts with.
fn json_escape_len(text: &[u8], c: char) -> Option<usize> {
    let [b'\\', kind, ..] = text else {
        return None;
    };
    let short = match kind {
        b'"' | b'\\' | b'/' => Some(char::from(*kind)),
        b'b' => Some('\u{8}'),
        b'f' => Some('\u{c}'),
        b'n' => Some('\n'),
        b'r' => Some('\r'),
        b't' => Some('\t'),
        _ => None,
    };
    if short.is_some() {
        return (short == Some(c)).then_some(2);
    }
    let unit = |at: usize| {
        let [b'\\', b'u', digits @ ..] = text.get(at..)? else {
            return None;
        };
        hex_value(digits.get(..4)?)
    };
    let first = unit(0)?;
    if first == u32::from(c) {
        return Some(6);
    }
    // A character beyond the first plane, as a surrogate pair.
    let mut pair = [0u16; 2];
    match c.encode_utf16(&mut pair) {
        [high, low] => (first == u32::from(*high) && unit(6)? == u32::from(*low)).then_some(12),
        _ => None,
    }
}

/// The length of an HTML character reference to `c` that `text` starts with.
fn html_escape_len(text: &[u8], c: char) -> Option<usize> {
    if text.first() != Some(&b'&') {
        return None;
    }
    let end = text.iter().take(12).position(|&b| b == b';')?;
    let name = &text[1..end];
    let named = match name {
        b"amp" => Some('&'),
        b"lt" => Some('<'),
        b"gt" => Some('>'),
        b"quot" => Some('"'),
        b"apos" => Some('\''),
        _ => None,
    };
    let value = match (named, name) {
        (Some(named), _) => u32::from(named),
        (None, [b'#', b'x' | b'X', hex @ ..]) if !hex.is_empty() => hex_value(hex)?,
        (None, [b'#', digits @ ..]) if !digits.is_empty() => {
            std::str::from_utf8(digits).ok()?.parse().ok()?
        }
        _ => return None,
    };
    (value == u32::from(c)).then_some(end + 1)
}

/// The value of `digits` read as hexadecimal (at most eight of them).
fn hex_value(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    digits.iter().try_fold(0u32, |value, &d| {
        Some(value * 16 + char::from(d).to_digit(16)?)
    })
}

/// Validates an authority host and returns it without a trailing `/`.
///
/// A bare host name gets `https://`; plain http is only accepted for loopback hosts.
pub(crate) fn normalise_authority(input: &str) -> Result<String, Error> {
    let trimmed = input.trim();
    // A bare host (`login.microsoftonline.us`, `localhost:8080`) is https. Text
    // that names a scheme is read as the URL it is, however it is written:
    // `https:/login.microsoftonline.us` must not become the host `https`.
    let names_scheme = hooks::scheme_len(trimmed).is_some_and(|n| {
        !trimmed[n + 1..]
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit())
    });
    let with_scheme = if names_scheme {
        trimmed.to_owned()
    } else {
        format!("https://{trimmed}")
    };
    hooks::normalise_service_url(&with_scheme, "authority host", input)
}

/// A tenant id is a GUID or a domain name (`contoso.onmicrosoft.com`), or one of
/// `organizations`/`common`: always exactly one URL path segment.
pub(crate) fn check_tenant(tenant: &str) -> Result<(), Error> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 256
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && tenant.bytes().any(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        // Not shown: it may be a secret given in its place.
        Err(Error::credential(format!(
            "invalid tenant id ({} characters): expected a GUID or a domain name, \
             such as contoso.onmicrosoft.com",
            tenant.chars().count()
        )))
    }
}

/// Microsoft Entra ID's sign-in hosts, and the cloud each signs in to.
const MICROSOFT_SIGN_IN: [(&str, &str); 6] = [
    ("login.microsoftonline.com", "commercial"),
    ("login.microsoft.com", "commercial"),
    ("login.windows.net", "commercial"),
    ("login.microsoftonline.us", "US Government"),
    ("login.chinacloudapi.cn", "China"),
    ("login.partner.microsoftonline.cn", "China"),
];

/// The cloud `host` signs in to, when it is one of Microsoft's sign-in hosts
/// (in any letter case, with or without a trailing dot).
pub(crate) fn microsoft_sign_in(host: &str) -> Option<&'static str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    MICROSOFT_SIGN_IN
        .iter()
        .find(|(known, _)| host.eq_ignore_ascii_case(known))
        .map(|&(_, cloud)| cloud)
}

/// Whether `id` is a GUID (`0b0e3a5c-1111-4a2b-9c3d-444455556666`), as an app's
/// client id always is; braces are not taken.
pub(crate) fn is_guid(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn success_answers() {
        let sent = Instant::now();
        for body in [
            r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":0,"access_token":"tok"}"#,
            r#"{"token_type":"bearer","expires_in":"3599","access_token":"tok"}"#,
            r#"{"expires_in":3599,"access_token":"tok"}"#,
            r#"{"token_type":null,"expires_in":3599.0,"access_token":"tok"}"#,
            // Rounded down, as a number or as a string; white space around the token.
            r#"{"expires_in":3599.5,"access_token":"tok"}"#,
            r#"{"expires_in":" 3599.9 ","access_token":" tok "}"#,
            "\u{FEFF}{\"expires_in\":3599,\"access_token\":\"tok\"}",
        ] {
            let token = parse_answer(200, body.as_bytes(), sent, &[]).unwrap();
            assert_eq!(token.token.expose_secret(), "tok", "{body}");
            assert_eq!(
                token.expires_on,
                Some(sent + Duration::from_secs(3599)),
                "{body}"
            );
        }
        // RFC 6749 only recommends expires_in: without it, a short default.
        let body = r#"{"token_type":"Bearer","access_token":"tok"}"#;
        let token = parse_answer(200, body.as_bytes(), sent, &[]).unwrap();
        assert_eq!(
            token.expires_on,
            Some(sent + Duration::from_secs(DEFAULT_TOKEN_LIFETIME_SECS))
        );
        let body = r#"{"expires_in":18446744073709551615,"access_token":"tok"}"#;
        let token = parse_answer(200, body.as_bytes(), sent, &[]).unwrap();
        assert_eq!(token.expires_on, Some(sent + Duration::from_secs(86_400)));
    }

    #[test]
    fn malformed_success_answers() {
        let sent = Instant::now();
        for body in [
            "",
            "not json",
            "[]",
            r#"{"token_type":"Bearer","expires_in":3599}"#,
            r#"{"token_type":"Bearer","expires_in":3599,"access_token":""}"#,
            r#"{"token_type":"Bearer","expires_in":"soon","access_token":"SECRET-TOKEN"}"#,
            r#"{"token_type":"Bearer","expires_in":3599,"access_token":"   "}"#,
            r#"{"token_type":"Bearer","expires_in":-5,"access_token":"SECRET-TOKEN"}"#,
            r#"{"token_type":"Bearer","expires_in":0,"access_token":"SECRET-TOKEN"}"#,
            r#"{"token_type":"Bearer","expires_in":"0.5","access_token":"SECRET-TOKEN"}"#,
            r#"{"token_type":"pop","expires_in":5,"access_token":"SECRET-TOKEN"}"#,
            // An OAuth error beside a token: not trusted with it.
            r#"{"error":"invalid_client","access_token":"SECRET-TOKEN","expires_in":3599}"#,
            r#"{"error":"invalid_client","error_description":"no SECRET-TOKEN","access_token":"SECRET-TOKEN"}"#,
        ] {
            let err = parse_answer(200, body.as_bytes(), sent, &[]).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Credential {
                        status: Some(200),
                        ..
                    }
                ),
                "{body}"
            );
            assert!(!format!("{err} {err:?}").contains("SECRET-TOKEN"), "{body}");
        }
    }

    #[test]
    fn an_error_with_a_null_token_keeps_its_description() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: bad","access_token":null}"#;
        match parse_answer(200, body, Instant::now(), &[]).unwrap_err() {
            Error::Credential {
                code, description, ..
            } => {
                assert_eq!(code.as_deref(), Some("invalid_client"));
                assert_eq!(description.as_deref(), Some("AADSTS7000215: bad"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_answers() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215],"timestamp":"2024-01-01 00:00:00Z","trace_id":"t-1","correlation_id":"c-1"}"#;
        let err = parse_answer(401, body, Instant::now(), &[]).unwrap_err();
        match &err {
            Error::Credential {
                status,
                code,
                description,
                error_codes,
                trace_id,
                correlation_id,
                ..
            } => {
                assert_eq!(*status, Some(401));
                assert_eq!(code.as_deref(), Some("invalid_client"));
                assert!(description.as_deref().unwrap().starts_with("AADSTS7000215"));
                assert_eq!(error_codes, &[7000215]);
                assert_eq!(trace_id.as_deref(), Some("t-1"));
                assert_eq!(correlation_id.as_deref(), Some("c-1"));
            }
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("AADSTS7000215") && text.contains("t-1"),
            "{text}"
        );
    }

    /// An OAuth error sent with 200 keeps its details; an `error` that is not
    /// OAuth's (a gateway's object) is excerpted.
    #[test]
    fn error_answers_of_other_shapes() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","trace_id":"t-2"}"#;
        match parse_answer(200, body, Instant::now(), &[]).unwrap_err() {
            Error::Credential {
                status: Some(200),
                code,
                trace_id,
                ..
            } => {
                assert_eq!(code.as_deref(), Some("invalid_client"));
                assert_eq!(trace_id.as_deref(), Some("t-2"));
            }
            other => panic!("{other:?}"),
        }
        let body = br#"{"error":{"code":"ProxyBlocked","message":"blocked by policy"}}"#;
        let err = parse_answer(500, body, Instant::now(), &[]).unwrap_err();
        assert!(err.to_string().contains("ProxyBlocked"), "{err}");
    }

    /// A `token_type` other than Bearer is named without the secret, the token or
    /// anything long it may hold; the fields of an OAuth error are bounded.
    #[test]
    fn odd_token_types_and_long_refusals_stay_short_and_secret_free() {
        let secret = "CLIENT~SECRET.value";
        for (kind, shown) in [
            (r#""CLIENT~SECRET.value""#, r#"type "***", not"#),
            (r#""THE-ACCESS-TOKEN""#, r#"type "***", not"#),
            (r#"{"k":"THE-ACCESS-TOKEN"}"#, "type an object, not"),
            (r#"["THE-ACCESS-TOKEN"]"#, "type an array, not"),
            ("17", "type 17, not"),
            (r#""pop""#, r#"type "pop", not"#),
        ] {
            let body = format!(
                r#"{{"token_type":{kind},"expires_in":3599,"access_token":"THE-ACCESS-TOKEN"}}"#
            );
            let err = parse_answer(200, body.as_bytes(), Instant::now(), &[secret]).unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(text.contains(shown), "{kind}: {text}");
            assert!(
                !text.contains("SECRET") && !text.contains("ACCESS"),
                "{text}"
            );
        }
        let long = "y".repeat(100_000);
        let body = format!(r#"{{"token_type":"{long}","access_token":"t"}}"#);
        let err = parse_answer(200, body.as_bytes(), Instant::now(), &[]).unwrap_err();
        assert!(err.to_string().len() < 300, "{err}");

        let body = format!(
            r#"{{"error":"{long}","error_description":"{long}","trace_id":"{long}","correlation_id":"{long}"}}"#
        );
        let err = parse_answer(400, body.as_bytes(), Instant::now(), &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.len() < 4 * (FIELD_CHARS + 8) + 200, "{}", text.len());
        match err {
            Error::Credential { description, .. } => {
                assert_eq!(description.unwrap().chars().count(), FIELD_CHARS + 1);
            }
            other => panic!("{other:?}"),
        }
    }

    /// A secret given with white space at an end (pasted, or read from a file)
    /// is blanked when echoed without it, as the fields are shown trimmed.
    #[test]
    fn a_secret_framed_in_white_space_is_blanked_without_it() {
        let secret = " Zq8~SECRETsecretSECRET0123\t";
        let fields = serde_json::json!({"error": "invalid_client", "error_description": secret});
        let error = refusal(401, fields.as_object().unwrap(), &[secret]);
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("SECRETsecret"), "{shown}");
        assert_eq!(
            excerpt(b"Zq8~SECRETsecretSECRET0123 is not valid", &[secret], &[]).as_deref(),
            Some("*** is not valid")
        );
    }

    /// An echoed secret is blanked however the answer spells it.
    #[test]
    fn echoed_secrets_are_redacted_in_any_spelling() {
        let secret = "Ab1~Q<x>&'\" z";
        let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        assert!(encoded.contains('+'), "{encoded}");
        // Percent-encoded with a given set of bytes left as they are.
        let percent = |keep: &dyn Fn(u8) -> bool, lower: bool| -> String {
            secret
                .bytes()
                .map(|b| match (keep(b), lower) {
                    (true, _) => char::from(b).to_string(),
                    (false, false) => format!("%{b:02X}"),
                    (false, true) => format!("%{b:02x}"),
                })
                .collect()
        };
        let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
        let uri_component = |b: u8| unreserved(b) || b"!*'()".contains(&b);
        let python_quote = |b: u8| unreserved(b) || b == b'/';
        let json = serde_json::to_string(secret).unwrap();
        let json = &json[1..json.len() - 1];
        for echo in [
            secret.to_owned(),
            encoded.clone(),
            encoded
                .to_lowercase()
                .replace("ab1", "Ab1")
                .replace('q', "Q"),
            encoded.replace('+', "%20"),
            "Ab1~Q&lt;x&gt;&amp;&#39;&quot; z".to_owned(),
            // encodeURIComponent, RFC 3986 and Python's `quote`, either case.
            percent(&uri_component, false),
            percent(&unreserved, true),
            percent(&python_quote, false),
            // JSON and HTML escapes, numeric references, and a mix of all.
            json.to_owned(),
            json.replace('/', "\\/"),
            "\\u0041b1\\u007EQ\\u003cx\\u003E\\u0026'\\\" z".to_owned(),
            "&#65;b1&#x7e;Q&#60;x&#X3E;&amp;&apos;&#34;&#32;z".to_owned(),
            "A%62\\u0031~Q&lt;x%3e\\u0026&#39;\\\"+z".to_owned(),
            // Escaped twice: a form body quoted inside a URL, an HTML page's text
            // escaped again.
            encoded.replace('%', "%25"),
            "Ab1~Q&amp;lt;x&amp;gt;&amp;amp;&amp;#39;&amp;quot; z".to_owned(),
        ] {
            let body = format!("<html>rejected {echo} here</html>");
            let err = parse_answer(400, body.as_bytes(), Instant::now(), &[secret]).unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(
                text.contains("rejected") && text.contains("***"),
                "{echo}: {text}"
            );
            assert!(!text.contains("Ab1"), "{echo}: {text}");
        }
        // A secret beyond the first plane, as a JSON-style surrogate pair in a
        // page; and in the re-serialised JSON of an answer, where `"` and `\`
        // come escaped.
        let err = parse_answer(
            400,
            "<p>x \\ud83d\\ude00secret-1</p>".as_bytes(),
            Instant::now(),
            &["\u{1f600}secret-1"],
        )
        .unwrap_err();
        assert!(!format!("{err:?}").contains("secret-1"), "{err:?}");
        let quoted = "se\"cr\\et-2";
        let body = serde_json::json!({"detail": format!("bad {quoted}")}).to_string();
        let err = parse_answer(500, body.as_bytes(), Instant::now(), &[quoted]).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("et-2"), "{err:?}");
        // Text that only resembles the secret's start, for fewer than eight
        // characters, is left as it is; from eight on, it is the secret cut
        // short (an echo of its start, as a message or a cut body shows it).
        assert_eq!(redact("Ab1~Q<x y", &[secret]), "Ab1~Q<x y");
        assert_eq!(redact("Ab1~Q<x>&'\" y", &[secret]), "***y");
        assert_eq!(redact("%4", &["%41bc"]), "%4");
        let long = "Zq8~SENTINELsecretvalue0123456789abcdefgh";
        for (echo, shown) in [
            (
                "secret starts with 'Zq8~SENTINEL...'",
                "secret starts with '***...'",
            ),
            (
                "&client_secret=Zq8~SENTINELsecretva</html>",
                "&client_secret=***</html>",
            ),
            ("&client_secret=Zq8%7ESENTI", "&client_secret=***"),
            ("Zq8~SENT", "***"),
            ("Zq8~SEN.", "Zq8~SEN."),
        ] {
            assert_eq!(redact(echo, &[long]), shown, "{echo}");
        }
        // A signed assertion's start is a JWT header any JWT may share: another
        // token in the text is left whole; the assertion itself is not.
        let assertion = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJ4In0.c2lnbmF0dXJl";
        let other = "id_token=eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ5In0.b3RoZXI";
        assert_eq!(redact(other, &[assertion]), other);
        assert_eq!(redact(&format!("a={assertion}"), &[assertion]), "a=***");
        // Cut short past its header, from eight characters on, it is its own.
        let header = assertion.find('.').unwrap() + 1;
        for cut in [header + 8, header + 12, assertion.len() - 6] {
            let echo = format!("token '{}...' refused", &assertion[..cut]);
            assert_eq!(
                redact(&echo, &[assertion]),
                "token '***...' refused",
                "{cut}"
            );
        }
        let echo = format!("token '{}...' refused", &assertion[..header + 7]);
        assert_eq!(redact(&echo, &[assertion]), echo);
        // A `%` of the secret encoded once, though `%25` could start a second
        // encoding; a space encoded twice.
        for (secret, echo) in [
            ("Pa%ss-SENTINEL", "Pa%25ss-SENTINEL"),
            ("Pa%ab-SENTINEL", "Pa%25ab-SENTINEL"),
            ("SENTINEL%41zz", "SENTINEL%2541zz"),
            ("%%%%%%", "%25%25%25%25%25%25"),
            ("two words", "two%2Bwords"),
        ] {
            assert_eq!(redact(&format!("x={echo}"), &[secret]), "x=***", "{secret}");
        }
        // A long secret in long escapes, starting just before the cut.
        let long: String = (0..1_200)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let escaped: String = long
            .chars()
            .map(|c| format!("&#x{:08x};", u32::from(c)))
            .collect();
        let text = format!("{}{escaped}", "-".repeat(4_000));
        let shown = redacted(&text, &[&long], &[], 4_010);
        assert!(shown.ends_with("***"), "{}", &shown[shown.len() - 40..]);
        assert_eq!(redact("&#;&#x;\\u12", &["abcd"]), "&#;&#x;\\u12");
    }

    /// Hostile answers: a long run of characters with many forms against a secret
    /// made of them, a long token the answer chooses, a huge description. Only
    /// the start that can be shown is looked at, and the work per place is bounded.
    #[test]
    fn hostile_answers_are_redacted_within_what_is_shown() {
        let secret = "\\".repeat(40);
        let description = "\\".repeat(500_000);
        let body = serde_json::json!({"error": "invalid_client", "error_description": description});
        let err =
            parse_answer(400, body.to_string().as_bytes(), Instant::now(), &[&secret]).unwrap_err();
        match err {
            Error::Credential { description, .. } => {
                let description = description.unwrap();
                assert!(description.starts_with("***"), "{description:.80}");
                assert!(description.chars().count() <= FIELD_CHARS + 1);
            }
            other => panic!("{other:?}"),
        }
        let token = format!("{}b", "a".repeat(4_000));
        let body = serde_json::json!({"access_token": token, "pad": "a".repeat(400_000)});
        let err = parse_answer(500, body.to_string().as_bytes(), Instant::now(), &[]).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("***") && !shown.contains("aab"),
            "{shown:.300}"
        );
        assert!(shown.len() < 400, "{}", shown.len());
        // What is shown holds no part of an echo, however many came before.
        let secret_40 = "Xy7~Q.abc_DEF-ghij0123456789klmnopqrstuv";
        let many = format!("{secret_40} ").repeat(1_000);
        assert!(!redacted(&many, &[secret_40], &[], 200).contains("Xy7"));
        let encoded: String = secret_40.bytes().map(|b| format!("%25{b:02X}")).collect();
        let many = format!("{encoded} ").repeat(60);
        let shown = redacted(&many, &[secret_40], &[], 200);
        assert!(!shown.contains("%25"), "{shown}");
        let token = "t".repeat(9_000);
        let many = format!("{token} ").repeat(3);
        assert!(!redacted(&many, &[], &[&token], 4_096).contains("tt"));
        // An echo beyond what is shown is not looked for.
        let far = format!("{} {secret}", "x".repeat(1_000_000));
        assert_eq!(redacted(&far, &[&secret], &[], 10), "xxxxxxxxxx…");
    }

    #[test]
    fn other_error_bodies_are_excerpted_and_redacted() {
        let err = parse_answer(
            502,
            b"<html>bad gateway for client_secret=s3cr%2Bt-value s3cr+t-value</html>",
            Instant::now(),
            &["s3cr+t-value"],
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("HTTP 502") && text.contains("bad gateway"),
            "{text}"
        );
        assert!(!text.contains("s3cr"), "{text}");

        let err = parse_answer(503, b"", Instant::now(), &[]).unwrap_err();
        assert!(err.to_string().contains("no body"), "{err}");
        // Echoed in JSON with escapes.
        let err = parse_answer(
            400,
            br#"{"detail":"rejected s3cr\u002bt\u007evalue"}"#,
            Instant::now(),
            &["s3cr+t~value"],
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("rejected ***"), "{text}");

        // Tokens in an answer that is not a success are blanked too.
        let err = parse_answer(
            500,
            br#"{"access_token":"eyJ0eXAi.ISSUED-TOKEN","refresh_token":"REFRESH-TOKEN","x":1}"#,
            Instant::now(),
            &[],
        )
        .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(text.contains("HTTP 500") && text.contains("***"), "{text}");
        assert!(
            !text.contains("ISSUED") && !text.contains("REFRESH"),
            "{text}"
        );

        let long = "x".repeat(5000);
        let err = parse_answer(500, long.as_bytes(), Instant::now(), &[]).unwrap_err();
        assert!(err.to_string().len() < 400, "{err}");
    }

    #[test]
    fn authorities() {
        for (input, expected) in [
            (
                "https://login.microsoftonline.com/",
                "https://login.microsoftonline.com",
            ),
            (
                "login.microsoftonline.us",
                "https://login.microsoftonline.us",
            ),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://localhost:1/prefix/", "http://localhost:1/prefix"),
            ("localhost:8080", "https://localhost:8080"),
            // A scheme written with one slash is still that scheme, not a host.
            (
                "https:/login.microsoftonline.us",
                "https://login.microsoftonline.us",
            ),
            (
                "HTTPS:\\login.microsoftonline.us",
                "https://login.microsoftonline.us",
            ),
            ("http:/127.0.0.1:8080", "http://127.0.0.1:8080"),
        ] {
            assert_eq!(normalise_authority(input).unwrap(), expected, "{input}");
        }
        for bad in [
            "http://login.microsoftonline.com",
            "ftp://127.0.0.1",
            "https://h/?q=1",
            "https://u:p@h",
            "https://",
            "",
            "http:/login.microsoftonline.com",
            "ftp:/127.0.0.1",
            "https:/svc:PW@login.example",
            "https:svc:PW@login.example",
            "\thttps:/svc:PW@login.example",
            " https://svc:PW@login.example",
            // Mistyped: the host would be `https`.
            "https//login.microsoftonline.us",
            "https;//login.microsoftonline.us",
            "http//127.0.0.1",
        ] {
            let err = normalise_authority(bad);
            assert!(matches!(err, Err(Error::Config(_))), "{bad}: {err:?}");
            assert!(!format!("{err:?}").contains("PW"), "{bad}: {err:?}");
        }
    }

    #[test]
    fn tenants() {
        for ok in [
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "contoso.onmicrosoft.com",
            "organizations",
        ] {
            check_tenant(ok).unwrap();
        }
        for bad in ["", "..", ".", "a/b", "a\\b", "a b", "a%2fb", "a?b"] {
            assert!(check_tenant(bad).is_err(), "{bad}");
        }
    }
}
