//! The Lua scripts the shared tier runs in Redis: each is one round trip, and atomic, so an
//! answer and the generations it is judged by are read (or written) at one instant. Generations
//! are tokens compared for equality, set fresh by every write and wherever one is missing
//! (`delivery.rs`).

use redis::Script;

/// KEYS: own, user, everything generations; entry; lock. ARGV: lock token ('' = no lock), lock
/// TTL in ms, three fresh generation tokens, the generations' TTL in ms. A missing generation is
/// unknown, never 0: it is set to its fresh token (the everything epoch without a TTL), so no
/// record stored before matches it. Returns `{1, record, pttl, g1, g2, g3}` for an answer stored
/// under the current generations, else `{0, '', locked, g1, g2, g3}`, having tried to take the
/// fetch lock when a token was given (`locked` 1: taken by this call, 0: held by another).
const LOOKUP: &str = r"
local g = redis.call('MGET', KEYS[1], KEYS[2], KEYS[3])
for i = 1, 3 do
  if not g[i] then
    g[i] = ARGV[2 + i]
    if i < 3 then
      redis.call('SET', KEYS[i], g[i], 'PX', ARGV[6])
    else
      redis.call('SET', KEYS[i], g[i])
    end
  end
end
local g1, g2, g3 = g[1], g[2], g[3]
local e = redis.call('GET', KEYS[4])
if e then
  local a, b, c = string.match(e, '^(%d+) (%d+) (%d+) ')
  if a == g1 and b == g2 and c == g3 then
    return {1, e, redis.call('PTTL', KEYS[4]), g1, g2, g3}
  end
end
local locked = 0
if ARGV[1] ~= '' and redis.call('SET', KEYS[5], ARGV[1], 'NX', 'PX', ARGV[2]) then
  locked = 1
end
return {0, '', locked, g1, g2, g3}
";

/// KEYS: as LOOKUP. ARGV: g1, g2, g3 (the fetch's), record, TTL in ms, lock token. Stores the
/// record only while the generations are still the fetch's (a missing one is unknown: nothing
/// is stored): an answer fetched across a write never replaces the answer valid now. Gives the
/// lock back if this token holds it, even when Redis refuses the answer (OOM). Returns 1 when
/// stored.
const STORE: &str = r"
local g = redis.call('MGET', KEYS[1], KEYS[2], KEYS[3])
local stored = 0
if g[1] == ARGV[1] and g[2] == ARGV[2] and g[3] == ARGV[3] then
  local set = redis.pcall('SET', KEYS[4], ARGV[4], 'PX', ARGV[5])
  if type(set) ~= 'table' or not set.err then
    stored = 1
  end
end
if ARGV[6] ~= '' and redis.call('GET', KEYS[5]) == ARGV[6] then
  redis.call('DEL', KEYS[5])
end
return stored
";

/// KEYS: a lock. ARGV: token. Deletes the lock if this token holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// KEYS: the generations a write bumps. ARGV: slot generations' TTL in ms, channel, message,
/// then one fresh token per key. Sets each to its fresh token (a slot's generation expires long
/// after any answer that recorded it; the everything epoch never does) and publishes the
/// message, atomically.
const INVALIDATE: &str = r"
for i, key in ipairs(KEYS) do
  if string.sub(key, -3) ~= 'g:*' then
    redis.call('SET', key, ARGV[3 + i], 'PX', ARGV[1])
  else
    redis.call('SET', key, ARGV[3 + i])
  end
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return #KEYS
";

/// The scripts, hashed once (EVALSHA, loaded on first use by the redis crate).
pub struct Scripts {
    pub lookup: Script,
    pub store: Script,
    pub release: Script,
    pub invalidate: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            lookup: Script::new(LOOKUP),
            store: Script::new(STORE),
            release: Script::new(RELEASE),
            invalidate: Script::new(INVALIDATE),
        }
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Self::new()
    }
}
