"""Lua scripts for every multi-key update, kept beside the key layout.

Each script touches the keys of one thread only (one hash tag, so one slot on Redis
Cluster; ``RECORD_STATUS``, ``CLOSE_RUN`` and ``LOAD_RUNNING`` also move the thread in the
status index, so they are used on a single Redis only, and compose its shard keys from the
record key rather than be sent them) and runs atomically: Redis executes a script to the
end before it serves anything else, and a script that fails at a Redis error aborts before
it writes anything (every check comes before the first write). ``PUT_STEP`` is the one
exception: it runs a sequence of ``PUT_WRITES``/``PUT`` calls, each checking its own fence
(and the rest) before its own writes, so a later call refused, or failing at a Redis
error, leaves an earlier call's writes stored, as when they were separate scripts.
Checkpoint, write and index keys that depend on a checkpoint id are composed as
``<ns base> .. suffix .. id`` from a namespace base passed in by Python (or read from the
thread's namespace hash); the suffixes come from ``keys`` so the layout has one source. On
a single Redis ``PUT`` (alone or in ``PUT_STEP``) and ``LOAD_RUNNING`` are sent no keys at
all: they compose the thread's (``{P:T}`` is its namespace base up to the last ``:n:``) too.

Replies are arrays whose first element says what happened (``ok``, ``fenced``,
``missing``), because Lua error replies would lose the structured detail.
"""

from __future__ import annotations

from typing import get_args

from durable_graph.store.base import ThreadStatus
from durable_graph.store.redis.history import HISTORY, PAGE_BYTES, PAGE_FILL, RECORD_IN_PAGE_MAX
from durable_graph.store.redis.keys import (
    BLOBS,
    CHAIN,
    CHANNEL_NAMES,
    CHECKPOINT,
    ESCAPES,
    ID_DIR_V13,
    ID_PAGE,
    ID_PAGE_MAX,
    ID_PAGES,
    ID_PAGES_MARK,
    ID_PAGES_MARK_V13,
    INDEX,
    LEASE,
    NAMESPACE,
    NAMESPACES,
    PAGE_RECORDS,
    RECORD,
    STATUS_TAG,
    VALUE,
    VALUE_DIR_V13,
    VALUE_HEAP,
    VALUE_PAGE,
    VALUE_PAGES,
    VALUES_MARK,
    VALUES_MARK_V13,
    WRITES,
)

__all__ = [
    "ACQUIRE",
    "ACQUIRE_FUNCTION",
    "AS_SENT",
    "CLEAR_OUTCOMES",
    "CLOSE_RUN",
    "DELETE_THREAD",
    "DROP",
    "FINISHED",
    "FINISHED_FUNCTION",
    "IDS",
    "LOAD",
    "LOAD_RUNNING",
    "OF_PARENT",
    "PAGE",
    "PRUNE",
    "PUT",
    "PUT_HEAD",
    "PUT_STEP",
    "PUT_WRITES",
    "PUT_WRITES_FUNCTION",
    "RECORD_STATUS",
    "RELEASE",
    "RENEW",
    "RENEW_FUNCTION",
    "SERVER_NOW",
    "SET_TTL",
    "STATUS_INDEX",
    "SUSPEND",
    "UNINDEX_GONE",
    "VALUE_LINK",
]


def _lua(source: str) -> str:
    """Substitute the key suffixes of ``keys`` into a script."""
    suffixes = {"@IDX@": INDEX, "@BLOBS@": BLOBS, "@CP@": CHECKPOINT, "@W@": WRITES,
                "@REC@": RECORD, "@LEASE@": LEASE, "@NSMAP@": NAMESPACES, "@NS@": NAMESPACE,
                "@PAGES@": ID_PAGES, "@PAGE@": ID_PAGE, "@RECS@": PAGE_RECORDS,
                "@VPAGES@": VALUE_PAGES, "@VPAGE@": VALUE_PAGE, "@VHEAP@": VALUE_HEAP,
                "@VOWN@": VALUE, "@NAMES@": CHANNEL_NAMES,
                "@IDIR@": ID_DIR_V13, "@VDIR@": VALUE_DIR_V13}
    for name, value in suffixes.items():
        source = source.replace(name, f"'{value}'")
    source = source.replace("@PAGE_MAX@", str(ID_PAGE_MAX))
    source = source.replace("@RECORD_IN_PAGE_MAX@", str(RECORD_IN_PAGE_MAX))
    source = source.replace("@PAGE_BYTES@", str(PAGE_BYTES))
    source = source.replace("@PAGE_FILL@", str(PAGE_FILL))
    source = source.replace("@PAGES_MARK@", f"'{ID_PAGES_MARK}'")
    source = source.replace("@PAGES_MARK_V13@", f"'{ID_PAGES_MARK_V13}'")
    source = source.replace("@VALUES_MARK@", f"'{VALUES_MARK}'")
    source = source.replace("@VALUES_MARK_V13@", f"'{VALUES_MARK_V13}'")
    return source.replace("@CHAIN@", "'" + "".join(f"\\{ord(c)}" for c in CHAIN) + "'")


