//! Regeneration as a maintainer does it: edit `openapi/defender.yaml`, run
//! `cargo build`, and the change is in the Rust types; a spec the generator cannot
//! handle fails the build with a message naming the spec.
//!
//! The crate is copied to a temporary folder and built there, sharing this test
//! run's target directory so that no dependency is rebuilt.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of the crate's sources in a fresh folder, under a package and library
/// name of its own: cargo tells path packages apart by name, not by folder, so an
/// unrenamed copy would share (and overwrite) this crate's build outputs.
fn copy_of_the_crate(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let copy =
        std::env::temp_dir().join(format!("defender-endpoint-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&copy);
    for dir in ["src", "openapi", "benches", "examples"] {
        copy_tree(&root.join(dir), &copy.join(dir));
    }
    for file in ["Cargo.toml", "Cargo.lock", "build.rs", "README.md"] {
        fs::copy(root.join(file), copy.join(file)).unwrap();
    }
    let manifest = copy.join("Cargo.toml");
    edit(
        &manifest,
        "name = \"defender-endpoint\"",
        &format!("name = \"defender-endpoint-regenerated-{name}\""),
    );
    edit(
        &manifest,
        "name = \"defender_endpoint\"",
        &format!("name = \"defender_endpoint_regenerated_{name}\""),
    );
    copy
}

/// `cargo build --lib` of `dir`, in this test run's target directory.
fn build(dir: &Path) -> Output {
    build_with(dir, &["--lib"])
}

/// `cargo build` of `dir` with `targets` (`--lib`, `--examples`, …), in this test
/// run's target directory.
fn build_with(dir: &Path, targets: &[&str]) -> Output {
    // This test runs from <target>/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    let target_dir = exe.ancestors().nth(3).unwrap();
    Command::new(env!("CARGO"))
        .arg("build")
        .args(targets)
        .args(["--offline", "--target-dir"])
        .arg(target_dir)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// `cargo run --example name` in `dir`, in this test run's target directory.
fn run_example(dir: &Path, name: &str) -> Output {
    let exe = std::env::current_exe().unwrap();
    let target_dir = exe.ancestors().nth(3).unwrap();
    Command::new(env!("CARGO"))
        .args(["run", "--offline", "--example", name, "--target-dir"])
        .arg(target_dir)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn a_spec_edit_is_a_rebuild_away() {
    let copy = copy_of_the_crate("edit");
    // A field the service might start sending.
    edit(
        &copy.join("openapi/defender.yaml"),
        "        isAadJoined:\n",
        "        sensorHealthScore:\n          description: A new field.\n          type: integer\n          nullable: true\n        \
         isManaged:\n          description: A new field with a default.\n          type: boolean\n          default: true\n        \
         isAadJoined:\n",
    );
    // Types whose names the generated code also uses for its own items (`Key`,
    // `Field`, a type parameter `D`, `Vec`), and `additionalProperties` with a
    // schema of its own, which keeps its typed map.
    edit(
        &copy.join("openapi/defender.yaml"),
        "  schemas:\n",
        "  schemas:\n    \
         Key:\n      type: object\n      properties:\n        name:\n          type: string\n      additionalProperties: {}\n    \
         Field:\n      type: object\n      properties:\n        name:\n          type: string\n      additionalProperties: {}\n    \
         Vec:\n      type: object\n      additionalProperties: {}\n    \
         D:\n      type: object\n      properties:\n        v:\n          $ref: \"#/components/schemas/Vec\"\n      additionalProperties: {}\n    \
         Labels:\n      type: object\n      properties:\n        name:\n          type: string\n      additionalProperties:\n        type: string\n",
    );
    edit(
        &copy.join("openapi/defender.yaml"),
        "        isAadJoined:\n",
        "        keyInfo:\n          $ref: \"#/components/schemas/Key\"\n        \
         fieldInfo:\n          $ref: \"#/components/schemas/Field\"\n        \
         dInfo:\n          $ref: \"#/components/schemas/D\"\n        \
         labels:\n          $ref: \"#/components/schemas/Labels\"\n        \
         isAadJoined:\n",
    );
    // Operations with other methods, each started on the parsed base URL.
    edit(
        &copy.join("openapi/defender.yaml"),
        "components:\n",
        "  /api/machines/{id}:\n    \
         get:\n      operationId: GetMachineById\n      \
         parameters:\n        - {name: id, in: path, required: true, schema: {type: string}}\n        \
         - {name: view, in: query, required: false, schema: {type: string, enum: [basic, full]}}\n      \
         responses:\n        \"200\":\n          description: ok\n          content:\n            application/json:\n              schema:\n                $ref: \"#/components/schemas/Machine\"\n  \
         /api/machines/{id}/tags:\n    \
         post:\n      operationId: addMachineTag\n      \
         parameters:\n        - {name: id, in: path, required: true, schema: {type: string}}\n        \
         - {name: reason, in: query, required: false, schema: {type: string}}\n      \
         requestBody:\n        content:\n          application/json:\n            schema:\n              type: object\n              \
         properties:\n                mode:\n                  type: string\n                  enum: [Full, Selective]\n      \
         responses:\n        \"200\":\n          description: ok\n          content:\n            application/json:\n              schema:\n                $ref: \"#/components/schemas/Machine\"\n    \
         options:\n      operationId: gen\n      \
         parameters:\n        - {name: id, in: path, required: true, schema: {type: string}}\n      \
         responses:\n        \"200\":\n          description: ok\n          content:\n            application/json:\n              schema:\n                $ref: \"#/components/schemas/Key\"\n\
         components:\n",
    );
    // Rust code that uses them as fields, and parses them from JSON (a field with a
    // default is not an `Option`).
    let mut lib = fs::read_to_string(copy.join("src/lib.rs")).unwrap();
    lib.push_str(
        "\n#[doc(hidden)]\npub fn kept(m: &types::Machine) -> Option<(&UnknownFields, &UnknownFields, &types::Vec)> {\n    \
         Some((&m.key_info.as_ref()?.extra, &m.field_info.as_ref()?.extra, m.d_info.as_ref()?.v.as_ref()?))\n}\n\
         #[doc(hidden)]\npub fn labels(m: &types::Machine) -> Option<&::std::collections::HashMap<String, String>> {\n    \
         Some(&m.labels.as_ref()?.extra)\n}\n",
    );
    lib.push_str(
        "\n#[doc(hidden)]\npub fn sensor_health_score(json: &str) -> Option<i64> {\n    \
         serde_json::from_str::<types::Machine>(json).ok()?.sensor_health_score\n}\n\
         #[doc(hidden)]\npub fn is_managed(json: &str) -> Option<bool> {\n    \
         Some(serde_json::from_str::<types::Machine>(json).ok()?.is_managed)\n}\n",
    );
    fs::write(copy.join("src/lib.rs"), lib).unwrap();
    // An object written without `additionalProperties` (it keeps unknown fields
    // all the same, and has a `Default` once), a string with a default.
    edit(
        &copy.join("openapi/defender.yaml"),
        "        isAadJoined:\n",
        "        firmware:\n          type: object\n          nullable: true\n          \
         properties:\n            vendor:\n              type: string\n              nullable: true\n        \
         hardware:\n          nullable: true\n          allOf:\n            - type: object\n              \
         properties:\n                vendor:\n                  type: string\n                  nullable: true\n        \
         channel:\n          type: string\n          default: Broad\n        \
         isAadJoined:\n",
    );
    // An object that keeps no unknown fields and declares a default: the
    // generator writes its `Default` out itself.
    edit(
        &copy.join("openapi/defender.yaml"),
        "  schemas:\n",
        "  schemas:\n    Sealed:\n      type: object\n      additionalProperties: false\n      \
         properties:\n        kind:\n          type: string\n          default: Azure\n",
    );
    edit(
        &copy.join("openapi/defender.yaml"),
        "        isAadJoined:\n",
        "        sealed:\n          $ref: \"#/components/schemas/Sealed\"\n        isAadJoined:\n",
    );
    // Shapes that are valid and must stay accepted: a version the YAML reads as
    // a number, `additionalProperties: true` (which keeps unknown fields too), a
    // `not: {enum}` outside an open enumeration, and names alike only to the eye.
    let spec = copy.join("openapi/defender.yaml");
    edit(&spec, "  version: \"1.0\"\n", "  version: 1.0\n");
    edit(
        &spec,
        "          description: The cloud subscription id.\n          type: string\n          \
         nullable: true\n      additionalProperties: {}\n",
        "          description: The cloud subscription id.\n          type: string\n          \
         nullable: true\n      additionalProperties: true\n",
    );
    edit(
        &spec,
        "        isAadJoined:\n",
        "        lastIpaddress:\n          type: string\n          nullable: true\n          \
         not:\n            enum: [\"\"]\n        isAadJoined:\n",
    );
    // `oneOf` a string and an integer, the string first: read by its own
    // deserialiser (see `integer_or_string` in `build.rs`) all the same.
    edit(
        &spec,
        "  schemas:\n",
        "  schemas:\n    Ordinal:\n      oneOf:\n        - title: Name\n          type: string\n        \
         - title: Number\n          type: integer\n          format: int64\n",
    );
    edit(
        &spec,
        "        isAadJoined:\n",
        "        ordinal:\n          $ref: \"#/components/schemas/Ordinal\"\n        isAadJoined:\n",
    );
    // Run against the regenerated types: nothing an answer holds is lost, and a
    // default built in Rust holds what the spec declares.
    fs::write(
        copy.join("examples/regenerated.rs"),
        r##"use defender_endpoint_regenerated_edit::types::Machine;

fn main() {
    let sent = serde_json::json!({
        "id": "m1",
        "channel": "Beta",
        "isManaged": false,
        "firmware": {"vendor": "Dell", "biosDate": "2024-01-01"},
        "hardware": {"vendor": "Dell", "model": "XPS"},
        "vmMetadata": {"vmId": "v", "zone": "eu-1"},
        "labels": {"name": "n", "tier": "gold"},
    });
    let machine: Machine = serde_json::from_value(sent.clone()).unwrap();
    assert_eq!(machine.firmware.as_ref().unwrap().extra["biosDate"], "2024-01-01");
    assert_eq!(machine.vm_metadata.as_ref().unwrap().extra["zone"], "eu-1");
    assert_eq!(serde_json::to_value(&machine).unwrap(), sent);

    assert_eq!(defender_endpoint_regenerated_edit::types::Sealed::default().kind, "Azure");
    let built = Machine { id: "m2".into(), ..Default::default() };
    assert_eq!(built.channel, "Broad");
    assert!(built.is_managed);
    let read: Machine = serde_json::from_str(r#"{"id":"m2"}"#).unwrap();
    assert_eq!(built, read);

    use defender_endpoint_regenerated_edit::types::Ordinal;
    let ordinal = |json: &str| serde_json::from_str::<Machine>(json).map(|m| m.ordinal);
    assert_eq!(ordinal(r#"{"id":"m","ordinal":7}"#).unwrap(), Some(Ordinal::Number(7)));
    assert_eq!(ordinal(r#"{"id":"m","ordinal":"7"}"#).unwrap(), Some(Ordinal::Name("7".into())));
    let refused = ordinal(r#"{"id":"m","ordinal":7.5}"#).unwrap_err().to_string();
    assert!(refused.starts_with("data did not match any variant of untagged enum Ordinal"), "{refused}");
    // An operationId in camel case is called by its generated name, which the
    // path guard knows.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let server = httpmock::MockServer::start_async().await;
        server
            .mock_async(|when, then| {
                when.path("/api/machines/m7");
                then.status(200).json_body(serde_json::json!({"id": "m7"}));
            })
            .await;
        let client = defender_endpoint_regenerated_edit::Client::builder()
            .base_url(server.base_url())
            .credential(defender_endpoint_regenerated_edit::StaticToken::new("t"))
            .build()
            .unwrap();
        let machine = client.raw().get_machine_by_id("m7", None).await.unwrap().into_inner();
        assert_eq!(machine.id, "m7");
    });
    let _built = defender_endpoint_regenerated_edit::types::IsolateRequest {
        comment: "incident 4711".into(),
        isolation_type: Some(defender_endpoint_regenerated_edit::types::IsolateRequestIsolationType::Full),
    };
    println!("regenerated types: ok");
}
"##,
    )
    .unwrap();
    // Answers the reference documents, described on their own besides `4XX`.
    edit(
        &copy.join("openapi/defender.yaml"),
        "        \"5XX\":\n",
        "        \"404\":\n          $ref: \"#/components/responses/NotFound\"\n        \
         \"429\":\n          description: Throttled.\n          content:\n            application/json:\n              \
         schema:\n                $ref: \"#/components/schemas/ErrorEnvelope\"\n        \"5XX\":\n",
    );
    // The same error content spelt with a charset, or with text beside it; and
    // a schema whose title is another's name (the key names a component).
    edit(
        &copy.join("openapi/defender.yaml"),
        "          description: Server error; transient, try again.\n          content:\n            application/json:\n",
        "          description: Server error; transient, try again.\n          content:\n            \
         text/plain:\n              schema:\n                type: string\n            application/json; charset=utf-8:\n",
    );
    edit(
        &copy.join("openapi/defender.yaml"),
        "  schemas:\n",
        "  schemas:\n    MachineSummary:\n      title: Machine\n      type: object\n      properties:\n        \
         name:\n          type: string\n          nullable: true\n",
    );
    // A body the client only sends, as a schema of its own and as a
    // `components/requestBodies` entry: a closed enum is allowed in it, and it
    // keeps no unknown fields (the caller builds it field by field).
    edit(
        &copy.join("openapi/defender.yaml"),
        "components:\n",
        "  /api/machines/{id}/isolate:\n    post:\n      operationId: isolateMachine\n      \
         parameters:\n        - {name: id, in: path, required: true, schema: {type: string}}\n      \
         requestBody:\n        content:\n          application/json:\n            schema:\n              \
         $ref: \"#/components/schemas/IsolateRequest\"\n      \
         responses:\n        \"200\":\n          description: ok\n          content:\n            application/json:\n              \
         schema:\n                $ref: \"#/components/schemas/Machine\"\n  \
         /api/machines/{id}/unisolate:\n    post:\n      operationId: unisolateMachine\n      \
         parameters:\n        - {name: id, in: path, required: true, schema: {type: string}}\n      \
         requestBody:\n        $ref: \"#/components/requestBodies/Unisolate\"\n      \
         responses:\n        \"200\":\n          description: ok\n          content:\n            application/json:\n              \
         schema:\n                $ref: \"#/components/schemas/Machine\"\n\
         components:\n  requestBodies:\n    Unisolate:\n      content:\n        application/json:\n          \
         schema:\n            type: object\n            properties:\n              mode:\n                \
         type: string\n                enum: [Now, Later]\n",
    );
    edit(
        &copy.join("openapi/defender.yaml"),
        "  schemas:\n",
        "  schemas:\n    IsolateRequest:\n      type: object\n      required: [comment]\n      properties:\n        \
         comment:\n          type: string\n        isolationType:\n          type: string\n          \
         enum: [Full, Selective]\n",
    );
    // (A response of `components/responses`, by `$ref`.)
    edit(
        &copy.join("openapi/defender.yaml"),
        "  schemas:\n",
        "  responses:\n    NotFound:\n      description: Not found.\n      content:\n        \
         application/json:\n          schema:\n            $ref: \"#/components/schemas/ErrorEnvelope\"\n  \
         schemas:\n",
    );
    let output = run_example(&copy, "regenerated");
    let _ = fs::remove_dir_all(&copy);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The values of a parameter's closed enumeration are documented, and so
    // are the `oneOf` alternatives without a description of their own.
    assert_eq!(
        stderr
            .matches("missing documentation for a variant")
            .count(),
        0,
        "{stderr}"
    );
    assert!(
        !stderr.contains("Basic,") && !stderr.contains("Full,"),
        "{stderr}"
    );
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).contains("ok"),
        "{stderr}"
    );
}

#[test]
fn a_spec_the_generator_cannot_handle_fails_naming_the_spec() {
    let copy = copy_of_the_crate("broken");
    let spec = copy.join("openapi/defender.yaml");
    let original = fs::read_to_string(&spec).unwrap();
    // The spec with `edits` made to it fails to build, with a message holding `expected`.
    let refused = |edits: &[(&str, &str)], expected: &str| {
        fs::write(&spec, &original).unwrap();
        for (from, to) in edits {
            edit(&spec, from, to);
        }
        let output = build(&copy);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{edits:?}");
        assert!(stderr.contains(expected), "{edits:?}: {stderr}");
    };
    for (from, to, expected) in [
        (
            "  schemas:\n",
            "  schemas:\n    Broken:\n      type: string\n      not:\n        $ref: \"#/components/schemas/Machine\"\n",
            "openapi/defender.yaml: the generator cannot handle this document",
        ),
        // A key given twice: the second would silently replace the first.
        (
            "        isAadJoined:\n",
            "        osBuild:\n          type: string\n        isAadJoined:\n",
            "openapi/defender.yaml: not valid YAML: ",
        ),
        // `extra` is the map of unknown fields, however the name is spelt.
        (
            "        isAadJoined:\n",
            "        extra:\n          type: string\n        isAadJoined:\n",
            "openapi/defender.yaml: components/schemas/Machine/properties/extra",
        ),
        (
            "        isAadJoined:\n",
            "        firmware:\n          type: object\n          properties:\n            \
             Extra_:\n              type: string\n        isAadJoined:\n",
            "components/schemas/Machine/properties/firmware/properties/Extra_: the name `extra`",
        ),
        // Two names that would be one Rust field.
        (
            "        isAadJoined:\n",
            "        self:\n          type: string\n        Self:\n          type: string\n        isAadJoined:\n",
            "components/schemas/Machine/properties: `self` and `Self` would be the same Rust field",
        ),
        (
            "        isAadJoined:\n",
            "        \"1\":\n          type: string\n        x1:\n          type: string\n        isAadJoined:\n",
            "components/schemas/Machine/properties: `1` and `x1` would be the same Rust field",
        ),
        // A closed enumeration would fail a whole answer over one new value, also
        // when it is an open one's `NKnown` used on its own.
        (
            "        isAadJoined:\n",
            "        health:\n          allOf:\n            - $ref: \"#/components/schemas/HealthStatusKnown\"\n        isAadJoined:\n",
            "components/schemas/Machine/properties/health/allOf/0: `HealthStatusKnown` is closed",
        ),
        (
            "        - title: HealthStatusOther\n          type: string\n",
            "        - title: HealthStatusOther\n          type: integer\n",
            "components/schemas/HealthStatus/oneOf/1: `HealthStatusOther` holds the values",
        ),
        (
            "        isAadJoined:\n",
            "        osArch:\n          type: string\n          nullable: true\n          \
             enum: [\"32-bit\", \"64-bit\", null]\n        isAadJoined:\n",
            "components/schemas/Machine/properties/osArch: a closed enumeration",
        ),
        // An open enumeration's two lists differ: which values, is said.
        (
            "            enum: [Active, Inactive, ImpairedCommunication, NoSensorData, NoSensorDataImpairedCommunication, Unknown]\n",
            "            enum: [Active, Inactive, ImpairedCommunication, NoSensorData, NoSensorDataImpairedCommunication, Unknown, Decommissioned]\n",
            "only in `HealthStatusKnown`: [], only in `HealthStatusOther`: [`Decommissioned`]",
        ),
        // A property named `parameters` is no parameter; one named `not`, no `not`.
        (
            "        isAadJoined:\n",
            "        parameters:\n          type: object\n          nullable: true\n          properties:\n            \
             mode:\n              type: string\n              nullable: true\n              enum: [Active, Passive]\n        \
             isAadJoined:\n",
            "components/schemas/Machine/properties/parameters/properties/mode: a closed enumeration ([Active, Passive])",
        ),
        (
            "        isAadJoined:\n",
            "        not:\n          type: string\n          nullable: true\n          enum: [a, b]\n        isAadJoined:\n",
            "components/schemas/Machine/properties/not: a closed enumeration",
        ),
        (
            "        isAadJoined:\n",
            "        managementAddress:\n          type: string\n          nullable: true\n          format: ip\n        isAadJoined:\n",
            "components/schemas/Machine/properties/managementAddress: `format: ip`",
        ),
        // An address format: one of the other kind would fail a whole answer.
        (
            "        isAadJoined:\n",
            "        managementIp:\n          type: string\n          nullable: true\n          format: ipv4\n        isAadJoined:\n",
            "components/schemas/Machine/properties/managementIp: `format: ipv4`",
        ),
        // Keywords that need crates this package does not use, wherever they are.
        (
            "            minLength: 1\n",
            "            minLength: 1\n            format: uuid\n",
            "paths//api/users/{id}/machines/get/parameters/0/schema: `format: uuid`",
        ),
        (
            "        isAadJoined:\n",
            "        deviceGuid:\n          type: string\n          format: uuid\n        isAadJoined:\n",
            "components/schemas/Machine/properties/deviceGuid: `format: uuid`",
        ),
        // An object written in place whose generated name is a schema's.
        (
            "        isAadJoined:\n",
            "        collection:\n          type: object\n          nullable: true\n          properties:\n            \
             collectedAt:\n              type: string\n              nullable: true\n        isAadJoined:\n",
            "components/schemas/Machine/properties/collection: the generator would name this type `MachineCollection`",
        ),
        // What the client's own code relies on.
        (
            "      operationId: get_user_machines\n",
            "      operationId: list_user_machines\n",
            "the client (src/client.rs) calls this operation as `get_user_machines`",
        ),
        (
            "            minLength: 1\n            maxLength: 256\n",
            "",
            "the client (src/client.rs) calls this operation as `get_user_machines`",
        ),
        (
            "  schemas:\n",
            "  schemas:\n    Box:\n      type: object\n      additionalProperties: {}\n",
            "components/schemas/Box: the derived code uses `Box`",
        ),
        // A parameter inside a path segment, which the path guard cannot match.
        (
            "components:\n",
            "  /api/machines/findbyip(ip='{ip}'):\n    get:\n      operationId: findByIp\n      \
             parameters:\n        - {name: ip, in: path, required: true, schema: {type: string}}\n      \
             responses:\n        \"200\":\n          description: ok\n          content:\n            \
             application/json:\n              schema:\n                $ref: \"#/components/schemas/Machine\"\n\
             components:\n",
            "a path parameter must be a whole segment",
        ),
        // A `oneOf` of objects that keep unknown fields: the first takes all.
        (
            "        isAadJoined:\n",
            "        evidence:\n          nullable: true\n          oneOf:\n            \
             - $ref: \"#/components/schemas/IpAddress\"\n            - $ref: \"#/components/schemas/VmMetadata\"\n        \
             isAadJoined:\n",
            "components/schemas/Machine/properties/evidence: a `oneOf` of 2 objects that keep unknown fields",
        ),
        // A query array asked for joined, which the client sends exploded.
        (
            "            maxLength: 256\n",
            "            maxLength: 256\n        - name: kinds\n          in: query\n          required: false\n          \
             style: form\n          explode: false\n          schema:\n            type: array\n            \
             items:\n              type: string\n",
            "`explode: false` is not what the generated client sends",
        ),
        // A 404 without content beside a 4XX with it.
        (
            "        \"4XX\":\n",
            "        \"404\":\n          description: Not found.\n        \"4XX\":\n",
            "paths//api/users/{id}/machines/get/responses: the error answers 404 and 4XX hold different content (no content; JSON",
        ),
        // … or a 5XX answered as text.
        (
            "          description: Server error; transient, try again.\n          content:\n            application/json:\n",
            "          description: Server error; transient, try again.\n          content:\n            text/plain:\n",
            "the error answers 4XX and 5XX hold different content",
        ),
        // Operations that would be one method, or one the generated client has.
        (
            "components:\n",
            "  /api/machines:\n    get:\n      operationId: getUserMachines\n      \
             responses:\n        \"200\":\n          description: ok\n          content:\n            \
             application/json:\n              schema:\n                $ref: \"#/components/schemas/Machine\"\n\
             components:\n",
            "operationId `getUserMachines` and `get_user_machines` would both be the method `get_user_machines`",
        ),
        (
            "components:\n",
            "  /api/machines:\n    get:\n      operationId: new\n      \
             responses:\n        \"200\":\n          description: ok\n          content:\n            \
             application/json:\n              schema:\n                $ref: \"#/components/schemas/Machine\"\n\
             components:\n",
            "operationId `new` would be the method `new`, which the generated client already has",
        ),
    ] {
        refused(&[(from, to)], expected);
    }
    // A reference to no schema, and a type that is none, named where they are.
    refused(
        &[(
            "            - $ref: \"#/components/schemas/VmMetadata\"\n",
            "            - $ref: \"#/components/schemas/VmMetaData\"\n",
        )],
        "components/schemas/Machine/properties/vmMetadata/allOf/0: `$ref: #/components/schemas/VmMetaData` names no schema",
    );
    refused(
        &[(
            "        isAadJoined:\n",
            "        sensorHealthState:\n          description: New.\n          type: strin\n        isAadJoined:\n",
        )],
        "components/schemas/Machine/properties/sensorHealthState: `type: strin` is not an OpenAPI 3.0 type",
    );
    // Two spellings of one value, in both lists of the open enumeration.
    refused(
        &[
            (
                "            enum: [onboarded, CanBeOnboarded, Unsupported, InsufficientInfo]\n    \
                 OnboardingStatusKnown:\n",
                "            enum: [onboarded, Onboarded, CanBeOnboarded, Unsupported, InsufficientInfo]\n    \
                 OnboardingStatusKnown:\n",
            ),
            (
                "      type: string\n      enum: [onboarded, CanBeOnboarded, Unsupported, InsufficientInfo]\n    \
                 ErrorEnvelope:\n",
                "      type: string\n      enum: [onboarded, Onboarded, CanBeOnboarded, Unsupported, InsufficientInfo]\n    \
                 ErrorEnvelope:\n",
            ),
        ],
        "components/schemas/OnboardingStatusKnown: `onboarded` and `Onboarded` differ only in case",
    );
    // Types written in place that the generator would name as a schema is named
    // (given here): a map's values, a title, a parameter's values.
    for (from, to, expected) in [
        (
            "        isAadJoined:\n",
            "        labels:\n          type: object\n          nullable: true\n          additionalProperties:\n            \
             type: object\n            properties:\n              cpu:\n                type: string\n                nullable: true\n        \
             isAadJoined:\n",
            "components/schemas/Machine/properties/labels/additionalProperties: the generator would name this type `MachineLabelsValue`",
        ),
        (
            "        isAadJoined:\n",
            "        vmInfo:\n          title: vm metadata\n          type: object\n          nullable: true\n          \
             properties:\n            x:\n              type: string\n              nullable: true\n        isAadJoined:\n",
            "components/schemas/Machine/properties/vmInfo: the generator would name this type `VmMetadata`",
        ),
        (
            "        isAadJoined:\n",
            "        tagline:\n          type: string\n          nullable: true\n          maxLength: 64\n        isAadJoined:\n",
            "components/schemas/Machine/properties/tagline: the generator would name this type `MachineTagline`",
        ),
        (
            "        isAadJoined:\n",
            "        holder:\n          title: IpAddress\n          type: object\n          nullable: true\n          \
             properties:\n            x:\n              type: string\n              nullable: true\n        isAadJoined:\n",
            "components/schemas/Machine/properties/holder: the generator would name this type `IpAddress`",
        ),
        (
            "            maxLength: 256\n",
            "            maxLength: 256\n        - name: view\n          in: query\n          required: false\n          \
             schema:\n            type: string\n            enum: [basic, full]\n",
            "the generator would name a type written in place in this operation `GetUserMachinesView`",
        ),
    ] {
        let schemas = (
            "  schemas:\n",
            "  schemas:\n    MachineLabelsValue:\n      type: object\n      additionalProperties: {}\n    \
             GetUserMachinesView:\n      type: object\n      additionalProperties: {}\n    \
             MachineTagline:\n      type: object\n      additionalProperties: {}\n",
        );
        refused(&[schemas, (from, to)], expected);
    }
    // A record that can no longer have a `Default` (a required date-time that
    // cannot be null) builds, and says what other crates lose.
    fs::write(&spec, &original).unwrap();
    edit(
        &spec,
        "      required:\n        - id\n      properties:\n",
        "      required:\n        - id\n        - firstSeen\n      properties:\n",
    );
    edit(
        &spec,
        "          format: date-time\n          nullable: true\n        lastSeen:\n",
        "          format: date-time\n        lastSeen:\n",
    );
    let output = build(&copy);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("components/schemas/Machine has no `Default` any more"),
        "{stderr}"
    );
    // A property made required that stays nullable: it may be `null` but must
    // be there, and the record keeps its `Default`, without a warning.
    fs::write(&spec, &original).unwrap();
    edit(
        &spec,
        "      required:\n        - id\n      properties:\n",
        "      required:\n        - id\n        - computerDnsName\n      properties:\n",
    );
    fs::write(
        copy.join("examples/required.rs"),
        r##"use defender_endpoint_regenerated_broken::types::Machine;

fn main() {
    let built = Machine { id: "m".into(), ..Default::default() };
    assert_eq!(built.computer_dns_name, None);
    let read = |json: &str| serde_json::from_str::<Machine>(json);
    let missing = read(r#"{"id":"m"}"#).unwrap_err().to_string();
    assert!(missing.contains("missing field `computerDnsName`"), "{missing}");
    let null = read(r#"{"id":"m","computerDnsName":null,"extra":1}"#).unwrap();
    assert_eq!(null.computer_dns_name, None);
    assert_eq!(null.extra["extra"], 1);
    let named = read(r#"{"id":"m","computerDnsName":"pc"}"#).unwrap();
    assert_eq!(named.computer_dns_name.as_deref(), Some("pc"));
    println!("required: ok");
}
"##,
    )
    .unwrap();
    let output = run_example(&copy, "required");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("required: ok"));
    // A property without a description builds, and the warning names it in the
    // spec rather than in generated code; so does a `$ref` without one, and one
    // with its description beside it (which is used). Neither leaves rustc a
    // field without rustdoc, and both are of the type referred to, with what
    // else is beside the `$ref` (`vmInfo`, required, stays nullable).
    fs::write(&spec, &original).unwrap();
    edit(
        &spec,
        "      required:\n        - id\n      properties:\n",
        "      required:\n        - id\n        - vmInfo\n      properties:\n",
    );
    edit(
        &spec,
        "        isAadJoined:\n",
        "        sensorHealthState:\n          type: string\n          nullable: true\n        \
         vmInfo:\n          description: Hidden by the reference.\n          nullable: true\n          \
         $ref: \"#/components/schemas/VmMetadata\"\n        \
         primaryIp:\n          $ref: \"#/components/schemas/IpAddress\"\n        \
         properties:\n          description: A property of that name.\n          type: array\n          \
         nullable: true\n          items:\n            type: string\n        isAadJoined:\n",
    );
    let output = build(&copy);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr
            .contains("components/schemas/Machine/properties/sensorHealthState has no description"),
        "{stderr}"
    );
    assert!(
        stderr.contains("components/schemas/Machine/properties/vmInfo has its description beside a `$ref`, where OpenAPI 3.0 tools do not read it: write it as `allOf"),
        "{stderr}"
    );
    assert!(
        stderr.contains("components/schemas/Machine/properties/primaryIp has no description, which is the rustdoc of its Rust item: write it as `allOf"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("has no description").count(),
        2,
        "only those two: {stderr}"
    );
    assert_eq!(
        stderr.matches("missing documentation").count(),
        0,
        "no field is left without rustdoc: {stderr}"
    );
    fs::write(
        copy.join("examples/referred.rs"),
        r##"use defender_endpoint_regenerated_broken::types::{IpAddress, Machine, VmMetadata};

fn main() {
    let read = serde_json::from_str::<Machine>(
        r#"{"id":"m","vmInfo":{"vmId":"v"},"primaryIp":{"ipAddress":"10.0.0.1"}}"#,
    )
    .unwrap();
    let vm: Option<VmMetadata> = read.vm_info;
    let ip: Option<IpAddress> = read.primary_ip;
    assert_eq!(vm.unwrap().vm_id.as_deref(), Some("v"));
    assert_eq!(ip.unwrap().ip_address.as_deref(), Some("10.0.0.1"));
    let null = serde_json::from_str::<Machine>(r#"{"id":"m","vmInfo":null}"#).unwrap();
    assert_eq!(null.vm_info, None);
    let missing = serde_json::from_str::<Machine>(r#"{"id":"m"}"#).unwrap_err().to_string();
    assert!(missing.contains("missing field `vmInfo`"), "{missing}");
    println!("referred: ok");
}
"##,
    )
    .unwrap();
    let output = run_example(&copy, "referred");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("referred: ok"),
        "{stderr}"
    );
    let _ = fs::remove_dir_all(&copy);
}

/// What `cargo package` ships builds on its own, the example of the README's first
/// command included: every file the sources include (the spec, the demo's seed
/// answer) is in the package.
#[test]
fn the_package_builds_with_its_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let listed = Command::new(env!("CARGO"))
        .args(["package", "--list", "--offline", "--allow-dirty"])
        .current_dir(root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let files: Vec<&str> = stdout.lines().collect();
    for needed in [
        "build.rs",
        "openapi/defender.yaml",
        "examples/user_machines.rs",
        "tests/fixtures/seed-user-machines.json",
    ] {
        assert!(
            files.contains(&needed),
            "{needed} is not packaged: {files:?}"
        );
    }

    // Those files alone, under a name of their own (see `copy_of_the_crate`).
    let copy =
        std::env::temp_dir().join(format!("defender-endpoint-package-{}", std::process::id()));
    let _ = fs::remove_dir_all(&copy);
    for file in files {
        if file == "Cargo.toml.orig" || file == ".cargo_vcs_info.json" {
            continue;
        }
        let target = copy.join(file);
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::copy(root.join(file), &target).unwrap();
    }
    let manifest = copy.join("Cargo.toml");
    edit(
        &manifest,
        "name = \"defender-endpoint\"",
        "name = \"defender-endpoint-packaged\"",
    );
    edit(
        &manifest,
        "name = \"defender_endpoint\"",
        "name = \"defender_endpoint_packaged\"",
    );
    // The example too, so that its binary does not replace the one other tests run;
    // it still reaches the library as `defender_endpoint`.
    let example = copy.join("examples/user_machines_packaged.rs");
    fs::rename(copy.join("examples/user_machines.rs"), &example).unwrap();
    edit(
        &example,
        "\n\n#[path",
        "\n\nextern crate defender_endpoint_packaged as defender_endpoint;\n\n#[path",
    );
    // The bench is not packaged (`cargo package` drops its target the same way).
    edit(
        &manifest,
        "[[bench]]\nname = \"overhead\"\nharness = false\n",
        "",
    );
    let output = build_with(&copy, &["--lib", "--example", "user_machines_packaged"]);
    let _ = fs::remove_dir_all(&copy);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
