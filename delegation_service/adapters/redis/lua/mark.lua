-- Set a revocation marker (token or chain) and publish its event (needs extend.lua, publish.lua).
-- KEYS: marker, then the stream (single node). ARGV: expire at (epoch seconds), then the stream's min id
-- to keep, its expiry and the event's field/value pairs. Returns the event's id ('' when not
-- published). Idempotent; never shortens a marker's life.
redis.call('SET', KEYS[1], '1', 'KEEPTTL')
extend(KEYS[1], ARGV[1])
if KEYS[2] then
  return publish(KEYS[2], ARGV[2], ARGV[3], {unpack(ARGV, 4)})
end
return ''
