"""Lua scripts of the shared budget ledger: the check and the reservation are one atomic step.

KEYS are always the account's HASH (``spent``, ``reserved``: integer nano-dollars, changed
with HINCRBY so they stay exact) and its ZSET of reservations in flight (member
``"<id>:<amount>"`` scored by the server time its lease ends). Amounts travel as decimal
strings and are returned as strings (Redis truncates Lua numbers; string.format('%d') keeps
integers up to 2**53 exact).
"""

from __future__ import annotations

__all__ = ["RENEW", "RESERVE", "SETTLE"]

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# Reservations whose lease ran out (their process died without settling) leave the total.
_EXPIRE_LEASES = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #gone > 0 then
  local sum = 0
  for _, m in ipairs(gone) do sum = sum + tonumber(string.match(m, ':(%d+)$')) end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  redis.call('HINCRBY', KEYS[1], 'reserved', string.format('%d', -sum))
end
"""

# ARGV[ends]: Unix time the window ends ('0': a total, kept). The keys outlive it by a day.
_EXPIRE_AT = """
local function keep(ends)
  if tonumber(ends) > 0 then
    local at = math.ceil(tonumber(ends)) + 86400
    redis.call('EXPIREAT', KEYS[1], at)
    redis.call('EXPIREAT', KEYS[2], at)
  end
end
"""

#: ARGV: member, amount, cap, lease seconds, window end. Returns {admitted, spent, reserved}.
RESERVE = _NOW + _EXPIRE_LEASES + _EXPIRE_AT + """
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local amount = tonumber(ARGV[2])
if spent + reserved + amount > tonumber(ARGV[3]) then
  return {0, string.format('%d', spent), string.format('%d', reserved)}
end
reserved = redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
keep(ARGV[5])
return {1, string.format('%d', spent), string.format('%d', reserved)}
"""

#: ARGV: member, amount, cost, window end, channel, account, soft ('0': none). The reservation
#: leaves the total (unless its lease already took it out), the cost joins the spend, and the
#: account is published on the channel: waiting processes ask again. The first settlement of the
#: account to bring its spend to ``soft`` sets its ``soft`` flag (HSETNX: once, whichever
#: process). Returns {spent, reserved, 1 if it set the flag else 0}.
SETTLE = _EXPIRE_AT + """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'reserved', '-' .. ARGV[2])
end
local spent = redis.call('HINCRBY', KEYS[1], 'spent', ARGV[3])
local soft = tonumber(ARGV[7] or '0')
local softened = 0
if soft > 0 and spent >= soft then
  softened = redis.call('HSETNX', KEYS[1], 'soft', '1')
end
keep(ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return {string.format('%d', spent), redis.call('HGET', KEYS[1], 'reserved') or '0', softened}
"""

#: ARGV: lease seconds, members. Extends the leases of reservations still held (not expired).
RENEW = _NOW + """
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[1]), ARGV[i])
end
return 1
"""
