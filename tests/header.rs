//! The committed C header is what cbindgen generates from `src/ffi` now, and
//! its version macros match Cargo.toml.

#[test]
fn committed_header_matches_the_code() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/wings_backup.h"));
    let committed = include_str!("../include/wings_backup.h");
    assert!(
        generated == committed,
        "include/wings_backup.h is out of date: run `make header` and commit it"
    );
}

#[test]
fn version_macros_match_the_crate() {
    use wings_backup::ffi::{WB_VERSION_MAJOR, WB_VERSION_MINOR, WB_VERSION_PATCH};
    let parts: Vec<u32> = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(
        parts,
        vec![WB_VERSION_MAJOR, WB_VERSION_MINOR, WB_VERSION_PATCH]
    );
    let header = include_str!("../include/wings_backup.h");
    assert!(header.contains(&format!("#define WB_VERSION_MAJOR {WB_VERSION_MAJOR}")));
    let version = unsafe { std::ffi::CStr::from_ptr(wings_backup::ffi::wb_version()) };
    assert_eq!(version.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn status_codes_are_never_renumbered() {
    use wings_backup::ffi::*;
    assert_eq!(
        [
            WB_OK,
            WB_INVALID_ARGUMENT,
            WB_NOT_FOUND,
            WB_CONFLICT,
            WB_CORRUPT_ARCHIVE,
            WB_UNSAFE_ENTRY,
            WB_QUOTA,
            WB_REMOTE,
            WB_CANCELLED,
            WB_IO,
            WB_INTERNAL
        ],
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    );
    let header = include_str!("../include/wings_backup.h");
    for s in wings_backup::Status::ALL {
        let name = unsafe { std::ffi::CStr::from_ptr(wb_status_name(s as i32)) };
        assert_eq!(name.to_str().unwrap(), s.name());
        assert_eq!(wb_status_http(s as i32), s.http_status());
        let define = format!("#define {} {}\n", s.name(), s as i32);
        assert!(header.contains(&define), "the header lacks {define:?}");
    }
    let statuses = header
        .lines()
        .filter(|l| l.starts_with("#define WB_"))
        .filter(|l| {
            !["VERSION_", "ABI_", "PHASE_", "LOG_", "HTTP_"]
                .iter()
                .any(|p| l[11..].starts_with(p))
        })
        .count();
    assert_eq!(
        statuses,
        wings_backup::Status::ALL.len(),
        "statuses in the header"
    );
}

#[test]
fn log_levels_are_never_renumbered() {
    use wings_backup::ffi::{WB_LOG_DEBUG, WB_LOG_ERROR, WB_LOG_INFO, WB_LOG_WARN};
    let header = include_str!("../include/wings_backup.h");
    for (name, value, want) in [
        ("WB_LOG_DEBUG", WB_LOG_DEBUG, 0),
        ("WB_LOG_INFO", WB_LOG_INFO, 1),
        ("WB_LOG_WARN", WB_LOG_WARN, 2),
        ("WB_LOG_ERROR", WB_LOG_ERROR, 3),
    ] {
        assert_eq!(value, want, "{name}");
        assert!(
            header.contains(&format!("#define {name} {want}\n")),
            "{name}"
        );
    }
}
