//! [`UnknownFields`]: the members of a JSON object that the spec does not describe.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, Serializer};
use serde_json::{Map, Value};

/// The name under which `serde_json` hands over a number it keeps as text (its
/// `arbitrary_precision` feature, which another crate in a build can turn on).
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// The members of a JSON object that the spec does not describe, kept so that
/// nothing the API sends is lost (the `extra` field of the generated types).
///
/// It reads as a [`serde_json::Map`]: it dereferences to one, so `get`,
/// `contains_key`, `len`, `iter`, indexing (`extra["deviceCategory"]`) and, through
/// `&mut`, `insert` and `remove` work as on a map, and it serialises as the members
/// it holds (flattened into the object it came from).
///
/// It is held compactly: as it is read, the members are written out as one JSON
/// object text, in one allocation, and only turned into a map the first time they
/// are looked at. A large answer whose unknown fields nobody reads costs a string
/// per record instead of a map of values per record. What is kept is exactly what a
/// `serde_json::Value` would keep (the values are validated as they are read, and a
/// repeated member keeps its last value), so the map seen is the same as before.
///
/// ```
/// use defender_endpoint::UnknownFields;
/// use serde_json::json;
///
/// let machine: defender_endpoint::types::Machine = serde_json::from_value(json!({
///     "id": "1e5bc9d7e413ddd7902c2932e418702b84d0cc07",
///     "deviceCategory": "Endpoint",
///     "firmwareVersions": [{"type": "BIOS", "version": "1.2"}]
/// }))?;
/// assert_eq!(machine.extra["deviceCategory"], "Endpoint");
/// assert_eq!(machine.extra.len(), 2);
///
/// let mut extra = UnknownFields::default();
/// assert!(extra.is_empty());
/// extra.insert("zone".into(), json!(3));
/// assert_eq!(serde_json::to_string(&extra)?, r#"{"zone":3}"#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct UnknownFields(Option<Box<Held>>);

#[derive(Clone)]
struct Held {
    /// A JSON object text written by [`ValueWriter`]; empty once `map` has been
    /// handed out mutably (the map is then the only copy).
    text: Box<str>,
    /// The members as a map, made from `text` when first needed. When set, it is
    /// what the value holds.
    map: OnceLock<Map<String, Value>>,
}

impl Held {
    /// The members as a map, made once and kept.
    fn map(&self) -> &Map<String, Value> {
        self.map.get_or_init(|| self.read())
    }

    /// The members as a map made for the caller alone (the text is kept as the
    /// only copy).
    fn read(&self) -> Map<String, Value> {
        // The text was written from values that were valid JSON when read, in the
        // form `serde_json` writes, so it reads back; an empty map is the only
        // thing left to give if that were ever not so.
        let parsed = serde_json::from_str(&self.text);
        debug_assert!(parsed.is_ok(), "unreadable unknown fields: {parsed:?}");
        parsed.unwrap_or_default()
    }
}

impl UnknownFields {
    /// Calls `f` with the members as a map, without keeping a map made for it:
    /// serialising, comparing or printing many records does not turn each one's
    /// text into a map that stays.
    fn with_map<R>(&self, f: impl FnOnce(&Map<String, Value>) -> R) -> R {
        match &self.0 {
            None => f(empty()),
            Some(held) => match held.map.get() {
                Some(map) => f(map),
                None => f(&held.read()),
            },
        }
    }
}

fn empty() -> &'static Map<String, Value> {
    static EMPTY: OnceLock<Map<String, Value>> = OnceLock::new();
    EMPTY.get_or_init(Map::new)
}

impl UnknownFields {
    /// No unknown fields.
    pub const fn new() -> Self {
        UnknownFields(None)
    }

    /// Whether there are no unknown fields; unlike `len`, this never builds the map.
    pub fn is_empty(&self) -> bool {
        match &self.0 {
            None => true,
            Some(held) => match held.map.get() {
                Some(map) => map.is_empty(),
                None => false,
            },
        }
    }

    /// The members as a map of their own.
    pub fn into_map(self) -> Map<String, Value> {
        match self.0 {
            None => Map::new(),
            Some(held) => {
                held.map();
                held.map.into_inner().unwrap_or_default()
            }
        }
    }
}

impl Deref for UnknownFields {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Map<String, Value> {
        match &self.0 {
            None => empty(),
            Some(held) => held.map(),
        }
    }
}

