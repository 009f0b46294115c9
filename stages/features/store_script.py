"""The feature store's write script (Lua, run atomically by Redis with EVALSHA).

Its contract, keys and arguments are described in `stages/features/store.py`, which registers
it and is its only caller; it lives here so that the adapter module stays readable.

Retention, bounded by bytes and by blocks: the script keeps an index of the stream
(`stream_index_key`: one line `<entry id> <rows> <bytes>` per block, oldest first; bytes = the
entry's field values) and its byte total (`stream_bytes_key`). After an XADD that puts the
stream over `retention_bytes` or `retention_blocks`, it pops the oldest index lines until both
hold (the newest block always stays) and XTRIMs the stream exactly to `MINID` = the oldest id
kept, so it never reads a block back; it counts `retention_trimmed_blocks` and
`retention_trimmed_samples`. Readers see the trimmed blocks as a jump in `seq`. Entries written
before the index existed are dropped by the first trim.
"""

WRITE_LUA = """
redis.call('SET', KEYS[6], ARGV[18], 'NX')
local epoch = redis.call('GET', KEYS[6])
local tid = ARGV[17]
local reset = 0
if tid ~= '' then
  local known = redis.call('HGET', KEYS[1], 'topic_id')
  if known and known ~= tid then
    if redis.call('HEXISTS', KEYS[1], 'retired:' .. tid) == 1 then
      redis.call('HINCRBY', KEYS[5], 'stale_skipped', tonumber(ARGV[4]))
      return {3, 0, 0, epoch, 0, -1, 0}
    end
    local all = redis.call('HGETALL', KEYS[1])
    local parts, stored = {}, 0
    for i = 1, #all, 2 do
      if string.match(all[i], '^%d+$') then
        parts[#parts + 1] = all[i]
        stored = stored + tonumber(all[i + 1])
      end
    end
    for _, p in ipairs(parts) do
      redis.call('HSET', KEYS[1], p, '0')
    end
    redis.call('HSET', KEYS[1], 'retired:' .. known, '1')
    local now = redis.call('TIME')
    redis.call('RPUSH', KEYS[4], cjson.encode({schema_version=1, stage='features',
      kind='topic_reset', topic=ARGV[14], old_topic_id=known, new_topic_id=tid,
      partitions=#parts, stored_offsets=stored,
      time_ms=tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)}))
    redis.call('HINCRBY', KEYS[5], 'gaps', 1)
    redis.call('HINCRBY', KEYS[5], 'topic_resets', 1)
    redis.call('HINCRBY', KEYS[5], 'topic_resets:' .. ARGV[14], 1)
    reset = 1
  end
  if known ~= tid then
    redis.call('HSET', KEYS[1], 'topic_id', tid)
  end
end
local wm = redis.call('HGET', KEYS[1], ARGV[1])
local first = tonumber(ARGV[2])
local last = tonumber(ARGV[3])
local events = tonumber(ARGV[4])
local tp = ARGV[14] .. ':' .. ARGV[1]
if wm then
  wm = tonumber(wm)
  if last < wm then
    redis.call('HINCRBY', KEYS[5], 'duplicates_skipped', events)
    redis.call('HINCRBY', KEYS[5], 'duplicates_skipped:' .. tp, events)
    return {0, wm, 0, epoch, reset, -1, 0}
  end
  if first < wm then
    return {2, wm, 0, epoch, reset, -1, 0}
  end
end
local idsv = -1
if ARGV[20] ~= '' then
  idsv = tonumber(redis.call('HGET', KEYS[7], '#v') or '0')
  if idsv ~= tonumber(ARGV[20]) then
    return {4, wm or 0, 0, epoch, reset, idsv, 0}
  end
  idsv = idsv + 1
end
if wm and first > wm then
  redis.call('RPUSH', KEYS[4], cjson.encode({schema_version=1, stage='features',
    kind='offset_gap', topic=ARGV[14], partition=tonumber(ARGV[1]), expected=wm, got=first}))
  redis.call('HINCRBY', KEYS[5], 'gaps', 1)
end
local seq, trimmed = 0, 0
local n = tonumber(ARGV[5])
if n > 0 then
  seq = redis.call('INCR', KEYS[2])
  local sseq = tostring(seq)
  local id = redis.call('XADD', KEYS[3], '*', 'v', ARGV[8], 'seq', sseq, 'n', ARGV[5],
    'src', ARGV[9], 'label', ARGV[10], 'dense', ARGV[11], 'ids', ARGV[12], 'ts', ARGV[13],
    'schema', ARGV[25])
  local size = #sseq + #ARGV[5] + #ARGV[25]
  for i = 8, 13 do
    size = size + #ARGV[i]
  end
  -- retention: the index lists the stream's entries oldest first, so trimming reads no block
  local blocks = redis.call('RPUSH', KEYS[8], id .. ' ' .. ARGV[5] .. ' ' .. size)
  local total = redis.call('INCRBY', KEYS[9], size)
  local max_blocks, max_bytes = tonumber(ARGV[7]), tonumber(ARGV[19])
  local rows = 0
  while blocks > 1 and (blocks > max_blocks or total > max_bytes) do
    local rn, rsize = string.match(redis.call('LPOP', KEYS[8]), '^%S+ (%d+) (%d+)$')
    total = total - tonumber(rsize)
    rows = rows + tonumber(rn)
    blocks = blocks - 1
    trimmed = trimmed + 1
  end
  if trimmed > 0 then
    redis.call('SET', KEYS[9], string.format('%d', total))
    local oldest = string.match(redis.call('LINDEX', KEYS[8], 0), '^%S+')
    redis.call('XTRIM', KEYS[3], 'MINID', oldest)
    redis.call('HINCRBY', KEYS[5], 'retention_trimmed_blocks', trimmed)
    redis.call('HINCRBY', KEYS[5], 'retention_trimmed_samples', rows)
  end
end
local ngaps, nwin = tonumber(ARGV[23]), tonumber(ARGV[24])
for i = 26, 25 + ngaps do
  redis.call('RPUSH', KEYS[4], ARGV[i])
  redis.call('HINCRBY', KEYS[5], 'gaps', 1)
end
if idsv >= 0 then
  local fields = {'#v', tostring(idsv)}
  local from = 26 + ngaps
  for i = from, from + 2 * nwin - 1 do
    fields[#fields + 1] = ARGV[i]
  end
  redis.call('HSET', KEYS[7], unpack(fields))
  if #ARGV >= from + 2 * nwin then
    redis.call('HDEL', KEYS[7], unpack(ARGV, from + 2 * nwin, #ARGV))
  end
  if ARGV[21] ~= '0' then
    redis.call('HINCRBY', KEYS[5], 'duplicates_dropped_by_id', tonumber(ARGV[21]))
    redis.call('HINCRBY', KEYS[5], 'duplicates_dropped_by_id:' .. tp, tonumber(ARGV[21]))
  end
  if ARGV[22] ~= '0' then
    redis.call('HINCRBY', KEYS[5], 'dedupe_unchecked', tonumber(ARGV[22]))
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[15])
if ARGV[16] ~= '0' then
  redis.call('HINCRBY', KEYS[5], 'duplicates_skipped', tonumber(ARGV[16]))
  redis.call('HINCRBY', KEYS[5], 'duplicates_skipped:' .. tp, tonumber(ARGV[16]))
end
redis.call('HINCRBY', KEYS[5], 'events_in', events)
redis.call('HINCRBY', KEYS[5], 'samples_out', n)
redis.call('HINCRBY', KEYS[5], 'dead_letters', tonumber(ARGV[6]))
redis.call('HINCRBY', KEYS[5], 'events_in:' .. tp, events)
redis.call('HINCRBY', KEYS[5], 'samples_out:' .. tp, n)
redis.call('HINCRBY', KEYS[5], 'dead_letters:' .. tp, tonumber(ARGV[6]))
redis.call('LTRIM', KEYS[4], -10000, -1)  -- gaps: the newest 10,000 lines (as the trainer's)
return {1, last + 1, seq, epoch, reset, idsv, trimmed}
"""
