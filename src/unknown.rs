//! [`UnknownFields`]: the members of a JSON object that the spec does not describe.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, Serializer};
use serde_json::{Map, Value};

/// The members of a JSON object that the spec does not describe, kept so that
/// nothing the API sends is lost (the `extra` field of the generated types).
///
/// It reads as a [`serde_json::Map`]: it dereferences to one, so `get`,
/// `contains_key`, `len`, `iter`, indexing (`extra["deviceCategory"]`), `&extra`
/// where a `&Map` is expected and, through `&mut`, `insert`, `remove` and `entry`
/// work as on a map. It serialises as the members it holds, in the order a
/// `serde_json::Map` has them (by key, unless `serde_json`'s `preserve_order` is
/// on), after the fields the spec describes.
///
/// It is held compactly: as it is read, the members are written out as one JSON
/// object text, which is turned into a map only when the members are first read
/// through the map. A large answer whose unknown fields nobody reads costs a string
/// per record instead of a map of values per record. Serialising, comparing,
/// hashing and printing read the text without keeping a map. Once a map has been
/// made it is kept in place of the text, which is dropped.
///
/// What is kept is exactly what a `serde_json::Map` of [`Value`]s would keep: the
/// values are read as a `Value` reads them (the same errors for a lone surrogate, a
/// number out of range or too deep a nesting), a repeated member keeps its last
/// value, and floats read back bit for bit. For that last point this crate builds
/// `serde_json` with its `float_roundtrip` feature, which every crate of the build
/// then shares: a float is parsed to the nearest `f64` of its digits, a little
/// more slowly than without it.
///
/// Code written for the `serde_json::Map` this field used to be needs, where deref
/// coercion does not reach: `.into()` or [`into_map`](Self::into_map) for an owned
/// map (`let map: Map<String, Value> = machine.extra.into();`), `&*machine.extra`
/// for a `&Map` inside an `Option`, a collection or a generic call (such as
/// `T::deserialize(&*machine.extra)`), `Value::from(machine.extra)` for a JSON
/// object, and `map.into()` to store a map into `extra`.
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
/// fn count(members: &serde_json::Map<String, serde_json::Value>) -> usize {
///     members.len()
/// }
/// assert_eq!(count(&machine.extra), 2);
/// let some: Option<&serde_json::Map<_, _>> = Some(&*machine.extra);
/// assert!(some.is_some_and(|m| m.contains_key("firmwareVersions")));
/// let object = serde_json::Value::from(machine.extra.clone());
/// assert_eq!(object["firmwareVersions"][0]["type"], "BIOS");
/// let owned: serde_json::Map<String, serde_json::Value> = machine.extra.into();
/// assert_eq!(owned.len(), 2);
///
/// let mut extra = UnknownFields::default();
/// assert!(extra.is_empty());
/// extra.insert("zone".into(), json!(3));
/// assert_eq!(serde_json::to_string(&extra)?, r#"{"zone":3}"#);
/// let stored: UnknownFields = owned.into();
/// assert_eq!(stored.len(), 2);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct UnknownFields(Option<Box<Held>>);

struct Held {
    /// A JSON object text written by [`ValueWriter`], while there is no map;
    /// emptied once `map` is made (the map is then the only copy).
    text: Mutex<Box<str>>,
    /// The members as a map, made from `text` when first needed. When set, it is
    /// what the value holds.
    map: OnceLock<Map<String, Value>>,
}

impl Held {
    fn of_text(text: Box<str>) -> Self {
        Held {
            text: Mutex::new(text),
            map: OnceLock::new(),
        }
    }

    fn of_map(map: Map<String, Value>) -> Self {
        Held {
            text: Mutex::new(Box::default()),
            map: OnceLock::from(map),
        }
    }

    /// The text, while there is no map.
    fn text(&self) -> MutexGuard<'_, Box<str>> {
        // Nothing panics while the text is held; a poisoned lock still holds it.
        self.text.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The members as a map, made once and kept; the text is dropped then.
    fn map(&self) -> &Map<String, Value> {
        if let Some(map) = self.map.get() {
            return map;
        }
        let map = self.map.get_or_init(|| read(&self.text()));
        *self.text() = Box::default();
        map
    }

    /// What there is now: the map, or else the text (held until dropped).
    fn now(&self) -> Now<'_> {
        if let Some(map) = self.map.get() {
            return Now::Map(map);
        }
        let text = self.text();
        // The map may have been made (and the text dropped) in the meantime.
        match self.map.get() {
            Some(map) => Now::Map(map),
            None => Now::Text(text),
        }
    }

    /// Calls `f` with the members as a map, without keeping a map made for it.
    fn with_map<R>(&self, f: impl FnOnce(&Map<String, Value>) -> R) -> R {
        match self.now() {
            Now::Map(map) => f(map),
            Now::Text(text) => {
                let map = read(&text);
                drop(text);
                f(&map)
            }
        }
    }
}

