/* s3 — the object-store client (see s3.h). */
#include "server/s3.h"

#include <curl/curl.h>
#include <errno.h>
#include <glib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define HANDLES_MAX 8 /* storage.s3.transfers is at most 6; +1 checker */

struct s3 {
    char endpoint[256]; /* without a trailing '/' */
    char bucket[64];
    char sigv4[96]; /* "aws:amz:<region>:s3" */
    char access[256], secret[256];
    bool path_style;
    long connect_ms, total_ms, buffer;
    uint64_t check_ms;
    _Atomic int state;       /* 0: not checked yet, 1: answers, 2: does not */
    void (*tick)(void *arg); /* after each check (s3_set_tick) */
    void *tick_arg;
    /* pool of easy handles: reused so connections are kept alive */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    CURL *free_handles[HANDLES_MAX];
    unsigned nfree, nmade, max_handles;
    _Atomic uint64_t requests[S3_OP__N][S3_RESULTS]; /* s3_stats */
    /* readiness checker */
    pthread_t checker;
    bool stop, checker_started;
};

static int read_secret(const char *file, char *out, size_t outlen, char *err, size_t errlen)
{
    FILE *f = fopen(file, "re");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", file, strerror(errno));
        return -1;
    }
    size_t n = fread(out, 1, outlen - 1, f);
    fclose(f);
    out[n] = '\0';
    out[strcspn(out, "\r\n")] = '\0'; /* a Secret mounted as a file often ends in a newline */
    return 0;
}

static CURL *take(s3_t *s3)
{
    pthread_mutex_lock(&s3->mu);
    while (s3->nfree == 0 && s3->nmade >= s3->max_handles)
        pthread_cond_wait(&s3->cv, &s3->mu);
    CURL *h = NULL;
    if (s3->nfree > 0)
        h = s3->free_handles[--s3->nfree];
    else if ((h = curl_easy_init()) != NULL)
        s3->nmade++;
    pthread_mutex_unlock(&s3->mu);
    if (h != NULL)
        curl_easy_reset(h);
    return h;
}

static void give(s3_t *s3, CURL *h)
{
    pthread_mutex_lock(&s3->mu);
    s3->free_handles[s3->nfree++] = h;
    pthread_cond_broadcast(&s3->cv); /* the checker waits on the same condition */
    pthread_mutex_unlock(&s3->mu);
}

/* Unreserved characters and '/' stay; everything else is %XX. */
static size_t encode(const char *s, bool keep_slash, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s != '\0' && o + 4 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return o;
}

void s3_url(const s3_t *s3, const char *key, const char *query, char *out, size_t outlen)
{
    char ekey[3200];
    encode(key, true, ekey, sizeof(ekey));
    const char *q = query != NULL ? "?" : "", *qs = query != NULL ? query : "";
    if (s3->path_style) {
        snprintf(out, outlen, "%s/%s/%s%s%s", s3->endpoint, s3->bucket, ekey, q, qs);
        return;
    }
    /* virtual host: <scheme>://<bucket>.<host>[:port][/path]/<key> */
    const char *host = strstr(s3->endpoint, "://");
    host = host ? host + 3 : s3->endpoint;
    snprintf(out, outlen, "%.*s%s.%s/%s%s%s", (int)(host - s3->endpoint), s3->endpoint, s3->bucket,
             host, ekey, q, qs);
}

/* What one request gathers from the response head. */
typedef struct {
    s3_meta_t *meta;
    FILE *body;      /* GET: the file the body goes to */
    char *buf;       /* list: the XML, bounded */
    void *h;         /* the easy handle (the body callbacks ask for the status) */
    size_t len, cap; /* of buf */
    bool overflow;
    GChecksum *sum;         /* GET into a file: the body's MD5, as it arrives */
    uint64_t got;           /* GET into a file: body bytes */
    char want_md5[40];      /* GET: the object's S3_META_MD5, when it has one */
    const char *put_md5[2]; /* PUT: the body's MD5 in base64 and in hex (s3_put_file) */
} xfer_t;

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    xfer_t *x = arg;
    size_t len = size * n;
    if (x->meta == NULL)
        return len;
    char line[256];
    size_t l = len < sizeof(line) - 1 ? len : sizeof(line) - 1;
    memcpy(line, p, l);
    line[l] = '\0';
    line[strcspn(line, "\r\n")] = '\0';
    char *v = strchr(line, ':');
    if (v == NULL)
        return len;
    *v++ = '\0';
    while (*v == ' ')
        v++;
    if (strcasecmp(line, S3_META_MD5) == 0) {
        snprintf(x->want_md5, sizeof(x->want_md5), "%s", v);
    } else if (strcasecmp(line, "etag") == 0) {
        if (*v == '"')
            v++;
        snprintf(x->meta->etag, sizeof(x->meta->etag), "%.*s", (int)strcspn(v, "\""), v);
    } else if (strcasecmp(line, "content-length") == 0) {
        x->meta->size = strtoull(v, NULL, 10);
    } else if (strcasecmp(line, "last-modified") == 0) {
        x->meta->last_modified = curl_getdate(v, NULL);
    }
    return len;
}

