-- Apply one tenant's folded batch atomically (compare-and-set on the state version).
-- KEYS[1]   cc:{tenant}          hash: state (JSON), ver (int)
-- KEYS[2..] cc:{tenant}:out:ID   the output keys of the calls charged in this batch
-- ARGV[1]   expected version ("0" for a tenant never written)
-- ARGV[2]   new state JSON
-- ARGV[3]   output TTL in seconds (a safety net: the worker drops them once committed)
-- ARGV[4]   the current seen-index epoch (its first day); ARGV[5] how many epochs are
--           looked in; ARGV[6] when the current epoch's index expires (unix seconds);
-- ARGV[7]   the days between epochs
-- ARGV[8]   number of pool fields, then the pool fields and their values (those drawn)
-- then per call, in KEYS order: the digest of its id, its stored result
-- The seen index (cc:{tenant}:seen:EPOCH, hash digest -> partition and offset) is in the
-- tenant's hash slot, like every key here.
-- Returns {1, new_version} or {0, current_version} when another writer got there first;
-- returns {-1, index} if a call id was already recorded (nothing is written then).
local ver = tonumber(redis.call('HGET', KEYS[1], 'ver') or '0')
if ver ~= tonumber(ARGV[1]) then
  return {0, ver}
end
local calls = #KEYS - 1
local epoch = tonumber(ARGV[4])
local step = tonumber(ARGV[7])
local pools = tonumber(ARGV[8])
local c = 8 + 2 * pools  -- the calls' arguments follow from c + 1
local digests = {}
for i = 1, calls do
  digests[i] = ARGV[c + 2 * i - 1]
end
local chunk = 500
for e = epoch - (tonumber(ARGV[5]) - 1) * step, epoch, step do
  local bucket = KEYS[1] .. ':seen:' .. e
  if calls > 0 and redis.call('EXISTS', bucket) == 1 then
    for first = 1, calls, chunk do
      local last = math.min(first + chunk - 1, calls)
      local found = redis.call('HMGET', bucket, unpack(digests, first, last))
      for j = 1, last - first + 1 do
        if found[j] then
          return {-1, first - 1 + j}
        end
      end
    end
  end
end
if calls > 0 then
  local current = KEYS[1] .. ':seen:' .. epoch
  local fresh = redis.call('EXISTS', current) == 0
  local ttl = tonumber(ARGV[3])
  for first = 1, calls, chunk do
    local last = math.min(first + chunk - 1, calls)
    local fields = {}
    for i = first, last do
      local stored = ARGV[c + 2 * i]
      fields[#fields + 1] = digests[i]
      fields[#fields + 1] = string.sub(stored, 1, 12)
      redis.call('SET', KEYS[1 + i], stored, 'EX', ttl)
    end
    redis.call('HSET', current, unpack(fields))
  end
  if fresh then
    redis.call('EXPIREAT', current, ARGV[6])
  end
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'ver', ver + 1)
for first = 1, pools, chunk do
  local last = math.min(first + chunk - 1, pools)
  redis.call('HSET', KEYS[1], unpack(ARGV, 7 + 2 * first, 8 + 2 * last))
end
return {1, ver + 1}
