-- Apply one tenant's folded batch atomically (compare-and-set on the state version).
-- KEYS[1]   cc:{tenant}          hash: state (JSON), ver (int), p: pool fields
-- KEYS[2..] cc:{tenant}:out:ID   when ARGV[8] > 0: each call's own output key
-- ARGV[1]   expected version ("0" for a tenant never written)
-- ARGV[2]   new state JSON
-- ARGV[3]   number of calls charged in this batch
-- ARGV[4]   the current seen-index epoch (its first day); ARGV[5] how many epochs are
--           looked in; ARGV[6] when the current epoch's keys expire (unix seconds);
-- ARGV[7]   the days between epochs
-- ARGV[8]   0: the outputs wait in the epoch's hash (the charging worker drops them once
--           committed); else seconds each call's outputs are kept under a key of its own
--           (KEYS[1 + i]: the control worker's operations, looked up for 400 days)
-- ARGV[9]   number of pool fields, then the pool fields and their values (those drawn)
-- then per call: the digest of its id, its stored result
-- The seen index (cc:{tenant}:seen:EPOCH, hash digest -> partition and offset) and the
-- outputs waiting for their transaction (cc:{tenant}:outputs:EPOCH, digest -> stored
-- result) are in the tenant's hash slot, like every key here.
-- Returns {1, new_version} or {0, current_version} when another writer got there first;
-- returns {-1, index} if a call id was already recorded (nothing is written then).
local ver = tonumber(redis.call('HGET', KEYS[1], 'ver') or '0')
if ver ~= tonumber(ARGV[1]) then
  return {0, ver}
end
local calls = tonumber(ARGV[3])
local epoch = tonumber(ARGV[4])
local step = tonumber(ARGV[7])
local keep = tonumber(ARGV[8])
local pools = tonumber(ARGV[9])
local c = 9 + 2 * pools  -- the calls' arguments follow from c + 1
local digests = {}
for i = 1, calls do
  digests[i] = ARGV[c + 2 * i - 1]
end
local chunk = 500
-- Two EXISTS instead of one per epoch: the current epoch's key (written below too), then
-- the older ones in one call; only those are looked in when any of them exists.
local current = KEYS[1] .. ':seen:' .. epoch
local fresh = true
if calls > 0 then
  fresh = redis.call('EXISTS', current) == 0
  local buckets = {}
  local oldest = epoch - (tonumber(ARGV[5]) - 1) * step
  if epoch > oldest then
    local olds = {}
    for e = oldest, epoch - step, step do
      olds[#olds + 1] = KEYS[1] .. ':seen:' .. e
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
          return {-1, first - 1 + j}
        end
      end
    end
  end
end
if calls > 0 then
  local outputs = KEYS[1] .. ':outputs:' .. epoch
  for first = 1, calls, chunk do
    local last = math.min(first + chunk - 1, calls)
    local located = {}
    for i = first, last do
      located[#located + 1] = digests[i]
      located[#located + 1] = string.sub(ARGV[c + 2 * i], 1, 12)
    end
    redis.call('HSET', current, unpack(located))
    if keep == 0 then
      redis.call('HSET', outputs, unpack(ARGV, c + 2 * first - 1, c + 2 * last))
    else
      for i = first, last do
        redis.call('SET', KEYS[1 + i], ARGV[c + 2 * i], 'EX', keep)
      end
    end
  end
  if fresh then
    redis.call('EXPIREAT', current, ARGV[6])
  end
  if keep == 0 then
    redis.call('EXPIREAT', outputs, ARGV[6])
  end
end
if pools <= chunk then  -- the state, its version and the pools drawn in one HSET
  redis.call('HSET', KEYS[1], 'state', ARGV[2], 'ver', ver + 1, unpack(ARGV, 10, 9 + 2 * pools))
else
  redis.call('HSET', KEYS[1], 'state', ARGV[2], 'ver', ver + 1)
  for first = 1, pools, chunk do
    local last = math.min(first + chunk - 1, pools)
    redis.call('HSET', KEYS[1], unpack(ARGV, 8 + 2 * first, 9 + 2 * last))
  end
end
return {1, ver + 1}
