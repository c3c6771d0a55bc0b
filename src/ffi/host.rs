//! The hosts' settings (`crate::host_settings`): the table, their
//! resolution, and the directories prepared at start.

use std::ffi::{c_char, CString};

use once_cell::sync::Lazy;

use super::error::wb_error;
use super::support::{boundary, clear_string, opt_str_arg, put_string, str_arg};
use crate::host_settings;

static SETTINGS: Lazy<CString> =
    Lazy::new(|| CString::new(host_settings::SETTINGS_JSON.as_str()).expect("no NUL in the table"));

/// The settings of an HTTP host over this library, as a static JSON array
/// (never freed), in `--help` order. Each entry: `flag` (name without
/// dashes), `type` (`"string"`, `"uint"`, `"bool"` or `"duration"`),
/// `default` (as written on a command line, `""` = none), `metavar`,
/// `help`, `usage` (help with the default, what `--help` prints), `env`
/// (environment variable or null), `config` (dotted Wings config.yml keys
/// it is read from) and `secret` (never logged). Hosts build their flag
/// parsers from it and pass the flags the user set to
/// `wb_host_settings_resolve`.
#[no_mangle]
pub extern "C" fn wb_host_settings() -> *const c_char {
    SETTINGS.as_ptr()
}

/// Resolves a host's settings: each from its flag if set, else its
/// environment variable, else the Wings config.yml named by `config`, else
/// its default. `flags_json`: an object of the flags the user set, by name
/// (strings, non-negative integers, booleans, durations as seconds; or,
/// for any of them, the text given on the command line, read as Go's flag
/// package reads it: `0x10`, `1_000`, `t`, `false`, `1m30s`);
/// `env_json`: an object of environment variables (NULL or `null` = none). On success
/// `*resolved_json` (free with `wb_string_free`) is an object:
/// `engine` (the configuration for `wb_engine_new`), `host` (`listen`,
/// `token`, `async_restore`, `read_header_timeout_s`, `read_timeout_s`,
/// `config`), `settings` (the start-up log line's fields as `[name, value]`
/// pairs, without secrets, the Panel URL redacted, then `from_flag`,
/// `from_env`, `from_config`), `sources` (flag name to `"flag"`, `"env"`,
/// `"config"` or `"default"`) and `warnings` (`{"message", "key"?}`: each
/// config.yml key no setting uses, by dotted path, and `api.ssl` being
/// ignored), and `log` (`{"level": "INFO"|"WARN", "line"}`: the warnings
/// and the settings line as text, values quoted as Go's log/slog writes
/// them, for a host that logs text). Errors are `WB_INVALID_ARGUMENT` naming the flag, and the path
/// for --config (`--config PATH: cannot read: ...`, `--config PATH: invalid
/// YAML: line N: ...`). The --config file must be a regular file of at most
/// 1 MiB (`cannot read: not a regular file`, `cannot read: larger than 1
/// MiB`): a FIFO or a device is refused without reading or waiting.
#[no_mangle]
pub unsafe extern "C" fn wb_host_settings_resolve(
    flags_json: *const c_char,
    env_json: *const c_char,
    resolved_json: *mut *mut c_char,
    err: *mut *mut wb_error,
) -> i32 {
    clear_string(resolved_json);
    boundary(err, || {
        let flags = str_arg(flags_json, "flags_json")?;
        let env = opt_str_arg(env_json, "env_json")?;
        put_string(resolved_json, host_settings::resolve_json(flags, env)?);
        Ok(())
    })
}

/// Creates the data and backup directories if missing (0755 and 0700),
/// checks that both are directories and that the backup directory is
/// writable. Errors are `WB_IO` naming the flag and path
/// (`--backup-dir PATH: not writable: ...`). On success `*created_json`
/// (free with `wb_string_free`; may be NULL) is a JSON array of the
/// directories created: `{"flag", "path", "mode", "line"}` (`line`: the
/// log line, `created directory flag=... path=... mode=0700`).
#[no_mangle]
pub unsafe extern "C" fn wb_host_prepare_directories(
    data_dir: *const c_char,
    backup_dir: *const c_char,
    created_json: *mut *mut c_char,
    err: *mut *mut wb_error,
) -> i32 {
    clear_string(created_json);
    boundary(err, || {
        let data = str_arg(data_dir, "data_dir")?;
        let backups = str_arg(backup_dir, "backup_dir")?;
        let created = host_settings::prepare_directories(data, backups)?;
        put_string(
            created_json,
            serde_json::to_string(&created).expect("serializes"),
        );
        Ok(())
    })
}