# A checkpoint's blob fields: its own values (`refs`, signed with the record) and,
# walked server-side, the delta chain of each: the link (base field, '' for none, then
# its depth and the leaves it refers to: `leafblobs`) heads the value itself since
# redis-v9 (`records.linked`: byte 3, a 4-byte length, the msgpack link), and was a
# chain field beside it before. A ref {field, value} is a value kept in the record
# (redis-v9), no field. `seen` spans calls, so a walk stops where an earlier one already
# went; `vals` (optional) gets the value of each field the walk read.
_REFS = """
local function head_link(v)
  if string.byte(v, 1) ~= 3 then return nil end
  return cmsgpack.unpack(string.sub(v, 6, 5 + struct.unpack('>I4', v, 2)))
end
local function link_of(base, g, vals)
  local v = val_get(base, g)
  if vals and v then vals[g] = v end
  local head = v and head_link(v)
  if head then return head end
  if not vals_hash(base) then return nil end
  local link = redis.call('HGET', base .. @BLOBS@, @CHAIN@ .. g)
  if link then return cmsgpack.unpack(link) end
  return nil
end
-- The parent id of a packed record (its 16 UUID bytes, `P`, or text); field -> stored
-- bytes of each value the record of `parent` keeps in its refs (and that of the checkpoint
-- it replaces, `replaced`, if any: exit durability's step before).
local function record_parent(raw)
  local rec = rec_map(raw)
  if not rec['P'] then return rec['p'] or rec['parent'] or '' end
  return raw_uuid(unlatin(rec['P']))
end
local function parent_kept(base, parent, replaced)
  local out = {}
  for _, id in ipairs({replaced, parent}) do
    if id ~= '' then
      for _, f in ipairs(rec_field(rec_raw(base, id), 'refs') or {}) do
        if type(f) ~= 'string' then out[f[1]] = unlatin(f[2]) end
      end
    end
  end
  return out
end
local function cp_refs(base, raw, seen, vals)
  local out = {}
  local refs = rec_field(raw, 'refs')
  if not refs then return out end
  local function add(g)
    if seen[g] then return false end
    seen[g] = true
    out[#out + 1] = g
    return true
  end
  for _, f in ipairs(refs) do
    local g = f
    if type(f) ~= 'string' then g = nil end
    while g and add(g) do
      local link = link_of(base, g, vals)
      g = nil
      if link then
        for i = 3, #link do add(link[i]) end
        if link[1] ~= '' then g = link[1] end
      end
    end
  end
  return out
end
"""

# Deleting checkpoints, shared by PUT, PRUNE and DROP: their records and writes go, and
# every blob they referenced (values and delta-chain links) that no kept checkpoint needs.
_DROP_IDS = _REFS + """
local function drop_refs(base, keep_ids, gone)
  local live, doomed = {}, {}
  for _, id in ipairs(keep_ids) do cp_refs(base, rec_raw(base, id), live) end
  for _, id in ipairs(gone) do
    for _, f in ipairs(cp_refs(base, rec_raw(base, id), live)) do doomed[#doomed + 1] = f end
  end
  val_del(base, doomed)
  for _, id in ipairs(gone) do redis.call('UNLINK', cp_key(base, id), base .. @W@ .. id) end
end
-- checkpoints `gone` (ids the namespace has) and what only they need go
local function drop_ids(base, gone)
  local going, keep = {}, {}
  for _, id in ipairs(gone) do going[id] = true end
  for _, id in ipairs(ids_all(base)) do if not going[id] then keep[#keep + 1] = id end end
  drop_refs(base, keep, gone)
  ids_rem(base, gone)
end
"""

# The fence check shared by both commit scripts: the token must equal the lease
# generation now, else the committer's lease was taken over and it must stop.
_FENCE = """
local function fence_ok(lease, fence)
  if fence == '' then return true, nil end
  local gen = redis.call('HGET', lease, 'gen') or '0'
  return gen == fence, gen
end
-- A thread's TTL: its own (set_ttl), else the committing saver's `default`, else
-- ('' from a worker's saver) the policy its producer's saver recorded on it.
local function ttl_of(own, policy, default)
  if own then return tonumber(own) end
  if default == '' then default = policy or '0' end
  return tonumber(default)
end
local function thread_ttl(rec, default)
  local f = redis.call('HMGET', rec, 'ttl', 'policy_ttl')
  return ttl_of(f[1], f[2], default)
end
"""

# A commit's retention policy: a saver with one ('0' = none) records it on the
# thread, so the workers' commits ('' = the thread's) apply the same policy (read back
# with the thread's other fields, in one HMGET). At most one HDEL and one HSET.
_POLICY = """
local function policy_record(rec, ttl_arg, keep_arg)
  if ttl_arg == '' then return end
  local gone, set = {}, {}
  for _, fv in ipairs({{'policy_ttl', ttl_arg}, {'keep_last', keep_arg}}) do
    if fv[2] == '0' then gone[#gone + 1] = fv[1]
    else set[#set + 1] = fv[1]; set[#set + 1] = fv[2] end
  end
  if #gone > 0 then redis.call('HDEL', rec, unpack(gone)) end
  if #set > 0 then redis.call('HSET', rec, unpack(set)) end
end
"""

