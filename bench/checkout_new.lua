-- wrk: POST /checkout with a fresh Idempotency-Key on every request
-- (each request creates an order, charges provider-sim, writes the ledger).
local threads = {}
local counter = 0
local prefix = ""

function setup(thread)
   thread:set("tid", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   math.randomseed(os.time() * 1000 + tid)
   prefix = string.format("wrk-%d-%d-%d", os.time(), tid, math.random(1, 1000000000))
end

local body = '{"buyer_id":"bench-buyer","seller_id":"bench-seller","amount_cents":1999,"currency":"EUR"}'

function request()
   counter = counter + 1
   return wrk.format("POST", "/checkout", {
      ["Content-Type"] = "application/json",
      ["Idempotency-Key"] = prefix .. "-" .. counter,
   }, body)
end
