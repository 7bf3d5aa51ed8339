-- Judge a root and record its child, in one step on the chain's slot.
-- KEYS: the chain's records, its index, its marker, the root's token marker, then (single node) the
--       root's horizons.
-- ARGV: leeway, the root's id, subject, facts and scopes, its issue time and expiry, the child's id,
--       record, expiry and client, how many expired records to drop at most, how many fields a chain
--       holds before it gets an index, the number n of horizons, the n issue times they are compared
--       with, then (Cluster: horizons not in KEYS) the n horizon values read just before ('' for none).
-- Returns: recorded (1 or 0), the stored root's id, subject, facts and scopes, root marker (1/0), chain
-- marker (1/0), the horizons.
-- Writes nothing unless the root is active: no marker, no horizon at or after the issue time it
-- covers, not expired by Redis's clock, and a stored root (the first recorded) the same token as the
-- one presented (only the scopes may differ). That is the domain's rule, revocation.root_is_active
-- (its one home), enforced again here at the store's edge so that judging and recording are one atomic
-- step, by Redis's clock; the contract suite checks that both agree on every kind of root.
-- The child's record is written before the index that points at it; records already past their expiry
-- are not written at all. A chain that outgrows SMALL_CHAIN_FIELDS gets its index: its live children
-- scored by expiry (the expired ones are dropped on the way) and the latest expiry of each client; from
-- then on every mint drops a few expired records.
local records, index = KEYS[1], KEYS[2]
local leeway = tonumber(ARGV[1])
local root_issued = tonumber(ARGV[6])
local root_exp = tonumber(ARGV[7])
local child_exp = tonumber(ARGV[10])
local n = tonumber(ARGV[14])
local now = tonumber(redis.call('TIME')[1])
local stored = redis.call('HMGET', records, ':i', ':u', ':r', ':s')
local root_revoked = redis.call('EXISTS', KEYS[4])
local chain_revoked = redis.call('EXISTS', KEYS[3])
local active = root_revoked == 0 and chain_revoked == 0 and root_exp > now
if stored[3] and (stored[1] ~= ARGV[2] or stored[2] ~= ARGV[3] or stored[3] ~= ARGV[4]) then
  active = false
end
local reply = {0, stored[1], stored[2], stored[3], stored[4], root_revoked, chain_revoked}
for i = 1, n do
  local horizon = false
  local given = ARGV[14 + n + i]
  if KEYS[4 + i] then
    horizon = redis.call('GET', KEYS[4 + i])
  elseif given and given ~= '' then
    horizon = given
  end
  if horizon and tonumber(horizon) >= tonumber(ARGV[14 + i]) then
    active = false
  end
  reply[7 + i] = horizon
end
if not active then
  return reply
end
if not stored[3] then
  redis.call('HSET', records, ':i', ARGV[2], ':u', ARGV[3], ':r', ARGV[4], ':s', ARGV[5])
  extend(records, root_exp + leeway)
end
if child_exp + leeway > now then
  redis.call('HSET', records, ARGV[8], ARGV[9])
  local clients = {}
  local indexed = redis.call('EXISTS', index) == 1
  if indexed then
    redis.call('ZADD', index, child_exp, ARGV[8])
    local raw = redis.call('HGET', records, ':c')
    if raw then
      clients = cjson.decode(raw)
    end
    for name, until_exp in pairs(clients) do
      if until_exp + leeway <= now then
        clients[name] = nil
      end
    end
    if (clients[ARGV[11]] or 0) < child_exp then
      clients[ARGV[11]] = child_exp
    end
  elseif redis.call('HLEN', records) > tonumber(ARGV[13]) then
    local members = {root_exp, ':r'}
    local ids, values = children(records)
    for i = 1, #ids do
      local child = cjson.decode(values[i])
      local expires = root_issued + child[4] + child[5]
      if expires + leeway <= now then
        redis.call('HDEL', records, ids[i])
      else
        members[#members + 1] = expires
        members[#members + 1] = ids[i]
        if (clients[child[2]] or 0) < expires then
          clients[child[2]] = expires
        end
      end
    end
    redis.call('ZADD', index, unpack(members))
    extend(index, root_exp + leeway)
    indexed = true
  end
  if indexed then
    redis.call('HSET', records, ':c', cjson.encode(clients))
    local expired = redis.call('ZRANGEBYSCORE', index, '-inf', now - leeway, 'LIMIT', 0, ARGV[12])
    if #expired > 0 then
      redis.call('HDEL', records, unpack(expired))
      redis.call('ZREM', index, unpack(expired))
    end
  end
end
reply[1] = 1
return reply
