//! [`UserName`]: the user-name rule of the Defender API.

use std::{fmt, str::FromStr};

use percent_encoding::{AsciiSet, CONTROLS};

/// What a user name's path segment percent-encodes: control characters, the
/// space, every other character RFC 3986 does not allow in a path segment (`"`
/// `#` `%` `/` `<` `>` `?` `[` `\` `]` `^` `` ` `` `{` `|` `}`) and `;`, which
/// some servers read as the start of path parameters. Non-ASCII is always encoded.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b';');

/// `name` percent-encoded as one path segment (see [`SEGMENT`]). The generated
/// operations use it in place of the generator's `encode_path`, which leaves
/// `[`, `]`, `\`, `^`, `|` and `;` as they are.
pub(crate) fn encode_segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, SEGMENT).to_string()
}

/// The longest user name accepted, in characters.
pub const MAX_USER_NAME_CHARS: usize = 256;

/// A user name as the Defender API expects it in `/api/users/{id}/...`.
///
/// The API identifies a user by the **user name only**, not the full UPN: the
/// machines of `user1@contoso.com` are at `/api/users/user1/machines`. Other
/// endpoints (for example `/api/machines/{id}/logonusers`) hand out user ids as
/// down-level logon names such as `CONTOSO\user1`. [`UserName::parse`] accepts
/// all three forms and normalises them with this rule:
///
/// 1. Surrounding white space is trimmed.
/// 2. A UPN `local@domain` (exactly one `@`, both sides non-empty) becomes `local`.
/// 3. Otherwise a down-level name `DOMAIN\name` (exactly one `\`, both sides
///    non-empty) becomes `name`.
/// 4. A bare name stays as it is.
///
/// The result is rejected ([`InvalidUserName`]) when it is empty, is `.` or
/// `..`, still contains `@`, `\` or `/`, or is longer than
/// [`MAX_USER_NAME_CHARS`] characters; so is an input with a control character
/// anywhere inside what step 1 leaves, in the part that step 2 or 3 drops too
/// (`user1@con\ntoso.com`). Everything else — dots,
/// apostrophes, `#`, `%`, spaces inside the name, non-ASCII letters — is kept
/// unchanged and sent as exactly one path segment, percent-encoded wherever
/// RFC 3986 does not allow the character as it is (and for `;`).
///
/// Only one of steps 2 and 3 applies: `CONTOSO\user1@contoso.com` is rejected
/// rather than guessed at.
///
/// ```
/// use defender_endpoint::UserName;
///
/// assert_eq!(UserName::parse("user1@contoso.com")?.as_str(), "user1");
/// assert_eq!(UserName::parse(r"CONTOSO\user1")?.as_str(), "user1");
/// assert_eq!(UserName::parse("  o'brien.j  ")?.as_str(), "o'brien.j");
/// assert!(UserName::parse("..").is_err());
/// assert!(UserName::parse("a/b").is_err());
/// # Ok::<(), defender_endpoint::InvalidUserName>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(String);

