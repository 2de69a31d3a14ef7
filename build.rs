//! Generates the Defender API client from `openapi/defender.yaml`.
//!
//! The generated code is written to `$OUT_DIR/codegen.rs` and included by
//! `src/generated.rs`. Editing the spec and running `cargo build` regenerates it.

use std::{env, fs, path::Path, process::ExitCode};

const SPEC: &str = "openapi/defender.yaml";

fn main() -> ExitCode {
    println!("cargo:rerun-if-changed={SPEC}");
    println!("cargo:rerun-if-changed=build.rs");
    match generate() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // Cargo shows this line prominently; the process exit code fails the build.
            eprintln!("error: {SPEC}: {message}");
            println!("cargo:warning={SPEC}: {message}");
            ExitCode::FAILURE
        }
    }
}

fn generate() -> Result<(), String> {
    let text = fs::read_to_string(SPEC).map_err(|e| format!("cannot read the spec: {e}"))?;
    // Read as plain YAML first: that refuses a key given twice in one mapping (a
    // second `osBuild:` would otherwise silently replace the first).
    let mut document = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text)
        .map_err(|e| format!("not valid YAML: {e}"))?;
    let open = open_enums(&document)?;
    check_what_the_crate_relies_on(&document)?;
    check_and_complete_schemas(&mut document, &open)?;
    fill_missing_descriptions(&mut document);
    // Read back from text, as the document was: a plain scalar such as
    // `version: 1.0` is then a string where the document model wants one.
    let completed = serde_yaml_ng::to_string(&document)
        .map_err(|e| format!("cannot write the completed document: {e}"))?;
    let spec: openapiv3::OpenAPI = serde_yaml_ng::from_str(&completed)
        .map_err(|e| format!("not a valid OpenAPI 3.0 document: {e}"))?;

    let mut settings = progenitor::GenerationSettings::default();
    settings
        .with_interface(progenitor::InterfaceStyle::Positional)
        .with_inner_type(syn::parse_quote!(crate::hooks::Inner))
        .with_hooks(progenitor::HooksMode::Expected)
        .with_derive("PartialEq")
        .with_derive("schemars::JsonSchema");

    // The generator panics on some schemas it does not support; report those like errors.
    std::panic::set_hook(Box::new(|_| {}));
    let generated = std::panic::catch_unwind(|| {
        progenitor::Generator::new(&settings)
            .generate_tokens(&spec)
            .map_err(|e| format!("code generation failed: {e}"))
    });
    let _ = std::panic::take_hook();
    let tokens = generated.map_err(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown cause");
        format!("the generator cannot handle this document: {what}")
    })??;
    let mut file: syn::File =
        syn::parse2(tokens).map_err(|e| format!("generated code does not parse: {e}"))?;
    check_generated_for_the_client(&file)?;
    drop_api_version_header(&mut file);
    read_responses_without_copying_headers(&mut file);
    make_requests_on_the_parsed_base_url(&mut file)?;
    encode_paths_with_the_user_rule(&mut file)?;
    document_the_rest(&mut file, &spec, &open);
    direct_deserialize(&mut file, &open)?;
    known_values_are_non_exhaustive(&mut file, &open);
    derive_default(&mut file)?;
    let mut code = prettyplease::unparse(&file);
    code.push_str(&open_enum_impls(&open));

    let out_dir = env::var("OUT_DIR").map_err(|e| e.to_string())?;
    write(&Path::new(&out_dir).join("codegen.rs"), &code)?;
    write(
        &Path::new(&out_dir).join("operations.rs"),
        &operations(&spec, &generated_operation_ids(&file))?,
    )
}

