"""Lua scripts of job liveness, beside the key layout (``keys.JobKeys``).

Every script but ``HEARTBEAT``, ``VIEW`` and the probe's takes the keys of one
job bucket in the order of ``JobKeys.ordered()`` (one hash tag, so one slot on
Redis Cluster), so a job's state, its thread's owed count and its thread's idle
deadline change together, atomically. Times come from the server clock.
``PUT_CALL_WRITES``, ``CLAIM_CALLS`` and ``CLAIM_RENEWING`` also take a thread's keys,
another slot: on Redis Cluster the saver runs ``PUT_WRITES`` and ``END_JOB`` one after
the other instead, and the job book ``CLAIM_JOB``, ``RENEW`` and ``FINISHED``.
"""

from __future__ import annotations

from durable_graph.store.redis.scripts import (
    ACQUIRE_FUNCTION,
    FINISHED_FUNCTION,
    PUT_WRITES_FUNCTION,
    RENEW_FUNCTION,
)
from durable_graph.store.redis.scripts import SERVER_NOW as _NOW

__all__ = [
    "ACQUIRE_WATCHED",
    "ADOPT_JOB",
    "ARM_IDLE",
    "CLAIM_CALLS",
    "CLAIM_JOB",
    "CLAIM_RENEWING",
    "END_JOB",
    "HEARTBEAT",
    "NOTE_DEATH",
    "PROBE_SEEN",
    "PROBE_SEND",
    "PUT_CALL_WRITES",
    "RECLAIM_JOB",
    "REGISTER_JOBS",
    "RELEASE_JOB",
    "REQUEUE_LOST",
    "VIEW",
]


_JOBS = _NOW + """
local OWED, DUE, CLAIM, DEATHS, COUNT, IDLE = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
"""

REGISTER_JOBS = (
    _JOBS
    + """
-- ARGV: (job key, thread id, signed message) * n.   Reply: the server time (ms).
-- Called before the messages are published: a job that is owed but never arrives
-- is found by the lost-message probe; its thread is no longer idle.
for j = 1, #ARGV, 3 do
  if redis.call('HSETNX', OWED, ARGV[j], ARGV[j + 2]) == 1 then
    redis.call('HINCRBY', COUNT, ARGV[j + 1], 1)
  end
  redis.call('ZADD', DUE, now, ARGV[j])
  redis.call('ZREM', IDLE, ARGV[j + 1])
end
return now
"""
)

# A job's claim by a worker process.  ``keys``: a job bucket (``JobKeys.ordered()``).
# Reply: {'ok'} (run it), {'gone'} (it ended: drop this copy) or {'held', worker} (a
# process runs it, maybe this one in another thread: drop it).
_CLAIM = """
local function claim_job(keys, job, worker)
  if redis.call('HEXISTS', keys[1], job) == 0 then return {'gone'} end
  local holder = redis.call('HGET', keys[3], job)
  if holder then return {'held', holder} end
  redis.call('HSET', keys[3], job, worker)
  redis.call('ZREM', keys[2], job)
  return {'ok'}
end
"""

CLAIM_JOB = (
    _CLAIM
    + """
-- KEYS: a job bucket.  ARGV: job key, worker.  Reply: claim_job's.
return claim_job(KEYS, ARGV[1], ARGV[2])
"""
)

CLAIM_RENEWING = (
    _NOW
    + _CLAIM
    + RENEW_FUNCTION
    + """
-- KEYS: a job bucket, then the thread's lease.  ARGV: job key, worker, lease owner, lease
-- generation, lease ttl (ms).  Reply: {claim_job's reply, renew's reply}.
-- A job's claim and its thread's lease renewal (``CLAIM_JOB`` then ``RENEW``) in one
-- script, not two: every published task job starts with them.
return {claim_job(KEYS, ARGV[1], ARGV[2]), renew(KEYS[7], ARGV[3], ARGV[4], ARGV[5])}
"""
)

