"""/docs: Swagger UI served by paymentsd from docs_root (issue 12, item 1).

Files: what docs_root holds is served, with its type and an ETag, and
nothing else (other types, hidden files, sub-folders, symbolic links out of
the folder, a FIFO, paths that try to climb out); a relative docs_root is
beside the conf file; without Swagger UI's files /docs answers 503 with how
to install them.

Browser: Debian's headless chromium opens /docs, which must list every
operation of /openapi.json and load nothing from any other host; "Try it
out" on POST /checkout, executed, must show 201 and make a real order.
"""

import json
import os
import shutil
import tempfile

import harness
from harness import TAP, Paymentsd, ProviderSim, DEV_SECRET, request

t = TAP()
SRCDIR = os.environ.get("PAYMENTSD_SRCDIR", os.path.join(os.path.dirname(__file__), "..", ".."))
VENDOR = os.path.join(SRCDIR, "vendor", "swagger-ui")
INSTALLED = os.path.exists(os.path.join(VENDOR, "swagger-ui-bundle.js"))


def raw_get(port, path, headers=None):
    """A GET whose path goes out byte for byte (http.client would not
    normalise it either, but say so)."""
    return request(port, "GET", path, headers=headers)


# --- a docs_root of our own making, beside the conf file (relative)
d = Paymentsd(workers=1, extra={"docs_root": "ui"})
root = os.path.join(d.dir, "ui")
os.mkdir(root)
outside = tempfile.mkdtemp(prefix="docs-outside-")
files = {
    "swagger-ui-bundle.js": b"window.SwaggerUIBundle = function () {};\n",
    "swagger-ui.css": b"body { margin: 0 }\n",
    "favicon-16x16.png": b"\x89PNG\r\n\x1a\nnot really\n",
    "notes.txt": b"text\n",
}
for name, data in files.items():
    with open(os.path.join(root, name), "wb") as f:
        f.write(data)
with open(os.path.join(root, "paymentsd.conf"), "w") as f:
    f.write("webhook_secret = whsec_c2VjcmV0\n")
with open(os.path.join(root, ".hidden.js"), "w") as f:
    f.write("hidden\n")
os.mkdir(os.path.join(root, "sub"))
with open(os.path.join(root, "sub", "deep.js"), "w") as f:
    f.write("deep\n")
with open(os.path.join(outside, "secret.js"), "w") as f:
    f.write("outside\n")
os.symlink(os.path.join(outside, "secret.js"), os.path.join(root, "escape.js"))
os.symlink("swagger-ui.css", os.path.join(root, "alias.css"))
os.mkfifo(os.path.join(root, "fifo.js"))
d.start()

r = d.get("/docs")
t.eq(r.status, 200, "/docs: 200 when docs_root holds Swagger UI")
t.eq(r.headers.get("content-type"), "text/html; charset=utf-8", "/docs: HTML")
t.ok(b'src="docs/swagger-ui-bundle.js"' in r.body and b'src="docs/docs-init.js"' in r.body,
     "/docs: loads the bundle and our initializer, relatively", r.body[:400])
t.eq(r.headers.get("cache-control"), "no-cache", "/docs: revalidated every time")
csp = r.headers.get("content-security-policy", "")
t.ok("default-src 'self'" in csp and "frame-ancestors 'none'" in csp,
     "/docs: only this server, and no framing (Try it out makes real checkouts)", csp)

r = d.get("/docs/docs-init.js")
t.ok(r.status == 200 and b'"openapi.json"' in r.body and b"SwaggerUIBundle" in r.body,
     "/docs/docs-init.js: ours, pointing at openapi.json", r)

want_types = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8",
              "swagger-ui.css": "text/css; charset=utf-8",
              "favicon-16x16.png": "image/png",
              "notes.txt": "text/plain; charset=utf-8"}
for name, data in files.items():
    r = d.get("/docs/" + name)
    t.ok(r.status == 200 and r.body == data and r.headers.get("content-type") == want_types[name]
         and r.headers.get("x-content-type-options") == "nosniff",
         "/docs/%s: its bytes, as %s" % (name, want_types[name]), r)

