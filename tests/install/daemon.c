/*
 * A program outside the checkout, built against an installed libwings_backup
 * (`make install`, then `pkg-config --cflags --libs wings_backup`): it backs up
 * a server of a node and restores the archive into a second directory.
 *
 *   daemon DATA_DIR BACKUP_DIR SERVER_UUID BACKUP_UUID RESTORE_DIR
 *
 * Prints the library's version and the archive's checksum; exits 0 on success.
 */
#include <stdio.h>
#include <string.h>

#include <wings_backup.h>

static int fail(const char *what, int32_t status, wb_error *err) {
    fprintf(stderr, "%s: %s (%s, HTTP %u): %s\n", what, wb_status_name(status),
            wb_status_name(wb_error_status(err)), wb_status_http(status), wb_error_message(err));
    wb_error_free(err);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s DATA_DIR BACKUP_DIR SERVER_UUID BACKUP_UUID RESTORE_DIR\n", argv[0]);
        return 2;
    }
    if (wb_abi_version() != WB_ABI_VERSION) {
        fprintf(stderr, "ABI %u, header %u\n", wb_abi_version(), (unsigned)WB_ABI_VERSION);
        return 1;
    }
    char config[4096];
    snprintf(config, sizeof config, "{\"data_directory\":\"%s\",\"backup_directory\":\"%s\"}",
             argv[1], argv[2]);
    wb_engine *engine = NULL;
    wb_error *err = NULL;
    int32_t rc = wb_engine_new(config, &engine, &err);
    if (rc != WB_OK) return fail("wb_engine_new", rc, err);

    char request[256];
    snprintf(request, sizeof request, "{\"adapter\":\"wings\",\"uuid\":\"%s\",\"ignore\":\"*.log\"}",
             argv[4]);
    char *details = NULL;
    rc = wb_backup_create(engine, argv[3], request, NULL, NULL, NULL, &details, &err);
    if (rc != WB_OK) {
        wb_engine_free(engine);
        return fail("wb_backup_create", rc, err);
    }
    printf("version %s\ndetails %s\n", wb_version(), details);
    wb_string_free(details);
    wb_engine_free(engine);

    char archive[4096];
    snprintf(archive, sizeof archive, "%s/%s.tar.gz", argv[2], argv[4]);
    char *summary = NULL;
    rc = wb_archive_extract(archive, argv[5], NULL, NULL, NULL, NULL, &summary, &err);
    if (rc != WB_OK) return fail("wb_archive_extract", rc, err);
    printf("extracted %s\n", summary);
    wb_string_free(summary);
    return 0;
}