enum Now<'a> {
    Map(&'a Map<String, Value>),
    Text(MutexGuard<'a, Box<str>>),
}

impl Clone for Held {
    /// A copy of the map once there is one, of the text before.
    fn clone(&self) -> Self {
        match self.now() {
            Now::Map(map) => Held::of_map(map.clone()),
            Now::Text(text) => Held::of_text(text.clone()),
        }
    }
}

/// The members written in `text` as a map.
///
/// The text was written from values that were valid JSON when read, in the form
/// `serde_json` writes, so it reads back; an empty map is the only thing left to
/// give if that were ever not so. It is read without a depth limit: a value read
/// from another source (`from_value`, another format) may be nested deeper than
/// `serde_json` reads from text, and the text is no deeper than what was read.
fn read(text: &str) -> Map<String, Value> {
    let mut json = serde_json::Deserializer::from_str(text);
    json.disable_recursion_limit();
    let parsed = <Map<String, Value> as de::Deserialize>::deserialize(&mut json)
        .and_then(|map| json.end().map(|()| map));
    debug_assert!(parsed.is_ok(), "unreadable unknown fields: {parsed:?}");
    parsed.unwrap_or_default()
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
            Some(held) => held.map.get().is_some_and(Map::is_empty),
        }
    }

    /// The members as a map of their own.
    pub fn into_map(self) -> Map<String, Value> {
        match self.0 {
            None => Map::new(),
            Some(held) => {
                let Held { text, map } = *held;
                map.into_inner().unwrap_or_else(|| {
                    read(&text.into_inner().unwrap_or_else(PoisonError::into_inner))
                })
            }
        }
    }

    /// Calls `f` with the members as a map, without keeping a map made for it:
    /// serialising, comparing or printing many records does not turn each one's
    /// text into a map that stays.
    fn with_map<R>(&self, f: impl FnOnce(&Map<String, Value>) -> R) -> R {
        match &self.0 {
            None => f(empty()),
            Some(held) => held.with_map(f),
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
        let held = self
            .0
            .get_or_insert_with(|| Box::new(Held::of_map(Map::new())));
        // Makes the map and drops the text: from here on the map is the only copy.
        held.map();
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
        if std::ptr::eq(self, other) {
            return true;
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
        UnknownFields(Some(Box::new(Held::of_map(map))))
    }
}

impl From<UnknownFields> for Map<String, Value> {
    fn from(fields: UnknownFields) -> Self {
        fields.into_map()
    }
}

impl From<UnknownFields> for Value {
    /// The members as a JSON object.
    fn from(fields: UnknownFields) -> Self {
        Value::Object(fields.into_map())
    }
}

impl std::hash::Hash for UnknownFields {
    /// Hashes the members as their map does, so equal values hash alike.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.with_map(|map| map.hash(state));
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
                f.write_str("a map")
            }
            fn visit_unit<E: de::Error>(self) -> Result<UnknownFields, E> {
                Ok(UnknownFields::new())
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
///
/// The members are written into working room borrowed from the thread (see
/// [`Scratch`]) and copied out once, into a string of their exact size, when the
/// object ends. For the usual record (a few unknown members, no key twice) that is
/// the one allocation it makes; a key that comes again, or an object with many
/// keys, costs a few more (see [`Members`]).
pub(crate) struct Collector {
    /// The thread's working room, from the first unknown member on.
    scratch: Option<Scratch>,
    markers: Markers,
    members: Members,
}

impl Collector {
    pub(crate) fn new() -> Self {
        Collector {
            scratch: None,
            markers: Markers::of_this_build(),
            // The first member comes after the `{`.
            members: Members::new(&[], 1),
        }
    }

    /// Writes out the key of a member; [`value`](Self::value) reads its value.
    pub(crate) fn key(&mut self, key: &str) {
        let Scratch { out, list } = self.scratch.get_or_insert_with(Scratch::take);
        if out.is_empty() {
            out.push('{');
        } else {
            out.push(',');
        }
        let start = out.len();
        write_str(out, key);
        self.members.keyed(list, out, start);
        out.push(':');
    }

    /// Reads the value of the member whose key was written last from `map`.
    pub(crate) fn value<'de, A: MapAccess<'de>>(&mut self, map: &mut A) -> Result<(), A::Error> {
        let Scratch { out, list } = self.scratch.get_or_insert_with(Scratch::take);
        map.next_value_seed(ValueWriter {
            out: &mut *out,
            list: &mut *list,
            markers: self.markers,
        })?;
        self.members.valued(list, out);
        Ok(())
    }

    /// Reads the value of member `key` from `map` and writes the member out.
    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        self.key(key);
        self.value(map)
    }

    pub(crate) fn finish(mut self) -> UnknownFields {
        match &mut self.scratch {
            Some(Scratch { out, list }) if !out.is_empty() => {
                std::mem::take(&mut self.members).end(list, out);
                out.push('}');
                let text = if Scratch::small(out.capacity()) {
                    Box::<str>::from(out.as_str())
                } else {
                    // Room too large to keep is trimmed and used, not copied.
                    std::mem::take(out).into_boxed_str()
                };
                UnknownFields(Some(Box::new(Held::of_text(text))))
            }
            _ => UnknownFields(None),
        }
    }
}

impl Drop for Collector {
    /// Hands the working room back to the thread, for the next object.
    fn drop(&mut self) {
        if let Some(scratch) = self.scratch.take() {
            scratch.give_back();
        }
    }
}

/// Working room for writing out unknown members: the text, and where the members
/// of the objects being written are in it. Each thread keeps a few, so that reading a
/// large answer does not allocate, grow and trim a buffer for every record.
#[derive(Default)]
struct Scratch {
    out: String,
    /// The members of the objects being written, outermost first (see [`Members`]).
    list: Vec<Member>,
}

impl Scratch {
    /// How many a thread keeps: one for each object being read at once (a record's
    /// unknown members, and those of a record inside it).
    const KEPT: usize = 4;
    /// The most room, in bytes, kept for the text and for the member list; larger
    /// room is handed back.
    const KEPT_BYTES: usize = 64 * 1024;

    /// Room kept by this thread, or new room.
    fn take() -> Scratch {
        KEPT_ROOM
            .try_with(|kept| kept.try_borrow_mut().ok()?.pop())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Whether room of `bytes` bytes is small enough to keep.
    fn small(bytes: usize) -> bool {
        bytes <= Self::KEPT_BYTES
    }

    /// Keeps this room for the thread's next object, unless it is large or the
    /// thread keeps enough.
    fn give_back(mut self) {
        let key_bytes = self
            .list
            .capacity()
            .saturating_mul(std::mem::size_of::<Member>());
        if !Self::small(self.out.capacity()) || !Self::small(key_bytes) {
            return;
        }
        self.out.clear();
        self.list.clear();
        let _ = KEPT_ROOM.try_with(|kept| {
            if let Ok(mut kept) = kept.try_borrow_mut() {
                if kept.len() < Self::KEPT {
                    kept.push(self);
                }
            }
        });
    }
}

thread_local! {
    /// The working room this thread keeps (see [`Scratch`]).
    static KEPT_ROOM: std::cell::RefCell<Vec<Scratch>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Where one member of an object being written is in the text.
#[derive(Clone, Copy, Debug)]
struct Member {
    /// Its key where it was first written (quoted), to compare later keys with.
    key: (usize, usize),
    /// The member (key, `:` and value) that holds its last value.
    at: (usize, usize),
}

/// The members of one JSON object as it is written, so that it holds each key
/// once, as a map does: with its last value, in its first place.
///
/// A key that comes again is written where it comes, like any other member; its
/// earlier member is then superseded, and when the object ends its text is
/// rewritten once, each key with its last member. A repeat costs no more than
/// any member, however long the object and however often a key comes again.
/// A key is looked up among the object's keys one by one while the object has
/// few, and through a hash index once it has many.
///
/// The members are held in a list shared by the objects being written, which
/// are nested: this object's are those from `base` on, and an object inside it
/// takes its own off again when it ends.
#[derive(Default)]
struct Members {
    /// Where this object's members start in the shared list.
    base: usize,
    /// Where the object's first member starts in the text (just after its `{`).
    start: usize,
    /// The member being written: its index in the shared list.
    current: usize,
    /// Whether a key came again, so that the text holds superseded members.
    repeated: bool,
    /// How this object's keys are found once it has more than
    /// [`Members::SCANNED`].
    index: Option<Index>,
}

/// The keys of one object by their hash: for each hash, the last of its members
/// in the shared list; for each member, the one before it with the same hash.
/// Built without a copy of any key, in a few allocations whatever their number.
struct Index {
    hasher: KeyHasher,
    last: std::collections::HashMap<u64, usize>,
    /// From the object's first member on (`base`): the previous member with the
    /// same hash, if any.
    previous: Vec<Option<usize>>,
}

/// How keys are hashed: with a random key per index, so that an answer cannot
/// choose keys that all land together.
#[cfg(not(test))]
type KeyHasher = std::collections::hash_map::RandomState;

/// Under the unit tests every key hashes alike, so that every lookup walks the
/// chain of members with the same hash (the integration tests use the real one).
#[cfg(test)]
type KeyHasher = std::hash::BuildHasherDefault<tests::SameHash>;

impl Index {
    fn hash(&self, key: &[u8]) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, key)
    }

    /// The member of `list` whose key is `key`.
    fn find(&self, list: &[Member], base: usize, text: &[u8], key: &[u8]) -> Option<usize> {
        let mut at = self.last.get(&self.hash(key)).copied();
        while let Some(i) = at {
            let m = list[i];
            if text[m.key.0..m.key.1] == *key {
                return Some(i);
            }
            at = self.previous[i - base];
        }
        None
    }

    /// Adds member `i`, whose key is `key`.
    fn add(&mut self, i: usize, key: &[u8]) {
        let previous = self.last.insert(self.hash(key), i);
        self.previous.push(previous);
    }
}

impl Members {
    /// The most keys an object's new key is compared with one by one.
    const SCANNED: usize = 64;

    /// An object whose first member starts at `start` in the text, and whose
    /// members come after those in `list`.
    fn new(list: &[Member], start: usize) -> Self {
        Members {
            base: list.len(),
            start,
            ..Members::default()
        }
    }

    /// After a member's key has been written at `start..` (and nothing after it).
    fn keyed(&mut self, list: &mut Vec<Member>, out: &str, start: usize) {
        let text = out.as_bytes();
        let key = &text[start..];
        let earlier = match &self.index {
            Some(index) => index.find(list, self.base, text, key),
            None => list[self.base..]
                .iter()
                .position(|m| text[m.key.0..m.key.1] == *key)
                .map(|i| self.base + i),
        };
        let at = (start, start);
        match earlier {
            Some(earlier) => {
                list[earlier].at = at;
                self.current = earlier;
                self.repeated = true;
            }
            None => {
                self.current = list.len();
                list.push(Member {
                    key: (start, out.len()),
                    at,
                });
                if let Some(index) = &mut self.index {
                    index.add(self.current, key);
                } else if list.len() - self.base > Self::SCANNED {
                    let mut index = Index {
                        hasher: Default::default(),
                        last: std::collections::HashMap::with_capacity(2 * Self::SCANNED),
                        previous: Vec::with_capacity(2 * Self::SCANNED),
                    };
                    for (i, m) in list.iter().enumerate().skip(self.base) {
                        index.add(i, &text[m.key.0..m.key.1]);
                    }
                    self.index = Some(index);
                }
            }
        }
    }

    /// After that member's value has been written (and nothing after it).
    fn valued(&mut self, list: &mut [Member], out: &str) {
        list[self.current].at.1 = out.len();
    }

    /// When the object's last member has been written (and nothing after it):
    /// superseded members are dropped from the text, and the object's members
    /// are taken off the shared list.
    fn end(self, list: &mut Vec<Member>, out: &mut String) {
        if self.repeated {
            let members = &list[self.base..];
            let mut text = String::with_capacity(out.len() - self.start);
            for (i, m) in members.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(&out[m.at.0..m.at.1]);
            }
            out.truncate(self.start);
            out.push_str(&text);
        }
        list.truncate(self.base);
    }
}