static size_t on_body_file(char *p, size_t size, size_t n, void *arg)
{
    xfer_t *x = arg;
    size_t w = fwrite(p, size, n, x->body) * size;
    if (x->sum != NULL)
        g_checksum_update(x->sum, (const guchar *)p, w);
    x->got += w;
    return w;
}

static size_t on_body_buf(char *p, size_t size, size_t n, void *arg)
{
    xfer_t *x = arg;
    size_t len = size * n;
    if (x->len + len + 1 > x->cap) {
        long status = 0;
        curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 300)
            return len; /* an error's body (it may repeat a long key): the status says it */
        x->overflow = true;
        return 0; /* ends the transfer: a page never gets this big with max-keys=100 */
    }
    memcpy(x->buf + x->len, p, len);
    x->len += len;
    x->buf[x->len] = '\0';
    return len;
}

static size_t on_discard(char *p, size_t size, size_t n, void *arg)
{
    return size * n;
}

/* Runs one request on a pooled handle with the common options; maps the outcome. */
static int perform(s3_t *s3, const char *method, const char *key, const char *query, xfer_t *x,
                   FILE *upload, uint64_t upload_len)
{
    CURL *h = take(s3);
    if (h == NULL)
        return S3_E_UNAVAILABLE;
    char url[4096];
    s3_url(s3, key, query, url, sizeof(url));
    x->h = h;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, s3->connect_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, s3->total_ms);
    curl_easy_setopt(h, CURLOPT_BUFFERSIZE, s3->buffer);
    curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, s3->buffer);
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s3->sigv4);
    curl_easy_setopt(h, CURLOPT_USERNAME, s3->access);
    curl_easy_setopt(h, CURLOPT_PASSWORD, s3->secret);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION,
                     x->body  ? on_body_file
                     : x->buf ? on_body_buf
                              : on_discard);
    /* S3 wants the payload hash header on every request; curl signs it and uses its value
     * as the payload hash, so a body streams without being hashed for the signature (TLS
     * protects it; s3_put_file sends its MD5) */
    struct curl_slist *hdrs = curl_slist_append(NULL, "Expect:");
    hdrs = curl_slist_append(hdrs, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
    if (x->put_md5[0] != NULL) {
        char md5b[64], md5h[80];
        snprintf(md5b, sizeof(md5b), "Content-MD5: %s", x->put_md5[0]);
        snprintf(md5h, sizeof(md5h), S3_META_MD5 ": %s", x->put_md5[1]);
        hdrs = curl_slist_append(hdrs, md5b);
        hdrs = curl_slist_append(hdrs, md5h);
    }
    if (upload != NULL) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READDATA, upload); /* curl's default read is fread */
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)upload_len);
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hdrs);
    give(s3, h);

    int ret;
    /* a local file that failed, or a body over what the caller takes (a bigger list page
     * or small object than asked for): not the store being down */
    if (rc == CURLE_WRITE_ERROR || rc == CURLE_READ_ERROR)
        ret = S3_E_LOCAL;
    else if (rc != CURLE_OK || status == 0 || status >= 500 || status == 429 || status == 408)
        ret = S3_E_UNAVAILABLE;
    else if (status == 404)
        ret = S3_E_NOTFOUND;
    else if (status >= 300)
        ret = S3_E_DENIED;
    else
        ret = S3_OK;
    if (ret == S3_OK && x->sum != NULL) {
        /* a body cut short, or not the one put (a store serving a PUT still being written,
         * or two PUTs of one name mixed): not the object */
        if (x->got != x->meta->size)
            ret = S3_E_DAMAGED;
        else if (x->want_md5[0] != '\0')
            ret = strcasecmp(g_checksum_get_string(x->sum), x->want_md5) == 0
                      ? (x->meta->checked = true, S3_OK)
                      : S3_E_DAMAGED;
    }
    s3_op_t op = query != NULL      ? S3_OP_LIST
                 : *key == '\0'     ? S3_OP_CHECK
                 : upload != NULL   ? S3_OP_PUT
                 : method[0] == 'H' ? S3_OP_HEAD
                 : method[0] == 'D' ? S3_OP_DELETE
                                    : S3_OP_GET;
    atomic_fetch_add_explicit(&s3->requests[op][ret], 1, memory_order_relaxed);
    /* a transfer is a check too: the store answered, or it did not */
    if (ret == S3_E_UNAVAILABLE)
        atomic_store(&s3->state, 2);
    else if (ret == S3_OK || ret == S3_E_NOTFOUND)
        atomic_store(&s3->state, 1);
    return ret;
}

