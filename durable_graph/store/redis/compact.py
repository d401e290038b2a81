"""Redis-v13: checkpoint ids, records' heads, value fields and delta links kept compact
where Redis stores them, given back byte for byte where the scripts read them.

What ``records`` packs spells ids as 36 characters and a value's field as text
(``channel\\0version``, a leaf's as ``\\2leaf\\0`` and 43 characters of base64), in every
page member, every record's refs and every delta's link: in a chat, about a third of what
a turn stored. The scripts now store them compact and give back exactly what was sent, so
nothing above the scripts sees the difference: the bytes a signature covers, the replies
and Python's decoders are those of v12. (Two more parts of v13 are Python's:
``numbered``, a record's rest as numbers, and ``lifted``, a value's leaf digests kept in
its link only.)

* **Channel names.** A namespace numbers the channels its fields name and the serializer
  tags its values carry (``keys.CHANNEL_NAMES``: each name and a NUL, numbered from 1 in
  the order first stored, at most 254). The string only grows; it expires and is deleted
  with the namespace's ids (``ids_keys``) and every commit renews its TTL with the keys it
  writes. A name is added in the script that first stores a number for it, so no stored
  number lacks its name.
* **Ids** (``ikey`` / ``iid``, in ``history``) of a namespace created since v13 whose ids
  are canonical UUIDs (``ids_compact``, ``keys.ID_PAGES_MARK_V13``): a page member holds
  the id's 16 bytes, which sort as its text does. The first id that is no such UUID has
  the namespace's ids spelled out again (``ids_spell_out``: its pages written anew), for
  good. A bound a listing is given (``before``) is mapped to the least UUID not below it
  (``uuid_at_least``), so the ids listed are exactly those whose text sorts below it.
* **A field** (``vkey``): ``channel\\0version`` as the channel's number (a byte) and the
  version in 6 bytes (big-endian) when the version is the decimal text of an int below
  2^48 with no leading zero and the namespace has a number for the channel; a leaf's as
  byte 0 and its 32 digest bytes; anything else as byte 255 and the text.
* **A record** (``rec_compact``, where ``ids_add`` stores one; ``rec_whole``, where
  ``rec_raw`` and ``ids_before`` read one): a split one (``records.SPLIT`` or
  ``SPLIT_NUMBERED``) whose head holds only the parent and refs is stored as byte 0xC2
  (``COMPACT``), a flag (parent: 0 none, 1 stored, 2 the id before this one in its
  namespace, not stored; +4: ``SPLIT_NUMBERED``), the number of refs, the parent's 16
  bytes if stored, then each ref: a kind byte (+1: a value kept in the record follows,
  its length in a byte and its raw bytes; +2: the field is spelled out, a 2-byte length
  and its text; +4: its version is the one written out last before it) and, unless
  spelled out, the channel's number and (unless +4) the version in 6 bytes; then the
  record's rest, unchanged. A record whose parent is flagged names it
  itself (``rec_explicit``) as soon as an id is stored or deleted just before it. Any
  other record is stored as it came.
* **Values** (``val_compact`` / ``val_whole``) of a namespace created since v13
  (``vals_compact``): a value's page member is its compact field; a delta's link
  (``records.linked``: byte 3, a 4-byte length, the msgpack ``[base, depth, leaves...]``)
  is stored as a 2-byte length, the depth in a byte, then the base's and each leaf's
  compact field after its length in a byte; the serializer's tag (``tag NUL``, as
  ``&%%msgpack``) as a number of the same names. A first byte says which: 4 (a link and a
  tag), 6 (a tag), 7 (a link), 5 (a value that itself starts with 4 to 7, after it). A
  leaf's cell is kept as it came. A namespace whose values were paged before (v12's
  ``keys.VALUES_MARK``) keeps spelling them out until it is emptied.

A compact form is only stored when it gives back exactly what was sent (checked on each
write). A release older than v13 refuses a compact record loudly: Python finds msgpack
``false`` (or ``true``) with data after it ("garbled"), its scripts fail indexing a
boolean; every namespace's records are read before its values.
"""

from __future__ import annotations

__all__ = ["COMPACT", "COMPACT_LUA"]

COMPACT = b"\xc2"
"""First byte of a record stored compact (redis-v13): never a msgpack map's first byte nor
``records.SPLIT``; ``records.pack_record`` never writes it."""

