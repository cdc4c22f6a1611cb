-- Apply one tenant's folded batch atomically (compare-and-set on the state version).
-- KEYS[1]   cc:{tenant}           hash: state (JSON), ver (int)
-- KEYS[2..] cc:{tenant}:call:ID   the call ids charged in this batch (same hash slot)
-- ARGV[1]   expected version ("0" for a tenant never written)
-- ARGV[2]   new state JSON
-- ARGV[3]   call-record TTL in seconds (the dedup window)
-- ARGV[4..] stored result of each call, in KEYS order
-- Returns {1, new_version} or {0, current_version} when another writer got there first;
-- returns {-1, index} if a call id was already recorded (nothing is written then).
local ver = tonumber(redis.call('HGET', KEYS[1], 'ver') or '0')
if ver ~= tonumber(ARGV[1]) then
  return {0, ver}
end
-- One EXISTS per chunk of keys (a call each is most of the script's time); the rare hit
-- is then located key by key.
local chunk = 500
for first = 2, #KEYS, chunk do
  local last = math.min(first + chunk - 1, #KEYS)
  if redis.call('EXISTS', unpack(KEYS, first, last)) > 0 then
    for i = first, last do
      if redis.call('EXISTS', KEYS[i]) == 1 then
        return {-1, i - 1}
      end
    end
  end
end
local ttl = tonumber(ARGV[3])
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 2], 'EX', ttl)
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'ver', ver + 1)
return {1, ver + 1}