r = d.get("/docs/swagger-ui.css")
etag = r.headers.get("etag", "")
t.ok(etag.startswith('"') and etag.endswith('"') and len(etag) > 2, "a strong ETag", r.headers)
t.ok("max-age=" in r.headers.get("cache-control", ""), "a file may be cached", r.headers)
for inm in (etag, "W/" + etag, '"other", ' + etag, "*"):
    r = d.get("/docs/swagger-ui.css", headers={"If-None-Match": inm})
    t.ok(r.status == 304 and r.body == b"" and r.headers.get("etag") == etag,
         "If-None-Match: %s -> 304, no body" % inm, r)
r = d.get("/docs/swagger-ui.css", headers={"If-None-Match": '"other"'})
t.eq(r.status, 200, "another ETag -> 200")
r = request(d.port, "HEAD", "/docs/swagger-ui.css")
t.ok(r.status == 200 and r.body == b"", "HEAD: 200 without the body", r)

r = d.get("/docs/alias.css")
t.ok(r.status == 200 and r.body == files["swagger-ui.css"],
     "a symbolic link that stays inside docs_root is served", r)
for path, why in (("/docs/paymentsd.conf", "a type that is not served (the conf's secret)"),
                  ("/docs/.hidden.js", "a hidden file"),
                  ("/docs/sub/deep.js", "a file in a sub-folder"),
                  ("/docs/escape.js", "a symbolic link out of docs_root"),
                  ("/docs/fifo.js", "a FIFO (and the worker did not hang on it)"),
                  ("/docs/../ui/notes.txt", "a path with .."),
                  ("/docs/..%2fui%2fnotes.txt", "a path with an encoded .."),
                  ("/docs/%2e%2e/paymentsd.conf", "a path with an encoded .. segment"),
                  ("/docs/notes.txt%00.js", "an encoded NUL"),
                  ("/docs/missing.js", "a file that is not there")):
    r = raw_get(d.port, path)
    t.ok(r.status == 404 and b"outside" not in r.body and b"whsec" not in r.body,
         "404 for %s" % why, r)
r = d.get("/docs/")
t.ok(r.status == 301 and r.headers.get("location") == "/docs", "/docs/ -> 301 /docs", r)
t.ok("fifo.js" in d.log() and "escape.js" in d.log(), "what was skipped is logged", d.log()[-2000:])
d.stop()

# --- no Swagger UI where docs_root points: /docs says how to install it
d = Paymentsd(workers=1, extra={"docs_root": os.path.join(outside, "nothing-here")}).start()
r = d.get("/docs")
t.eq(r.status, 503, "/docs without Swagger UI's files: 503")
t.ok(r.headers.get("content-type", "").startswith("text/html") and b"scripts/deps.sh" in r.body
     and b"docs_root" in r.body, "... with a page that says how to install them", r)
t.eq(d.get("/docs/swagger-ui.css").status, 404, "... and its files are 404")
t.eq(d.get("/openapi.json").status, 200, "/openapi.json does not need them")
t.ok("docs_root" in d.log(), "the missing folder is logged", d.log()[-1000:])
d.stop()
shutil.rmtree(outside)


