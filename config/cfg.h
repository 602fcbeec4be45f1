/* cfg — thumbgate configuration: one YAML file (libyaml) parsed through one static
 * table of typed rows, then environment overrides (THUMBGATE_<KEY_PATH>), into one
 * immutable cfg_t. */
#ifndef THUMBGATE_CFG_H
#define THUMBGATE_CFG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define CFG_MAX_SIZES 64

typedef enum { CFG_MODE_ADMIT = 0, CFG_MODE_NAIVE = 1 } cfg_mode_t;
typedef enum { CFG_BACKEND_LOCAL = 0, CFG_BACKEND_S3 = 1 } cfg_backend_t;
typedef enum { CFG_LOG_ERROR = 0, CFG_LOG_WARN, CFG_LOG_INFO, CFG_LOG_DEBUG } cfg_log_level_t;

/** One allowed output size of the `sizes:` allow-list; 0 means "this side free". */
typedef struct {
    uint32_t width, height;
    bool crop;
} cfg_size_t;

#define CFG_MAX_PRESETS 32
#define CFG_PRESET_NAME_MAX 32
#define CFG_URL_KEY_MIN 16 /**< shortest accepted auth.url_key: a short HMAC key can be guessed */

typedef enum { CFG_PRESET_FIT = 0, CFG_PRESET_COVER, CFG_PRESET_SMART } cfg_preset_mode_t;

/** One entry of `presets:`, served as /<stem>@<name>. */
typedef struct {
    char name[CFG_PRESET_NAME_MAX + 1]; /**< [A-Za-z0-9_-]+ */
    uint32_t width, height;             /**< 0 = that side free (fit only) */
    uint32_t mode;                      /**< cfg_preset_mode_t */
    char format[8];                     /**< output extension, lower case: jpg, png, webp, ... */
    uint32_t quality;                   /**< 1..100; 0 = output.*_quality of the format */
} cfg_preset_t;

