"""The key pool's Lua scripts: the rules of ``traffic.key_pool_rules``, run atomically in Redis on Redis ``TIME``.

Each line of the acquire script mirrors a function of the model (``prune``, ``order``, ``key_wait``,
``_grant``); keep them in step (``tests/integration/test_key_pool.py`` compares both on one scenario).
Times are integer microseconds; Redis prints Lua numbers with 17 digits, so they round-trip exactly.

KEYS of ACQUIRE: the last-granted string, then per key (hash, second window, minute window, leases,
unsent leases), then per account (hash, minute window, token window, unsent leases). ARGV: rules
JSON, lease id, token estimate (-1: the account's recent peak), lease TTL in µs (-1: the configured
one), the only key id to consider ("": any).
Returns ``{1, key id, now, expiry, tokens reserved}`` or ``{0, "", now, wait µs (-1: never), 0}``.

Windows hold *sent* calls (lease id → send time); a granted lease waits in its key's and account's
unsent set (lease id → expiry) until SENT or RELEASE stamps it, and counts as sent now meanwhile.
"""

from __future__ import annotations

_STAMP = """
-- stamp: count lease `lease` as sent at `at` in the key's windows (ks = second or false, km = minute)
-- and the account's (au = unsent set or false, am = minute window); false when it was not unsent
local function stamp(lease, at, ku, ks, km, au, am, keep_second, keep_minute)
  if redis.call('ZREM', ku, lease) == 0 then return false end
  if ks then
    redis.call('ZADD', ks, at, lease)
    redis.call('PEXPIRE', ks, keep_second)
  end
  redis.call('ZADD', km, at, lease)
  redis.call('PEXPIRE', km, keep_minute)
  if au and redis.call('ZREM', au, lease) == 1 then
    redis.call('ZADD', am, at, lease)
    redis.call('PEXPIRE', am, keep_minute)
  end
  return true
end
"""

