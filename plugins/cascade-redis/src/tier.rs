//! [`RedisTier`]: blocks as Redis strings, bookkeeping in Lua scripts run by the server.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cascade_core::tier::{
    Capability, Tier, TierRefresh, buffer_too_small, check_block_fits, tier_full,
};
use cascade_core::{BlockId, Error, ErrorKind, Result};
use redis::{Commands, Script};

use crate::config::RedisTierConfig;
use crate::scripts;

/// Bytes of the checksum header in front of every stored payload.
const HEADER: usize = 8;
/// Lifetime of a temporary key between the SET and the commit of a put.
const TEMP_TTL_MS: u64 = 60_000;

type Pool = r2d2::Pool<redis::Client>;
type Connection = r2d2::PooledConnection<redis::Client>;
/// What a node knows of the shared blocks: id to (length, version).
type Known = HashMap<BlockId, (u64, u64)>;

/// A tier whose blocks live in a Redis (or Valkey) server, shared by every node that
/// names the same server and prefix.
pub struct RedisTier {
    name: String,
    config: RedisTierConfig,
    tag: String,
    pool: Pool,
    len_key: String,
    used_key: String,
    ver_key: String,
    seq_key: String,
    block_prefix: String,
    /// The blocks as this node last saw them (at open, its own puts and removes, its
    /// last refresh): what `refresh` compares the server's lists with.
    known: Mutex<Known>,
    commit_script: Script,
    /// Makes this instance's temporary keys distinct from every other node's.
    nonce: u64,
    sequence: AtomicU64,
    /// The last `used` figure this node saw, and when (nanoseconds after `epoch`; 0:
    /// never), so `used()` need not cost a round trip on every store put.
    used_cache: AtomicU64,
    used_seen_at: AtomicU64,
    epoch: Instant,
    remove_script: Script,
    clear_script: Script,
}

/// A stored value: the checksum header, then the block. Written straight into the
/// command's buffer as one argument, so a put does not first join the two in a buffer
/// of its own (a copy of every block).
struct Framed<'a> {
    header: [u8; HEADER],
    data: &'a [u8],
}

impl redis::ToRedisArgs for Framed<'_> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + redis::RedisWrite,
    {
        use std::io::Write;
        let mut arg = out.writer_for_next_arg();
        // The writer appends to the command's in-memory buffer and cannot fail.
        let _ = arg.write_all(&self.header);
        let _ = arg.write_all(self.data);
    }
}

fn redis_error(context: &str, e: redis::RedisError) -> Error {
    let kind = if e.is_connection_refusal() || e.is_connection_dropped() || e.is_timeout() {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Io
    };
    Error::new(kind, format!("redis {context}: {e}"))
}