# A thread's TTL on every key of its history: each namespace's (from the thread's
# namespace hash) index, values, checkpoints and their writes (SET_TTL, and PUT when a
# thread's TTL is dropped). Every such key shares the thread's hash tag.
_THREAD_EXPIRE = """
local function expire_key(key, ttl)
  if ttl > 0 then return redis.call('EXPIRE', key, ttl) end
  return redis.call('PERSIST', key)
end
local function thread_expire(nsmap, ttl)
  for _, base in ipairs(redis.call('HVALS', nsmap)) do
    for _, id in ipairs(ids_all(base)) do
      expire_key(cp_key(base, id), ttl); expire_key(base .. @W@ .. id, ttl)
    end
    for _, key in ipairs(ids_keys(base)) do expire_key(key, ttl) end
    for _, key in ipairs(val_keys(base)) do expire_key(key, ttl) end
  end
end
"""

_ISO_FUNCTION = """
-- t (microseconds since the epoch, as digits) as Python's datetime.isoformat() gives
-- it for a UTC time: 'YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00' (civil date from the day
-- count as in H. Hinnant's days_from_civil inverse; digits split as text, no rounding).
local function iso_utc(t)
  local secs, us = tonumber(string.sub(t, 1, -7)), tonumber(string.sub(t, -6))
  local days = math.floor(secs / 86400)
  local s = secs - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
                          - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  local text = string.format('%04d-%02d-%02dT%02d:%02d:%02d', y, m, d,
                             math.floor(s / 3600), math.floor(s % 3600 / 60), s % 60)
  if us > 0 then text = text .. string.format('.%06d', us) end
  return text .. '+00:00'
end
"""

# A namespace key base's thread tag ({P:T}): the escaped namespace holds no ':', so the
# last ':n:' of the base ends it. PUT's keys composed from its namespace key base and
# checkpoint id (single Redis: not sent), with the suffixes of ``keys``, in KEYS's order.
_NS_TAG = """
local function ns_tag(base)
  local tag = string.match(base, '^(.*)' .. @NS@ .. '[^:]*$')
  if not tag then error('not a namespace key base: ' .. base) end
  return tag
end
"""

_PUT_KEYS = _NS_TAG + """
local function put_keys(base, id)
  local tag = ns_tag(base)
  return {tag .. @REC@, tag .. @LEASE@, tag .. @NSMAP@, base .. @IDX@, base .. @BLOBS@,
          base .. @CP@ .. id}
end
"""

# The head's applied and extends naming the checkpoint's parent are sent as this.
OF_PARENT = "^"

PUT_HEAD = ("applied", "extends", "default_ttl", "keep_last", "fence", "ns", "expect", "drop",
            "keep")
"""The PUT arguments sent packed in its head (a msgpack array of text, trailing '' left
out), most often set first: a separate argument each cost ~6 bytes of framing, ~40 of the
~500 a commit sends."""

