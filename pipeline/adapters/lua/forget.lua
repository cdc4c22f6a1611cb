-- Drop the outputs of a tenant's committed calls (a Redis Cluster; a standalone Redis drops
-- them with the next apply_batch.lua).
-- KEYS[1]   cc:{tenant}
-- ARGV[1]   the current epoch; ARGV[2] how many epochs are looked in; ARGV[3] days between
-- ARGV[4..] the digests of the calls' ids
-- From the current epoch's cc:{tenant}:outputs:EPOCH, and from older ones only for what was
-- not there. Returns how many were dropped.
local epoch, span, step = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local n = #ARGV - 3
local removed = 0
for e = epoch, epoch - (span - 1) * step, -step do
  for first = 4, #ARGV, 500 do
    removed = removed + redis.call('HDEL', KEYS[1] .. ':outputs:' .. e, unpack(ARGV, first, math.min(first + 499, #ARGV)))
  end
  if removed >= n then
    break
  end
end
return removed
