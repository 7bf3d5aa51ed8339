-- Publish one event on its own (needs extend.lua, publish.lua): used on a Cluster, after the marker
-- was written in the chain's slot.
-- KEYS: stream. ARGV: min id to keep, expire at, then field/value pairs. Returns the new entry's id.
return publish(KEYS[1], ARGV[1], ARGV[2], {unpack(ARGV, 3)})
