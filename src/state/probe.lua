-- The heartbeat, a write like a call's so a store that answers PING but refuses writes (a
-- demoted primary: READONLY; maxmemory: OOM) is not taken for healthy. Returns the store's
-- time (µs) and the records of the other instances sharing the prefix.
-- KEYS[1]: the instances' records (a hash: instance id -> "time record"), KEYS[2]: the probe
-- key `check` writes. ARGV[1]: this instance's id, ARGV[2]: its record ("key-fingerprint
-- limits"), ARGV[3]: how long a record lasts without a heartbeat (µs), ARGV[4]: 1 to write the
-- record (a daemon), 0 to only write the probe key (`check --online`, not an instance).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local stale = tonumber(ARGV[3])
local daemon = ARGV[4] == '1'
if daemon then
  redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', now) .. ' ' .. ARGV[2])
  redis.call('PEXPIRE', KEYS[1], math.ceil(stale / 1000))
else
  redis.call('SET', KEYS[2], string.format('%d', now), 'PX', 1000)
end
local others = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local seen, record = string.match(all[i + 1], '^(%d+) (.*)$')
  if now - (tonumber(seen) or 0) > stale then
    if daemon then redis.call('HDEL', KEYS[1], all[i]) end
  elseif all[i] ~= ARGV[1] and #others < 16 then
    table.insert(others, record)
  end
end
return {now, others}