void s3_stats(const s3_t *s3, s3_stats_t *out)
{
    for (int op = 0; op < S3_OP__N; op++)
        for (int r = 0; r < S3_RESULTS; r++)
            out->n[op][r] =
                atomic_load_explicit(&((s3_t *)s3)->requests[op][r], memory_order_relaxed);
}

const char *s3_op_name(s3_op_t op)
{
    static const char *const names[S3_OP__N] = {"get", "put", "head", "delete", "list", "check"};
    return op < S3_OP__N ? names[op] : "?";
}

const char *s3_result_name(int result)
{
    static const char *const names[S3_RESULTS] = {"ok",     "not_found", "unavailable",
                                                  "denied", "local",     "damaged"};
    return result >= 0 && result < S3_RESULTS ? names[result] : "?";
}

/* The MD5 of the rest of @p f, which is then rewound: in base64 and in hex. */
static bool file_md5(FILE *f, char b64[32], char hex[40])
{
    GChecksum *c = g_checksum_new(G_CHECKSUM_MD5);
    unsigned char buf[16384];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        g_checksum_update(c, buf, n);
    guint8 d[16];
    gsize dl = sizeof(d);
    g_checksum_get_digest(c, d, &dl);
    snprintf(hex, 40, "%s", g_checksum_get_string(c));
    g_checksum_free(c);
    gchar *e = g_base64_encode(d, dl);
    snprintf(b64, 32, "%s", e);
    g_free(e);
    return !ferror(f) && fseek(f, 0, SEEK_SET) == 0;
}

int s3_put_file(s3_t *s3, const char *key, const char *path, s3_meta_t *meta)
{
    FILE *f = fopen(path, "rbe");
    struct stat sb;
    char b64[32], hex[40];
    if (f == NULL || fstat(fileno(f), &sb) != 0 || !file_md5(f, b64, hex)) {
        if (f)
            fclose(f);
        return S3_E_LOCAL;
    }
    s3_meta_t m = {0};
    xfer_t x = {.meta = &m, .put_md5 = {b64, hex}};
    int r = perform(s3, "PUT", key, NULL, &x, f, (uint64_t)sb.st_size);
    fclose(f);
    m.size = (uint64_t)sb.st_size;
    if (meta)
        *meta = m;
    return r;
}

int s3_get_file(s3_t *s3, const char *key, const char *path, s3_meta_t *meta)
{
    FILE *f = fopen(path, "wbe");
    if (f == NULL)
        return S3_E_LOCAL;
    s3_meta_t m = {0};
    xfer_t x = {.meta = &m, .body = f, .sum = g_checksum_new(G_CHECKSUM_MD5)};
    int r = perform(s3, "GET", key, NULL, &x, NULL, 0);
    g_checksum_free(x.sum);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        r = r == S3_OK ? S3_E_LOCAL : r;
    fclose(f);
    if (meta)
        *meta = m;
    return r;
}

int s3_put_data(s3_t *s3, const char *key, const void *data, size_t len)
{
    FILE *f = fmemopen((void *)data, len, "r");
    if (f == NULL)
        return S3_E_LOCAL;
    xfer_t x = {0};
    int r = perform(s3, "PUT", key, NULL, &x, f, len);
    fclose(f);
    return r;
}

int s3_get_data(s3_t *s3, const char *key, char *buf, size_t cap, size_t *len)
{
    xfer_t x = {.buf = buf, .cap = cap};
    buf[0] = '\0';
    int r = perform(s3, "GET", key, NULL, &x, NULL, 0);
    *len = x.len;
    return r;
}

int s3_head(s3_t *s3, const char *key, s3_meta_t *meta)
{
    s3_meta_t m = {0};
    xfer_t x = {.meta = &m};
    int r = perform(s3, "HEAD", key, NULL, &x, NULL, 0);
    if (meta)
        *meta = m;
    return r;
}

