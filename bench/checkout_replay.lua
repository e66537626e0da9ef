-- wrk: POST /checkout replaying one Idempotency-Key (the first request of the
-- run creates the order; every other one is an idempotent replay).
local body = '{"buyer_id":"bench-buyer","seller_id":"bench-seller","amount_cents":1999,"currency":"EUR"}'
local key = os.getenv("REPLAY_KEY") or "bench-replay"

function request()
   return wrk.format("POST", "/checkout", {
      ["Content-Type"] = "application/json",
      ["Idempotency-Key"] = key,
   }, body)
end
