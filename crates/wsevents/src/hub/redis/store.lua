-- Store a publication and carry it (a hub with history), in one step: the topic's
-- epoch (made if it has none: a new history, so any old stream goes), the next
-- offset, the entry in the stream, the oldest entries trimmed past the history's
-- count or bytes (the latest one always stays unless the size is 0), the idempotency
-- key, and the PUBLISH of `wse2 EPOCH:OFFSET KIND PAYLOAD` to every node. A key seen
-- before: nothing, and the first one's position.
--
-- KEYS: meta (hash: epoch, offset, bytes), stream, key ('' for none; on a Redis
-- Cluster a name in the topic's slot that is never written, and ARGV[10] 'none').
-- ARGV: channel, a fresh epoch, kind (t/b), payload, size, ttl ms, meta ttl ms,
-- max bytes, the publish command (PUBLISH, or SPUBLISH on a cluster), 'none' when
-- KEYS[3] is no key, the epoch and offset of the latest position the publishing node
-- stored or delivered ('' and 0 for none): a history below it in its epoch lost its
-- tail (a failover to a replica that had not got it), so it starts a new epoch
-- before this is stored, and no offset a subscriber saw is given to other data.
-- Returns {1, position} when stored, {0, position} for a key seen before.
local key = KEYS[3]
if key == '' or ARGV[10] == 'none' then key = nil end
if key then
  local prior = redis.call('GET', key)
  if prior then return {0, prior} end
end
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[2]) == 1 then redis.call('DEL', KEYS[2]) end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if ARGV[11] == epoch and tonumber(redis.call('HGET', KEYS[1], 'offset') or '0') < tonumber(ARGV[12]) then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[2])
  epoch = ARGV[2]
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('XADD', KEYS[2], '0-' .. offset, 'k', ARGV[3], 'd', ARGV[4], 't', ms)
local bytes = string.len(ARGV[4])
if redis.call('XLEN', KEYS[2]) == 1 then
  -- A stream that had expired: count from this entry.
  redis.call('HSET', KEYS[1], 'bytes', bytes)
else
  bytes = redis.call('HINCRBY', KEYS[1], 'bytes', bytes)
end
local size = tonumber(ARGV[5])
local max = tonumber(ARGV[8])
while true do
  local count = redis.call('XLEN', KEYS[2])
  if count == 0 or (count <= size and (bytes <= max or count == 1)) then break end
  local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
  local fields = oldest[2]
  local n = 0
  for j = 1, #fields, 2 do
    if fields[j] == 'd' then n = string.len(fields[j + 1]) end
  end
  redis.call('XDEL', KEYS[2], oldest[1])
  bytes = redis.call('HINCRBY', KEYS[1], 'bytes', -n)
end
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
local position = epoch .. ':' .. offset
if key then redis.call('SET', key, position, 'PX', ARGV[6]) end
redis.call(ARGV[9] or 'PUBLISH', ARGV[1], 'wse2 ' .. position .. ' ' .. ARGV[3] .. ' ' .. ARGV[4])
return {1, position}
