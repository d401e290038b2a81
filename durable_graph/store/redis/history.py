"""The Lua that keeps a namespace's history: its checkpoint ids in order with their records,
and its channel values.

Both are paged sets (``PAGED``): keys in pages of at most ``keys.ID_PAGE_MAX`` (sorted sets
small enough for Redis's compact listpack encoding), each named by a lower bound of its keys
(the first it held) and holding those up to the next page's name; the names are in a
directory. A page's bytes are one string: its member for a key is the key, a NUL and where
its bytes sit in that string (``offset,length``; since redis-v13 both in 2 bytes, then byte
255); bytes over ``RECORD_IN_PAGE_MAX`` keep a key of their own. Against a sorted set or
hash entry of Redis's general encoding (about 100 bytes each) and a key per record (about
120), that is the key and about 6 to 10 bytes. Redis-v13 keeps ids, records' heads, fields
and links compact in them (``compact``).

Redis-v11 keeps the ids so (``IDS``: ``pg:<name>`` pages in ``pages``, records in
``rc:<name>``; a record in a key of its own is ``cp:<id>``, its member the id alone).
Redis-v12 keeps the values and leaves so too (``VALS``: fields in ``vpg:<name>`` pages named
in ``vpages``, values in ``vh:<name>``, one in a key of its own ``v:<field>``, its member
the field, NUL, ``-``), instead of one hash (``blobs``). A namespace written before (one
sorted set ``idx`` and a key per record; one ``blobs`` hash) stays in that form until it is
empty. A paged namespace keeps a text at the old key (``keys.ID_PAGES_MARK`` at ``idx``,
``keys.VALUES_MARK`` at ``blobs``): a release older than v11 or v12 fails loudly on it
(WRONGTYPE) rather than find no checkpoint or value.

Every function takes the namespace's key base. The text has the ``scripts._lua``
placeholders; ``scripts`` composes it into the scripts that need it.
"""

from __future__ import annotations

from durable_graph.store.redis.compact import COMPACT_LUA

__all__ = ["HISTORY", "PAGE_BYTES", "PAGE_FILL", "RECORD_IN_PAGE_MAX"]

RECORD_IN_PAGE_MAX = 4096
"""Bytes up to which a checkpoint's record is kept in its page's record string; a larger
one (large metadata) keeps a key of its own, so rewriting a page stays cheap."""
PAGE_BYTES = 32768
"""Bytes (a jemalloc size class) a page's string stays within when a commit after all of
its ids starts the next page, even if the page holds fewer than ``keys.ID_PAGE_MAX`` ids: a
commit writes its page's string whole, so it copies at most about this much."""
PAGE_FILL = PAGE_BYTES - 6
"""The longest string that fits ``PAGE_BYTES`` with Redis's header (an sds string of less
than 64 KiB: 5 bytes of header, 1 of terminator)."""

