-- Shared by the revocation scripts (needs extend.lua): append an event (field/value pairs) to the
-- stream, trim it by age and keep its TTL ahead of its newest entry: when nothing was revoked for a
-- whole retention period, every entry is stale. The revocation scripts publish in the same script when
-- the stream key is given (single node) and leave it to publish_event.lua when it is not (Cluster: the
-- stream lives in another slot).
local function publish(stream, min_id, stream_until, fields)
  local id = redis.call('XADD', stream, 'MINID', '~', min_id, '*', unpack(fields))
  extend(stream, stream_until)
  return id
end
