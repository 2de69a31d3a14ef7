//! The rustdoc of the generated types comes from the spec: a property without a
//! `description` becomes an undocumented field, which `missing_docs` reports only
//! at build time. These checks name the property in the spec instead.
//!
//! What the spec cannot describe (the `extra` maps, the variants of the open
//! enumerations) is documented by `build.rs`.

mod common;

use common::spec;
use serde_json::Value;

fn schemas(spec: &Value) -> &serde_json::Map<String, Value> {
    spec["components"]["schemas"].as_object().unwrap()
}

fn has_description(schema: &Value) -> bool {
    schema["description"]
        .as_str()
        .is_some_and(|d| !d.trim().is_empty())
}

#[test]
fn every_schema_is_described() {
    let spec = spec();
    let missing: Vec<&String> = schemas(&spec)
        .iter()
        .filter(|(_, schema)| !has_description(schema))
        .map(|(name, _)| name)
        .collect();
    assert!(
        missing.is_empty(),
        "schemas without a description: {missing:?}"
    );
}

/// A bare `$ref` cannot carry a description in OpenAPI 3.0: a property that
/// refers to another schema wraps the reference as `allOf: [$ref]` beside its
/// `description`.
#[test]
fn every_property_is_described() {
    let spec = spec();
    let mut missing = Vec::new();
    for (name, schema) in schemas(&spec) {
        let Some(properties) = schema["properties"].as_object() else {
            continue;
        };
        for (property, schema) in properties {
            if !has_description(schema) {
                missing.push(format!("{name}.{property}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "properties without a description: {missing:?}"
    );
}

/// The alternatives of a `oneOf` become enum variants; `build.rs` documents them
/// from the alternative's `description`, except for the open enumerations'
/// `$ref` to `NKnown` and `NOther` string, which it documents itself.
#[test]
fn every_one_of_alternative_is_described() {
    let spec = spec();
    let mut missing = Vec::new();
    for (name, schema) in schemas(&spec) {
        let Some(alternatives) = schema["oneOf"].as_array() else {
            continue;
        };
        let known = format!("#/components/schemas/{name}Known");
        let other = format!("{name}Other");
        for (i, alt) in alternatives.iter().enumerate() {
            let open_enum_part = alt["$ref"].as_str() == Some(known.as_str())
                || alt["title"].as_str() == Some(other.as_str());
            if !open_enum_part && !has_description(alt) {
                missing.push(format!("{name}.oneOf[{i}]"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "oneOf alternatives without a description: {missing:?}"
    );
}

/// The README is also the crate's rustdoc: each API name it links to a source
/// file (for reading on GitHub) is linked to its rustdoc by a definition in
/// `src/lib.rs`, and it has no other relative link, which rustdoc could not follow.
#[test]
fn every_readme_link_works_in_the_rustdoc_too() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    for line in readme.lines() {
        if let Some((name, target)) = line
            .strip_prefix('[')
            .and_then(|rest| rest.split_once("]: "))
        {
            if target.starts_with("src/") {
                assert!(
                    lib.contains(&format!("//! [{name}]: ")),
                    "src/lib.rs has no rustdoc link for the README's [{name}]"
                );
            }
        }
        for (i, _) in line.match_indices("](") {
            let target = &line[i + 2..];
            assert!(
                target.starts_with("http") || target.starts_with('#'),
                "a relative link rustdoc cannot follow: {line}"
            );
        }
    }
}