PAGED = """
-- A paged set of a namespace (`f`: its family, IDS or VALS): keys in sorted pages of at
-- most @PAGE_MAX@ (listpack zsets, every score 0), each named by a lower bound of its keys
-- (the first it held) and holding those up to the next page's name, the names in a
-- directory (f.dir); a page's bytes are one string (f.heap). A page member is the key,
-- NUL and 'offset,length' of its bytes in that string; or, for bytes kept in a key of
-- their own (f.own), the key alone (ids) or the key, NUL and '-' (values: a key can hold
-- a NUL, an id cannot).
local IDS = {dir = @PAGES@, page = @PAGE@, heap = @RECS@, own = @CP@, mark = @IDX@,
             mark_text = @PAGES_MARK@, legacy = 'zset', split = 2 * @PAGE_BYTES@,
             own_suffix = '\\0-', fill = true, dir13 = @IDIR@, mark_v13 = @PAGES_MARK_V13@}
local VALS = {dir = @VPAGES@, page = @VPAGE@, heap = @VHEAP@, own = @VOWN@, mark = @BLOBS@,
              mark_text = @VALUES_MARK@, legacy = 'hash', split = @PAGE_BYTES@,
              own_suffix = '\\0-', fill = true, dir13 = @VDIR@, mark_v13 = @VALUES_MARK_V13@}
-- whether a namespace keeps family f in its layout before pages: its mark's key holds
-- the sorted set of ids or the hash of values (f.legacy) instead. Read once a script: a
-- namespace changes layout only when emptied, and then only from legacy to paged, which
-- its next key takes either way.
local legacy_of = {}
local function pg_legacy(base, f)
  local key = base .. f.mark
  if legacy_of[key] == nil then legacy_of[key] = redis.call('TYPE', key)['ok'] == f.legacy end
  return legacy_of[key]
end
-- Whether namespace `base` keeps family f compact (redis-v13, `compact`): its mark says
-- so, or it has no pages of an earlier layout (a new one, or one emptied). Such a
-- namespace's directory is f.dir13, and f.dir holds a text (f.mark_v13) that a release
-- older than v13 fails on loudly (WRONGTYPE) instead of finding no checkpoint. Ids: one
-- that takes an id no compact key holds has them spelled out (ids_spell_out) for good.
local compact_of = {}
local function fam_compact(base, f)
  local key = base .. f.mark
  if compact_of[key] == nil then
    compact_of[key] = not pg_legacy(base, f) and (redis.call('GET', key) == f.mark_v13
      or redis.call('TYPE', base .. f.dir)['ok'] ~= 'zset')
  end
  return compact_of[key]
end
-- family f's directory in namespace `base`
local function pg_dir(base, f)
  if fam_compact(base, f) then return base .. f.dir13 end
  return base .. f.dir
end
-- whether text `a` sorts after text `b` byte by byte, as Redis orders members (Lua's own
-- `<` follows the collation of the server's locale: under en_US.UTF-8 'B' sorts after 'a')
local function lex_after(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end
local function pg_page(base, f, name) return base .. f.page .. name end
local function pg_heap(base, f, name) return base .. f.heap .. name end
local function pg_own(base, f, k) return base .. f.own .. k end
-- the page whose keys' range holds `k` (nil: before every page, or no page)
local function pg_of(base, f, k)
  return redis.call('ZREVRANGEBYLEX', pg_dir(base, f), '[' .. k, '-', 'LIMIT', 0, 1)[1]
end
local function pg_before(base, f, name)
  return redis.call('ZREVRANGEBYLEX', pg_dir(base, f), '(' .. name, '-', 'LIMIT', 0, 1)[1]
end
local function pg_last(base, f) return redis.call('ZREVRANGE', pg_dir(base, f), 0, 0)[1] end
-- a member's key, and the offset and length of its bytes in the page's string (nil: in
-- a key of their own): in a namespace that keeps f compact (redis-v13) NUL, both in 2
-- bytes and byte 255 after the key (m_at); else as text, which a release before reads
local function m_split(m)
  if string.byte(m, -1) == 255 and string.byte(m, -6) == 0 then
    local off, len = struct.unpack('>HH', m, #m - 4)
    return string.sub(m, 1, -7), off, len
  end
  local k, off, len = string.match(m, '^(.*)%z(%d+),(%d+)$')
  if k then return k, tonumber(off), tonumber(len) end
  if string.sub(m, -2) == '\\0-' then return string.sub(m, 1, -3), nil end
  return m, nil
end
local function m_key(m) return (m_split(m)) end
local function m_at(base, f, k, off, len)
  if off < 65536 and len < 65536 and fam_compact(base, f) then
    return k .. '\\0' .. struct.pack('>HH', off, len) .. '\\255'
  end
  return k .. '\\0' .. off .. ',' .. len
end
-- the member of `k` in page `name` (nil: not there); the members from k NUL on are k's or
-- (a value's key holding a NUL) a longer key's, told apart by their key
local function pg_member_in(base, f, name, k)
  for _, m in ipairs(redis.call('ZRANGEBYLEX', pg_page(base, f, name), '[' .. k,
                                '(' .. k .. '\\1')) do
    if m_key(m) == k then return m end
  end
  return nil
end
-- the page and member of `k` (nil: not stored)
local function pg_find(base, f, k)
  local name = pg_of(base, f, k)
  local m = name and pg_member_in(base, f, name, k)
  if m then return name, m end
  return nil
end
-- the keys of page `name`'s members from rank `from` to `to` (ZRANGE's), in order,
-- appended to `out`
local function pg_keys_of(base, f, name, from, to, out)
  for _, m in ipairs(redis.call('ZRANGE', pg_page(base, f, name), from, to)) do
    out[#out + 1] = m_key(m)
  end
  return out
end
-- The bytes of members `ms` of page `name` kept in its string (false: in a key of its own).
local function pg_records(base, f, name, ms)
  local hk, out = pg_heap(base, f, name), {}
  for i, m in ipairs(ms) do
    local _, off, len = m_split(m)
    out[i] = off and redis.call('GETRANGE', hk, off, off + len - 1) or false
  end
  return out
end
-- Page `name` holds exactly the keys of ms[from..to], their bytes (recs, as pg_records
-- gives them) written anew into its string; the keys keep their TTL.
local function pg_fill(base, f, name, ms, recs, from, to)
  local key, hk = pg_page(base, f, name), pg_heap(base, f, name)
  local ttl = redis.call('PTTL', key)
  local parts, args, off = {}, {}, 0
  for i = from, to do
    local m = m_key(ms[i])
    if recs[i] then
      parts[#parts + 1] = recs[i]
      m = m_at(base, f, m, off, #recs[i])
      off = off + #recs[i]
    else
      m = m .. f.own_suffix
    end
    args[#args + 1] = 0
    args[#args + 1] = m
  end
  redis.call('DEL', key)
  if #args > 0 then redis.call('ZADD', key, unpack(args)) end
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
  if off == 0 then redis.call('DEL', hk)
  else redis.call('SET', hk, table.concat(parts), 'KEEPTTL') end
end
-- After removals from page `name`: an empty page leaves (and, the last, the mark at
-- f.mark); one whose string is over twice what it still holds is written anew.
local function pg_tidy(base, f, name)
  local key = pg_page(base, f, name)
  local ms = redis.call('ZRANGE', key, 0, -1)
  if #ms == 0 then
    redis.call('DEL', pg_heap(base, f, name))
    redis.call('ZREM', pg_dir(base, f), name)
    if redis.call('EXISTS', pg_dir(base, f)) == 0 then
      redis.call('DEL', base .. f.mark)
      if fam_compact(base, f) then redis.call('DEL', base .. f.dir) end  -- its old readers' text
    end
    return
  end
  local live = 0
  for _, m in ipairs(ms) do
    local _, _, len = m_split(m)
    live = live + (len or 0)
  end
  if redis.call('STRLEN', pg_heap(base, f, name)) > 2 * live + 1024 then
    pg_fill(base, f, name, ms, pg_records(base, f, name, ms), 1, #ms)
  end
end
-- Removes keys `ks` and their bytes; returns how many there were. Bytes in a page's
-- string are overwritten with zeros at once (what was deleted is not kept), their room
-- given back when the page is tidied.
local function pg_rem(base, f, ks)
  local n, touched = 0, {}
  for _, k in ipairs(ks) do
    local name, m = pg_find(base, f, k)
    if name then
      redis.call('ZREM', pg_page(base, f, name), m)
      local _, off, len = m_split(m)
      if off then redis.call('SETRANGE', pg_heap(base, f, name), off, string.rep('\\0', len))
      else redis.call('UNLINK', pg_own(base, f, k)) end
      touched[name], n = true, n + 1
    end
  end
  for name in pairs(touched) do pg_tidy(base, f, name) end
  return n
end
-- The allocator class (jemalloc's, Redis's own: four a doubling) of a string of `n`
-- bytes, with Redis's header and terminator (6 bytes below 64 KiB); one class up to
-- 4 KiB, below which no page closes.
local function alloc_class(n)
  n = n + 6
  local p = 4096
  if n <= p then return p end
  while p * 2 < n do p = p * 2 end
  return math.ceil(n / (p / 4)) * (p / 4)
end
-- Whether a page of `count` keys and `held` bytes takes no key after its last with `more`
-- bytes in its string: one of @PAGE_MAX@ keys; or one whose string would pass
-- @PAGE_BYTES@ bytes; or (f.fill, keys written in order) one at least half full whose
-- string of over 4 KiB would take the next allocator class (a page left behind fills
-- its class, short of it by less than the key's bytes).
local function pg_closed(f, count, held, more)
  if count >= @PAGE_MAX@ then return true end
  if more > @RECORD_IN_PAGE_MAX@ then return false end
  if held + more > @PAGE_FILL@ then return true end
  return f.fill and 2 * count >= @PAGE_MAX@ and alloc_class(held + more) > alloc_class(held)
end
-- Stores `k` with `bytes` (replacing what it held; `once`: keeping it, nothing written);
-- returns the keys written (a commit gives them the thread's TTL). A key after all of the
-- keys of a page closed to it (pg_closed; a thread's usual commit) starts the next page; a
-- page over @PAGE_MAX@ keys or f.split bytes moves the keys after `k` (`k` first or last:
-- its upper half) to a page of its own. A key before every page renames the first page for
-- it, so a page's name never exceeds its keys. Bytes over @RECORD_IN_PAGE_MAX@ keep a key
-- of their own (rewriting a page stays cheap).
local function pg_add(base, f, k, bytes, once)
  local dir = pg_dir(base, f)
  local name = pg_of(base, f, k)
  if name and pg_member_in(base, f, name, k) then  -- written before: replaced (once: kept)
    if once then return {} end
    pg_rem(base, f, {k})
    name = pg_of(base, f, k)
  end
  if not name then
    local first = redis.call('ZRANGE', dir, 0, 0)[1]
    if first then
      for _, key in ipairs({pg_page(base, f, first), pg_heap(base, f, first)}) do
        if redis.call('EXISTS', key) == 1 then
          redis.call('RENAME', key, string.sub(key, 1, -#first - 1) .. k)
        end
      end
      redis.call('ZREM', dir, first)
    else
      if fam_compact(base, f) then  -- a text at the mark and where older releases look
        redis.call('SET', base .. f.mark, f.mark_v13)
        redis.call('SET', base .. f.dir, f.mark_v13)
      else
        redis.call('SET', base .. f.mark, f.mark_text)
      end
    end
    redis.call('ZADD', dir, 0, k)
    name = k
  elseif not redis.call('ZRANGEBYLEX', pg_page(base, f, name), '(' .. k, '+', 'LIMIT', 0,
                        1)[1]  -- after all of the page's keys
      and pg_closed(f, redis.call('ZCARD', pg_page(base, f, name)),
                    redis.call('STRLEN', pg_heap(base, f, name)), #bytes) then
    redis.call('ZADD', dir, 0, k)
    name = k
  end
  local key, hk = pg_page(base, f, name), pg_heap(base, f, name)
  local written = {key, hk, dir, base .. f.mark, base .. f.dir}
  local m, size = k .. f.own_suffix, 0
  if #bytes <= @RECORD_IN_PAGE_MAX@ then
    -- written whole (SET), not APPENDed: APPEND leaves room for as much again
    local held = redis.call('GET', hk) or ''
    redis.call('SET', hk, held .. bytes, 'KEEPTTL')
    m, size = m_at(base, f, k, #held, #bytes), #held + #bytes
  else
    redis.call('SET', pg_own(base, f, k), bytes)
    written[#written + 1] = pg_own(base, f, k)
  end
  redis.call('ZADD', key, 0, m)
  local count = redis.call('ZCARD', key)
  if count > @PAGE_MAX@ or (count > 1 and size > f.split) then
    local ms = redis.call('ZRANGE', key, 0, -1)
    -- split after `k` (a run of keys written in order inside the page's range then
    -- fills the page it is in and starts the next, pg_closed), else in half
    local half = redis.call('ZRANK', key, m)
    if half == 0 or half >= #ms - 1 then half = math.floor(#ms / 2) else half = half + 1 end
    local recs = pg_records(base, f, name, ms)
    local upper = m_key(ms[half + 1])
    redis.call('ZADD', dir, 0, upper)
    pg_fill(base, f, name, ms, recs, 1, half)
    pg_fill(base, f, upper, ms, recs, half + 1, #ms)
    written[#written + 1] = pg_page(base, f, upper)
    written[#written + 1] = pg_heap(base, f, upper)
  end
  return written
end
-- Key `k`'s bytes (stored) replaced by `bytes` in place of its own: in its page's string
-- (the old ones zeroed, their room given back when the page is tidied; the string written
-- whole, keeping its TTL), or its own key; the page's keys stay as they are.
local function pg_rewrite(base, f, k, bytes)
  local name, m = pg_find(base, f, k)
  local _, off, len = m_split(m)
  if not off then
    redis.call('SET', pg_own(base, f, k), bytes, 'KEEPTTL')
    return
  end
  local page, hk = pg_page(base, f, name), pg_heap(base, f, name)
  local held = redis.call('GET', hk)
  redis.call('SET', hk, string.sub(held, 1, off) .. string.rep('\\0', len) ..
             string.sub(held, off + len + 1) .. bytes, 'KEEPTTL')
  redis.call('ZREM', page, m)
  redis.call('ZADD', page, 0, m_at(base, f, k, #held, #bytes))
end
-- Every key, in order.
local function pg_all(base, f)
  local out = {}
  for _, name in ipairs(redis.call('ZRANGE', pg_dir(base, f), 0, -1)) do
    pg_keys_of(base, f, name, 0, -1, out)
  end
  return out
end
-- The keys holding the set (to expire or delete with the thread): its mark, directory,
-- pages, strings, and (with_own) the keys of bytes kept apart.
local function pg_store_keys(base, f, with_own)
  local out = {base .. f.mark, base .. f.dir, pg_dir(base, f)}
  for _, name in ipairs(redis.call('ZRANGE', pg_dir(base, f), 0, -1)) do
    out[#out + 1] = pg_page(base, f, name)
    out[#out + 1] = pg_heap(base, f, name)
    if with_own then
      for _, m in ipairs(redis.call('ZRANGE', pg_page(base, f, name), 0, -1)) do
        local k, off = m_split(m)
        if not off then out[#out + 1] = pg_own(base, f, k) end
      end
    end
  end
  return out
end
"""

