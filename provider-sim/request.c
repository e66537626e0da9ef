/*
 * request: the sim's request checks, shared by its API and admin routes.
 * The body is read from libevent's input buffer, made contiguous once
 * (bodies are small: evhttp caps them at the sim's MAX_BODY).
 */
#include "config.h"

#include "provider-sim/request.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

int
sim_request_text_valid(const char *v, size_t max)
{
    size_t n = strnlen(v, max + 1);

    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
            return 0;
    }
    return 1;
}

int
sim_request_key_valid(const char *k)
{
    size_t n = strnlen(k, SIM_REQUEST_KEY_MAX + 1);

    if (n == 0 || n > SIM_REQUEST_KEY_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (k[i] < 0x21 || k[i] > 0x7e)
            return 0;
    }
    return 1;
}

json_object *
sim_request_json(const char *data, size_t len)
{
    json_tokener *tok;
    json_object *obj;
    size_t end;

    if (len == 0 || len > INT32_MAX || data == NULL || memchr(data, '\0', len) != NULL)
        return NULL;
    tok = json_tokener_new();
    if (tok == NULL)
        return NULL;
    obj = json_tokener_parse_ex(tok, data, (int)len);
    if (obj == NULL || json_tokener_get_error(tok) != json_tokener_success) {
        json_object_put(obj);
        json_tokener_free(tok);
        return NULL;
    }
    /* Only white space may follow the value. */
    for (end = json_tokener_get_parse_end(tok); end < len; end++) {
        if (strchr(" \t\r\n", data[end]) == NULL) {
            json_object_put(obj);
            obj = NULL;
            break;
        }
    }
    json_tokener_free(tok);
    return obj;
}

json_object *
sim_request_body_json(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);

    return sim_request_json((const char *)evbuffer_pullup(in, -1), len);
}

int
sim_request_charge(json_object *body, sim_charge_req_t *out, const char **field,
                   const char **message)
{
    json_object *v;

    /* The id is taken whole: with a \u0000 in it, it would name another
     * order than the one asked about. */
    if (!json_object_object_get_ex(body, "order_id", &v) ||
        !json_object_is_type(v, json_type_string) ||
        strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v) ||
        !sim_request_text_valid(json_object_get_string(v), SIM_REQUEST_ID_MAX)) {
        *field = "order_id";
        *message = "order_id must be a string of 1..255 characters";
        return -1;
    }
    out->order_id = json_object_get_string(v);
    /* json-c keeps integers above INT64_MAX as uint64: too big is invalid. */
    if (!json_object_object_get_ex(body, "amount_cents", &v) ||
        !json_object_is_type(v, json_type_int) || json_object_get_int64(v) <= 0 ||
        json_object_get_uint64(v) > (uint64_t)INT64_MAX) {
        *field = "amount_cents";
        *message = "amount_cents must be a positive integer";
        return -1;
    }
    out->amount_cents = json_object_get_int64(v);
    if (!json_object_object_get_ex(body, "currency", &v) ||
        !json_object_is_type(v, json_type_string) || json_object_get_string_len(v) != 3 ||
        strspn(json_object_get_string(v), "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != 3) {
        *field = "currency";
        *message = "currency must be three upper-case letters";
        return -1;
    }
    out->currency = json_object_get_string(v);
    return 0;
}

char *
sim_request_path_id(const char *path, size_t prefix_len, size_t suffix_len, size_t max)
{
    size_t n = strlen(path), len = 0;
    char *raw, *id;

    if (n <= prefix_len + suffix_len)
        return NULL;
    raw = strndup(path + prefix_len, n - prefix_len - suffix_len);
    id = raw != NULL ? evhttp_uridecode(raw, 0, &len) : NULL;
    free(raw);
    /* A %00 would cut the id short: refuse it rather than answer for another. */
    if (id != NULL && (len != strlen(id) || !sim_request_text_valid(id, max))) {
        free(id);
        id = NULL;
    }
    return id;
}