/// The bytes a JSON string may not hold as they are: `"`, `\\` and the control
/// characters.
static ESCAPED: [bool; 256] = {
    let mut escaped = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        escaped[byte] = true;
        byte += 1;
    }
    escaped[b'"' as usize] = true;
    escaped[b'\\' as usize] = true;
    escaped
};

/// Whether any byte of `s` is one that [`ESCAPED`] names, looked at eight bytes at
/// a time.
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    /// Whether a byte of `word` is below 0x20, `"` or `\\`: the high bit of a
    /// byte of `(b - n) & !b` is set for some byte exactly when a byte is below
    /// `n` (for `n` up to 0x80), and a byte equals `c` when it is zero after `^ c`.
    fn any(word: [u8; 8]) -> bool {
        let w = u64::from_le_bytes(word);
        let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w;
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        (below(w, 0x20) | below(quote, 1) | below(backslash, 1)) & HIGH != 0
    }
    let mut words = s.chunks_exact(8);
    for word in &mut words {
        if any(word.try_into().unwrap_or_default()) {
            return true;
        }
    }
    match words.remainder() {
        [] => false,
        // The last eight bytes again, when there are eight.
        _ if s.len() >= 8 => any(s[s.len() - 8..].try_into().unwrap_or_default()),
        // Fewer than eight bytes in all: one by one.
        rest => rest.iter().any(|&b| ESCAPED[usize::from(b)]),
    }
}