impl UserName {
    /// Applies the user-name rule (see the type's documentation) to `input`.
    pub fn parse(input: &str) -> Result<Self, InvalidUserName> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(InvalidUserName::new(input, InvalidUserNameReason::Empty));
        }
        let name = if let Some((local, domain)) = trimmed.split_once('@') {
            if local.is_empty() || domain.is_empty() || domain.contains('@') {
                return Err(InvalidUserName::new(
                    input,
                    InvalidUserNameReason::MalformedUpn,
                ));
            }
            local
        } else if let Some((domain, name)) = trimmed.split_once('\\') {
            if domain.is_empty() || name.is_empty() || name.contains('\\') {
                return Err(InvalidUserName::new(
                    input,
                    InvalidUserNameReason::MalformedDownLevel,
                ));
            }
            name
        } else {
            trimmed
        };
        if name == "." || name == ".." {
            return Err(InvalidUserName::new(
                input,
                InvalidUserNameReason::DotSegment,
            ));
        }
        let forbidden = |c: char| matches!(c, '@' | '\\' | '/');
        // An ASCII name (the usual one) is checked byte by byte.
        let ascii = name.is_ascii();
        let found = if ascii {
            name.bytes().map(char::from).find(|&c| forbidden(c))
        } else {
            name.chars().find(|&c| forbidden(c))
        };
        if let Some(c) = found {
            return Err(InvalidUserName::new(
                input,
                InvalidUserNameReason::ForbiddenCharacter(c),
            ));
        }
        // In the whole input, the part the rule drops included: a domain with a
        // control character is no name a caller meant.
        let control = if trimmed.is_ascii() {
            trimmed.bytes().any(|b| b.is_ascii_control())
        } else {
            trimmed.chars().any(char::is_control)
        };
        if control {
            return Err(InvalidUserName::new(
                input,
                InvalidUserNameReason::ControlCharacter,
            ));
        }
        let chars = if ascii {
            name.len()
        } else {
            name.chars().count()
        };
        if chars > MAX_USER_NAME_CHARS {
            return Err(InvalidUserName::new(
                input,
                InvalidUserNameReason::TooLong(chars),
            ));
        }
        Ok(Self(name.to_owned()))
    }

    /// The normalised user name, exactly as it is sent (before percent-encoding).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as names are compared, ignoring case the way Windows does
    /// (ordinal, ignoring case): each character upper-cased on its own, where
    /// Unicode gives it a single upper-case character, except `ı` (U+0131) and
    /// `ſ` (U+017F), which Windows leaves as they are. So `USER1` and `user1` are
    /// one name, while `K` (U+212A KELVIN SIGN) and `k`, `Ω` (U+2126 OHM SIGN)
    /// and `ω`, or `admın` and `admin`, which a plain Unicode case mapping would
    /// merge, stay apart.
    pub(crate) fn case_key(name: &str) -> impl Iterator<Item = char> + '_ {
        name.chars().map(|c| {
            if matches!(c, '\u{131}' | '\u{17F}') {
                return c;
            }
            let mut upper = c.to_uppercase();
            match (upper.next(), upper.next()) {
                (Some(u), None) => u,
                _ => c,
            }
        })
    }

    /// Whether `other` names this user, ignoring case as [`Self::case_key`] does.
    pub(crate) fn is_same_name(&self, other: &str) -> bool {
        Self::case_key(&self.0).eq(Self::case_key(other))
    }

    /// What makes this name unlikely to be one Defender knows, although the rule
    /// keeps it: white space at either end (`user1 @contoso.com` gives `user1 `),
    /// an invisible character (a byte-order mark, a zero-width space, a
    /// bidirectional control, a Hangul filler, a line separator), or a character
    /// made to look like `@`, `\`, `/` or `.` (`user1＠contoso.com` is one name,
    /// not a UPN). [`Client`](crate::Client) logs a warning for such
    /// a name, since the API answers it with no machines rather than an error.
    pub fn oddity(&self) -> Option<&'static str> {
        if self.0.trim() != self.0 {
            Some("begins or ends with white space")
        } else if self.0.is_ascii() {
            None
        } else if self.0.chars().any(is_invisible) {
            Some("holds an invisible formatting character")
        } else if self.0.chars().any(is_lookalike) {
            Some("holds a character that looks like @, \\, / or . but is not one")
        } else {
            None
        }
    }

    /// Consumes the user name, returning the normalised string.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Formatting characters (Unicode category Cf) that are invisible where a name
/// is shown (none of them ASCII). The zero-width joiner and non-joiner (U+200C,
/// U+200D) are left out: some scripts spell names with them.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{AD}'                      // soft hyphen
            | '\u{61C}'               // Arabic letter mark
            | '\u{180E}'              // Mongolian vowel separator
            | '\u{200B}'              // zero-width space
            | '\u{200E}'..='\u{200F}' // left-to-right and right-to-left marks
            | '\u{202A}'..='\u{202E}' // bidirectional embeddings and overrides
            | '\u{2060}'..='\u{206F}' // word joiner, invisible operators, isolates
            | '\u{FEFF}'              // byte-order mark, zero-width no-break space
            | '\u{FFF9}'..='\u{FFFB}' // interlinear annotation
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}' // tags
            // Not formatting characters, but as invisible in a name:
            | '\u{34F}'                // combining grapheme joiner
            | '\u{115F}'..='\u{1160}' // Hangul choseong and jungseong fillers
            | '\u{3164}'               // Hangul filler
            | '\u{FFA0}'               // halfwidth Hangul filler
            | '\u{2028}'..='\u{2029}' // line and paragraph separators
    )
}