ACQUIRE = (
    _STAMP
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local R = cjson.decode(ARGV[1])
local lease, req_tokens, req_ttl = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local margin, MINUTE, NEVER, POLL = R.margin, 60000000, -1, R.poll
local nk = #R.keys

local function kkey(i, part) return KEYS[1 + (i - 1) * 5 + part] end
local function akey(j, part) return KEYS[1 + nk * 5 + (j - 1) * 4 + part] end
local function num(v) if v then return tonumber(v) or 0 end return 0 end
local function reach(span) return span + margin + math.floor(span / R.divisor) end
local function keep(span) return math.ceil(reach(span) / 1000) + 1000 end
local function tokens_of(member) return tonumber(string.match(member, '|(%d+)$')) end

-- prune: expired leases (one that expired unsent: sent at its expiry), calls that left every window
for i, k in ipairs(R.keys) do
  local expired = redis.call('ZRANGEBYSCORE', kkey(i, 5), '-inf', now, 'WITHSCORES')
  for n = 1, #expired, 2 do
    local second = false
    if k.s[1] > 0 then second = kkey(i, 2) end
    stamp(expired[n], tonumber(expired[n + 1]), kkey(i, 5), second, kkey(i, 3), false, false,
          keep(k.s[2]), keep(MINUTE))
  end
  redis.call('ZREMRANGEBYSCORE', kkey(i, 4), '-inf', now)
  if k.s[1] > 0 then redis.call('ZREMRANGEBYSCORE', kkey(i, 2), '-inf', now - reach(k.s[2])) end
  redis.call('ZREMRANGEBYSCORE', kkey(i, 3), '-inf', now - reach(MINUTE))
end
for j, a in ipairs(R.accounts) do
  local expired = redis.call('ZRANGEBYSCORE', akey(j, 4), '-inf', now, 'WITHSCORES')
  for n = 1, #expired, 2 do
    redis.call('ZREM', akey(j, 4), expired[n])
    redis.call('ZADD', akey(j, 2), tonumber(expired[n + 1]), expired[n])
  end
  local cutoff = now - reach(MINUTE)
  redis.call('ZREMRANGEBYSCORE', akey(j, 2), '-inf', cutoff)
  if a.tpm > 0 then
    local old = redis.call('ZRANGEBYSCORE', akey(j, 3), '-inf', cutoff)
    local gone = 0
    for _, m in ipairs(old) do gone = gone + tokens_of(m) end
    if #old > 0 then redis.call('ZREMRANGEBYSCORE', akey(j, 3), '-inf', cutoff) end
    if redis.call('ZCARD', akey(j, 3)) == 0 then
      redis.call('HSET', akey(j, 1), 'tok_total', 0)
    elseif gone > 0 then
      redis.call('HINCRBY', akey(j, 1), 'tok_total', -gone)
    end
  end
end

local info = {}
for i = 1, nk do
  local h = redis.call('HMGET', kkey(i, 1), 'disabled', 'cool_until', 'tat_s', 'tat_m', 'last')
  info[i] = {disabled = h[1] or '', cool = num(h[2]), tat_s = num(h[3]), tat_m = num(h[4]), last = num(h[5]),
             inflight = redis.call('ZCARD', kkey(i, 4)), unsent = redis.call('ZCARD', kkey(i, 5))}
end

-- order: the strategy's order of trying the keys
local idx = {}
if R.strategy == 'round_robin' then
  local last, start = redis.call('GET', KEYS[1]), 0
  if last then for i, k in ipairs(R.keys) do if k.id == last then start = i end end end
  for n = 1, nk do idx[n] = ((start + n - 1) % nk) + 1 end
else
  for i = 1, nk do idx[i] = i end
  local prio = R.strategy == 'priority'
  table.sort(idx, function(a, b)
    if prio and R.keys[a].prio ~= R.keys[b].prio then return R.keys[a].prio < R.keys[b].prio end
    if info[a].inflight ~= info[b].inflight then return info[a].inflight < info[b].inflight end
    if info[a].last ~= info[b].last then return info[a].last < info[b].last end
    return a < b
  end)
end

local function window_wait(zkey, unsent, count, span)
  local stamped = redis.call('ZCARD', zkey)
  local n = stamped + unsent
  if n < count then return 0 end
  if n - count >= stamped then return reach(span) end
  local e = redis.call('ZRANGE', zkey, n - count, n - count, 'WITHSCORES')
  return tonumber(e[2]) + reach(span) - now
end
local function schedule_wait(tat, tolerance) return math.max(0, tat - tolerance - now) end
local function token_wait(j, tpm, need)
  local excess = num(redis.call('HGET', akey(j, 1), 'tok_total')) + math.min(need, tpm) - tpm
  if excess <= 0 then return 0 end
  local freed, entries = 0, redis.call('ZRANGE', akey(j, 3), 0, -1, 'WITHSCORES')
  for n = 1, #entries, 2 do
    freed = freed + tokens_of(entries[n])
    if freed >= excess then return tonumber(entries[n + 1]) + reach(MINUTE) - now end
  end
  return reach(MINUTE)
end
local function need_of(k)
  if k.acct == 0 or R.accounts[k.acct].tpm == 0 then return 0 end
  if req_tokens >= 0 then return req_tokens end
  return num(redis.call('HGET', akey(k.acct, 1), 'tok_peak'))
end
local function key_wait(i, need)
  local k, s = R.keys[i], info[i]
  if s.disabled ~= '' then return NEVER end
  local w = math.max(0, s.cool - now)
  if k.conc > 0 and s.inflight >= k.conc then
    local e = redis.call('ZRANGE', kkey(i, 4), 0, 0, 'WITHSCORES')
    w = math.max(w, math.min(tonumber(e[2]) - now, POLL))
  end
  if k.s[1] > 0 then
    w = math.max(w, window_wait(kkey(i, 2), s.unsent, k.s[1], k.s[2]), schedule_wait(s.tat_s, k.s[4]))
  end
  if k.m[1] > 0 then
    w = math.max(w, window_wait(kkey(i, 3), s.unsent, k.m[1], k.m[2]), schedule_wait(s.tat_m, k.m[4]))
  end
  if k.acct > 0 then
    local a = R.accounts[k.acct]
    if a.m[1] > 0 then
      local tat = num(redis.call('HGET', akey(k.acct, 1), 'tat_m'))
      local unsent = redis.call('ZCARD', akey(k.acct, 4))
      w = math.max(w, window_wait(akey(k.acct, 2), unsent, a.m[1], a.m[2]), schedule_wait(tat, a.m[4]))
    end
    if a.tpm > 0 then w = math.max(w, token_wait(k.acct, a.tpm, need)) end
  end
  return w
end

local function grant(i, need)
  local k, s = R.keys[i], info[i]
  local ttl = R.ttl
  if req_ttl >= 0 and req_ttl < ttl then ttl = req_ttl end
  local keep_minute = keep(MINUTE)
  if k.s[1] > 0 then redis.call('HSET', kkey(i, 1), 'tat_s', math.max(s.tat_s, now) + k.s[3]) end
  redis.call('ZADD', kkey(i, 5), now + ttl, lease)
  redis.call('PEXPIRE', kkey(i, 5), math.ceil(R.ttl / 1000) + 1000)
  if k.m[1] > 0 then redis.call('HSET', kkey(i, 1), 'tat_m', math.max(s.tat_m, now) + k.m[3]) end
  redis.call('ZADD', kkey(i, 4), now + ttl, lease)
  redis.call('PEXPIRE', kkey(i, 4), math.ceil(R.ttl / 1000) + 1000)
  redis.call('HSET', kkey(i, 1), 'last', now)
  redis.call('HINCRBY', kkey(i, 1), 'grants', 1)
  local reserved = 0
  if k.acct > 0 then
    local a, j = R.accounts[k.acct], k.acct
    redis.call('HINCRBY', akey(j, 1), 'grants', 1)
    redis.call('ZADD', akey(j, 4), now + ttl, lease)
    redis.call('PEXPIRE', akey(j, 4), math.ceil(R.ttl / 1000) + 1000)
    if a.m[1] > 0 then
      local tat = num(redis.call('HGET', akey(j, 1), 'tat_m'))
      redis.call('HSET', akey(j, 1), 'tat_m', math.max(tat, now) + a.m[3])
    end
    if a.tpm > 0 then
      reserved = need
      redis.call('ZADD', akey(j, 3), now, lease .. '|' .. string.format('%d', need))
      redis.call('PEXPIRE', akey(j, 3), keep_minute)
      redis.call('HINCRBY', akey(j, 1), 'tok_total', need)
    end
  end
  redis.call('SET', KEYS[1], k.id)
  return {1, k.id, now, now + ttl, reserved}
end

local best = NEVER
for _, i in ipairs(idx) do
  if ARGV[5] == '' or R.keys[i].id == ARGV[5] then
    local need = need_of(R.keys[i])
    local w = key_wait(i, need)
    if w == 0 then return grant(i, need) end
    if w ~= NEVER and (best == NEVER or w < best) then best = w end
  end
end
return {0, '', now, best, 0}
"""
)

SENT = (
    _STAMP
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local au, am = false, false
if #KEYS >= 5 then au, am = KEYS[4], KEYS[5] end
local second = false
if ARGV[2] == '1' then second = KEYS[2] end
local done = stamp(ARGV[1], now, KEYS[1], second, KEYS[3], au, am, tonumber(ARGV[3]), tonumber(ARGV[4]))
if done then return {now, 1} end
return {now, 0}
"""
)
"""Stamp a lease as sent now. KEYS: key unsent, second, minute, [account unsent, minute]. ARGV: lease id,
"1" when the key has a per-second window, PEXPIRE ms of the second and of the minute windows.
Returns ``{now, 1}``, or ``{now, 0}`` when the lease was not unsent (already stamped, released, expired)."""

