-- wrk script for bench/wrk.ts: full postbacks with transaction ids unique to this run and thread
-- (spread over the key's index);
-- with WRK_REPEATS=1 every other request repeats one of the thread's last 1000 ids; with
-- WRK_UPDATES=1 first deliveries say status=lead and every tenth request re-sends one of the last
-- 1000 ids with status=sale or status=chargeback.
-- Environment: WRK_PATH (the route), WRK_SHEET, WRK_PREFIX (unique per run and route), WRK_REPEATS, WRK_UPDATES.
local path = os.getenv("WRK_PATH") or "/meta/postback/conversion"
local sheet = os.getenv("WRK_SHEET") or "bench"
local prefix = os.getenv("WRK_PREFIX") or tostring(os.time())
local repeats = os.getenv("WRK_REPEATS") == "1"
local updates = os.getenv("WRK_UPDATES") == "1"
local tail = "&payout=12.50&currency=USD&campaign_id=120210000000000001&adset_id=120210000000000002&ad_id=120210000000000003"

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

local sent, fresh = 0, 0
function request()
  sent = sent + 1
  local n
  local status = ""
  if repeats and sent % 2 == 0 and fresh > 0 then
    n = math.random(math.max(1, fresh - 999), fresh)
  elseif updates and sent % 10 == 0 and fresh > 0 then
    n = math.random(math.max(1, fresh - 999), fresh)
    status = math.random(2) == 1 and "&status=sale" or "&status=chargeback"
  else
    fresh = fresh + 1
    n = fresh
    if updates then status = "&status=lead" end
  end
  -- A hash of n first, so that new ids land all over the key's index, as a network's click ids do
  -- (bench/support.ts spreadId); then the run's prefix, the thread and n, which keep it unique.
  local tx = string.format("%08x", (n * 2654435761) % 4294967296) .. "-" .. prefix .. "-" .. thread_id .. "-" .. n
  return wrk.format("GET", path .. "?sheet_id=" .. sheet .. "&transaction_id=" .. tx .. status .. tail)
end