_IDS = """
local function ids_legacy(base) return pg_legacy(base, IDS) end
-- checkpoint `id`'s key in its namespace's pages (nil: none can hold it) and back
-- (redis-v13: its 16 bytes where the ids are kept compact, ids_compact)
local function ikey(base, id)
  if not ids_compact(base) then return id end
  return uuid_raw(id)
end
local function iid(base, k)
  if not ids_compact(base) then return k end
  return raw_uuid(k)
end
local function iids(base, ks)
  for i, k in ipairs(ks) do ks[i] = iid(base, k) end
  return ks
end
local function cp_key(base, id) return pg_own(base, IDS, ikey(base, id) or id) end
local function ids_has(base, id)
  if ids_legacy(base) then return redis.call('ZSCORE', base .. @IDX@, id) ~= false end
  local k = ikey(base, id)
  return k ~= nil and pg_find(base, IDS, k) ~= nil
end
-- whether checkpoint `id`'s record is stored (a legacy one can expire before its id goes)
local function rec_exists(base, id)
  if not ids_legacy(base) then
    local k = ikey(base, id)
    local name, m = nil, nil
    if k then name, m = pg_find(base, IDS, k) end
    if not name then return false end
    local _, off = m_split(m)
    if off then return true end
  end
  return redis.call('EXISTS', cp_key(base, id)) == 1
end
-- the 16 bytes of id key `k` (nil: none, or an id that is no UUID)
local function key_raw(base, k)
  if not k then return nil end
  if ids_compact(base) then return k end
  return uuid_raw(k)
end
-- the id key before (`after`: after) key `k` among the namespace's paged ids (nil: none)
local function ids_beside(base, k, after)
  local name, m = pg_of(base, IDS, k), nil
  if not after then
    m = name and redis.call('ZREVRANGEBYLEX', pg_page(base, IDS, name), '(' .. k, '-',
                            'LIMIT', 0, 1)[1]
    local before = name and not m and pg_before(base, IDS, name)
    if before then m = redis.call('ZREVRANGE', pg_page(base, IDS, before), 0, 0)[1] end
    return m and m_key(m)
  end
  -- after every member of `k` itself (k NUL ...), before any of a longer key (k, 1...)
  m = name and redis.call('ZRANGEBYLEX', pg_page(base, IDS, name), '[' .. k .. '\\1', '+',
                          'LIMIT', 0, 1)[1]
  if not m then
    local later = name and redis.call('ZRANGEBYLEX', pg_dir(base, IDS), '(' .. name, '+',
                                      'LIMIT', 0, 1)[1] or
      not name and redis.call('ZRANGE', pg_dir(base, IDS), 0, 0)[1]
    m = later and redis.call('ZRANGE', pg_page(base, IDS, later), 0, 0)[1]
  end
  return m and m_key(m)
end
-- id key `k`'s record as stored in the namespace's pages (nil: none)
local function rec_stored(base, k)
  local name, m = pg_find(base, IDS, k)
  if not name then return nil end
  local _, off, len = m_split(m)
  if off then return redis.call('GETRANGE', pg_heap(base, IDS, name), off, off + len - 1) end
  return redis.call('GET', pg_own(base, IDS, k))
end
-- checkpoint `id`'s stored record: a packed string (a compact one given back whole:
-- rec_whole), or (written as a hash, before redis-v4) a table of its fields and values;
-- nil when there is none
local function rec_raw(base, id)
  if not ids_legacy(base) then
    local k = ikey(base, id)
    local stored = k and rec_stored(base, k)
    if not stored then return nil end
    return rec_whole(base, stored, function() return key_raw(base, ids_beside(base, k)) end)
  end
  local key = cp_key(base, id)
  if redis.call('TYPE', key)['ok'] == 'string' then
    return rec_whole(base, redis.call('GET', key))
  end
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  return flat
end
-- a packed record's map: the whole msgpack (redis-v4 to v10), or (redis-v11, first byte
-- 0xC1: `records.SPLIT`) the map after a 2-byte length, what the scripts read (the parent,
-- the refs); the rest of it is deflated after that map, read in Python
local function rec_map(raw)
  if string.byte(raw, 1) == 193 or string.byte(raw, 1) == 195 then
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
-- Removes checkpoints `ids` (their records too, but not their writes: drop_refs);
-- returns how many there were.
local function ids_rem(base, ids)
  if ids_legacy(base) then
    local n = 0
    for _, id in ipairs(ids) do n = n + redis.call('ZREM', base .. @IDX@, id) end
    return n
  end
  local ks, gone = {}, {}
  for _, id in ipairs(ids) do
    local k = ikey(base, id)
    if k then ks[#ks + 1], gone[k] = k, true end
  end
  -- a record kept whose parent is flagged as the id before it (rec_compact) names it
  -- itself when that one goes: the last one going before it
  for _, k in ipairs(ks) do
    local after = pg_find(base, IDS, k) and ids_beside(base, k, true)
    local raw = after and not gone[after] and key_raw(base, k)
    local named = raw and rec_explicit(rec_stored(base, after), raw)
    if named then pg_rewrite(base, IDS, after, named) end
  end
  return pg_rem(base, IDS, ks)
end
-- Stores checkpoint `id` with its packed record `rec` (replacing one of the same id), its
-- head compact (redis-v13, rec_compact; its parent flagged when it is the id before it);
-- returns the keys written, the namespace's channel names among them (a commit renews
-- their TTL with the rest).
local function ids_add(base, id, rec)
  local written = {base .. @NAMES@}
  local function wrote(keys) for _, key in ipairs(keys) do written[#written + 1] = key end end
  if ids_legacy(base) then
    redis.call('DEL', cp_key(base, id))
    redis.call('SET', cp_key(base, id), rec_compact(base, rec))
    redis.call('ZADD', base .. @IDX@, 0, id)
    wrote({base .. @IDX@, cp_key(base, id)})
    return written
  end
  local k = ikey(base, id)
  if not k then  -- an id no compact key holds: the namespace's ids spelled out
    wrote(ids_spell_out(base))
    k = id
  end
  local before = key_raw(base, ids_beside(base, k))
  if not pg_find(base, IDS, k) then  -- a new id: the one after it names its parent itself
    local after = ids_beside(base, k, true)
    local named = after and before and rec_explicit(rec_stored(base, after), before)
    if named then pg_rewrite(base, IDS, after, named) end
  end
  wrote(pg_add(base, IDS, k, rec_compact(base, rec, before)))
  return written
end
local function ids_newest(base)
  if ids_legacy(base) then return redis.call('ZREVRANGE', base .. @IDX@, 0, 0)[1] end
  local name = pg_last(base, IDS)
  local top = name and redis.call('ZREVRANGE', pg_page(base, IDS, name), 0, 0)[1]
  return top and iid(base, m_key(top))
end
-- Up to `count` ids below the lex bound `max` ('+', or '(' then an id), newest first;
-- `recs` (optional) gets id -> record of each kept in its page's string, read on the way.
local function ids_before(base, max, count, recs)
  if ids_legacy(base) then
    return redis.call('ZREVRANGEBYLEX', base .. @IDX@, max, '-', 'LIMIT', 0, count)
  end
  if max ~= '+' and ids_compact(base) then  -- the bound as the least id key not below it
    local least = uuid_at_least(string.sub(max, 2))
    max = least and '(' .. uuid_raw(least) or '+'
  end
  local name
  if max == '+' then name = pg_last(base, IDS) else name = pg_of(base, IDS, string.sub(max, 2)) end
  local out, keys, stored = {}, {}, {}
  while name and #out < count do
    local got = redis.call('ZREVRANGEBYLEX', pg_page(base, IDS, name), max, '-', 'LIMIT', 0,
                           count - #out)
    for _, m in ipairs(got) do
      local k, off, len = m_split(m)
      out[#out + 1], keys[#keys + 1] = iid(base, k), k
      if recs and off then
        stored[#keys] = redis.call('GETRANGE', pg_heap(base, IDS, name), off, off + len - 1)
      end
    end
    max, name = '+', pg_before(base, IDS, name)
  end
  -- each record given back whole: the id before one is the next listed (older)
  for i, raw in pairs(stored) do
    recs[out[i]] = rec_whole(base, raw, function()
      return key_raw(base, keys[i + 1] or ids_beside(base, keys[i]))
    end)
  end
  return out
end
-- Every id, oldest first.
local function ids_all(base)
  if ids_legacy(base) then return redis.call('ZRANGE', base .. @IDX@, 0, -1) end
  return iids(base, pg_all(base, IDS))
end
-- Every id but the newest `keep`, oldest first (read from the newest page back, so it
-- costs the pages kept and the ids returned, not the history).
local function ids_beyond(base, keep)
  if ids_legacy(base) then
    local n = redis.call('ZCARD', base .. @IDX@)
    if n <= keep then return {} end
    return redis.call('ZRANGE', base .. @IDX@, 0, n - keep - 1)
  end
  local kept, name = 0, pg_last(base, IDS)
  while name do
    local n = redis.call('ZCARD', pg_page(base, IDS, name))
    if kept + n > keep then
      local out = {}
      for _, older in ipairs(redis.call('ZRANGEBYLEX', pg_dir(base, IDS), '-', '(' .. name)) do
        pg_keys_of(base, IDS, older, 0, -1, out)
      end
      return iids(base, pg_keys_of(base, IDS, name, 0, n - (keep - kept) - 1, out))
    end
    kept, name = kept + n, pg_before(base, IDS, name)
  end
  return {}
end
-- The keys holding the ids and the records kept in pages (to expire or delete with the
-- thread; a record in a key of its own is `cp_key`'s).
local function ids_keys(base)
  local out = pg_store_keys(base, IDS, false)
  out[#out + 1] = base .. @NAMES@
  return out
end
"""