/// Characters drawn like `@`, `\`, `/` or `.`, which the user-name rule does not
/// take for them: a name holding one is not the UPN or down-level name it looks
/// like.
fn is_lookalike(c: char) -> bool {
    matches!(
        c,
        '\u{FF20}' | '\u{FE6B}'                          // ＠ ﹫
            | '\u{FF3C}' | '\u{FE68}' | '\u{2216}' | '\u{29F5}' | '\u{29F9}' // ＼ ﹨ ∖ ⧵ ⧹
            | '\u{FF0F}' | '\u{2215}' | '\u{2044}' | '\u{29F8}' // ／ ∕ ⁄ ⧸
            | '\u{FF0E}' | '\u{2024}' | '\u{2025}' | '\u{FE52}' // ． ․ ‥ ﹒
    )
}

impl fmt::Debug for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UserName").field(&self.0).finish()
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for UserName {
    type Err = InvalidUserName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for UserName {
    type Error = InvalidUserName;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl TryFrom<String> for UserName {
    type Error = InvalidUserName;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl AsRef<str> for UserName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for UserName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Deserialising applies [`UserName::parse`], so a configuration file cannot smuggle
/// in a name that breaks the rule.
impl<'de> serde::Deserialize<'de> for UserName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl From<UserName> for String {
    fn from(name: UserName) -> Self {
        name.0
    }
}

/// Why a string is not a valid Defender user name. See [`UserName`] for the rule.
///
/// Its `Display` and `Debug` show the input cut at 64 characters (so that a huge
/// input does not flood a log); [`input`](Self::input) gives it whole.
#[derive(Clone, PartialEq, Eq)]
pub struct InvalidUserName {
    input: String,
    reason: InvalidUserNameReason,
}

/// The broken part of the user-name rule.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidUserNameReason {
    /// Empty, or only white space.
    Empty,
    /// Contains `@` but is not `local@domain` with exactly one `@` and both sides non-empty.
    MalformedUpn,
    /// Contains `\` but is not `DOMAIN\name` with exactly one `\` and both sides non-empty.
    MalformedDownLevel,
    /// The name is `.` or `..`, which a URL would resolve to another path.
    DotSegment,
    /// The name still contains `@`, `\` or `/`.
    ForbiddenCharacter(char),
    /// The name contains a control character (such as a newline or NUL).
    ControlCharacter,
    /// The name is longer than [`MAX_USER_NAME_CHARS`] characters (the count is given).
    TooLong(usize),
}

impl InvalidUserName {
    fn new(input: &str, reason: InvalidUserNameReason) -> Self {
        Self {
            input: input.to_owned(),
            reason,
        }
    }

    /// The string that was rejected, as it was given.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// Which part of the rule it broke.
    pub fn reason(&self) -> &InvalidUserNameReason {
        &self.reason
    }
}

impl fmt::Display for InvalidUserNameReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidUserNameReason::Empty => f.write_str("it is empty or white space only"),
            InvalidUserNameReason::MalformedUpn => {
                f.write_str("a UPN must be local@domain with exactly one '@' and both parts present")
            }
            InvalidUserNameReason::MalformedDownLevel => f.write_str(
                r"a down-level name must be DOMAIN\name with exactly one '\' and both parts present",
            ),
            InvalidUserNameReason::DotSegment => f.write_str("'.' and '..' are not user names"),
            // (A second `@` is a malformed UPN: of `@` and `\`, only `\` is left to find.)
            InvalidUserNameReason::ForbiddenCharacter('\\') => f.write_str(
                r"it contains '\': a name is either user@domain or DOMAIN\user, not both",
            ),
            InvalidUserNameReason::ForbiddenCharacter(c) => write!(f, "it contains {c:?}"),
            InvalidUserNameReason::ControlCharacter => f.write_str("it contains a control character"),
            InvalidUserNameReason::TooLong(n) => {
                write!(f, "it has {n} characters, more than {MAX_USER_NAME_CHARS}")
            }
        }
    }
}

/// How much of an invalid input its `Display` and `Debug` show.
const SHOWN_CHARS: usize = 64;

impl fmt::Display for InvalidUserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The input is shown escaped so that control characters cannot forge log lines,
        // and cut so that a huge input does not flood a log.
        let shown: String = self.input.chars().take(SHOWN_CHARS).collect();
        let more = if self.input.chars().nth(SHOWN_CHARS).is_some() {
            "…"
        } else {
            ""
        };
        write!(
            f,
            "invalid user name \"{}\"{more}: {}",
            shown.escape_debug(),
            self.reason
        )
    }
}

