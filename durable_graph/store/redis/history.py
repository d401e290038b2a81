"""The Lua that keeps a namespace's history: its checkpoint ids in order, and their records.

Redis-v11 keeps a namespace's ids in pages of at most ``keys.ID_PAGE_MAX`` (sorted sets
small enough for Redis's compact listpack encoding), each named by a lower bound of its
ids (the first it held) and holding those up to the next page's name; the names are in a
directory (``pages``). A page's records are one string (``rc:<name>``): its member for a
checkpoint is the id, a NUL and where the record sits in that string (``offset,length``).
A record over ``RECORD_IN_PAGE_MAX`` bytes keeps its own key (``cp:<id>``) and its member
is the id alone. Against one sorted set of every id and a key per record (redis-v10 and
before) that is about 45 bytes an id instead of 145, and about 10 a record instead of 120.

A namespace written before (one sorted set, ``idx``, and a key per record) stays in that
form until it is empty. A paged namespace's ``idx`` is a text instead
(``keys.ID_PAGES_MARK``): a release older than v11 fails loudly on it (WRONGTYPE) rather
than find no checkpoint and start the thread over.

Every function takes the namespace's key base. The text has the ``scripts._lua``
placeholders; ``scripts`` composes it into the scripts that need it.
"""

from __future__ import annotations

__all__ = ["HISTORY", "PAGE_BYTES", "RECORD_IN_PAGE_MAX"]

RECORD_IN_PAGE_MAX = 4096
"""Bytes up to which a checkpoint's record is kept in its page's record string; a larger
one (large metadata) keeps a key of its own, so rewriting a page stays cheap."""
PAGE_BYTES = 32768
"""Record bytes from which a commit after all of a page's ids starts the next page even
if the page holds fewer than ``keys.ID_PAGE_MAX`` ids: a commit writes its page's string
whole, so it copies at most about this much."""

