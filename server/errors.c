/* errors — module errors to status + JSON code, in one table (see errors.h). */
#include "server/errors.h"

#include "imgproc/imgproc.h"
#include "server/adm.h"
#include "server/route.h"
#include "server/store.h"

typedef struct {
    err_domain_t domain;
    int code;
    err_http_t http;
} row_t;

static const row_t table[] = {
    {ERR_IMGPROC, IMGPROC_E_UNSUPPORTED, {415, "unsupported_format"}},
    {ERR_IMGPROC, IMGPROC_E_CORRUPT, {415, "corrupt_image"}},
    {ERR_IMGPROC, IMGPROC_E_TOO_LARGE, {413, "too_many_pixels"}},
    {ERR_IMGPROC, IMGPROC_E_IO, {500, "processing_error"}},
    {ERR_IMGPROC, IMGPROC_E_NOMEM, {503, "busy"}},
    {ERR_IMGPROC, IMGPROC_E_INVALID, {400, "bad_request"}},
    {ERR_IMGPROC, IMGPROC_E_TIMEOUT, {503, "job_timeout"}},

    {ERR_STORE, STORE_E_NOTFOUND, {404, "not_found"}},
    {ERR_STORE, STORE_E_CONFLICT, {409, "key_conflict"}},
    {ERR_STORE, STORE_E_NOSPACE, {507, "storage_full"}},
    {ERR_STORE, STORE_E_IO, {500, "storage_error"}},
    {ERR_STORE, STORE_E_CHANGED, {503, "source_changed"}},
    {ERR_STORE, STORE_E_UNAVAILABLE, {503, "store_unavailable"}},

    {ERR_ADM, ADM_E_TOO_BIG, {413, "over_budget"}},
    {ERR_ADM, ADM_E_QUEUE_FULL, {503, "over_budget"}},
    {ERR_ADM, ADM_E_EXPIRED, {503, "over_budget"}},
    {ERR_ADM, ADM_E_SHUTDOWN, {503, "shutting_down"}},

    {ERR_ROUTE, ROUTE_E_BADKEY, {400, "bad_key"}},
    {ERR_ROUTE, ROUTE_E_BADSIZE, {400, "bad_size"}},

    {ERR_AUTH, ERR_AUTH_NO_TOKEN, {401, "unauthorized"}},
    {ERR_AUTH, ERR_AUTH_BAD_TOKEN, {403, "forbidden"}},
    {ERR_AUTH, ERR_AUTH_NOT_LOOPBACK, {403, "forbidden"}},
    {ERR_AUTH, ERR_AUTH_BAD_SIG, {403, "bad_signature"}},

    {ERR_REQ, ERR_REQ_METHOD, {405, "method_not_allowed"}},
    {ERR_REQ, ERR_REQ_EMPTY_BODY, {400, "empty_body"}},
    {ERR_REQ, ERR_REQ_SIZE_NOT_ALLOWED, {400, "size_not_allowed"}},
    {ERR_REQ, ERR_REQ_OUTPUT_TOO_LARGE, {400, "output_too_large"}},
    {ERR_REQ, ERR_REQ_TOO_MANY_PIXELS, {413, "too_many_pixels"}},
    {ERR_REQ, ERR_REQ_CLIENT_GONE, {499, "client_gone"}},
    {ERR_REQ, ERR_REQ_RESULT_EVICTED, {503, "result_evicted"}},
    {ERR_REQ, ERR_REQ_TIMEOUT, {408, "request_timeout"}},
    {ERR_REQ, ERR_REQ_BUSY, {503, "busy"}},
    {ERR_REQ, ERR_REQ_NOT_FOUND, {404, "not_found"}},
    {ERR_REQ, ERR_REQ_UNSUPPORTED_BODY, {415, "unsupported_format"}},
    {ERR_REQ, ERR_REQ_HEAD_TOO_LARGE, {431, "header_too_large"}},
    {ERR_REQ, ERR_REQ_BODIES_FULL, {503, "busy"}},
    {ERR_REQ, ERR_REQ_CONNECTIONS, {503, "too_many_connections"}},
    {ERR_REQ, ERR_REQ_UNKNOWN_PRESET, {404, "unknown_preset"}},
    {ERR_REQ, ERR_REQ_PRESETS_ONLY, {403, "presets_only"}},
    {ERR_REQ, ERR_REQ_NO_FORMAT, {400, "format_unavailable"}},

    {ERR_H2O, 400, {400, "bad_request"}},
    {ERR_H2O, 404, {404, "not_found"}},
    {ERR_H2O, 405, {405, "method_not_allowed"}},
    {ERR_H2O, 413, {413, "body_too_large"}},
    {ERR_H2O, 416, {416, "range_not_satisfiable"}}, /* h2o's file handler */
    {ERR_H2O, 417, {417, "expectation_failed"}},
};

err_http_t errors_http(err_domain_t domain, int code)
{
    if (code < 0)
        code = -code;
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (table[i].domain == domain && table[i].code == code)
            return table[i].http;
    if (domain == ERR_H2O)
        return (err_http_t){code, code >= 500 ? "internal_error" : "bad_request"};
    return (err_http_t){500, "internal_error"};
}