_PUT = """
-- KEYS: rec, lease, nsmap, idx, blobs, cp (Redis Cluster); or none (a single Redis: they
--       are composed from ns_base and id, put_keys)
-- ARGV: id, ns_base, updated_at (microseconds since the epoch, stored as iso_utc text),
--       head, the packed checkpoint record, m, blob field/value * m/2, r, required blob
--       fields * r, carried blob fields...
-- head: msgpack [applied, extends, default_ttl, keep_last, fence, ns, expect, drop, keep]
--       (@PUT_HEAD@), trailing ones left out ('')
-- required: fields the checkpoint reads that must be stored already; carried: those of
-- values it reads by version only (an empty channel has none). One its parent's record
-- keeps (redis-v9, {field, value} in its refs), or the record of the checkpoint it
-- replaces (`drop`), is written out as a field, so it outlives that record; a required
-- one found in neither place is named ('missing').
-- default_ttl, keep_last: the saver's retention policy ('' and '': the thread's).
-- extends: '' or the parent an embedded loop's commit extends: if it is gone (the
-- thread expired or was deleted under a running step), nothing is written ('gone').
-- expect: '' or the id that must be the newest checkpoint now (a step's committer
-- must still be the only one). drop: '' or a checkpoint this commit replaces (exit
-- durability); its values go unless this checkpoint or `keep` reads them.
-- applied: '' or the parent whose step this checkpoint applied: while it is the
-- newest, its ordinary writes go (their values live on in this checkpoint); its
-- outcomes (negative slots: errors, interrupts, resume values) stay.
-- applied and extends: @OF_PARENT@ for the record's parent (its id is not sent twice).
local id, base = ARGV[1], ARGV[2]
local head = cmsgpack.unpack(ARGV[4])
local function at(i) return head[i] or '' end
local default_ttl, keep_last, fence, ns = at(3), at(4), at(5), at(6)
local expect, drop, keep = at(7), at(8), at(9)
local K = KEYS
if #K == 0 then K = put_keys(base, id) end
local cp_from = 5
local parent = nil  -- the record's parent id, read from it once when needed
local function parent_id()
  if parent == nil then parent = record_parent(ARGV[cp_from]) end
  return parent
end
local function of_parent(v)
  if v == @OF_PARENT@ then return parent_id() end
  return v
end
local applied, extends = of_parent(at(1)), of_parent(at(2))
local ok, gen = fence_ok(K[2], fence)
if not ok then return {'fenced', gen} end
if expect ~= '' then
  local newest = ids_newest(base) or ''
  if newest ~= expect then return {'conflict', newest} end
end
if extends ~= '' and not rec_exists(base, extends) then
  return {'gone'}
end
local nblob = tonumber(ARGV[cp_from + 1])
local blob_from = cp_from + 2
local req_from = blob_from + nblob + 1
local carried_from = req_from + tonumber(ARGV[blob_from + nblob])
-- what the new values' links name (a delta's base, the leaves it refers to) and this
-- commit does not send is required too: read here, not sent in `required`
local seen, need, required = {}, {}, {}
for j = blob_from, blob_from + nblob - 1, 2 do seen[ARGV[j]] = true end
local function want(g, is_required)
  if g ~= '' and not seen[g] then
    seen[g] = true
    need[#need + 1], required[g] = g, is_required
  end
end
for j = blob_from, blob_from + nblob - 1, 2 do
  local link = string.sub(ARGV[j], 1, #@LEAF@) ~= @LEAF@ and head_link(ARGV[j + 1])
  if link then
    for i, g in ipairs(link) do if i ~= 2 then want(g, true) end end
  end
end
for j = req_from, #ARGV do want(ARGV[j], j < carried_from) end
local missing, found, kept = {'missing'}, {}, nil
for _, g in ipairs(need) do
  if not val_exists(base, g) then
    if kept == nil then kept = parent_kept(base, parent_id(), drop) end
    local value = kept[g]
    if value then found[#found + 1] = g; found[#found + 1] = value
    elseif required[g] then missing[#missing + 1] = g end
  end
end
if #missing > 1 then return missing end
if applied ~= '' and ids_newest(base) == applied then
  local writes = base .. @W@ .. applied
  for _, f in ipairs(redis.call('HKEYS', writes)) do
    if not string.find(f, ':%-%d+$') then redis.call('HDEL', writes, f) end
  end
end
local index_keys = ids_add(base, id, ARGV[cp_from])
local function put_value(g, v)
  for _, key in ipairs(val_put(base, g, v)) do index_keys[#index_keys + 1] = key end
end
for j = blob_from, blob_from + nblob - 1, 2 do put_value(ARGV[j], ARGV[j + 1]) end
for j = 1, #found, 2 do put_value(found[j], found[j + 1]) end
redis.call('HSET', K[3], ns, base)
redis.call('HSET', K[1], 'last_checkpoint_id', id, 'last_checkpoint_ns', ns,
           'updated_at', iso_utc(ARGV[3]))
if drop ~= '' and drop ~= keep and drop ~= id then
  drop_refs(base, {id, keep}, {drop})
  ids_rem(base, {drop})
end
-- keep_last: the newest N checkpoints of the namespace stay (and a run's start, `keep`)
policy_record(K[1], default_ttl, keep_last)
local f = redis.call('HMGET', K[1], 'ttl', 'policy_ttl', 'keep_last', 'stop')
local newest_kept = tonumber(f[3] or '0')
if newest_kept > 0 then
  local gone = {}
  for _, old in ipairs(ids_beyond(base, newest_kept)) do
    if old ~= keep then gone[#gone + 1] = old end
  end
  if #gone > 0 then drop_ids(base, gone) end
end
local ttl = ttl_of(f[1], f[2], default_ttl)
-- no TTL now: what an earlier policy set must not expire the thread; if it had one, its
-- history loses it too
local had = 0
for _, key in ipairs({K[1], K[2], K[3], K[5], unpack(index_keys)}) do
  had = had + expire_key(key, ttl)
end
if ttl == 0 and had > 0 then thread_expire(K[3], 0) end
-- and the run asked to stop at this step boundary, if any (``request_stop``)
return {'ok', f[4] or ''}
""".replace("@OF_PARENT@", f"'{OF_PARENT}'").replace("@PUT_HEAD@", ", ".join(PUT_HEAD)).replace(
    "@LEAF@", "'\\2leaf\\0'")

PUT = _lua(
    HISTORY + _FENCE + _POLICY + _DROP_IDS + _THREAD_EXPIRE + _ISO_FUNCTION + _PUT_KEYS + _PUT)

_PUT_WRITES = """
-- KEYS: lease, writes, rec, cp, idx[, waits, wake]
-- ARGV: fence, default_ttl, member, whole, checkpoint id, (field, replace, value)...
-- With `member` (a finished @task call), it also leaves its caller's waits set;
-- the write that empties the set takes the caller's wake job and returns it, so
-- exactly one finishing call replays the caller.
local ok, gen = fence_ok(KEYS[1], ARGV[1])
if not ok then return {'fenced', gen} end
-- a checkpoint that is gone while a newer one is indexed was pruned or deleted: a
-- late write to it (a duplicate of a task whose step was committed) would be an
-- orphan nothing reads or deletes, so it is not stored ('gone'). A checkpoint not
-- stored yet is newer than every indexed one: its writes are stored.
local base = string.sub(KEYS[5], 1, -#@IDX@ - 1)
if not rec_exists(base, ARGV[5]) and lex_after(ids_newest(base) or '', ARGV[5]) then
  return {'gone'}
end
-- whole = '1' (distributed jobs): a task's ordinary writes come from one execution
-- only; once its first slot exists, a second execution (a redelivery) adds none
local first = nil
for j = 6, #ARGV, 3 do
  if ARGV[j + 1] ~= '1' then
    if first == nil then
      first = ARGV[4] ~= '1' or redis.call('HEXISTS', KEYS[2], ARGV[j]) == 0
    end
    if first then redis.call('HSETNX', KEYS[2], ARGV[j], ARGV[j + 2]) end
  else
    redis.call('HSET', KEYS[2], ARGV[j], ARGV[j + 2])
  end
end
local ttl = thread_ttl(KEYS[3], ARGV[2])
if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
if ARGV[3] ~= '' and redis.call('SREM', KEYS[6], ARGV[3]) == 1
    and redis.call('SCARD', KEYS[6]) == 0 then
  local wake = redis.call('GET', KEYS[7])
  if wake then
    redis.call('DEL', KEYS[7])
    return {'ok', wake}
  end
end
return {'ok'}
"""

