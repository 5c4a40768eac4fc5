//! The Redis peer: a redis-server started by the benchmark on a free loopback port,
//! 128 KiB (the block size) SET and GET, pipelined, over several connections.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cascade::{Error, ErrorKind, Result};

use crate::bench::{Bench, RwFigures};
use crate::dataset::Dataset;
use crate::stats::{Samples, gbps};

/// How long the server gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A redis-server child process, killed and reaped on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's version line, or why it cannot run.
pub fn probe(binary: &Path) -> std::result::Result<String, String> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| {
            format!(
                "{} not runnable ({e}); scripts/install-peers.sh installs redis-server",
                binary.display()
            )
        })?;
    if !output.status.success() {
        return Err(format!("{} --version failed", binary.display()));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    // "Redis server v=7.0.15 sha=... malloc=..." -> "Redis server v=7.0.15"
    let short: Vec<&str> = text
        .split_whitespace()
        .take_while(|w| !w.starts_with("sha="))
        .collect();
    Ok(short.join(" "))
}

fn start(binary: &Path, dir: &Path) -> Result<Server> {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::io("cannot find a free loopback port", e))?
        .port();
    let child = Command::new(binary)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args([
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::io("cannot start redis-server", e))?;
    let mut server = Server { child, port };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(server);
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("redis-server exited at start: {status}"),
            ));
        }
        if Instant::now() > deadline {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "redis-server did not listen within 10 s",
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn redis_error(what: &'static str) -> impl Fn(redis::RedisError) -> Error {
    move |e| Error::new(ErrorKind::Io, format!("{what}: {e}"))
}

/// SET then GET GB/s of every block, after one untimed warm-up pass; the values are
/// checked against the blocks after each GET pass.
pub fn measure(bench: &Bench, ds: &mut Dataset) -> Result<(RwFigures, String)> {
    let version = probe(&bench.args.redis_server)
        .map_err(|reason| Error::new(ErrorKind::Unavailable, reason))?;
    let dir = bench.run_dir.fresh("redis")?;
    let server = start(&bench.args.redis_server, &dir)?;
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", server.port))
        .map_err(redis_error("redis client"))?;
    let connections = (bench.args.redis_connections as usize)
        .min(ds.blocks())
        .max(1);
    let mut links = (0..connections)
        .map(|_| {
            client
                .get_connection()
                .map_err(redis_error("redis connect"))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = ds.total_bytes();
    let batch = bench.batch();
    let mut writes = Vec::new();
    let mut reads = Vec::new();
    for rep in 0..=bench.repeat() {
        ds.reset_read_back();
        let write = set_all(&mut links, ds, batch)?;
        let read = get_all(&mut links, ds, batch)?;
        ds.verify("redis GET")?;
        if rep > 0 {
            writes.push(gbps(bytes, write));
            reads.push(gbps(bytes, read));
        }
    }
    drop(links);
    drop(server);
    Ok((
        RwFigures {
            write: Samples::new(writes),
            read: Samples::new(reads),
        },
        format!("{version}; {connections} connections, pipelines of {batch}"),
    ))
}

/// Blocks `[lo, hi)` of connection `c` of `n`.
fn share(blocks: usize, c: usize, n: usize) -> (usize, usize) {
    (blocks * c / n, blocks * (c + 1) / n)
}

/// Waits for every client thread; the first error (or panic) is the result.
fn join_all(jobs: Vec<std::thread::ScopedJoinHandle<'_, Result<()>>>) -> Result<()> {
    jobs.into_iter().try_for_each(|job| {
        job.join()
            .map_err(|_| Error::new(ErrorKind::Io, "a redis client thread panicked"))?
    })
}

fn set_all(links: &mut [redis::Connection], ds: &Dataset, batch: usize) -> Result<Duration> {
    let n = links.len();
    let start = Instant::now();
    std::thread::scope(|scope| {
        let jobs: Vec<_> = links
            .iter_mut()
            .enumerate()
            .map(|(c, link)| {
                scope.spawn(move || -> Result<()> {
                    let (lo, hi) = share(ds.blocks(), c, n);
                    let mut first = lo;
                    while first < hi {
                        let end = (first + batch).min(hi);
                        let mut pipe = redis::pipe();
                        for i in first..end {
                            pipe.set(ds.ids()[i].as_bytes().as_slice(), ds.block(i))
                                .ignore();
                        }
                        pipe.query::<()>(link).map_err(redis_error("redis SET"))?;
                        first = end;
                    }
                    Ok(())
                })
            })
            .collect();
        join_all(jobs)
    })?;
    Ok(start.elapsed())
}

fn get_all(links: &mut [redis::Connection], ds: &mut Dataset, batch: usize) -> Result<Duration> {
    let n = links.len();
    let block = ds.block_size();
    let ids = ds.ids().to_vec();
    let mut parts: Vec<&mut [u8]> = Vec::with_capacity(n);
    let mut rest = ds.read_back_mut();
    for c in 0..n {
        let (lo, hi) = share(ids.len(), c, n);
        let (head, tail) = rest.split_at_mut((hi - lo) * block);
        parts.push(head);
        rest = tail;
    }
    let start = Instant::now();
    std::thread::scope(|scope| {
        let jobs: Vec<_> = links
            .iter_mut()
            .zip(parts)
            .enumerate()
            .map(|(c, (link, part))| {
                let ids = &ids;
                scope.spawn(move || -> Result<()> {
                    let (lo, hi) = share(ids.len(), c, n);
                    for (chunk_ids, chunk_out) in ids[lo..hi]
                        .chunks(batch)
                        .zip(part.chunks_mut(batch * block))
                    {
                        let mut pipe = redis::pipe();
                        for id in chunk_ids {
                            pipe.get(id.as_bytes().as_slice());
                        }
                        let values: Vec<Vec<u8>> =
                            pipe.query(link).map_err(redis_error("redis GET"))?;
                        for (value, out) in values.iter().zip(chunk_out.chunks_mut(block)) {
                            if value.len() != out.len() {
                                return Err(Error::new(
                                    ErrorKind::NotFound,
                                    "redis returned a value of the wrong size",
                                ));
                            }
                            out.copy_from_slice(value);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        join_all(jobs)
    })?;
    Ok(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_block_once() {
        let mut covered = 0;
        for c in 0..7 {
            let (lo, hi) = share(100, c, 7);
            assert_eq!(lo, covered);
            covered = hi;
        }
        assert_eq!(covered, 100);
    }

    #[test]
    fn a_missing_server_binary_is_a_reason_not_a_panic() {
        let reason = probe(Path::new("/nonexistent/redis-server"))
            .err()
            .unwrap_or_default();
        assert!(reason.contains("install-peers.sh"), "{reason}");
    }
}