_VALUES = """
-- A namespace's channel values and leaves: in value pages (redis-v12, the VALS family of
-- PAGED), or in one hash (`blobs`, redis-v11 and before; a namespace keeps it until it
-- is empty).
local function vals_hash(base) return pg_legacy(base, VALS) end
-- What this script read of the value pages, until it writes one (vals_forget): each page
-- read (its key -> {at = field -> {offset, length} (offset nil: a key of its own), heap =
-- its string}), and the page of every field of those (base NUL field -> page name). A
-- read of a checkpoint's values walks a delta chain one link at a time through a few
-- pages, and takes many leaves from each: a page is read once, not once a value. (No
-- directory search in Lua: its string order follows the server's collation, not Redis's
-- byte order.)
local vals_page, vals_where = {}, {}
local function vals_forget() vals_page, vals_where = {}, {} end
local function val_read(base, g)
  local name = vals_where[base .. '\\0' .. g] or pg_of(base, VALS, g)
  if not name then return false end
  local key = pg_page(base, VALS, name)
  local page = vals_page[key]
  if not page then
    page = {at = {}, heap = redis.call('GET', pg_heap(base, VALS, name)) or ''}
    for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
      local k, off, len = m_split(m)
      page.at[k] = {off, len}
      vals_where[base .. '\\0' .. k] = name
    end
    vals_page[key] = page
  end
  local where = page.at[g]
  if not where then return false end
  if where[1] then return string.sub(page.heap, where[1] + 1, where[1] + where[2]) end
  return redis.call('GET', pg_own(base, VALS, g)) or false
end
-- the key value field `g` is stored at in the namespace's pages (vkey, redis-v13: compact
-- in a namespace created since; `grow`: its channel numbered if new), and the value as
-- sent from the bytes stored there
local function val_key(base, g, grow)
  if vals_compact(base) then return vkey(base, g, grow) end
  return g
end
local function val_sent(base, k, v)
  if vals_compact(base) then return val_whole(base, k, v) end
  return v
end
-- the stored bytes of value field `g` (false: none)
local function val_get(base, g)
  if vals_hash(base) then return redis.call('HGET', base .. @BLOBS@, g) end
  local k = val_key(base, g)
  return val_sent(base, k, val_read(base, k))
end
-- the stored bytes of value fields `gs` (false: none), in their order
local function val_mget(base, gs)
  local out = {}
  if not vals_hash(base) then
    for i, g in ipairs(gs) do
      local k = val_key(base, g)
      out[i] = val_sent(base, k, val_read(base, k))
    end
    return out
  end
  for c = 1, #gs, 1000 do  -- unpack's bound
    local got = redis.call('HMGET', base .. @BLOBS@, unpack(gs, c, math.min(c + 999, #gs)))
    for j = 1, #got do out[c + j - 1] = got[j] end
  end
  return out
end
local function val_exists(base, g)
  if vals_hash(base) then return redis.call('HEXISTS', base .. @BLOBS@, g) == 1 end
  return pg_find(base, VALS, val_key(base, g)) ~= nil
end
-- Stores `v` at field `g` unless one is stored there (a value is written once: its
-- field names its version); returns the keys written.
local function val_put(base, g, v)
  if vals_hash(base) then
    redis.call('HSETNX', base .. @BLOBS@, g, v)
    return {base .. @BLOBS@}
  end
  vals_forget()
  if not vals_compact(base) then return pg_add(base, VALS, g, v, true) end
  local k = vkey(base, g, true)
  local written = pg_add(base, VALS, k, val_compact(base, k, v), true)
  written[#written + 1] = base .. @NAMES@
  return written
end
-- Deletes fields `gs` (and, in a hash, the chain field of each: v3 to v8).
local function val_del(base, gs)
  if #gs == 0 then return end
  if vals_hash(base) then
    for _, g in ipairs(gs) do redis.call('HDEL', base .. @BLOBS@, g, @CHAIN@ .. g) end
    return
  end
  vals_forget()
  local ks = {}
  for i, g in ipairs(gs) do ks[i] = val_key(base, g) end
  pg_rem(base, VALS, ks)
end
-- The keys holding the values (to expire or delete with the thread).
local function val_keys(base) return pg_store_keys(base, VALS, true) end
"""

HISTORY = PAGED + COMPACT_LUA + _IDS + _VALUES
"""Every function above, for ``scripts`` to compose into the scripts that need them."""
