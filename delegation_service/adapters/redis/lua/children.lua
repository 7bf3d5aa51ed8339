-- Shared by the chain scripts: a chain's children straight from its hash (a chain without an index
-- holds at most SMALL_CHAIN_FIELDS fields), as ids, records.
local function children(records)
  local all = redis.call('HGETALL', records)
  local ids, values = {}, {}
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 1) ~= ':' then
      ids[#ids + 1] = all[i]
      values[#values + 1] = all[i + 1]
    end
  end
  return ids, values
end
