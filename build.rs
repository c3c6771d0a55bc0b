//! Generates the C header from `src/ffi` with cbindgen and sets the shared
//! library's SONAME, `libwings_backup.so.<major version>`: programs linked
//! against it keep loading it across compatible releases.
//!
//! The header is always written to `$OUT_DIR/wings_backup.h`; the committed
//! copy, `include/wings_backup.h`, is rewritten when it is missing or when
//! `WB_BLESS_HEADER=1` (`make header`). `tests/header.rs` fails when the two
//! differ, so the committed header cannot drift from the code.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=WB_BLESS_HEADER");
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("set by cargo");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libwings_backup.so.{major}");

    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is valid");
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
