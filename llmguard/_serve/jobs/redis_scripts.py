"""The Lua scripts of :mod:`.redis_store`: each changes a job's state and emits its event in one
step, so replicas never interleave a count, an event and a status change.

Keys of every script: the job hash, its records hash, its events stream, its lines list, its
deliveries list, its batch ledger list (one hash tag). A job ends once: the script that sees the last line counted (or
the cancel) sets the terminal status, emits the one terminal event and sets every key to
expire after the TTL.
"""

__all__ = ["CANCEL", "RECORD", "REPORT", "START"]

_EVENT = """
local function emit(job, ev, name)
  local names = {'status', 'total', 'done', 'ok', 'failed', 'created', 'started', 'finished',
                 'reported'}
  local values = redis.call('HMGET', job, unpack(names))
  local args = {ev, 'MAXLEN', '~', '100000', '*', 'name', name}
  for i, n in ipairs(names) do
    if values[i] then table.insert(args, n); table.insert(args, values[i]) end
  end
  redis.call('XADD', unpack(args))
end
local function terminal(status)
  return status == 'completed' or status == 'failed' or status == 'cancelled'
end
local function finish(keys, status, now, ttl)
  redis.call('HSET', keys[1], 'status', status, 'finished', now)
  emit(keys[1], keys[3], status)
  for i = 1, #keys do redis.call('EXPIRE', keys[i], ttl) end
end
"""
# KEYS job rec ev lines del ledger; ARGV index record ok now ttl
RECORD = _EVENT + """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return false end
local done = redis.call('HINCRBY', KEYS[1], 'done', 1)
redis.call('HINCRBY', KEYS[1], ARGV[3] == '1' and 'ok' or 'failed', 1)
local status = redis.call('HGET', KEYS[1], 'status')
if terminal(status) then return false end
emit(KEYS[1], KEYS[3], 'progress')
if done >= tonumber(redis.call('HGET', KEYS[1], 'total')) then
  finish(KEYS, 'completed', ARGV[4], ARGV[5])
  return 'completed'
end
return false
"""
CANCEL = _EVENT + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or terminal(status) then return 0 end
finish(KEYS, 'cancelled', ARGV[1], ARGV[2])
return 1
"""
START = _EVENT + """
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'running', 'started', ARGV[1])
emit(KEYS[1], KEYS[3], 'progress')
return 1
"""
# ARGV finished: the provider's count of a batch job's finished lines, when it grew
REPORT = _EVENT + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or terminal(status) then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'reported') or '0') >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'reported', ARGV[1])
emit(KEYS[1], KEYS[3], 'progress')
return 1
"""
