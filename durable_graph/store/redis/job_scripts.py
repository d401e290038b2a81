"""Lua scripts of job liveness, beside the key layout (``keys.JobKeys``).

Every script but ``HEARTBEAT``, ``EXPIRED`` and the probe's takes the keys of one
job bucket in the order of ``JobKeys.ordered()`` (one hash tag, so one slot on
Redis Cluster), so a job's state, its thread's owed count and its thread's idle
deadline change together, atomically. Times come from the server clock.
"""

from __future__ import annotations

from durable_graph.store.redis.scripts import SERVER_NOW as _NOW

__all__ = [
    "ADOPT_JOB",
    "ARM_IDLE",
    "CLAIM_JOB",
    "DISARM_IDLE",
    "END_JOB",
    "EXPIRED",
    "HEARTBEAT",
    "NOTE_DEATH",
    "PROBE_SEEN",
    "PROBE_SEND",
    "RECLAIM_JOB",
    "REGISTER_JOBS",
    "RELEASE_JOB",
    "REQUEUE_LOST",
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

ADOPT_JOB = (
    _JOBS
    + """
-- ARGV: job key, thread id, signed message, worker.  Reply: the server time (ms).
-- A job the worker runs itself instead of publishing it (eager continuation):
-- registered as owed and claimed by ``worker`` at once, so it is never due (no
-- broker has it) and a sweep sends its message if ``worker`` dies.
if redis.call('HSETNX', OWED, ARGV[1], ARGV[3]) == 1 then
  redis.call('HINCRBY', COUNT, ARGV[2], 1)
end
redis.call('HSET', CLAIM, ARGV[1], ARGV[4])
redis.call('ZREM', IDLE, ARGV[2])
return now
"""
)

CLAIM_JOB = (
    _JOBS
    + """
-- ARGV: job key, worker.  Reply: {'ok'} (run it), {'gone'} (it ended: drop this copy)
-- or {'held', worker} (a process runs it, maybe this one in another thread: drop it).
if redis.call('HEXISTS', OWED, ARGV[1]) == 0 then return {'gone'} end
local holder = redis.call('HGET', CLAIM, ARGV[1])
if holder then return {'held', holder} end
redis.call('HSET', CLAIM, ARGV[1], ARGV[2])
redis.call('ZREM', DUE, ARGV[1])
return {'ok'}
"""
)

END_JOB = (
    _JOBS
    + """
-- ARGV: job key, thread id, idle ttl (ms).  The job ended (whoever ran it): it is
-- owed no more; a thread left owing nothing gets an idle deadline (its lease TTL).
if redis.call('HDEL', OWED, ARGV[1]) == 0 then return 0 end
redis.call('HDEL', CLAIM, ARGV[1])
redis.call('ZREM', DUE, ARGV[1])
redis.call('HDEL', DEATHS, ARGV[1], ARGV[1] .. ':why')
if redis.call('HINCRBY', COUNT, ARGV[2], -1) <= 0 then
  redis.call('HDEL', COUNT, ARGV[2])
  redis.call('ZADD', IDLE, now + tonumber(ARGV[3]), ARGV[2])
end
return 1
"""
)

RELEASE_JOB = (
    _JOBS
    + """
-- ARGV: job key, worker.  The worker gives the job back unfinished (Celery retries it).
if redis.call('HGET', CLAIM, ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', CLAIM, ARGV[1])
if redis.call('HEXISTS', OWED, ARGV[1]) == 1 then redis.call('ZADD', DUE, now, ARGV[1]) end
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
if redis.call('HGET', CLAIM, ARGV[1]) ~= ARGV[2] then return {'no'} end
redis.call('HDEL', CLAIM, ARGV[1])
local msg = redis.call('HGET', OWED, ARGV[1])
if not msg then return {'no'} end
local deaths = redis.call('HINCRBY', DEATHS, ARGV[1], 1)
if ARGV[4] ~= '' then redis.call('HSET', DEATHS, ARGV[1] .. ':why', ARGV[4]) end
local why = redis.call('HGET', DEATHS, ARGV[1] .. ':why') or ''
if deaths >= tonumber(ARGV[3]) then return {'fail', msg, deaths, why} end
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

ARM_IDLE = (
    _JOBS
    + """
-- ARGV: thread id, ttl (ms), only_if_idle ('1': leave a thread that owes jobs alone).
if ARGV[3] == '1' and redis.call('HEXISTS', COUNT, ARGV[1]) == 1 then
  redis.call('ZREM', IDLE, ARGV[1])
  return 0
end
redis.call('ZADD', IDLE, now + tonumber(ARGV[2]), ARGV[1])
return 1
"""
)

DISARM_IDLE = """
-- KEYS: idle    ARGV: thread id.  Its run ended: nothing to watch.
return redis.call('ZREM', KEYS[1], ARGV[1])
"""

HEARTBEAT = (
    _NOW
    + """
-- KEYS: live    ARGV: worker, ttl (ms)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return now
"""
)

EXPIRED = (
    _NOW
    + """
-- KEYS: a zset of deadlines (ms)    ARGV: limit.  Reply: {now, member, score, ...}
-- of the members whose deadline passed, oldest first: what a sweep has to look at.
local out = {now}
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0,
                         tonumber(ARGV[1]))
for _, v in ipairs(found) do out[#out + 1] = v end
return out
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