/// Writes `s` as a JSON string: quoted, with `"`, `\\` and the control characters
/// escaped, everything else as it is.
fn write_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push('"');
    // Most strings need no escape: they are copied whole.
    if !needs_escape(s.as_bytes()) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut plain = 0;
    for (i, &byte) in s.as_bytes().iter().enumerate() {
        if !ESCAPED[usize::from(byte)] {
            continue;
        }
        // `byte` is ASCII, so `i` is on a character boundary.
        out.push_str(&s[plain..i]);
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0xf)]));
            }
        }
        plain = i + 1;
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

/// Writes `v` as a JSON number that reads back as the same `f64`: the shortest
/// digits that do, always with a `.` or an exponent so that it stays a float, as
/// `serde_json` itself writes it; a number that is not finite is `null`, as in a
/// `Value`.
fn write_f64(out: &mut String, v: f64) {
    if v.is_finite() {
        out.push_str(zmij::Buffer::new().format_finite(v));
    } else {
        out.push_str("null");
    }
}

/// Writes an integer as JSON.
fn write_int(out: &mut String, v: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// Writes `v` with its `Display`, which for `serde_json::Number` is its JSON text.
fn write_display(out: &mut String, v: impl fmt::Display) {
    use fmt::Write;
    let _ = write!(out, "{v}");
}

/// The one-member maps through which `serde_json` hands over a value of its own
/// when another crate in the build turns on one of its features, and which a
/// `Value` reads as that value: `arbitrary_precision` hands over every number as
/// `{"$serde_json::private::Number": "<digits>"}`, and `raw_value` lets
/// `{"$serde_json::private::RawValue": "<JSON text>"}` stand for that JSON.
#[derive(Clone, Copy, Debug, Default)]
struct Markers {
    number: bool,
    raw: bool,
}

/// The marker keys as the writer writes them (JSON strings).
const NUMBER_KEY: &[u8] = b"\"$serde_json::private::Number\"";
const RAW_KEY: &[u8] = b"\"$serde_json::private::RawValue\"";

impl Markers {
    /// What the `serde_json` of this build does, found once by asking it.
    fn of_this_build() -> Self {
        static MARKERS: OnceLock<Markers> = OnceLock::new();
        *MARKERS.get_or_init(|| {
            let beyond_u64 = "18446744073709551616";
            Markers {
                number: beyond_u64
                    .parse::<serde_json::Number>()
                    .is_ok_and(|n| n.to_string() == beyond_u64),
                raw: serde_json::from_str::<Value>(r#"{"$serde_json::private::RawValue":"[]"}"#)
                    .is_ok_and(|v| v.is_array()),
            }
        })
    }
}

/// Writes the value it reads as JSON text, as `serde_json` would write the
/// `Value` it would read from it: what reading into a `Value` accepts and refuses,
/// this accepts and refuses, and the text reads back as that `Value` (floats
/// exactly, as this crate builds `serde_json` with `float_roundtrip`).
struct ValueWriter<'a> {
    out: &'a mut String,
    /// Where the members of the objects being written are, keys and values (see
    /// [`Members`]).
    list: &'a mut Vec<Member>,
    markers: Markers,
}

impl ValueWriter<'_> {
    fn number<E: de::Error>(self, number: Option<serde_json::Number>) -> Result<(), E> {
        match number {
            Some(n) => {
                write_display(self.out, n);
                Ok(())
            }
            None => Err(E::custom("JSON number out of range")),
        }
    }
}

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
        self.out.push_str(if v { "true" } else { "false" });
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        write_int(self.out, v);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        write_int(self.out, v);
        Ok(())
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<(), E> {
        self.number(serde_json::Number::from_i128(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<(), E> {
        self.number(serde_json::Number::from_u128(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        write_f64(self.out, v);
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        write_str(self.out, v);
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.out.push_str("null");
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (out, list, markers) = (self.out, self.list, self.markers);
        out.push('[');
        let mut first = true;
        loop {
            if !first {
                out.push(',');
            }
            if seq
                .next_element_seed(ValueWriter {
                    out: &mut *out,
                    list: &mut *list,
                    markers,
                })?
                .is_none()
            {
                if !first {
                    out.pop();
                }
                break;
            }
            first = false;
        }
        out.push(']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (out, list, markers) = (self.out, self.list, self.markers);
        let start = out.len();
        out.push('{');
        let first = KeyWriter {
            out: &mut *out,
            first: true,
        };
        if map.next_key_seed(first)?.is_none() {
            out.push('}');
            return Ok(());
        }
        // The first key may mark a value of `serde_json`'s own (see `Markers`).
        let key = &out.as_bytes()[start + 1..];
        if markers.number && key == NUMBER_KEY {
            let number = map.next_value_seed(NumberText)?;
            out.truncate(start);
            write_display(out, number);
            return Ok(());
        }
        if markers.raw && key == RAW_KEY {
            let text = map.next_value_seed(RawText)?;
            out.truncate(start);
            let mut json = serde_json::Deserializer::from_str(&text);
            return ValueWriter { out, list, markers }
                .deserialize(&mut json)
                .and_then(|()| json.end())
                .map_err(de::Error::custom);
        }
        let mut members = Members::new(list, start + 1);
        members.keyed(list, out, start + 1);
        loop {
            out.push(':');
            map.next_value_seed(ValueWriter {
                out: &mut *out,
                list: &mut *list,
                markers,
            })?;
            members.valued(list, out);
            out.push(',');
            let key_start = out.len();
            let next = KeyWriter {
                out: &mut *out,
                first: false,
            };
            if map.next_key_seed(next)?.is_none() {
                out.pop();
                break;
            }
            members.keyed(list, out, key_start);
        }
        members.end(list, out);
        out.push('}');
        Ok(())
    }
}

/// The digits of a number handed over by `arbitrary_precision`, read as a `Value`
/// reads them.
struct NumberText;

impl<'de> DeserializeSeed<'de> for NumberText {
    type Value = serde_json::Number;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for NumberText {
    type Value = serde_json::Number;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("string containing a number")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        v.parse().map_err(E::custom)
    }
}

/// The JSON text handed over by `raw_value`, read as a `Value` reads it.
struct RawText;

impl<'de> DeserializeSeed<'de> for RawText {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for RawText {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("raw value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.to_owned())
    }
}

/// Writes the key it reads as a JSON string.
struct KeyWriter<'a> {
    out: &'a mut String,
    /// The first key of an object, which a `Value` reads as a string only; it
    /// reads the others as a `String`, which also takes UTF-8 bytes.
    first: bool,
}

impl<'de> DeserializeSeed<'de> for KeyWriter<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_string(self)
    }
}

impl<'de> Visitor<'de> for KeyWriter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.first {
            "a string key"
        } else {
            "a string"
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        write_str(self.out, v);
        Ok(())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        if self.first {
            return Err(E::invalid_type(de::Unexpected::Bytes(v), &self));
        }
        match std::str::from_utf8(v) {
            Ok(key) => self.visit_str(key),
            Err(_) => Err(E::invalid_value(de::Unexpected::Bytes(v), &self)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hash that is the same for every key (see `KeyHasher`).
    #[derive(Default)]
    pub(super) struct SameHash;

    impl std::hash::Hasher for SameHash {
        fn finish(&self) -> u64 {
            0
        }

        fn write(&mut self, _: &[u8]) {}
    }

    fn parsed(fields: &UnknownFields) -> bool {
        fields
            .0
            .as_ref()
            .is_some_and(|held| held.map.get().is_some())
    }

    /// The room a thread keeps after reading members, as (text, member list) bytes.
    fn kept_room() -> Vec<(usize, usize)> {
        KEPT_ROOM.with(|kept| {
            kept.borrow()
                .iter()
                .map(|s| {
                    (
                        s.out.capacity(),
                        s.list.capacity() * std::mem::size_of::<Member>(),
                    )
                })
                .collect()
        })
    }

    /// No room over the limit is kept, for the text or for the member list, and text
    /// too large to keep is handed over as it is rather than copied.
    #[test]
    fn a_thread_keeps_no_large_room() {
        std::thread::spawn(|| {
            // Many short keys: a small text, a long member list.
            let keys: Vec<String> = (0..6_000).map(|i| format!(r#""{i:x}":0"#)).collect();
            let json = format!("{{{}}}", keys.join(","));
            let fields: UnknownFields = serde_json::from_str(&json).unwrap();
            assert_eq!(fields.len(), 6_000);
            for (text, list) in kept_room() {
                assert!(text <= Scratch::KEPT_BYTES && list <= Scratch::KEPT_BYTES);
            }

            // One large member: its text becomes the value, and the room kept
            // afterwards is empty.
            let big = "x".repeat(200_000);
            let fields: UnknownFields =
                serde_json::from_str(&format!(r#"{{"k":"{big}"}}"#)).unwrap();
            assert_eq!(fields["k"], big);
            let room = kept_room();
            assert!(!room.is_empty() && room.iter().all(|&(text, _)| text == 0));

            // Small members reuse kept room.
            let _: UnknownFields = serde_json::from_str(r#"{"a":1}"#).unwrap();
            assert!(kept_room().iter().any(|&(text, _)| text > 0));
        })
        .join()
        .unwrap();
    }

    /// Every byte value, at every place of strings of every length up to three
    /// words, next to bytes that need no escape and bytes just beside those that do.
    #[test]
    fn a_byte_that_needs_an_escape_is_found_wherever_it_is() {
        for fill in [b'a', 0x7f, 0xff, 0x21, 0x5b, 0x5d, 0x80] {
            for len in 0..=24 {
                let plain = vec![fill; len];
                assert!(!needs_escape(&plain), "{fill:#x} x {len}");
                for at in 0..len {
                    for byte in 0..=255u8 {
                        let mut s = plain.clone();
                        s[at] = byte;
                        assert_eq!(
                            needs_escape(&s),
                            ESCAPED[usize::from(byte)],
                            "{byte:#x} at {at} of {len}"
                        );
                    }
                }
            }
        }
        // And as written: escaped exactly where `serde_json` escapes.
        let all: String = (0..=0x7fu8).map(char::from).chain("é😀".chars()).collect();
        let mut out = String::new();
        write_str(&mut out, &all);
        assert_eq!(out, serde_json::to_string(&all).unwrap());
    }

    #[test]
    fn threads_reading_one_value_at_once_all_see_its_members() {
        let json = r#"{"a":[1,{"b":"c"}],"d":null,"e":"f"}"#;
        for _ in 0..20 {
            let fields: UnknownFields = serde_json::from_str(json).unwrap();
            let seen: Vec<String> = std::thread::scope(|scope| {
                let readers: Vec<_> = (0..8)
                    .map(|i| {
                        let fields = &fields;
                        scope.spawn(move || match i % 4 {
                            0 => serde_json::to_string(&**fields).unwrap(),
                            1 => serde_json::to_string(fields).unwrap(),
                            2 => serde_json::to_string(&fields.clone()).unwrap(),
                            _ => format!("{}", fields.len() == 3 && fields["e"] == "f"),
                        })
                    })
                    .collect();
                readers.into_iter().map(|r| r.join().unwrap()).collect()
            });
            for (i, seen) in seen.iter().enumerate() {
                let expected = if i % 4 == 3 { "true" } else { json };
                assert_eq!(seen, expected);
            }
            assert!(parsed(&fields) && fields.0.as_ref().unwrap().text().is_empty());
        }
    }

    /// What the writer writes for `json` when `serde_json` hands over `markers`.
    fn written(markers: Markers, json: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut text = serde_json::Deserializer::from_str(json);
        ValueWriter {
            out: &mut out,
            list: &mut Vec::new(),
            markers,
        }
        .deserialize(&mut text)
        .map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[test]
    fn values_marked_by_serde_json_are_read_as_a_value_reads_them() {
        let number = Markers {
            number: true,
            raw: false,
        };
        let raw = Markers {
            number: false,
            raw: true,
        };
        let n = r#"{"$serde_json::private::Number":"12.5"}"#;
        assert_eq!(written(number, n).unwrap(), "12.5");
        assert_eq!(written(Markers::default(), n).unwrap(), n);
        assert_eq!(written(raw, n).unwrap(), n);
        assert_eq!(
            written(number, r#"[{"$serde_json::private::Number":"-3"},{"a":1}]"#).unwrap(),
            r#"[-3,{"a":1}]"#
        );
        let bad = written(number, r#"{"$serde_json::private::Number":"abc"}"#).unwrap_err();
        assert!(bad.starts_with("invalid number"), "{bad}");
        let bad = written(number, r#"{"$serde_json::private::Number":5}"#).unwrap_err();
        assert!(
            bad.starts_with("invalid type: integer `5`, expected string containing a number"),
            "{bad}"
        );
        // Only a first key marks a value.
        let later = r#"{"a":1,"$serde_json::private::Number":"2"}"#;
        assert_eq!(written(number, later).unwrap(), later);

        let r = r#"{"$serde_json::private::RawValue":"[1, {\"b\": null}]"}"#;
        assert_eq!(written(raw, r).unwrap(), r#"[1,{"b":null}]"#);
        assert_eq!(
            written(Markers::default(), r).unwrap(),
            r#"{"$serde_json::private::RawValue":"[1, {\"b\": null}]"}"#
        );
        let bad = written(raw, r#"{"$serde_json::private::RawValue":"not json"}"#).unwrap_err();
        assert!(
            bad.starts_with("expected ident at line 1 column 2"),
            "{bad}"
        );
        let bad = written(raw, r#"{"$serde_json::private::RawValue":"[1] 2"}"#).unwrap_err();
        assert!(bad.starts_with("trailing characters"), "{bad}");
    }

    #[test]
    fn strings_and_floats_are_written_as_json_that_reads_back_the_same() {
        let mut every_ascii: String = (0u8..0x80).map(char::from).collect();
        every_ascii.push_str("é 日本 😀 \u{2028}\u{7f}");
        for s in [every_ascii.as_str(), "", "\"", "\\", "plain"] {
            let mut out = String::new();
            write_str(&mut out, s);
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
            assert_eq!(
                serde_json::to_string(s).unwrap(),
                out,
                "as serde_json writes it"
            );
        }
        for v in [
            0.0,
            -0.0,
            42.0,
            0.1,
            1e300,
            5e-324,
            -1.5e-7,
            f64::MAX,
            1e21,
            123456.0,
        ] {
            let mut out = String::new();
            write_f64(&mut out, v);
            let back: Value = serde_json::from_str(&out).unwrap();
            assert!(back.is_f64(), "{v} written as {out}");
            assert_eq!(back.as_f64().unwrap().to_bits(), v.to_bits(), "{out}");
        }
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut out = String::new();
            write_f64(&mut out, v);
            assert_eq!(out, "null");
        }
    }

    /// The text `json` is kept as.
    fn text_of(json: &str) -> String {
        let fields: UnknownFields = serde_json::from_str(json).unwrap();
        fields
            .0
            .map(|held| held.text().to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_repeated_key_replaces_the_member_written_before_in_its_place() {
        assert_eq!(text_of(r#"{"a":1,"b":2,"a":3}"#), r#"{"a":3,"b":2}"#);
        assert_eq!(
            text_of(r#"{"a":"a long first value","b":1,"a":2,"c":3,"b":"xx","c":[4],"a":{}}"#),
            r#"{"a":{},"b":"xx","c":[4]}"#
        );
        assert_eq!(
            text_of(r#"{"x":{"d":1,"e":2,"d":{"big":[1,2]}},"y":[{"k":1,"k":2}]}"#),
            r#"{"x":{"d":{"big":[1,2]},"e":2},"y":[{"k":2}]}"#
        );
        assert_eq!(text_of(r#"{"a":1,"a":2,"a":3}"#), r#"{"a":3}"#);
        assert_eq!(text_of(r#"{"\u0061":1,"a":2}"#), r#"{"a":2}"#);
        assert_eq!(text_of("{}"), "");
        // A superseded member's own repeats, and repeats inside the member that
        // supersedes it.
        assert_eq!(
            text_of(r#"{"a":{"k":1,"k":2},"b":0,"a":[{"k":3,"j":0,"k":4}],"b":{"b":1,"b":2}}"#),
            r#"{"a":[{"k":4,"j":0}],"b":{"b":2}}"#
        );
        // Past the keys compared one by one, through the index: the same.
        let n = Members::SCANNED + 10;
        let many: Vec<String> = (0..n).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let json = format!(
            r#"{{{},"k3":"three","k{}":[{{"x":1,"x":2}}],"k{n}":0,"k3":3.5}}"#,
            many.join(","),
            n - 1
        );
        let mut expected: Vec<String> = (0..n)
            .map(|i| match i {
                3 => r#""k3":3.5"#.to_string(),
                _ if i == n - 1 => format!(r#""k{i}":[{{"x":2}}]"#),
                _ => format!(r#""k{i}":{i}"#),
            })
            .collect();
        expected.push(format!(r#""k{n}":0"#));
        assert_eq!(text_of(&json), format!("{{{}}}", expected.join(",")));
        let nested = format!(r#"{{"o":{json},"p":{json}}}"#);
        let inner = format!("{{{}}}", expected.join(","));
        assert_eq!(text_of(&nested), format!(r#"{{"o":{inner},"p":{inner}}}"#));

        // A record's unknown members the same way: a thousand copies of a member
        // are held as one.
        let big = "x".repeat(1_000);
        let copies: Vec<String> = (0..1_000).map(|_| format!(r#""dup":"{big}""#)).collect();
        let json = format!(r#"{{"id":"a","b":1,{},"c":2}}"#, copies.join(","));
        let machine: crate::types::Machine = serde_json::from_str(&json).unwrap();
        let text = machine.extra.0.as_ref().unwrap().text().to_string();
        assert_eq!(text, format!(r#"{{"b":1,"dup":"{big}","c":2}}"#));
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
        assert!(
            fields.0.as_ref().unwrap().text().is_empty(),
            "and drops the text"
        );
        assert_eq!(fields, same);
        assert_eq!(
            serde_json::to_string(&fields).unwrap(),
            r#"{"a":[1,{"b":"c"}],"d":null}"#
        );

        // A clone of a value with a map copies the map alone.
        let copy = fields.clone();
        let held = copy.0.as_ref().unwrap();
        assert!(held.text().is_empty() && parsed(&copy));
        assert_eq!(copy, same);
        let copy = same.clone();
        assert!(!parsed(&copy) && !copy.0.as_ref().unwrap().text().is_empty());
    }
}
