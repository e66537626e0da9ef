/*
 * Unit tests of provider-sim/request.c: what the sim reads from a client
 * (the body as JSON, a charge request's fields, ids from the path).
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "provider-sim/request.h"

/* The body of a charge request, checked; returns the field at fault, or
 * NULL when accepted (then *out is filled). */
static const char *
charge(const char *text, sim_charge_req_t *out, json_object **body)
{
    const char *field = NULL, *message = NULL;

    *body = sim_request_json(text, strlen(text));
    assert_non_null(*body);
    if (sim_request_charge(*body, out, &field, &message) == 0)
        return NULL;
    assert_non_null(message);
    return field;
}

static void
test_charge_fields(void **state)
{
    static const struct {
        const char *body;
        const char *field;      /* NULL: accepted */
    } cases[] = {
        { "{\"order_id\":\"o1\",\"amount_cents\":100,\"currency\":\"EUR\"}", NULL },
        { "{\"amount_cents\":100,\"currency\":\"EUR\"}", "order_id" },
        { "{\"order_id\":\"\",\"amount_cents\":100,\"currency\":\"EUR\"}", "order_id" },
        { "{\"order_id\":\"o\\n1\",\"amount_cents\":100,\"currency\":\"EUR\"}", "order_id" },
        { "{\"order_id\":\"o1\",\"amount_cents\":0,\"currency\":\"EUR\"}", "amount_cents" },
        { "{\"order_id\":\"o1\",\"amount_cents\":1.5,\"currency\":\"EUR\"}", "amount_cents" },
        { "{\"order_id\":\"o1\",\"amount_cents\":9223372036854775808,\"currency\":\"EUR\"}",
          "amount_cents" },
        { "{\"order_id\":\"o1\",\"amount_cents\":100,\"currency\":\"eur\"}", "currency" },
        { "{\"order_id\":\"o1\",\"amount_cents\":100,\"currency\":\"EURO\"}", "currency" },
    };
    sim_charge_req_t c;
    json_object *body;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *field = charge(cases[i].body, &c, &body);

        if (cases[i].field == NULL ? field != NULL
            : field == NULL || strcmp(field, cases[i].field) != 0)
            fail_msg("%s: field %s, want %s", cases[i].body, field ? field : "(accepted)",
                     cases[i].field ? cases[i].field : "(accepted)");
        json_object_put(body);
    }
    assert_null(
        charge("{\"order_id\":\"o1\",\"amount_cents\":100,\"currency\":\"EUR\"}", &c, &body));
    assert_string_equal(c.order_id, "o1");
    assert_true(c.amount_cents == 100);
    assert_string_equal(c.currency, "EUR");
    json_object_put(body);
}

/* Found while writing tests/fuzz/fuzz_sim_request: an order_id holding
 * \u0000 was taken up to it, so the sim charged (and answered about)
 * order "o" when asked about "o\u0000x". */
static void
test_regress_order_id_with_nul(void **state)
{
    sim_charge_req_t c;
    json_object *body;

    (void)state;
    assert_string_equal(
        charge("{\"order_id\":\"o\\u0000x\",\"amount_cents\":100,\"currency\":\"EUR\"}", &c, &body),
        "order_id");
    json_object_put(body);
}

static void
test_json(void **state)
{
    static const char nul[] = "{\"a\":1}\0";
    json_object *v;

    (void)state;
    v = sim_request_json("{\"a\":1} \r\n", 10);
    assert_non_null(v);
    json_object_put(v);
    assert_null(sim_request_json("{\"a\":1}x", 8));
    assert_null(sim_request_json(nul, sizeof(nul) - 1));
    assert_null(sim_request_json("", 0));
    /* the length is the end, NUL-terminated or not */
    assert_null(sim_request_json("{\"a\":1}", 5));
}

static void
test_path_id(void **state)
{
    char *id;

    (void)state;
    id = sim_request_path_id("/v1/charges/o%2F1/cancel", 12, 7, SIM_REQUEST_ID_MAX);
    assert_non_null(id);
    assert_string_equal(id, "o/1");
    free(id);
    assert_null(sim_request_path_id("/v1/charges/o%001", 12, 0, SIM_REQUEST_ID_MAX));
    assert_null(sim_request_path_id("/v1/charges/", 12, 0, SIM_REQUEST_ID_MAX));
    assert_null(sim_request_path_id("/v1/charges/a%0Ab", 12, 0, SIM_REQUEST_ID_MAX));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_charge_fields),
        cmocka_unit_test(test_regress_order_id_with_nul),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_path_id),
    };

    return cmocka_run_group_tests_name("sim_request", tests, NULL, NULL);
}
