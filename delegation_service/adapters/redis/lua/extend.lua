-- Shared by the scripts that write: extend a key's expiry to `at` (epoch seconds), never shorten it.
-- EXPIREAT GT treats a key without a TTL as never expiring and so would leave a freshly created key
-- immortal: such a key gets a plain EXPIREAT instead.
local function extend(key, at)
  if redis.call('PTTL', key) == -1 then
    return redis.call('EXPIREAT', key, at)
  end
  return redis.call('EXPIREAT', key, at, 'GT')
end