# --- the real Swagger UI in a real browser
def browser_test():
    import cdp

    if not INSTALLED:
        return "Swagger UI is not in %s (scripts/deps.sh installs it)" % VENDOR
    try:
        browser = cdp.Chromium()
    except cdp.Unavailable as e:
        return str(e)
    sim = ProviderSim().start()
    d = Paymentsd(workers=1, extra={"docs_root": VENDOR, "provider_url": sim.url,
                                    "webhook_secret": DEV_SECRET}).start()
    base = "http://127.0.0.1:%d" % d.port
    doc = d.get("/openapi.json").json()
    ops = sorted((m.upper(), p) for p, item in doc["paths"].items() for m in item)
    with browser as b:
        b.call("Network.enable")
        b.call("Page.enable")
        b.call("Runtime.enable")
        b.call("Log.enable")
        b.call("Page.navigate", url=base + "/docs")
        n = b.wait_for("document.querySelectorAll('.opblock').length >= %d "
                       "&& document.querySelectorAll('.opblock').length" % len(ops), timeout=60)
        shown = b.evaluate("""Array.from(document.querySelectorAll('.opblock')).map(o => [
            o.querySelector('.opblock-summary-method').textContent.trim(),
            o.querySelector('.opblock-summary-path').getAttribute('data-path')])""") or []
        t.eq(sorted(tuple(x) for x in shown), ops,
             "the page lists every operation of /openapi.json (%s of them)" % n)

        # POST /checkout's block, found as a reader finds it: by method and path.
        b.evaluate("window.co = Array.from(document.querySelectorAll('.opblock-post')).find("
                   "o => o.querySelector('.opblock-summary-path').getAttribute('data-path') "
                   "=== '/checkout'); window.co.querySelector('.opblock-summary-control').click()")
        t.ok(b.wait_for("!!co.querySelector('.try-out__btn')"), "POST /checkout opens", b.log())
        b.evaluate("co.querySelector('.try-out__btn').click()")
        key_input = "co.querySelector('tr[data-param-name=\"Idempotency-Key\"] input')"
        t.ok(b.wait_for("!!" + key_input), "\"Try it out\" shows the Idempotency-Key input")
        key = harness.new_key("swagger")
        # Type it as a person would: focus, select what is there, insert.
        b.evaluate("(e => { e.focus(); e.select(); })(%s)" % key_input)
        b.call("Input.insertText", text=key)
        # The input is debounced; leaving it hands the value over at once.
        b.evaluate("document.activeElement.blur()")
        b.evaluate("co.querySelector('.btn.execute').click()")
        status = b.wait_for("(co.querySelector('.live-responses-table tr.response "
                            ".response-col_status') || {}).textContent", timeout=30)
        t.eq((status or "").strip(), "201", "Execute: the page shows 201 Created")
        body = b.evaluate("(co.querySelector('.live-responses-table tr.response "
                          ".response-col_description pre') || {}).textContent || ''")
        try:
            order = json.loads(body)
        except ValueError:
            order = {}
        t.ok(order.get("status") == "PAID" and d.get("/orders/%s" % order.get("order_id")).status == 200,
             "... an order that the server really made (PAID)", body[:500])
        replay = harness.checkout(d, key, {"buyer_id": "buyer-1", "seller_id": "seller-1",
                                           "amount_cents": 2500, "currency": "EUR",
                                           "buyer_trust": "trusted"})
        t.ok(replay.status == 201 and replay.headers.get("idempotent-replayed") == "true"
             and replay.json().get("order_id") == order.get("order_id"),
             "... under the key typed into the page", replay)
        shot = b.screenshot(os.path.join(d.dir, "docs.png"))
        t.diag("screenshot: %s" % shot)
        b.call("Runtime.evaluate", expression="1")  # collect the last events
        urls = [e["params"]["request"]["url"] for e in b.events
                if e["method"] == "Network.requestWillBeSent"]
        foreign = [u for u in urls if not u.startswith(base + "/") and not u.startswith("data:")]
        t.ok(urls and not foreign, "the page loads nothing from another host (%d requests)"
             % len(urls), "\n".join(foreign))
        errors = [json.dumps(e["params"])[:300] for e in b.events
                  if e["method"] == "Runtime.exceptionThrown"
                  or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
        t.ok(not errors, "no script error and no Content-Security-Policy violation",
             "\n".join(errors))
    d.stop()
    sim.stop()
    return None


try:
    skip = browser_test()
except Exception as e:      # a page that is not as expected fails, with why
    skip = None
    t.ok(False, "the browser test ran to its end", "%s: %s" % (type(e).__name__, e))
if skip:
    print("ok %d # SKIP browser test: %s" % (t.n + 1, skip), flush=True)
    t.n += 1
t.done()
