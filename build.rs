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

    let mut generator = progenitor::Generator::new(&settings);
    let tokens = generator
        .generate_tokens(&spec)
        .map_err(|e| format!("code generation failed: {e}"))?;
    let file: syn::File =
        syn::parse2(tokens).map_err(|e| format!("generated code does not parse: {e}"))?;
    let code = prettyplease::unparse(&file);

    let out_dir = env::var("OUT_DIR").map_err(|e| e.to_string())?;
    write(&Path::new(&out_dir).join("codegen.rs"), &code)?;
    write(
        &Path::new(&out_dir).join("operations.rs"),
        &operations(&spec)?,
    )
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