CLAIM_CALLS = (
    _NOW
    + _CLAIM
    + RENEW_FUNCTION
    + FINISHED_FUNCTION
    + """
-- KEYS: a job bucket, then the thread's lease and the writes of the calls' checkpoint.
-- KEYS[9]: the heartbeats of the prefix.  ARGV: worker, lease owner, lease generation,
-- lease ttl (ms), mode, heartbeat ttl (ms), then (job key, call id) of each call.
-- Reply: {renew's reply, {claim's reply, 1 if the call finished else 0} of each call}.
-- A @task call's job (or every call of a bundle, see ``worker/bundles``) starts with one
-- script, not three (claim, lease renewal, whether a copy already recorded its result):
-- each call claimed as its own job.  Mode 'lone': a call's own message (claim_job).
-- 'bundle': a call a dead process held before (a death counted, its own message sent
-- again by the sweep) is left to that message, {'died'}, so a crash loop counts its
-- deaths against the call that crashes, not the bundle's others.
-- 'again': a bundle's check before a call, long after its claims: a claim of ours stands
-- unless a death was counted to the call since (a sweep took it back: the claim of this
-- worker id now is its own message's, run by another thread of this process).  A bundle
-- ('bundle', 'again') that finds its process's heartbeat (KEYS[9]) alive extends it by
-- the heartbeat TTL (ARGV[6]): no sweep finds the process dead in the next third of it,
-- however late its heartbeat thread beats, so the bundle needs no check before then.
local function claim_call(job, mode)
  local holder = redis.call('HGET', KEYS[3], job)
  local died = redis.call('HEXISTS', KEYS[4], job) == 1
  if mode == 'again' and holder == ARGV[1] and not died then return {'ok'} end
  if mode ~= 'lone' and died and (not holder or mode == 'again') then return {'died'} end
  return claim_job(KEYS, job, ARGV[1])
end
if ARGV[5] ~= 'lone' then
  local beat = redis.call('ZSCORE', KEYS[9], ARGV[1])
  if beat and tonumber(beat) > now then
    redis.call('ZADD', KEYS[9], math.max(tonumber(beat), now + tonumber(ARGV[6])), ARGV[1])
  end
end
local claims = {}
for j = 7, #ARGV, 2 do
  local done = finished(KEYS[8], ARGV[j + 1]) and 1 or 0
  claims[#claims + 1] = {claim_call(ARGV[j], ARGV[5]), done}
end
return {renew(KEYS[7], ARGV[2], ARGV[3], ARGV[4]), claims}
"""
)

# The end of a job (whoever ran it): it is owed no more; a thread left owing nothing
# gets an idle deadline (its lease TTL).  ``keys``: a job bucket (``JobKeys.ordered()``).
_END = """
local function end_job(keys, job, thread, idle_ms)
  if redis.call('HDEL', keys[1], job) == 0 then return 0 end
  redis.call('HDEL', keys[3], job)
  redis.call('ZREM', keys[2], job)
  redis.call('HDEL', keys[4], job, job .. ':why')
  if redis.call('HINCRBY', keys[5], thread, -1) <= 0 then
    redis.call('HDEL', keys[5], thread)
    redis.call('ZADD', keys[6], now + tonumber(idle_ms), thread)
  end
  return 1
end
"""

END_JOB = (
    _NOW
    + _END
    + """
-- KEYS: a job bucket.  ARGV: job key, thread id, idle ttl (ms).  Reply: 1, or 0 if it
-- had ended already.
return end_job(KEYS, ARGV[1], ARGV[2], ARGV[3])
"""
)

ADOPT_JOB = (
    _JOBS
    + _END
    + """
-- ARGV: job key, thread id, signed message, worker[, ended job key, idle ttl (ms)].
-- Reply: the server time (ms).
-- A job the worker runs itself instead of publishing it (eager continuation):
-- registered as owed and claimed by ``worker`` at once, so it is never due (no
-- broker has it) and a sweep sends its message if ``worker`` dies. With the last two
-- arguments, the job of the same thread that adopted it ends after it, in the same
-- script (one command, not two: the thread never owes nothing in between).
if redis.call('HSETNX', OWED, ARGV[1], ARGV[3]) == 1 then
  redis.call('HINCRBY', COUNT, ARGV[2], 1)
end
redis.call('HSET', CLAIM, ARGV[1], ARGV[4])
redis.call('ZREM', IDLE, ARGV[2])
if ARGV[5] then end_job(KEYS, ARGV[5], ARGV[2], ARGV[6]) end
return now
"""
)