/// Checks every schema of the spec and completes it, before the generator sees it:
///
/// - An object of what the API answers that does not say otherwise keeps the
///   fields the spec does not describe (one only the client sends is the
///   caller's to fill and keeps none): one that says nothing, or `true`, gets
///   `additionalProperties: {}`,
///   which the generator turns into the `extra` map, so that no field the API
///   sends is lost (a member of an `allOf` is left to the generator's merge, but
///   for one written in place that is the `allOf`'s only member). An
///   object that must not keep them says `additionalProperties: false`.
/// - No two properties of an object would be the same Rust field, and an object
///   that keeps unknown fields has no property whose Rust name would be `extra`.
/// - Enumerations are open: an `enum` is only allowed as the `NKnown` of an
///   open enumeration `N` (`oneOf: [$ref NKnown, {title: NOther, type: string,
///   not: {enum: …}}]`), in a `not`, or in a parameter or a request body (which
///   the client only sends); `NKnown` is referred to from `N` only. A closed one would fail a
///   whole answer over one value Defender adds.
/// - No `format: uuid` and no `pattern`: the generator would use crates this
///   package does not depend on.
fn check_and_complete_schemas(
    document: &mut serde_yaml_ng::Value,
    open: &[(String, Vec<String>)],
) -> Result<(), String> {
    use serde_yaml_ng::Value;
    // Where the schemas of parameters start (what the client only sends): an
    // `enum` is allowed below them.
    let parameter_roots = std::cell::RefCell::new(Vec::<String>::new());
    // The component schemas that are part of what the API answers: an enum is
    // refused and unknown fields kept in those only (and in answers written in
    // place); a schema only ever sent is the client's to fill.
    let answered = answered_schemas(document);
    let sent_only = |at: &str| {
        parameter_roots
            .borrow()
            .iter()
            .any(|root| at == root || at.starts_with(&format!("{root}/")))
            || at
                .strip_prefix("components/schemas/")
                .map(|rest| rest.split('/').next().unwrap_or(rest))
                .is_some_and(|name| !answered.contains(name))
    };
    let schema_names: Vec<String> = document
        .get("components")
        .and_then(|c| c.get("schemas"))
        .and_then(Value::as_mapping)
        .map(|m| m.keys().map(yaml_key).collect())
        .unwrap_or_default();
    // Whether a schema is an object that keeps unknown fields (does not say
    // `additionalProperties: false`); one given by `$ref` is looked up.
    let components_schemas = document
        .get("components")
        .and_then(|c| c.get("schemas"))
        .cloned();
    let keeps_unknown_object = |schema: &Value| {
        let schema = match schema.get("$ref").and_then(Value::as_str) {
            Some(target) => target
                .strip_prefix("#/components/schemas/")
                .and_then(|name| components_schemas.as_ref()?.get(name)),
            None => Some(schema),
        };
        schema.and_then(Value::as_mapping).is_some_and(|s| {
            let object = s.get("type").and_then(Value::as_str) == Some("object")
                || (s.get("type").is_none() && s.contains_key("properties"));
            object && s.get("additionalProperties") != Some(&Value::Bool(false))
        })
    };
    // What each response of `components/responses` holds (see `response_kind`).
    let response_kinds: std::collections::HashMap<String, String> = document
        .get("components")
        .and_then(|c| c.get("responses"))
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                // (One that is a `$ref` itself is not followed: left unchecked.)
                .filter(|(_, response)| response.get("$ref").is_none())
                .map(|(name, response)| {
                    (
                        format!("#/components/responses/{}", yaml_key(name)),
                        response_kind(response),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut check = |schema: &mut serde_yaml_ng::Mapping, at: &str| -> Result<(), String> {
        let text = |schema: &serde_yaml_ng::Mapping, key: &str| {
            schema.get(key).and_then(Value::as_str).map(str::to_owned)
        };
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            // `NKnown` is closed: it is only ever the first alternative of `N`.
            let closed = open.iter().find(|(name, _)| {
                reference == format!("#/components/schemas/{name}Known")
                    && at != format!("components/schemas/{name}/oneOf/0")
            });
            if let Some((name, _)) = closed {
                return Err(format!(
                    "{at}: `{name}Known` is closed, and fails a whole answer over one value \
                     Defender adds; refer to `{name}` instead"
                ));
            }
            let named = reference
                .strip_prefix("#/components/schemas/")
                .is_some_and(|name| schema_names.iter().any(|n| n == name));
            if !named {
                return Err(format!(
                    "{at}: `$ref: {reference}` names no schema of components/schemas \
                     (they are: {})",
                    schema_names.join(", ")
                ));
            }
            return Ok(());
        }
        if let Some(kind) = schema.get("type") {
            const TYPES: [&str; 6] = ["string", "integer", "number", "boolean", "array", "object"];
            if !kind.as_str().is_some_and(|kind| TYPES.contains(&kind)) {
                let kind = serde_yaml_ng::to_string(kind).unwrap_or_default();
                return Err(format!(
                    "{at}: `type: {}` is not an OpenAPI 3.0 type (one of {})",
                    kind.trim(),
                    TYPES.join(", ")
                ));
            }
        }
        let is_object = |schema: &serde_yaml_ng::Mapping| {
            text(schema, "type").as_deref() == Some("object")
                || (schema.get("type").is_none() && schema.contains_key("properties"))
        };
        // An `allOf` of one object written in place (`nullable: true, allOf:
        // [{type: object, …}]`) is not merged: the generator takes the member as
        // the type, which keeps unknown fields only if the member says so.
        if let Some(Value::Sequence(members)) = schema.get_mut("allOf") {
            if let [Value::Mapping(member)] = &mut members[..] {
                let says = member.get("additionalProperties");
                if is_object(member)
                    && !member.contains_key("$ref")
                    && matches!(says, None | Some(Value::Bool(true)))
                {
                    member.insert(
                        "additionalProperties".into(),
                        Value::Mapping(Default::default()),
                    );
                }
            }
        }
        let is_object = is_object(schema);
        // An object written in place gets a name of the generator's making; one
        // that is a schema's name already would be that schema's type instead.
        // (A component schema is named by its key, whatever its title.)
        let in_place = at
            .strip_prefix("components/schemas/")
            .is_none_or(|rest| rest.contains('/'));
        if in_place && names_a_type(schema) {
            let clash = match text(schema, "title") {
                Some(title) => Some(pascal_name(&title)),
                None => inline_type_name(at),
            }
            .filter(|name| schema_names.contains(name));
            if let Some(name) = clash {
                return Err(format!(
                    "{at}: the generator would name this type `{name}`, which is the name of \
                     the schema `{name}`, and take one for the other; give it a `title` of \
                     its own, or move it to `components/schemas` under a name of its own"
                ));
            }
        }
        // Not a member of `allOf`: the generator merges those, and gives the
        // merged object its own unknown fields (one alone is seen to above).
        let in_all_of = at
            .rsplit_once('/')
            .is_some_and(|(parent, _)| parent.ends_with("/allOf"));
        let says = schema.get("additionalProperties");
        if is_object
            && !in_all_of
            && !sent_only(at)
            && matches!(says, None | Some(Value::Bool(true)))
        {
            // `true` means the same as `{}`, but the generator gives it no map.
            schema.insert(
                "additionalProperties".into(),
                Value::Mapping(Default::default()),
            );
        }
        if let Some(Value::Mapping(properties)) = schema.get("properties") {
            let mut seen = std::collections::HashMap::new();
            for name in properties.keys().filter_map(Value::as_str) {
                if let Some(first) = seen.insert(rust_field_name(name), name) {
                    return Err(format!(
                        "{at}/properties: `{first}` and `{name}` would be the same Rust field; \
                         rename one"
                    ));
                }
            }
        }
        let keeps_unknown =
            is_object && schema.get("additionalProperties") != Some(&Value::Bool(false));
        if let (true, Some(Value::Mapping(properties))) = (keeps_unknown, schema.get("properties"))
        {
            let taken = properties
                .keys()
                .filter_map(Value::as_str)
                .find(|name| rust_field_name(name) == "extra");
            if let Some(name) = taken {
                return Err(format!(
                    "{at}/properties/{name}: the name `extra` is taken by the map that keeps \
                     unknown fields; this property needs another name"
                ));
            }
        }
        if text(schema, "format").as_deref() == Some("uuid") {
            return Err(format!(
                "{at}: `format: uuid` needs the uuid crate, which this package does not use; \
                 leave the format out (the value is then a string)"
            ));
        }
        if let Some(format @ ("ip" | "ipv4" | "ipv6")) = text(schema, "format").as_deref() {
            return Err(format!(
                "{at}: `format: {format}` makes the value a `std::net` address, and one \
                 address of the other kind (or an empty string) would fail a whole answer; \
                 leave the format out (the value is then a string)"
            ));
        }
        if schema.contains_key("pattern") {
            return Err(format!(
                "{at}: `pattern` needs the regress crate, which this package does not use; \
                 leave it out"
            ));
        }
        // An untagged `oneOf` of objects that keep unknown fields reads every
        // answer as its first alternative (which takes any object).
        if let Some(Value::Sequence(members)) = schema.get("oneOf") {
            let objects = members.iter().filter(|m| keeps_unknown_object(m)).count();
            if objects >= 2 && !sent_only(at) {
                return Err(format!(
                    "{at}: a `oneOf` of {objects} objects that keep unknown fields reads every \
                     answer as its first alternative, which takes any object; describe one \
                     object with the fields of all (each nullable), or give the alternatives \
                     `additionalProperties: false` so that each takes only its own fields"
                ));
            }
        }
        if let Some(values) = schema.get("enum") {
            // Allowed: an open enumeration's `NKnown`, a `not` (which refuses values,
            // and closes no set), and what the client only sends (parameters,
            // request bodies, and schemas no answer holds).
            let allowed = open
                .iter()
                .any(|(name, _)| at == format!("components/schemas/{name}Known"))
                || (at.ends_with("/not") && !at.ends_with("/properties/not"))
                || sent_only(at);
            if !allowed {
                let advice = if text(schema, "type").as_deref() == Some("string") {
                    "make it open, as `HealthStatus` is (see the README)"
                } else {
                    "describe the values in its `description` instead"
                };
                let values = match values.as_sequence() {
                    Some(list) => list
                        .iter()
                        .map(|v| match v.as_str() {
                            Some(text) => text.to_owned(),
                            None => serde_yaml_ng::to_string(v)
                                .map(|v| v.trim().to_owned())
                                .unwrap_or_default(),
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                    None => serde_yaml_ng::to_string(values)
                        .map(|v| v.trim().replace('\n', " "))
                        .unwrap_or_default(),
                };
                let values = format!("[{values}]");
                return Err(format!(
                    "{at}: a closed enumeration ({values}) fails a whole answer over one \
                     value Defender adds; {advice}"
                ));
            }
        }
        Ok(())
    };
    if let Some(Value::Mapping(components)) = document.get_mut("components") {
        for (kind, entries) in components.iter_mut() {
            let kind = yaml_key(kind);
            let Value::Mapping(entries) = entries else {
                continue;
            };
            for (name, entry) in entries.iter_mut() {
                let at = format!("components/{kind}/{}", yaml_key(name));
                match kind.as_str() {
                    "schemas" => each_schema(entry, &at, &mut check)?,
                    "responses" => each_media_schema(entry, &at, &mut check)?,
                    "requestBodies" => {
                        parameter_roots.borrow_mut().push(at.clone());
                        each_media_schema(entry, &at, &mut check)?;
                    }
                    "parameters" | "headers" => {
                        if kind == "parameters" {
                            check_parameter(entry, &at)?;
                            parameter_roots.borrow_mut().push(at.clone());
                        }
                        if let Some(schema) = entry.get_mut("schema") {
                            each_schema(schema, &format!("{at}/schema"), &mut check)?;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    if let Some(Value::Mapping(paths)) = document.get_mut("paths") {
        for (path, item) in paths.iter_mut() {
            let Value::Mapping(item) = item else { continue };
            for (key, entry) in item.iter_mut() {
                let at = format!("paths/{}/{}", yaml_key(path), yaml_key(key));
                if yaml_key(key) == "parameters" {
                    parameter_roots.borrow_mut().push(at.clone());
                    each_parameter_schema(entry, &at, &mut check)?;
                    continue;
                }
                let Value::Mapping(operation) = entry else {
                    continue;
                };
                // The types the generator names after the operation, for what is
                // written in place in it, must not be a schema's names.
                if let Some(id) = operation.get("operationId").and_then(Value::as_str) {
                    let op = pascal_name(&method_name(id));
                    let inline = |schema: Option<&Value>| {
                        schema
                            .and_then(Value::as_mapping)
                            .is_some_and(|s| names_a_type(s) && !s.contains_key("title"))
                    };
                    let media_schemas = |holder: Option<&Value>| -> Vec<Value> {
                        holder
                            .and_then(|h| h.get("content"))
                            .and_then(Value::as_mapping)
                            .into_iter()
                            .flat_map(|c| c.values())
                            .filter_map(|m| m.get("schema").cloned())
                            .collect()
                    };
                    let mut named: Vec<(String, bool)> = Vec::new();
                    for schema in media_schemas(operation.get("requestBody")) {
                        named.push((format!("{op}Body"), inline(Some(&schema))));
                    }
                    if let Some(Value::Mapping(responses)) = operation.get("responses") {
                        for response in responses.values() {
                            for schema in media_schemas(Some(response)) {
                                named.push((format!("{op}Response"), inline(Some(&schema))));
                            }
                        }
                    }
                    for parameter in operation
                        .get("parameters")
                        .and_then(Value::as_sequence)
                        .into_iter()
                        .flatten()
                    {
                        if let Some(name) = parameter.get("name").and_then(Value::as_str) {
                            let name = format!("{op}{}", pascal_name(name));
                            named.push((name, inline(parameter.get("schema"))));
                        }
                    }
                    if let Some((name, _)) = named
                        .iter()
                        .find(|(name, inline)| *inline && schema_names.contains(name))
                    {
                        return Err(format!(
                            "{at}: the generator would name a type written in place in this \
                             operation `{name}`, which is the name of the schema `{name}`, \
                             and take one for the other; rename the schema, or refer to it"
                        ));
                    }
                }
                if let Some(parameters) = operation.get_mut("parameters") {
                    let root = format!("{at}/parameters");
                    parameter_roots.borrow_mut().push(root.clone());
                    each_parameter_schema(parameters, &root, &mut check)?;
                }
                if let Some(body) = operation.get_mut("requestBody") {
                    // What the client sends: an `enum` is allowed in it too.
                    let root = format!("{at}/requestBody");
                    parameter_roots.borrow_mut().push(root.clone());
                    each_media_schema(body, &root, &mut check)?;
                }
                if let Some(Value::Mapping(responses)) = operation.get_mut("responses") {
                    // The generator takes one type for the error answers (4XX and
                    // 5XX): answers of different kinds do not mix (it would stop on
                    // an assertion of its own). A response given by `$ref` is the one
                    // it names.
                    let mut first: Option<(String, String)> = None;
                    for (status, response) in responses.iter() {
                        let status = yaml_key(status);
                        if !status.starts_with(['4', '5']) {
                            continue;
                        }
                        let kind = match response.get("$ref").and_then(Value::as_str) {
                            Some(reference) => match response_kinds.get(reference) {
                                Some(kind) => kind.clone(),
                                None => continue,
                            },
                            None => response_kind(response),
                        };
                        match &first {
                            None => first = Some((status, kind)),
                            Some((other, other_kind)) if *other_kind != kind => {
                                return Err(format!(
                                    "{at}/responses: the error answers {other} and {status} hold \
                                     different content ({other_kind}; {kind}), which the \
                                     generator cannot give one type; give them the same \
                                     content, or leave out one that the other covers"
                                ));
                            }
                            Some(_) => {}
                        }
                    }
                    for (status, response) in responses.iter_mut() {
                        let at = format!("{at}/responses/{}", yaml_key(status));
                        each_media_schema(response, &at, &mut check)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// [`each_schema`] on the schema of each media type of `holder`'s `content` (a
/// response or a request body).
fn each_media_schema(
    holder: &mut serde_yaml_ng::Value,
    at: &str,
    f: &mut dyn FnMut(&mut serde_yaml_ng::Mapping, &str) -> Result<(), String>,
) -> Result<(), String> {
    let Some(serde_yaml_ng::Value::Mapping(content)) = holder.get_mut("content") else {
        return Ok(());
    };
    for (media, entry) in content.iter_mut() {
        if let Some(schema) = entry.get_mut("schema") {
            let at = format!("{at}/content/{}/schema", yaml_key(media));
            each_schema(schema, &at, f)?;
        }
    }
    Ok(())
}

/// Refuses what the generator would send otherwise than the spec says: a query
/// array or object with `explode: false` (sent exploded, `a=1&a=2`, where
/// `a=1,2` is asked for).
fn check_parameter(parameter: &serde_yaml_ng::Value, at: &str) -> Result<(), String> {
    use serde_yaml_ng::Value;
    let text = |key: &str| parameter.get(key).and_then(Value::as_str);
    let kind = parameter
        .get("schema")
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str);
    if text("in") == Some("query")
        && parameter.get("explode") == Some(&Value::Bool(false))
        && matches!(kind, Some("array" | "object"))
    {
        return Err(format!(
            "{at}: `explode: false` is not what the generated client sends (it sends each \
             value as a parameter of its own); take the values as one string parameter, \
             joined with commas, instead"
        ));
    }
    Ok(())
}

/// [`each_schema`] on the schema of each parameter of the list `parameters`.
fn each_parameter_schema(
    parameters: &mut serde_yaml_ng::Value,
    at: &str,
    f: &mut dyn FnMut(&mut serde_yaml_ng::Mapping, &str) -> Result<(), String>,
) -> Result<(), String> {
    let serde_yaml_ng::Value::Sequence(parameters) = parameters else {
        return Ok(());
    };
    for (i, parameter) in parameters.iter_mut().enumerate() {
        check_parameter(parameter, &format!("{at}/{i}"))?;
        if let Some(schema) = parameter.get_mut("schema") {
            each_schema(schema, &format!("{at}/{i}/schema"), f)?;
        }
    }
    Ok(())
}

/// The names of the component schemas an answer of the API may hold: those
/// its responses refer to, and those these refer to in turn.
fn answered_schemas(document: &serde_yaml_ng::Value) -> std::collections::HashSet<String> {
    use serde_yaml_ng::Value;
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Mapping(map) => {
                for (key, child) in map {
                    match (key.as_str(), child.as_str()) {
                        (Some("$ref"), Some(target)) => out.push(target.to_owned()),
                        _ => refs(child, out),
                    }
                }
            }
            Value::Sequence(items) => items.iter().for_each(|item| refs(item, out)),
            _ => {}
        }
    }
    let mut pending = Vec::new();
    if let Some(paths) = document.get("paths").and_then(Value::as_mapping) {
        for item in paths.values().filter_map(Value::as_mapping) {
            for operation in item.values() {
                if let Some(responses) = operation.get("responses") {
                    refs(responses, &mut pending);
                }
            }
        }
    }
    let components = document.get("components");
    if let Some(responses) = components.and_then(|c| c.get("responses")) {
        refs(responses, &mut pending);
    }
    let schemas = components.and_then(|c| c.get("schemas"));
    let mut answered = std::collections::HashSet::new();
    while let Some(target) = pending.pop() {
        let Some(name) = target.strip_prefix("#/components/schemas/") else {
            continue;
        };
        if answered.insert(name.to_owned()) {
            if let Some(schema) = schemas.and_then(|s| s.get(name)) {
                refs(schema, &mut pending);
            }
        }
    }
    answered
}

/// Whether the generator names a type of its own for `schema` written in place:
/// an object, an enumeration, a `oneOf`, or a string with length limits (not a
/// `$ref`, an array or a plain scalar).
fn names_a_type(schema: &serde_yaml_ng::Mapping) -> bool {
    let text = |key: &str| schema.get(key).and_then(serde_yaml_ng::Value::as_str);
    if schema.contains_key("$ref") {
        return false;
    }
    let object = text("type") == Some("object")
        || (schema.get("type").is_none() && schema.contains_key("properties"));
    let limited_string = text("type") == Some("string")
        && (schema.contains_key("maxLength") || schema.contains_key("minLength"));
    object || limited_string || schema.contains_key("enum") || schema.contains_key("oneOf")
}

/// `input` as a Rust type name, as the generators make one of a `title` or a
/// property's name (Pascal case, other characters as word breaks).
fn pascal_name(input: &str) -> String {
    use heck::ToPascalCase;
    input
        .replace(|c| !unicode_ident::is_xid_continue(c), "-")
        .to_pascal_case()
}

/// `input` as a Rust name in snake case, as the generators' `sanitize` makes one
/// (an apostrophe dropped, other characters as word breaks); one that does not
/// start as a name gets `lead` before it.
fn snake_name(input: &str, lead: &str) -> String {
    use heck::ToSnakeCase;
    let out = match input {
        "+1" => "plus1".to_owned(),
        "-1" => "minus1".to_owned(),
        _ => input
            .replace('\'', "")
            .replace(|c| !unicode_ident::is_xid_continue(c), "-")
            .to_snake_case(),
    };
    match out.chars().next() {
        None => "x".to_owned(),
        Some(c) if unicode_ident::is_xid_start(c) => out,
        Some(_) => format!("{lead}{out}"),
    }
}

/// What a response holds, as far as the generator's choice of type goes: no
/// content, or each media type with its schema.
fn response_kind(response: &serde_yaml_ng::Value) -> String {
    let Some(content) = response
        .get("content")
        .and_then(serde_yaml_ng::Value::as_mapping)
        .filter(|c| !c.is_empty())
    else {
        return "no content".into();
    };
    // As the generator reads it: the schema of JSON content, if any, else raw.
    let json = content.iter().find(|(media, _)| {
        let media = yaml_key(media).to_ascii_lowercase();
        media == "application/json" || media.starts_with("application/json;")
    });
    match json {
        Some((_, entry)) => {
            let schema = entry
                .get("schema")
                .and_then(|s| serde_yaml_ng::to_string(s).ok())
                .map(|s| s.trim().replace('\n', " "))
                .unwrap_or_default();
            format!("JSON {schema}")
        }
        None => "content other than JSON".into(),
    }
}

/// Checks that no schema is named after an item the derived code uses
/// unqualified (`Default`, `Box`), which would give rustc's errors in the
/// generated code.
fn check_what_the_crate_relies_on(document: &serde_yaml_ng::Value) -> Result<(), String> {
    use serde_yaml_ng::Value;
    let schemas = document
        .get("components")
        .and_then(|c| c.get("schemas"))
        .and_then(Value::as_mapping);
    for name in schemas.into_iter().flat_map(|m| m.keys()).map(yaml_key) {
        if matches!(name.as_str(), "Default" | "Box") {
            return Err(format!(
                "components/schemas/{name}: the derived code uses `{name}` as the standard \
                 library's; give the schema another name"
            ));
        }
    }
    Ok(())
}

/// Checks that the generated code has what the client (`src/client.rs`) calls:
/// the operation `get_user_machines` taking a `types::GetUserMachinesId`, which
/// the generator makes of a string `id` with length limits. Without them an
/// edit of the spec gives rustc's errors in `src/`.
fn check_generated_for_the_client(file: &syn::File) -> Result<(), String> {
    let has_id_type = file.items.iter().any(|item| match item {
        syn::Item::Mod(m) if m.ident == "types" => m.content.as_ref().is_some_and(|(_, items)| {
            items
                .iter()
                .any(|i| matches!(i, syn::Item::Struct(s) if s.ident == "GetUserMachinesId"))
        }),
        _ => false,
    });
    let has_operation = file.items.iter().any(|item| match item {
        syn::Item::Impl(i) => i
            .items
            .iter()
            .any(|f| matches!(f, syn::ImplItem::Fn(f) if f.sig.ident == "get_user_machines")),
        _ => false,
    });
    if has_id_type && has_operation {
        return Ok(());
    }
    Err(
        "paths//api/users/{id}/machines/get: the client (src/client.rs) calls this \
         operation as `get_user_machines` (its operationId), with its path parameter `id` \
         a string with `maxLength` (which makes the type `GetUserMachinesId`); keep them"
            .into(),
    )
}

/// The name the generator gives an object written in place at `at`, for a
/// chain of `properties`, `items` and `additionalProperties` under a component
/// schema (`components/schemas/Machine/properties/hardware` is
/// `MachineHardware`, an array's item `…Item`, a map's value `…Value`); `None`
/// for any other place.
fn inline_type_name(at: &str) -> Option<String> {
    let rest = at.strip_prefix("components/schemas/")?;
    let mut parts = rest.split('/');
    let mut name = parts.next()?.to_owned();
    let mut inline = false;
    while let Some(part) = parts.next() {
        match part {
            "properties" => {
                let property = parts.next()?;
                name.push_str(&pascal_name(property));
            }
            "items" => name.push_str("Item"),
            "additionalProperties" => name.push_str("Value"),
            _ => return None,
        }
        inline = true;
    }
    inline.then_some(name)
}

/// The Rust field the generator makes of property `name`: its `sanitize`
/// (typify), without the `_` it adds to keywords, which makes no two names alike.
fn rust_field_name(name: &str) -> String {
    snake_name(name, "x")
}

/// A mapping key as text (`200` is a number in YAML).
fn yaml_key(key: &serde_yaml_ng::Value) -> String {
    match key {
        serde_yaml_ng::Value::String(s) => s.clone(),
        other => serde_yaml_ng::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

/// Says, at its place in the spec, which component schema or property has no
/// `description` (the rustdoc of its type or field), and gives it a stand-in
/// so that the crate's `missing_docs` does not also point into generated code.
/// A property given by a bare `$ref`, whose description the generator does not
/// read, is written as `allOf: [{$ref}]` with its description (the one beside
/// the `$ref`, named as misplaced, or a stand-in), as `vmMetadata` is.
fn fill_missing_descriptions(document: &mut serde_yaml_ng::Value) {
    use serde_yaml_ng::Value;
    /// The rustdoc of an item the spec does not describe.
    const STAND_IN: &str = "Not described in the spec.";
    /// `schema` (at `at`), whose Rust item wants a description when `described`
    /// (a component schema, a property), and the properties inside it.
    fn walk(schema: &mut Value, at: &str, described: bool) {
        let Value::Mapping(map) = schema else {
            return;
        };
        if map.contains_key("$ref") {
            if described {
                // A description beside a `$ref` is not read (OpenAPI 3.0), and
                // the generator reads none: the reference is wrapped in `allOf`
                // with the description (or a stand-in), which it reads, and
                // which gives the same Rust type.
                let description = match map.remove("description") {
                    Some(Value::String(text)) => {
                        println!(
                            "cargo:warning={SPEC}: {at} has its description beside a `$ref`, \
                             where OpenAPI 3.0 tools do not read it: write it as \
                             `allOf: [{{$ref: ...}}]` with the `description`, as Machine's \
                             `vmMetadata` is"
                        );
                        text
                    }
                    _ => {
                        println!(
                            "cargo:warning={SPEC}: {at} has no description, which is the \
                             rustdoc of its Rust item: write it as `allOf: [{{$ref: ...}}]` \
                             with a `description`, as Machine's `vmMetadata` is"
                        );
                        STAND_IN.into()
                    }
                };
                // The other keys (`nullable`) stay beside `allOf`, where they
                // are read.
                let mut reference = serde_yaml_ng::Mapping::new();
                if let Some(target) = map.remove("$ref") {
                    reference.insert("$ref".into(), target);
                }
                map.insert(
                    "allOf".into(),
                    Value::Sequence(vec![Value::Mapping(reference)]),
                );
                map.insert("description".into(), Value::String(description));
            }
            return;
        }
        if described && !map.contains_key("description") {
            println!(
                "cargo:warning={SPEC}: {at} has no description, which is the rustdoc of \
                 its Rust item: give it one"
            );
            map.insert("description".into(), Value::String(STAND_IN.into()));
        }
        if let Some(Value::Mapping(properties)) = map.get_mut("properties") {
            for (name, property) in properties.iter_mut() {
                let at = format!("{at}/properties/{}", yaml_key(name));
                walk(property, &at, true);
            }
        }
        for key in ["items", "not", "additionalProperties"] {
            if let Some(inner) = map.get_mut(key) {
                walk(inner, &format!("{at}/{key}"), false);
            }
        }
        for key in ["allOf", "oneOf", "anyOf"] {
            if let Some(Value::Sequence(alternatives)) = map.get_mut(key) {
                for (i, alternative) in alternatives.iter_mut().enumerate() {
                    walk(alternative, &format!("{at}/{key}/{i}"), false);
                }
            }
        }
    }
    let Some(Value::Mapping(schemas)) = document
        .get_mut("components")
        .and_then(|c| c.get_mut("schemas"))
    else {
        return;
    };
    for (name, schema) in schemas.iter_mut() {
        walk(
            schema,
            &format!("components/schemas/{}", yaml_key(name)),
            true,
        );
    }
}

/// Calls `f` on `schema` (at `at`) and on every schema inside it: properties,
/// items, `not`, `additionalProperties`, and the alternatives of `allOf`, `oneOf`
/// and `anyOf`. What a `$ref` leads to is checked where it is defined; `f` sees
/// the reference itself.
fn each_schema(
    schema: &mut serde_yaml_ng::Value,
    at: &str,
    f: &mut dyn FnMut(&mut serde_yaml_ng::Mapping, &str) -> Result<(), String>,
) -> Result<(), String> {
    use serde_yaml_ng::Value;
    let Value::Mapping(map) = schema else {
        return Ok(());
    };
    f(map, at)?;
    if map.contains_key("$ref") {
        // Checked where it is defined.
        return Ok(());
    }
    if let Some(Value::Mapping(properties)) = map.get_mut("properties") {
        for (name, property) in properties.iter_mut() {
            let at = format!("{at}/properties/{}", name.as_str().unwrap_or("?"));
            each_schema(property, &at, f)?;
        }
    }
    for key in ["items", "not", "additionalProperties"] {
        if let Some(inner) = map.get_mut(key) {
            each_schema(inner, &format!("{at}/{key}"), f)?;
        }
    }
    for key in ["allOf", "oneOf", "anyOf"] {
        if let Some(Value::Sequence(alternatives)) = map.get_mut(key) {
            for (i, alternative) in alternatives.iter_mut().enumerate() {
                each_schema(alternative, &format!("{at}/{key}/{i}"), f)?;
            }
        }
    }
    Ok(())
}

/// The open enumerations of the spec (see [`check_and_complete_schemas`]), each
/// with its values; fails when an `NOther` does not refuse exactly what `NKnown`
/// lists (a value in one list only would be refused by both, or accepted by both).
fn open_enums(document: &serde_yaml_ng::Value) -> Result<Vec<(String, Vec<String>)>, String> {
    use serde_yaml_ng::Value;
    let Some(Value::Mapping(schemas)) = document.get("components").and_then(|c| c.get("schemas"))
    else {
        return Ok(Vec::new());
    };
    let strings = |list: Option<&Value>| -> Option<Vec<String>> {
        list?
            .as_sequence()?
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let sorted = |list: &[String]| {
        let mut list = list.to_vec();
        list.sort();
        list
    };
    let mut out = Vec::new();
    for (name, schema) in schemas {
        let (Some(name), Some(Value::Sequence(one_of))) = (name.as_str(), schema.get("oneOf"))
        else {
            continue;
        };
        let known_ref = format!("#/components/schemas/{name}Known");
        let is_open = one_of.len() == 2
            && one_of[0].get("$ref").and_then(Value::as_str) == Some(known_ref.as_str())
            && one_of[1].get("title").and_then(Value::as_str) == Some(&format!("{name}Other"));
        if !is_open {
            continue;
        }
        if one_of[1].get("type").and_then(Value::as_str) != Some("string") {
            return Err(format!(
                "components/schemas/{name}/oneOf/1: `{name}Other` holds the values \
                 `{name}Known` does not list, and must be `type: string`"
            ));
        }
        let known = strings(
            schemas
                .get(format!("{name}Known"))
                .and_then(|k| k.get("enum")),
        );
        let refused = strings(one_of[1].get("not").and_then(|n| n.get("enum")));
        match (known, refused) {
            (Some(known), Some(refused)) if sorted(&known) == sorted(&refused) => {
                // Two spellings of one value would be one Rust variant; the
                // service's other spellings are what `known_ignore_case` is for.
                for (i, value) in known.iter().enumerate() {
                    if let Some(other) = known[..i].iter().find(|k| k.eq_ignore_ascii_case(value)) {
                        return Err(format!(
                            "components/schemas/{name}Known: `{other}` and `{value}` differ only \
                             in case; list one (`known_ignore_case` matches the other spellings, \
                             and `Other` keeps them as sent)"
                        ));
                    }
                }
                out.push((name.to_owned(), known))
            }
            (Some(known), Some(refused)) => {
                let only = |a: &[String], b: &[String]| {
                    a.iter()
                        .filter(|v| !b.contains(v))
                        .map(|v| format!("`{v}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(format!(
                    "components/schemas/{name}: the values `{name}Known` lists and those \
                     `{name}Other` refuses (`not: {{enum: …}}`) must be the same strings; \
                     only in `{name}Known`: [{}], only in `{name}Other`: [{}]",
                    only(&known, &refused),
                    only(&refused, &known)
                ));
            }
            _ => {
                return Err(format!(
                    "components/schemas/{name}: the values `{name}Known` lists and those \
                     `{name}Other` refuses (`not: {{enum: …}}`) must be the same strings"
                ))
            }
        }
    }
    Ok(out)
}

/// Removes the `api-version` header the generator adds to every request from
/// `info.version`: Defender never asked for it.
fn drop_api_version_header(file: &mut syn::File) {
    use syn::visit_mut::VisitMut;

    struct Drop;
    impl VisitMut for Drop {
        fn visit_block_mut(&mut self, block: &mut syn::Block) {
            let before = block.stmts.len();
            block.stmts.retain(|stmt| {
                let syn::Stmt::Expr(syn::Expr::MethodCall(call), _) = stmt else {
                    return true;
                };
                let names_api_version = |arg: &syn::Expr| {
                    matches!(arg, syn::Expr::Call(c) if c.args.iter().any(|a| matches!(
                        a,
                        syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) if s.value() == "api-version"
                    )))
                };
                !(call.method == "append" && call.args.first().is_some_and(names_api_version))
            });
            let removed = before - block.stmts.len();
            if removed > 0 {
                // The header map was sized for the removed header too; a map sized
                // for no header does not allocate.
                for stmt in &mut block.stmts {
                    shrink_header_map(stmt, removed);
                }
            }
            syn::visit_mut::visit_block_mut(self, block);
        }
    }
    Drop.visit_file_mut(file);
}

/// Has the operations read a response through `crate::hooks::response_value`
/// instead of `ResponseValue::from_response`, which copies the headers of the
/// response it consumes.
fn read_responses_without_copying_headers(file: &mut syn::File) {
    use syn::visit_mut::VisitMut;

    struct Replace;
    impl VisitMut for Replace {
        fn visit_expr_call_mut(&mut self, call: &mut syn::ExprCall) {
            if let syn::Expr::Path(path) = &mut *call.func {
                let names: Vec<String> = path
                    .path
                    .segments
                    .iter()
                    .map(|s| s.ident.to_string())
                    .collect();
                if names.ends_with(&["ResponseValue".into(), "from_response".into()]) {
                    path.path = syn::parse_quote!(crate::hooks::response_value);
                }
            }
            syn::visit_mut::visit_expr_call_mut(self, call);
        }
    }
    Replace.visit_file_mut(file);
}

/// Has the operations start their request with `crate::hooks::request(self,
/// Method, url)` instead of `self.client.get(url)` (or `post`, …), which parses
/// the whole URL, host included, on every call: the hook reuses the base URL
/// parsed when the client was built. Fails unless every operation starts one
/// request the way this expects, so that a change of the generator's output is
/// noticed.
fn make_requests_on_the_parsed_base_url(file: &mut syn::File) -> Result<(), String> {
    use syn::visit_mut::VisitMut;

    /// Requests replaced and operations seen (each builds an `OperationInfo`) in
    /// the function being read, and the functions where the two differ.
    struct Replace(usize, usize, Vec<String>);
    impl VisitMut for Replace {
        fn visit_impl_item_fn_mut(&mut self, function: &mut syn::ImplItemFn) {
            let outer = (self.0, self.1);
            (self.0, self.1) = (0, 0);
            syn::visit_mut::visit_impl_item_fn_mut(self, function);
            if self.0 != self.1 {
                self.2.push(function.sig.ident.to_string());
            }
            (self.0, self.1) = outer;
        }
        fn visit_expr_mut(&mut self, expr: &mut syn::Expr) {
            syn::visit_mut::visit_expr_mut(self, expr);
            if let syn::Expr::Struct(info) = expr {
                if info.path.is_ident("OperationInfo") {
                    self.1 += 1;
                }
            }
            let syn::Expr::MethodCall(call) = expr else {
                return;
            };
            let method: syn::Ident = match call.method.to_string().as_str() {
                "get" => syn::parse_quote!(GET),
                "post" => syn::parse_quote!(POST),
                "put" => syn::parse_quote!(PUT),
                "patch" => syn::parse_quote!(PATCH),
                "delete" => syn::parse_quote!(DELETE),
                "head" => syn::parse_quote!(HEAD),
                "options" => syn::parse_quote!(OPTIONS),
                "trace" => syn::parse_quote!(TRACE),
                _ => return,
            };
            let on_own_client = matches!(
                &*call.receiver,
                syn::Expr::Field(syn::ExprField { base, member: syn::Member::Named(name), .. })
                    if name == "client"
                        && matches!(&**base, syn::Expr::Path(p) if p.path.is_ident("self"))
            );
            if !on_own_client || call.args.len() != 1 {
                return;
            }
            let url = &call.args[0];
            *expr = syn::parse_quote!(
                crate::hooks::request(self, ::reqwest::Method::#method, #url)
            );
            self.0 += 1;
        }
    }
    let mut replace = Replace(0, 0, Vec::new());
    replace.visit_file_mut(file);
    if !replace.2.is_empty() {
        return Err(format!(
            "generated operations that do not start one request with `self.client.get(url)` \
             (or another method): {}; build.rs no longer matches the generator's output",
            replace.2.join(", ")
        ));
    }
    Ok(())
}

/// Has the generated operations percent-encode path parameters with the crate's
/// own `encode_segment`, which also encodes what RFC 3986 does not allow in a
/// path segment and the generator's `encode_path` leaves as it is (`[`, `|`, …):
/// the generator's import of `encode_path` is replaced by one of the crate's
/// function under that name, so the calls inside `format!` need no rewriting.
fn encode_paths_with_the_user_rule(file: &mut syn::File) -> Result<(), String> {
    let mut replaced = false;
    for item in &mut file.items {
        let syn::Item::Use(item) = item else { continue };
        let syn::UseTree::Path(path) = &mut item.tree else {
            continue;
        };
        if path.ident != "progenitor_client" {
            continue;
        }
        let syn::UseTree::Group(group) = &mut *path.tree else {
            continue;
        };
        let before = group.items.len();
        group.items = std::mem::take(&mut group.items)
            .into_iter()
            .filter(|tree| !matches!(tree, syn::UseTree::Name(n) if n.ident == "encode_path"))
            .collect();
        replaced |= group.items.len() < before;
    }
    if !replaced {
        return Err("the generated code no longer imports progenitor_client::encode_path".into());
    }
    file.items.insert(
        0,
        syn::parse_quote!(
            use crate::user::encode_segment as encode_path;
        ),
    );
    Ok(())
}

/// In `let mut header_map = HeaderMap::with_capacity(N);`, takes `removed` off `N`.
fn shrink_header_map(stmt: &mut syn::Stmt, removed: usize) {
    let syn::Stmt::Local(local) = stmt else {
        return;
    };
    let syn::Pat::Ident(pat) = &local.pat else {
        return;
    };
    if pat.ident != "header_map" {
        return;
    }
    let Some(init) = &mut local.init else {
        return;
    };
    let syn::Expr::Call(call) = &mut *init.expr else {
        return;
    };
    let is_with_capacity = matches!(&*call.func, syn::Expr::Path(p)
        if p.path.segments.last().is_some_and(|s| s.ident == "with_capacity"));
    if !is_with_capacity || call.args.len() != 1 {
        return;
    }
    if let Some(syn::Expr::Lit(syn::ExprLit {
        lit: syn::Lit::Int(n),
        ..
    })) = call.args.first_mut()
    {
        if let Ok(value) = n.base10_parse::<usize>() {
            let value = value.saturating_sub(removed);
            *n = syn::LitInt::new(&format!("{value}usize"), n.span());
        }
    }
}

/// Gives rustdoc to the public items of `types` that the generator leaves
/// undocumented because the spec has nowhere to say it:
///
/// - the `#[serde(flatten)] extra` map of a struct with `additionalProperties`,
///   whose type becomes [`UnknownFields`] (a map held as compact JSON text);
/// - the `Known` and `Other` variants of an open enumeration (see [`open_enums`])
///   and each variant of its `*Known` enumeration;
/// - the variants of any other `oneOf` enumeration, from the `description` of the
///   alternative whose `title` names the variant (the generator ignores it);
/// - the values of a closed enumeration (a parameter's), as the value each is.
///
/// Items that already have a doc comment keep it. A schema or property the spec
/// leaves without a description has a stand-in by now (see
/// [`fill_missing_descriptions`], which names it), but for a property given by
/// `$ref`: anything else left undocumented, `missing_docs` says so.
fn document_the_rest(
    file: &mut syn::File,
    spec: &openapiv3::OpenAPI,
    open: &[(String, Vec<String>)],
) {
    use openapiv3::{ReferenceOr, SchemaKind};
    let Some(types) = types_items(file) else {
        return;
    };
    let schemas = spec.components.as_ref().map(|c| &c.schemas);
    // The description of the `oneOf` alternative titled `title` of schema `name`.
    let alternative = |name: &str, title: &str| -> Option<String> {
        let ReferenceOr::Item(schema) = schemas?.get(name)? else {
            return None;
        };
        let SchemaKind::OneOf { one_of } = &schema.schema_kind else {
            return None;
        };
        one_of.iter().find_map(|alt| match alt {
            ReferenceOr::Item(alt) if alt.schema_data.title.as_deref() == Some(title) => {
                alt.schema_data.description.clone()
            }
            _ => None,
        })
    };
    for item in types.iter_mut() {
        match item {
            syn::Item::Struct(s) => {
                for field in s.fields.iter_mut() {
                    if field.ident.as_ref().is_none_or(|i| i != "extra")
                        || !field_attrs(&field.attrs).is_some_and(|a| a.flatten)
                    {
                        continue;
                    }
                    if is_json_map(&field.ty) {
                        add_doc(
                            &mut field.attrs,
                            "Fields the spec does not describe, kept as JSON values and \
                             serialised back; read it as a `serde_json::Map` (see \
                             [`UnknownFields`](crate::UnknownFields)). Numbers are kept as \
                             `serde_json` holds them: integers within 64 bits exactly, any \
                             other number as an `f64`.",
                        );
                        // Held as compact JSON text until it is looked at.
                        field.ty = syn::parse_quote!(crate::UnknownFields);
                    } else {
                        // `additionalProperties` with a schema of its own: a typed map.
                        add_doc(
                            &mut field.attrs,
                            "Fields the spec does not name, of the type its \
                             `additionalProperties` gives them.",
                        );
                    }
                }
            }
            syn::Item::Enum(e) => {
                let name = e.ident.to_string();
                let is_open = open.iter().any(|(n, _)| *n == name);
                let is_known = name
                    .strip_suffix("Known")
                    .is_some_and(|n| open.iter().any(|(o, _)| o == n));
                for variant in e.variants.iter_mut() {
                    let ident = variant.ident.to_string();
                    let doc = if is_open {
                        match ident.as_str() {
                            "Known" => Some("A value the spec documents.".to_owned()),
                            "Other" => {
                                Some("A value the spec does not document, kept as sent.".to_owned())
                            }
                            _ => None,
                        }
                    } else if is_known {
                        let value = field_attrs(&variant.attrs)
                            .and_then(|a| a.rename)
                            .unwrap_or(ident);
                        Some(format!("The documented value `{value}`."))
                    } else {
                        // A closed enumeration (of a parameter, say): a unit
                        // variant is the value it stands for.
                        // A `oneOf` alternative given by `$ref` (one field of the
                        // schema's type): that schema's form.
                        let unit = matches!(variant.fields, syn::Fields::Unit);
                        let one_type = match &variant.fields {
                            syn::Fields::Unnamed(f) if f.unnamed.len() == 1 => {
                                match &f.unnamed[0].ty {
                                    syn::Type::Path(p) => {
                                        p.path.segments.last().map(|s| s.ident.to_string())
                                    }
                                    _ => None,
                                }
                            }
                            _ => None,
                        };
                        alternative(&name, &ident)
                            .or_else(|| one_type.map(|ty| format!("The `{ty}` form.")))
                            .or_else(|| {
                                unit.then(|| {
                                    let value = field_attrs(&variant.attrs)
                                        .and_then(|a| a.rename)
                                        .unwrap_or(ident);
                                    format!("The value `{value}`.")
                                })
                            })
                    };
                    if let Some(doc) = doc {
                        add_doc(&mut variant.attrs, &doc);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Puts `#[doc = text]` first in `attrs`, unless they already have a doc comment.
fn add_doc(attrs: &mut Vec<syn::Attribute>, text: &str) {
    if attrs.iter().any(|a| a.path().is_ident("doc")) {
        return;
    }
    let text = format!(" {text}");
    attrs.insert(0, syn::parse_quote!(#[doc = #text]));
}

/// `as_str`, `known_ignore_case`, `Display` and `FromStr` for each open enumeration.
fn open_enum_impls(open: &[(String, Vec<String>)]) -> String {
    let mut out = String::new();
    for (name, values) in open {
        out.push_str(&format!(
            r#"
impl types::{name} {{
    /// The value as the service sent it.
    pub fn as_str(&self) -> &str {{
        match self {{
            Self::Known(v) => [{list}]
                .into_iter()
                .find(|known| known.parse::<types::{name}Known>().ok() == Some(*v))
                .unwrap_or_default(),
            Self::Other(v) => v.as_str(),
        }}
    }}

    /// The documented value this is, ignoring ASCII case (the service is not
    /// consistent about case); `None` for a value the spec does not document.
    pub fn known_ignore_case(&self) -> Option<types::{name}Known> {{
        match self {{
            Self::Known(v) => Some(*v),
            Self::Other(v) => [{list}]
                .iter()
                .find(|known| known.eq_ignore_ascii_case(v))
                .and_then(|known| known.parse().ok()),
        }}
    }}
}}

impl ::std::fmt::Display for types::{name} {{
    fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {{
        f.write_str(self.as_str())
    }}
}}

impl ::std::str::FromStr for types::{name} {{
    type Err = types::error::ConversionError;

    /// A documented value becomes `Known`, anything else `Other`.
    fn from_str(value: &str) -> ::std::result::Result<Self, Self::Err> {{
        match value.parse::<types::{name}Known>() {{
            Ok(known) => Ok(Self::Known(known)),
            Err(_) => types::{name}Other::try_from(value.to_string()).map(Self::Other),
        }}
    }}
}}
"#,
            list = values
                .iter()
                .map(|v| format!("{v:?}"))
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    out
}

/// The path template of every operation, for the request hook's path guard.
fn operations(spec: &openapiv3::OpenAPI, generated: &[String]) -> Result<String, String> {
    let mut table = String::from(
        "/// `(operation, path template)` of every operation in the spec: the name \
         the generated code gives the operation (its method's) and the spec's path.\n\
         pub(crate) const OPERATIONS: &[(&str, &str)] = &[\n",
    );
    // The generated client's own items, which an operation's method would clash with.
    const TAKEN: [&str; 6] = [
        "new",
        "new_with_client",
        "baseurl",
        "client",
        "inner",
        "api_version",
    ];
    let mut named: Vec<(String, String)> = Vec::new();
    for (path, item) in spec.paths.iter() {
        let item = item
            .as_item()
            .ok_or_else(|| format!("path {path}: references to path items are not supported"))?;
        // The client's path guard (`hooks::path_matches`) takes a parameter as
        // a whole path segment only: one inside a segment would refuse every call.
        let whole = path.split('/').all(|segment| {
            !segment.contains(['{', '}'])
                || (segment.starts_with('{')
                    && segment.ends_with('}')
                    && segment[1..segment.len() - 1]
                        .chars()
                        .all(|c| c != '{' && c != '}'))
        });
        if !whole {
            return Err(format!(
                "paths/{path}: a path parameter must be a whole segment (`/{{id}}/`); the \
                 client's path guard refuses a path that holds one inside a segment, such \
                 as `findbyip(ip='{{ip}}')`"
            ));
        }
        for (method, operation) in item.iter() {
            let id = operation
                .operation_id
                .as_deref()
                .ok_or_else(|| format!("{method} {path}: every operation needs an operationId"))?;
            let name = method_name(id);
            if TAKEN.contains(&name.as_str()) {
                return Err(format!(
                    "{method} {path}: operationId `{id}` would be the method `{name}`, which the \
                     generated client already has; choose another operationId"
                ));
            }
            if let Some((other, _)) = named.iter().find(|(_, n)| *n == name) {
                return Err(format!(
                    "{method} {path}: operationId `{id}` and `{other}` would both be the method \
                     `{name}`; choose another operationId"
                ));
            }
            named.push((id.to_owned(), name.clone()));
            table.push_str(&format!("    ({name:?}, {path:?}),\n"));
        }
    }
    // The names the generated code reports (`OperationInfo`) must be the ones
    // worked out here, or the path guard would refuse every call of an operation.
    let mut expected: Vec<&str> = named.iter().map(|(_, n)| n.as_str()).collect();
    let mut reported: Vec<&str> = generated.iter().map(String::as_str).collect();
    expected.sort_unstable();
    reported.sort_unstable();
    if expected != reported {
        return Err(format!(
            "the generated operations are named {reported:?}, where build.rs expected \
             {expected:?}: build.rs no longer matches the generator's naming"
        ));
    }
    table.push_str("];\n");
    Ok(table)
}

/// The method the generator makes of `operationId` `id` (progenitor's
/// `sanitize` into snake case): `GetMachineById` is `get_machine_by_id`.
fn method_name(id: &str) -> String {
    let out = snake_name(id, "_");
    // A keyword gets a `_` after it (`type_`), as the generator does; `gen` is
    // one from the 2024 edition on, which syn still takes as a name.
    if out != "gen" && syn::parse_str::<syn::Ident>(&out).is_ok() {
        out
    } else {
        format!("{out}_")
    }
}

/// The `operation_id` of every `OperationInfo` the generated code builds.
fn generated_operation_ids(file: &syn::File) -> Vec<String> {
    use syn::visit::Visit;

    struct Collect(Vec<String>);
    impl<'ast> Visit<'ast> for Collect {
        fn visit_expr_struct(&mut self, info: &'ast syn::ExprStruct) {
            if info.path.is_ident("OperationInfo") {
                for field in &info.fields {
                    if let (
                        syn::Member::Named(name),
                        syn::Expr::Lit(syn::ExprLit {
                            lit: syn::Lit::Str(id),
                            ..
                        }),
                    ) = (&field.member, &field.expr)
                    {
                        if name == "operation_id" {
                            self.0.push(id.value());
                        }
                    }
                }
            }
            syn::visit::visit_expr_struct(self, info);
        }
    }
    let mut collect = Collect(Vec::new());
    collect.visit_file(file);
    collect.0
}

fn write(path: &Path, contents: &str) -> Result<(), String> {
    // Leave an unchanged file untouched so that nothing downstream rebuilds for nothing.
    if fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    fs::write(path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Replaces serde's derived `Deserialize` where it is slow, keeping its behaviour:
///
/// - structs that keep unknown fields (`#[serde(flatten)] extra: UnknownFields`):
///   the derive buffers every unknown key and value in serde's private `Content`
///   tree and builds the map from it afterwards; here each key is matched as it is
///   read, known fields go straight to their type and unknown ones are written
///   straight into `extra`'s JSON text;
/// - open enumerations (`#[serde(untagged)] enum N { Known(NKnown), Other(NOther) }`):
///   the derive buffers the value in `Content` and tries each variant in turn; here
///   the string is read once and parsed with `N`'s `FromStr` (from `open_enum_impls`);
/// - an integer or a string (`#[serde(untagged)] enum N { A(i64), B(String) }`, or
///   either alone): the derive buffers the value and, for a string, first builds
///   and drops the error of the integer variant; here the value is read once and
///   goes to the variant of its kind (see [`integer_or_string`]).
///
/// A missing `Option` field is `None`, a missing field marked `#[serde(default)]` is
/// its default, a missing required field and a repeated known field are errors, and a
/// repeated unknown field keeps the last value, as with the derive. A struct with
/// serde attributes other than `rename`, `default` and `skip_serializing_if` on its
/// fields keeps its derive.
fn direct_deserialize(file: &mut syn::File, open: &[(String, Vec<String>)]) -> Result<(), String> {
    let Some(types) = types_items(file) else {
        return Ok(());
    };
    let mut out = String::new();
    for item in types.iter_mut() {
        match item {
            syn::Item::Struct(s) => {
                if let Some(code) = struct_deserialize(s) {
                    drop_derive(&mut s.attrs, "Deserialize");
                    out.push_str(&code);
                }
            }
            syn::Item::Enum(e) if open.iter().any(|(name, _)| e.ident == name) => {
                drop_derive(&mut e.attrs, "Deserialize");
                // Both parts are `Eq + Hash`; so is the whole (a map key, a set member).
                e.attrs.push(syn::parse_quote!(#[derive(Eq, Hash)]));
                out.push_str(&format!(
                    r#"
impl<'de> ::serde::Deserialize<'de> for {name} {{
    fn deserialize<__D: ::serde::Deserializer<'de>>(deserializer: __D) -> ::std::result::Result<Self, __D::Error> {{
        struct __Open;
        impl<'de> ::serde::de::Visitor<'de> for __Open {{
            type Value = {name};
            fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {{
                f.write_str("a string")
            }}
            fn visit_str<__E: ::serde::de::Error>(self, v: &str) -> ::std::result::Result<Self::Value, __E> {{
                v.parse().map_err(__E::custom)
            }}
        }}
        deserializer.deserialize_str(__Open)
    }}
}}
"#,
                    name = e.ident
                ));
            }
            syn::Item::Enum(e) => {
                if let Some(code) = integer_or_string(e) {
                    drop_derive(&mut e.attrs, "Deserialize");
                    out.push_str(&code);
                }
            }
            _ => {}
        }
    }
    // Inside `mod types`, where the generator's `defaults` helpers are visible.
    let impls: syn::File =
        syn::parse_str(&out).map_err(|e| format!("the direct deserialisers do not parse: {e}"))?;
    types.extend(impls.items);
    Ok(())
}

/// The `Deserialize` of `e` if it is an untagged enumeration whose variants hold
/// an `i64`, a `String`, or one of each (what the generator writes for `oneOf` an
/// integer and a string), and derives it: it reads the value once, as
/// `deserialize_any`, and accepts and refuses what the derive does. An integer
/// goes to the `i64` variant if it fits in one, a string (or UTF-8 bytes) to the
/// `String` variant; anything else (a character too, as the derive has it), or a
/// kind without a variant, is refused with the derive's message, once the whole
/// value is read. What the derive cannot even buffer (a 128-bit integer, enum
/// input, anywhere in the value) is refused with the message of its buffering.
fn integer_or_string(e: &syn::ItemEnum) -> Option<String> {
    // `#[serde(untagged)]` and no other serde attribute on the enum.
    let serde_attrs: Vec<_> = e
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("serde"))
        .collect();
    let untagged = !serde_attrs.is_empty()
        && serde_attrs
            .iter()
            .all(|a| a.parse_args::<syn::Ident>().is_ok_and(|i| i == "untagged"));
    let derives = e
        .attrs
        .iter()
        .filter_map(derived)
        .flatten()
        .any(|p| p.segments.last().is_some_and(|s| s.ident == "Deserialize"));
    if !untagged || !derives || !e.generics.params.is_empty() || e.variants.is_empty() {
        return None;
    }
    let (mut integer, mut string) = (None, None);
    for v in &e.variants {
        let syn::Fields::Unnamed(fields) = &v.fields else {
            return None;
        };
        let [field] = fields.unnamed.iter().collect::<Vec<_>>()[..] else {
            return None;
        };
        if v.attrs.iter().any(|a| a.path().is_ident("serde")) || !field.attrs.is_empty() {
            return None;
        }
        let is_i64 =
            matches!(&field.ty, syn::Type::Path(p) if p.qself.is_none() && p.path.is_ident("i64"));
        let slot = if is_i64 {
            &mut integer
        } else if is_path(&field.ty, &["std", "string", "String"]) {
            &mut string
        } else {
            return None;
        };
        if slot.replace(v.ident.to_string()).is_some() {
            return None;
        }
    }
    let name = &e.ident;
    let refuse = "Err(::serde::de::Error::custom(__MISMATCH))";
    let (i64_arm, u64_arm) = match &integer {
        Some(v) => (
            format!("Ok({name}::{v}(v))"),
            format!("match i64::try_from(v) {{ Ok(v) => Ok({name}::{v}(v)), Err(_) => {refuse} }}"),
        ),
        None => (refuse.to_string(), refuse.to_string()),
    };
    let (str_arm, string_arm) = match &string {
        Some(v) => (
            format!("Ok({name}::{v}(::std::borrow::ToOwned::to_owned(v)))"),
            format!("Ok({name}::{v}(v))"),
        ),
        None => (refuse.to_string(), refuse.to_string()),
    };
    let expecting = match (&integer, &string) {
        (Some(_), Some(_)) => "an integer or a string",
        (Some(_), None) => "an integer",
        _ => "a string",
    };
    Some(format!(
        r#"
impl<'de> ::serde::Deserialize<'de> for {name} {{
    fn deserialize<__D: ::serde::Deserializer<'de>>(deserializer: __D) -> ::std::result::Result<Self, __D::Error> {{
        const __MISMATCH: &str = "data did not match any variant of untagged enum {name}";
        struct __Scalar;
        impl<'de> ::serde::de::Visitor<'de> for __Scalar {{
            type Value = {name};
            fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {{
                f.write_str("{expecting}")
            }}
            fn visit_i64<__E: ::serde::de::Error>(self, v: i64) -> ::std::result::Result<Self::Value, __E> {{
                {i64_arm}
            }}
            fn visit_u64<__E: ::serde::de::Error>(self, v: u64) -> ::std::result::Result<Self::Value, __E> {{
                {u64_arm}
            }}
            fn visit_str<__E: ::serde::de::Error>(self, v: &str) -> ::std::result::Result<Self::Value, __E> {{
                {str_arm}
            }}
            fn visit_string<__E: ::serde::de::Error>(self, v: ::std::string::String) -> ::std::result::Result<Self::Value, __E> {{
                {string_arm}
            }}
            fn visit_bytes<__E: ::serde::de::Error>(self, v: &[u8]) -> ::std::result::Result<Self::Value, __E> {{
                match ::std::str::from_utf8(v) {{
                    Ok(v) => self.visit_str(v),
                    Err(_) => {refuse},
                }}
            }}
            fn visit_byte_buf<__E: ::serde::de::Error>(self, v: ::std::vec::Vec<u8>) -> ::std::result::Result<Self::Value, __E> {{
                match ::std::string::String::from_utf8(v) {{
                    Ok(v) => self.visit_string(v),
                    Err(_) => {refuse},
                }}
            }}
            fn visit_bool<__E: ::serde::de::Error>(self, _: bool) -> ::std::result::Result<Self::Value, __E> {{
                {refuse}
            }}
            fn visit_char<__E: ::serde::de::Error>(self, _: char) -> ::std::result::Result<Self::Value, __E> {{
                {refuse}
            }}
            fn visit_f64<__E: ::serde::de::Error>(self, _: f64) -> ::std::result::Result<Self::Value, __E> {{
                {refuse}
            }}
            fn visit_i128<__E: ::serde::de::Error>(self, v: i128) -> ::std::result::Result<Self::Value, __E> {{
                __Skip.visit_i128(v)?;
                {refuse}
            }}
            fn visit_u128<__E: ::serde::de::Error>(self, v: u128) -> ::std::result::Result<Self::Value, __E> {{
                __Skip.visit_u128(v)?;
                {refuse}
            }}
            fn visit_unit<__E: ::serde::de::Error>(self) -> ::std::result::Result<Self::Value, __E> {{
                {refuse}
            }}
            fn visit_none<__E: ::serde::de::Error>(self) -> ::std::result::Result<Self::Value, __E> {{
                {refuse}
            }}
            fn visit_some<__V: ::serde::Deserializer<'de>>(self, v: __V) -> ::std::result::Result<Self::Value, __V::Error> {{
                __Skip.visit_some(v)?;
                {refuse}
            }}
            fn visit_newtype_struct<__V: ::serde::Deserializer<'de>>(self, v: __V) -> ::std::result::Result<Self::Value, __V::Error> {{
                __Skip.visit_newtype_struct(v)?;
                {refuse}
            }}
            fn visit_seq<__A: ::serde::de::SeqAccess<'de>>(self, v: __A) -> ::std::result::Result<Self::Value, __A::Error> {{
                __Skip.visit_seq(v)?;
                {refuse}
            }}
            fn visit_map<__A: ::serde::de::MapAccess<'de>>(self, v: __A) -> ::std::result::Result<Self::Value, __A::Error> {{
                __Skip.visit_map(v)?;
                {refuse}
            }}
            fn visit_enum<__A: ::serde::de::EnumAccess<'de>>(self, v: __A) -> ::std::result::Result<Self::Value, __A::Error> {{
                __Skip.visit_enum(v)?;
                {refuse}
            }}
        }}
        // Reads a value the way the derive first buffers one, and keeps nothing: it
        // refuses what that buffering refuses (128-bit integers, enum input), with
        // its messages.
        #[derive(Clone, Copy)]
        struct __Skip;
        impl<'de> ::serde::de::DeserializeSeed<'de> for __Skip {{
            type Value = ();
            fn deserialize<__V: ::serde::Deserializer<'de>>(self, deserializer: __V) -> ::std::result::Result<(), __V::Error> {{
                deserializer.deserialize_any(self)
            }}
        }}
        impl<'de> ::serde::de::Visitor<'de> for __Skip {{
            type Value = ();
            fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {{
                f.write_str("any value")
            }}
            fn visit_bool<__E: ::serde::de::Error>(self, _: bool) -> ::std::result::Result<(), __E> {{ Ok(()) }}
            fn visit_i64<__E: ::serde::de::Error>(self, _: i64) -> ::std::result::Result<(), __E> {{ Ok(()) }}
            fn visit_u64<__E: ::serde::de::Error>(self, _: u64) -> ::std::result::Result<(), __E> {{ Ok(()) }}
            fn visit_f64<__E: ::serde::de::Error>(self, _: f64) -> ::std::result::Result<(), __E> {{ Ok(()) }}
            fn visit_char<__E: ::serde::de::Error>(self, _: char) -> ::std::result::Result<(), __E> {{ Ok(()) }}
            fn visit_str<__E: ::serde::de::Error>(self, _: &str) -> ::std::result::Result<(), __E> {{ Ok(()) }}
            fn visit_bytes<__E: ::serde::de::Error>(self, _: &[u8]) -> ::std::result::Result<(), __E> {{ Ok(()) }}
            fn visit_unit<__E: ::serde::de::Error>(self) -> ::std::result::Result<(), __E> {{ Ok(()) }}
            fn visit_none<__E: ::serde::de::Error>(self) -> ::std::result::Result<(), __E> {{ Ok(()) }}
            fn visit_i128<__E: ::serde::de::Error>(self, v: i128) -> ::std::result::Result<(), __E> {{
                Err(__E::invalid_type(::serde::de::Unexpected::Other(&::std::format!("integer `{{v}}` as i128")), &self))
            }}
            fn visit_u128<__E: ::serde::de::Error>(self, v: u128) -> ::std::result::Result<(), __E> {{
                Err(__E::invalid_type(::serde::de::Unexpected::Other(&::std::format!("integer `{{v}}` as u128")), &self))
            }}
            fn visit_some<__V: ::serde::Deserializer<'de>>(self, v: __V) -> ::std::result::Result<(), __V::Error> {{
                ::serde::de::DeserializeSeed::deserialize(self, v)
            }}
            fn visit_newtype_struct<__V: ::serde::Deserializer<'de>>(self, v: __V) -> ::std::result::Result<(), __V::Error> {{
                ::serde::de::DeserializeSeed::deserialize(self, v)
            }}
            fn visit_seq<__A: ::serde::de::SeqAccess<'de>>(self, mut v: __A) -> ::std::result::Result<(), __A::Error> {{
                while v.next_element_seed(self)?.is_some() {{}}
                Ok(())
            }}
            fn visit_map<__A: ::serde::de::MapAccess<'de>>(self, mut v: __A) -> ::std::result::Result<(), __A::Error> {{
                while v.next_entry_seed(self, self)?.is_some() {{}}
                Ok(())
            }}
            fn visit_enum<__A: ::serde::de::EnumAccess<'de>>(self, _: __A) -> ::std::result::Result<(), __A::Error> {{
                Err(::serde::de::Error::custom("untagged and internally tagged enums do not support enum input"))
            }}
        }}
        deserializer.deserialize_any(__Scalar)
    }}
}}
"#
    ))
}

/// Marks the `NKnown` enum of each open enumeration `#[non_exhaustive]`: a value
/// the spec adds later is then no breaking change for crates that match on it.
fn known_values_are_non_exhaustive(file: &mut syn::File, open: &[(String, Vec<String>)]) {
    let Some(types) = types_items(file) else {
        return;
    };
    for item in types {
        if let syn::Item::Enum(e) = item {
            if open
                .iter()
                .any(|(name, _)| e.ident == format!("{name}Known"))
            {
                e.attrs.push(syn::parse_quote!(#[non_exhaustive]));
            }
        }
    }
}

/// The items of the generated `mod types`.
fn types_items(file: &mut syn::File) -> Option<&mut Vec<syn::Item>> {
    file.items.iter_mut().find_map(|item| match item {
        syn::Item::Mod(m) if m.ident == "types" => m.content.as_mut().map(|(_, items)| items),
        _ => None,
    })
}

/// Gives `Default` to the structs of `mod types` that can have one, so that
/// other crates can build one as `Machine { id: "m1".into(), ..Default::default() }`
/// and go on compiling when the spec gains a field: each field takes the default
/// the spec declares (`#[serde(default = "…")]`, what a missing field reads as),
/// or else its type's empty value (`None`, an empty list or string, `false`, 0, no
/// unknown fields, the default of another such struct). A struct the generator
/// already derives `Default` for keeps it; one with a field of any other type
/// gets none.
fn derive_default(file: &mut syn::File) -> Result<(), String> {
    let Some(types) = types_items(file) else {
        return Ok(());
    };
    let derives_default = |attrs: &[syn::Attribute]| {
        attrs
            .iter()
            .filter_map(derived)
            .flatten()
            .any(|p| p.segments.last().is_some_and(|s| s.ident == "Default"))
    };
    let structs: Vec<&syn::ItemStruct> = types
        .iter()
        .filter_map(|item| match item {
            syn::Item::Struct(s) => Some(s),
            _ => None,
        })
        .collect();
    // Those the generator gave a `Default`: derived, or written out (when a
    // field declares a default).
    let written: Vec<String> = types
        .iter()
        .filter_map(|item| match item {
            syn::Item::Impl(i)
                if i.trait_
                    .as_ref()
                    .and_then(|(path, _)| path.segments.last())
                    .is_some_and(|s| s.ident == "Default") =>
            {
                match &*i.self_ty {
                    syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect();
    let mut with_default: std::collections::HashSet<String> = structs
        .iter()
        .filter(|s| derives_default(&s.attrs))
        .map(|s| s.ident.to_string())
        .chain(written)
        .collect();
    // The value of each field, for a struct whose every field has one.
    let defaults = |s: &syn::ItemStruct, with_default: &std::collections::HashSet<String>| {
        let syn::Fields::Named(fields) = &s.fields else {
            return None;
        };
        fields
            .named
            .iter()
            .map(|field| {
                let name = field.ident.clone()?;
                if let Some(path) = field_attrs(&field.attrs)?.default.flatten() {
                    syn::parse_str::<syn::ExprPath>(&path).ok()?;
                    return Some(format!("{name}: {path}()"));
                }
                has_empty_value(&field.ty, with_default)
                    .then(|| format!("{name}: ::std::default::Default::default()"))
            })
            .collect::<Option<Vec<_>>>()
    };
    // Until no more structs qualify: a struct may hold another one.
    let mut impls = String::new();
    loop {
        let found: Vec<_> = structs
            .iter()
            .filter(|s| !with_default.contains(&s.ident.to_string()))
            .filter_map(|s| Some((s.ident.clone(), defaults(s, &with_default)?)))
            .collect();
        if found.is_empty() {
            break;
        }
        for (name, fields) in found {
            with_default.insert(name.to_string());
            impls.push_str(&format!(
                "impl ::std::default::Default for {name} {{ fn default() -> Self {{ Self {{ {} }} }} }}\n",
                fields.join(", ")
            ));
        }
    }
    // The records the README says other crates can build this way.
    for record in ["Machine", "IpAddress", "VmMetadata"] {
        if structs.iter().any(|s| s.ident == record) && !with_default.contains(record) {
            println!(
                "cargo:warning={SPEC}: components/schemas/{record} has no `Default` any more \
                 (a field has neither a default nor an empty value, such as a required one \
                 that is not nullable): crates that build one with `..Default::default()` \
                 no longer compile"
            );
        }
    }
    let impls: syn::File =
        syn::parse_str(&impls).map_err(|e| format!("the Default impls do not parse: {e}"))?;
    types.extend(impls.items);
    Ok(())
}

/// Whether `ty` has an empty value as its `Default`: the standard types the
/// generator writes in full (`::std::option::Option`, …), the primitive numbers
/// and `bool`, the unknown fields, and the structs in `with_default`.
fn has_empty_value(ty: &syn::Type, with_default: &std::collections::HashSet<String>) -> bool {
    let syn::Type::Path(p) = ty else {
        return false;
    };
    if p.qself.is_some() {
        return false;
    }
    const PRIMITIVES: [&str; 13] = [
        "bool", "i8", "i16", "i32", "i64", "i128", "u8", "u16", "u32", "u64", "u128", "f32", "f64",
    ];
    let single = p.path.leading_colon.is_none() && p.path.segments.len() == 1;
    [
        &["std", "option", "Option"][..],
        &["std", "vec", "Vec"],
        &["std", "string", "String"],
        &["std", "collections", "HashMap"],
        &["std", "collections", "BTreeMap"],
        &["serde_json", "Map"],
        &["crate", "UnknownFields"],
    ]
    .iter()
    .any(|path| is_path(ty, path))
        || (single
            && p.path.segments[0].arguments.is_none()
            && (PRIMITIVES.iter().any(|t| p.path.segments[0].ident == t)
                || with_default.contains(&p.path.segments[0].ident.to_string())))
}

/// Removes `name` from the `#[derive(..)]` lists in `attrs`.
fn drop_derive(attrs: &mut [syn::Attribute], name: &str) {
    for attr in attrs.iter_mut() {
        let Some(paths) = derived(attr) else {
            continue;
        };
        let kept: syn::punctuated::Punctuated<syn::Path, syn::Token![,]> = paths
            .into_iter()
            .filter(|p| p.segments.last().is_none_or(|s| s.ident != name))
            .collect();
        *attr = syn::parse_quote!(#[derive(#kept)]);
    }
}

/// The paths `attr` derives, if it is a `#[derive(..)]`.
fn derived(
    attr: &syn::Attribute,
) -> Option<syn::punctuated::Punctuated<syn::Path, syn::Token![,]>> {
    if !attr.path().is_ident("derive") {
        return None;
    }
    attr.parse_args_with(syn::punctuated::Punctuated::parse_terminated)
        .ok()
}

/// What `#[serde(..)]` says about a field (or a variant), when it says only what
/// [`struct_deserialize`] handles.
#[derive(Default)]
struct FieldAttrs {
    rename: Option<String>,
    /// `Some(None)` for `default`, `Some(Some(path))` for `default = "path"`.
    default: Option<Option<String>>,
    flatten: bool,
    /// `deserialize_with = "::std::option::Option::deserialize"`, which the
    /// generator writes on a required nullable property: an `Option` that
    /// must be present (`null` is `None`, a missing key an error).
    required_option: bool,
}

fn field_attrs(attrs: &[syn::Attribute]) -> Option<FieldAttrs> {
    let mut out = FieldAttrs::default();
    let mut supported = true;
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            let has_value = meta.input.peek(syn::Token![=]);
            if meta.path.is_ident("rename") {
                out.rename = Some(meta.value()?.parse::<syn::LitStr>()?.value());
            } else if meta.path.is_ident("default") {
                out.default = Some(if has_value {
                    Some(meta.value()?.parse::<syn::LitStr>()?.value())
                } else {
                    None
                });
            } else if meta.path.is_ident("flatten") {
                out.flatten = true;
            } else if meta.path.is_ident("skip_serializing_if") {
                meta.value()?.parse::<syn::LitStr>()?;
            } else if meta.path.is_ident("deserialize_with") && has_value {
                let with = meta.value()?.parse::<syn::LitStr>()?.value();
                if with == "::std::option::Option::deserialize" {
                    out.required_option = true;
                } else {
                    supported = false;
                }
            } else {
                supported = false;
                if has_value {
                    meta.value()?.parse::<syn::Expr>()?;
                }
            }
            Ok(())
        })
        .ok()?;
    }
    supported.then_some(out)
}

fn is_option(ty: &syn::Type) -> bool {
    matches!(ty, syn::Type::Path(p) if p.qself.is_none()
        && p.path.segments.last().is_some_and(|s| s.ident == "Option"))
}

/// Whether `ty` is `path`, written in full from the crate root (as the generator
/// writes standard types, so that a spec type of the same name never matches).
fn is_path(ty: &syn::Type, path: &[&str]) -> bool {
    let syn::Type::Path(p) = ty else {
        return false;
    };
    p.qself.is_none()
        && (p.path.leading_colon.is_some() || path.first() == Some(&"crate"))
        && p.path.segments.len() == path.len()
        && p.path
            .segments
            .iter()
            .zip(path)
            .all(|(s, name)| s.ident == name)
}

/// The type arguments of the last segment of `ty` (`[K, V]` of `Map<K, V>`), if
/// it has nothing but types in angle brackets.
fn type_arguments(ty: &syn::Type) -> Option<Vec<&syn::Type>> {
    let syn::Type::Path(p) = ty else {
        return None;
    };
    let syn::PathArguments::AngleBracketed(args) = &p.path.segments.last()?.arguments else {
        return None;
    };
    args.args
        .iter()
        .map(|a| match a {
            syn::GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect()
}

/// Whether `ty` is a `::std::vec::Vec<_>` or an `::std::option::Option` of one.
fn holds_vec(ty: &syn::Type) -> bool {
    is_path(ty, &["std", "vec", "Vec"]) || is_option_of(ty, holds_vec)
}

/// Whether `ty` is `::chrono::DateTime<::chrono::offset::Utc>`, what the generator
/// writes for `format: date-time`.
fn is_utc_time(ty: &syn::Type) -> bool {
    is_path(ty, &["chrono", "DateTime"])
        && matches!(type_arguments(ty).as_deref(), Some([zone]) if is_path(zone, &["chrono", "offset", "Utc"]))
}

/// Whether `ty` is `::std::option::Option<T>` of a `T` for which `inner` holds.
fn is_option_of(ty: &syn::Type, inner: fn(&syn::Type) -> bool) -> bool {
    is_path(ty, &["std", "option", "Option"])
        && matches!(type_arguments(ty).as_deref(), Some([t]) if inner(t))
}

/// Whether `ty` is `::serde_json::Map<::std::string::String, ::serde_json::Value>`,
/// what the generator writes for `additionalProperties: {}` (or `true`).
fn is_json_map(ty: &syn::Type) -> bool {
    is_path(ty, &["serde_json", "Map"])
        && matches!(type_arguments(ty).as_deref(), Some([key, value])
            if is_path(key, &["std", "string", "String"]) && is_path(value, &["serde_json", "Value"]))
}

/// A direct `Deserialize` for a struct whose last field is `#[serde(flatten)] extra`.
fn struct_deserialize(s: &syn::ItemStruct) -> Option<String> {
    let syn::Fields::Named(named) = &s.fields else {
        return None;
    };
    if !s.generics.params.is_empty() || s.attrs.iter().any(|a| a.path().is_ident("serde")) {
        return None;
    }
    let fields: Vec<(&syn::Field, FieldAttrs)> = named
        .named
        .iter()
        .map(|f| field_attrs(&f.attrs).map(|a| (f, a)))
        .collect::<Option<_>>()?;
    let (last, last_attrs) = fields.last()?;
    if !last_attrs.flatten
        || last.ident.as_ref()? != "extra"
        || !is_path(&last.ty, &["crate", "UnknownFields"])
    {
        return None;
    }
    let known = &fields[..fields.len() - 1];
    if known.iter().any(|(_, a)| a.flatten) {
        return None;
    }
    let name = &s.ident;
    let (mut variants, mut keys, mut slots, mut arms, mut build) = (
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    );
    for (i, (field, attrs)) in known.iter().enumerate() {
        let ident = field.ident.as_ref()?;
        let plain = ident.to_string();
        let key = attrs
            .rename
            .clone()
            .unwrap_or_else(|| plain.strip_prefix("r#").unwrap_or(&plain).to_owned());
        variants.push_str(&format!("F{i}, "));
        keys.push_str(&format!("{key:?} => __Field::F{i},\n"));
        slots.push_str(&format!("let mut f{i} = ::std::option::Option::None;\n"));
        // A list is trimmed to its length as soon as it is read (see `src/fit.rs`).
        // A timestamp in the service's own shape is read without `chrono`'s
        // general parser (see `src/timestamp.rs`).
        let read = if holds_vec(&field.ty) {
            "crate::fit::Fit::fit(map.next_value()?)"
        } else if is_utc_time(&field.ty) {
            "map.next_value::<crate::timestamp::Rfc3339<::chrono::DateTime<::chrono::offset::Utc>>>()?.0"
        } else if is_option_of(&field.ty, is_utc_time) {
            "map.next_value::<crate::timestamp::Rfc3339<::std::option::Option<\
             ::chrono::DateTime<::chrono::offset::Utc>>>>()?.0"
        } else {
            "map.next_value()?"
        };
        arms.push_str(&format!(
            "__Field::F{i} => {{
                if f{i}.is_some() {{
                    return Err(<__A::Error as ::serde::de::Error>::duplicate_field({key:?}));
                }}
                f{i} = Some({read});
            }}\n"
        ));
        let value = match &attrs.default {
            Some(None) => format!("f{i}.unwrap_or_default()"),
            Some(Some(path)) => format!("f{i}.unwrap_or_else({path})"),
            None if is_option(&field.ty) && !attrs.required_option => {
                format!("f{i}.unwrap_or_default()")
            }
            None => format!(
                "f{i}.ok_or_else(|| <__A::Error as ::serde::de::Error>::missing_field({key:?}))?"
            ),
        };
        build.push_str(&format!("{ident}: {value},\n"));
    }
    Some(format!(
        r#"
impl<'de> ::serde::Deserialize<'de> for {name} {{
    fn deserialize<__D: ::serde::Deserializer<'de>>(deserializer: __D) -> ::std::result::Result<Self, __D::Error> {{
        enum __Field {{ {variants} Other }}
        // Reads a key; an unknown one is written straight into `extra`.
        struct __Key<'a>(&'a mut crate::unknown::Collector);
        impl<'de> ::serde::de::DeserializeSeed<'de> for __Key<'_> {{
            type Value = __Field;
            fn deserialize<__D: ::serde::Deserializer<'de>>(self, deserializer: __D) -> ::std::result::Result<__Field, __D::Error> {{
                deserializer.deserialize_identifier(self)
            }}
        }}
        impl<'de> ::serde::de::Visitor<'de> for __Key<'_> {{
            type Value = __Field;
            fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {{
                f.write_str("a field name")
            }}
            fn visit_str<__E: ::serde::de::Error>(self, v: &str) -> ::std::result::Result<__Field, __E> {{
                Ok(match v {{
                    {keys}
                    other => {{
                        self.0.key(other);
                        __Field::Other
                    }}
                }})
            }}
        }}
        struct __Fields;
        impl<'de> ::serde::de::Visitor<'de> for __Fields {{
            type Value = {name};
            fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {{
                f.write_str("struct {name}")
            }}
            fn visit_map<__A: ::serde::de::MapAccess<'de>>(self, mut map: __A) -> ::std::result::Result<Self::Value, __A::Error> {{
                {slots}
                let mut extra = crate::unknown::Collector::new();
                while let Some(field) = map.next_key_seed(__Key(&mut extra))? {{
                    match field {{
                        {arms}
                        __Field::Other => extra.value(&mut map)?,
                    }}
                }}
                Ok({name} {{
                    {build}
                    extra: extra.finish(),
                }})
            }}
        }}
        deserializer.deserialize_map(__Fields)
    }}
}}
"#
    ))
}