PUT_WRITES = _lua(HISTORY + _FENCE + _PUT_WRITES)

PUT_WRITES_FUNCTION = _lua(
    HISTORY + _FENCE + "local function put_writes(KEYS, ARGV)" + _PUT_WRITES + "end\n")
"""``PUT_WRITES`` as a Lua function ``put_writes(KEYS, ARGV)``, for a script that does
more in the same call (``job_scripts.PUT_CALL_WRITES``)."""

PUT_STEP = _lua(
    PUT_WRITES_FUNCTION + _POLICY + _DROP_IDS + _THREAD_EXPIRE + _ISO_FUNCTION + _PUT_KEYS
    + "local function put(KEYS, ARGV)"
    + _PUT
    + """end
-- KEYS: each call's keys, in order.  ARGV: the calls' heads, msgpack [kind ('w' for
-- PUT_WRITES, 'p' for PUT), how many keys, how many arguments] * n (one argument, not
-- 1 + 3n), then each call's arguments, in order.  Reply: each call's reply, in order.
-- A step's commit with what goes with it in one script, not one each (a distributed
-- step's last task's writes then the commit; a producer's input checkpoint then its first
-- step's): the same effects in the same order, each call run whatever the one before
-- replied.
local run = {w = put_writes, p = put}
local heads = cmsgpack.unpack(ARGV[1])
local k, a = 0, 1
local out = {}
for c = 1, #heads / 3 do
  local nk, na = heads[3 * c - 1], heads[3 * c]
  local ck, ca = {}, {}
  for i = 1, nk do ck[i] = KEYS[k + i] end
  for i = 1, na do ca[i] = ARGV[a + i] end
  k, a = k + nk, a + na
  out[c] = run[heads[3 * c - 2]](ck, ca)
end
return out
""")
"""``PUT_WRITES`` and ``PUT`` calls in one script (see ``RedisSaver._one_script``)."""

# A task (or call) counts as finished once its first write slot, its error slot
# or its interrupt slot exists (a task with no writes stores a NO_WRITES marker).
FINISHED_FUNCTION = """
local function finished(writes, id)
  return redis.call('HEXISTS', writes, id .. ':0') == 1
      or redis.call('HEXISTS', writes, id .. ':-1') == 1
      or redis.call('HEXISTS', writes, id .. ':-3') == 1
end
"""
"""``finished(writes, id)``: whether task ``id`` has an outcome stored in ``writes``."""

CLEAR_OUTCOMES = (
    _FENCE
    + """
-- KEYS: lease, writes    ARGV: fence, slots...   (fenced: a stale job clears nothing)
if not fence_ok(KEYS[1], ARGV[1]) then return 'fenced' end
if #ARGV > 1 then redis.call('HDEL', KEYS[2], unpack(ARGV, 2)) end
return 'ok'
"""
)

AS_SENT = _lua(HISTORY + """
-- For tools that read the stored keys themselves (tests/redis_records.py): what the
-- saver sent, from what a namespace holds (redis-v13 keeps parts compact: `compact`).
-- KEYS: the namespace's channel names    ARGV: its key base, then
--   'record', a checkpoint id         -> its record as packed (rec_raw), false: none
--   'values', (key, stored bytes)...  -> (field, value as sent)... of a value page's keys
--   'keys', field...                  -> the key each field is stored at
local base, what, out = ARGV[1], ARGV[2], {}
if what == 'record' then return rec_raw(base, ARGV[3]) or false end
for i = 3, #ARGV, (what == 'values') and 2 or 1 do
  if what == 'values' then
    local k = ARGV[i]
    out[#out + 1] = vals_compact(base) and vfield(base, k) or k
    out[#out + 1] = val_sent(base, k, ARGV[i + 1])
  else
    out[#out + 1] = val_key(base, ARGV[i])
  end
end
return out
""")

VALUE_LINK = _lua(HISTORY + _REFS + """
-- KEYS: blobs    ARGV: a value's field
-- Reply: false when no value is stored there, else its link ('' for a value without one):
-- what a delta's depth is read from, without sending the value back (link_of).
local base = string.sub(KEYS[1], 1, -#@BLOBS@ - 1)
if not val_exists(base, ARGV[1]) then return false end
local link = link_of(base, ARGV[1], nil)
if link then return cmsgpack.pack(link) end
return ''
""")