int s3_delete(s3_t *s3, const char *key)
{
    xfer_t x = {0};
    int r = perform(s3, "DELETE", key, NULL, &x, NULL, 0);
    return r == S3_E_NOTFOUND ? S3_OK : r;
}

/* The text of the first <tag>...</tag> at or after @p p, into @p out; the end, or NULL. */
static const char *xml_tag(const char *p, const char *end, const char *tag, char *out,
                           size_t outlen)
{
    char open[40], close[40];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    const char *a = strstr(p, open);
    if (a == NULL || (end != NULL && a >= end))
        return NULL;
    a += strlen(open);
    const char *b = strstr(a, close);
    if (b == NULL)
        return NULL;
    size_t n = (size_t)(b - a) < outlen - 1 ? (size_t)(b - a) : outlen - 1;
    memcpy(out, a, n);
    out[n] = '\0';
    return b + strlen(close);
}

/* &quot; around ETags in listings; our keys never need other entities */
static void unquote_etag(char *s)
{
    char *src = s, *dst = s;
    while (*src) {
        if (strncmp(src, "&quot;", 6) == 0)
            src += 6;
        else if (*src == '"')
            src++;
        else
            *dst++ = *src++;
    }
    *dst = '\0';
}

int s3_list(s3_t *s3, const char *prefix,
            int (*fn)(void *arg, const char *key, const char *etag, time_t last_modified),
            void *arg)
{
    char *buf = malloc(S3_LIST_MAX);
    char token[1024] = "", etok[3100], epre[3100], query[6400], key[1100], etag[100], lm[64];
    if (buf == NULL)
        return S3_E_LOCAL;
    encode(prefix, false, epre, sizeof(epre));
    int r = S3_OK;
    for (;;) {
        /* parameters in canonical (sorted) order, values encoded: the URL is signed as is */
        encode(token, false, etok, sizeof(etok));
        snprintf(query, sizeof(query), "%s%s%slist-type=2&max-keys=100&prefix=%s",
                 token[0] ? "continuation-token=" : "", token[0] ? etok : "", token[0] ? "&" : "",
                 epre);
        xfer_t x = {.buf = buf, .cap = S3_LIST_MAX};
        buf[0] = '\0';
        if ((r = perform(s3, "GET", "", query, &x, NULL, 0)) != S3_OK)
            break;
        const char *p = buf, *c;
        bool stop = false;
        while (!stop && (c = strstr(p, "<Contents>")) != NULL) {
            const char *ce = strstr(c, "</Contents>");
            if (ce == NULL)
                break;
            key[0] = etag[0] = lm[0] = '\0';
            xml_tag(c, ce, "Key", key, sizeof(key));
            xml_tag(c, ce, "ETag", etag, sizeof(etag));
            xml_tag(c, ce, "LastModified", lm, sizeof(lm));
            unquote_etag(etag);
            stop = fn(arg, key, etag, curl_getdate(lm, NULL)) != 0;
            p = ce;
        }
        char trunc[16] = "";
        xml_tag(buf, NULL, "IsTruncated", trunc, sizeof(trunc));
        if (stop || strcmp(trunc, "true") != 0 ||
            xml_tag(buf, NULL, "NextContinuationToken", token, sizeof(token)) == NULL)
            break;
    }
    free(buf);
    return r;
}

/* Keys are collected a page at a time, then deleted (never while a listing is open). */
typedef struct {
    char (*keys)[1100];
    unsigned n, cap;
    const char *except;
} collect_t;

static int on_collect(void *arg, const char *key, const char *etag, time_t lm)
{
    collect_t *c = arg;
    if (c->except != NULL && strstr(key, c->except) != NULL)
        return 0;
    if (c->n == c->cap)
        return 1;
    snprintf(c->keys[c->n++], sizeof(c->keys[0]), "%s", key);
    return 0;
}

int s3_delete_prefix(s3_t *s3, const char *prefix, const char *except)
{
    collect_t c = {.cap = 100, .except = except};
    c.keys = malloc(sizeof(*c.keys) * c.cap);
    if (c.keys == NULL)
        return S3_E_LOCAL;
    int r;
    do {
        c.n = 0;
        if ((r = s3_list(s3, prefix, on_collect, &c)) != S3_OK)
            break;
        for (unsigned i = 0; i < c.n && r == S3_OK; i++)
            r = s3_delete(s3, c.keys[i]);
    } while (r == S3_OK && c.n == c.cap); /* a full batch: there may be more */
    free(c.keys);
    return r;
}

