-- Apply a whole batch's tenants in one call (a standalone Redis: every key on one node).
-- Each tenant is exactly what apply.lua does for one: compare-and-set on the state version,
-- nothing written if a call id is already in the tenant's seen index.
-- KEYS      per tenant, in order: cc:{tenant}, then its calls' output keys cc:{tenant}:out:ID
-- ARGV[1]   output TTL in seconds (a safety net: the worker drops them once committed)
-- ARGV[2]   number of tenants
-- ARGV[3]   the current seen-index epoch (its first day); ARGV[4] how many epochs are
--           looked in; ARGV[5] when the current epoch's index expires (unix seconds);
-- ARGV[6]   the days between epochs
-- ARGV[7]   how many keys at the end of KEYS are outputs of committed calls: unlinked
-- ARGV[8..] per tenant, in order: number of calls, expected version, new state JSON (its
--           pools left out), number of pool fields, the pool fields and their values
--           (only those the batch drew), then per call: the digest of its id and its
--           stored result (KEYS order)
-- Returns {status, value} per tenant, flattened: {1, new_version}, {0, current_version}
-- when another writer got there first, {-1, index} when a call id was already recorded.
local ttl = tonumber(ARGV[1])
local tenants = tonumber(ARGV[2])
local epoch = tonumber(ARGV[3])
local span = tonumber(ARGV[4])
local expires = ARGV[5]
local step = tonumber(ARGV[6])
local committed = tonumber(ARGV[7])
local chunk = 500
local k, a = 1, 8
local out = {}
for _ = 1, tenants do
  local calls = tonumber(ARGV[a])
  local expected = tonumber(ARGV[a + 1])
  local pools = tonumber(ARGV[a + 3])
  local c = a + 3 + 2 * pools  -- the calls' arguments follow from c + 1
  local key = KEYS[k]
  local ver = tonumber(redis.call('HGET', key, 'ver') or '0')
  local status, value = 1, 0
  local digests = {}
  for i = 1, calls do
    digests[i] = ARGV[c + 2 * i - 1]
  end
  if ver ~= expected then
    status, value = 0, ver
  else
    for e = epoch - (span - 1) * step, epoch, step do
      local bucket = key .. ':seen:' .. e
      if status == 1 and calls > 0 and redis.call('EXISTS', bucket) == 1 then
        for first = 1, calls, chunk do
          local last = math.min(first + chunk - 1, calls)
          local found = redis.call('HMGET', bucket, unpack(digests, first, last))
          for j = 1, last - first + 1 do
            if found[j] then
              status, value = -1, first - 1 + j
              break
            end
          end
          if status == -1 then
            break
          end
        end
      end
    end
    if status == 1 then
      if calls > 0 then
        local current = key .. ':seen:' .. epoch
        local fresh = redis.call('EXISTS', current) == 0
        for first = 1, calls, chunk do
          local last = math.min(first + chunk - 1, calls)
          local fields = {}
          for i = first, last do
            local stored = ARGV[c + 2 * i]
            fields[#fields + 1] = digests[i]
            fields[#fields + 1] = string.sub(stored, 1, 12)
            redis.call('SET', KEYS[k + i], stored, 'EX', ttl)
          end
          redis.call('HSET', current, unpack(fields))
        end
        if fresh then
          redis.call('EXPIREAT', current, expires)
        end
      end
      redis.call('HSET', key, 'state', ARGV[a + 2], 'ver', ver + 1)
      for first = 1, pools, chunk do
        local last = math.min(first + chunk - 1, pools)
        redis.call('HSET', key, unpack(ARGV, a + 2 + 2 * first, a + 3 + 2 * last))
      end
      value = ver + 1
    end
  end
  out[#out + 1] = status
  out[#out + 1] = value
  k = k + 1 + calls
  a = c + 1 + 2 * calls
end
for first = #KEYS - committed + 1, #KEYS, chunk do
  redis.call('UNLINK', unpack(KEYS, first, math.min(first + chunk - 1, #KEYS)))
end
return out