FINISHED = (
    FINISHED_FUNCTION
    + """
-- KEYS: writes    ARGV: task ids.  Reply: the ids that finished.
local out = {}
for _, id in ipairs(ARGV) do
  if finished(KEYS[1], id) then out[#out + 1] = id end
end
return out
"""
)

SUSPEND = (
    FINISHED_FUNCTION
    + _FENCE
    + """
-- KEYS: writes, waits, wake, lease    ARGV: wake job, ttl seconds, fence, call ids...
-- Registers a suspended task's wait on the calls that have not finished yet.
-- Reply 'ready' when all have (replay now), else 'waiting' (a call will wake it);
-- 'fenced' from a job whose lease was taken over (it must not replace the wake).
if not fence_ok(KEYS[4], ARGV[3]) then return 'fenced' end
redis.call('DEL', KEYS[2])
for j = 4, #ARGV do
  if not finished(KEYS[1], ARGV[j]) then redis.call('SADD', KEYS[2], ARGV[j]) end
end
if redis.call('SCARD', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[3])
  return 'ready'
end
redis.call('SET', KEYS[3], ARGV[1], 'EX', tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
return 'waiting'
"""
)

_LOAD_FUNCTION = HISTORY + _REFS + """
-- Checkpoints `ids` (a table; empty: the latest) of the namespace at key base `base`.
-- Reply: one {id, cp record, blob values, write fields, blob fields} per checkpoint
-- (the record packed, or the fields of one written as a hash)
-- found; the blob fields are its values' and their delta chains' (cp_refs).
local function load(base, ids)
  if #ids == 0 then ids = {ids_newest(base)} end
  local out = {}
  for _, id in ipairs(ids) do
    local cp = rec_raw(base, id)
    if cp then
      local vals, rest = {}, {}
      local refs = cp_refs(base, cp, {}, vals)
      for _, f in ipairs(refs) do if vals[f] == nil then rest[#rest + 1] = f end end
      local got = val_mget(base, rest)
      for i, f in ipairs(rest) do vals[f] = got[i] end
      local blobs = {}
      for i, f in ipairs(refs) do blobs[i] = vals[f] or false end
      out[#out + 1] = {id, cp, blobs, redis.call('HGETALL', base .. @W@ .. id), refs}
    end
  end
  return out
end
"""

LOAD = _lua(_LOAD_FUNCTION + """
-- KEYS: idx, blobs    ARGV: ns_base, ids... (none: the latest checkpoint)
-- Reply: load's.
return load(ARGV[1], {unpack(ARGV, 2)})
""")

PAGE = _lua(
    HISTORY
    + """
-- KEYS: idx    ARGV: ns_base, max (lex bound), count
-- Reply: id, metadata, id, metadata, ... newest first; lets list() filter cheaply.
-- The metadata JSON text of a record that has it, else (redis-v9, metadata packed in
-- the record) the packed record itself (records.page_metadata reads either).
local kept = {}
local ids = ids_before(ARGV[1], ARGV[2], tonumber(ARGV[3]), kept)
local out = {}
for _, id in ipairs(ids) do
  local raw = kept[id] or rec_raw(ARGV[1], id)
  out[#out + 1] = id
  if type(raw) == 'string' then out[#out + 1] = rec_map(raw)['metadata'] or raw
  else out[#out + 1] = rec_field(raw, 'metadata') or '' end
end
return out
"""
)

IDS = _lua(HISTORY + _REFS + """
-- KEYS: idx    ARGV: ns_base.  Reply: id, parent id ('' for none; false: its record
-- expired while its id was indexed), ... of every checkpoint of the namespace, oldest first.
local out = {}
for _, id in ipairs(ids_all(ARGV[1])) do
  local raw = rec_raw(ARGV[1], id)
  out[#out + 1] = id
  if type(raw) == 'string' then out[#out + 1] = record_parent(raw)
  else out[#out + 1] = raw and (rec_field(raw, 'parent') or '') or false end
end
return out
""")

DELETE_THREAD = _lua(
    HISTORY
    + """
-- KEYS: rec, nsmap, lease. The lease keeps its generation so fencing stays monotonic.
for _, base in ipairs(redis.call('HVALS', KEYS[2])) do
  for _, id in ipairs(ids_all(base)) do
    redis.call('UNLINK', cp_key(base, id), base .. @W@ .. id)
  end
  local keys = ids_keys(base)
  for _, key in ipairs(val_keys(base)) do keys[#keys + 1] = key end
  for i = 1, #keys, 1000 do  -- unpack's bound: a thousand keys a call
    redis.call('UNLINK', unpack(keys, i, math.min(i + 999, #keys)))
  end
end
redis.call('UNLINK', KEYS[1], KEYS[2])
redis.call('HDEL', KEYS[3], 'owner', 'expires')
return {'ok'}
"""
)

PRUNE = _lua(
    HISTORY
    + _DROP_IDS
    + """
-- KEYS: idx, blobs    ARGV: ns_base, keep
-- Drops all but the newest `keep` checkpoints, their writes, and every blob that
-- no kept checkpoint references. Returns how many checkpoints went.
local base, keep = ARGV[1], tonumber(ARGV[2])
local old = ids_beyond(base, keep)
if #old > 0 then drop_ids(base, old) end
return #old
"""
)

