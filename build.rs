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
    let spec: openapiv3::OpenAPI = serde_yaml_ng::from_str(&text)
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
    let file: syn::File =
        syn::parse2(tokens).map_err(|e| format!("generated code does not parse: {e}"))?;
    let mut code = prettyplease::unparse(&file);
    code.push_str(&open_enum_impls(&spec));

    let out_dir = env::var("OUT_DIR").map_err(|e| e.to_string())?;
    write(&Path::new(&out_dir).join("codegen.rs"), &code)?;
    write(
        &Path::new(&out_dir).join("operations.rs"),
        &operations(&spec)?,
    )
}

/// Helpers for the spec's open enumerations: a schema `N` that is `oneOf` a
/// `$ref` to `NKnown` (a string enum) and a string titled `NOther`.
fn open_enum_impls(spec: &openapiv3::OpenAPI) -> String {
    use openapiv3::{ReferenceOr, SchemaKind, Type};
    let Some(components) = &spec.components else {
        return String::new();
    };
    let mut out = String::new();
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
