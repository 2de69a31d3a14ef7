//! `UnknownFields`, the `extra` of the generated types: members the spec does not
//! describe are kept exactly as a `serde_json::Map` would keep them, read back as
//! one, refused where reading them into a `Value` is refused, and serialised back.

mod common;

use common::{client, seed};
use defender_endpoint::{
    types::{Machine, MachineCollection},
    UnknownFields,
};
use httpmock::MockServer;
use serde_json::{json, Map, Value};

/// The seed's first machine with `members` added after its own fields.
fn machine_text(members: &str) -> String {
    let mut text = seed()["value"][0].to_string();
    assert_eq!(text.pop(), Some('}'));
    format!("{text},{members}}}")
}

/// What a `serde_json::Map` of the whole object keeps of the members the spec does
/// not describe: the map of the object, less the fields of the seed's machine.
fn expected_extra(text: &str) -> Map<String, Value> {
    let mut all: Map<String, Value> = serde_json::from_str(text).unwrap();
    let seed = seed();
    let known = seed["value"][0].as_object().unwrap();
    // `retain` keeps the order of what is left, with `preserve_order` too.
    all.retain(|key, _| !known.contains_key(key));
    all
}

/// Values that a careless writer would alter: escapes, non-ASCII, the edges of the
/// integer ranges, floats that only print exactly one way, empty and nested
/// containers, and keys that need escaping.
const TRICKY: &[&str] = &[
    r#""plain":"text""#,
    r#""quote\"and\\slash":"line\nbreak\ttab\u0001\u001f\/""#,
    r#""unicode":"caf\u00e9 \u65e5\u672c \ud83d\ude00 ü""#,
    r#""max":18446744073709551615"#,
    r#""min":-9223372036854775808"#,
    r#""beyond":18446744073709551616"#,
    r#""float":0.1"#,
    r#""tiny":5e-324"#,
    r#""huge":1.7976931348623157e308"#,
    r#""negzero":-0.0"#,
    r#""exp":12E+2"#,
    r#""whole":42.0"#,
    r#""bools":[true,false,null]"#,
    r#""empty":{}"#,
    r#""emptyList":[]"#,
    r#""nested":{"b":[1,{"c":{"d":[[],[{}]]}}],"a":"first key sorts last"}"#,
    r#""":"an empty key""#,
];

#[test]
fn every_member_reads_back_as_a_map_would_hold_it() {
    let text = machine_text(&TRICKY.join(" , \n"));
    let machine: Machine = serde_json::from_str(&text).unwrap();
    let expected = expected_extra(&text);
    assert_eq!(expected.len(), TRICKY.len());
    assert_eq!(*machine.extra, expected);
    assert_eq!(machine.extra.len(), TRICKY.len());
    assert_eq!(machine.extra["max"], json!(u64::MAX));
    assert_eq!(machine.extra["min"], json!(i64::MIN));
    assert_eq!(machine.extra["tiny"], json!(5e-324));
    assert_eq!(machine.extra["unicode"], json!("café 日本 😀 ü"));
    assert_eq!(machine.extra[""], json!("an empty key"));

    // Serialised back, the members are those of the object it came from.
    let back = serde_json::to_value(&machine).unwrap();
    let original: Value = serde_json::from_str(&text).unwrap();
    for (key, value) in &expected {
        assert_eq!(back[key], *value, "member {key:?}");
    }
    assert_eq!(
        serde_json::from_value::<Machine>(back.clone()).unwrap(),
        machine
    );
    assert_eq!(back.as_object().unwrap().len(), {
        // Null known fields are left out when written.
        original
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, v)| !v.is_null() || expected.contains_key(*k))
            .count()
    });
}

#[test]
fn the_same_members_are_kept_whatever_the_deserializer() {
    let text = machine_text(&TRICKY.join(","));
    let from_str: Machine = serde_json::from_str(&text).unwrap();
    let from_reader: Machine = serde_json::from_reader(text.as_bytes()).unwrap();
    let from_value: Machine =
        serde_json::from_value(serde_json::from_str::<Value>(&text).unwrap()).unwrap();
    assert_eq!(*from_str.extra, expected_extra(&text));
    assert_eq!(from_reader, from_str);
    assert_eq!(*from_value.extra, expected_extra(&text));
}