impl DerefMut for UnknownFields {
    fn deref_mut(&mut self) -> &mut Map<String, Value> {
        let held = self.0.get_or_insert_with(|| {
            Box::new(Held {
                text: Box::default(),
                map: OnceLock::from(Map::new()),
            })
        });
        held.map();
        // From here on the map is the only copy.
        held.text = Box::default();
        match held.map.get_mut() {
            Some(map) => map,
            None => unreachable!("the map was made just above"),
        }
    }
}

impl fmt::Debug for UnknownFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_map(|map| fmt::Debug::fmt(map, f))
    }
}

impl PartialEq for UnknownFields {
    fn eq(&self, other: &Self) -> bool {
        if let (Some(a), Some(b)) = (&self.0, &other.0) {
            // The same text reads as the same map.
            if a.map.get().is_none() && b.map.get().is_none() && a.text == b.text {
                return true;
            }
        }
        self.with_map(|a| other.with_map(|b| a == b))
    }
}

impl Eq for UnknownFields {}

impl PartialEq<Map<String, Value>> for UnknownFields {
    fn eq(&self, other: &Map<String, Value>) -> bool {
        self.with_map(|map| map == other)
    }
}

impl PartialEq<UnknownFields> for Map<String, Value> {
    fn eq(&self, other: &UnknownFields) -> bool {
        other == self
    }
}

impl From<Map<String, Value>> for UnknownFields {
    fn from(map: Map<String, Value>) -> Self {
        if map.is_empty() {
            return UnknownFields(None);
        }
        UnknownFields(Some(Box::new(Held {
            text: Box::default(),
            map: OnceLock::from(map),
        })))
    }
}

impl From<UnknownFields> for Map<String, Value> {
    fn from(fields: UnknownFields) -> Self {
        fields.into_map()
    }
}

impl FromIterator<(String, Value)> for UnknownFields {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        Map::from_iter(iter).into()
    }
}

impl Extend<(String, Value)> for UnknownFields {
    fn extend<I: IntoIterator<Item = (String, Value)>>(&mut self, iter: I) {
        let mut iter = iter.into_iter().peekable();
        if iter.peek().is_some() {
            (**self).extend(iter);
        }
    }
}

impl IntoIterator for UnknownFields {
    type Item = (String, Value);
    type IntoIter = serde_json::map::IntoIter;

    fn into_iter(self) -> Self::IntoIter {
        self.into_map().into_iter()
    }
}

impl<'a> IntoIterator for &'a UnknownFields {
    type Item = (&'a String, &'a Value);
    type IntoIter = serde_json::map::Iter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        (**self).iter()
    }
}

impl<'a> IntoIterator for &'a mut UnknownFields {
    type Item = (&'a String, &'a mut Value);
    type IntoIter = serde_json::map::IterMut<'a>;

    fn into_iter(self) -> Self::IntoIter {
        (**self).iter_mut()
    }
}

impl Serialize for UnknownFields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.with_map(|map| map.serialize(serializer))
    }
}

impl<'de> de::Deserialize<'de> for UnknownFields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = UnknownFields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UnknownFields, A::Error> {
                let mut members = Collector::new();
                while let Some(key) = map.next_key::<String>()? {
                    members.read(&key, &mut map)?;
                }
                Ok(members.finish())
            }
        }
        deserializer.deserialize_map(Members)
    }
}

impl schemars::JsonSchema for UnknownFields {
    fn is_referenceable() -> bool {
        <Map<String, Value>>::is_referenceable()
    }

    fn schema_name() -> String {
        <Map<String, Value>>::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        <Map<String, Value>>::schema_id()
    }

    fn json_schema(generator: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        <Map<String, Value>>::json_schema(generator)
    }
}

/// Gathers the unknown members of an object as it is read (used by the generated
/// `Deserialize` implementations).
pub(crate) struct Collector {
    out: Vec<u8>,
}

impl Collector {
    pub(crate) fn new() -> Self {
        Collector { out: Vec::new() }
    }

    /// Writes out the key of a member; [`value`](Self::value) reads its value.
    pub(crate) fn key(&mut self, key: &str) {
        if self.out.is_empty() {
            self.out.reserve(128);
            self.out.push(b'{');
        } else {
            self.out.push(b',');
        }
        write_str(&mut self.out, key);
        self.out.push(b':');
    }

    /// Reads the value of the member whose key was written last from `map`.
    pub(crate) fn value<'de, A: MapAccess<'de>>(&mut self, map: &mut A) -> Result<(), A::Error> {
        map.next_value_seed(ValueWriter(&mut self.out))
    }

