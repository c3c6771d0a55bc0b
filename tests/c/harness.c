/*
 * C harness for libwings_backup: exercises every exported function through
 * include/wings_backup.h, the way a C host would. Self-checking: prints one
 * line per test and exits non-zero if any check failed. Built and run by
 * `make test-c` under ASan+UBSan and under valgrind, so every error object and
 * string the library hands out is freed here.
 */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "wings_backup.h"

/* ------------------------------------------------------------------------ */
/* Checks                                                                    */

static int g_failures;      /* all tests */
static int g_test_failures; /* current test */

static void fail_at(const char *file, int line, const char *cond, const char *fmt, ...) {
    va_list ap;
    g_failures++;
    g_test_failures++;
    fprintf(stderr, "    FAIL %s:%d: %s: ", file, line, cond);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

#define CHECK(cond, ...)                                         \
    do {                                                         \
        if (!(cond)) fail_at(__FILE__, __LINE__, #cond, __VA_ARGS__); \
    } while (0)


/* Checks a call's status and error object, then frees the error. `want2` is
 * a second accepted status (pass `want` again when there is only one). */
static void expect_impl(const char *file, int line, const char *what, int32_t rc, wb_error *err,
                        int32_t want, int32_t want2, const char *needle) {
    if (want == WB_OK) {
        if (rc != WB_OK) {
            fail_at(file, line, what, "status %s (%d), want WB_OK: %s", wb_status_name(rc), rc,
                    wb_error_message(err));
        }
        if (rc == WB_OK && err != NULL) fail_at(file, line, what, "WB_OK but *err is not NULL");
        wb_error_free(err);
        return;
    }
    if (rc != want && rc != want2) {
        fail_at(file, line, what, "status %s (%d), want %s: %s", wb_status_name(rc), rc,
                wb_status_name(want), err ? wb_error_message(err) : "(no error object)");
    }
    if (err == NULL) {
        fail_at(file, line, what, "failed with %s but *err is NULL", wb_status_name(rc));
        return;
    }
    if (wb_error_status(err) != rc) {
        fail_at(file, line, what, "wb_error_status %d != returned %d", wb_error_status(err), rc);
    }
    const char *msg = wb_error_message(err);
    if (msg == NULL || msg[0] == '\0') fail_at(file, line, what, "empty error message");
    if (needle && msg && !strstr(msg, needle)) {
        fail_at(file, line, what, "message \"%s\" does not mention \"%s\"", msg, needle);
    }
    wb_error_free(err);
}

/* One call with an error object: EXPECT_CALL(want, needle, fn, args...) runs
 * fn(args..., &err). */
#define EXPECT_CALL(want, needle, fn, ...)                                              \
    do {                                                                                \
        wb_error *e_ = NULL;                                                            \
        int32_t r_ = fn(__VA_ARGS__, &e_);                                              \
        expect_impl(__FILE__, __LINE__, #fn "(" #__VA_ARGS__ ")", r_, e_, want, want, needle); \
    } while (0)

/* A failing (or side-effect free) call, made twice: with an error object,
 * then with `err` NULL, which must give the same status. */
#define BOTH(want, needle, fn, ...)                                                     \
    do {                                                                                \
        wb_error *e_ = NULL;                                                            \
        int32_t r_ = fn(__VA_ARGS__, &e_);                                              \
        expect_impl(__FILE__, __LINE__, #fn "(" #__VA_ARGS__ ")", r_, e_, want, want, needle); \
        int32_t r2_ = fn(__VA_ARGS__, NULL);                                            \
        CHECK(r2_ == r_, "with err NULL: %s, with err: %s", wb_status_name(r2_), wb_status_name(r_)); \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Files                                                                     */

static char g_root[PATH_MAX];    /* mkdtemp */
static char g_data[PATH_MAX];    /* data_directory */
static char g_backups[PATH_MAX]; /* backup_directory */
static wb_engine *g_engine;

#define S1 "11111111-2222-4333-8444-555555555555"
#define S2 "66666666-7777-4888-9999-aaaaaaaaaaaa"
#define S_UNKNOWN "deadbeef-0000-4000-8000-000000000000"

static void path_join(char *out, const char *a, const char *b) {
    int n = snprintf(out, PATH_MAX, "%s/%s", a, b);
    if (n < 0 || n >= PATH_MAX) {
        fprintf(stderr, "path too long\n");
        exit(2);
    }
}

static void backup_uuid(char *out, int n) { snprintf(out, 37, "b0000000-0000-4000-8000-%012d", n); }

static void archive_of(char *out, const char *uuid) {
    char name[64];
    snprintf(name, sizeof name, "%s.tar.gz", uuid);
    path_join(out, g_backups, name);
}

static int exists(const char *p) {
    struct stat st;
    return lstat(p, &st) == 0;
}

static int write_file(const char *path, const void *data, size_t len) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -1;
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n <= 0) {
            close(fd);
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return close(fd);
}

/* Whole file into a malloc'd buffer (NUL-terminated), or NULL. */
static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    size_t k;
    while (buf && (k = fread(buf + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf) buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

static int file_is(const char *path, const void *data, size_t len) {
    size_t n;
    char *got = read_all(path, &n);
    int ok = got && n == len && memcmp(got, data, len) == 0;
    free(got);
    return ok;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void rm_rf(const char *p) {
    if (exists(p)) nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A directory listing without "." and "..", sorted. */
#define MAX_ENTRIES 64
typedef struct {
    int n;
    char names[MAX_ENTRIES][256];
} listing;

static int cmp_names(const void *a, const void *b) { return strcmp(a, b); }

static void list_dir(const char *path, listing *l) {
    l->n = 0;
    DIR *d = opendir(path);
    if (!d) {
        l->n = -1;
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (l->n < MAX_ENTRIES) snprintf(l->names[l->n++], 256, "%s", de->d_name);
    }
    closedir(d);
    qsort(l->names, (size_t)l->n, sizeof l->names[0], cmp_names);
}

static int same_listing(const listing *a, const listing *b) {
    if (a->n != b->n) return 0;
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->names[i], b->names[i])) return 0;
    return 1;
}

static void print_listing(const char *what, const listing *l) {
    fprintf(stderr, "      %s (%d):", what, l->n);
    for (int i = 0; i < l->n; i++) fprintf(stderr, " %s", l->names[i]);
    fputc('\n', stderr);
}

/* Checks that `dir` holds exactly the names given (NULL-terminated). */
static int dir_is(const char *dir, const char *const *names) {
    listing want, got;
    want.n = 0;
    while (names[want.n]) {
        snprintf(want.names[want.n], 256, "%s", names[want.n]);
        want.n++;
    }
    qsort(want.names, (size_t)want.n, sizeof want.names[0], cmp_names);
    list_dir(dir, &got);
    if (same_listing(&want, &got)) return 1;
    fprintf(stderr, "      directory %s\n", dir);
    print_listing("want", &want);
    print_listing("got", &got);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* A server's files                                                          */

static const char HELLO[] = "hello, world\n";
static const char SMALL[] = "small";
#define DEEP_LEN (48 * 1024)
static unsigned char g_deep[DEEP_LEN];

static void fill_pattern(void) {
    for (size_t i = 0; i < DEEP_LEN; i++) g_deep[i] = (unsigned char)((i * 31u + 7u) ^ (i >> 9));
}

/* hello.txt, empty.txt, data/small.txt, data/nested/deep.bin, empty/,
 * link -> hello.txt */
static int populate(const char *root) {
    char p[PATH_MAX];
    int rc = 0;
    if (mkdir(root, 0755) && errno != EEXIST) return -1;
    path_join(p, root, "hello.txt");
    rc |= write_file(p, HELLO, strlen(HELLO));
    path_join(p, root, "empty.txt");
    rc |= write_file(p, "", 0);
    path_join(p, root, "data");
    rc |= mkdir(p, 0755);
    path_join(p, root, "data/small.txt");
    rc |= write_file(p, SMALL, strlen(SMALL));
    path_join(p, root, "data/nested");
    rc |= mkdir(p, 0755);
    path_join(p, root, "data/nested/deep.bin");
    rc |= write_file(p, g_deep, DEEP_LEN);
    path_join(p, root, "empty");
    rc |= mkdir(p, 0755);
    path_join(p, root, "link");
    rc |= symlink("hello.txt", p);
    return rc;
}

/* Checks that `root` holds exactly what populate() wrote. */
static void verify_tree(const char *root, const char *what) {
    char p[PATH_MAX];
    static const char *const top[] = {"hello.txt", "empty.txt", "data", "empty", "link", NULL};
    static const char *const data[] = {"small.txt", "nested", NULL};
    static const char *const nested[] = {"deep.bin", NULL};
    static const char *const none[] = {NULL};
    CHECK(dir_is(root, top), "%s: top-level entries", what);
    path_join(p, root, "data");
    CHECK(dir_is(p, data), "%s: data/", what);
    path_join(p, root, "data/nested");
    CHECK(dir_is(p, nested), "%s: data/nested/", what);
    path_join(p, root, "empty");
    CHECK(dir_is(p, none), "%s: empty/ is not empty", what);
    path_join(p, root, "hello.txt");
    CHECK(file_is(p, HELLO, strlen(HELLO)), "%s: hello.txt content", what);
    path_join(p, root, "empty.txt");
    CHECK(file_is(p, "", 0), "%s: empty.txt content", what);
    path_join(p, root, "data/small.txt");
    CHECK(file_is(p, SMALL, strlen(SMALL)), "%s: data/small.txt content", what);
    path_join(p, root, "data/nested/deep.bin");
    CHECK(file_is(p, g_deep, DEEP_LEN), "%s: data/nested/deep.bin content", what);
    path_join(p, root, "link");
    char target[PATH_MAX];
    ssize_t n = readlink(p, target, sizeof target - 1);
    CHECK(n == 9 && memcmp(target, "hello.txt", 9) == 0, "%s: link is not a symlink to hello.txt", what);
}

/* Changes a populated tree: hello.txt rewritten, deep.bin and link removed,
 * extra.txt and newdir/f added. */
static void mutate(const char *root) {
    char p[PATH_MAX];
    path_join(p, root, "hello.txt");
    CHECK(write_file(p, "changed", 7) == 0, "mutate hello.txt");
    path_join(p, root, "data/nested/deep.bin");
    CHECK(unlink(p) == 0, "mutate deep.bin");
    path_join(p, root, "link");
    CHECK(unlink(p) == 0, "mutate link");
    path_join(p, root, "extra.txt");
    CHECK(write_file(p, "extra", 5) == 0, "mutate extra.txt");
    path_join(p, root, "newdir");
    CHECK(mkdir(p, 0755) == 0, "mutate newdir");
    path_join(p, root, "newdir/f");
    CHECK(write_file(p, "f", 1) == 0, "mutate newdir/f");
}

static void verify_mutated(const char *root, const char *what) {
    char p[PATH_MAX];
    static const char *const top[] = {"hello.txt", "empty.txt", "data", "empty", "extra.txt", "newdir", NULL};
    static const char *const nested[] = {NULL};
    CHECK(dir_is(root, top), "%s: top-level entries changed", what);
    path_join(p, root, "data/nested");
    CHECK(dir_is(p, nested), "%s: data/nested changed", what);
    path_join(p, root, "hello.txt");
    CHECK(file_is(p, "changed", 7), "%s: hello.txt changed", what);
    path_join(p, root, "extra.txt");
    CHECK(file_is(p, "extra", 5), "%s: extra.txt changed", what);
    path_join(p, root, "newdir/f");
    CHECK(file_is(p, "f", 1), "%s: newdir/f changed", what);
}

/* ------------------------------------------------------------------------ */
/* JSON bits (the library's output is compact serde_json)                    */

static void json_escape(char *out, size_t cap, const char *s) {
    size_t o = 0;
    for (; *s && o + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
}

/* The unsigned number after "key": in `json`, or -1. */
static long long json_u64(const char *json, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = json ? strstr(json, pat) : NULL;
    if (!p) return -1;
    p += strlen(pat);
    while (*p == ' ') p++;
    if (*p < '0' || *p > '9') return -1;
    return strtoll(p, NULL, 10);
}

/* The string after "key": in `json` into out, or "" . */
static void json_str(const char *json, const char *key, char *out, size_t cap) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    out[0] = '\0';
    const char *p = json ? strstr(json, pat) : NULL;
    if (!p) return;
    p += strlen(pat);
    size_t i = 0;
    while (p[i] && p[i] != '"' && i + 1 < cap) {
        out[i] = p[i];
        i++;
    }
    out[i] = '\0';
}

static void create_req(char *out, size_t cap, const char *adapter, const char *uuid, const char *ignore) {
    snprintf(out, cap, "{\"adapter\":\"%s\",\"uuid\":\"%s\",\"ignore\":\"%s\"}", adapter, uuid, ignore);
}

static const char RESTORE_TRUNCATE[] = "{\"adapter\":\"wings\",\"truncate_directory\":true}";
static const char RESTORE_MERGE[] = "{\"adapter\":\"wings\",\"truncate_directory\":false}";

/* ------------------------------------------------------------------------ */
/* SHA-1, to check the checksum the library reports                          */

typedef struct {
    uint32_t h[5];
    uint64_t len;
    uint8_t buf[64];
    size_t n;
} sha1_ctx;

static uint32_t rol(uint32_t x, int s) { return (x << s) | (x >> (32 - s)); }

static void sha1_block(sha1_ctx *c, const uint8_t *p) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
               (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3], e = c->h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & cc) | (~b & d);
            k = 0x5A827999u;
        } else if (i < 40) {
            f = b ^ cc ^ d;
            k = 0x6ED9EBA1u;
        } else if (i < 60) {
            f = (b & cc) | (b & d) | (cc & d);
            k = 0x8F1BBCDCu;
        } else {
            f = b ^ cc ^ d;
            k = 0xCA62C1D6u;
        }
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d;
        d = cc;
        cc = rol(b, 30);
        b = a;
        a = t;
    }
    c->h[0] += a;
    c->h[1] += b;
    c->h[2] += cc;
    c->h[3] += d;
    c->h[4] += e;
}

static void sha1_hex(const void *data, size_t len, char out[41]) {
    sha1_ctx c = {{0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u}, 0, {0}, 0};
    const uint8_t *p = data;
    c.len = (uint64_t)len * 8;
    while (len >= 64) {
        sha1_block(&c, p);
        p += 64;
        len -= 64;
    }
    uint8_t tail[128] = {0};
    memcpy(tail, p, len);
    tail[len] = 0x80;
    size_t total = len + 1 + 8 <= 64 ? 64 : 128;
    for (int i = 0; i < 8; i++) tail[total - 1 - (size_t)i] = (uint8_t)(c.len >> (8 * i));
    sha1_block(&c, tail);
    if (total == 128) sha1_block(&c, tail + 64);
    for (int i = 0; i < 5; i++) snprintf(out + 8 * i, 9, "%08x", c.h[i]);
}

static int sha1_file(const char *path, char out[41]) {
    size_t n;
    char *data = read_all(path, &n);
    if (!data) return -1;
    sha1_hex(data, n, out);
    free(data);
    return 0;
}

/* Checks a summary or details JSON against the archive it describes. */
static void check_archive_json(const char *json, const char *archive, const char *what) {
    struct stat st;
    char sum[64], hex[41];
    CHECK(json != NULL, "%s: no JSON", what);
    if (!json) return;
    CHECK(strstr(json, "\"checksum\"") != NULL, "%s: no checksum in %s", what, json);
    CHECK(strstr(json, "\"sha1\"") != NULL, "%s: no sha1 in %s", what, json);
    CHECK(stat(archive, &st) == 0, "%s: no archive %s", what, archive);
    long long size = json_u64(json, "size");
    CHECK(size == (long long)st.st_size, "%s: size %lld, archive file has %lld bytes", what, size,
          (long long)st.st_size);
    json_str(json, "checksum", sum, sizeof sum);
    CHECK(sha1_file(archive, hex) == 0 && strcmp(sum, hex) == 0, "%s: checksum %s, sha1 of the file %s",
          what, sum, hex);
}

/* ------------------------------------------------------------------------ */
/* Synchronisation between the harness threads (bounded waits only)         */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
#define WAIT_S 20

static void set_flag(int *f) {
    pthread_mutex_lock(&g_mu);
    (*f)++;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

/* Waits until *f >= at_least, at most WAIT_S seconds. Returns whether it got there. */
static int wait_flag(int *f, int at_least) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += WAIT_S;
    pthread_mutex_lock(&g_mu);
    while (*f < at_least) {
        if (pthread_cond_timedwait(&g_cv, &g_mu, &deadline) == ETIMEDOUT) break;
    }
    int ok = *f >= at_least;
    pthread_mutex_unlock(&g_mu);
    return ok;
}

static int get_flag(int *f) {
    pthread_mutex_lock(&g_mu);
    int v = *f;
    pthread_mutex_unlock(&g_mu);
    return v;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

/* ------------------------------------------------------------------------ */
/* Progress recorder                                                          */

typedef struct recorder recorder;
struct recorder {
    pthread_t thread; /* the thread that made the call */
    int reports;
    int bad_size, bad_thread, bad_phase, non_monotonic, phase_regressed;
    uint32_t seen;  /* bit per phase */
    int first_phase, last_phase;
    uint64_t last_bytes, last_entries;
    uint64_t archive_bytes[8]; /* the last archive_bytes of each phase */
    /* Optional behaviour: returns the callback's return value. */
    int (*hook)(recorder *r, const wb_progress *p);
    void *ctx;
    int hook_state;
};

static void rec_init(recorder *r) {
    memset(r, 0, sizeof *r);
    r->thread = pthread_self();
    r->first_phase = r->last_phase = -1;
}

static int32_t rec_cb(void *userdata, const wb_progress *p) {
    recorder *r = userdata;
    if (p == NULL) {
        r->bad_phase++;
        return 0;
    }
    if (p->struct_size != sizeof(wb_progress)) r->bad_size++;
    if (!pthread_equal(pthread_self(), r->thread)) r->bad_thread++;
    if (p->phase > WB_PHASE_DONE) r->bad_phase++;
    if (r->reports == 0) r->first_phase = (int)p->phase;
    if (r->reports > 0 && (int)p->phase == r->last_phase) {
        if (p->bytes_done < r->last_bytes || p->entries_done < r->last_entries) r->non_monotonic++;
    }
    if (r->reports > 0 && (int)p->phase < r->last_phase) r->phase_regressed++;
    r->last_phase = (int)p->phase;
    r->last_bytes = p->bytes_done;
    r->last_entries = p->entries_done;
    if (p->phase < 32) r->seen |= 1u << p->phase;
    if (p->phase < 8) r->archive_bytes[p->phase] = p->archive_bytes;
    r->reports++;
    return r->hook ? r->hook(r, p) : 0;
}

#define PH(x) (1u << (x))

/* Checks what a recorder saw: `want` phases must all have been seen; with
 * `complete`, the first report is STARTED and the last DONE. */
static void rec_check(const recorder *r, const char *what, uint32_t want, int complete) {
    CHECK(r->reports > 0, "%s: no progress report", what);
    CHECK(r->bad_size == 0, "%s: struct_size != sizeof(wb_progress) (%zu) in %d reports", what,
          sizeof(wb_progress), r->bad_size);
    CHECK(r->bad_thread == 0, "%s: callback ran on another thread %d times", what, r->bad_thread);
    CHECK(r->bad_phase == 0, "%s: unknown phase / NULL progress %d times", what, r->bad_phase);
    CHECK(r->non_monotonic == 0, "%s: bytes_done/entries_done decreased within a phase %d times", what,
          r->non_monotonic);
    CHECK(r->phase_regressed == 0, "%s: phase went backwards %d times", what, r->phase_regressed);
    CHECK((r->seen & want) == want, "%s: phases seen 0x%x, want at least 0x%x", what, r->seen, want);
    if (complete) {
        CHECK(r->first_phase == WB_PHASE_STARTED, "%s: first phase %d, want STARTED", what, r->first_phase);
        CHECK(r->last_phase == WB_PHASE_DONE, "%s: last phase %d, want DONE", what, r->last_phase);
    }
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */

static void test_version_status(void) {
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", WB_VERSION_MAJOR, WB_VERSION_MINOR, WB_VERSION_PATCH);
    const char *v = wb_version();
    CHECK(v != NULL && strcmp(v, want) == 0, "wb_version() = %s, header says %s", v ? v : "(null)", want);
    CHECK(wb_version() == v, "wb_version() is not static");
    CHECK(wb_abi_version() == WB_ABI_VERSION, "wb_abi_version() = %u, header %u", wb_abi_version(),
          (unsigned)WB_ABI_VERSION);
    const char *deflate = wb_deflate_backend();
    CHECK(deflate != NULL && (strcmp(deflate, "isal") == 0 || strcmp(deflate, "zlib-rs") == 0),
          "wb_deflate_backend() = %s, want isal or zlib-rs", deflate ? deflate : "(null)");
    CHECK(wb_deflate_backend() == deflate, "wb_deflate_backend() is not static");
    const char *want_deflate = getenv("WB_EXPECT_DEFLATE");
    if (want_deflate != NULL && *want_deflate != '\0')
        CHECK(deflate != NULL && strcmp(deflate, want_deflate) == 0,
              "wb_deflate_backend() = %s, WB_EXPECT_DEFLATE = %s", deflate ? deflate : "(null)", want_deflate);

    static const struct {
        int32_t status;
        const char *name;
        uint16_t http;
    } table[] = {
        {WB_OK, "WB_OK", 200},
        {WB_INVALID_ARGUMENT, "WB_INVALID_ARGUMENT", 400},
        {WB_NOT_FOUND, "WB_NOT_FOUND", 404},
        {WB_CONFLICT, "WB_CONFLICT", 409},
        {WB_CORRUPT_ARCHIVE, "WB_CORRUPT_ARCHIVE", 422},
        {WB_UNSAFE_ENTRY, "WB_UNSAFE_ENTRY", 422},
        {WB_QUOTA, "WB_QUOTA", 507},
        {WB_REMOTE, "WB_REMOTE", 502},
        {WB_CANCELLED, "WB_CANCELLED", 503},
        {WB_IO, "WB_IO", 500},
        {WB_INTERNAL, "WB_INTERNAL", 500},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        const char *n = wb_status_name(table[i].status);
        CHECK(n && strcmp(n, table[i].name) == 0, "wb_status_name(%d) = %s", table[i].status, n ? n : "(null)");
        CHECK(wb_status_http(table[i].status) == table[i].http, "wb_status_http(%d) = %u, want %u",
              table[i].status, wb_status_http(table[i].status), table[i].http);
    }
    static const int32_t unknown[] = {-1, 11, 12, 100, INT32_MAX, INT32_MIN};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *n = wb_status_name(unknown[i]);
        CHECK(n && strcmp(n, "WB_UNKNOWN") == 0, "wb_status_name(%d) = %s", unknown[i], n ? n : "(null)");
        CHECK(wb_status_http(unknown[i]) == 500, "wb_status_http(%d) = %u", unknown[i], wb_status_http(unknown[i]));
    }
}

static void test_null_objects(void) {
    /* Every *_free(NULL) and the NULL error accessors. */
    wb_error_free(NULL);
    wb_string_free(NULL);
    wb_engine_free(NULL);
    wb_cancel_free(NULL);
    wb_cancel_trigger(NULL);
    CHECK(wb_error_status(NULL) == WB_INTERNAL, "wb_error_status(NULL) = %d", wb_error_status(NULL));
    const char *m = wb_error_message(NULL);
    CHECK(m != NULL && m[0] == '\0', "wb_error_message(NULL) is not \"\"");

    /* A cancel token: new, trigger twice, free. */
    wb_cancel *c = wb_cancel_new();
    CHECK(c != NULL, "wb_cancel_new() returned NULL");
    wb_cancel_trigger(c);
    wb_cancel_trigger(c);
    wb_cancel_free(c);
}

static void make_config(char *out, size_t cap, const char *extra) {
    char d[PATH_MAX * 2], b[PATH_MAX * 2];
    json_escape(d, sizeof d, g_data);
    json_escape(b, sizeof b, g_backups);
    snprintf(out, cap, "{\"data_directory\":\"%s\",\"backup_directory\":\"%s\",\"threads\":2%s}", d, b,
             extra ? extra : "");
}

static void test_engine_new(void) {
    char cfg[8192];
    wb_engine *eng = (wb_engine *)&g_failures; /* a sentinel that must become NULL */

    /* NULL arguments, with and without an error object. */
    make_config(cfg, sizeof cfg, NULL);
    BOTH(WB_INVALID_ARGUMENT, "config_json", wb_engine_new, NULL, &eng);
    CHECK(eng == NULL, "*out not NULL after a failure");
    BOTH(WB_INVALID_ARGUMENT, "out", wb_engine_new, cfg, NULL);
    BOTH(WB_INVALID_ARGUMENT, NULL, wb_engine_new, NULL, NULL);

    /* Not JSON, or not an object. */
    static const char *const bad_json[] = {"", "{", "[]", "null", "42", "\"x\"", "{\"threads\":}", "{} x"};
    for (size_t i = 0; i < sizeof bad_json / sizeof bad_json[0]; i++) {
        eng = (wb_engine *)&g_failures;
        BOTH(WB_INVALID_ARGUMENT, NULL, wb_engine_new, bad_json[i], &eng);
        CHECK(eng == NULL, "*out not NULL after config %s", bad_json[i]);
    }

    /* Unknown or ill-typed keys: the message names the key. */
    static const struct {
        const char *extra, *key;
    } bad_keys[] = {
        {",\"nope\":1", "nope"},
        {",\"Threads\":1", "Threads"},
        {",\"threads\":\"2\"", "threads"},
        {",\"threads\":-1", "threads"},
        {",\"threads\":1.5", "threads"},
        {",\"write_limit\":\"x\"", "write_limit"},
        {",\"disk_limit\":true", "disk_limit"},
        {",\"compression_level\":\"fast\"", "compression_level"},
        {",\"compression_level\":1", "compression_level"},
        {",\"owner\":{\"uid\":1}", "owner"},
        {",\"owner\":{\"uid\":1,\"gid\":2,\"x\":3}", "owner.x"},
        {",\"owner\":{\"uid\":\"1\",\"gid\":2}", "owner.uid"},
        {",\"owner\":7", "owner"},
        {",\"restore_host_allowlist\":\"10.0.0.0/8\"", "restore_host_allowlist"},
        {",\"restore_host_allowlist\":[\"bad host!\"]", "restore_host_allowlist"},
        {",\"upload_concurrency\":\"4\"", "upload_concurrency"},
        {",\"panel\":{\"url\":\"ftp://x\",\"token_id\":\"a\",\"token\":\"b\"}", "panel.url"},
        {",\"panel\":{\"url\":\"http://x\",\"token_id\":\"a\",\"token\":\"b\",\"zz\":1}", "panel.zz"},
        {",\"panel\":{\"url\":\"http://x\",\"token_id\":1,\"token\":\"b\"}", "panel.token_id"},
        {",\"panel\":\"http://x\"", "panel"},
    };
    for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++) {
        make_config(cfg, sizeof cfg, bad_keys[i].extra);
        eng = (wb_engine *)&g_failures;
        BOTH(WB_INVALID_ARGUMENT, bad_keys[i].key, wb_engine_new, cfg, &eng);
        CHECK(eng == NULL, "*out not NULL after config %s", cfg);
    }
    {
        /* A non-string data_directory. */
        eng = (wb_engine *)&g_failures;
        BOTH(WB_INVALID_ARGUMENT, "data_directory", wb_engine_new, "{\"data_directory\":5}", &eng);
        CHECK(eng == NULL, "*out not NULL");
        BOTH(WB_INVALID_ARGUMENT, "backup_directory", wb_engine_new, "{\"backup_directory\":\"\"}", &eng);
    }

    /* Every documented key, valid: an engine (not used for operations). */
    make_config(cfg, sizeof cfg,
                ",\"compression_level\":\"best_compression\",\"write_limit\":0,\"disk_limit\":0,"
                "\"owner\":null,\"restore_host_allowlist\":[\"minio.local\",\"10.0.0.0/8\",\"127.0.0.1\"],"
                "\"upload_concurrency\":2,"
                "\"panel\":{\"url\":\"http://127.0.0.1:9/\",\"token_id\":\"id\",\"token\":\"tok\","
                "\"report_retry_s\":1}");
    eng = NULL;
    EXPECT_CALL(WB_OK, NULL, wb_engine_new, cfg, &eng);
    CHECK(eng != NULL, "no engine from a full config");
    wb_engine_free(eng);

    /* Success with err NULL. */
    make_config(cfg, sizeof cfg, NULL);
    eng = NULL;
    CHECK(wb_engine_new(cfg, &eng, NULL) == WB_OK && eng != NULL, "wb_engine_new with err NULL");
    wb_engine_free(eng);

    /* *err is set to NULL on success. */
    wb_error *e = (wb_error *)&g_failures;
    eng = NULL;
    CHECK(wb_engine_new(cfg, &eng, &e) == WB_OK, "wb_engine_new");
    CHECK(e == NULL, "*err not set to NULL on success");
    wb_engine_free(eng);
}

static void test_null_args(void) {
    char req[256], bk[40];
    char *out = (char *)&g_failures;
    char arch[PATH_MAX], dest[PATH_MAX];
    backup_uuid(bk, 900);
    create_req(req, sizeof req, "wings", bk, "");
    char src[PATH_MAX];
    path_join(src, g_data, S1);
    path_join(arch, g_root, "null-args.tar.gz");
    path_join(dest, g_root, "null-args-dest");
    mkdir(dest, 0755);
    listing before, after;
    list_dir(g_backups, &before);

    BOTH(WB_INVALID_ARGUMENT, "engine", wb_backup_create_check, NULL, S1, req);
    BOTH(WB_INVALID_ARGUMENT, "server_uuid", wb_backup_create_check, g_engine, NULL, req);
    BOTH(WB_INVALID_ARGUMENT, "request_json", wb_backup_create_check, g_engine, S1, NULL);

    BOTH(WB_INVALID_ARGUMENT, "engine", wb_backup_create, NULL, S1, req, NULL, NULL, NULL, &out);
    CHECK(out == NULL, "*details_json not NULL after a failure");
    out = (char *)&g_failures;
    BOTH(WB_INVALID_ARGUMENT, "server_uuid", wb_backup_create, g_engine, NULL, req, NULL, NULL, NULL, &out);
    CHECK(out == NULL, "*details_json not NULL after a failure");
    BOTH(WB_INVALID_ARGUMENT, "request_json", wb_backup_create, g_engine, S1, NULL, rec_cb, NULL, NULL, NULL);

    BOTH(WB_INVALID_ARGUMENT, "engine", wb_backup_restore_check, NULL, S1, bk, RESTORE_TRUNCATE);
    BOTH(WB_INVALID_ARGUMENT, "server_uuid", wb_backup_restore_check, g_engine, NULL, bk, RESTORE_TRUNCATE);
    BOTH(WB_INVALID_ARGUMENT, "backup_uuid", wb_backup_restore_check, g_engine, S1, NULL, RESTORE_TRUNCATE);
    BOTH(WB_INVALID_ARGUMENT, "request_json", wb_backup_restore_check, g_engine, S1, bk, NULL);

    BOTH(WB_INVALID_ARGUMENT, "engine", wb_backup_restore, NULL, S1, bk, RESTORE_TRUNCATE, NULL, NULL, NULL);
    BOTH(WB_INVALID_ARGUMENT, "server_uuid", wb_backup_restore, g_engine, NULL, bk, RESTORE_TRUNCATE, NULL, NULL,
         NULL);
    BOTH(WB_INVALID_ARGUMENT, "backup_uuid", wb_backup_restore, g_engine, S1, NULL, RESTORE_TRUNCATE, NULL, NULL,
         NULL);
    BOTH(WB_INVALID_ARGUMENT, "request_json", wb_backup_restore, g_engine, S1, bk, NULL, NULL, NULL, NULL);

    BOTH(WB_INVALID_ARGUMENT, "engine", wb_backup_delete, NULL, S1, bk);
    BOTH(WB_INVALID_ARGUMENT, "server_uuid", wb_backup_delete, g_engine, NULL, bk);
    BOTH(WB_INVALID_ARGUMENT, "backup_uuid", wb_backup_delete, g_engine, S1, NULL);

    out = (char *)&g_failures;
    BOTH(WB_INVALID_ARGUMENT, "source_dir", wb_archive_create, NULL, arch, NULL, NULL, NULL, NULL, &out);
    CHECK(out == NULL, "*summary_json not NULL after a failure");
    out = (char *)&g_failures;
    BOTH(WB_INVALID_ARGUMENT, "archive_path", wb_archive_create, src, NULL, NULL, NULL, NULL, NULL, &out);
    CHECK(out == NULL, "*summary_json not NULL after a failure");
    BOTH(WB_INVALID_ARGUMENT, NULL, wb_archive_create, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    CHECK(!exists(arch), "archive written despite a NULL argument");

    out = (char *)&g_failures;
    BOTH(WB_INVALID_ARGUMENT, "archive_path", wb_archive_extract, NULL, dest, NULL, NULL, NULL, NULL, &out);
    CHECK(out == NULL, "*summary_json not NULL after a failure");
    out = (char *)&g_failures;
    BOTH(WB_INVALID_ARGUMENT, "dest_dir", wb_archive_extract, arch, NULL, NULL, NULL, NULL, NULL, &out);
    CHECK(out == NULL, "*summary_json not NULL after a failure");
    BOTH(WB_INVALID_ARGUMENT, NULL, wb_archive_extract, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

    out = (char *)&g_failures;
    BOTH(WB_INVALID_ARGUMENT, "engine", wb_backup_files, NULL, S1, bk, NULL, &out);
    CHECK(out == NULL, "*files_json not NULL after a failure");
    BOTH(WB_INVALID_ARGUMENT, "server_uuid", wb_backup_files, g_engine, NULL, bk, "", NULL);
    BOTH(WB_INVALID_ARGUMENT, "backup_uuid", wb_backup_files, g_engine, S1, NULL, "", NULL);
    out = (char *)&g_failures;
    BOTH(WB_INVALID_ARGUMENT, "engine", wb_backup_verify, NULL, S1, bk, NULL, NULL, NULL, &out);
    CHECK(out == NULL, "*report_json not NULL after a failure");
    BOTH(WB_INVALID_ARGUMENT, "server_uuid", wb_backup_verify, g_engine, NULL, bk, NULL, NULL, NULL, NULL);
    BOTH(WB_INVALID_ARGUMENT, "backup_uuid", wb_backup_verify, g_engine, S1, NULL, NULL, NULL, NULL, NULL);
    out = (char *)&g_failures;
    BOTH(WB_INVALID_ARGUMENT, "archive_path", wb_archive_list, NULL, "", &out);
    CHECK(out == NULL, "*files_json not NULL after a failure");
    out = (char *)&g_failures;
    BOTH(WB_INVALID_ARGUMENT, "archive_path", wb_archive_verify, NULL, NULL, NULL, NULL, &out);
    CHECK(out == NULL, "*report_json not NULL after a failure");

    /* Every optional pointer NULL on a call that succeeds: no progress, no
     * userdata, no cancel, no details, no error object. */
    CHECK(wb_backup_create_check(g_engine, S1, req, NULL) == WB_OK, "create_check with err NULL");
    CHECK(wb_backup_create(g_engine, S1, req, NULL, NULL, NULL, NULL, NULL) == WB_OK,
          "wb_backup_create with every optional pointer NULL");
    CHECK(wb_backup_restore_check(g_engine, S1, bk, RESTORE_MERGE, NULL) == WB_OK, "restore_check with err NULL");
    CHECK(wb_backup_restore(g_engine, S1, bk, RESTORE_MERGE, NULL, NULL, NULL, NULL) == WB_OK,
          "wb_backup_restore with every optional pointer NULL");
    CHECK(wb_backup_files(g_engine, S1, bk, NULL, NULL, NULL) == WB_OK,
          "wb_backup_files with every optional pointer NULL");
    CHECK(wb_backup_verify(g_engine, S1, bk, NULL, NULL, NULL, NULL, NULL) == WB_OK,
          "wb_backup_verify with every optional pointer NULL");
    CHECK(wb_backup_delete(g_engine, S1, bk, NULL) == WB_OK, "wb_backup_delete with err NULL");
    CHECK(wb_archive_create(src, arch, NULL, NULL, NULL, NULL, NULL, NULL) == WB_OK,
          "wb_archive_create with every optional pointer NULL");
    CHECK(wb_archive_extract(arch, dest, NULL, NULL, NULL, NULL, NULL, NULL) == WB_OK,
          "wb_archive_extract with every optional pointer NULL");
    CHECK(wb_archive_list(arch, NULL, NULL, NULL) == WB_OK, "wb_archive_list with every optional pointer NULL");
    CHECK(wb_archive_verify(arch, NULL, NULL, NULL, NULL, NULL) == WB_OK,
          "wb_archive_verify with every optional pointer NULL");
    {
        /* The listing and the report, as the ABI documents them. */
        char *json = NULL;
        EXPECT_CALL(WB_OK, NULL, wb_archive_list, arch, "/", &json);
        CHECK(json && strstr(json, "\"path\":\"/\"") && strstr(json, "\"entries\":["), "listing: %s",
              json ? json : "(null)");
        wb_string_free(json);
        json = NULL;
        EXPECT_CALL(WB_NOT_FOUND, "not found", wb_archive_list, arch, "no/such/dir", &json);
        CHECK(json == NULL, "*files_json not NULL after a failure");
        recorder vrec;
        rec_init(&vrec);
        EXPECT_CALL(WB_OK, NULL, wb_archive_verify, arch, rec_cb, &vrec, NULL, &json);
        rec_check(&vrec, "verify", PH(WB_PHASE_STARTED) | PH(WB_PHASE_EXTRACT) | PH(WB_PHASE_DONE), 1);
        CHECK(json && strstr(json, "\"ok\":true") && strstr(json, "\"errors\":[]"), "report: %s",
              json ? json : "(null)");
        wb_string_free(json);
    }
    verify_tree(dest, "extract with NULL options");
    verify_tree(src, "server after a merge restore of itself");
    list_dir(g_backups, &after);
    CHECK(same_listing(&before, &after), "backup directory changed");
    unlink(arch);
    rm_rf(dest);
}

static void test_bad_requests(void) {
    char req[256], bk[40], upper[40];
    backup_uuid(bk, 901);
    create_req(req, sizeof req, "wings", bk, "");
    listing before, after;
    list_dir(g_backups, &before);

    /* Bad request bodies. */
    static const char *const bad_create[] = {
        "",
        "{",
        "[]",
        "null",
        "\"wings\"",
        "{\"adapter\":\"wings\",\"uuid\":\"b0000000-0000-4000-8000-000000000901\"}",
        "{\"adapter\":\"wings\",\"ignore\":\"\"}",
        "{\"uuid\":\"b0000000-0000-4000-8000-000000000901\",\"ignore\":\"\"}",
        "{\"adapter\":\"ftp\",\"uuid\":\"b0000000-0000-4000-8000-000000000901\",\"ignore\":\"\"}",
        "{\"adapter\":\"WINGS\",\"uuid\":\"b0000000-0000-4000-8000-000000000901\",\"ignore\":\"\"}",
        "{\"adapter\":1,\"uuid\":\"b0000000-0000-4000-8000-000000000901\",\"ignore\":\"\"}",
        "{\"adapter\":\"wings\",\"uuid\":7,\"ignore\":\"\"}",
        "{\"adapter\":\"wings\",\"uuid\":\"b0000000-0000-4000-8000-000000000901\",\"ignore\":1}",
    };
    for (size_t i = 0; i < sizeof bad_create / sizeof bad_create[0]; i++) {
        BOTH(WB_INVALID_ARGUMENT, NULL, wb_backup_create_check, g_engine, S1, bad_create[i]);
        BOTH(WB_INVALID_ARGUMENT, NULL, wb_backup_create, g_engine, S1, bad_create[i], NULL, NULL, NULL, NULL);
    }
    /* Bad backup UUIDs in the body. */
    static const char *const bad_uuids[] = {
        "x",
        "",
        "../../etc/passwd",
        "b00000000000400080000000000000901",
        "{b0000000-0000-4000-8000-000000000901}",
        "b0000000-0000-4000-8000-00000000090g",
        "b0000000-0000-4000-8000_000000000901",
        "b0000000-0000-4000-8000-000000000901/..",
    };
    for (size_t i = 0; i < sizeof bad_uuids / sizeof bad_uuids[0]; i++) {
        char r[256];
        create_req(r, sizeof r, "wings", bad_uuids[i], "");
        BOTH(WB_INVALID_ARGUMENT, "UUID", wb_backup_create_check, g_engine, S1, r);
        BOTH(WB_INVALID_ARGUMENT, "UUID", wb_backup_create, g_engine, S1, r, NULL, NULL, NULL, NULL);
        BOTH(WB_INVALID_ARGUMENT, "UUID", wb_backup_restore_check, g_engine, S1, bad_uuids[i], RESTORE_TRUNCATE);
        BOTH(WB_INVALID_ARGUMENT, "UUID", wb_backup_restore, g_engine, S1, bad_uuids[i], RESTORE_TRUNCATE, NULL,
             NULL, NULL);
        BOTH(WB_INVALID_ARGUMENT, "UUID", wb_backup_delete, g_engine, S1, bad_uuids[i]);
    }
    /* Unknown JSON fields are ignored. */
    {
        char r[320];
        snprintf(r, sizeof r, "{\"adapter\":\"wings\",\"uuid\":\"%s\",\"ignore\":\"\",\"extra\":{\"a\":[1]}}", bk);
        BOTH(WB_OK, NULL, wb_backup_create_check, g_engine, S1, r);
    }

    /* Bad restore bodies. */
    static const char *const bad_restore[] = {
        "",
        "{",
        "[]",
        "{}",
        "{\"truncate_directory\":true}",
        "{\"adapter\":\"ftp\",\"truncate_directory\":true}",
        "{\"adapter\":\"wings\",\"truncate_directory\":\"yes\"}",
        "{\"adapter\":\"wings\",\"truncate_directory\":1}",
        "{\"adapter\":\"s3\",\"truncate_directory\":true}",
        "{\"adapter\":\"s3\",\"truncate_directory\":true,\"download_url\":\"\"}",
        "{\"adapter\":\"wings\",\"download_url\":5}",
    };
    for (size_t i = 0; i < sizeof bad_restore / sizeof bad_restore[0]; i++) {
        BOTH(WB_INVALID_ARGUMENT, NULL, wb_backup_restore_check, g_engine, S1, bk, bad_restore[i]);
        BOTH(WB_INVALID_ARGUMENT, NULL, wb_backup_restore, g_engine, S1, bk, bad_restore[i], NULL, NULL, NULL);
    }

    /* Unknown or non-UUID servers: not found, whatever the body. */
    static const char *const bad_servers[] = {
        S_UNKNOWN, "not-a-uuid", "", "..", "../" S1, S1 "/", "11111111222243338444555555555555",
    };
    for (size_t i = 0; i < sizeof bad_servers / sizeof bad_servers[0]; i++) {
        const char *s = bad_servers[i];
        BOTH(WB_NOT_FOUND, NULL, wb_backup_create_check, g_engine, s, req);
        BOTH(WB_NOT_FOUND, NULL, wb_backup_create, g_engine, s, req, NULL, NULL, NULL, NULL);
        BOTH(WB_NOT_FOUND, NULL, wb_backup_restore_check, g_engine, s, bk, RESTORE_TRUNCATE);
        BOTH(WB_NOT_FOUND, NULL, wb_backup_restore, g_engine, s, bk, RESTORE_TRUNCATE, NULL, NULL, NULL);
        BOTH(WB_NOT_FOUND, NULL, wb_backup_delete, g_engine, s, bk);
    }
    /* A server "directory" that is a file is not found either. */
    {
        char p[PATH_MAX];
        path_join(p, g_data, "eeeeeeee-0000-4000-8000-000000000000");
        CHECK(write_file(p, "x", 1) == 0, "write %s", p);
        BOTH(WB_NOT_FOUND, NULL, wb_backup_create_check, g_engine, "eeeeeeee-0000-4000-8000-000000000000", req);
        unlink(p);
    }

    /* Missing backups. */
    BOTH(WB_NOT_FOUND, NULL, wb_backup_restore_check, g_engine, S1, bk, RESTORE_TRUNCATE);
    BOTH(WB_NOT_FOUND, NULL, wb_backup_restore, g_engine, S1, bk, RESTORE_TRUNCATE, NULL, NULL, NULL);
    BOTH(WB_NOT_FOUND, NULL, wb_backup_delete, g_engine, S1, bk);
    /* An upper-case backup uuid is the same (missing) backup. */
    for (int i = 0; bk[i]; i++) upper[i] = (char)(bk[i] >= 'a' && bk[i] <= 'f' ? bk[i] - 32 : bk[i]);
    upper[36] = '\0';
    BOTH(WB_NOT_FOUND, NULL, wb_backup_delete, g_engine, S1, upper);

    /* The s3 adapter (not available in this build, or failing remotely:
     * nothing listens on port 9 of 127.0.0.1, which is also private). */
    {
        char r[256];
        create_req(r, sizeof r, "s3", bk, "");
        wb_error *e = NULL;
        int32_t rc = wb_backup_create_check(g_engine, S1, r, &e);
        expect_impl(__FILE__, __LINE__, "create_check s3", rc, e, WB_INVALID_ARGUMENT, WB_REMOTE, NULL);
        if (rc != WB_OK) {
            e = NULL;
            char *details = NULL;
            rc = wb_backup_create(g_engine, S1, r, NULL, NULL, NULL, &details, &e);
            expect_impl(__FILE__, __LINE__, "create s3", rc, e, WB_INVALID_ARGUMENT, WB_REMOTE, NULL);
            wb_string_free(details);
        }
        static const char s3_restore[] =
            "{\"adapter\":\"s3\",\"truncate_directory\":true,\"download_url\":\"http://127.0.0.1:9/b.tar.gz\"}";
        e = NULL;
        rc = wb_backup_restore_check(g_engine, S1, bk, s3_restore, &e);
        expect_impl(__FILE__, __LINE__, "restore_check s3", rc, e, WB_INVALID_ARGUMENT, WB_REMOTE, NULL);
        e = NULL;
        rc = wb_backup_restore(g_engine, S1, bk, s3_restore, NULL, NULL, NULL, &e);
        expect_impl(__FILE__, __LINE__, "restore s3", rc, e, WB_INVALID_ARGUMENT, WB_REMOTE, NULL);
        static const char s3_bad_url[] =
            "{\"adapter\":\"s3\",\"truncate_directory\":true,\"download_url\":\"ftp://example.com/b.tar.gz\"}";
        BOTH(WB_INVALID_ARGUMENT, NULL, wb_backup_restore_check, g_engine, S1, bk, s3_bad_url);
    }

    char p[PATH_MAX];
    path_join(p, g_data, S1);
    verify_tree(p, "server after rejected requests");
    list_dir(g_backups, &after);
    CHECK(same_listing(&before, &after), "backup directory changed by rejected requests");
}

static void test_round_trip(void) {
    char req[256], bk[40], arch[PATH_MAX], server[PATH_MAX];
    backup_uuid(bk, 1);
    create_req(req, sizeof req, "wings", bk, "");
    archive_of(arch, bk);
    path_join(server, g_data, S1);

    BOTH(WB_OK, NULL, wb_backup_create_check, g_engine, S1, req);

    recorder rec;
    rec_init(&rec);
    char *details = NULL;
    wb_error *e = (wb_error *)&g_failures;
    int32_t rc = wb_backup_create(g_engine, S1, req, rec_cb, &rec, NULL, &details, &e);
    CHECK(e == NULL, "*err not NULL after success");
    if (e == (wb_error *)&g_failures) e = NULL;
    expect_impl(__FILE__, __LINE__, "wb_backup_create", rc, e, WB_OK, WB_OK, NULL);
    rec_check(&rec, "create", PH(WB_PHASE_STARTED) | PH(WB_PHASE_ARCHIVE) | PH(WB_PHASE_DONE), 1);
    check_archive_json(details, arch, "details");
    CHECK(details && strstr(details, "\"successful\":true"), "details: successful: %s", details ? details : "");
    CHECK(json_u64(details, "files") >= 0, "details: no files count");
    struct stat st;
    CHECK(stat(arch, &st) == 0 && (st.st_mode & 0777) == 0600, "archive mode %o, want 0600",
          (unsigned)(st.st_mode & 0777));
    wb_string_free(details);

    /* The same backup uuid again: conflict (also in upper case). */
    BOTH(WB_CONFLICT, NULL, wb_backup_create_check, g_engine, S1, req);
    details = (char *)&g_failures;
    BOTH(WB_CONFLICT, NULL, wb_backup_create, g_engine, S1, req, rec_cb, &rec, NULL, &details);
    CHECK(details == NULL, "*details_json not NULL after a conflict");
    {
        char r[256], upper[40];
        for (int i = 0; i < 36; i++) upper[i] = (char)(bk[i] >= 'a' && bk[i] <= 'f' ? bk[i] - 32 : bk[i]);
        upper[36] = '\0';
        create_req(r, sizeof r, "wings", upper, "");
        BOTH(WB_CONFLICT, NULL, wb_backup_create_check, g_engine, S1, r);
        /* And from another server: backup uuids are node-wide. */
        BOTH(WB_CONFLICT, NULL, wb_backup_create_check, g_engine, S2, req);
    }
    verify_tree(server, "server after backup");

    /* Change the server, then restore with truncate. */
    mutate(server);
    BOTH(WB_OK, NULL, wb_backup_restore_check, g_engine, S1, bk, RESTORE_TRUNCATE);
    rec_init(&rec);
    EXPECT_CALL(WB_OK, NULL, wb_backup_restore, g_engine, S1, bk, RESTORE_TRUNCATE, rec_cb, &rec, NULL);
    rec_check(&rec, "restore",
              PH(WB_PHASE_STARTED) | PH(WB_PHASE_EXTRACT) | PH(WB_PHASE_COMMIT) | PH(WB_PHASE_DONE), 1);
    verify_tree(server, "after truncate restore");

    /* Merge restore: files in the archive overwrite, others stay. */
    {
        char p[PATH_MAX];
        path_join(p, server, "hello.txt");
        CHECK(write_file(p, "changed", 7) == 0, "write");
        path_join(p, server, "keep.txt");
        CHECK(write_file(p, "keep", 4) == 0, "write");
        EXPECT_CALL(WB_OK, NULL, wb_backup_restore, g_engine, S1, bk, RESTORE_MERGE, NULL, NULL, NULL);
        path_join(p, server, "hello.txt");
        CHECK(file_is(p, HELLO, strlen(HELLO)), "merge restore: hello.txt not restored");
        path_join(p, server, "keep.txt");
        CHECK(file_is(p, "keep", 4), "merge restore: keep.txt lost");
        CHECK(unlink(p) == 0, "unlink keep.txt");
        verify_tree(server, "after merge restore");
    }
    /* The backup still exists after restores. */
    CHECK(exists(arch), "archive gone after restore");

    /* Delete, twice. */
    EXPECT_CALL(WB_OK, NULL, wb_backup_delete, g_engine, S1, bk);
    CHECK(!exists(arch), "archive still there after delete");
    BOTH(WB_NOT_FOUND, NULL, wb_backup_delete, g_engine, S1, bk);
    BOTH(WB_NOT_FOUND, NULL, wb_backup_restore_check, g_engine, S1, bk, RESTORE_TRUNCATE);
    BOTH(WB_NOT_FOUND, NULL, wb_backup_restore, g_engine, S1, bk, RESTORE_TRUNCATE, NULL, NULL, NULL);
    verify_tree(server, "after failed restore of a deleted backup");
    /* The uuid is free again. */
    BOTH(WB_OK, NULL, wb_backup_create_check, g_engine, S1, req);
}

static void test_ignore(void) {
    char req[256], bk[40], arch[PATH_MAX], dest[PATH_MAX];
    backup_uuid(bk, 2);
    /* JSON "data/\n" ignores the data directory. */
    create_req(req, sizeof req, "wings", bk, "data/\\nempty.txt");
    archive_of(arch, bk);
    /* A dry run with the same rules: what the backup will hold, nothing written. */
    char *report = NULL;
    EXPECT_CALL(WB_OK, NULL, wb_backup_dry_run, g_engine, S1, req, NULL, &report);
    CHECK(report && strstr(report, "\"ignored\":[\"data\",\"empty.txt\"],\"ignored_count\":2"),
          "dry run report: %s", report ? report : "(null)");
    CHECK(report && strstr(report, "\"files\":1,"), "dry run files: %s", report ? report : "(null)");
    CHECK(!exists(arch), "a dry run wrote the archive");
    wb_string_free(report);
    BOTH(WB_NOT_FOUND, NULL, wb_backup_dry_run, g_engine, S_UNKNOWN, req, NULL, NULL);
    BOTH(WB_INVALID_ARGUMENT, NULL, wb_backup_dry_run, g_engine, S1, "{", NULL, NULL);
    report = NULL;
    char src[PATH_MAX];
    path_join(src, g_data, S1);
    EXPECT_CALL(WB_OK, NULL, wb_archive_dry_run, src, NULL, "{\"ignore\":\"data/\"}", NULL, &report);
    CHECK(report && strstr(report, "\"ignored\":[\"data\"]"), "archive dry run: %s", report ? report : "(null)");
    wb_string_free(report);
    char *details = NULL;
    EXPECT_CALL(WB_OK, NULL, wb_backup_create, g_engine, S1, req, NULL, NULL, NULL, &details);
    check_archive_json(details, arch, "ignore details");
    wb_string_free(details);
    path_join(dest, g_root, "ignore-dest");
    CHECK(mkdir(dest, 0755) == 0, "mkdir");
    char *summary = NULL;
    EXPECT_CALL(WB_OK, NULL, wb_archive_extract, arch, dest, NULL, NULL, NULL, NULL, &summary);
    static const char *const top[] = {"hello.txt", "empty", "link", NULL};
    CHECK(dir_is(dest, top), "ignore rules not applied");
    wb_string_free(summary);
    EXPECT_CALL(WB_OK, NULL, wb_backup_delete, g_engine, S1, bk);
    rm_rf(dest);
}

static void test_archive_level(void) {
    char src[PATH_MAX], out[PATH_MAX], a[PATH_MAX], dest[PATH_MAX], p[PATH_MAX];
    path_join(src, g_data, S1);
    path_join(out, g_root, "archives");
    path_join(dest, g_root, "extract");
    CHECK(mkdir(out, 0755) == 0 && mkdir(dest, 0755) == 0, "mkdir");
    path_join(a, out, "a.tar.gz");

    recorder rec;
    rec_init(&rec);
    char *summary = NULL;
    EXPECT_CALL(WB_OK, NULL, wb_archive_create, src, a, "{\"compression_level\":\"best_compression\",\"threads\":2}",
                rec_cb, &rec, NULL, &summary);
    rec_check(&rec, "archive_create", PH(WB_PHASE_ARCHIVE), 1);
    check_archive_json(summary, a, "archive summary");
    CHECK(rec.archive_bytes[WB_PHASE_ARCHIVE] == (uint64_t)json_u64(summary, "size"),
          "archive_create: last archive_bytes %llu, archive size %lld",
          (unsigned long long)rec.archive_bytes[WB_PHASE_ARCHIVE], json_u64(summary, "size"));
    long long archive_size = json_u64(summary, "size");
    CHECK(json_u64(summary, "files") == 4, "archive summary files: %s", summary ? summary : "");
    CHECK(json_u64(summary, "source_bytes") == (long long)(strlen(HELLO) + strlen(SMALL) + DEEP_LEN),
          "archive summary source_bytes: %s", summary ? summary : "");
    wb_string_free(summary);
    /* The archive and its index (docs/api.md section 11). */
    static const char *const just_a[] = {"a.tar.gz", "a.tar.gz.index", NULL};
    CHECK(dir_is(out, just_a), "archive directory holds more than the archive");

    rec_init(&rec);
    summary = NULL;
    EXPECT_CALL(WB_OK, NULL, wb_archive_extract, a, dest, "{\"threads\":1}", rec_cb, &rec, NULL, &summary);
    rec_check(&rec, "archive_extract", PH(WB_PHASE_EXTRACT), 1);
    CHECK(rec.archive_bytes[WB_PHASE_EXTRACT] == (uint64_t)archive_size,
          "archive_extract: last archive_bytes %llu, archive size %lld",
          (unsigned long long)rec.archive_bytes[WB_PHASE_EXTRACT], archive_size);
    verify_tree(dest, "extracted archive");
    CHECK(json_u64(summary, "files") == 4, "extract summary files: %s", summary ? summary : "");
    CHECK(json_u64(summary, "symlinks") == 1, "extract summary symlinks: %s", summary ? summary : "");
    CHECK(json_u64(summary, "bytes") >= 0, "extract summary bytes: %s", summary ? summary : "");
    wb_string_free(summary);

    /* Extract again with truncate over a changed tree. */
    mutate(dest);
    EXPECT_CALL(WB_OK, NULL, wb_archive_extract, a, dest, "{\"truncate\":true}", NULL, NULL, NULL, NULL);
    verify_tree(dest, "extract with truncate");

    /* An existing archive is replaced. */
    CHECK(write_file(a, "old", 3) == 0, "write");
    summary = NULL;
    EXPECT_CALL(WB_OK, NULL, wb_archive_create, src, a, "", NULL, NULL, NULL, &summary);
    check_archive_json(summary, a, "replaced archive");
    wb_string_free(summary);
    CHECK(dir_is(out, just_a), "archive directory after replace");

    /* Bad options name the option. */
    path_join(p, out, "b.tar.gz");
    BOTH(WB_INVALID_ARGUMENT, NULL, wb_archive_create, src, p, "{", NULL, NULL, NULL, NULL);
    BOTH(WB_INVALID_ARGUMENT, NULL, wb_archive_create, src, p, "[]", NULL, NULL, NULL, NULL);
    BOTH(WB_INVALID_ARGUMENT, "bogus", wb_archive_create, src, p, "{\"bogus\":1}", NULL, NULL, NULL, NULL);
    BOTH(WB_INVALID_ARGUMENT, "threads", wb_archive_create, src, p, "{\"threads\":\"x\"}", NULL, NULL, NULL, NULL);
    BOTH(WB_INVALID_ARGUMENT, "ignore", wb_archive_create, src, p, "{\"ignore\":3}", NULL, NULL, NULL, NULL);
    BOTH(WB_INVALID_ARGUMENT, "compression_level", wb_archive_create, src, p, "{\"compression_level\":\"max\"}",
         NULL, NULL, NULL, NULL);
    BOTH(WB_INVALID_ARGUMENT, "truncate", wb_archive_extract, a, dest, "{\"truncate\":\"yes\"}", NULL, NULL, NULL,
         NULL);
    BOTH(WB_INVALID_ARGUMENT, "owner", wb_archive_extract, a, dest, "{\"owner\":{\"uid\":1}}", NULL, NULL, NULL,
         NULL);
    BOTH(WB_INVALID_ARGUMENT, NULL, wb_archive_extract, a, dest, "nope", NULL, NULL, NULL, NULL);

    /* Missing source, archive or destination. */
    path_join(p, g_root, "no-such-dir");
    char q[PATH_MAX];
    path_join(q, out, "c.tar.gz");
    BOTH(WB_NOT_FOUND, NULL, wb_archive_create, p, q, NULL, NULL, NULL, NULL, NULL);
    BOTH(WB_NOT_FOUND, NULL, wb_archive_extract, q, dest, NULL, NULL, NULL, NULL, NULL);
    BOTH(WB_NOT_FOUND, NULL, wb_archive_extract, a, p, NULL, NULL, NULL, NULL, NULL);
    CHECK(dir_is(out, just_a), "archive directory after failures");

    /* Corrupt and truncated archives: an error, the destination unchanged. */
    char empty_dest[PATH_MAX];
    path_join(empty_dest, g_root, "extract-empty");
    CHECK(mkdir(empty_dest, 0755) == 0, "mkdir");
    static const char *const none[] = {NULL};
    path_join(p, out, "bad.tar.gz");
    CHECK(write_file(p, "this is not a gzip file at all", 30) == 0, "write");
    BOTH(WB_CORRUPT_ARCHIVE, NULL, wb_archive_extract, p, empty_dest, NULL, NULL, NULL, NULL, NULL);
    CHECK(dir_is(empty_dest, none), "destination changed by a corrupt archive");
    {
        size_t n;
        char *data = read_all(a, &n);
        CHECK(data != NULL, "read archive");
        if (data) {
            CHECK(write_file(p, data, n / 2) == 0, "write");
            BOTH(WB_CORRUPT_ARCHIVE, NULL, wb_archive_extract, p, empty_dest, NULL, NULL, NULL, NULL, NULL);
            CHECK(dir_is(empty_dest, none), "destination changed by a truncated archive");
            /* A truncated archive over an existing tree with truncate: unchanged. */
            BOTH(WB_CORRUPT_ARCHIVE, NULL, wb_archive_extract, p, dest, "{\"truncate\":true}", NULL, NULL, NULL,
                 NULL);
            verify_tree(dest, "tree after a failed truncate extract");
            free(data);
        }
        unlink(p);
    }

    /* Stopped by the callback / cancelled by a token. */
    rec_init(&rec);
    rec.hook = NULL;
    {
        wb_cancel *c = wb_cancel_new();
        wb_cancel_trigger(c);
        path_join(p, out, "cancelled.tar.gz");
        char *s = (char *)&g_failures;
        BOTH(WB_CANCELLED, NULL, wb_archive_create, src, p, NULL, NULL, NULL, c, &s);
        CHECK(s == NULL, "*summary_json not NULL after cancel");
        CHECK(!exists(p), "cancelled archive exists");
        CHECK(dir_is(out, just_a), "archive directory after a cancelled create");
        BOTH(WB_CANCELLED, NULL, wb_archive_extract, a, empty_dest, NULL, NULL, NULL, c, NULL);
        CHECK(dir_is(empty_dest, none), "destination changed by a cancelled extract");
        wb_cancel_free(c);
    }

    rm_rf(out);
    rm_rf(dest);
    rm_rf(empty_dest);
}

/* Returns non-zero on the first report of phase r->hook_state. */
static int stop_at_phase(recorder *r, const wb_progress *p) {
    if ((int)p->phase != r->hook_state) return 0;
    /* During the archive phase a temporary file exists in the backup dir. */
    if (r->ctx && p->phase == WB_PHASE_ARCHIVE) {
        listing now;
        list_dir(g_backups, &now);
        CHECK(now.n > ((listing *)r->ctx)->n, "no temporary file in the backup directory while archiving");
    }
    return 1;
}

static void test_callback_stop(void) {
    char req[256], bk[40], arch[PATH_MAX], server[PATH_MAX];
    backup_uuid(bk, 3);
    create_req(req, sizeof req, "wings", bk, "");
    archive_of(arch, bk);
    path_join(server, g_data, S1);
    listing before, after;
    list_dir(g_backups, &before);

    static const int create_phases[] = {WB_PHASE_STARTED, WB_PHASE_ARCHIVE};
    for (size_t i = 0; i < 2; i++) {
        recorder rec;
        rec_init(&rec);
        rec.hook = stop_at_phase;
        rec.hook_state = create_phases[i];
        rec.ctx = &before;
        char *details = (char *)&g_failures;
        EXPECT_CALL(WB_CANCELLED, NULL, wb_backup_create, g_engine, S1, req, rec_cb, &rec, NULL, &details);
        CHECK(details == NULL, "*details_json not NULL after a stop");
        CHECK(rec.last_phase == create_phases[i], "callback stop at phase %d: last report in phase %d",
              create_phases[i], rec.last_phase);
        CHECK(!exists(arch), "archive exists after a stop at phase %d", create_phases[i]);
        list_dir(g_backups, &after);
        CHECK(same_listing(&before, &after), "backup directory changed by a stop at phase %d", create_phases[i]);
        if (!same_listing(&before, &after)) {
            print_listing("before", &before);
            print_listing("after", &after);
        }
    }
    /* With err NULL too. */
    {
        recorder rec;
        rec_init(&rec);
        rec.hook = stop_at_phase;
        rec.hook_state = WB_PHASE_ARCHIVE;
        CHECK(wb_backup_create(g_engine, S1, req, rec_cb, &rec, NULL, NULL, NULL) == WB_CANCELLED,
              "callback stop with err NULL");
        CHECK(!exists(arch), "archive exists after a stop");
    }
    /* Stopped in its DONE report, a backup either fails with WB_CANCELLED and
     * leaves no archive (docs/api.md section 9: a cancelled backup leaves no file with
     * the final name), or succeeds: never WB_CANCELLED with the archive kept. */
    {
        recorder rec;
        rec_init(&rec);
        rec.hook = stop_at_phase;
        rec.hook_state = WB_PHASE_DONE;
        char *details = NULL;
        wb_error *e = NULL;
        int32_t rc = wb_backup_create(g_engine, S1, req, rec_cb, &rec, NULL, &details, &e);
        /* DONE comes after the archive is in place: the work cannot be undone
         * any more, so a stop there is ignored and the call succeeds. */
        CHECK(rc == WB_OK, "stop at DONE: %s", wb_status_name(rc));
        CHECK(rec.last_phase == WB_PHASE_DONE, "stop at DONE: last report in phase %d", rec.last_phase);
        check_archive_json(details, arch, "details of a backup stopped at DONE");
        EXPECT_CALL(WB_OK, NULL, wb_backup_delete, g_engine, S1, bk);
        wb_string_free(details);
        wb_error_free(e);
        list_dir(g_backups, &after);
        CHECK(same_listing(&before, &after), "backup directory changed by a stop at DONE");
    }
    /* The server and the uuid were released. */
    char *details = NULL;
    EXPECT_CALL(WB_OK, NULL, wb_backup_create, g_engine, S1, req, NULL, NULL, NULL, &details);
    check_archive_json(details, arch, "details after stops");
    wb_string_free(details);

    /* A restore stopped in any phase leaves the server as it was. */
    mutate(server);
    static const int restore_phases[] = {WB_PHASE_STARTED, WB_PHASE_EXTRACT, WB_PHASE_COMMIT};
    for (size_t i = 0; i < 3; i++) {
        recorder rec;
        rec_init(&rec);
        rec.hook = stop_at_phase;
        rec.hook_state = restore_phases[i];
        EXPECT_CALL(WB_CANCELLED, NULL, wb_backup_restore, g_engine, S1, bk, RESTORE_TRUNCATE, rec_cb, &rec, NULL);
        CHECK(rec.last_phase == restore_phases[i], "restore stop at phase %d: last report in phase %d",
              restore_phases[i], rec.last_phase);
        verify_mutated(server, "server after a stopped restore");
    }
    /* Stopped in its DONE report, a restore has already put the files in
     * place: the stop is ignored and the call succeeds. */
    {
        recorder rec;
        rec_init(&rec);
        rec.hook = stop_at_phase;
        rec.hook_state = WB_PHASE_DONE;
        wb_error *e = NULL;
        int32_t rc = wb_backup_restore(g_engine, S1, bk, RESTORE_TRUNCATE, rec_cb, &rec, NULL, &e);
        CHECK(rc == WB_OK, "restore stop at DONE: %s", wb_status_name(rc));
        wb_error_free(e);
        verify_tree(server, "restore stopped at DONE");
        /* Back to the mutated state for what follows, whatever happened. */
        rm_rf(server);
        CHECK(populate(server) == 0, "populate");
        mutate(server);
    }
    EXPECT_CALL(WB_OK, NULL, wb_backup_restore, g_engine, S1, bk, RESTORE_TRUNCATE, NULL, NULL, NULL);
    verify_tree(server, "restore after stopped restores");
    EXPECT_CALL(WB_OK, NULL, wb_backup_delete, g_engine, S1, bk);
}

/* Cancellation from a second thread. */
typedef struct {
    wb_cancel *token;
    int asked;
    int triggered;
    int waited_ok;
    listing *baseline;
} cancel_ctx;

static void *canceller_main(void *arg) {
    cancel_ctx *c = arg;
    if (wait_flag(&c->asked, 1)) wb_cancel_trigger(c->token);
    set_flag(&c->triggered);
    return NULL;
}

static int ask_cancel(recorder *r, const wb_progress *p) {
    cancel_ctx *c = r->ctx;
    if (p->phase != (uint32_t)r->hook_state || get_flag(&c->asked)) return 0;
    if (c->baseline && p->phase == WB_PHASE_ARCHIVE) {
        listing now;
        list_dir(g_backups, &now);
        CHECK(now.n > c->baseline->n, "no temporary file in the backup directory while archiving");
    }
    set_flag(&c->asked);
    c->waited_ok = wait_flag(&c->triggered, 1);
    return 0; /* the token, not the callback, stops the call */
}

static void test_cancel(void) {
    char req[256], bk[40], arch[PATH_MAX], server[PATH_MAX];
    backup_uuid(bk, 4);
    create_req(req, sizeof req, "wings", bk, "");
    archive_of(arch, bk);
    path_join(server, g_data, S1);
    listing before, after;
    list_dir(g_backups, &before);

    /* A token triggered before the call; one token serves several calls. */
    wb_cancel *tok = wb_cancel_new();
    wb_cancel_trigger(tok);
    BOTH(WB_CANCELLED, NULL, wb_backup_create, g_engine, S1, req, NULL, NULL, tok, NULL);
    BOTH(WB_CANCELLED, NULL, wb_backup_create, g_engine, S2, req, NULL, NULL, tok, NULL);
    CHECK(!exists(arch), "archive exists after cancel");
    list_dir(g_backups, &after);
    CHECK(same_listing(&before, &after), "backup directory changed by cancelled creates");
    wb_cancel_free(tok);

    /* An untriggered token changes nothing. */
    tok = wb_cancel_new();
    EXPECT_CALL(WB_OK, NULL, wb_backup_create, g_engine, S1, req, NULL, NULL, tok, NULL);
    CHECK(exists(arch), "no archive");
    /* ... and a restore with it triggered is cancelled, files unchanged. */
    mutate(server);
    wb_cancel_trigger(tok);
    BOTH(WB_CANCELLED, NULL, wb_backup_restore, g_engine, S1, bk, RESTORE_TRUNCATE, NULL, NULL, tok);
    verify_mutated(server, "server after a cancelled restore");
    wb_cancel_free(tok);

    /* A restore cancelled from another thread during extraction. */
    {
        cancel_ctx c = {wb_cancel_new(), 0, 0, 0, NULL};
        pthread_t th;
        CHECK(pthread_create(&th, NULL, canceller_main, &c) == 0, "pthread_create");
        recorder rec;
        rec_init(&rec);
        rec.hook = ask_cancel;
        rec.hook_state = WB_PHASE_EXTRACT;
        rec.ctx = &c;
        EXPECT_CALL(WB_CANCELLED, NULL, wb_backup_restore, g_engine, S1, bk, RESTORE_TRUNCATE, rec_cb, &rec,
                    c.token);
        set_flag(&c.asked); /* lets the thread end if the callback never asked */
        pthread_join(th, NULL);
        CHECK(c.waited_ok, "the callback did not see the other thread trigger the token");
        verify_mutated(server, "server after a restore cancelled from a thread");
        wb_cancel_free(c.token);
    }
    EXPECT_CALL(WB_OK, NULL, wb_backup_restore, g_engine, S1, bk, RESTORE_TRUNCATE, NULL, NULL, NULL);
    verify_tree(server, "restore after cancelled restores");
    EXPECT_CALL(WB_OK, NULL, wb_backup_delete, g_engine, S1, bk);

    /* A backup cancelled from another thread while archiving. */
    list_dir(g_backups, &before);
    static const int phases[] = {WB_PHASE_STARTED, WB_PHASE_ARCHIVE};
    for (size_t i = 0; i < 2; i++) {
        cancel_ctx c = {wb_cancel_new(), 0, 0, 0, &before};
        pthread_t th;
        CHECK(pthread_create(&th, NULL, canceller_main, &c) == 0, "pthread_create");
        recorder rec;
        rec_init(&rec);
        rec.hook = ask_cancel;
        rec.hook_state = phases[i];
        rec.ctx = &c;
        char *details = (char *)&g_failures;
        EXPECT_CALL(WB_CANCELLED, NULL, wb_backup_create, g_engine, S1, req, rec_cb, &rec, c.token, &details);
        CHECK(details == NULL, "*details_json not NULL after cancel");
        set_flag(&c.asked);
        pthread_join(th, NULL);
        CHECK(c.waited_ok, "the callback did not see the other thread trigger the token (phase %d)", phases[i]);
        rec_check(&rec, "cancelled create", PH(phases[i]), 0);
        CHECK(!exists(arch), "archive exists after cancel from a thread");
        list_dir(g_backups, &after);
        CHECK(same_listing(&before, &after), "backup directory changed by a create cancelled from a thread");
        if (!same_listing(&before, &after)) {
            print_listing("before", &before);
            print_listing("after", &after);
        }
        wb_cancel_free(c.token);
    }
    BOTH(WB_OK, NULL, wb_backup_create_check, g_engine, S1, req);
}

/* Two backups at once. */
typedef struct {
    const char *server;
    char req[256];
    int32_t rc;
    char *details;
    wb_error *err;
    recorder rec;
    int *arrived; /* barrier in the STARTED report */
    int met;      /* both calls were inside at once */
} job;

static int meet_at_start(recorder *r, const wb_progress *p) {
    job *j = r->ctx;
    if (p->phase != WB_PHASE_STARTED) return 0;
    set_flag(j->arrived);
    j->met = wait_flag(j->arrived, 2);
    return 0;
}

static void *job_main(void *arg) {
    job *j = arg;
    rec_init(&j->rec); /* records this thread as the calling thread */
    j->rec.hook = meet_at_start;
    j->rec.ctx = j;
    j->rc = wb_backup_create(g_engine, j->server, j->req, rec_cb, &j->rec, NULL, &j->details, &j->err);
    return NULL;
}

static void test_concurrent_servers(void) {
    int arrived = 0;
    job jobs[2];
    char bk[2][40], arch[PATH_MAX];
    memset(jobs, 0, sizeof jobs);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        backup_uuid(bk[i], 10 + i);
        jobs[i].server = i == 0 ? S1 : S2;
        create_req(jobs[i].req, sizeof jobs[i].req, "wings", bk[i], "");
        jobs[i].arrived = &arrived;
        CHECK(pthread_create(&th[i], NULL, job_main, &jobs[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        expect_impl(__FILE__, __LINE__, "concurrent create", jobs[i].rc, jobs[i].err, WB_OK, WB_OK, NULL);
        CHECK(jobs[i].met, "backup %d: the two backups did not run at the same time", i);
        rec_check(&jobs[i].rec, "concurrent create", PH(WB_PHASE_STARTED) | PH(WB_PHASE_DONE), 1);
        archive_of(arch, bk[i]);
        check_archive_json(jobs[i].details, arch, "concurrent details");
        wb_string_free(jobs[i].details);
        EXPECT_CALL(WB_OK, NULL, wb_backup_delete, g_engine, jobs[i].server, bk[i]);
    }
}

/* The same server twice at once: the first call is held in its STARTED
 * report while this thread makes the second. */
typedef struct {
    char req[256];
    int held, go, waited_ok;
    int32_t rc;
    wb_error *err;
    char *details;
    recorder rec;
} holder;

static int hold_at_start(recorder *r, const wb_progress *p) {
    holder *h = r->ctx;
    if (p->phase != WB_PHASE_STARTED) return 0;
    set_flag(&h->held);
    h->waited_ok = wait_flag(&h->go, 1);
    return 0;
}

static void *holder_main(void *arg) {
    holder *h = arg;
    rec_init(&h->rec);
    h->rec.hook = hold_at_start;
    h->rec.ctx = h;
    h->rc = wb_backup_create(g_engine, S1, h->req, rec_cb, &h->rec, NULL, &h->details, &h->err);
    set_flag(&h->held); /* in case it failed before its first report */
    return NULL;
}

static void test_same_server(void) {
    holder h;
    memset(&h, 0, sizeof h);
    char bk_a[40], bk_b[40], req_b[256], req_a_other[256], arch[PATH_MAX], restore_bk[40];
    backup_uuid(bk_a, 20);
    backup_uuid(bk_b, 21);
    backup_uuid(restore_bk, 22);
    create_req(h.req, sizeof h.req, "wings", bk_a, "");
    create_req(req_b, sizeof req_b, "wings", bk_b, "");
    create_req(req_a_other, sizeof req_a_other, "wings", bk_a, "");
    /* A backup to try restoring while the server is busy. */
    {
        char r[256];
        create_req(r, sizeof r, "wings", restore_bk, "");
        EXPECT_CALL(WB_OK, NULL, wb_backup_create, g_engine, S1, r, NULL, NULL, NULL, NULL);
    }

    pthread_t th;
    CHECK(pthread_create(&th, NULL, holder_main, &h) == 0, "pthread_create");
    CHECK(wait_flag(&h.held, 1), "the first backup never started");
    /* Server S1 is held by the first call now. */
    BOTH(WB_CONFLICT, NULL, wb_backup_create_check, g_engine, S1, req_b);
    char *details = (char *)&g_failures;
    BOTH(WB_CONFLICT, NULL, wb_backup_create, g_engine, S1, req_b, NULL, NULL, NULL, &details);
    CHECK(details == NULL, "*details_json not NULL after a conflict");
    BOTH(WB_CONFLICT, NULL, wb_backup_restore_check, g_engine, S1, restore_bk, RESTORE_TRUNCATE);
    BOTH(WB_CONFLICT, NULL, wb_backup_restore, g_engine, S1, restore_bk, RESTORE_TRUNCATE, NULL, NULL, NULL);
    /* The running backup's uuid, on another server. */
    BOTH(WB_CONFLICT, NULL, wb_backup_create_check, g_engine, S2, req_a_other);
    BOTH(WB_CONFLICT, NULL, wb_backup_create, g_engine, S2, req_a_other, NULL, NULL, NULL, NULL);
    /* Another server is free meanwhile. */
    BOTH(WB_OK, NULL, wb_backup_create_check, g_engine, S2, req_b);
    set_flag(&h.go);
    pthread_join(th, NULL);

    CHECK(h.waited_ok, "the first call was not released by this thread");
    expect_impl(__FILE__, __LINE__, "held create", h.rc, h.err, WB_OK, WB_OK, NULL);
    rec_check(&h.rec, "held create", PH(WB_PHASE_STARTED) | PH(WB_PHASE_ARCHIVE) | PH(WB_PHASE_DONE), 1);
    archive_of(arch, bk_a);
    check_archive_json(h.details, arch, "held create details");
    wb_string_free(h.details);
    archive_of(arch, bk_b);
    CHECK(!exists(arch), "the conflicting backup left an archive");

    /* Released: the second backup now succeeds. */
    EXPECT_CALL(WB_OK, NULL, wb_backup_create, g_engine, S1, req_b, NULL, NULL, NULL, NULL);
    EXPECT_CALL(WB_OK, NULL, wb_backup_delete, g_engine, S1, bk_a);
    EXPECT_CALL(WB_OK, NULL, wb_backup_delete, g_engine, S1, bk_b);
    EXPECT_CALL(WB_OK, NULL, wb_backup_delete, g_engine, S1, restore_bk);
}

/* Deleting a backup that is being created: it is cancelled, its partial file
 * removed, and the delete succeeds. */
typedef struct {
    char req[256];
    int running, deleting;
    int32_t rc;
    wb_error *err;
    recorder rec;
} deljob;

static int pause_in_archive(recorder *r, const wb_progress *p) {
    deljob *d = r->ctx;
    if (p->phase != WB_PHASE_ARCHIVE || r->hook_state) return 0;
    r->hook_state = 1;
    set_flag(&d->running);
    wait_flag(&d->deleting, 1);
    /* Give the delete time to trigger the backup's cancellation; either
     * outcome is correct, the final state is checked. */
    sleep_ms(300);
    return 0;
}

static void *deljob_main(void *arg) {
    deljob *d = arg;
    rec_init(&d->rec);
    d->rec.hook = pause_in_archive;
    d->rec.ctx = d;
    d->rc = wb_backup_create(g_engine, S2, d->req, rec_cb, &d->rec, NULL, NULL, &d->err);
    set_flag(&d->running);
    return NULL;
}

static void test_delete_running(void) {
    deljob d;
    memset(&d, 0, sizeof d);
    char bk[40], arch[PATH_MAX];
    backup_uuid(bk, 30);
    create_req(d.req, sizeof d.req, "wings", bk, "");
    archive_of(arch, bk);
    listing before, after;
    list_dir(g_backups, &before);

    pthread_t th;
    CHECK(pthread_create(&th, NULL, deljob_main, &d) == 0, "pthread_create");
    CHECK(wait_flag(&d.running, 1), "the backup never reached the archive phase");
    set_flag(&d.deleting);
    EXPECT_CALL(WB_OK, NULL, wb_backup_delete, g_engine, S2, bk);
    pthread_join(th, NULL);
    if (d.rc == WB_CANCELLED) {
        wb_error_free(d.err);
    } else {
        fprintf(stderr, "    note: the backup finished before the delete cancelled it\n");
        expect_impl(__FILE__, __LINE__, "create under delete", d.rc, d.err, WB_OK, WB_OK, NULL);
    }
    CHECK(!exists(arch), "archive exists after deleting a running backup");
    list_dir(g_backups, &after);
    CHECK(same_listing(&before, &after), "backup directory changed by deleting a running backup");
    BOTH(WB_NOT_FOUND, NULL, wb_backup_delete, g_engine, S2, bk);
}

/* ------------------------------------------------------------------------ */
/* max_running_backups 1: the second backup is accepted and queued; then
 * wb_engine_cancel_all ends both and refuses new work. */

typedef struct {
    wb_engine *engine;
    const char *server;
    char req[256];
    int started, go;
    int32_t rc;
    wb_error *err;
    recorder rec;
} queued_job;

static int note_start(recorder *r, const wb_progress *p) {
    queued_job *j = r->ctx;
    if (p->phase != WB_PHASE_STARTED) return 0;
    set_flag(&j->started);
    if (j->go >= 0) wait_flag(&j->go, 1); /* the first job holds its slot here */
    return 0;
}

static void *queued_main(void *arg) {
    queued_job *j = arg;
    rec_init(&j->rec);
    j->rec.hook = note_start;
    j->rec.ctx = j;
    j->rc = wb_backup_create(j->engine, j->server, j->req, rec_cb, &j->rec, NULL, NULL, &j->err);
    set_flag(&j->started);
    return NULL;
}

static void test_queue_and_cancel_all(void) {
    char cfg[8192], ua[40], ub[40], uc[40], arch[PATH_MAX];
    make_config(cfg, sizeof cfg, ",\"max_running_backups\":1");
    wb_engine *eng = NULL;
    EXPECT_CALL(WB_OK, NULL, wb_engine_new, cfg, &eng);
    if (eng == NULL) return;
    backup_uuid(ua, 40);
    backup_uuid(ub, 41);
    backup_uuid(uc, 42);
    queued_job a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    a.engine = b.engine = eng;
    a.server = S1;
    b.server = S2;
    b.go = -1; /* does not wait in its callback */
    create_req(a.req, sizeof a.req, "wings", ua, "");
    create_req(b.req, sizeof b.req, "wings", ub, "");
    pthread_t ta, tb;
    CHECK(pthread_create(&ta, NULL, queued_main, &a) == 0, "pthread_create");
    CHECK(wait_flag(&a.started, 1), "the first backup never started");
    CHECK(pthread_create(&tb, NULL, queued_main, &b) == 0, "pthread_create");
    /* Accepted although no slot is free: STARTED, then it waits. */
    CHECK(wait_flag(&b.started, 1), "the queued backup was not accepted");
    sleep_ms(200);
    CHECK(get_flag(&b.started) == 1 && b.rec.last_phase == WB_PHASE_STARTED,
          "the queued backup did not wait for the slot");
    char req[256];
    create_req(req, sizeof req, "wings", ub, "");
    BOTH(WB_CONFLICT, "already running", wb_backup_create_check, eng, S1, req);
    create_req(req, sizeof req, "wings", uc, "");
    BOTH(WB_CONFLICT, "Another backup is already running for this server", wb_backup_create_check, eng,
         S2, req);
    wb_engine_cancel_all(eng);
    wb_engine_cancel_all(eng); /* twice is fine */
    wb_engine_cancel_all(NULL);
    set_flag(&a.go);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(a.rc == WB_CANCELLED, "running backup after cancel_all: %s", wb_status_name(a.rc));
    CHECK(b.rc == WB_CANCELLED, "queued backup after cancel_all: %s", wb_status_name(b.rc));
    wb_error_free(a.err);
    wb_error_free(b.err);
    archive_of(arch, ua);
    CHECK(!exists(arch), "archive of a cancelled running backup exists");
    archive_of(arch, ub);
    CHECK(!exists(arch), "archive of a cancelled queued backup exists");
    BOTH(WB_CANCELLED, "shutting down", wb_backup_create_check, eng, S1, req);
    wb_engine_free(eng);
}

/* ------------------------------------------------------------------------ */
/* A backup's life through the engine's own threads: start, wait, status,
 * list, cancel (finished: conflict; unknown: not found), delete-all. */

/* Waits (bounded) until the state of `bk` has ended; returns its JSON. */
static char *wait_ended(wb_engine *eng, const char *server, const char *bk) {
    uint64_t seq = 0;
    for (int i = 0; i < 100; i++) {
        char *st = NULL;
        wb_error *e = NULL;
        int32_t rc = wb_backup_wait(eng, server, bk, seq, 200, &st, &e);
        if (rc != WB_OK) {
            expect_impl(__FILE__, __LINE__, "wb_backup_wait", rc, e, WB_OK, WB_OK, NULL);
            return NULL;
        }
        if (strstr(st, "\"state\":\"succeeded\"") || strstr(st, "\"state\":\"failed\"") ||
            strstr(st, "\"state\":\"cancelled\"")) {
            return st;
        }
        const char *p = strstr(st, "\"seq\":");
        CHECK(p != NULL, "no seq in %s", st);
        if (p) seq = strtoull(p + 6, NULL, 10);
        wb_string_free(st);
    }
    CHECK(0, "the backup did not end within 20 s");
    return NULL;
}

static void test_lifecycle(void) {
    char bk[40], other[40], req[256], arch[PATH_MAX];
    backup_uuid(bk, 50);
    backup_uuid(other, 51);
    create_req(req, sizeof req, "wings", bk, "");
    EXPECT_CALL(WB_OK, NULL, wb_backup_start, g_engine, S1, req);
    /* Accepted: the engine knows it at once. */
    char *st = NULL;
    EXPECT_CALL(WB_OK, NULL, wb_backup_status, g_engine, S1, bk, &st);
    CHECK(st && strstr(st, "\"kind\":\"create\"") && strstr(st, "\"server\":\"" S1 "\""), "status: %s", st);
    wb_string_free(st);
    /* A second start of the same uuid is refused (running or existing). */
    BOTH(WB_CONFLICT, NULL, wb_backup_start, g_engine, S1, req);
    st = wait_ended(g_engine, S1, bk);
    CHECK(st && strstr(st, "\"state\":\"succeeded\"") && strstr(st, "\"phase\":\"done\"") &&
              strstr(st, "\"error\":null") && !strstr(st, "\"finished_at\":null"),
          "ended: %s", st);
    wb_string_free(st);
    archive_of(arch, bk);
    CHECK(exists(arch), "no archive after a started backup");
    CHECK(wb_engine_wait_idle(g_engine, 5000) == 1, "the engine's threads did not end");
    CHECK(wb_engine_wait_idle(NULL, 0) == 1, "wait_idle(NULL)");
    char *list = NULL;
    EXPECT_CALL(WB_OK, NULL, wb_backup_list, g_engine, S1, &list);
    CHECK(list && list[0] == '[' && strstr(list, bk), "list: %s", list);
    wb_string_free(list);
    EXPECT_CALL(WB_OK, NULL, wb_backup_list, g_engine, S2, &list);
    CHECK(list && !strstr(list, bk), "the other server's list: %s", list);
    wb_string_free(list);
    BOTH(WB_CONFLICT, "already finished", wb_backup_cancel, g_engine, S1, bk);
    BOTH(WB_NOT_FOUND, NULL, wb_backup_cancel, g_engine, S1, other);
    BOTH(WB_NOT_FOUND, NULL, wb_backup_status, g_engine, S1, other, &st);
    CHECK(st == NULL, "status of an unknown backup set *state_json");
    BOTH(WB_NOT_FOUND, NULL, wb_backup_status, g_engine, S2, bk, &st);
    BOTH(WB_NOT_FOUND, NULL, wb_backup_wait, g_engine, S1, other, 0, 10, &st);
    BOTH(WB_INVALID_ARGUMENT, NULL, wb_backup_status, g_engine, S1, NULL, &st);
    BOTH(WB_INVALID_ARGUMENT, NULL, wb_backup_start, NULL, S1, req);
    BOTH(WB_NOT_FOUND, NULL, wb_restore_start, g_engine, S1, other, "{\"adapter\":\"wings\"}");
    /* A started restore, waited for. */
    EXPECT_CALL(WB_OK, NULL, wb_restore_start, g_engine, S1, bk,
                "{\"adapter\":\"wings\",\"truncate_directory\":true}");
    st = wait_ended(g_engine, S1, bk);
    CHECK(st && strstr(st, "\"kind\":\"restore\"") && strstr(st, "\"state\":\"succeeded\""), "restore: %s",
          st);
    wb_string_free(st);
    char s1[PATH_MAX];
    path_join(s1, g_data, S1);
    verify_tree(s1, "after a started restore");
    char *json = NULL;
    EXPECT_CALL(WB_OK, NULL, wb_backups_delete_all, g_engine, S1, &json);
    CHECK(json && strcmp(json, "{\"deleted\":1}") == 0, "delete-all: %s", json);
    wb_string_free(json);
    CHECK(!exists(arch), "archive left by delete-all");
    BOTH(WB_NOT_FOUND, NULL, wb_backup_status, g_engine, S1, bk, &st);
    EXPECT_CALL(WB_OK, NULL, wb_backups_delete_all, g_engine, S1, NULL);
    BOTH(WB_NOT_FOUND, NULL, wb_backups_delete_all, g_engine, S_UNKNOWN, &json);
}

/* The log callback: what it was given, from which threads. */
typedef struct {
    pthread_mutex_t mu;
    int calls, warn_retries, bad_level, off_main;
    pthread_t main;
    char first_retry[1024];
} log_record;

static void log_cb(void *userdata, int32_t level, const char *message) {
    log_record *r = userdata;
    pthread_mutex_lock(&r->mu);
    r->calls++;
    if (level < WB_LOG_DEBUG || level > WB_LOG_ERROR) r->bad_level++;
    if (!pthread_equal(pthread_self(), r->main)) r->off_main++;
    if (level == WB_LOG_WARN && strstr(message, "/restore attempt ") && strstr(message, "retrying")) {
        if (r->warn_retries++ == 0) snprintf(r->first_retry, sizeof r->first_retry, "%s", message);
    }
    pthread_mutex_unlock(&r->mu);
}

static int log_get(log_record *r, int *field) {
    pthread_mutex_lock(&r->mu);
    int v = *field;
    pthread_mutex_unlock(&r->mu);
    return v;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A 127.0.0.1 port nothing listens on (bound, then released). */
static int closed_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0) {
        port = ntohs(a.sin_port);
    }
    if (fd >= 0) close(fd);
    return port;
}

/* wb_engine_set_logger, and a restore with the Panel down: it returns at
 * once; the reporter thread retries in the background, each retry a
 * WB_LOG_WARN message from a thread of the engine's; wb_engine_cancel_all
 * parks the report; nothing is logged after wb_engine_free. */
static void test_logger(void) {
    char req[256], bk[40], extra[512], cfg[8192], pending[PATH_MAX + 64], dir[PATH_MAX];
    int port = closed_port();
    CHECK(port > 0, "no free port");
    if (port <= 0) return;
    backup_uuid(bk, 90);
    create_req(req, sizeof req, "wings", bk, "");
    EXPECT_CALL(WB_OK, NULL, wb_backup_create, g_engine, S1, req, NULL, NULL, NULL, NULL);

    snprintf(extra, sizeof extra,
             ",\"panel\":{\"url\":\"http://127.0.0.1:%d\",\"token_id\":\"id\",\"token\":\"secret\","
             "\"report_retry_s\":600}",
             port);
    make_config(cfg, sizeof cfg, extra);
    wb_engine *eng = NULL;
    EXPECT_CALL(WB_OK, NULL, wb_engine_new, cfg, &eng);
    if (eng == NULL) return;
    log_record rec;
    memset(&rec, 0, sizeof rec);
    pthread_mutex_init(&rec.mu, NULL);
    rec.main = pthread_self();
    BOTH(WB_INVALID_ARGUMENT, "engine", wb_engine_set_logger, NULL, log_cb, &rec);
    EXPECT_CALL(WB_OK, NULL, wb_engine_set_logger, eng, NULL, NULL); /* none: fine */
    EXPECT_CALL(WB_OK, NULL, wb_engine_set_logger, eng, log_cb, &rec);

    double began = now_s();
    EXPECT_CALL(WB_OK, NULL, wb_backup_restore, eng, S1, bk, RESTORE_TRUNCATE, NULL, NULL, NULL);
    double took = now_s() - began;
    CHECK(took < 1.0, "the restore took %.2fs with the Panel down", took);
    for (int i = 0; i < 100 && log_get(&rec, &rec.warn_retries) == 0; i++) sleep_ms(50);
    CHECK(log_get(&rec, &rec.warn_retries) >= 1, "no WB_LOG_WARN message of a retried restore report");
    pthread_mutex_lock(&rec.mu);
    CHECK(strstr(rec.first_retry, "attempt 1 failed") != NULL, "first retry: %s", rec.first_retry);
    CHECK(rec.off_main >= 1, "the retries were not logged from the reporter thread");
    CHECK(rec.bad_level == 0, "%d messages with a level outside WB_LOG_*", rec.bad_level);
    pthread_mutex_unlock(&rec.mu);

    wb_engine_cancel_all(eng); /* stops the reporter: the report is parked */
    path_join(dir, g_backups, ".pending");
    snprintf(pending, sizeof pending, "%s/%s.restore.json", dir, bk);
    CHECK(exists(pending), "no parked restore report at %s", pending);
    wb_engine_free(eng);
    int calls = log_get(&rec, &rec.calls);
    sleep_ms(700);
    CHECK(log_get(&rec, &rec.calls) == calls, "the logger was called after wb_engine_free");
    pthread_mutex_destroy(&rec.mu);
    rm_rf(dir);
    char arch[PATH_MAX];
    archive_of(arch, bk);
    unlink(arch);
}

/* The hosts' settings: the static table, resolution (flags over env over a
 * Wings config.yml), errors naming the flag and path, the directories. */
static void test_host_settings(void) {
    const char *table = wb_host_settings();
    CHECK(table != NULL && table == wb_host_settings(), "wb_host_settings is one static string");
    CHECK(table && strstr(table, "\"flag\":\"listen\"") && strstr(table, "\"env\":\"WINGS_TOKEN\""),
          "table: %s", table ? table : "(null)");

    char cfg[PATH_MAX], flags[PATH_MAX + 256];
    path_join(cfg, g_root, "host-config.yml");
    const char *yml = "token: file-secret\nsystem:\n  data: /srv/v\nsftp: {bind_port: 2022}\n";
    CHECK(write_file(cfg, yml, strlen(yml)) == 0, "write %s", cfg);
    snprintf(flags, sizeof flags, "{\"config\":\"%s\",\"write-limit\":3,\"read-timeout\":1.5}", cfg);
    char *out = NULL;
    EXPECT_CALL(WB_OK, NULL, wb_host_settings_resolve, flags, "{\"WINGS_TOKEN\":\"env-secret\"}", &out);
    CHECK(out && strstr(out, "\"data_directory\":\"/srv/v\"") && strstr(out, "\"write_limit\":3") &&
              strstr(out, "\"token\":\"env-secret\"") && strstr(out, "\"key\":\"sftp.bind_port\"") &&
              strstr(out, "[\"read_timeout\",\"1.5s\"]") && strstr(out, "\"token\":\"env\"") &&
              !strstr(out, "file-secret"),
          "resolved: %s", out ? out : "(null)");
    wb_string_free(out);

    out = (char *)1;
    BOTH(WB_INVALID_ARGUMENT, "token is required", wb_host_settings_resolve, "{}", NULL, &out);
    CHECK(out == NULL, "*resolved_json is not NULL after an error");
    BOTH(WB_INVALID_ARGUMENT, "/nonexistent/c.yml: cannot read", wb_host_settings_resolve,
         "{\"token\":\"t\",\"config\":\"/nonexistent/c.yml\"}", NULL, &out);
    BOTH(WB_INVALID_ARGUMENT, "--write-limit", wb_host_settings_resolve, "{\"token\":\"t\",\"write-limit\":-1}",
         NULL, &out);
    BOTH(WB_INVALID_ARGUMENT, "flags_json", wb_host_settings_resolve, NULL, NULL, &out);
    BOTH(WB_INVALID_ARGUMENT, "not valid JSON", wb_host_settings_resolve, "{", NULL, &out);
    const char *bad = "api: [\n";
    CHECK(write_file(cfg, bad, strlen(bad)) == 0, "write %s", cfg);
    snprintf(flags, sizeof flags, "{\"token\":\"t\",\"config\":\"%s\"}", cfg);
    BOTH(WB_INVALID_ARGUMENT, "invalid YAML: line", wb_host_settings_resolve, flags, NULL, &out);

    char data[PATH_MAX], backups[PATH_MAX];
    path_join(data, g_root, "host-v");
    path_join(backups, g_root, "host-b");
    EXPECT_CALL(WB_OK, NULL, wb_host_prepare_directories, data, backups, &out);
    CHECK(out && strstr(out, "\"flag\":\"--backup-dir\"") && strstr(out, "\"mode\":\"0700\""), "created: %s",
          out ? out : "(null)");
    wb_string_free(out);
    struct stat st;
    CHECK(stat(backups, &st) == 0 && (st.st_mode & 0777) == 0700, "backup dir mode");
    BOTH(WB_IO, "--backup-dir", wb_host_prepare_directories, data, cfg, &out);
    BOTH(WB_INVALID_ARGUMENT, "data_dir", wb_host_prepare_directories, NULL, backups, &out);
    EXPECT_CALL(WB_OK, NULL, wb_host_prepare_directories, data, backups, NULL);
    rm_rf(data);
    rm_rf(backups);
}

/* ------------------------------------------------------------------------ */

static void run(const char *name, void (*fn)(void)) {
    g_test_failures = 0;
    fn();
    printf("%s - %s\n", g_test_failures ? "not ok" : "ok", name);
    fflush(stdout);
}

int main(void) {
    setvbuf(stderr, NULL, _IONBF, 0);
    fill_pattern();
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp) tmp = "/tmp";
    snprintf(g_root, sizeof g_root, "%s/wb-harness-XXXXXX", tmp);
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        return 2;
    }
    path_join(g_data, g_root, "data");
    path_join(g_backups, g_root, "backups");
    char s[PATH_MAX];
    if (mkdir(g_data, 0755)) {
        perror("mkdir");
        return 2;
    }
    path_join(s, g_data, S1);
    if (populate(s)) {
        perror("populate");
        return 2;
    }
    path_join(s, g_data, S2);
    if (populate(s)) {
        perror("populate");
        return 2;
    }

    run("version, abi, deflate backend, status names and HTTP codes", test_version_status);
    run("NULL objects, *_free(NULL), cancel tokens", test_null_objects);
    run("wb_engine_new: NULL, bad JSON, unknown and ill-typed keys", test_engine_new);
    run("host settings: table, resolution, errors, directories", test_host_settings);

    char cfg[8192];
    make_config(cfg, sizeof cfg, NULL);
    wb_error *e = NULL;
    if (wb_engine_new(cfg, &g_engine, &e) != WB_OK) {
        fprintf(stderr, "cannot create the engine: %s\n", wb_error_message(e));
        wb_error_free(e);
        rm_rf(g_root);
        return 1;
    }

    run("NULL for every pointer argument", test_null_args);
    run("bad requests, UUIDs, servers, missing backups, s3", test_bad_requests);
    run("backup, restore (truncate, merge), delete round trip", test_round_trip);
    run("ignore rules in a backup request", test_ignore);
    run("archive-level create and extract", test_archive_level);
    run("progress callback stops create and restore", test_callback_stop);
    run("cancel tokens, and cancellation from another thread", test_cancel);
    run("two servers backed up at once", test_concurrent_servers);
    run("the same server twice at once: conflict", test_same_server);
    run("deleting a running backup", test_delete_running);
    run("max_running_backups: a queued backup; wb_engine_cancel_all", test_queue_and_cancel_all);
    run("started calls: status, wait, list, cancel, delete-all", test_lifecycle);
    run("wb_engine_set_logger; a restore reported in the background", test_logger);

    wb_engine_free(g_engine);
    rm_rf(g_root);
    if (exists(g_root)) {
        fprintf(stderr, "could not remove %s\n", g_root);
        g_failures++;
    }
    printf("%s: %d failed check(s)\n", g_failures ? "FAILED" : "PASSED", g_failures);
    return g_failures ? 1 : 0;
}
