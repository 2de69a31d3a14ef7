//! The spec must describe real data: every fixture validates against the schemas of
//! `openapi/defender.yaml`, and the generated types read them without loss.

mod common;

use common::{fixture_json, fixture_path, seed, spec};
use defender_endpoint::types::MachineCollection;
use serde_json::{json, Map, Value};

/// OpenAPI 3.0 schema -> JSON Schema: `nullable: true` becomes a null alternative.
fn to_json_schema(v: &Value) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.iter().map(to_json_schema).collect()),
        Value::Object(map) => {
            let mut out: Map<String, Value> = map
                .iter()
                .filter(|(k, _)| *k != "nullable")
                .map(|(k, v)| (k.clone(), to_json_schema(v)))
                .collect();
            if map.get("nullable") != Some(&Value::Bool(true)) {
                return Value::Object(out);
            }
            match out.remove("type") {
                Some(Value::String(t)) => {
                    out.insert("type".into(), json!([t, "null"]));
                    Value::Object(out)
                }
                Some(other) => panic!("unexpected type {other}"),
                None => json!({ "anyOf": [{ "type": "null" }, Value::Object(out)] }),
            }
        }
        other => other.clone(),
    }
}

fn validator(schema_name: &str) -> jsonschema::Validator {
    let spec = spec();
    let schema = json!({
        "$ref": format!("#/components/schemas/{schema_name}"),
        "components": to_json_schema(&spec["components"]),
    });
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

const FIXTURES: &[&str] = &[
    "seed-user-machines.json",
    "real-api-machines.json",
    "future-api-machines.json",
];

#[test]
fn every_fixture_matches_the_spec() {
    let collection = validator("MachineCollection");
    for name in FIXTURES {
        let data = fixture_json(name);
        let errs = errors(&collection, &data);
        assert!(errs.is_empty(), "{name} does not match the spec: {errs:#?}");
    }
}

#[test]
fn every_fixture_in_the_folder_is_checked() {
    let mut on_disk: Vec<String> = std::fs::read_dir(fixture_path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with("-machines.json"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = FIXTURES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "list new machine fixtures in FIXTURES");
}

#[test]
fn the_spec_rejects_what_the_api_never_sends() {
    let collection = validator("MachineCollection");
    for bad in [
        json!({ "value": [{ "computerDnsName": "no id" }] }),
        json!({ "value": [{ "id": 5 }] }),
        json!({ "value": [{ "id": "x", "osBuild": "19045" }] }),
        json!({ "value": [{ "id": "x", "firstSeen": "yesterday" }] }),
        json!({ "value": [{ "id": "x", "machineTags": "laptop" }] }),
        json!({ "value": [{ "id": "x", "healthStatus": 3 }] }),
        json!({ "value": "none" }),
    ] {
        assert!(!errors(&collection, &bad).is_empty(), "accepted {bad}");
    }
}

#[test]
fn the_error_envelope_matches_the_spec() {
    let envelope = validator("ErrorEnvelope");
    let sample = json!({"error": {"code": "ResourceNotFound", "message": "User was not found", "target": "43f4cb08-8fac-4b65-9db1-745c2ae65f3a"}});
    assert!(errors(&envelope, &sample).is_empty());
    let parsed: defender_endpoint::types::ErrorEnvelope = serde_json::from_value(sample).unwrap();
    let detail = parsed.error.unwrap();
    assert_eq!(detail.code.as_deref(), Some("ResourceNotFound"));
    assert_eq!(
        detail.target.as_deref(),
        Some("43f4cb08-8fac-4b65-9db1-745c2ae65f3a")
    );
}

/// Removes `null` members: the types keep a null field as `None`, which serialises as absent.
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

#[test]
fn every_fixture_round_trips_through_the_types() {
    for name in FIXTURES {
        let data = fixture_json(name);
        let parsed: MachineCollection = serde_json::from_value(data.clone())
            .unwrap_or_else(|e| panic!("{name} does not parse: {e}"));
        let back = serde_json::to_value(&parsed).unwrap();
        // Timestamps are compared as instants, everything else exactly.
        let normalise = |v: &Value| {
            let mut v = without_nulls(v);
            for m in v["value"].as_array_mut().unwrap() {
                for key in ["firstSeen", "lastSeen"] {
                    if let Some(Value::String(s)) = m.get(key) {
                        let t = chrono::DateTime::parse_from_rfc3339(s).unwrap();
                        m[key] = json!(t.timestamp_nanos_opt().unwrap());
                    }
                }
            }
            v
        };
        assert_eq!(
            normalise(&back),
            normalise(&data),
            "{name} changed on a round trip"
        );
    }
}

#[test]
fn the_direct_deserialisers_keep_serde_semantics() {
    use defender_endpoint::types::{HealthStatus, HealthStatusKnown, Machine};
    let parse = |s: &str| serde_json::from_str::<Machine>(s);
    // Missing required field, repeated known field, wrong types: errors that say so.
    assert!(parse(r#"{"computerDnsName":"x"}"#)
        .unwrap_err()
        .to_string()
        .contains("missing field `id`"));
    assert!(parse(r#"{"id":"a","id":"b"}"#)
        .unwrap_err()
        .to_string()
        .contains("duplicate field `id`"));
    assert!(parse(r#"{"id":"a","healthStatus":3}"#)
        .unwrap_err()
        .to_string()
        .contains("expected a string"));
    assert!(parse(r#"{"id":"a","osBuild":"x"}"#).is_err());
    assert!(parse(r#"["a"]"#).is_err());
    // Nulls are None, unknown keys are kept (the last of a repeated one wins).
    let m = parse(r#"{"id":"a","osBuild":null,"healthStatus":null,"x":1,"x":2}"#).unwrap();
    assert_eq!(m.os_build, None);
    assert_eq!(m.health_status, None);
    assert_eq!(m.extra["x"], json!(2));
    // From a serde_json::Value too, and open enums either way.
    let m: Machine =
        serde_json::from_value(json!({"id": "a", "healthStatus": "Active", "riskScore": "Severe"}))
            .unwrap();
    assert_eq!(
        m.health_status,
        Some(HealthStatus::Known(HealthStatusKnown::Active))
    );
    assert_eq!(m.risk_score.as_ref().unwrap().as_str(), "Severe");
    assert_eq!(m.risk_score.unwrap().known_ignore_case(), None);
    let s: defender_endpoint::types::OnboardingStatus =
        serde_json::from_str(r#""Onboarded""#).unwrap();
    assert_eq!(s.as_str(), "Onboarded");
    assert_eq!(
        s.known_ignore_case(),
        Some(defender_endpoint::types::OnboardingStatusKnown::Onboarded)
    );
}

/// The generated types are the spec's: every property of every schema is a field
/// of the Rust type of the same name (seen through the types' own JSON Schema).
#[test]
fn every_spec_property_is_a_rust_field() {
    use defender_endpoint::types::{
        ErrorDetail, IpAddress, Machine, MachineCollection, VmMetadata,
    };
    let spec = spec();
    let generated = [
        ("Machine", schemars::schema_for!(Machine)),
        (
            "MachineCollection",
            schemars::schema_for!(MachineCollection),
        ),
        ("IpAddress", schemars::schema_for!(IpAddress)),
        ("VmMetadata", schemars::schema_for!(VmMetadata)),
        ("ErrorDetail", schemars::schema_for!(ErrorDetail)),
    ];
    for (name, schema) in generated {
        let rust = serde_json::to_value(&schema).unwrap();
        let rust_props: Vec<&String> = rust["properties"].as_object().unwrap().keys().collect();
        let spec_props: Vec<&String> = spec["components"]["schemas"][name]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        for prop in &spec_props {
            assert!(
                rust_props.contains(prop),
                "{name}.{prop} is in the spec but not in Rust"
            );
        }
        for prop in &rust_props {
            assert!(
                spec_props.contains(prop),
                "{name}.{prop} is in Rust but not in the spec"
            );
        }
    }
}

/// Every property of what the API answers (its responses, the schemas they
/// refer to, inline objects and array items in them) that is not `required` is
/// `nullable`: the service leaves fields out or sends `null`, and a property that
/// could not read `null` would fail a whole answer over one value. (What the
/// client only sends, parameters and request bodies, is not held to it.)
#[test]
fn every_optional_property_is_nullable() {
    fn walk(value: &Value, at: &str, found: &mut Vec<String>, refs: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    refs.push(target.clone());
                }
                if let Some(Value::Object(properties)) = map.get("properties") {
                    let required: Vec<&str> = map
                        .get("required")
                        .and_then(Value::as_array)
                        .map(|r| r.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    for (name, property) in properties {
                        if !required.contains(&name.as_str())
                            && property.get("nullable") != Some(&Value::Bool(true))
                        {
                            found.push(format!("{at}/properties/{name}"));
                        }
                    }
                }
                for (key, child) in map {
                    walk(child, &format!("{at}/{key}"), found, refs);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, &format!("{at}/{i}"), found, refs);
                }
            }
            _ => {}
        }
    }
    let spec = spec();
    let (mut found, mut refs) = (Vec::new(), Vec::new());
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if let Some(responses) = operation.get("responses") {
                let at = format!("/paths/{path}/{method}/responses");
                walk(responses, &at, &mut found, &mut refs);
            }
        }
    }
    if let Some(responses) = spec["components"].get("responses") {
        walk(responses, "/components/responses", &mut found, &mut refs);
    }
    // The schemas those answers refer to, and those they refer to in turn.
    let mut seen = std::collections::HashSet::new();
    while let Some(target) = refs.pop() {
        let Some(name) = target.strip_prefix("#/components/schemas/") else {
            continue;
        };
        if seen.insert(name.to_owned()) {
            let at = format!("/components/schemas/{name}");
            walk(
                &spec["components"]["schemas"][name],
                &at,
                &mut found,
                &mut refs,
            );
        }
    }
    assert!(
        seen.contains("Machine") && seen.contains("IpAddress"),
        "{seen:?}"
    );
    assert!(
        found.is_empty(),
        "neither required nor nullable: {found:#?}"
    );
}

/// The spec says every field but `id` may be missing or null in practice: a machine with
/// any one field (top-level, in `ipAddresses[]` or in `vmMetadata`) set to `null` still
/// decodes, and the other fields keep their values.
#[test]
fn any_one_field_may_be_null() {
    use defender_endpoint::types::Machine;
    let spec = spec();
    let schemas = &spec["components"]["schemas"];
    let mut full = seed()["value"][0].clone();
    full["ipAddresses"] = json!([
        {"ipAddress": "10.0.0.1", "macAddress": "00155D000001", "type": "Ethernet", "operationalStatus": "Up"}
    ]);
    full["vmMetadata"] = json!({
        "vmId": "a", "cloudProvider": "Azure", "resourceId": "r", "subscriptionId": "s"
    });
    let mut cases = Vec::new();
    for prop in schemas["Machine"]["properties"].as_object().unwrap().keys() {
        if prop != "id" {
            let mut m = full.clone();
            m[prop.as_str()] = Value::Null;
            cases.push((prop.clone(), m));
        }
    }
    for prop in schemas["IpAddress"]["properties"]
        .as_object()
        .unwrap()
        .keys()
    {
        let mut m = full.clone();
        m["ipAddresses"][0][prop.as_str()] = Value::Null;
        cases.push((format!("ipAddresses[0].{prop}"), m));
    }
    for prop in schemas["VmMetadata"]["properties"]
        .as_object()
        .unwrap()
        .keys()
    {
        let mut m = full.clone();
        m["vmMetadata"][prop.as_str()] = Value::Null;
        cases.push((format!("vmMetadata.{prop}"), m));
    }
    assert!(cases.len() > 30, "{} cases", cases.len());
    for (what, m) in cases {
        let parsed: Machine = serde_json::from_value(m.clone())
            .unwrap_or_else(|e| panic!("{what} = null does not decode: {e}"));
        assert_eq!(parsed.id, full["id"], "{what}");
        // The other fields survive: serialised back, only the nulled field differs.
        let back = without_nulls(&serde_json::to_value(&parsed).unwrap());
        assert_eq!(back, without_nulls(&m), "{what}");
    }
}

/// The open enumerations can be map keys and set members, like their parts.
#[test]
fn open_enumerations_are_eq_and_hash() {
    use defender_endpoint::types::{HealthStatus, HealthStatusKnown};
    use std::collections::HashMap;
    let mut per_status: HashMap<HealthStatus, usize> = HashMap::new();
    for text in [r#""Active""#, r#""Active""#, r#""Sleeping""#] {
        *per_status
            .entry(serde_json::from_str(text).unwrap())
            .or_default() += 1;
    }
    assert_eq!(
        per_status[&HealthStatus::Known(HealthStatusKnown::Active)],
        2
    );
    assert_eq!(per_status.len(), 2);
}

/// A downstream crate builds test values from the defaults, naming only what it
/// needs: the literal keeps compiling when the spec gains a field.
#[test]
fn the_entity_types_have_empty_defaults() {
    use defender_endpoint::types::{IpAddress, Machine, VmMetadata};
    let machine = Machine {
        id: "m1".into(),
        computer_dns_name: Some("m1.contoso.com".into()),
        ip_addresses: Some(vec![IpAddress {
            ip_address: Some("10.0.0.1".into()),
            ..Default::default()
        }]),
        vm_metadata: Some(VmMetadata::default()),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_value(&machine).unwrap(),
        json!({
            "id": "m1",
            "computerDnsName": "m1.contoso.com",
            "ipAddresses": [{"ipAddress": "10.0.0.1"}],
            "vmMetadata": {},
        })
    );
    let collection = MachineCollection {
        value: vec![machine],
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_value(&collection).unwrap()["value"][0]["id"],
        "m1"
    );
    assert_eq!(
        serde_json::to_value(MachineCollection::default()).unwrap(),
        json!({"value": []})
    );
}
