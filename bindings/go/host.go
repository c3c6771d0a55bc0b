package wingsbackup

/*
#include "wings_backup.h"
*/
import "C"

import (
	"encoding/json"
	"fmt"
)

// HostSetting is one setting of an HTTP host over the library (a flag,
// maybe read from an environment variable or a Wings config.yml). Hosts
// build their flag parsers from HostSettings.
type HostSetting struct {
	Flag    string   `json:"flag"`
	Type    string   `json:"type"` // "string", "uint", "bool" or "duration"
	Default string   `json:"default"`
	Metavar string   `json:"metavar"`
	Help    string   `json:"help"`
	Usage   string   `json:"usage"` // Help with the default, for --help
	Env     string   `json:"env"`
	Config  []string `json:"config"`
	Secret  bool     `json:"secret"`
}

// HostSettings is the library's table of host settings, in --help order.
func HostSettings() ([]HostSetting, error) {
	if err := checkABI(); err != nil {
		return nil, err
	}
	var out []HostSetting
	if err := json.Unmarshal([]byte(C.GoString(C.wb_host_settings())), &out); err != nil {
		return nil, fmt.Errorf("wingsbackup: decoding the host settings: %w", err)
	}
	return out, nil
}

// HostWarning is something to log as a warning at start: an ignored
// config.yml key (Key, dotted) or a setting of the file not honoured.
type HostWarning struct {
	Message string `json:"message"`
	Key     string `json:"key,omitempty"`
}

// ResolvedHostSettings is what flags, environment and --config add up to.
type ResolvedHostSettings struct {
	// Engine is the configuration for NewEngineFromJSON.
	Engine json.RawMessage `json:"engine"`
	Host   struct {
		Listen             string  `json:"listen"`
		Token              string  `json:"token"`
		AsyncRestore       bool    `json:"async_restore"`
		ReadHeaderTimeoutS float64 `json:"read_header_timeout_s"`
		ReadTimeoutS       float64 `json:"read_timeout_s"`
		Config             string  `json:"config"`
	} `json:"host"`
	// Settings are the fields of the start-up "settings" log line, in
	// order (no secret; the Panel URL redacted).
	Settings [][2]string `json:"settings"`
	// Sources maps each flag name to "flag", "env", "config" or "default".
	Sources  map[string]string `json:"sources"`
	Warnings []HostWarning     `json:"warnings"`
}

// ResolveHostSettings resolves a host's settings from the flags the user
// set (by name: string, uint64, bool, or seconds as float64) and the
// environment (by variable name). Errors are ErrInvalidArgument naming the
// flag (and the path, for --config).
func ResolveHostSettings(flags map[string]any, env map[string]string) (*ResolvedHostSettings, error) {
	if err := checkABI(); err != nil {
		return nil, err
	}
	flagsJSON, err := json.Marshal(flags)
	if err != nil {
		return nil, fmt.Errorf("wingsbackup: encoding the flags: %w", err)
	}
	envJSON, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("wingsbackup: encoding the environment: %w", err)
	}
	ptrs, free, err := cStrings(arg{"flags", string(flagsJSON)}, arg{"env", string(envJSON)})
	if err != nil {
		return nil, err
	}
	defer free()
	var out *C.char
	var cerr *C.wb_error
	if status := C.wb_host_settings_resolve(ptrs[0], ptrs[1], &out, &cerr); status != C.WB_OK {
		return nil, takeError(status, cerr)
	}
	var r ResolvedHostSettings
	if err := json.Unmarshal(takeString(out), &r); err != nil {
		return nil, fmt.Errorf("wingsbackup: decoding the settings: %w", err)
	}
	return &r, nil
}

// CreatedDirectory is a directory PrepareHostDirectories created.
type CreatedDirectory struct {
	Flag string `json:"flag"`
	Path string `json:"path"`
	Mode string `json:"mode"`
}

// PrepareHostDirectories creates the data and backup directories if
// missing and checks them (ErrIO naming the flag and path).
func PrepareHostDirectories(dataDir, backupDir string) ([]CreatedDirectory, error) {
	if err := checkABI(); err != nil {
		return nil, err
	}
	ptrs, free, err := cStrings(arg{"data_dir", dataDir}, arg{"backup_dir", backupDir})
	if err != nil {
		return nil, err
	}
	defer free()
	var out *C.char
	var cerr *C.wb_error
	if status := C.wb_host_prepare_directories(ptrs[0], ptrs[1], &out, &cerr); status != C.WB_OK {
		return nil, takeError(status, cerr)
	}
	var created []CreatedDirectory
	if err := json.Unmarshal(takeString(out), &created); err != nil {
		return nil, fmt.Errorf("wingsbackup: decoding the created directories: %w", err)
	}
	return created, nil
}
