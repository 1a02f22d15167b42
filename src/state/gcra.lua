-- All of one call's checks in the store, decided and charged at once: the resend dedup, the
-- resend cooldown, the pumping guard's countries and ranges, then the rate limits (GCRA, as in
-- guard/ratelimit.rs). A refusal charges nothing (an episode's start is kept).
-- KEYS: one per limit, then the dedup key (if any), the cooldown key (if any), the watched
-- subjects (the country, the range). ARGV[1]: the store-clock time (us) after which the caller
-- no longer waits for this answer, 0 for none; ARGV[2]: the number of limits N; then per limit
-- its emission interval and its window (us); then the guard's block (see `at` below).
-- Returns {code, n, sid, episodes}: code 0 admitted (n: the first watched subject that would
-- have refused, monitor mode), i > 0 limit i refuses for n us, -1 the script ran after the
-- deadline, -2 a duplicate of SID sid, -3 watched subject n is throttled, -4 the cooldown
-- refuses for n us. episodes: a bit per watched subject whose throttle began in this call.
-- Time is the store's (TIME), so instances whose clocks differ still agree.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local deadline = tonumber(ARGV[1])
if deadline > 0 and now > deadline then
  return {-1, 0, false, 0}
end
local n = tonumber(ARGV[2])
local at = 3 + 2 * n
local k = n
-- Resend dedup: ARGV[at] 1 when KEYS[k + 1] is the phone-and-code key.
if ARGV[at] == '1' then
  k = k + 1
  local sid = redis.call('GET', KEYS[k])
  if sid then
    return {-2, 0, sid, 0}
  end
end
-- Cooldown: ARGV[at + 1] the number of waits S, then the waits (us); KEYS[k + 1] its streak.
local steps = tonumber(ARGV[at + 1])
if steps > 0 then
  k = k + 1
  local streak = redis.call('HMGET', KEYS[k], 'last', 'sends')
  local last = tonumber(streak[1])
  local sends = tonumber(streak[2]) or 0
  local longest = tonumber(ARGV[at + 1 + steps])
  if last and sends > 0 and now - last < 2 * longest then
    local ready = last + tonumber(ARGV[at + 1 + math.min(sends, steps)])
    if ready > now then
      return {-4, ready - now, false, 0}
    end
  end
end
-- The pumping guard: mode (1 monitor, 2 enforce), bucket length (us), min sends, min percent,
-- block (us), trickle interval and window (us; interval 0: nothing through), the key's
-- lifetime (ms), M watched subjects in KEYS[k + 1 .. k + M].
local g = at + 2 + steps
local mode = tonumber(ARGV[g])
local bucket = math.floor(now / tonumber(ARGV[g + 1]))
local min_sends, min_percent = tonumber(ARGV[g + 2]), tonumber(ARGV[g + 3])
local block, interval, burst = tonumber(ARGV[g + 4]), tonumber(ARGV[g + 5]), tonumber(ARGV[g + 6])
local ttl = tonumber(ARGV[g + 7])
local m = tonumber(ARGV[g + 8])
local episodes, refused = 0, 0
local watched = {}
for j = 1, m do
  local h = redis.call('HMGET', KEYS[k + j], 'b0', 'b1', 'b2', 'b3', 's0', 's1', 's2', 's3',
    'c0', 'c1', 'c2', 'c3', 'until', 'tat')
  local sent, confirmed = 0, 0
  for i = 1, 4 do
    local b = tonumber(h[i])
    if b and b <= bucket and b + 4 > bucket then
      sent = sent + (tonumber(h[4 + i]) or 0)
      confirmed = confirmed + (tonumber(h[8 + i]) or 0)
    end
  end
  local w = {b = h, blocked = tonumber(h[13]) or 0, tat = tonumber(h[14]) or 0, began = false}
  if w.blocked <= now and sent >= min_sends and confirmed * 100 < sent * min_percent then
    w.blocked, w.tat, w.began = now + block, 0, true
    episodes = episodes + 2 ^ (j - 1)
  end
  if w.blocked > now then
    local next_tat = math.max(w.tat, now) + interval
    if interval > 0 and next_tat - now <= burst then
      w.tat = next_tat
    elseif refused == 0 then
      refused = j
    end
  end
  watched[j] = w
end
local function keep_episodes()
  for j = 1, m do
    if watched[j].began then
      redis.call('HSET', KEYS[k + j], 'until', string.format('%d', watched[j].blocked), 'tat', 0)
      redis.call('PEXPIRE', KEYS[k + j], ttl + math.ceil(block / 1000))
    end
  end
end
if refused > 0 and mode == 2 then
  keep_episodes()
  return {-3, refused, false, episodes}
end
local tats = {}
for i = 1, n do
  local interval_i = tonumber(ARGV[2 * i + 1])
  local window = tonumber(ARGV[2 * i + 2])
  local tat = tonumber(redis.call('GET', KEYS[i])) or 0
  if tat < now then tat = now end
  local new = tat + interval_i
  if new - now > window then
    keep_episodes()
    return {i, new - now - window, false, episodes}
  end
  tats[i] = new
end
for i = 1, n do
  -- The key lives as long as it limits anything: until its arrival time has passed.
  local ttl_ms = math.max(1, math.ceil((tats[i] - now) / 1000))
  redis.call('SET', KEYS[i], string.format('%d', tats[i]), 'PX', ttl_ms)
end
for j = 1, m do
  local w, key = watched[j], KEYS[k + j]
  local slot = bucket % 4
  if tonumber(w.b[slot + 1]) ~= bucket then
    redis.call('HSET', key, 'b' .. slot, bucket, 's' .. slot, 0, 'c' .. slot, 0)
  end
  redis.call('HINCRBY', key, 's' .. slot, 1)
  redis.call('HSET', key, 'until', string.format('%d', w.blocked), 'tat', string.format('%d', w.tat))
  redis.call('PEXPIRE', key, ttl + math.max(0, math.ceil((w.blocked - now) / 1000)))
end
return {0, refused, false, episodes}
