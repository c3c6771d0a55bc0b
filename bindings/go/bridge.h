/*
 * C side of the Go binding. The wrappers take the cgo.Handle of the Go
 * progress func as an integer (0 = no callback) and pass it to the library
 * as userdata, so Go code never turns an integer into a pointer.
 */
#ifndef WINGSBACKUP_GO_BRIDGE_H
#define WINGSBACKUP_GO_BRIDGE_H

#include <stdint.h>
#include <stdlib.h>

#include "wings_backup.h"

int32_t wbgo_backup_create(const wb_engine *engine, const char *server_uuid,
                           const char *request_json, uintptr_t progress,
                           const wb_cancel *cancel, char **details_json,
                           wb_error **err);

int32_t wbgo_backup_restore(const wb_engine *engine, const char *server_uuid,
                            const char *backup_uuid, const char *request_json,
                            uintptr_t progress, const wb_cancel *cancel,
                            wb_error **err);

int32_t wbgo_archive_create(const char *source_dir, const char *archive_path,
                            const char *options_json, uintptr_t progress,
                            const wb_cancel *cancel, char **summary_json,
                            wb_error **err);

int32_t wbgo_archive_extract(const char *archive_path, const char *dest_dir,
                             const char *options_json, uintptr_t progress,
                             const wb_cancel *cancel, char **summary_json,
                             wb_error **err);

int32_t wbgo_backup_verify(const wb_engine *engine, const char *server_uuid,
                           const char *backup_uuid, uintptr_t progress,
                           const wb_cancel *cancel, char **report_json,
                           wb_error **err);

int32_t wbgo_archive_verify(const char *archive_path, uintptr_t progress,
                            const wb_cancel *cancel, char **report_json,
                            wb_error **err);

/* Sets (logger != 0) or clears the engine's log callback; logger is the
 * cgo.Handle of a *slog.Logger. */
int32_t wbgo_engine_set_logger(const wb_engine *engine, uintptr_t logger,
                               wb_error **err);

#endif
