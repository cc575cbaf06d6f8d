-- What a subscriber that last saw (ARGV[2], ARGV[3]) missed: the epoch, the latest
-- offset, 1 if all of it is there (no more than the size, none older than the ttl,
-- none trimmed) followed by each one's kind and payload, else 0.
--
-- A since past the latest offset of its epoch, from a node that delivered it
-- (ARGV[7] = '1'), means the history lost its tail (a failover to a replica that had
-- not got it, a restart from an older snapshot): later publications would be given
-- offsets that subscribers saw with other data, so the history starts a new epoch
-- (its entries stay, under the new epoch) and the answer is in it.
--
-- The same when the entry at since is not the publication the node delivered there
-- (ARGV[8], ARGV[9]: its kind and payload, '' when not sent): the lost offsets were
-- given to other publications already.
--
-- KEYS: meta, stream. ARGV: a fresh epoch, since epoch ('' for none), since offset,
-- size, ttl ms, meta ttl ms, '1' if a node delivered since, its kind, its payload.
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1 then
  redis.call('DEL', KEYS[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local top = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
local result = {epoch, top, 0}
if ARGV[2] ~= epoch then return result end
local since = tonumber(ARGV[3])
local lost = since > top and ARGV[7] == '1'
if not lost and ARGV[8] ~= '' and since >= 1 and since <= top then
  local at = redis.call('XRANGE', KEYS[2], '0-' .. since, '0-' .. since)
  if #at == 1 then
    local fields = at[1][2]
    local f = {}
    for j = 1, #fields, 2 do f[fields[j]] = fields[j + 1] end
    lost = f['k'] ~= ARGV[8] or f['d'] ~= ARGV[9]
  end
end
if lost then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  result[1] = ARGV[1]
  return result
end
if since > top or top - since > tonumber(ARGV[4]) then return result end
if since == top then result[3] = 1 return result end
local entries = redis.call('XRANGE', KEYS[2], '0-' .. (since + 1), '0-' .. top)
if #entries ~= top - since then return result end
local now = redis.call('TIME')
local cutoff = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[5])
for _, entry in ipairs(entries) do
  local fields = entry[2]
  local f = {}
  for j = 1, #fields, 2 do f[fields[j]] = fields[j + 1] end
  if tonumber(f['t']) < cutoff then return {epoch, top, 0} end
  table.insert(result, f['k'])
  table.insert(result, f['d'])
end
result[3] = 1
return result
