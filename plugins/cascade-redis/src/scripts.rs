//! Lua scripts run inside the server, so that the capacity check and the bookkeeping
//! of a put or remove are one atomic step for every node sharing the prefix.
//!
//! Keys (all under one hash tag, so a script touches a single slot):
//! - `{prefix}:b:<id hex>`: the block, an 8-byte little-endian xxh3-64 checksum of the
//!   payload followed by the payload;
//! - `{prefix}:len`: a hash from id hex to payload length (listing and `len_of`);
//! - `{prefix}:used`: the sum of payload lengths;
//! - `{prefix}:ver`: a hash from id hex to the version of its bytes, a number from
//!   `{prefix}:seq` that grows with every commit, so a node's refresh tells a block
//!   another node replaced (even with one of the same length) from one it already knew;
//!   a block without one (written before versions) counts as version 0;
//! - `{prefix}:tmp:<id hex>:<nonce>`: a block on its way in (see [`COMMIT`]).
//!
//! The payload itself never passes through Lua: a 128 KiB argument handed to a script
//! costs the server several times a plain SET.
//! A put is therefore a pipeline of `SET tmp value PX 60000` and [`COMMIT`], one round
//! trip.

/// Publishes a block written to a temporary key, or drops it when the tier is full.
/// KEYS: temporary key, block, len hash, used, version hash, sequence. ARGV: id hex,
/// capacity, payload length. Returns `{new used, version}` when stored, `{-1, 0}` when
/// the tier would exceed its capacity.
pub const COMMIT: &str = r"
local old = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
local used = tonumber(redis.call('GET', KEYS[4]) or '0')
local len = tonumber(ARGV[3])
if used - old + len > tonumber(ARGV[2]) then
  redis.call('UNLINK', KEYS[1])
  return {-1, 0}
end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('PERSIST', KEYS[2])
redis.call('HSET', KEYS[3], ARGV[1], len)
local version = redis.call('INCR', KEYS[6])
redis.call('HSET', KEYS[5], ARGV[1], version)
return {redis.call('INCRBY', KEYS[4], len - old), version}
";

/// KEYS: block, len hash, used, version hash. ARGV: id hex. Returns the new `used` when
/// removed, -1 when absent.
pub const REMOVE: &str = r"
local old = redis.call('HGET', KEYS[2], ARGV[1])
if not old then
  return -1
end
redis.call('UNLINK', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
return redis.call('DECRBY', KEYS[3], tonumber(old))
";

/// KEYS: len hash, used, version hash. ARGV: block key prefix (`{prefix}:b:`).
/// Returns the number of blocks removed. The sequence is kept: versions never repeat.
pub const CLEAR: &str = r"
local ids = redis.call('HKEYS', KEYS[1])
for _, id in ipairs(ids) do
  redis.call('UNLINK', ARGV[1] .. id)
end
redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[3])
redis.call('SET', KEYS[2], 0)
return #ids
";
