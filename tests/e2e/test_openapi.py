"""/openapi.json tells the truth (issue 12, item 2).

The document: relative servers, one unique operationId per operation.
Then every documented (operation, status) is produced once for real, and
each answer is checked against the document: the status is listed, the
Content-Type is one it lists, the body validates against its schema, and
its required headers are there and valid.  The test fails when a documented
status is never produced, or a produced one is not documented.

The validator covers the JSON Schema the document uses: $ref, type, const,
enum, required, properties, additionalProperties, items, oneOf, pattern,
minLength/maxLength, minimum, and the formats uuid and date-time.
"""

import json
import os
import re
import tempfile

import harness
import rawhttp
from harness import (TAP, Paymentsd, ProviderSim, DEV_SECRET, checkout, new_key, send_webhook,
                     webhook_headers, request)

t = TAP()

FORMATS = {
    "uuid": re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
    "date-time": re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"),
}
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def resolve(doc, node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = doc
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def validate(doc, schema, value, where="$"):
    """Errors of value against schema, as a list of strings."""
    s = resolve(doc, schema)
    errs = []
    if "oneOf" in s:
        ok = [i for i, sub in enumerate(s["oneOf"]) if not validate(doc, sub, value, where)]
        if len(ok) != 1:
            errs.append("%s: matches %d of oneOf's schemas, not one" % (where, len(ok)))
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(type_ok(ty, value) for ty in types):
            return errs + ["%s: %r is not %s" % (where, value, "/".join(types))]
    if "const" in s and value != s["const"]:
        errs.append("%s: %r is not %r" % (where, value, s["const"]))
    if "enum" in s and value not in s["enum"]:
        errs.append("%s: %r is not one of %r" % (where, value, s["enum"]))
    if isinstance(value, str):
        if "pattern" in s and not re.search(s["pattern"], value):
            errs.append("%s: %r does not match %s" % (where, value, s["pattern"]))
        if s.get("format") in FORMATS and not FORMATS[s["format"]].match(value):
            errs.append("%s: %r is not a %s" % (where, value, s["format"]))
        if len(value) < s.get("minLength", 0) or len(value) > s.get("maxLength", len(value)):
            errs.append("%s: length %d out of range" % (where, len(value)))
    if type_ok("integer", value) and value < s.get("minimum", value):
        errs.append("%s: %r is below %r" % (where, value, s["minimum"]))
    if isinstance(value, dict):
        props = s.get("properties", {})
        for name in s.get("required", []):
            if name not in value:
                errs.append("%s: %s is required" % (where, name))
        for name, v in value.items():
            if name in props:
                errs += validate(doc, props[name], v, "%s.%s" % (where, name))
            elif s.get("additionalProperties") is False:
                errs.append("%s: %s is not allowed" % (where, name))
    if isinstance(value, list) and "items" in s:
        for i, v in enumerate(value):
            errs += validate(doc, s["items"], v, "%s[%d]" % (where, i))
    return errs


def type_ok(ty, value):
    if ty == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if ty == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, TYPES[ty])


# --- the validator itself, on cases where the answer is known
toy = {"components": {"schemas": {
    "T": {"type": "object", "required": ["a"], "additionalProperties": False,
          "properties": {"a": {"type": "integer", "minimum": 1},
                         "b": {"type": "string", "pattern": "^x+$", "format": "uuid"},
                         "c": {"oneOf": [{"const": True}, {"type": "string"}]},
                         "d": {"type": "array", "items": {"enum": ["p", "q"]}}}}}}}
ref = {"$ref": "#/components/schemas/T"}
t.eq(validate(toy, ref, {"a": 1, "c": "s", "d": ["p"]}), [], "validator: a valid value passes")
for bad, why in (({}, "a missing required member"), ({"a": 0}, "below minimum"),
                 ({"a": True}, "a bool for an integer"), ({"a": 1, "z": 1}, "an extra member"),
                 ({"a": 1, "b": "y"}, "pattern and format"), ({"a": 1, "c": 5}, "no oneOf branch"),
                 ({"a": 1, "d": ["r"]}, "an item outside enum"), ([], "an array for an object")):
    t.ok(validate(toy, ref, bad), "validator: refuses %s" % why)

# --- the servers: a database that answers, one that does not
sim = ProviderSim().start()
common = {"provider_url": sim.url, "webhook_secret": DEV_SECRET, "max_body_size": "1k"}
# /docs needs only that docs_root holds what the page loads (test_docs.py
# tries the real Swagger UI).
ui = tempfile.mkdtemp(prefix="swagger-ui-")
for name in ("swagger-ui-bundle.js", "swagger-ui.css"):
    with open(os.path.join(ui, name), "w") as f:
        f.write("/* %s */\n" % name)
