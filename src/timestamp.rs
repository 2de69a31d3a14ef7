//! Reading the RFC 3339 timestamps of an answer (`firstSeen`, `lastSeen`).
//!
//! The service writes every timestamp in one shape, in UTC with up to seven
//! fractional digits: `2018-08-02T14:55:03.7791856Z`. `chrono`'s parser takes any
//! RFC 3339 text (other offsets, a space or a lowercase `t`, leap seconds) and
//! costs about 1.9 k instructions a timestamp, with two a machine about a
//! fifteenth of a large answer's whole parse. A timestamp of exactly that shape, naming a date and time that
//! exist, is read here directly; anything else goes to `chrono`, so what is
//! accepted, what it reads as and the error for what is refused are `chrono`'s.

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::fmt;

/// A timestamp field's value, read as `T`'s own `Deserialize` reads it (`T` is
/// `DateTime<Utc>` or `Option<DateTime<Utc>>`), with the fast path of [`parse`].
pub(crate) struct Rfc3339<T>(pub(crate) T);

impl<'de> Deserialize<'de> for Rfc3339<DateTime<Utc>> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(Text).map(Rfc3339)
    }
}

impl<'de> Deserialize<'de> for Rfc3339<Option<DateTime<Utc>>> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_option(Maybe).map(Rfc3339)
    }
}

/// `chrono`'s visitor for `DateTime`, but for the fast path: the same
/// expectation, and only a string.
struct Text;

impl Visitor<'_> for Text {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an RFC 3339 formatted date and time string")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        parse(value).map_err(E::custom)
    }
}

/// `serde`'s visitor for `Option`, around [`Text`].
struct Maybe;

impl<'de> Visitor<'de> for Maybe {
    type Value = Option<DateTime<Utc>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("option")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(Text).map(Some)
    }
}

/// `text` as `chrono` reads it into a `DateTime<Utc>` (as a `DateTime<FixedOffset>`
/// turned to UTC), with the service's own shape read directly.
pub(crate) fn parse(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    match service_shape(text.as_bytes()) {
        Some(time) => Ok(time),
        None => text
            .parse::<DateTime<FixedOffset>>()
            .map(|time| time.with_timezone(&Utc)),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.F]Z`, with one to nine fractional digits, if the date and
/// the time of day exist (no leap second: those go to `chrono`).
fn service_shape(b: &[u8]) -> Option<DateTime<Utc>> {
    let n = b.len();
    if n < 20
        || b[n - 1] != b'Z'
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let digit = |i: usize| {
        let d = b[i].wrapping_sub(b'0');
        (d < 10).then_some(u32::from(d))
    };
    let two = |i: usize| Some(digit(i)? * 10 + digit(i + 1)?);
    let year = two(0)? * 100 + two(2)?;
    let nanos = match &b[19..n - 1] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            let mut value = 0;
            for i in 20..n - 1 {
                value = value * 10 + digit(i)?;
            }
            value * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(year as i32, two(5)?, two(8)?)?;
    Some(
        date.and_hms_nano_opt(two(11)?, two(14)?, two(17)?, nanos)?
            .and_utc(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `chrono`'s own `Deserialize` makes of `text`.
    fn chrono(text: &str) -> Result<DateTime<Utc>, String> {
        text.parse::<DateTime<FixedOffset>>()
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| e.to_string())
    }

    fn ours(text: &str) -> Result<DateTime<Utc>, String> {
        parse(text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_service_shape_is_read_directly_and_as_chrono_reads_it() {
        for text in [
            "2018-08-02T14:55:03.7791856Z",
            "2018-08-02T14:55:03Z",
            "2018-08-02T14:55:03.1Z",
            "2018-08-02T14:55:03.123456789Z",
            "2018-08-02T14:55:03.000000000Z",
            "2024-02-29T23:59:59.9999999Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            "1970-01-01T00:00:00Z",
        ] {
            let direct = service_shape(text.as_bytes());
            assert!(direct.is_some(), "{text} is read directly");
            assert_eq!(direct.map(Ok), Some(chrono(text)), "{text}");
            assert_eq!(ours(text), chrono(text), "{text}");
        }
    }

    #[test]
    fn every_day_of_four_years_reads_as_chrono_reads_it() {
        use chrono::Datelike;
        let mut day = NaiveDate::from_ymd_opt(1999, 1, 1).unwrap();
        let mut seed = 1u64;
        while day.year() < 2003 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let (h, m, s) = ((seed >> 33) % 24, (seed >> 40) % 60, (seed >> 48) % 60);
            let digits = (seed >> 56) % 10;
            let fraction = match digits {
                0 => String::new(),
                _ => format!(
                    ".{:0width$}",
                    (seed >> 8) % 10u64.pow(digits as u32),
                    width = digits as usize
                ),
            };
            let text = format!("{day}T{h:02}:{m:02}:{s:02}{fraction}Z");
            assert!(service_shape(text.as_bytes()).is_some(), "{text}");
            assert_eq!(ours(&text), chrono(&text), "{text}");
            day = day.succ_opt().unwrap();
        }
    }

    #[test]
    fn every_other_text_gets_chronos_answer() {
        for text in [
            // Dates and times that do not exist.
            "2023-02-29T00:00:00Z",
            "2018-13-02T14:55:03Z",
            "2018-00-02T14:55:03Z",
            "2018-08-00T14:55:03Z",
            "2018-08-32T14:55:03Z",
            "2018-08-02T24:00:00Z",
            "2018-08-02T14:60:03Z",
            // A leap second, which chrono keeps.
            "2016-12-31T23:59:60Z",
            "2016-12-31T23:59:60.5Z",
            // More than nine fractional digits, or none after the dot.
            "2018-08-02T14:55:03.1234567891Z",
            "2018-08-02T14:55:03.Z",
            // Other shapes RFC 3339 allows, or chrono relaxes to.
            "2018-08-02t14:55:03Z",
            "2018-08-02 14:55:03Z",
            "2018-08-02T14:55:03z",
            "2018-08-02T14:55:03+02:00",
            "2018-08-02T14:55:03.25-05:30",
            "2018-08-02T14:55:03.7791856+00:00",
            // Not a timestamp.
            "",
            "Z",
            "2018-08-02T14:55:03",
            "2018-08-02T14:55:03ZZ",
            "2018-08-02T14:55:03.77x1856Z",
            "2018-08-02T14:55:0xZ",
            "+018-08-02T14:55:03Z",
            "2018/08/02T14:55:03Z",
            "2018-08-02T14-55:03Z",
            "2018-08-02T14:55-03Z",
            "2018-08-02T14:55:03.-1Z",
            "2018-08-02T14:55:03.+1Z",
            "٢٠١٨-08-02T14:55:03Z",
            "2018-08-02T14:55:03.7791856Zé",
            "20180-8-02T14:55:03Z",
        ] {
            assert_eq!(ours(text), chrono(text), "{text:?}");
        }
    }

    #[test]
    fn each_place_of_the_shape_is_checked() {
        // Every byte of a valid timestamp, replaced by every ASCII byte in turn:
        // the result is chrono's each time.
        let valid = "2018-08-02T14:55:03.7791856Z";
        for at in 0..valid.len() {
            for byte in 0x20u8..0x7f {
                let mut text = valid.as_bytes().to_vec();
                text[at] = byte;
                let text = String::from_utf8(text).unwrap();
                assert_eq!(ours(&text), chrono(&text), "{text:?}");
            }
        }
    }
}
