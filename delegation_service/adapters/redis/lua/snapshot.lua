#!lua flags=no-writes
-- Read what decides one token's state.
-- KEYS: the chain's records, its marker, the token's marker, then the token's horizons (single node).
-- ARGV: the token's field in the records (":r" for the root).
-- Returns: that field, the root's id, subject, facts and scopes, token marker (1/0), chain marker
-- (1/0), the horizons. Flagged read-only: it runs on a full Redis too (a check needs no memory).
local reply = redis.call('HMGET', KEYS[1], ARGV[1], ':i', ':u', ':r', ':s')
reply[6] = redis.call('EXISTS', KEYS[3])
reply[7] = redis.call('EXISTS', KEYS[2])
for i = 4, #KEYS do
  reply[i + 4] = redis.call('GET', KEYS[i])
end
return reply