HISTORY = """
-- whether a namespace keeps the layout before pages (read once a script: a namespace
-- changes layout only when emptied, and then only from legacy to paged, which its next id
-- takes either way)
local legacy_of = {}
local function ids_legacy(base)
  if legacy_of[base] == nil then
    legacy_of[base] = redis.call('TYPE', base .. @IDX@)['ok'] == 'zset'
  end
  return legacy_of[base]
end
local function page_key(base, name) return base .. @PAGE@ .. name end
local function recs_key(base, name) return base .. @RECS@ .. name end
local function cp_key(base, id) return base .. @CP@ .. id end
-- the page whose ids' range holds `id` (nil: before every page, or no page)
local function page_of(base, id)
  return redis.call('ZREVRANGEBYLEX', base .. @PAGES@, '[' .. id, '-', 'LIMIT', 0, 1)[1]
end
local function page_before(base, name)
  return redis.call('ZREVRANGEBYLEX', base .. @PAGES@, '(' .. name, '-', 'LIMIT', 0, 1)[1]
end
local function last_page(base) return redis.call('ZREVRANGE', base .. @PAGES@, 0, 0)[1] end
-- a page member: the id, then (a record in the page's string) NUL and 'offset,length'
local function member_id(m)
  local i = string.find(m, '\\0', 1, true)
  if i then return string.sub(m, 1, i - 1) end
  return m
end
local function member_at(m)
  local i = string.find(m, '\\0', 1, true)
  if not i then return nil end
  local off, len = string.match(m, '^(%d+),(%d+)$', i + 1)
  return tonumber(off), tonumber(len)
end
-- the member of checkpoint `id` in page `name` (nil: not there)
local function member_in(base, name, id)
  return redis.call('ZRANGEBYLEX', page_key(base, name), '[' .. id, '(' .. id .. '\\1',
                    'LIMIT', 0, 1)[1]
end
-- the page and member of checkpoint `id` (nil: no such checkpoint)
local function find_member(base, id)
  local name = page_of(base, id)
  local m = name and member_in(base, name, id)
  if m then return name, m end
  return nil
end
-- the ids of page `name`'s members from rank `from` to `to` (ZRANGE's), oldest first,
-- appended to `out`
local function page_ids(base, name, from, to, out)
  for _, m in ipairs(redis.call('ZRANGE', page_key(base, name), from, to)) do
    out[#out + 1] = member_id(m)
  end
  return out
end
local function ids_has(base, id)
  if ids_legacy(base) then return redis.call('ZSCORE', base .. @IDX@, id) ~= false end
  return find_member(base, id) ~= nil
end
-- whether checkpoint `id`'s record is stored (a legacy one can expire before its id goes)
local function rec_exists(base, id)
  if not ids_legacy(base) then
    local name, m = find_member(base, id)
    if not name then return false end
    if member_at(m) then return true end
  end
  return redis.call('EXISTS', cp_key(base, id)) == 1
end
-- checkpoint `id`'s stored record: a packed string, or (written as a hash, before
-- redis-v4) a table of its fields and values; nil when there is none
local function rec_raw(base, id)
  if not ids_legacy(base) then
    local name, m = find_member(base, id)
    if not name then return nil end
    local off, len = member_at(m)
    if off then return redis.call('GETRANGE', recs_key(base, name), off, off + len - 1) end
  end
  local key = cp_key(base, id)
  if redis.call('TYPE', key)['ok'] == 'string' then return redis.call('GET', key) end
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  return flat
end
-- a packed record's map: the whole msgpack (redis-v4 to v10), or (redis-v11, first byte
-- 0xC1: `records.SPLIT`) the map after a 2-byte length, what the scripts read (the parent,
-- the refs); the rest of it is deflated after that map, read in Python
local function rec_map(raw)
  if string.byte(raw, 1) == 193 then
    return cmsgpack.unpack(string.sub(raw, 4, 3 + struct.unpack('>I2', raw, 2)))
  end
  return cmsgpack.unpack(raw)
end
-- one field of a stored record (nil: none)
local function rec_field(raw, field)
  if type(raw) == 'string' then
    local rec = rec_map(raw)
    if field == 'refs' and rec['r'] then return rec['r'] end  -- redis-v9's short name
    return rec[field]
  end
  for i = 1, #(raw or {}), 2 do
    if raw[i] == field then
      if field == 'refs' then return cmsgpack.unpack(raw[i + 1]) end
      return raw[i + 1]
    end
  end
  return nil
end
-- The records of members `ms` of page `name` (false: one in its own key).
local function page_records(base, name, ms)
  local rk, out = recs_key(base, name), {}
  for i, m in ipairs(ms) do
    local off, len = member_at(m)
    out[i] = off and redis.call('GETRANGE', rk, off, off + len - 1) or false
  end
  return out
end
-- Page `name` holds exactly the ids of ms[from..to], their records (recs, as
-- page_records gives them) written anew into its string; the keys keep their TTL.
local function page_fill(base, name, ms, recs, from, to)
  local key, rk = page_key(base, name), recs_key(base, name)
  local ttl = redis.call('PTTL', key)
  local parts, args, off = {}, {}, 0
  for i = from, to do
    local m = member_id(ms[i])
    if recs[i] then
      parts[#parts + 1] = recs[i]
      m = m .. '\\0' .. off .. ',' .. #recs[i]
      off = off + #recs[i]
    end
    args[#args + 1] = 0
    args[#args + 1] = m
  end
  redis.call('DEL', key)
  if #args > 0 then redis.call('ZADD', key, unpack(args)) end
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
  if off == 0 then redis.call('DEL', rk)
  else redis.call('SET', rk, table.concat(parts), 'KEEPTTL') end
end
-- After removals from page `name`: an empty page leaves (and, the last, the mark at
-- `idx`); one whose record string is over twice what it still holds is written anew.
local function page_tidy(base, name)
  local key = page_key(base, name)
  local ms = redis.call('ZRANGE', key, 0, -1)
  if #ms == 0 then
    redis.call('DEL', recs_key(base, name))
    redis.call('ZREM', base .. @PAGES@, name)
    if redis.call('EXISTS', base .. @PAGES@) == 0 then redis.call('DEL', base .. @IDX@) end
    return
  end
  local live = 0
  for _, m in ipairs(ms) do
    local _, len = member_at(m)
    live = live + (len or 0)
  end
  if redis.call('STRLEN', recs_key(base, name)) > 2 * live + 1024 then
    page_fill(base, name, ms, page_records(base, name, ms), 1, #ms)
  end
end
-- Removes checkpoints `ids` (their records too, but not their writes: drop_refs);
-- returns how many there were. A record in a page's string is overwritten with zeros at
-- once (what was deleted is not kept), its room given back when the page is tidied.
local function ids_rem(base, ids)
  local n, touched = 0, {}
  if ids_legacy(base) then
    for _, id in ipairs(ids) do n = n + redis.call('ZREM', base .. @IDX@, id) end
    return n
  end
  for _, id in ipairs(ids) do
    local name, m = find_member(base, id)
    if name then
      redis.call('ZREM', page_key(base, name), m)
      local off, len = member_at(m)
      if off then redis.call('SETRANGE', recs_key(base, name), off, string.rep('\\0', len))
      else redis.call('UNLINK', cp_key(base, id)) end
      touched[name], n = true, n + 1
    end
  end
  for name in pairs(touched) do page_tidy(base, name) end
  return n
end
-- Stores checkpoint `id` with its packed record `rec` (replacing one of the same id);
-- returns the keys written (a commit gives them the thread's TTL). An id after all of a
-- full page's ids (a thread's usual commit) starts the next page, as does one after a page
-- of @PAGE_BYTES@ record bytes; one inside a full page moves its upper half to a page of
-- its own. An id before every page renames the first
-- page for it, so a page's name never exceeds its ids.
local function ids_add(base, id, rec)
  if ids_legacy(base) then
    redis.call('DEL', cp_key(base, id))
    redis.call('SET', cp_key(base, id), rec)
    redis.call('ZADD', base .. @IDX@, 0, id)
    return {base .. @IDX@, cp_key(base, id)}
  end
  local dir = base .. @PAGES@
  local name = page_of(base, id)
  if name and member_in(base, name, id) then  -- written before: replaced
    ids_rem(base, {id})
    name = page_of(base, id)
  end
  if not name then
    local first = redis.call('ZRANGE', dir, 0, 0)[1]
    if first then
      for _, key in ipairs({page_key(base, first), recs_key(base, first)}) do
        if redis.call('EXISTS', key) == 1 then
          redis.call('RENAME', key, string.sub(key, 1, -#first - 1) .. id)
        end
      end
      redis.call('ZREM', dir, first)
    else
      redis.call('SET', base .. @IDX@, @PAGES_MARK@)
    end
    redis.call('ZADD', dir, 0, id)
    name = id
  elseif (redis.call('ZCARD', page_key(base, name)) >= @PAGE_MAX@
          or redis.call('STRLEN', recs_key(base, name)) >= @PAGE_BYTES@)
      and id > member_id(redis.call('ZREVRANGE', page_key(base, name), 0, 0)[1]) then
    redis.call('ZADD', dir, 0, id)
    name = id
  end
  local key, rk = page_key(base, name), recs_key(base, name)
  local written = {key, rk, dir, base .. @IDX@}
  local m = id
  if #rec <= @RECORD_IN_PAGE_MAX@ then
    -- written whole (SET), not APPENDed: APPEND leaves room for as much again
    local held = redis.call('GET', rk) or ''
    redis.call('SET', rk, held .. rec, 'KEEPTTL')
    m = id .. '\\0' .. #held .. ',' .. #rec
  else
    redis.call('SET', cp_key(base, id), rec)
    written[#written + 1] = cp_key(base, id)
  end
  redis.call('ZADD', key, 0, m)
  if redis.call('ZCARD', key) > @PAGE_MAX@ then
    local ms = redis.call('ZRANGE', key, 0, -1)
    local recs, half = page_records(base, name, ms), math.floor(#ms / 2)
    local upper = member_id(ms[half + 1])
    redis.call('ZADD', dir, 0, upper)
    page_fill(base, name, ms, recs, 1, half)
    page_fill(base, upper, ms, recs, half + 1, #ms)
    written[#written + 1] = page_key(base, upper)
    written[#written + 1] = recs_key(base, upper)
  end
  return written
end
local function ids_newest(base)
  if ids_legacy(base) then return redis.call('ZREVRANGE', base .. @IDX@, 0, 0)[1] end
  local name = last_page(base)
  local top = name and redis.call('ZREVRANGE', page_key(base, name), 0, 0)[1]
  return top and member_id(top)
end
-- Up to `count` ids below the lex bound `max` ('+', or '(' then an id), newest first;
-- `recs` (optional) gets id -> record of each kept in its page's string, read on the way.
local function ids_before(base, max, count, recs)
  if ids_legacy(base) then
    return redis.call('ZREVRANGEBYLEX', base .. @IDX@, max, '-', 'LIMIT', 0, count)
  end
  local name
  if max == '+' then name = last_page(base) else name = page_of(base, string.sub(max, 2)) end
  local out = {}
  while name and #out < count do
    local got = redis.call('ZREVRANGEBYLEX', page_key(base, name), max, '-', 'LIMIT', 0,
                           count - #out)
    for _, m in ipairs(got) do
      local id, off, len = member_id(m), member_at(m)
      out[#out + 1] = id
      if recs and off then
        recs[id] = redis.call('GETRANGE', recs_key(base, name), off, off + len - 1)
      end
    end
    max, name = '+', page_before(base, name)
  end
  return out
end
-- Every id, oldest first.
local function ids_all(base)
  if ids_legacy(base) then return redis.call('ZRANGE', base .. @IDX@, 0, -1) end
  local out = {}
  for _, name in ipairs(redis.call('ZRANGE', base .. @PAGES@, 0, -1)) do
    page_ids(base, name, 0, -1, out)
  end
  return out
end
-- Every id but the newest `keep`, oldest first (read from the newest page back, so it
-- costs the pages kept and the ids returned, not the history).
local function ids_beyond(base, keep)
  if ids_legacy(base) then
    local n = redis.call('ZCARD', base .. @IDX@)
    if n <= keep then return {} end
    return redis.call('ZRANGE', base .. @IDX@, 0, n - keep - 1)
  end
  local kept, name = 0, last_page(base)
  while name do
    local n = redis.call('ZCARD', page_key(base, name))
    if kept + n > keep then
      local out = {}
      for _, older in ipairs(redis.call('ZRANGEBYLEX', base .. @PAGES@, '-', '(' .. name)) do
        page_ids(base, older, 0, -1, out)
      end
      return page_ids(base, name, 0, n - (keep - kept) - 1, out)
    end
    kept, name = kept + n, page_before(base, name)
  end
  return {}
end
-- The keys holding the ids and the records kept in pages (to expire or delete with the
-- thread; a record in a key of its own is `cp_key`'s).
local function ids_keys(base)
  local out = {base .. @IDX@, base .. @PAGES@}
  for _, name in ipairs(redis.call('ZRANGE', base .. @PAGES@, 0, -1)) do
    out[#out + 1] = page_key(base, name)
    out[#out + 1] = recs_key(base, name)
  end
  return out
end
"""