bool s3_ready(const s3_t *s3)
{
    return atomic_load(&((s3_t *)s3)->state) == 1;
}

bool s3_down(const s3_t *s3)
{
    return atomic_load(&((s3_t *)s3)->state) == 2;
}

void s3_set_tick(s3_t *s3, void (*fn)(void *arg), void *arg)
{
    pthread_mutex_lock(&s3->mu);
    s3->tick = fn;
    s3->tick_arg = arg;
    pthread_mutex_unlock(&s3->mu);
}

static void *check_main(void *arg)
{
    s3_t *s3 = arg;
    pthread_mutex_lock(&s3->mu);
    while (!s3->stop) {
        pthread_mutex_unlock(&s3->mu);
        /* HEAD of the bucket: cheap, signed, and answered only by a working store */
        xfer_t x = {0};
        int r = perform(s3, "HEAD", "", NULL, &x, NULL, 0);
        atomic_store(&s3->state, r == S3_OK ? 1 : 2);
        pthread_mutex_lock(&s3->mu);
        if (s3->tick != NULL) {
            void (*fn)(void *) = s3->tick;
            void *a = s3->tick_arg;
            pthread_mutex_unlock(&s3->mu);
            fn(a);
            pthread_mutex_lock(&s3->mu);
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (s3->check_ms % 1000) * 1000000u;
        ts.tv_sec += (time_t)(s3->check_ms / 1000 + ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        while (!s3->stop && pthread_cond_timedwait(&s3->cv, &s3->mu, &ts) == 0)
            ; /* woken for a handle, not for us: keep waiting */
    }
    pthread_mutex_unlock(&s3->mu);
    return NULL;
}

static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT); /* before any thread uses curl (not thread-safe) */
}

s3_t *s3_create(const cfg_t *cfg, char *err, size_t errlen)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, global_init);
    s3_t *s3 = calloc(1, sizeof(*s3));
    if (s3 == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(s3->endpoint, sizeof(s3->endpoint), "%s", cfg->s3_endpoint);
    size_t el = strlen(s3->endpoint);
    while (el > 0 && s3->endpoint[el - 1] == '/')
        s3->endpoint[--el] = '\0';
    snprintf(s3->bucket, sizeof(s3->bucket), "%s", cfg->s3_bucket);
    snprintf(s3->sigv4, sizeof(s3->sigv4), "aws:amz:%s:s3", cfg->s3_region);
    snprintf(s3->access, sizeof(s3->access), "%s", cfg->s3_access_key);
    snprintf(s3->secret, sizeof(s3->secret), "%s", cfg->s3_secret_key);
    char e[600];
    if ((s3->access[0] == '\0' && cfg->s3_access_key_file[0] != '\0' &&
         read_secret(cfg->s3_access_key_file, s3->access, sizeof(s3->access), e, sizeof(e)) != 0) ||
        (s3->secret[0] == '\0' && cfg->s3_secret_key_file[0] != '\0' &&
         read_secret(cfg->s3_secret_key_file, s3->secret, sizeof(s3->secret), e, sizeof(e)) != 0)) {
        snprintf(err, errlen, "storage.s3: cannot read a key file: %s", e);
        free(s3);
        return NULL;
    }
    s3->path_style = cfg->s3_path_style;
    s3->connect_ms = (long)cfg->s3_connect_timeout_ms;
    s3->total_ms = (long)cfg->s3_timeout_ms;
    s3->buffer = (long)cfg->s3_buffer;
    s3->check_ms = cfg->s3_check_interval_ms;
    s3->max_handles = cfg->s3_transfers + 1 < HANDLES_MAX ? cfg->s3_transfers + 1 : HANDLES_MAX;
    pthread_mutex_init(&s3->mu, NULL);
    pthread_cond_init(&s3->cv, NULL);
    s3->checker_started = pthread_create(&s3->checker, NULL, check_main, s3) == 0;
    return s3;
}

void s3_destroy(s3_t *s3)
{
    if (s3 == NULL)
        return;
    pthread_mutex_lock(&s3->mu);
    s3->stop = true;
    pthread_cond_broadcast(&s3->cv);
    pthread_mutex_unlock(&s3->mu);
    if (s3->checker_started)
        pthread_join(s3->checker, NULL);
    for (unsigned i = 0; i < s3->nfree; i++)
        curl_easy_cleanup(s3->free_handles[i]);
    pthread_mutex_destroy(&s3->mu);
    pthread_cond_destroy(&s3->cv);
    free(s3);
}