good = Paymentsd(workers=1, extra=dict(common, docs_root=ui)).start()
# Port 9 (discard) on loopback: nothing listens, every connection is refused.
down = Paymentsd(workers=1, extra=dict(
    common, database="postgresql://app:app@127.0.0.1:9/payments?connect_timeout=1",
    docs_root=tempfile.mkdtemp(prefix="no-swagger-ui-"))).start()

doc = good.get("/openapi.json").json()
servers = doc.get("servers", [])
t.ok(servers and all(re.match(r"^/", s["url"]) and "://" not in s["url"] for s in servers),
     "servers are relative", servers)
op_ids = {}
for path, item in doc["paths"].items():
    for method, op in item.items():
        op_ids.setdefault(op.get("operationId"), []).append("%s %s" % (method.upper(), path))
t.ok(None not in op_ids and all(len(v) == 1 for v in op_ids.values()),
     "every operation has an operationId of its own", op_ids)

produced = set()


def check(name, path, method, r, want_status, want_code=None, headers_required=()):
    """r is an answer to METHOD path (a path template of the document)."""
    op = doc["paths"].get(path, {}).get(method.lower())
    responses = op["responses"] if op else {}
    produced.add((path, method, r.status))
    if not t.ok(r.status == want_status, "%s: %d" % (name, want_status), r):
        return
    spec = resolve(doc, responses.get(str(r.status)))
    if not t.ok(spec is not None, "%s: %d is documented for %s %s" % (name, r.status, method, path)):
        return
    errs = []
    ctype = r.headers.get("content-type", "").split(";")[0].strip()
    content = spec.get("content", {})
    if content and ctype not in content:
        errs.append("Content-Type %r, documented: %r" % (ctype, list(content)))
    schema = content.get(ctype, {}).get("schema")
    if schema is not None:
        try:
            errs += validate(doc, schema, json.loads(r.body))
        except ValueError as e:
            errs.append("not JSON: %s" % e)
    for hname, h in spec.get("headers", {}).items():
        h = resolve(doc, h)
        value = r.headers.get(hname.lower())
        if value is None:
            if h.get("required") or hname in headers_required:
                errs.append("header %s is missing" % hname)
            continue
        hschema = resolve(doc, h.get("schema", {}))
        errs += validate(doc, hschema, int(value) if hschema.get("type") == "integer"
                         and value.isdigit() else value, hname)
    if want_code is not None:
        try:
            code = json.loads(r.body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = None
        if code != want_code:
            errs.append("error.code %r, want %r" % (code, want_code))
    t.ok(not errs, "%s: the answer matches the document" % name, "\n".join(errs + [repr(r)]))


JSON = {"Content-Type": "application/json"}
BODY = {"buyer_id": "buyer-oa", "seller_id": "seller-oa", "amount_cents": 2500, "currency": "EUR",
        "buyer_trust": "trusted"}
CO, ORDER, LEDGER, WH = "/checkout", "/orders/{order_id}", "/orders/{order_id}/ledger", \
    "/webhooks/provider"
UNKNOWN = "00000000-0000-4000-8000-000000000000"

# POST /checkout
key = new_key("oa")
r = checkout(good, key, BODY)
check("checkout", CO, "POST", r, 201)
paid = r.json()["order_id"]
check("checkout without a key", CO, "POST", checkout(good, None, BODY), 400, "idempotency_key_missing")
check("checkout, the key with another body", CO, "POST",
      checkout(good, key, dict(BODY, amount_cents=2600)), 409, "idempotency_key_reused")
busy = new_key("oa-busy")
harness.db_begin_checkout(busy, amount_cents=BODY["amount_cents"], buyer=BODY["buyer_id"],
                          seller=BODY["seller_id"], fingerprint=harness.body_fingerprint(BODY))
check("checkout, the key still in progress", CO, "POST", checkout(good, busy, BODY), 409,
      "idempotency_key_in_use", headers_required=("Retry-After",))
check("checkout, a body over max_body_size", CO, "POST",
      checkout(good, new_key("oa"), dict(BODY, buyer_id="b" * 2000)), 413, "payload_too_large")
check("checkout as text/plain", CO, "POST",
      checkout(good, new_key("oa"), BODY, headers={"Content-Type": "text/plain"}), 415,
      "unsupported_media_type")
check("checkout of 0 cents", CO, "POST", checkout(good, new_key("oa"), dict(BODY, amount_cents=0)),
      422, "validation_failed")
check("checkout, no database", CO, "POST", checkout(down, new_key("oa"), BODY), 503,
      "service_unavailable")

# GET /orders/{id} and its ledger
check("order", ORDER, "GET", good.get("/orders/" + paid), 200)
check("unknown order", ORDER, "GET", good.get("/orders/" + UNKNOWN), 404, "order_not_found")
r = down.get("/orders/" + UNKNOWN)
check("order, no database", ORDER, "GET", r, 503, "service_unavailable")
t.ok(b"Idempotency-Key" not in r.body, "a GET's 503 does not mention an Idempotency-Key", r)
r = good.get("/orders/%s/ledger" % paid)
check("ledger of a paid order", LEDGER, "GET", r, 200)
t.ok(r.status == 200 and len(r.json()["transactions"]) == 1, "... which has its transaction", r)
check("ledger of an unknown order", LEDGER, "GET", good.get("/orders/%s/ledger" % UNKNOWN), 404,
      "order_not_found")
r = down.get("/orders/%s/ledger" % UNKNOWN)
check("ledger, no database", LEDGER, "GET", r, 503, "service_unavailable")
t.ok(b"Idempotency-Key" not in r.body, "... nor does the ledger's", r)

# POST /webhooks/provider
pending = harness.db_pending_order(new_key("oa-pending"))
event = {"event_id": "evt-" + new_key("oa"), "order_id": pending, "outcome": "PAID"}
check("webhook, applied", WH, "POST", send_webhook(good, event), 200)
check("webhook, again", WH, "POST", send_webhook(good, event), 200)
check("webhook, not JSON", WH, "POST", send_webhook(good, "{not json"), 400, "invalid_json")
check("webhook, unsigned", WH, "POST", good.post(WH, body=event, headers=JSON), 401,
      "signature_invalid")
check("webhook, unknown order", WH, "POST",
      send_webhook(good, dict(event, event_id="evt-" + new_key("oa"), order_id=UNKNOWN)), 404,
      "order_not_found")
big = json.dumps(dict(event, padding="p" * 2000))
check("webhook, a body over max_body_size", WH, "POST",
      good.post(WH, body=big, headers=webhook_headers(big)), 413, "payload_too_large")
check("webhook, an unknown outcome", WH, "POST",
      send_webhook(good, dict(event, event_id="evt-" + new_key("oa"), outcome="MAYBE")), 422,
      "validation_failed")
check("webhook, no database", WH, "POST",
      send_webhook(down, dict(event, event_id="evt-" + new_key("oa"))), 503, "service_unavailable")

# Operational routes and the documentation itself
check("healthz", "/healthz", "GET", good.get("/healthz"), 200)
check("readyz", "/readyz", "GET", good.get("/readyz"), 200)
check("readyz, no database", "/readyz", "GET", down.get("/readyz"), 503, "service_unavailable")
check("metrics", "/metrics", "GET", good.get("/metrics"), 200)
check("openapi.json", "/openapi.json", "GET", good.get("/openapi.json"), 200)
check("docs", "/docs", "GET", good.get("/docs"), 200)
check("docs without Swagger UI", "/docs", "GET", down.get("/docs"), 503)

# The answers to requests that are not well-formed HTTP/1.1 (worker/front.c),
# on every operation that documents them.
MALFORMED = {
    400: ("bad_request", "%s %s HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n"),
    413: ("payload_too_large", "%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n"
                               "Expect: 100-continue\r\n\r\n"),
    417: ("expectation_failed", "%s %s HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n"),
    431: ("headers_too_large", "%s %s HTTP/1.1\r\nHost: x\r\nX-Big: " + "b" * 70000 + "\r\n\r\n"),
    505: ("http_version_not_supported", "%s %s HTTP/2.0\r\nHost: x\r\n\r\n"),
}
for path, item in doc["paths"].items():
    for method, op in item.items():
        for status, (code, template) in MALFORMED.items():
            if str(status) not in op["responses"] or (status == 400 and "$ref" not in op["responses"]["400"]
                                                      and "bad_request" not in op["responses"]["400"].get(
                                                          "description", "")):
                continue
            raw = (template % (method.upper(), path.replace("{order_id}", UNKNOWN))).encode()
            data, _ = rawhttp.exchange(good.port, raw, timeout=5)
            answers = rawhttp.parse(data) if data else []
            r = answers[0] if answers else rawhttp.RawResponse(0, {}, b"")
            check("%s %s, %s" % (method.upper(), path, code), path, method.upper(), r, status, code)

documented = {(path, method.upper(), int(status)) for path, item in doc["paths"].items()
              for method, op in item.items() for status in op["responses"]}
missing = sorted(documented - produced)
extra = sorted(produced - documented)
t.ok(not missing, "every documented status was produced", "\n".join(map(str, missing)))
t.ok(not extra, "every produced status is documented", "\n".join(map(str, extra)))

good.stop()
down.stop()
sim.stop()
t.done()
