-- Apply a whole batch's tenants in one call (a standalone Redis: every key on one node).
-- Each tenant is exactly what apply.lua does for one: compare-and-set on the state version,
-- nothing written if a call id is already in the tenant's seen index.
-- KEYS      cc:{tenant} of each tenant written, in order; then cc:{tenant} of each tenant
--           whose committed calls' outputs are dropped
-- ARGV[1]   number of tenants written
-- ARGV[2]   the current seen-index epoch (its first day); ARGV[3] how many epochs are
--           looked in; ARGV[4] when the current epoch's keys expire (unix seconds);
-- ARGV[5]   the days between epochs
-- ARGV[6]   number of tenants whose committed outputs are dropped (KEYS after the written)
-- ARGV[7..] per tenant written, in order: number of calls, expected version, new state JSON
--           (its pools left out), number of pool fields, the pool fields and their values
--           (only those the batch drew), then per call: the digest of its id and its
--           stored result; then per tenant dropping outputs: how many, and the digests
-- Outputs wait in cc:{tenant}:outputs:EPOCH (digest -> stored result) until the worker has
-- committed the transaction carrying them; the key expires with the epoch's seen index.
-- Returns {status, value} per tenant, flattened: {1, new_version}, {0, current_version}
-- when another writer got there first, {-1, index} when a call id was already recorded.
local tenants = tonumber(ARGV[1])
local epoch = tonumber(ARGV[2])
local span = tonumber(ARGV[3])
local expires = ARGV[4]
local step = tonumber(ARGV[5])
local dropping = tonumber(ARGV[6])
local oldest = epoch - (span - 1) * step
local chunk = 500
local a = 7
local out = {}
for k = 1, tenants do
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
    -- Two EXISTS instead of one per epoch: the current epoch's key (written below too),
    -- then the older ones in one call; only those are looked in when any of them exists.
    local current = key .. ':seen:' .. epoch
    local fresh = true
    if calls > 0 then
      fresh = redis.call('EXISTS', current) == 0
      local buckets = {}
      if epoch > oldest then
        local olds = {}
        for e = oldest, epoch - step, step do
          olds[#olds + 1] = key .. ':seen:' .. e
        end
        if redis.call('EXISTS', unpack(olds)) > 0 then
          buckets = olds
        end
      end
      if not fresh then
        buckets[#buckets + 1] = current
      end
      for _, bucket in ipairs(buckets) do
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
        if status == -1 then
          break
        end
      end
    end
    if status == 1 then
      if calls > 0 then
        local outputs = key .. ':outputs:' .. epoch
        for first = 1, calls, chunk do
          local last = math.min(first + chunk - 1, calls)
          local located = {}
          for i = first, last do
            located[#located + 1] = digests[i]
            located[#located + 1] = string.sub(ARGV[c + 2 * i], 1, 12)
          end
          redis.call('HSET', current, unpack(located))
          redis.call('HSET', outputs, unpack(ARGV, c + 2 * first - 1, c + 2 * last))
        end
        if fresh then
          redis.call('EXPIREAT', current, expires)
        end
        redis.call('EXPIREAT', outputs, expires)
      end
      if pools <= chunk then  -- the state, its version and the pools drawn in one HSET
        redis.call('HSET', key, 'state', ARGV[a + 2], 'ver', ver + 1, unpack(ARGV, a + 4, a + 3 + 2 * pools))
      else
        redis.call('HSET', key, 'state', ARGV[a + 2], 'ver', ver + 1)
        for first = 1, pools, chunk do
          local last = math.min(first + chunk - 1, pools)
          redis.call('HSET', key, unpack(ARGV, a + 2 + 2 * first, a + 3 + 2 * last))
        end
      end
      value = ver + 1
    end
  end
  out[#out + 1] = status
  out[#out + 1] = value
  a = c + 1 + 2 * calls
end
-- Committed outputs: from the current epoch's key, and from older ones only for what was
-- not there (a call charged before the epoch turned, or replayed after an outage).
for g = 1, dropping do
  local key = KEYS[tenants + g]
  local n = tonumber(ARGV[a])
  local removed = 0
  for e = epoch, oldest, -step do
    for first = 1, n, chunk do
      removed = removed + redis.call('HDEL', key .. ':outputs:' .. e, unpack(ARGV, a + first, a + math.min(first + chunk - 1, n)))
    end
    if removed >= n then
      break
    end
  end
  a = a + 1 + n
end
return out