impl RedisTier {
    /// Connects to the server and checks it answers.
    ///
    /// Errors: [`ErrorKind::Config`] for a bad URL or setting, [`ErrorKind::Unavailable`]
    /// when the server cannot be reached within `connect_timeout_secs`.
    pub fn open(name: impl Into<String>, config: RedisTierConfig) -> Result<Self> {
        let name = name.into();
        if config.capacity.as_u64() == 0 {
            return Err(
                Error::config("capacity must be greater than zero").with_context("tier", &name)
            );
        }
        if config.pool_size == 0 {
            return Err(Error::config("pool_size must be at least 1").with_context("tier", &name));
        }
        if config.prefix.is_empty() || config.prefix.contains(['{', '}']) {
            return Err(
                Error::config("prefix must be non-empty and free of `{` and `}`")
                    .with_context("tier", &name),
            );
        }
        let client = redis::Client::open(config.url.as_str()).map_err(|e| {
            Error::config(format!("invalid redis url {:?}: {e}", config.url))
                .with_context("tier", &name)
        })?;
        let pool = r2d2::Pool::builder()
            .max_size(config.pool_size)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(config.connect_timeout_secs.max(1)))
            // A PING before every call would double the round trips; broken connections
            // are found by the call itself and dropped by the pool.
            .test_on_check_out(false)
            .build(client)
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("cannot connect to redis at {}: {e}", config.url),
                )
                .with_context("tier", &name)
            })?;
        let tag = format!("{{{}}}", config.prefix);
        let mut tier = Self {
            len_key: format!("{tag}:len"),
            used_key: format!("{tag}:used"),
            ver_key: format!("{tag}:ver"),
            seq_key: format!("{tag}:seq"),
            known: Mutex::new(Known::new()),
            block_prefix: format!("{tag}:b:"),
            tag: format!("{tag}:"),
            name,
            config,
            pool,
            commit_script: Script::new(scripts::COMMIT),
            nonce: {
                use std::hash::{BuildHasher, Hasher};
                // RandomState is seeded from the OS; enough to keep nodes' temp keys apart.
                let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
                hasher.write_u32(std::process::id());
                hasher.finish()
            },
            sequence: AtomicU64::new(0),
            used_cache: AtomicU64::new(0),
            used_seen_at: AtomicU64::new(0),
            epoch: Instant::now(),
            remove_script: Script::new(scripts::REMOVE),
            clear_script: Script::new(scripts::CLEAR),
        };
        tier.known = Mutex::new(tier.snapshot()?);
        Ok(tier)
    }

    /// Every block the server lists now, with its length and version, read in one
    /// transaction so the two lists agree.
    fn snapshot(&self) -> Result<Known> {
        let mut conn = self.connection()?;
        let (lens, versions): (HashMap<String, u64>, HashMap<String, u64>) = redis::pipe()
            .atomic()
            .hgetall(&self.len_key)
            .hgetall(&self.ver_key)
            .query(&mut *conn)
            .map_err(|e| self.fail("refresh", e))?;
        Ok(lens
            .into_iter()
            .filter_map(|(hex, len)| {
                let version = versions.get(&hex).copied().unwrap_or(0);
                BlockId::parse_hex(&hex).ok().map(|id| (id, (len, version)))
            })
            .collect())
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        // The map is rebuilt whole by every refresh: a panic mid-update leaves at worst
        // a change reported twice.
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn connection(&self) -> Result<Connection> {
        self.pool.get().map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                format!("no redis connection to {}: {e}", self.config.url),
            )
            .with_context("tier", &self.name)
        })
    }

    fn block_key(&self, hex: &str) -> String {
        format!("{}{hex}", self.block_prefix)
    }

    fn fail(&self, context: &str, e: redis::RedisError) -> Error {
        redis_error(context, e).with_context("tier", &self.name)
    }

    fn remove_hex(&self, conn: &mut Connection, id: BlockId, hex: &str) -> Result<bool> {
        let removed: i64 = self
            .remove_script
            .key(self.block_key(hex))
            .key(&self.len_key)
            .key(&self.used_key)
            .key(&self.ver_key)
            .arg(hex)
            .invoke(&mut **conn)
            .map_err(|e| self.fail("remove", e))?;
        self.known().remove(&id);
        if removed < 0 {
            return Ok(false);
        }
        self.saw_used(removed);
        Ok(true)
    }

    fn saw_used(&self, used: i64) {
        let now = u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        self.used_cache
            .store(u64::try_from(used).unwrap_or(0), Ordering::Relaxed);
        self.used_seen_at.store(now, Ordering::Relaxed);
    }

    fn fetch_used(&self) -> Option<u64> {
        let mut conn = self.connection().ok()?;
        let used: Option<i64> = conn.get(&self.used_key).ok()?;
        let used = used.unwrap_or(0);
        self.saw_used(used);
        Some(u64::try_from(used).unwrap_or(0))
    }
}

impl Tier for RedisTier {
    fn kind(&self) -> &str {
        crate::NAME
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn capability(&self) -> Capability {
        Capability {
            // Blocks live in the server, not in this process: a restarted node finds them.
            persistent: true,
            // Every node naming the server and prefix sees the same blocks at once; a
            // refresh tells a store which ones other nodes stored or removed.
            shared: true,
            refresh: true,
            max_block_size: self
                .config
                .max_block_size
                .as_u64()
                .min(self.config.capacity.as_u64()),
            ..Capability::default()
        }
    }

    fn capacity(&self) -> u64 {
        self.config.capacity.as_u64()
    }

    fn used(&self) -> u64 {
        let seen_at = self.used_seen_at.load(Ordering::Relaxed);
        if seen_at != 0 {
            let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
            if now.saturating_sub(seen_at) < self.config.used_refresh_ms.saturating_mul(1_000_000) {
                return self.used_cache.load(Ordering::Relaxed);
            }
        }
        self.fetch_used()
            .unwrap_or_else(|| self.used_cache.load(Ordering::Relaxed))
    }

    fn put(&self, id: BlockId, data: &[u8]) -> Result<()> {
        check_block_fits(
            &self.name,
            data.len() as u64,
            self.capability().max_block_size,
        )?;
        let value = Framed {
            header: cascade_hash::checksum(data).to_le_bytes(),
            data,
        };
        let hex = id.to_hex();
        let temp = format!(
            "{}tmp:{hex}:{:x}-{:x}",
            self.tag,
            self.nonce,
            self.sequence.fetch_add(1, Ordering::Relaxed)
        );
        let mut pipe = redis::pipe();
        // The expiry reclaims the temporary key if this node dies before the commit.
        pipe.cmd("SET")
            .arg(&temp)
            .arg(value)
            .arg("PX")
            .arg(TEMP_TTL_MS)
            .ignore();
        pipe.cmd("EVALSHA")
            .arg(self.commit_script.get_hash())
            .arg(6)
            .arg(&temp)
            .arg(self.block_key(&hex))
            .arg(&self.len_key)
            .arg(&self.used_key)
            .arg(&self.ver_key)
            .arg(&self.seq_key)
            .arg(&hex)
            .arg(self.capacity())
            .arg(data.len() as u64);
        let mut conn = self.connection()?;
        let ((used, version),): ((i64, u64),) = match pipe.query(&mut *conn) {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // A new or restarted server: load the script once and retry.
                self.commit_script
                    .load(&mut *conn)
                    .map_err(|e| self.fail("script load", e))?;
                pipe.query(&mut *conn)
            }
            other => other,
        }
        .map_err(|e| self.fail("put", e))?;
        if used >= 0 {
            self.saw_used(used);
            self.known().insert(id, (data.len() as u64, version));
            return Ok(());
        }
        drop(conn);
        let used = self.fetch_used().unwrap_or(0);
        Err(tier_full(
            &self.name,
            data.len() as u64,
            used,
            self.capacity(),
        ))
    }