    /// Reads the value of member `key` from `map` and writes the member out.
    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        self.key(key);
        self.value(map)
    }

    pub(crate) fn finish(mut self) -> UnknownFields {
        if self.out.is_empty() {
            return UnknownFields(None);
        }
        self.out.push(b'}');
        // Only `str`s and ASCII were written.
        let text = String::from_utf8(self.out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        UnknownFields(Some(Box::new(Held {
            text: text.into_boxed_str(),
            map: OnceLock::new(),
        })))
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing a `str` to a `Vec` cannot fail.
    let _ = serde_json::to_writer(out, s);
}

/// Whether `serde_json` is built with `arbitrary_precision`, which hands numbers to a
/// visitor as a one-member map.
fn numbers_as_text() -> bool {
    static AS_TEXT: OnceLock<bool> = OnceLock::new();
    *AS_TEXT.get_or_init(|| {
        let beyond_u64 = "18446744073709551616";
        beyond_u64
            .parse::<serde_json::Number>()
            .is_ok_and(|n| n.to_string() == beyond_u64)
    })
}

/// Writes the value it reads as JSON text, as `serde_json` would write the
/// `Value` it would read from it: what reading into a `Value` accepts and refuses,
/// this accepts and refuses.
struct ValueWriter<'a>(&'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for ValueWriter<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueWriter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0
            .extend_from_slice(if v { b"true" as &[u8] } else { b"false" });
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        serde_json::to_writer(self.0, &v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        serde_json::to_writer(self.0, &v).map_err(E::custom)
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<(), E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => self.visit_f64(v as f64),
            },
        }
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<(), E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => self.visit_f64(v as f64),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // A number that is not finite is `null`, as in a `Value`.
        serde_json::to_writer(self.0, &v).map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        write_str(self.0, v);
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let out = self.0;
        out.push(b'[');
        let mut first = true;
        loop {
            if !first {
                out.push(b',');
            }
            if seq.next_element_seed(ValueWriter(out))?.is_none() {
                if !first {
                    out.pop();
                }
                break;
            }
            first = false;
        }
        out.push(b']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.0;
        let start = out.len();
        out.push(b'{');
        let mut first = true;
        loop {
            if !first {
                out.push(b',');
            }
            let key_at = out.len();
            if map.next_key_seed(KeyWriter(out))?.is_none() {
                if !first {
                    out.pop();
                }
                break;
            }
            if first
                && numbers_as_text()
                && out[key_at..] == *format!("{NUMBER_TOKEN:?}").as_bytes()
            {
                // `serde_json` with `arbitrary_precision`: a number, as text.
                let number: String = map.next_value()?;
                if number.parse::<serde_json::Number>().is_ok() {
                    out.truncate(start);
                    out.extend_from_slice(number.as_bytes());
                    return Ok(());
                }
                out.push(b':');
                write_str(out, &number);
                first = false;
                continue;
            }
            out.push(b':');
            map.next_value_seed(ValueWriter(out))?;
            first = false;
        }
        out.push(b'}');
        Ok(())
    }
}

/// Writes the key it reads as a JSON string.
struct KeyWriter<'a>(&'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for KeyWriter<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_string(self)
    }
}

impl<'de> Visitor<'de> for KeyWriter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        write_str(self.0, v);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(fields: &UnknownFields) -> bool {
        fields
            .0
            .as_ref()
            .is_some_and(|held| held.map.get().is_some())
    }

    #[test]
    fn only_reading_through_the_map_keeps_a_map() {
        let fields: UnknownFields =
            serde_json::from_str(r#"{"a":[1,{"b":"c"}],"d":null}"#).unwrap();
        let same = fields.clone();
        assert!(!fields.is_empty() && !parsed(&fields));
        assert_eq!(
            serde_json::to_string(&fields).unwrap(),
            r#"{"a":[1,{"b":"c"}],"d":null}"#
        );
        assert_eq!(
            format!("{fields:?}"),
            r#"{"a": Array [Number(1), Object {"b": String("c")}], "d": Null}"#
        );
        assert_eq!(fields, same);
        assert!(fields != Map::new());
        assert!(
            !parsed(&fields),
            "serialising, printing and comparing keep no map"
        );
        assert_eq!(fields.len(), 2);
        assert!(parsed(&fields), "reading through the map keeps it");
        assert_eq!(fields, same);
    }
}