DROP = _lua(
    HISTORY
    + _DROP_IDS
    + """
-- KEYS: idx, blobs    ARGV: ns_base, checkpoint ids...
-- Deletes the given checkpoints, their writes, and every blob they referenced that
-- no remaining checkpoint references. Returns how many checkpoints went.
local gone = {}
for i = 2, #ARGV do
  if ids_has(ARGV[1], ARGV[i]) then gone[#gone + 1] = ARGV[i] end
end
if #gone > 0 then drop_ids(ARGV[1], gone) end
return #gone
"""
)

SET_TTL = _lua(
    HISTORY
    + _THREAD_EXPIRE
    + """
-- KEYS: rec, nsmap, lease    ARGV: seconds (0: drop the thread's own TTL)
-- Applies the TTL to every key of the thread now and records it for later commits;
-- without one of its own the thread gets its recorded policy's TTL, else none.
local ttl = tonumber(ARGV[1])
if ttl > 0 then redis.call('HSET', KEYS[1], 'ttl', ttl) else redis.call('HDEL', KEYS[1], 'ttl') end
if ttl == 0 then ttl = tonumber(redis.call('HGET', KEYS[1], 'policy_ttl') or '0') end
for _, key in ipairs(KEYS) do expire_key(key, ttl) end
thread_expire(KEYS[2], ttl)
return {'ok'}
"""
)

_INDEX_FUNCTION = """
-- Move thread to status ('' = none) in the index: shards (a table of keys) are the
-- thread's shard of every status index.
local function index_status(shards, thread, status, score)
  for _, key in ipairs(shards) do redis.call('ZREM', key, thread) end
  for _, key in ipairs(shards) do
    if status ~= '' and string.sub(key, -#status - 1) == ':' .. status then
      redis.call('ZADD', key, tonumber(score), thread)
    end
  end
end
"""

STATUS_INDEX = _INDEX_FUNCTION + """
-- KEYS: the thread's shard of every status index    ARGV: thread, status ('' = none), score
index_status(KEYS, ARGV[1], ARGV[2], ARGV[3])
return {'ok'}
"""

_STATUS_FUNCTION = (
    _INDEX_FUNCTION
    + _ISO_FUNCTION
    + """
local UNESCAPES = {@UNESCAPES@}
local STATUSES = {@STATUSES@}

-- A thread's status, sent compactly (the scripts using it run on a single Redis only:
-- the status index is in another slot than the record). Sets the record's status and
-- updated_at (from t, as iso_utc), drops its 'next' unless the pairs ARGV[set..] set it,
-- deletes the fields ARGV[gone..gone_end], sets the pairs, and moves the thread to status
-- in the index at score t in ms. The thread id and the prefix come from the record key
-- {P:T}:rec (T escaped: no ':'), the shard keys {P:status:B}:<status> from bucket B.
local function record_status(record, status, t, bucket, gone, gone_end, set)
  local prefix, thread = string.match(record, '^{(.*):([^:]*)}@RECORD@$')
  if not thread then error('not a thread record key: ' .. record) end
  thread = string.gsub(thread, '%%(%x%x)', UNESCAPES)
  local shards = {}
  for i, name in ipairs(STATUSES) do
    shards[i] = '{' .. prefix .. '@STATUS_TAG@' .. bucket .. '}:' .. name
  end
  redis.call('HDEL', record, 'next', unpack(ARGV, gone, gone_end))
  redis.call('HSET', record, 'status', status, 'updated_at', iso_utc(t), unpack(ARGV, set))
  index_status(shards, thread, status, string.sub(t, 1, -4))
end
"""
    .replace("@UNESCAPES@", ", ".join(
        f"['{code[1:]}'] = '{char}'" for char, code in ESCAPES.items()))
    .replace("@STATUSES@", ", ".join(f"'{status}'" for status in get_args(ThreadStatus)))
    .replace("@RECORD@", RECORD)
    .replace("@STATUS_TAG@", STATUS_TAG)
)

RECORD_STATUS = _STATUS_FUNCTION + """
-- KEYS: the thread record
-- ARGV: status, time (microseconds since the epoch), the thread's status bucket[, n,
--       n record fields to delete, then field/value pairs to set]
-- A thread record's update with its status and the status's index entry: one call of a
-- MULTI, not three (HDEL, HSET, STATUS_INDEX), its keys composed here, not sent.
local n = tonumber(ARGV[4] or '0')
record_status(KEYS[1], ARGV[1], ARGV[2], ARGV[3], 5, 4 + n, 5 + n)
return {'ok'}
"""

LOAD_RUNNING = _lua(_LOAD_FUNCTION + _STATUS_FUNCTION + _NS_TAG + """
-- A run's start on a single Redis (the status index is in another slot than the thread):
-- LOAD, then RECORD_STATUS 'running', in one call. Sent no keys: the namespace's index
-- and values are composed from ns_base, the thread record {P:T}:rec from its tag (the
-- thread's, whatever the namespace: the status is the thread's).
-- ARGV: ns_base, time (microseconds since the epoch), the thread's status bucket,
--       ids... (none: the latest checkpoint)
-- Reply: LOAD's.
local base = ARGV[1]
local out = load(base, {unpack(ARGV, 4)})
record_status(ns_tag(base) .. @REC@, 'running', ARGV[2], ARGV[3], 4, 3, #ARGV + 1)
return out
""")
"""``LOAD`` of a namespace with its thread marked running (``RECORD_STATUS``) in one script
(``RedisSaver.get_tuple_for_run``; single Redis only)."""