    fn get(&self, id: BlockId, out: &mut [u8]) -> Result<usize> {
        let hex = id.to_hex();
        let mut conn = self.connection()?;
        let value: Option<Vec<u8>> = conn
            .get(self.block_key(&hex))
            .map_err(|e| self.fail("get", e))?;
        let Some(value) = value else {
            // A server that evicts keys (a maxmemory policy other than noeviction) can drop
            // a block behind the bookkeeping's back: forget it so `used` stays true.
            self.remove_hex(&mut conn, id, &hex)?;
            return Err(Error::not_found(id).with_context("tier", &self.name));
        };
        let Some((header, payload)) = value.split_first_chunk::<HEADER>() else {
            self.remove_hex(&mut conn, id, &hex)?;
            return Err(Error::new(
                ErrorKind::Corrupt,
                "stored block shorter than its checksum header",
            )
            .with_context("tier", &self.name)
            .with_context("id", id));
        };
        if out.len() < payload.len() {
            return Err(buffer_too_small(id, payload.len() as u64, out.len()));
        }
        if cascade_hash::checksum(payload) != u64::from_le_bytes(*header) {
            // Never serve bytes that fail their checksum; drop them so the store stops
            // pointing here.
            self.remove_hex(&mut conn, id, &hex)?;
            return Err(
                Error::new(ErrorKind::Corrupt, "block failed its checksum; dropped")
                    .with_context("tier", &self.name)
                    .with_context("id", id),
            );
        }
        out[..payload.len()].copy_from_slice(payload);
        Ok(payload.len())
    }

    fn len_of(&self, id: BlockId) -> Option<u64> {
        let mut conn = self.connection().ok()?;
        conn.hget(&self.len_key, id.to_hex()).ok().flatten()
    }

    fn remove(&self, id: BlockId) -> Result<bool> {
        let mut conn = self.connection()?;
        self.remove_hex(&mut conn, id, &id.to_hex())
    }

    fn flush(&self) -> Result<()> {
        // Durability is the server's policy (RDB/AOF); every call has reached it already.
        Ok(())
    }

    fn clear(&self) -> Result<()> {
        let mut conn = self.connection()?;
        let _: i64 = self
            .clear_script
            .key(&self.len_key)
            .key(&self.used_key)
            .key(&self.ver_key)
            .arg(&self.block_prefix)
            .invoke(&mut *conn)
            .map_err(|e| self.fail("clear", e))?;
        self.saw_used(0);
        self.known().clear();
        Ok(())
    }

    fn ids(&self) -> Vec<(BlockId, u64)> {
        let mut ids = Vec::new();
        let Ok(mut conn) = self.connection() else {
            return ids;
        };
        let entries = match conn.hscan::<_, (String, u64)>(&self.len_key) {
            Ok(entries) => entries,
            Err(_) => return ids,
        };
        for (hex, len) in entries.flatten() {
            if let Ok(id) = BlockId::parse_hex(&hex) {
                ids.push((id, len));
            }
        }
        ids
    }

    /// Compares the server's lists with what this node last saw: blocks another node
    /// stored or replaced (a new version) are added, blocks it removed are removed. A
    /// put of this node's that commits while the lists are read may be reported once.
    fn refresh(&self) -> Result<TierRefresh> {
        let now = self.snapshot()?;
        let mut known = self.known();
        let mut found = TierRefresh::default();
        for (id, &(len, version)) in &now {
            if known.get(id) != Some(&(len, version)) {
                found.added.push((*id, len));
            }
        }
        for id in known.keys() {
            if !now.contains_key(id) {
                found.removed.push(*id);
            }
        }
        *known = now;
        Ok(found)
    }
}
