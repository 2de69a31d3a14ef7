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
    for known in seed()["value"][0].as_object().unwrap().keys() {
        all.remove(known);
    }
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
    let keys: Vec<&String> = machine.extra.keys().collect();
    assert_eq!(keys, ["tier", "zone"]);
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