impl fmt::Debug for InvalidUserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `{:?}` of an error is what `fn main() -> Result<..>` prints: cut like `Display`.
        f.debug_struct("InvalidUserName")
            .field("input", &crate::error::shorten(&self.input, SHOWN_CHARS))
            .field("reason", &self.reason)
            .finish()
    }
}

impl std::error::Error for InvalidUserName {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> String {
        UserName::parse(input).unwrap().into_string()
    }

    fn reason(input: &str) -> InvalidUserNameReason {
        UserName::parse(input).unwrap_err().reason
    }

    #[test]
    fn segments_encode_what_a_path_segment_may_not_hold() {
        assert_eq!(
            encode_segment("a[b]c|d^e;f\\g\"h#i%j/k?l m`n{o}p<q>r"),
            "a%5Bb%5Dc%7Cd%5Ee%3Bf%5Cg%22h%23i%25j%2Fk%3Fl%20m%60n%7Bo%7Dp%3Cq%3Er"
        );
        assert_eq!(
            encode_segment("o'brien.x_y-z~!$&()*+,=:@"),
            "o'brien.x_y-z~!$&()*+,=:@"
        );
        assert_eq!(encode_segment("é\u{7f}\u{0}"), "%C3%A9%7F%00");
    }

    #[test]
    fn forms() {
        assert_eq!(ok("user1@contoso.com"), "user1");
        assert_eq!(ok(r"CONTOSO\user1"), "user1");
        assert_eq!(ok("user1"), "user1");
        assert_eq!(ok(" \tuser1@contoso.com\n"), "user1");
        assert_eq!(ok("o'brien.j"), "o'brien.j");
        assert_eq!(ok("first last"), "first last");
        assert_eq!(ok("jörg#1%"), "jörg#1%");
        assert_eq!(ok("..."), "...");
        assert_eq!(ok(&"a".repeat(256)), "a".repeat(256));
        assert_eq!(ok(&"é".repeat(256)), "é".repeat(256));
    }

