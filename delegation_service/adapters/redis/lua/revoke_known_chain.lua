-- Revoke a chain the store knows and read its blast radius (needs extend, publish, children).
-- KEYS: the chain's records, its index, its marker, then the stream (single node).
-- ARGV: dry run ('1' or '0'), leeway, retention, then the stream's min id, its expiry and the event's
--       field/value pairs (its expiry is added).
-- Returns nil, writing nothing, when the store holds neither a record nor a marker of the chain; else
-- {marker set before (1/0), Redis's now, expires at, event id, the root's id, subject, facts and
-- scopes, indexed (1/0), then for an indexed chain its unexpired tokens (ZCOUNT) and clients, for a
-- small one its children's ids and records}. The marker goes first, until the root's expiry plus
-- leeway (for the retention when no root record is left); the blast radius is then read in O(log n)
-- whatever the chain's size.
local records, index = KEYS[1], KEYS[2]
local now = tonumber(redis.call('TIME')[1])
local already = redis.call('EXISTS', KEYS[3])
local root = redis.call('HMGET', records, ':i', ':u', ':r', ':s')
if already == 0 and not root[3] then
  return false
end
local expires_at = now + tonumber(ARGV[3])
if root[3] then
  local facts = cjson.decode(root[3])
  expires_at = facts[3] + facts[4]
end
local id = ''
if ARGV[1] ~= '1' then
  redis.call('SET', KEYS[3], '1', 'KEEPTTL')
  extend(KEYS[3], expires_at + tonumber(ARGV[2]))
  if KEYS[4] then
    local fields = {unpack(ARGV, 6)}
    table.insert(fields, 'expires_at')
    table.insert(fields, string.format('%d', expires_at))
    id = publish(KEYS[4], ARGV[4], ARGV[5], fields)
  end
end
local reply = {already, now, expires_at, id, root[1], root[2], root[3], root[4]}
if redis.call('EXISTS', index) == 1 then
  reply[9] = 1
  reply[10] = redis.call('ZCOUNT', index, '(' .. now, '+inf')
  reply[11] = redis.call('HGET', records, ':c')
else
  reply[9] = 0
  reply[10], reply[11] = children(records)
end
return reply
