//! Generates the C header from `src/ffi` with cbindgen and sets the shared
//! library's SONAME, `libwings_backup.so.<major version>`: programs linked
//! against it keep loading it across compatible releases.
//!
//! The status codes' `#define`s come from the status table in src/error.rs
//! (the `status_table!` rows, which also declare `Status` and the Rust
//! constants): cbindgen does not expand macros, so this script reads the rows
//! and hands cbindgen the defines to place after the includes.
//!
//! The header is always written to `$OUT_DIR/wings_backup.h`; the committed
//! copy, `include/wings_backup.h`, is rewritten when it is missing or when
//! `WB_BLESS_HEADER=1` (`make header`). `tests/header.rs` fails when the two
//! differ, so the committed header cannot drift from the code.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=src/error.rs");
    println!("cargo:rerun-if-env-changed=WB_BLESS_HEADER");
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("set by cargo");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libwings_backup.so.{major}");

    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let mut config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    let table = std::fs::read_to_string(crate_dir.join("src/error.rs")).expect("src/error.rs");
    config.after_includes = Some(status_defines(&table));
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/ffi/mod.rs"))
        .generate()
        .expect("the C header can be generated");
    bindings.write_to_file(out_dir.join("wings_backup.h"));
    let committed = crate_dir.join("include/wings_backup.h");
    if !committed.exists() || std::env::var("WB_BLESS_HEADER").as_deref() == Ok("1") {
        std::fs::create_dir_all(crate_dir.join("include")).expect("include/ can be created");
        bindings.write_to_file(committed);
    }
}

/// One row of the status table.
struct Row {
    doc: Vec<String>,
    name: String,
    value: u32,
}

/// Reads the rows of the `status_table! { ... }` invocation in src/error.rs:
/// `/// doc` lines, then `Variant = value, WB_NAME, http;`. Anything else in
/// the table stops the build, so the header cannot silently lose a status.
fn status_rows(source: &str) -> Vec<Row> {
    let mut lines = source.lines().map(str::trim);
    lines
        .by_ref()
        .find(|l| *l == "status_table! {")
        .expect("src/error.rs invokes `status_table! {`");
    let mut rows = Vec::new();
    let mut doc = Vec::new();
    for line in lines {
        if line == "}" {
            break;
        }
        if let Some(text) = line.strip_prefix("///") {
            doc.push(text.strip_prefix(' ').unwrap_or(text).to_string());
            continue;
        }
        let fields: Vec<&str> = line
            .strip_suffix(';')
            .map(|l| l.split([',', '=']).map(str::trim).collect())
            .unwrap_or_default();
        let [_variant, value, name, http] = fields[..] else {
            panic!("src/error.rs: not a status row: {line:?}");
        };
        assert!(
            name.starts_with("WB_") && http.parse::<u16>().is_ok(),
            "src/error.rs: bad status row: {line:?}"
        );
        rows.push(Row {
            doc: std::mem::take(&mut doc),
            name: name.to_string(),
            value: value.parse().expect("a status value is a number"),
        });
    }
    assert!(!rows.is_empty(), "src/error.rs: the status table is empty");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(
            row.value as usize, i,
            "status values are dense and in order"
        );
    }
    rows
}

/// The status `#define`s, each under its doc comment, as cbindgen writes
/// constants (cbindgen ends the text with a line break of its own).
fn status_defines(source: &str) -> String {
    let mut out = String::new();
    for row in status_rows(source) {
        out.push_str("\n/**\n");
        for line in &row.doc {
            out.push_str(&format!(" * {line}\n").replace(" * \n", " *\n"));
        }
        out.push_str(&format!(" */\n#define {} {}\n", row.name, row.value));
    }
    out.pop();
    out
}