    #[test]
    fn rejections() {
        assert_eq!(reason(""), InvalidUserNameReason::Empty);
        assert_eq!(reason("   "), InvalidUserNameReason::Empty);
        let both = UserName::parse(r"CONTOSO\user1@contoso.com").unwrap_err();
        assert_eq!(
            both.reason().to_string(),
            r"it contains '\': a name is either user@domain or DOMAIN\user, not both"
        );
        assert_eq!(
            UserName::parse("a/b").unwrap_err().reason().to_string(),
            "it contains '/'"
        );
        let blank = UserName::parse("\u{2028}").unwrap_err().to_string();
        assert!(blank.contains("white space only"), "{blank}");
        assert_eq!(reason("@contoso.com"), InvalidUserNameReason::MalformedUpn);
        assert_eq!(reason("user1@"), InvalidUserNameReason::MalformedUpn);
        assert_eq!(reason("a@b@c"), InvalidUserNameReason::MalformedUpn);
        assert_eq!(reason(r"\user1"), InvalidUserNameReason::MalformedDownLevel);
        assert_eq!(
            reason(r"CONTOSO\"),
            InvalidUserNameReason::MalformedDownLevel
        );
        assert_eq!(reason(r"A\B\c"), InvalidUserNameReason::MalformedDownLevel);
        assert_eq!(reason("."), InvalidUserNameReason::DotSegment);
        assert_eq!(reason(".."), InvalidUserNameReason::DotSegment);
        assert_eq!(reason("..@contoso.com"), InvalidUserNameReason::DotSegment);
        assert_eq!(reason(r"X\.."), InvalidUserNameReason::DotSegment);
        assert_eq!(
            reason("a/b"),
            InvalidUserNameReason::ForbiddenCharacter('/')
        );
        assert_eq!(
            reason(r"C\u1@contoso.com"),
            InvalidUserNameReason::ForbiddenCharacter('\\')
        );
        assert_eq!(reason("a\u{0}b"), InvalidUserNameReason::ControlCharacter);
        assert_eq!(reason("a\nb"), InvalidUserNameReason::ControlCharacter);
        // In the part the rule drops too.
        assert_eq!(
            reason("user1@con\ntoso.com"),
            InvalidUserNameReason::ControlCharacter
        );
        assert_eq!(
            reason("user1@\u{0}"),
            InvalidUserNameReason::ControlCharacter
        );
        assert_eq!(
            reason("CON\u{0}TOSO\\user1"),
            InvalidUserNameReason::ControlCharacter
        );
        assert_eq!(
            reason("CONTOSO\u{85}\\user1"),
            InvalidUserNameReason::ControlCharacter
        );
        assert_eq!(reason("a\u{85}b"), InvalidUserNameReason::ControlCharacter);
        assert_eq!(
            reason(&"a".repeat(257)),
            InvalidUserNameReason::TooLong(257)
        );
    }

    /// `{:?}` of an error is what `fn main() -> Result<..>` prints: a huge input
    /// is cut there as in `Display`, and kept whole by `input()`.
    #[test]
    fn a_huge_input_is_cut_when_shown() {
        let input = "x".repeat(10_000_000);
        let err = UserName::parse(&input).unwrap_err();
        assert_eq!(err.input().len(), 10_000_000);
        let debug = format!("{err:?}");
        assert!(debug.len() < 200, "{debug}");
        assert!(debug.contains("TooLong(10000000)"), "{debug}");
        assert!(format!("{:?}", crate::Error::from(err.clone())).len() < 250);
        assert!(err.to_string().len() < 200);
    }

    #[test]
    fn names_the_rule_keeps_but_defender_will_not_know_are_flagged() {
        for odd in [
            "user1 @contoso.com",
            "CONTOSO\\ user1",
            "us\u{200B}er1",
            "\u{FEFF}user1",
            "user\u{3164}1",
            "\u{115F}",
            "us\u{34F}er1",
            "user\u{2028}1",
        ] {
            let name = UserName::parse(odd).unwrap();
            assert_eq!(
                name.oddity(),
                Some(if odd.contains(' ') {
                    "begins or ends with white space"
                } else {
                    "holds an invisible formatting character"
                }),
                "{odd:?}"
            );
        }
        for lookalike in [
            "user1\u{FF20}contoso.com",
            "CONTOSO\u{FF3C}user1",
            "CONTOSO\u{2216}user1",
            "a\u{FF0F}b",
            "\u{FF0E}\u{FF0E}",
            "first\u{2024}last",
        ] {
            let name = UserName::parse(lookalike).unwrap();
            let said = name.oddity().unwrap_or_default();
            assert!(said.contains("looks like"), "{lookalike:?}: {said}");
        }
        for fine in ["user1", "first last", "jörg", "\u{645}\u{200C}\u{645}"] {
            assert_eq!(UserName::parse(fine).unwrap().oddity(), None, "{fine:?}");
        }
    }

    #[test]
    fn display_escapes_and_truncates() {
        let err = UserName::parse("a\nb/").unwrap_err();
        assert!(!err.to_string().contains('\n'));
        let err = UserName::parse(&"x".repeat(10_000)).unwrap_err();
        assert!(err.to_string().len() < 300);
        assert_eq!(err.input().len(), 10_000);
    }

    #[test]
    fn rejected_input_is_escaped_once() {
        let err = UserName::parse("A\\B\\C").unwrap_err().to_string();
        assert!(err.starts_with(r#"invalid user name "A\\B\\C": "#), "{err}");
        let err = UserName::parse("a\tb\n").unwrap_err().to_string();
        assert!(err.starts_with(r#"invalid user name "a\tb\n": "#), "{err}");
    }

    #[test]
    fn serde_applies_the_rule() {
        let name: UserName = serde_json::from_str(r#""CONTOSO\\user1""#).unwrap();
        assert_eq!(name.as_str(), "user1");
        assert_eq!(serde_json::to_string(&name).unwrap(), r#""user1""#);
        let err = serde_json::from_str::<UserName>(r#""..""#).unwrap_err();
        assert!(err.to_string().contains("invalid user name"), "{err}");
    }

    #[test]
    fn conversions() {
        let name: UserName = "user1@contoso.com".parse().unwrap();
        assert_eq!(name.to_string(), "user1");
        assert_eq!(name.as_ref(), "user1");
        assert_eq!(
            UserName::try_from(String::from(r"D\u")).unwrap().as_str(),
            "u"
        );
    }
}
