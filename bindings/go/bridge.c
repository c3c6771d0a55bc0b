#include "bridge.h"

#include "_cgo_export.h"

/* The progress callback the library calls: it forwards to the exported Go
 * function with the handle it was given as userdata. It runs on the thread
 * that made the call, which is the goroutine's locked thread. */
static int32_t wbgo_progress(void *userdata, const wb_progress *progress) {
    return wbGoProgress((uintptr_t)userdata, (wb_progress *)progress);
}

static wb_progress_fn progress_fn(uintptr_t handle) {
    return handle != 0 ? wbgo_progress : NULL;
}

int32_t wbgo_backup_create(const wb_engine *engine, const char *server_uuid,
                           const char *request_json, uintptr_t progress,
                           const wb_cancel *cancel, char **details_json,
                           wb_error **err) {
    return wb_backup_create(engine, server_uuid, request_json,
                            progress_fn(progress), (void *)progress, cancel,
                            details_json, err);
}

int32_t wbgo_backup_restore(const wb_engine *engine, const char *server_uuid,
                            const char *backup_uuid, const char *request_json,
                            uintptr_t progress, const wb_cancel *cancel,
                            wb_error **err) {
    return wb_backup_restore(engine, server_uuid, backup_uuid, request_json,
                             progress_fn(progress), (void *)progress, cancel,
                             err);
}

int32_t wbgo_archive_create(const char *source_dir, const char *archive_path,
                            const char *options_json, uintptr_t progress,
                            const wb_cancel *cancel, char **summary_json,
                            wb_error **err) {
    return wb_archive_create(source_dir, archive_path, options_json,
                             progress_fn(progress), (void *)progress, cancel,
                             summary_json, err);
}

int32_t wbgo_archive_extract(const char *archive_path, const char *dest_dir,
                             const char *options_json, uintptr_t progress,
                             const wb_cancel *cancel, char **summary_json,
                             wb_error **err) {
    return wb_archive_extract(archive_path, dest_dir, options_json,
                              progress_fn(progress), (void *)progress, cancel,
                              summary_json, err);
}

int32_t wbgo_backup_verify(const wb_engine *engine, const char *server_uuid,
                           const char *backup_uuid, uintptr_t progress,
                           const wb_cancel *cancel, char **report_json,
                           wb_error **err) {
    return wb_backup_verify(engine, server_uuid, backup_uuid,
                            progress_fn(progress), (void *)progress, cancel,
                            report_json, err);
}

int32_t wbgo_archive_verify(const char *archive_path, uintptr_t progress,
                            const wb_cancel *cancel, char **report_json,
                            wb_error **err) {
    return wb_archive_verify(archive_path, progress_fn(progress),
                             (void *)progress, cancel, report_json, err);
}

/* The log callback: forwards to the exported Go function with the handle of
 * the *slog.Logger. It may run on any of the engine's threads (cgo makes a
 * thread the Go runtime did not start able to call Go). */
static void wbgo_log(void *userdata, int32_t level, const char *message) {
    wbGoLog((uintptr_t)userdata, level, (char *)message);
}

int32_t wbgo_engine_set_logger(const wb_engine *engine, uintptr_t logger,
                               wb_error **err) {
    return wb_engine_set_logger(engine, logger != 0 ? wbgo_log : NULL,
                                (void *)logger, err);
}
