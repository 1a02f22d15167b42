-- One phone's issued codes (issueOTP / checkOTP), the rules of src/codes/book.rs run in the
-- store so that instances share them; each call is one atomic script, one round trip.
-- KEYS[1]: the phone's keyed-hash name. The hash holds only HMACs: field 'c:<hmac hex>' =
-- its expiry, 'w' = wrong codes, 'l' = locked until (µs, the store's clock: TIME).
-- ARGV: 'keep' | 'check', the HMAC (hex), the lifetime (µs), the store-clock time after which
-- the caller no longer waits (0: none), then the most live codes ('keep') or the wrong codes
-- allowed ('check').
-- Returns {verdict, µs}: 0 kept; 1 accepted; 2 invalid; 3 expired; 4 locked (for µs);
-- 5 locked by this wrong code (for µs); -1 ran after the deadline (changed nothing).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local deadline = tonumber(ARGV[4])
if deadline > 0 and now > deadline then
  return {-1, 0}
end
local key = KEYS[1]
local mac = 'c:' .. ARGV[2]
local lifetime = tonumber(ARGV[3])

local function codes()
  local all = redis.call('HGETALL', key)
  local out = {}
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 'c:' then
      out[#out + 1] = {all[i], tonumber(all[i + 1])}
    end
  end
  return out
end

-- The key lives as long as anything in it matters: a lock, or a code one lifetime past its
-- expiry (so a code typed late is told 'expired').
local function refresh()
  local last = tonumber(redis.call('HGET', key, 'l')) or 0
  for _, c in ipairs(codes()) do
    if c[2] + lifetime > last then last = c[2] + lifetime end
  end
  if last > now then
    redis.call('PEXPIRE', key, math.max(1, math.ceil((last - now) / 1000)))
  else
    redis.call('DEL', key)
  end
end

if ARGV[1] == 'keep' then
  local live = {}
  for _, c in ipairs(codes()) do
    if c[2] + lifetime <= now then
      redis.call('HDEL', key, c[1])
    else
      live[#live + 1] = c
    end
  end
  if #live >= tonumber(ARGV[5]) then
    local oldest = live[1]
    for _, c in ipairs(live) do
      if c[2] < oldest[2] then oldest = c end
    end
    redis.call('HDEL', key, oldest[1])
  end
  redis.call('HSET', key, mac, string.format('%d', now + lifetime))
  refresh()
  return {0, 0}
end

local locked = tonumber(redis.call('HGET', key, 'l')) or 0
if locked > now then
  return {4, locked - now}
end
if locked > 0 then
  redis.call('HDEL', key, 'l', 'w')
end
local expires = tonumber(redis.call('HGET', key, mac))
if expires then
  if expires > now then
    redis.call('DEL', key)
    return {1, 0}
  end
  return {3, 0}
end
local live_until = 0
for _, c in ipairs(codes()) do
  if c[2] > now and c[2] > live_until then live_until = c[2] end
end
if live_until == 0 then
  return {2, 0}
end
local wrong = redis.call('HINCRBY', key, 'w', 1)
if wrong >= tonumber(ARGV[5]) then
  for _, c in ipairs(codes()) do
    redis.call('HDEL', key, c[1])
  end
  redis.call('HSET', key, 'l', string.format('%d', live_until))
  refresh()
  return {5, live_until - now}
end
return {2, 0}