COMPACT_LUA = """
-- Redis-v9 records: text in Latin-1 (each char of U+0080..U+00FF, two bytes in UTF-8)
-- back to its bytes, and bytes to that text.
local function unlatin(text)
  return (string.gsub(text, '[\\194\\195][\\128-\\191]', function(c)
    return string.char((string.byte(c, 1) - 194) * 64 + string.byte(c, 2))
  end))
end
local function latin(raw)
  return (string.gsub(raw, '[\\128-\\255]', function(c)
    local b = string.byte(c)
    if b < 192 then return '\\194' .. c end
    return '\\195' .. string.char(b - 64)
  end))
end
-- A namespace's channel names (redis-v13): list (number -> name) and num (name ->
-- number), read once a script and kept in step with what it adds.
local names_at = {}
local function rec_names(base)
  local t = names_at[base]
  if t then return t end
  t = {list = {}, num = {}}
  for name in string.gmatch(redis.call('GET', base .. @NAMES@) or '', '([^%z]*)%z') do
    t.list[#t.list + 1] = name
    t.num[name] = #t.list
  end
  names_at[base] = t
  return t
end
-- channel `name`'s number in the namespace (nil: none); `grow`: numbered now if there is
-- room (stored at once, so a number written anywhere has its name)
local function name_num(base, name, grow)
  local t = rec_names(base)
  local num = t.num[name]
  if num or not grow or #t.list >= 254 or string.find(name, '%z') then return num end
  t.list[#t.list + 1] = name
  t.num[name] = #t.list
  redis.call('APPEND', base .. @NAMES@, name .. '\\0')
  return #t.list
end
local function name_of(base, num)
  local name = rec_names(base).list[num]
  if name then return name end
  error('a compact field names channel number ' .. num .. ', which its namespace does not '
    .. 'hold (' .. base .. @NAMES@ .. '): the store is garbled; restore it from a backup '
    .. 'or delete the thread')
end
local function msg_str(s)
  local n = #s
  if n < 32 then return string.char(160 + n) .. s end
  if n < 256 then return '\\217' .. string.char(n) .. s end
  return '\\218' .. struct.pack('>I2', n) .. s
end
-- A field as {channel, version} when its version compacts, else nil.
local function field_parts(field)
  local name, digits = string.match(field, '^([^%z]*)%z(%d+)$')
  if not name or #digits > 15 or (#digits > 1 and string.sub(digits, 1, 1) == '0') then
    return nil
  end
  local n = tonumber(digits)
  if n >= 281474976710656 then return nil end
  return {name, n}
end
local function be6(n)
  local out = {}
  for i = 6, 1, -1 do out[i] = string.char(n % 256); n = math.floor(n / 256) end
  return table.concat(out)
end
local function unbe6(s, at)
  local n = 0
  for j = at, at + 5 do n = n * 256 + string.byte(s, j) end
  return string.format('%.0f', n)
end
-- a leaf's digest: URL-safe base64 (43 characters, unpadded) and its 32 bytes, a group
-- of four characters (three bytes) at a time
local B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
local b64_at, b64_ch = {}, {}
for i = 1, 64 do
  b64_at[string.byte(B64, i)] = i - 1
  b64_ch[i - 1] = string.sub(B64, i, i)
end
local function b64_raw(text)
  if #text ~= 43 then return nil end
  local out = {}
  for i = 1, 37, 4 do
    local a, b, c, d = string.byte(text, i, i + 3)
    a, b, c, d = b64_at[a], b64_at[b], b64_at[c], b64_at[d]
    if not (a and b and c and d) then return nil end
    local n = ((a * 64 + b) * 64 + c) * 64 + d
    out[#out + 1] = string.char(math.floor(n / 65536), math.floor(n / 256) % 256, n % 256)
  end
  local a, b, c = string.byte(text, 41, 43)
  a, b, c = b64_at[a], b64_at[b], b64_at[c]
  if not (a and b and c) or c % 4 ~= 0 then return nil end  -- not the canonical spelling
  local n = ((a * 64 + b) * 64 + c) / 4
  out[#out + 1] = string.char(math.floor(n / 256), n % 256)
  return table.concat(out)
end
local function raw_b64(raw)
  local out = {}
  for i = 1, 28, 3 do
    local a, b, c = string.byte(raw, i, i + 2)
    local n = (a * 256 + b) * 256 + c
    out[#out + 1] = b64_ch[math.floor(n / 262144)] .. b64_ch[math.floor(n / 4096) % 64] ..
      b64_ch[math.floor(n / 64) % 64] .. b64_ch[n % 64]
  end
  local a, b = string.byte(raw, 31, 32)
  local n = (a * 256 + b) * 4
  out[#out + 1] = b64_ch[math.floor(n / 4096)] .. b64_ch[math.floor(n / 64) % 64] ..
    b64_ch[n % 64]
  return table.concat(out)
end
-- A field's compact key (`grow`: number its channel if new), and back (vfield); each kept
-- for the rest of the script once found (a read walks many of them, some twice).
local key_at, field_at = {}, {}
local function vkey(base, g, grow)
  local memo = base .. '\\0' .. g
  local k = key_at[memo]
  if k then return k end
  if string.sub(g, 1, 6) == '\\2leaf\\0' then
    local raw = b64_raw(string.sub(g, 7))
    k = raw and '\\0' .. raw
  else
    local parts = field_parts(g)
    local num = parts and name_num(base, parts[1], grow)
    k = num and string.char(num) .. be6(parts[2])
  end
  if not k then return '\\255' .. g end  -- not kept: a later call may number it
  key_at[memo], field_at[base .. '\\0' .. k] = k, g
  return k
end
local function vfield(base, k)
  local memo = base .. '\\0' .. k
  local g = field_at[memo]
  if g then return g end
  local b = string.byte(k, 1)
  if b == 255 then return string.sub(k, 2) end
  if b == 0 then
    if #k ~= 33 then error('a compact leaf key of ' .. #k .. ' bytes in ' .. base) end
    g = '\\2leaf\\0' .. raw_b64(string.sub(k, 2))
  else
    g = name_of(base, b) .. '\\0' .. unbe6(k, 2)
  end
  field_at[memo], key_at[base .. '\\0' .. g] = g, k
  return g
end
-- The record a compact one (`rec_compact`) was made from, byte for byte; anything else
-- as it is. `prev_of`: a function giving the 16 bytes of the id before the record's in
-- its namespace (called for a record whose parent is that one: flag 2).
local function rec_whole(base, raw, prev_of)
  if type(raw) ~= 'string' or string.byte(raw, 1) ~= 194 then return raw end
  local at, parts, flag = 4, {}, string.byte(raw, 2) % 4
  if flag == 1 then
    parts[1] = '\\161P' .. msg_str(latin(string.sub(raw, 4, 19)))
    at = 20
  elseif flag == 2 then
    local prev = prev_of and prev_of()
    if not prev then
      error('a compact checkpoint record names the checkpoint before it as its parent, and '
        .. base .. ' holds none: the store is garbled; restore it from a backup or delete '
        .. 'the thread')
    end
    parts[1] = '\\161P' .. msg_str(latin(prev))
  end
  local n = string.byte(raw, 3)
  local refs, version = {}, nil
  for i = 1, n do
    local kind = string.byte(raw, at)
    local field
    if kind % 4 >= 2 then
      local len = struct.unpack('>I2', raw, at + 1)
      field = string.sub(raw, at + 3, at + 2 + len)
      at = at + 3 + len
    elseif kind >= 4 then  -- the version of the ref before
      field = name_of(base, string.byte(raw, at + 1)) .. '\\0' .. version
      at = at + 2
    else
      version = unbe6(raw, at + 2)
      field = name_of(base, string.byte(raw, at + 1)) .. '\\0' .. version
      at = at + 8
    end
    if kind % 2 == 1 then
      local len = string.byte(raw, at)
      refs[i] = '\\146' .. msg_str(field) .. msg_str(latin(string.sub(raw, at + 1, at + len)))
      at = at + 1 + len
    else
      refs[i] = msg_str(field)
    end
  end
  local arr = n < 16 and string.char(144 + n) or '\\220' .. struct.pack('>I2', n)
  local head = string.char(128 + #parts + 1) .. table.concat(parts) .. '\\161r' .. arr ..
    table.concat(refs)
  local first = string.byte(raw, 2) >= 4 and '\\195' or '\\193'
  return first .. struct.pack('>I2', #head) .. head .. string.sub(raw, at)
end
-- The record `raw` as stored (COMPACT), or `raw` itself when it does not compact.
-- `prev`: the 16 bytes of the id before the record's in its namespace, if any (a parent
-- that is that one is flagged, 2, not stored).
local function rec_compact(base, raw, prev)
  local first = type(raw) == 'string' and string.byte(raw, 1)
  if first ~= 193 and first ~= 195 then return raw end
  local size = struct.unpack('>I2', raw, 2)
  local ok, head = pcall(cmsgpack.unpack, string.sub(raw, 4, 3 + size))
  if not ok or type(head) ~= 'table' or type(head['r']) ~= 'table' then return raw end
  for k in pairs(head) do if k ~= 'P' and k ~= 'r' then return raw end end
  local refs, parent = head['r'], head['P']
  if #refs > 255 or (parent ~= nil and type(parent) ~= 'string') then return raw end
  parent = parent and unlatin(parent)
  if parent and #parent ~= 16 then return raw end
  local out = {'\\194', parent and '\\1' or '\\0', string.char(#refs), parent or ''}
  local last = nil  -- the version last written out
  if parent and parent == prev then out[2], out[4] = '\\2', '' end
  if first == 195 then out[2] = string.char(string.byte(out[2]) + 4) end
  for _, r in ipairs(refs) do
    local field, kept = r, nil
    if type(r) == 'table' then field, kept = r[1], r[2] end
    if type(field) ~= 'string' or (kept ~= nil and type(kept) ~= 'string') then return raw end
    kept = kept and unlatin(kept)
    if kept and #kept > 255 then return raw end
    local parts = field_parts(field)
    local num = parts and name_num(base, parts[1], true)
    local kind = kept and 1 or 0
    if num and parts[2] == last then  -- the version of the ref before: not again
      out[#out + 1] = string.char(kind + 4, num)
    elseif num then
      out[#out + 1] = string.char(kind, num) .. be6(parts[2])
      last = parts[2]
    else
      out[#out + 1] = string.char(kind + 2) .. struct.pack('>I2', #field) .. field
    end
    if kept then out[#out + 1] = string.char(#kept) .. kept end
  end
  out[#out + 1] = string.sub(raw, 4 + size)
  local stored = table.concat(out)
  if rec_whole(base, stored, function() return prev end) ~= raw then return raw end
  return stored
end
-- A compact record whose parent is flagged as the id before it (2), with that parent
-- (16 bytes) stored instead (1); anything else: nil, nothing to change.
local function rec_explicit(stored, parent)
  local flag = type(stored) == 'string' and string.byte(stored, 1) == 194 and
    string.byte(stored, 2)
  if flag ~= 2 and flag ~= 6 then return nil end
  return '\\194' .. string.char(flag - 1) .. string.sub(stored, 3, 3) .. parent ..
    string.sub(stored, 4)
end
-- Checkpoint ids (redis-v13): a canonical UUID text (lowercase) as its 16 bytes, in a
-- namespace whose ids are all such (ids_compact), and back.
local function uuid_raw(id)
  if #id ~= 36 or string.find(id, '[^0-9a-f-]') or not string.match(id,
      '^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$') then
    return nil
  end
  return (string.gsub(string.gsub(id, '%-', ''), '%x%x', function(h)
    return string.char(tonumber(h, 16))
  end))
end
local function raw_uuid(k)
  local hex = string.gsub(k, '.', function(c) return string.format('%02x', string.byte(c)) end)
  return string.sub(hex, 1, 8) .. '-' .. string.sub(hex, 9, 12) .. '-' ..
    string.sub(hex, 13, 16) .. '-' .. string.sub(hex, 17, 20) .. '-' .. string.sub(hex, 21)
end
-- The least canonical UUID text not below text `t` (nil: none), so that an id sorts below
-- `t` exactly when its 16 bytes sort below that one's: `t` where it is one, then (where it
-- stops being one) the next character that may stand there, or its prefix's successor,
-- and zeros after. Bytes compared as bytes (never Lua's `<` on text: the locale's).
local DIGITS = '0123456789abcdef'
local function uuid_at_least(t)
  local out = {}
  local function dash(i) return i == 9 or i == 14 or i == 19 or i == 24 end
  local function fill(from)
    for i = from, 36 do out[i] = dash(i) and '-' or '0' end
    return table.concat(out)
  end
  local function bump(i)  -- the prefix out[1..i] to its successor, then zeros
    for j = i, 1, -1 do
      local at = not dash(j) and string.find(DIGITS, out[j], 1, true)
      if at and at < 16 then
        out[j] = string.sub(DIGITS, at + 1, at + 1)
        return fill(j + 1)
      end
    end
    return nil
  end
  for i = 1, 36 do
    local c = string.byte(t, i)
    if not c then return fill(i) end
    if dash(i) then
      if c < 45 then return fill(i) end
      if c > 45 then return bump(i - 1) end
      out[i] = '-'
    else
      local above = nil
      for j = 1, 16 do
        local d = string.byte(DIGITS, j)
        if d == c then above = false; break end
        if d > c then above = string.char(d); break end
      end
      if above == false then out[i] = string.char(c)
      elseif above then out[i] = above; return fill(i + 1)
      else return bump(i - 1) end
    end
  end
  if #t > 36 then return bump(36) end
  return table.concat(out)
end
local function ids_compact(base) return fam_compact(base, IDS) end
local function vals_compact(base) return fam_compact(base, VALS) end
-- The namespace's ids spelled out, its pages written anew (their records as stored);
-- returns the keys written.
local function ids_spell_out(base)
  local moved, written = {}, {}
  for _, name in ipairs(redis.call('ZRANGE', pg_dir(base, IDS), 0, -1)) do
    local ms = redis.call('ZRANGE', pg_page(base, IDS, name), 0, -1)
    local recs = pg_records(base, IDS, name, ms)
    for i, m in ipairs(ms) do
      local k = m_key(m)
      local rec = recs[i]
      if not rec then
        rec = redis.call('GET', pg_own(base, IDS, k))
        redis.call('DEL', pg_own(base, IDS, k))
      end
      moved[#moved + 1] = {raw_uuid(k), rec}
    end
    redis.call('DEL', pg_page(base, IDS, name), pg_heap(base, IDS, name))
  end
  redis.call('DEL', pg_dir(base, IDS), base .. IDS.dir, base .. IDS.mark)
  compact_of[base .. IDS.mark] = false
  for _, e in ipairs(moved) do
    for _, key in ipairs(pg_add(base, IDS, e[1], e[2])) do written[#written + 1] = key end
  end
  return written
end
-- A compact value's parts, kinds 4 to 7 (val_compact): 4, 7: a link (its length in 2
-- bytes, the depth, then the base's and each leaf's key after its length in a byte); 4, 6:
-- the serializer's tag as its number (a byte) where `tag NUL` stood.
local function val_whole(base, k, v)
  if not v or string.byte(k, 1) == 0 then return v end
  local b = string.byte(v, 1)
  if b == 5 then return string.sub(v, 2) end
  if b < 4 or b > 7 then return v end
  local at, link = 2, ''
  if b == 4 or b == 7 then
    local stop = 3 + struct.unpack('>I2', v, 2)
    local depth, items = string.byte(v, 4), {}
    at = 5
    while at <= stop do
      local n = string.byte(v, at)
      items[#items + 1] = msg_str(n == 0 and '' or vfield(base, string.sub(v, at + 1, at + n)))
      at = at + 1 + n
    end
    local count = #items + 1
    local packed = (count < 16 and string.char(144 + count) or '\\220' ..
      struct.pack('>I2', count)) .. items[1] .. (depth < 128 and string.char(depth) or
      '\\204' .. string.char(depth)) .. table.concat(items, '', 2)
    link = '\\3' .. struct.pack('>I4', #packed) .. packed
  end
  if b == 4 or b == 6 then
    return link .. name_of(base, string.byte(v, at)) .. '\\0' .. string.sub(v, at + 1)
  end
  return link .. string.sub(v, at)
end
-- Value `v` of compact key `k` as stored: a delta's link compact, the serializer's tag
-- numbered (kinds 4 to 7, val_whole); a value that starts with byte 4 to 7 itself behind
-- byte 5; a leaf as it came.
local function val_compact(base, k, v)
  local b = string.byte(v, 1)
  if string.byte(k, 1) == 0 or not b then return v end
  if b >= 4 and b <= 7 then return '\\5' .. v end
  local link, rest = nil, v
  if b == 3 then
    local len = struct.unpack('>I4', v, 2)
    local ok, l = pcall(cmsgpack.unpack, string.sub(v, 6, 5 + len))
    if not ok or type(l) ~= 'table' or #l < 2 or type(l[2]) ~= 'number'
        or l[2] < 0 or l[2] > 255 or l[2] % 1 ~= 0 then
      return v
    end
    local parts = {string.char(l[2])}
    for i, g in ipairs(l) do
      if i ~= 2 then
        if type(g) ~= 'string' then return v end
        local key = g == '' and '' or vkey(base, g, true)
        if #key > 255 then return v end
        parts[#parts + 1] = string.char(#key) .. key
      end
    end
    link = table.concat(parts)
    if #link > 65535 then return v end
    rest = string.sub(v, 6 + len)
  end
  local tag, data = string.match(rest, '^([^%z]+)%z(.*)$')
  local num = tag and #tag <= 64 and name_num(base, tag, true)
  local kind = link and (num and 4 or 7) or 6
  if not link and not num then return v end
  local stored = string.char(kind) .. (link and struct.pack('>I2', #link) .. link or '') ..
    (num and string.char(num) .. data or rest)
  if val_whole(base, k, stored) ~= v then return v end
  return stored
end
"""