#[test]
fn a_repeated_member_keeps_its_last_value() {
    let text = machine_text(r#""again":1,"other":true,"again":{"x":[2]}"#);
    let machine: Machine = serde_json::from_str(&text).unwrap();
    assert_eq!(machine.extra.len(), 2);
    assert_eq!(machine.extra["again"], json!({"x": [2]}));
}

#[test]
fn what_a_value_refuses_is_refused_with_the_same_error() {
    for members in [
        r#""lone":"\ud800""#,
        r#""low":"\udc00 alone""#,
        r#""out":1e400"#,
        r#""bad":[1,]"#,
        "\"ctl\":\"a\u{1}raw control character\"",
        r#""cut":"#,
    ] {
        let text = machine_text(members);
        let as_value = serde_json::from_str::<Value>(&text).unwrap_err();
        let as_machine = serde_json::from_str::<Machine>(&text).unwrap_err();
        assert_eq!(
            as_machine.to_string(),
            as_value.to_string(),
            "members {members:?}"
        );
    }
    // Nesting: as deep as a `Value` takes, and refused just past that.
    let depth_ok = 126;
    let nested = |n: usize| format!(r#""deep":{}1{}"#, "[".repeat(n), "]".repeat(n));
    let machine: Machine = serde_json::from_str(&machine_text(&nested(depth_ok))).unwrap();
    let mut value = &machine.extra["deep"];
    for _ in 0..depth_ok {
        value = &value[0];
    }
    assert_eq!(*value, json!(1));
    let too_deep = machine_text(&nested(depth_ok + 1));
    assert_eq!(
        serde_json::from_str::<Machine>(&too_deep)
            .unwrap_err()
            .to_string(),
        serde_json::from_str::<Value>(&too_deep)
            .unwrap_err()
            .to_string()
    );
}

#[test]
fn it_reads_and_writes_like_a_map() {
    let text = machine_text(r#""zone":"b","tier":2"#);
    let mut machine: Machine = serde_json::from_str(&text).unwrap();
    assert!(!machine.extra.is_empty());
    assert!(machine.extra.contains_key("zone"));
    assert_eq!(machine.extra.get("tier"), Some(&json!(2)));
    // In the order a map of the same members has them (by key, or as written
    // with serde_json's `preserve_order`).
    let keys: Vec<&String> = machine.extra.keys().collect();
    let map: Map<String, Value> = serde_json::from_str(r#"{"zone":"b","tier":2}"#).unwrap();
    assert_eq!(keys, map.keys().collect::<Vec<_>>());
    assert_eq!(keys.len(), 2);
    let pairs: Vec<(&String, &Value)> = (&machine.extra).into_iter().collect();
    assert_eq!(pairs.len(), 2);

    // Changed through `&mut`, the change is what is compared and written.
    let copy = machine.clone();
    machine.extra.insert("zone".into(), json!("c"));
    machine.extra.remove("tier");
    machine.extra.extend([("added".to_owned(), json!([1]))]);
    assert_ne!(machine, copy);
    let back = serde_json::to_value(&machine).unwrap();
    assert_eq!(back["zone"], "c");
    assert_eq!(back["added"], json!([1]));
    assert!(back.get("tier").is_none());
    assert_eq!(copy.extra["tier"], 2, "a clone keeps its own members");

    machine.extra.clear();
    assert!(machine.extra.is_empty());
    let back = serde_json::to_value(&machine).unwrap();
    assert!(back.get("zone").is_none() && back.get("added").is_none());

    let map: Map<String, Value> = copy.extra.clone().into();
    assert_eq!(map, *copy.extra);
    assert_eq!(UnknownFields::from(map.clone()), copy.extra);
    assert_eq!(copy.extra, map);
    assert_eq!(map, copy.extra);
    assert_eq!(copy.extra.clone().into_iter().count(), 2);
}

#[test]
fn equality_is_that_of_the_members_not_of_their_order_or_spelling() {
    let a: Machine = serde_json::from_str(&machine_text(r#""x":1,"y":[1.50,"\u0041"]"#)).unwrap();
    let b: Machine = serde_json::from_str(&machine_text(r#""y":[1.5,"A"],"x":1"#)).unwrap();
    let c: Machine = serde_json::from_str(&machine_text(r#""x":1,"y":[1.5,"B"]"#)).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.extra, b.extra);
    assert_ne!(a, c);
    assert_ne!(a.extra, c.extra);
    // Looking at one side first changes nothing.
    let _ = a.extra.len();
    assert_eq!(a.extra, b.extra);
    assert_ne!(c.extra, a.extra);
    assert_eq!(UnknownFields::default(), UnknownFields::from(Map::new()));
}

#[test]
fn debug_shows_the_members_as_a_map_does() {
    let machine: Machine = serde_json::from_str(&machine_text(r#""zone":"b""#)).unwrap();
    let map: Map<String, Value> = machine.extra.clone().into_map();
    assert_eq!(format!("{:?}", machine.extra), format!("{map:?}"));
    assert!(format!("{machine:?}").contains(r#"extra: {"zone": String("b")}"#));
}

#[test]
fn it_is_a_standalone_serde_type_too() {
    let fields: UnknownFields = serde_json::from_str(r#"{"a":{"b":null},"c":"d"}"#).unwrap();
    assert_eq!(fields["a"], json!({"b": null}));
    assert_eq!(
        serde_json::to_string(&fields).unwrap(),
        r#"{"a":{"b":null},"c":"d"}"#
    );
    let empty: UnknownFields = serde_json::from_str("{}").unwrap();
    assert!(empty.is_empty());
    assert_eq!(serde_json::to_string(&empty).unwrap(), "{}");
    assert!(serde_json::from_str::<UnknownFields>("[1]").is_err());
    let collected: UnknownFields = [("k".to_owned(), json!(1))].into_iter().collect();
    assert_eq!(collected["k"], 1);

    fn send_sync<T: Send + Sync>() {}
    send_sync::<UnknownFields>();
    send_sync::<Machine>();
}

#[test]
fn the_json_schema_is_that_of_a_map() {
    let schema = serde_json::to_value(schemars::schema_for!(UnknownFields)).unwrap();
    let map = serde_json::to_value(schemars::schema_for!(Map<String, Value>)).unwrap();
    assert_eq!(schema, map);
    let machine = serde_json::to_value(schemars::schema_for!(Machine)).unwrap();
    assert_eq!(machine["additionalProperties"], json!(true));
}

#[tokio::test]
async fn unknown_fields_of_a_served_answer_are_kept_at_every_level() {
    let server = MockServer::start_async().await;
    let mut body = seed();
    body["@odata.count"] = json!(2);
    let first = &mut body["value"][0];
    first["deviceCategory"] = json!("Endpoint");
    first["firmwareVersions"] = json!([{"type": "BIOS", "version": "1.2"}]);
    first["ipAddresses"][0]["gateway"] = json!("10.1.1.254");
    let served = body.to_string();
    server
        .mock_async(|when, then| {
            when.path("/api/users/user1/machines");
            then.status(200)
                .header("content-type", "application/json")
                .body(served);
        })
        .await;
    let client = client(&server);
    let machines = client.user_machines("user1").await.unwrap();
    assert_eq!(machines[0].extra["deviceCategory"], "Endpoint");
    assert_eq!(
        machines[0].extra["firmwareVersions"],
        json!([{"type": "BIOS", "version": "1.2"}])
    );
    assert_eq!(
        machines[0].ip_addresses.as_ref().unwrap()[0].extra["gateway"],
        "10.1.1.254"
    );
    assert!(machines[1].extra.is_empty());
    // The machines serialise back to what was served.
    for (machine, served) in machines.iter().zip(body["value"].as_array().unwrap()) {
        let back = serde_json::to_value(machine).unwrap();
        for (key, value) in served.as_object().unwrap() {
            if !value.is_null() && !key.ends_with("Seen") {
                assert_eq!(back[key], *value, "{key}");
            }
        }
    }
    // The collection keeps its own unknown members.
    let page: MachineCollection = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(page.extra["@odata.count"], 2);
}

/// The seed's machine id, for objects written out here.
const ID: &str = "1e5bc9d7e413ddd7902c2932e418702b84d0cc07";

/// A map read from text, or the error as text.
type Read = Result<Map<String, Value>, String>;

/// `Machine`'s unknown members and a `Map` of the same object without `id`, read
/// from the same `text`.
fn both(text: &str) -> (Read, Read) {
    let map = serde_json::from_str::<Map<String, Value>>(text)
        .map(|mut m| {
            m.retain(|key, _| key != "id");
            m
        })
        .map_err(|e| e.to_string());
    let machine = serde_json::from_str::<Machine>(text)
        .map(|m| m.extra.into_map())
        .map_err(|e| e.to_string());
    (machine, map)
}

#[test]
fn floats_read_back_bit_for_bit() {
    let mut numbers: Vec<String> = [
        "1.4118672820874536e-9",
        "4.1565662920356865e+197",
        "-1.0747835603082218e-7",
        "0.30000000000000004",
        "2.2250738585072011e-308",
        "9007199254740993",
        "1e23",
    ]
    .map(str::to_owned)
    .to_vec();
    // Spread over the whole range, with 17 significant digits (the most an f64 needs).
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    while numbers.len() < 2_000 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let f = f64::from_bits(state);
        if f.is_finite() {
            numbers.push(format!("{f:.16e}"));
        }
    }
    let members: Vec<String> = numbers
        .iter()
        .enumerate()
        .map(|(i, n)| format!(r#""n{i}":{n}"#))
        .collect();
    let text = format!(r#"{{"id":"{ID}",{}}}"#, members.join(","));
    let (machine, map) = both(&text);
    let (machine, map) = (machine.unwrap(), map.unwrap());
    for (key, value) in &map {
        let kept = machine[key].as_f64().map(f64::to_bits);
        assert_eq!(kept, value.as_f64().map(f64::to_bits), "{key}: {value}");
    }
    let standalone: UnknownFields =
        serde_json::from_str(&format!(r#"{{"x":{}}}"#, numbers[0])).unwrap();
    assert_eq!(standalone["x"], map["n0"]);
}

/// `n` arrays nested around `1`.
fn nested(n: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..n {
        v = Value::Array(vec![v]);
    }
    v
}

#[test]
fn values_deeper_than_json_text_allows_are_kept_from_other_sources() {
    let deep = json!({"id": ID, "deep": nested(300)});
    let map: Map<String, Value> = serde_json::from_value(deep.clone()).unwrap();
    let machine: Machine = serde_json::from_value(deep.clone()).unwrap();
    assert_eq!(machine.extra["deep"], map["deep"]);
    assert_eq!(
        serde_json::to_value(&machine).unwrap()["deep"],
        deep["deep"]
    );
    for n in [120, 126, 127, 128, 200] {
        let yaml = format!("id: abc\ndeep: {}1{}\n", "[".repeat(n), "]".repeat(n));
        let map = serde_yaml_ng::from_str::<Map<String, Value>>(&yaml)
            .map(|m| m["deep"].clone())
            .map_err(|e| e.to_string());
        let machine = serde_yaml_ng::from_str::<Machine>(&yaml)
            .map(|m| m.extra["deep"].clone())
            .map_err(|e| e.to_string());
        assert_eq!(machine, map, "{n} deep");
    }
}

#[test]
fn integers_beyond_64_bits_from_other_formats_are_refused_as_a_value_refuses_them() {
    for yaml in [
        "id: abc\nbig: 18446744073709551616\n",
        "id: abc\nbig: -9223372036854775809\n",
    ] {
        let map = serde_yaml_ng::from_str::<Map<String, Value>>(yaml).map_err(|e| e.to_string());
        let machine = serde_yaml_ng::from_str::<Machine>(yaml).map_err(|e| e.to_string());
        assert!(map.is_err(), "{yaml}");
        assert_eq!(machine.unwrap_err(), map.unwrap_err());
    }
    let yaml =
        "id: abc\nf: .nan\ng: -.inf\nh: ~\ni: 0x1F\nj: {1: a, true: b}\nk: 18446744073709551615\n";
    let mut map = serde_yaml_ng::from_str::<Map<String, Value>>(yaml).unwrap();
    map.remove("id");
    assert_eq!(serde_yaml_ng::from_str::<Machine>(yaml).unwrap().extra, map);
}

#[test]
fn as_a_standalone_type_it_is_read_as_a_map_is() {
    use serde::de::{value::Error as Plain, IntoDeserializer};
    use serde::Deserialize;
    for text in ["[1]", "1", "null", "\"s\"", "true", "{\"a\":}"] {
        assert_eq!(
            serde_json::from_str::<UnknownFields>(text)
                .unwrap_err()
                .to_string(),
            serde_json::from_str::<Map<String, Value>>(text)
                .unwrap_err()
                .to_string(),
            "{text}"
        );
    }
    let unit = UnknownFields::deserialize(IntoDeserializer::<Plain>::into_deserializer(()));
    assert!(unit.unwrap().is_empty());
    assert!(
        Map::<String, Value>::deserialize(IntoDeserializer::<Plain>::into_deserializer(())).is_ok()
    );
}

#[test]
fn edge_members_read_as_a_map_reads_them() {
    let members = [
        r#""esc\u0000\b\f\n\r\t\"\\\/\u007f\u2028\u2029":"\u0000\b\f\n\r\t\"\\\/\u007f\u2028\u2029\ud83d\ude00""#,
        r#""\u0000":0"#,
        r#""negzero":-0"#,
        r#""negzero2":-0.0e5"#,
        r#""under":-1e-400"#,
        r#""big":123456789012345678901234567890"#,
        r#""imin1":-9223372036854775809"#,
        r#""long":0.100000000000000000000000000000000000000000000000000001"#,
        r#""d":{"a":1,"a":{"a":2,"a":[3]}}"#,
        r#""d":{"z":1}"#,
        r#""$serde_json::private::Number":"1""#,
        r#""n":{"$serde_json::private::Number":"1"}"#,
        r#""r":{"$serde_json::private::RawValue":"[1]"}"#,
    ];
    let text = format!(r#"{{"id":"{ID}",{}}}"#, members.join(","));
    let (machine, map) = both(&text);
    let map = map.unwrap();
    assert_eq!(machine.unwrap(), map);
    let from_reader: Machine = serde_json::from_reader(text.as_bytes()).unwrap();
    assert_eq!(from_reader.extra, map);
    assert_eq!(format!("{:?}", from_reader.extra), format!("{map:?}"));
    assert_eq!(
        serde_json::to_string(&from_reader.extra).unwrap(),
        serde_json::to_string(&map).unwrap()
    );

    // Inside a caller's own type, through `flatten`.
    #[derive(serde::Deserialize)]
    struct Wrapper {
        #[serde(flatten)]
        machine: Machine,
    }
    #[derive(serde::Deserialize)]
    struct Own {
        id: String,
        #[serde(flatten)]
        extra: UnknownFields,
    }
    let wrapper: Wrapper = serde_json::from_str(&text).unwrap();
    assert_eq!(wrapper.machine.extra, map);
    let own: Own = serde_json::from_str(&text).unwrap();
    assert_eq!((own.id.as_str(), own.extra), (ID, map.into()));
}

#[test]
fn malformed_members_are_refused_at_the_same_place_as_by_a_map() {
    let cases: [&[u8]; 17] = [
        b"\"bad\":\"\xff\"",
        b"\"bad\xff\":1",
        b"\"x\":\"\xed\xa0\x80\"",
        br#""\ud800":1"#,
        br#""x":"\ud83d\u0041""#,
        br#""x":"\udc00\ud800""#,
        br#""x":1e400"#,
        br#""x":-1e400"#,
        br#""x":01"#,
        br#""x":1."#,
        br#""x":NaN"#,
        br#""x":{"a"}"#,
        br#""x":{1:2}"#,
        br#""x":[1,]"#,
        br#""x":{"a":1,}"#,
        br#""x":"\x""#,
        br#""x":"\u12"#,
    ];
    for member in cases {
        let mut text = format!(r#"{{"id":"{ID}","#).into_bytes();
        text.extend_from_slice(member);
        text.push(b'}');
        let shown = String::from_utf8_lossy(member);
        let map = serde_json::from_slice::<Map<String, Value>>(&text).unwrap_err();
        let machine = serde_json::from_slice::<Machine>(&text).unwrap_err();
        assert_eq!(machine.to_string(), map.to_string(), "{shown}");
        let map = serde_json::from_reader::<_, Map<String, Value>>(&text[..]).unwrap_err();
        let machine = serde_json::from_reader::<_, Machine>(&text[..]).unwrap_err();
        assert_eq!(machine.to_string(), map.to_string(), "reader: {shown}");
    }
    let text = format!(r#"{{"id":"{ID}","a":{{"b":[1,{{"c":1e400}}]}}}}"#);
    let map = serde_path_to_error::deserialize::<_, Map<String, Value>>(
        &mut serde_json::Deserializer::from_str(&text),
    )
    .unwrap_err();
    let machine = serde_path_to_error::deserialize::<_, Machine>(
        &mut serde_json::Deserializer::from_str(&text),
    )
    .unwrap_err();
    assert_eq!(machine.path().to_string(), map.path().to_string());
}

#[test]
fn equal_members_hash_alike_and_convert_to_a_json_object() {
    use std::collections::HashSet;
    let a: Machine = serde_json::from_str(&machine_text(r#""x":1,"y":[1.50,"\u0041"]"#)).unwrap();
    let b: Machine = serde_json::from_str(&machine_text(r#""y":[1.5,"A"],"x":1"#)).unwrap();
    let c: Machine = serde_json::from_str(&machine_text(r#""x":2"#)).unwrap();
    let _ = b.extra.len(); // one read through the map, one not
                           // The map an `UnknownFields` may make and keep does not change what it holds,
                           // nor its hash.
    #[allow(clippy::mutable_key_type)]
    let set: HashSet<&UnknownFields> = [&a.extra, &b.extra, &c.extra].into_iter().collect();
    assert_eq!(set.len(), 2);
    assert!(set.contains(&UnknownFields::from(
        json!({"x": 2}).as_object().unwrap().clone()
    )));
    assert_eq!(Value::from(a.extra), json!({"x": 1, "y": [1.5, "A"]}));
    assert_eq!(Value::from(UnknownFields::new()), json!({}));
}

/// A small self-describing source of values that is not JSON text, to drive the
/// paths `serde_json` never takes (byte-string keys, newtype values).
mod tree {
    use serde::de::{self, value::Error, value::MapDeserializer, IntoDeserializer, Visitor};

    #[derive(Clone)]
    pub enum T {
        S(&'static str),
        B(&'static [u8]),
        U(u64),
        N(Box<T>),
        M(Vec<(T, T)>),
    }

    impl<'de> IntoDeserializer<'de, Error> for T {
        type Deserializer = T;
        fn into_deserializer(self) -> T {
            self
        }
    }

    impl<'de> de::Deserializer<'de> for T {
        type Error = Error;
        fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            match self {
                T::S(s) => v.visit_borrowed_str(s),
                T::B(b) => v.visit_borrowed_bytes(b),
                T::U(u) => v.visit_u64(u),
                T::N(t) => v.visit_newtype_struct(*t),
                T::M(m) => v.visit_map(MapDeserializer::new(m.into_iter())),
            }
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map struct enum identifier ignored_any
        }
    }
}

#[test]
fn values_from_other_sources_are_taken_and_refused_as_a_map_does() {
    use serde::Deserialize;
    use tree::T;
    let read = |members: Vec<(T, T)>| {
        let map =
            Map::<String, Value>::deserialize(T::M(members.clone())).map_err(|e| e.to_string());
        let mut with_id = vec![(T::S("id"), T::S(ID))];
        with_id.extend(members);
        let machine = Machine::deserialize(T::M(with_id))
            .map(|m| m.extra.into_map())
            .map_err(|e| e.to_string());
        (machine, map)
    };
    // A nested key after the first may be UTF-8 bytes, as for a `String`; the
    // first may not; a newtype is not a JSON value.
    let later_bytes = T::M(vec![(T::S("a"), T::U(1)), (T::B(b"b"), T::U(2))]);
    let first_bytes = T::M(vec![(T::B(b"a"), T::U(1))]);
    let bad_bytes = T::M(vec![(T::S("a"), T::U(1)), (T::B(b"\xff"), T::U(2))]);
    for members in [
        vec![(T::S("x"), later_bytes)],
        vec![(T::S("x"), first_bytes)],
        vec![(T::S("x"), bad_bytes)],
        vec![(T::S("x"), T::N(Box::new(T::U(1))))],
    ] {
        let (machine, map) = read(members);
        assert_eq!(machine, map);
    }
    let (machine, _) = read(vec![(
        T::S("x"),
        T::M(vec![(T::S("a"), T::U(1)), (T::B(b"b"), T::U(2))]),
    )]);
    assert_eq!(machine.unwrap()["x"], json!({"a": 1, "b": 2}));
}

/// A member repeated a thousand times reads as one, with its last value (that
/// the text holds it once is checked in `src/unknown.rs`, where the text is seen).
#[test]
fn a_member_repeated_a_thousand_times_reads_as_its_last_value() {
    let big = "x".repeat(1_000);
    let copies: Vec<String> = (0..1_000).map(|i| format!(r#""dup":"{big}{i}""#)).collect();
    let text = machine_text(&format!(
        r#""first":1,{},"last":{{"a":1,"a":2}}"#,
        copies.join(",")
    ));
    let machine: Machine = serde_json::from_str(&text).unwrap();
    assert_eq!(machine.extra.len(), 3);
    assert_eq!(machine.extra["dup"], format!("{big}999"));
    assert_eq!(machine.extra["last"], json!({"a": 2}));
    assert_eq!(*machine.extra, expected_extra(&text));
}

/// Records read one after another, records inside records, objects inside
/// members and a record that failed half-way each keep their own members: the
/// room the members are written in is reused, but nothing of one object is seen
/// in another.
#[test]
fn each_object_keeps_its_own_members_when_many_are_read() {
    let members = [
        r#""o":{"k":1,"k":2,"in":{"k":3,"o":4,"k":5},"arr":[{"k":6,"k":7},{"o":8}]},"k":9,"o":{"last":true},"in":{"k":1}"#,
        r#""k":"second","arr":[{"o":{"o":{"o":1}}},{"k":[{"k":1,"k":2}]}],"k":"again""#,
        r#""ipLike":{"ipAddress":"10.0.0.1"},"o":[]"#,
    ];
    let machines: Vec<String> = members.iter().map(|m| machine_text(m)).collect();
    // The second machine's IP address has members of its own, read while the
    // machine's are being written.
    let mut second: Value = serde_json::from_str(&machines[1]).unwrap();
    second["ipAddresses"] = json!([
        {"ipAddress": "10.0.0.2", "k": {"k": 1, "k": 2}, "o": 1},
        {"ipAddress": "10.0.0.3", "o": {"in": 2}}
    ]);
    let text = format!(
        r#"{{"value":[{},{},{}],"o":{{"k":0}},"k":[1]}}"#,
        machines[0], second, machines[2]
    );
    for round in 0..2 {
        let page: MachineCollection = serde_json::from_str(&text).unwrap();
        assert_eq!(page.value.len(), 3, "round {round}");
        assert_eq!(*page.value[0].extra, expected_extra(&machines[0]));
        assert_eq!(*page.value[1].extra, expected_extra(&second.to_string()));
        assert_eq!(*page.value[2].extra, expected_extra(&machines[2]));
        let ips = page.value[1].ip_addresses.as_ref().unwrap();
        assert_eq!(
            Value::from(ips[0].extra.clone()),
            json!({"k": {"k": 2}, "o": 1})
        );
        assert_eq!(Value::from(ips[1].extra.clone()), json!({"o": {"in": 2}}));
        assert_eq!(
            Value::from(page.extra.clone()),
            json!({"o": {"k": 0}, "k": [1]})
        );

        // A record that fails inside a nested object leaves nothing behind for
        // the next one.
        let broken = machine_text(r#""a":{"k":1,"b":{"k":2,"k":tru}}"#);
        assert!(serde_json::from_str::<Machine>(&broken).is_err());
    }
}

/// Objects a hostile answer could send to make keeping members slow: many
/// distinct keys, and a key repeated many times after a large member. Both are
/// read as a map reads them, in time that grows with their length (each took
/// minutes when a new key was compared with every earlier one and a repeat moved
/// everything written after the member it replaced).
#[test]
fn objects_with_many_keys_or_many_repeats_are_read_as_a_map_reads_them() {
    let distinct: Vec<String> = (0..100_000).map(|i| format!(r#""k{i}":{i}"#)).collect();
    let text = machine_text(&format!(r#""wide":{{{0}}},{0}"#, distinct.join(",")));
    let machine: Machine = serde_json::from_str(&text).unwrap();
    assert_eq!(machine.extra.len(), 100_001);
    assert_eq!(machine.extra["wide"].as_object().unwrap().len(), 100_000);
    assert_eq!(*machine.extra, expected_extra(&text));

    let large = "x".repeat(256 * 1024);
    let repeats: Vec<String> = (0..50_000)
        .map(|i| format!(r#""again":{}"#, if i % 2 == 0 { "1" } else { "[22]" }))
        .collect();
    let members = format!(r#""again":0,"large":"{large}",{}"#, repeats.join(","));
    let text = machine_text(&format!(r#"{members},"nested":{{{members}}}"#));
    let machine: Machine = serde_json::from_str(&text).unwrap();
    assert_eq!(machine.extra.len(), 3);
    assert_eq!(machine.extra["again"], json!([22]));
    assert_eq!(machine.extra["nested"]["again"], json!([22]));
    assert_eq!(*machine.extra, expected_extra(&text));
}