UNINDEX_GONE = """
-- KEYS: one status shard    ARGV: (thread, score)...: entries read with their scores
-- Drops each entry still at the score it was read with; a thread indexed again since
-- (written after it was seen gone) has a newer score and stays. Reply: how many went.
local n = 0
for j = 1, #ARGV, 2 do
  if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[j]) or '-1') == tonumber(ARGV[j + 1]) then
    n = n + redis.call('ZREM', KEYS[1], ARGV[j])
  end
end
return n
"""

# Lease times come from the server clock (TIME), so owners on machines whose
# clocks disagree still agree on when a lease expired.
SERVER_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

ACQUIRE_FUNCTION = """
-- Reply: {1, gen, owner, expires_ms} when acquired, {0, gen, holder, expires_ms} if held.
-- mode: nil or '', '1' (only take over an expired lease, not a free one) or '2' (revoke).
local function acquire(lease, owner, ttl_ms, mode)
  local f = redis.call('HMGET', lease, 'owner', 'expires', 'gen')
  local holder = f[1] or ''
  local expires = tonumber(f[2] or '0')
  local gen = tonumber(f[3] or '0')
  local until_ms = now + tonumber(ttl_ms)
  if mode == '1' and holder == '' then return {0, gen, holder, expires} end
  if mode ~= '2' and holder ~= '' and expires > now then
    if holder ~= owner then return {0, gen, holder, expires} end
    redis.call('HSET', lease, 'expires', until_ms)
    return {1, gen, holder, until_ms}
  end
  gen = redis.call('HINCRBY', lease, 'gen', 1)
  redis.call('HSET', lease, 'owner', owner, 'expires', until_ms)
  return {1, gen, owner, until_ms}
end
"""
"""``ACQUIRE`` as a Lua function ``acquire(lease, owner, ttl_ms, mode)`` (after
``SERVER_NOW``), for the scripts that take a lease with more (``job_scripts``)."""

ACQUIRE = (
    SERVER_NOW
    + ACQUIRE_FUNCTION
    + """
-- KEYS: lease    ARGV: owner, ttl_ms[, '1': only take over an expired lease, not a free one;
--                                     '2': revoke: take it even from a live holder]
return acquire(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
"""
)

RENEW_FUNCTION = """
-- Renews only while nobody took over (same owner and generation), even if expired.
local function renew(lease, owner, fence, ttl_ms)
  local f = redis.call('HMGET', lease, 'owner', 'gen')
  local holder, gen = f[1] or '', f[2] or '0'
  if holder ~= owner or gen ~= fence then return {0, tonumber(gen), holder, 0} end
  local until_ms = now + tonumber(ttl_ms)
  redis.call('HSET', lease, 'expires', until_ms)
  return {1, tonumber(gen), holder, until_ms}
end
"""
"""``RENEW`` as a Lua function ``renew(lease, owner, gen, ttl_ms)`` (after ``SERVER_NOW``),
for a script that does more in the same call (``job_scripts.CLAIM_CALLS``)."""

RENEW = (
    SERVER_NOW
    + RENEW_FUNCTION
    + """
-- KEYS: lease    ARGV: owner, gen, ttl_ms
return renew(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
"""
)

CLOSE_RUN = _STATUS_FUNCTION + """
-- A run's end in one round trip on one Redis (not Cluster: the index is in another slot).
-- KEYS: lease, thread record, the run's event stream
-- ARGV: owner, gen, status, time (microseconds since the epoch), the thread's status
--       bucket, event mode, event payload, stream ttl, stream maxlen, the checkpoint the
--       run ends at ('' any), then the record's field/value pairs
-- Fenced as RENEW: a lease taken over ends nothing (reply 0); nor does a run whose
-- thread's newest checkpoint is not the one it ends at (reply -1: sent just after that
-- checkpoint's commit, which was refused). Otherwise, in this order and atomically:
-- the status (record and index, as RECORD_STATUS), the end event, the lease released (1).
local f = redis.call('HMGET', KEYS[1], 'owner', 'gen')
local holder, gen = f[1] or '', f[2] or '0'
if holder ~= ARGV[1] or gen ~= ARGV[2] then return 0 end
if ARGV[10] ~= '' and redis.call('HGET', KEYS[2], 'last_checkpoint_id') ~= ARGV[10] then
  return -1
end
record_status(KEYS[2], ARGV[3], ARGV[4], ARGV[5], 11, 10, 11)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], '*', 'm', ARGV[6], 'p', ARGV[7])
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[8]))
redis.call('HSET', KEYS[1], 'owner', '', 'expires', 0)
return 1
"""

RELEASE = """
-- KEYS: lease    ARGV: owner, gen.  Keeps the generation so the next owner's is higher.
local f = redis.call('HMGET', KEYS[1], 'owner', 'gen')
local holder, gen = f[1] or '', f[2] or '0'
if holder ~= ARGV[1] or gen ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'owner', '', 'expires', 0)
return 1
"""