PUT_CALL_WRITES = (
    _NOW
    + _END
    + PUT_WRITES_FUNCTION
    + """
-- KEYS: a job bucket, then PUT_WRITES's keys.  ARGV: job key, thread id, idle ttl (ms),
-- then PUT_WRITES's arguments.  Reply: PUT_WRITES's.
-- A @task call's result lands and its job ends in one script: one round trip, and no
-- end without the write (an error in the write stops the script first). A stale job
-- (fenced: nothing written) ends all the same, as it would after its FencingError.
local put_keys, put_args = {}, {}
for i = 7, #KEYS do put_keys[#put_keys + 1] = KEYS[i] end
for i = 4, #ARGV do put_args[#put_args + 1] = ARGV[i] end
local reply = put_writes(put_keys, put_args)
end_job(KEYS, ARGV[1], ARGV[2], ARGV[3])
return reply
"""
)

RELEASE_JOB = (
    _JOBS
    + """
-- ARGV: job key, worker[, 'undue'].  The worker gives the job back unfinished (Celery
-- retries it); 'undue': the claim only goes (a sweep that cannot end the job it failed).
if redis.call('HGET', CLAIM, ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', CLAIM, ARGV[1])
if ARGV[3] ~= 'undue' and redis.call('HEXISTS', OWED, ARGV[1]) == 1 then
  redis.call('ZADD', DUE, now, ARGV[1])
end
return 1
"""
)

RECLAIM_JOB = (
    _JOBS
    + """
-- ARGV: job key, dead worker, max deaths, why ('' = unknown).  Takes a job from a
-- worker process that died: counts the death, then {'fail', msg, deaths, why} at
-- max deaths, else {'requeue', msg, deaths} (sent again as unclaimed). {'no'} when
-- the claim moved on (another sweeper got it) or the job ended.
-- At max deaths the dead process keeps the claim until the sweeper has failed the
-- thread and ended the job (END_JOB drops it): a copy of the job's message still queued
-- (a lost-message resend) is dropped when claimed ('held'), never run once more; if
-- the sweeper dies first, the next sweep finds the dead process's claim again.
if redis.call('HGET', CLAIM, ARGV[1]) ~= ARGV[2] then return {'no'} end
local msg = redis.call('HGET', OWED, ARGV[1])
if not msg then
  redis.call('HDEL', CLAIM, ARGV[1])
  return {'no'}
end
local deaths = redis.call('HINCRBY', DEATHS, ARGV[1], 1)
if ARGV[4] ~= '' then redis.call('HSET', DEATHS, ARGV[1] .. ':why', ARGV[4]) end
local why = redis.call('HGET', DEATHS, ARGV[1] .. ':why') or ''
if deaths >= tonumber(ARGV[3]) then return {'fail', msg, deaths, why} end
redis.call('HDEL', CLAIM, ARGV[1])
redis.call('ZADD', DUE, now, ARGV[1])
return {'requeue', msg, deaths, why}
"""
)

NOTE_DEATH = (
    _JOBS
    + """
-- ARGV: job key, worker prefix (host:pid:), why.  The worker's main process saw the
-- pool process running the job die: record why, and if it held the claim, return it.
local holder = redis.call('HGET', CLAIM, ARGV[1]) or ''
if string.sub(holder, 1, #ARGV[2]) ~= ARGV[2] then return '' end
redis.call('HSET', DEATHS, ARGV[1] .. ':why', ARGV[3])
return holder
"""
)

REQUEUE_LOST = (
    _JOBS
    + """
-- ARGV: job key, the due score the sweeper saw.  A job sent then and never claimed
-- since is sent again (once, whichever sweeper comes first): its message, or nil.
local score = redis.call('ZSCORE', DUE, ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return false end
local msg = redis.call('HGET', OWED, ARGV[1])
if not msg or redis.call('HEXISTS', CLAIM, ARGV[1]) == 1 then
  redis.call('ZREM', DUE, ARGV[1])
  return false
end
redis.call('ZADD', DUE, now, ARGV[1])
return msg
"""
)

