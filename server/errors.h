/* errors — the one table from module errors to HTTP: every error the server answers with
 * goes through errors_http(), which gives its status and its JSON "error" code. Modules
 * keep their own error enums (imgproc, store, adm, route); request-level refusals that
 * belong to no module (auth, methods, limits) have theirs here. */
#ifndef THUMBGATE_ERRORS_H
#define THUMBGATE_ERRORS_H

typedef enum {
    ERR_IMGPROC = 0, /**< IMGPROC_E_* */
    ERR_STORE,       /**< STORE_E_* */
    ERR_ADM,         /**< ADM_E_* */
    ERR_ROUTE,       /**< ROUTE_E_* */
    ERR_AUTH,        /**< ERR_AUTH_* below */
    ERR_REQ,         /**< ERR_REQ_* below */
    ERR_H2O,         /**< an error h2o answered by itself: the code is its HTTP status */
} err_domain_t;

enum {
    ERR_AUTH_NO_TOKEN = 1,     /**< a token is configured and none was sent (401) */
    ERR_AUTH_BAD_TOKEN = 2,    /**< wrong token (403) */
    ERR_AUTH_NOT_LOOPBACK = 3, /**< no token configured and the client is not loopback (403) */
    ERR_AUTH_BAD_SIG = 4,      /**< auth.url_key is set, ?sig= missing or wrong (403) */
};

enum {
    ERR_REQ_METHOD = 1,            /**< 405 */
    ERR_REQ_EMPTY_BODY = 2,        /**< 400 */
    ERR_REQ_SIZE_NOT_ALLOWED = 3,  /**< 400: not in limits.sizes */
    ERR_REQ_OUTPUT_TOO_LARGE = 4,  /**< 400: over limits.max_output or the format's maximum */
    ERR_REQ_TOO_MANY_PIXELS = 5,   /**< 413: over limits.max_pixels */
    ERR_REQ_CLIENT_GONE = 6,       /**< 499 */
    ERR_REQ_RESULT_EVICTED = 7,    /**< 503: the result went before it could be sent */
    ERR_REQ_TIMEOUT = 8,           /**< 408: no request progress for http.request_timeout */
    ERR_REQ_BUSY = 10,             /**< 503: out of memory for bookkeeping */
    ERR_REQ_NOT_FOUND = 11,        /**< 404: no such key */
    ERR_REQ_UNSUPPORTED_BODY = 12, /**< 415: the upload is not an image we take */
    ERR_REQ_HEAD_TOO_LARGE = 13,   /**< 431: a request head over limits.max_header_bytes */
    ERR_REQ_BODIES_FULL = 14,      /**< 503: limits.max_body_inflight has no room for the body */
    ERR_REQ_CONNECTIONS = 15,      /**< 503: limits.max_connections are open */
    ERR_REQ_UNKNOWN_PRESET = 16,   /**< 404: /<stem>@<name> names no preset */
    ERR_REQ_PRESETS_ONLY = 17,     /**< 403: limits.presets_only and not a preset */
    ERR_REQ_NO_FORMAT = 18,        /**< 400: a format this build cannot encode */
};

typedef struct {
    int status;       /**< HTTP status */
    const char *code; /**< the JSON "error" value (static) */
} err_http_t;

/** Status and code of error @p code (positive or negative) of @p domain; an unknown
 *  error is 500 "internal_error" (ERR_H2O: its own status, "bad_request" below 500). */
err_http_t errors_http(err_domain_t domain, int code);

#endif