RELEASE = (
    _STAMP
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local A = cjson.decode(ARGV[1])
local function num(v) if v then return tonumber(v) or 0 end return 0 end
local key, acct = KEYS[1], #KEYS >= 9
local au, am, second = false, false, false
if acct then au, am = KEYS[8], KEYS[9] end
if A.second then second = KEYS[4] end
stamp(A.lease, now, KEYS[3], second, KEYS[5], au, am, A.keep_second, A.keep_minute)
redis.call('ZREM', KEYS[2], A.lease)
if acct and A.tpm > 0 and A.tokens >= 0 then
  local old = A.lease .. '|' .. string.format('%d', A.est)
  local score = redis.call('ZSCORE', KEYS[7], old)
  if score then
    redis.call('ZREM', KEYS[7], old)
    redis.call('ZADD', KEYS[7], score, A.lease .. '|' .. string.format('%d', A.tokens))
    redis.call('HINCRBY', KEYS[6], 'tok_total', A.tokens - A.est)
  end
  local peak = num(redis.call('HGET', KEYS[6], 'tok_peak'))
  redis.call('HSET', KEYS[6], 'tok_peak', math.max(A.tokens, peak - math.floor(peak / A.decay)))
end
local o, cool = A.outcome, 0
local tokens = math.max(A.tokens, 0)
if o == 'ok' then
  redis.call('HINCRBY', key, 'ok', 1)
  redis.call('HINCRBY', key, 'latency_us', A.latency)
  redis.call('HINCRBY', key, 'tokens', tokens)
  redis.call('HSET', key, 'strikes', math.max(0, num(redis.call('HGET', key, 'strikes')) - 1), 'last_ok_at', now)
elseif o == 'rate_limited' then
  redis.call('HINCRBY', key, 'rate_limited', 1)
  local strikes = math.min(A.max_strikes, num(redis.call('HGET', key, 'strikes')) + 1)
  local base = A.default
  if A.retry >= 0 then base = A.retry end
  cool = math.max(math.min(A.max, base * 2 ^ (strikes - 1)), math.max(A.retry, 0))
  local until_ = math.max(num(redis.call('HGET', key, 'cool_until')), now + cool)
  redis.call('HSET', key, 'strikes', strikes, 'cool_until', until_)
elseif o == 'rejected' then
  redis.call('HINCRBY', key, 'rejected', 1)
  redis.call('HSET', key, 'disabled', 'rejected')
elseif o == 'unavailable' or o == 'failed' then
  redis.call('HINCRBY', key, 'errors', 1)
end
local failed = o ~= 'ok' and o ~= 'cancelled'
local err = A.error
if err == '' then err = o end
if failed then redis.call('HSET', key, 'last_error', err, 'last_error_at', now) end
if acct then
  if o == 'ok' then
    redis.call('HINCRBY', KEYS[6], 'ok', 1)
    redis.call('HINCRBY', KEYS[6], 'tokens_used', tokens)
  elseif o == 'rate_limited' then
    redis.call('HINCRBY', KEYS[6], 'rate_limited', 1)
  elseif failed then
    redis.call('HINCRBY', KEYS[6], 'errors', 1)
  end
  if failed then redis.call('HSET', KEYS[6], 'last_error', err, 'last_error_at', now) end
end
return {now, cool}
"""
)
"""End a lease (stamping it sent now if it was not). KEYS: key hash, leases, unsent, second, minute,
[account hash, tokens, unsent, minute]. ARGV: the release as JSON. Returns ``{now, cooldown µs}``."""

VERIFIED = """
if redis.call('HGET', KEYS[1], 'disabled') == 'rejected' then
  redis.call('HSET', KEYS[1], 'disabled', '', 'cool_until', 0, 'strikes', 0)
  return 1
end
return 0
"""
"""Re-enable a key the provider rejected, now that a verification call passed (never an operator's disable)."""
