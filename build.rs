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
    serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text)
        .map_err(|e| format!("not valid YAML: {e}"))?;
    let spec: openapiv3::OpenAPI = serde_yaml_ng::from_str(&text)
        .map_err(|e| format!("not a valid OpenAPI 3.0 document: {e}"))?;
    check_names(&spec)?;

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
    drop_api_version_header(&mut file);
    read_responses_without_copying_headers(&mut file);
    encode_paths_with_the_user_rule(&mut file)?;
    let open = open_enums(&spec);
    document_the_rest(&mut file, &spec, &open);
    direct_deserialize(&mut file, &open)?;
    derive_default(&mut file);
    let mut code = prettyplease::unparse(&file);
    code.push_str(&open_enum_impls(&open));

    let out_dir = env::var("OUT_DIR").map_err(|e| e.to_string())?;
    write(&Path::new(&out_dir).join("codegen.rs"), &code)?;
    write(
        &Path::new(&out_dir).join("operations.rs"),
        &operations(&spec)?,
    )
}

/// Refuses what the generator would turn into Rust that does not compile: a
/// property named `extra` in a schema that keeps unknown fields, whose map is the
/// field `extra`.
fn check_names(spec: &openapiv3::OpenAPI) -> Result<(), String> {
    let Some(components) = &spec.components else {
        return Ok(());
    };
    for (name, schema) in &components.schemas {
        let openapiv3::ReferenceOr::Item(schema) = schema else {
            continue;
        };
        let openapiv3::SchemaKind::Type(openapiv3::Type::Object(object)) = &schema.schema_kind
        else {
            continue;
        };
        let keeps_unknown = !matches!(
            object.additional_properties,
            None | Some(openapiv3::AdditionalProperties::Any(false))
        );
        if let Some(property) = object
            .properties
            .keys()
            .find(|p| keeps_unknown && p.eq_ignore_ascii_case("extra"))
        {
            return Err(format!(
                "components/schemas/{name}/properties/{property}: the name `extra` is taken by \
                 the map that keeps unknown fields; this property needs another name"
            ));
        }
    }
    Ok(())
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
///   alternative whose `title` names the variant (the generator ignores it).
///
/// Items that already have a doc comment keep it; anything else stays
/// undocumented, and `missing_docs` says so.
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
                        alternative(&name, &ident)
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

/// The spec's open enumerations, with their documented values: a schema `N`
/// that is `oneOf` a `$ref` to `NKnown` (a string enum) and a string titled `NOther`.
fn open_enums(spec: &openapiv3::OpenAPI) -> Vec<(String, Vec<String>)> {
    use openapiv3::{ReferenceOr, SchemaKind, Type};
    let Some(components) = &spec.components else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, schema) in &components.schemas {
        let ReferenceOr::Item(schema) = schema else {
            continue;
        };
        let SchemaKind::OneOf { one_of } = &schema.schema_kind else {
            continue;
        };
        let known_ref = format!("#/components/schemas/{name}Known");
        let is_open = one_of.len() == 2
            && matches!(&one_of[0], ReferenceOr::Reference { reference } if *reference == known_ref)
            && matches!(&one_of[1], ReferenceOr::Item(s) if s.schema_data.title.as_deref() == Some(&format!("{name}Other")));
        if !is_open {
            continue;
        }
        let values: Vec<String> = match components.schemas.get(&format!("{name}Known")) {
            Some(ReferenceOr::Item(known)) => match &known.schema_kind {
                SchemaKind::Type(Type::String(s)) => {
                    s.enumeration.iter().flatten().cloned().collect()
                }
                _ => continue,
            },
            _ => continue,
        };
        out.push((name.clone(), values));
    }
    out
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
fn operations(spec: &openapiv3::OpenAPI) -> Result<String, String> {
    let mut table = String::from(
        "/// `(operationId, path template)` of every operation in the spec.\n\
         pub(crate) const OPERATIONS: &[(&str, &str)] = &[\n",
    );
    for (path, item) in spec.paths.iter() {
        let item = item
            .as_item()
            .ok_or_else(|| format!("path {path}: references to path items are not supported"))?;
        for (method, operation) in item.iter() {
            let id = operation
                .operation_id
                .as_deref()
                .ok_or_else(|| format!("{method} {path}: every operation needs an operationId"))?;
            table.push_str(&format!("    ({id:?}, {path:?}),\n"));
        }
    }
    table.push_str("];\n");
    Ok(table)
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
///   the string is read once and parsed with `N`'s `FromStr` (from `open_enum_impls`).
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
            _ => {}
        }
    }
    // Inside `mod types`, where the generator's `defaults` helpers are visible.
    let impls: syn::File =
        syn::parse_str(&out).map_err(|e| format!("the direct deserialisers do not parse: {e}"))?;
    types.extend(impls.items);
    Ok(())
}

/// The items of the generated `mod types`.
fn types_items(file: &mut syn::File) -> Option<&mut Vec<syn::Item>> {
    file.items.iter_mut().find_map(|item| match item {
        syn::Item::Mod(m) if m.ident == "types" => m.content.as_mut().map(|(_, items)| items),
        _ => None,
    })
}

/// Derives `Default` for the structs of `mod types` whose every field has an
/// empty value (`Option`, `Vec`, `String`, the unknown fields), so that other
/// crates can build one as `Machine { id: "m1".into(), ..Default::default() }`
/// and go on compiling when the spec gains a field.
fn derive_default(file: &mut syn::File) {
    let Some(types) = types_items(file) else {
        return;
    };
    for item in types {
        let syn::Item::Struct(s) = item else { continue };
        let syn::Fields::Named(fields) = &s.fields else {
            continue;
        };
        let all_empty = fields.named.iter().all(|field| match &field.ty {
            syn::Type::Path(ty) => ty.path.segments.last().is_some_and(|last| {
                ["Option", "Vec", "String", "UnknownFields"]
                    .iter()
                    .any(|name| last.ident == name)
            }),
            _ => false,
        });
        if all_empty {
            s.attrs.push(syn::parse_quote!(#[derive(Default)]));
        }
    }
}

/// Removes `name` from the `#[derive(..)]` lists in `attrs`.
fn drop_derive(attrs: &mut [syn::Attribute], name: &str) {
    use syn::punctuated::Punctuated;
    for attr in attrs.iter_mut().filter(|a| a.path().is_ident("derive")) {
        let Ok(paths) =
            attr.parse_args_with(Punctuated::<syn::Path, syn::Token![,]>::parse_terminated)
        else {
            continue;
        };
        let kept: Punctuated<syn::Path, syn::Token![,]> = paths
            .into_iter()
            .filter(|p| p.segments.last().is_none_or(|s| s.ident != name))
            .collect();
        *attr = syn::parse_quote!(#[derive(#kept)]);
    }
}

/// What `#[serde(..)]` says about a field (or a variant), when it says only what
/// [`struct_deserialize`] handles.
#[derive(Default)]
struct FieldAttrs {
    rename: Option<String>,
    /// `Some(None)` for `default`, `Some(Some(path))` for `default = "path"`.
    default: Option<Option<String>>,
    flatten: bool,
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
    is_path(ty, &["std", "vec", "Vec"])
        || is_path(ty, &["std", "option", "Option"])
            && matches!(type_arguments(ty).as_deref(), Some([inner]) if holds_vec(inner))
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
        let read = if holds_vec(&field.ty) {
            "crate::fit::Fit::fit(map.next_value()?)"
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
            None if is_option(&field.ty) => format!("f{i}.unwrap_or_default()"),
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