/** The effective configuration. Sizes in bytes, durations in milliseconds. */
typedef struct cfg {
    char source[512];           /**< file it was read from ("<embedded>" for the built-in default) */

    char listen[128];           /**< `listen`: host:port of the public listener */
    char admin_listen[128];     /**< `admin_listen`: host:port of the admin listener */
    uint32_t threads;           /**< `threads`: event-loop threads (SO_REUSEPORT); 0 = auto */
    uint32_t workers;           /**< `workers`: image worker threads; 0 = auto (= cores) */

    char storage_root[512];     /**< `storage.root` */
    uint64_t cache_max_bytes;   /**< `storage.cache_max`: disk bound of derived results (LRU) */
    cfg_backend_t storage_backend; /**< `storage.backend`: local | s3 */
    char s3_endpoint[256];      /**< `storage.s3.endpoint`: http(s)://host[:port] */
    char s3_bucket[64];         /**< `storage.s3.bucket` */
    char s3_region[64];         /**< `storage.s3.region`: signing region */
    char s3_access_key[256];    /**< `storage.s3.access_key` */
    char s3_secret_key[256];    /**< `storage.s3.secret_key` */
    char s3_access_key_file[512]; /**< `storage.s3.access_key_file`: read at start when access_key is empty */
    char s3_secret_key_file[512]; /**< `storage.s3.secret_key_file`: read at start when secret_key is empty */
    bool s3_path_style;         /**< `storage.s3.path_style`: endpoint/bucket/key, else bucket.host/key */
    uint64_t s3_connect_timeout_ms; /**< `storage.s3.connect_timeout` */
    uint64_t s3_timeout_ms;     /**< `storage.s3.timeout`: whole transfer, then 503 */
    uint32_t s3_transfers;      /**< `storage.s3.transfers`: concurrent transfers (io threads) */
    uint64_t s3_buffer;         /**< `storage.s3.buffer`: curl's receive and upload buffer per transfer */
    uint64_t s3_cache_max;      /**< `storage.s3.cache_max`: local disk bound of originals (LRU) */
    uint64_t s3_revalidate_ms;  /**< `storage.s3.revalidate`: a checked key is trusted this long */
    uint64_t s3_check_interval_ms; /**< `storage.s3.check_interval`: HEAD bucket for /readyz */

    uint64_t max_upload;        /**< `limits.max_upload` */
    uint64_t max_pixels;        /**< `limits.max_pixels` */
    uint32_t max_frames;        /**< `limits.max_frames`: frames of an animated source */
    uint32_t max_output_width;  /**< `limits.max_output_width` */
    uint32_t max_output_height; /**< `limits.max_output_height` */
    uint32_t max_connections;   /**< `limits.max_connections` (per process); 0 = auto (memplan) */
    uint64_t max_header_bytes;  /**< `limits.max_header_bytes`: a request head larger is refused */
    uint64_t max_body_inflight; /**< `limits.max_body_inflight`: body bytes in flight; 0 = auto */
    cfg_size_t sizes[CFG_MAX_SIZES]; /**< `limits.sizes`: allow-list like "290x290,100x,640x480c" */
    uint32_t nsizes;            /**< 0 = any size allowed */
    bool presets_only;          /**< `limits.presets_only`: only presets are derived */
    cfg_preset_t presets[CFG_MAX_PRESETS]; /**< `presets`: name -> size, mode, format, quality */
    uint32_t npresets;

    uint64_t memory_budget;     /**< `memory.budget`: bytes; 0 = auto */
    uint32_t memory_budget_percent; /**< `memory.auto_percent`: share of the memory limit used by auto */
    cfg_mode_t memory_mode;     /**< `memory.mode`: admit | naive */
    uint32_t queue_max;         /**< `memory.queue_max`: waiting jobs at most */
    uint64_t queue_max_bytes;   /**< `memory.queue_max_bytes`: sum of waiting estimates at most; 0 = 4 x budget */
    uint64_t queue_timeout_ms;  /**< `memory.queue_timeout`: longest wait before 503 */
    uint64_t job_timeout_ms;    /**< `memory.job_timeout`: deadline of a running job (then 503) */
    bool malloc_trim_idle;      /**< `memory.trim_when_idle` */

    uint64_t req_timeout_ms;    /**< `http.request_timeout`: whole request read (headers + body) */
    uint64_t idle_timeout_ms;   /**< `http.idle_timeout`: keep-alive / HTTP/2 idle */
    uint64_t shutdown_timeout_ms; /**< `http.shutdown_timeout`: drain deadline on SIGTERM */
    uint64_t upload_spill_bytes; /**< `http.upload_spill`: a socket buffer becomes a file at this size */
    uint64_t socket_buffer;     /**< `http.socket_buffer`: SO_RCVBUF / SO_SNDBUF of client sockets */
    uint64_t hot_results;       /**< `http.hot_results`: bytes of small cached results kept in memory */

    char write_token[256];      /**< `auth.write_token`: Bearer token for PUT/DELETE; empty = loopback only */
    char url_key[256];          /**< `auth.url_key`: HMAC-SHA256 key of signed derived URLs */
    char url_key_file[512];     /**< `auth.url_key_file`: a file holding that key instead */
    char url_secret[256];       /**< the effective key (url_key or the file's); empty = unsigned */

    uint32_t jpeg_quality;      /**< `output.jpeg_quality` */
    uint32_t webp_quality;      /**< `output.webp_quality` */
    uint32_t png_compression;   /**< `output.png_compression` */
    uint32_t avif_quality;      /**< `output.avif_quality` */
    uint32_t avif_effort;       /**< `output.avif_effort` */
    uint32_t jxl_quality;       /**< `output.jxl_quality` */
    uint32_t jxl_effort;        /**< `output.jxl_effort` */
    bool keep_icc;              /**< `output.keep_icc` */

    bool mezz_enabled;          /**< `mezzanine.enabled`: make and use mezzanine levels */
    uint32_t mezz_size;         /**< `mezzanine.size`: least long side of a level (pixels) */
    uint32_t mezz_k_milli;      /**< `mezzanine.k` x 1000: a level serves outputs k x smaller */
    uint32_t mezz_quality;      /**< `mezzanine.quality`: JPEG quality of the level */

    cfg_log_level_t log_level;  /**< `log.level` */
    bool access_log;            /**< `log.access` */

    char flight_path[512];      /**< `flight.path`: ring file; empty = <storage.root>/flight.ring */
    uint64_t flight_interval_ms; /**< `flight.interval` */
    uint32_t flight_slots;      /**< `flight.slots`: snapshots kept in the ring */
    uint32_t flight_keep_runs;  /**< `flight.keep_runs`: rings of previous runs kept */
    uint64_t flight_max_disk;   /**< `flight.max_disk`: bytes all kept rings may take */

    char heap_ring_dir[512];    /**< `heap_ring.dir`: profiles; empty = <storage.root>/heap */
    uint64_t heap_ring_interval_ms; /**< `heap_ring.interval`: between two profiles; 0 = off */
    uint32_t heap_ring_keep;    /**< `heap_ring.keep`: profiles kept */
    uint64_t heap_ring_max_disk; /**< `heap_ring.max_disk`: bytes the kept profiles may take */
} cfg_t;

/** Bytes of one flight-recorder slot: a ring of n slots is (n + 1) x this on disk. */
#define CFG_FLIGHT_SLOT_BYTES 4096

/** The default config file shipped in config/, compiled in (used when no -c is given). */
extern const char cfg_default_yaml[];

/**
 * Loads @p path (or the embedded default when NULL), applies THUMBGATE_* environment
 * overrides from @p envp (NULL: none), validates. On success returns a heap config that
 * is never changed afterwards (caller frees with cfg_free). On failure returns NULL and
 * writes every error, one per line as "file:line: key: message", to @p errs.
 */
const cfg_t *cfg_load(const char *path, char *const *envp, FILE *errs);

/** Loads from an in-memory YAML text; @p name is used in messages. Same contract as cfg_load. */
const cfg_t *cfg_load_string(const char *yaml, const char *name, char *const *envp, FILE *errs);

/** Prints the effective config as YAML (every key, resolved values). Borrows @p cfg. */
void cfg_print(const cfg_t *cfg, FILE *out);

/** Frees a config returned by cfg_load*; accepts NULL. */
void cfg_free(const cfg_t *cfg);

/** Parses "512MiB", "2GB", "1024", "10k" into bytes. 0 on success, -1 on a bad value. */
int cfg_parse_size(const char *s, uint64_t *out);

/** Parses "500ms", "30s", "2m", "1h" into milliseconds (bare numbers are ms). 0 / -1. */
int cfg_parse_duration(const char *s, uint64_t *out);

#endif
