-- Move a subject's or a client's horizon and publish it (needs extend.lua, publish.lua).
-- KEYS: horizon, then the stream (single node). ARGV: horizon (epoch seconds), retention (seconds),
-- then the stream's min id, its expiry and the event's field/value pairs (the horizon in force is
-- added). A horizon never moves back: the larger of the stored and the requested value wins and is
-- returned, with the event's id ('' when not published).
local at = tonumber(ARGV[1])
local stored = redis.call('GET', KEYS[1])
if stored and tonumber(stored) >= at then
  at = tonumber(stored)
else
  redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
end
local retention = tonumber(ARGV[2])
extend(KEYS[1], at + retention)
local id = ''
if KEYS[2] then
  local fields = {unpack(ARGV, 5)}
  table.insert(fields, 'revoked_at')
  table.insert(fields, string.format('%d', at))
  table.insert(fields, 'expires_at')
  table.insert(fields, string.format('%d', at + retention))
  id = publish(KEYS[2], ARGV[3], ARGV[4], fields)
end
return {at, id}
