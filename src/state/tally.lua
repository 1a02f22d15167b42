-- A confirmation (or a message that never arrived) counted for the watched subjects, in the
-- current bucket of the ring gcra.lua reads. KEYS[1]: the message's once-only mark ('' for
-- none), then the subjects. ARGV: the bucket length (us), the field ('c' confirmed, 's' one
-- more unconfirmed send), the subjects' lifetime (ms), the mark's lifetime (ms).
-- Returns 1 when counted, 0 when the mark was already there (counted before).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if KEYS[1] ~= '' then
  if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', tonumber(ARGV[4])) then
    return 0
  end
end
local bucket = math.floor(now / tonumber(ARGV[1]))
local slot = bucket % 4
for j = 2, #KEYS do
  if tonumber(redis.call('HGET', KEYS[j], 'b' .. slot)) ~= bucket then
    redis.call('HSET', KEYS[j], 'b' .. slot, bucket, 's' .. slot, 0, 'c' .. slot, 0)
  end
  redis.call('HINCRBY', KEYS[j], ARGV[2] .. slot, 1)
  if redis.call('PTTL', KEYS[j]) < tonumber(ARGV[3]) then
    redis.call('PEXPIRE', KEYS[j], tonumber(ARGV[3]))
  end
end
return 1