_ARM_IDLE_FUNCTION = """
-- Watch a running thread that owes no job: the sweep looks at it from now + ttl (ms) on.
-- only_if_idle '1': leave a thread that owes jobs alone (out of the watch).
local function arm_idle(count, idle, thread, ttl_ms, only_if_idle)
  if only_if_idle == '1' and redis.call('HEXISTS', count, thread) == 1 then
    redis.call('ZREM', idle, thread)
    return 0
  end
  redis.call('ZADD', idle, now + tonumber(ttl_ms), thread)
  return 1
end
"""

ARM_IDLE = (
    _JOBS
    + _ARM_IDLE_FUNCTION
    + """
-- ARGV: thread id, ttl (ms), only_if_idle ('1': leave a thread that owes jobs alone).
return arm_idle(COUNT, IDLE, ARGV[1], ARGV[2], ARGV[3])
"""
)

ACQUIRE_WATCHED = (
    _NOW
    + ACQUIRE_FUNCTION
    + _ARM_IDLE_FUNCTION
    + """
-- KEYS: a job bucket, then the thread's lease.  ARGV: owner, ttl (ms), thread id.
-- Reply: ACQUIRE's.  A producer's lease (``ACQUIRE``) and the watch of its thread while it
-- owes no job (``ARM_IDLE`` with only_if_idle), in this order, in one script, not two.
local taken = acquire(KEYS[7], ARGV[1], ARGV[2], nil)
arm_idle(KEYS[5], KEYS[6], ARGV[3], ARGV[2], '1')
return taken
"""
)

HEARTBEAT = (
    _NOW
    + """
-- KEYS: live    ARGV: worker, ttl (ms)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return now
"""
)

VIEW = (
    _NOW
    + """
-- What a sweep must look at, in one call.  KEYS: any of the heartbeats (zset), a
-- probe (hash) and job buckets' idle and due zsets; ARGV[2 + i] names the kind of
-- KEYS[i] ('live', 'probe', 'idle' or 'due').  ARGV[1]: limit per key; ARGV[2]: jobs
-- unclaimed since before this time (ms) count as lost.  Reads only what expired.
-- Reply: {now, head, sent, oldest, dead, idle, lost}: the probe's head and sent times
-- (0 if none), when the oldest unclaimed job was sent ('' if none), the workers whose
-- heartbeat expired, and {key index, member, score, ...} of the idle threads and lost jobs.
local limit = tonumber(ARGV[1])
local before = '(' .. ARGV[2]
local head, sent, oldest, oldest_text = '0', '0', nil, ''
local dead, idle, lost = {}, {}, {}
local function add(out, i, found)
  for j = 1, #found, 2 do
    out[#out + 1] = i
    out[#out + 1] = found[j]
    out[#out + 1] = found[j + 1]
  end
end
for i, key in ipairs(KEYS) do
  local kind = ARGV[i + 2]
  if kind == 'live' then
    dead = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, limit)
  elseif kind == 'probe' then
    local found = redis.call('HMGET', key, 'head', 'sent')
    head, sent = found[1] or '0', found[2] or '0'
  elseif kind == 'idle' then
    add(idle, i, redis.call('ZRANGEBYSCORE', key, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit))
  else
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if first[2] then
      local score = tonumber(first[2])
      if oldest == nil or score < oldest then oldest, oldest_text = score, first[2] end
      if score < tonumber(ARGV[2]) then
        add(lost, i, redis.call('ZRANGEBYSCORE', key, '-inf', before, 'WITHSCORES', 'LIMIT',
                                0, limit))
      end
    end
  end
end
return {now, head, sent, oldest_text, dead, idle, lost}
"""
)

PROBE_SEND = (
    _NOW
    + """
-- KEYS: probe    ARGV: how long (ms) a probe in flight stops another.
-- Reply: the probe's time (ms) to send, or 0 while one is in flight.
local sent = tonumber(redis.call('HGET', KEYS[1], 'sent') or '0')
if sent > 0 and now - sent < tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'sent', now)
return now
"""
)

PROBE_SEEN = """
-- KEYS: probe    ARGV: the probe's time.  Every message sent before it left the queue.
local t = tonumber(ARGV[1])
if t > tonumber(redis.call('HGET', KEYS[1], 'head') or '0') then
  redis.call('HSET', KEYS[1], 'head', t)
end
if tonumber(redis.call('HGET', KEYS[1], 'sent') or '0') <= t then
  redis.call('HSET', KEYS[1], 'sent', 0)
end
return 1
"""
