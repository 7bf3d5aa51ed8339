#!lua flags=no-writes
-- A chain's records for a view (needs children.lua).
-- KEYS: the chain's records, its index, its marker. ARGV: how many children at most, leeway.
-- Returns {chain marker (1/0), Redis's now, the root's id, subject, facts and scopes, ids, records}:
-- for an indexed chain the live children that expire last, for a small one all its children.
local records, index = KEYS[1], KEYS[2]
local now = tonumber(redis.call('TIME')[1])
local root = redis.call('HMGET', records, ':i', ':u', ':r', ':s')
local ids, values = {}, {}
if redis.call('EXISTS', index) == 1 then
  local live_after = '(' .. (now - tonumber(ARGV[2]))
  local found = redis.call('ZREVRANGEBYSCORE', index, '+inf', live_after, 'LIMIT', 0, tonumber(ARGV[1]) + 1)
  for i = 1, #found do
    if found[i] ~= ':r' then
      ids[#ids + 1] = found[i]
    end
  end
  if #ids > 0 then
    values = redis.call('HMGET', records, unpack(ids))
  end
else
  ids, values = children(records)
end
return {redis.call('EXISTS', KEYS[3]), now, root[1], root[2], root[3], root[4], ids, values}
