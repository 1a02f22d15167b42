-- All of one call's rate limits, checked and charged at once (GCRA, as in guard/ratelimit.rs).
-- KEYS: one per limit. ARGV[1]: the store-clock time (µs) after which the caller no longer
-- waits for this answer, 0 for none. Then per key, its emission interval and its window (µs).
-- Returns {0, 0} when every limit admits the send (and charges each), {i, wait_us}: the first
-- limit that refuses and how long until it would not, or {-1, 0} when the script ran after
-- the deadline (a call that waited behind a paused store): refusals and late runs charge
-- nothing. Time is the store's (TIME), so instances whose clocks differ still agree.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local deadline = tonumber(ARGV[1])
if deadline > 0 and now > deadline then
  return {-1, 0}
end
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', key)) or 0
  if tat < now then tat = now end
  local new = tat + interval
  if new - now > window then
    return {i, new - now - window}
  end
  tats[i] = new
end
for i, key in ipairs(KEYS) do
  -- The key lives as long as it limits anything: until its arrival time has passed.
  local ttl_ms = math.max(1, math.ceil((tats[i] - now) / 1000))
  redis.call('SET', key, string.format('%d', tats[i]), 'PX', ttl_ms)
end
return {0, 0}
