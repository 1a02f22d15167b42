-- What a send went out as, kept for the code's lifetime: KEYS[1] the phone's record (the SID
-- and its subjects, for confirmOTP by phone), KEYS[2] the SID's record (the same, for
-- confirmOTP by SID), KEYS[3] the phone-and-code key ('' without dedup), KEYS[4] the cooldown
-- streak ('' without a cooldown). ARGV: the lifetime (ms), the record, the SID, the streak's
-- lifetime (ms).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local life = tonumber(ARGV[1])
redis.call('SET', KEYS[1], ARGV[2], 'PX', life)
redis.call('SET', KEYS[2], ARGV[2], 'PX', life)
if KEYS[3] ~= '' then
  redis.call('SET', KEYS[3], ARGV[3], 'PX', life)
end
if KEYS[4] ~= '' then
  local streak = redis.call('HMGET', KEYS[4], 'last', 'sends')
  local sends = tonumber(streak[2]) or 0
  local last = tonumber(streak[1])
  if not last or (now - last) / 1000 >= tonumber(ARGV[4]) then
    sends = 0
  end
  -- Whole microseconds as text: Lua would write a number this large in exponent form.
  redis.call('HSET', KEYS[4], 'last', string.format('%d', now), 'sends', sends + 1)
  redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[4]))
end
return 1
