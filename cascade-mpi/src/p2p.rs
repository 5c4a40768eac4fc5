//! The MPI point-to-point bandwidth for one message size: the limit a remote read of
//! blocks that size is compared with, measured in the same run.

use std::time::Instant;

use cascade_core::Result;

use crate::comm::Comm;

/// What [`p2p_bandwidth`] measured.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct P2pBandwidth {
    /// Message size in bytes.
    pub message_bytes: usize,
    /// Messages each rank received.
    pub messages: usize,
    /// Messages in flight per rank at once.
    pub window: usize,
    /// Seconds from the first message to the last, slowest rank.
    pub seconds: f64,
    /// Bytes each rank received per second (slowest rank), in GB/s.
    pub per_rank_gbps: f64,
    /// All ranks together, in GB/s.
    pub aggregate_gbps: f64,
}

/// Measures MPI point-to-point bandwidth with every rank at once, as in a remote read
/// where each rank reads blocks others hold (collective): rank r sends `messages`
/// messages of `message_bytes` to rank r+1 and receives as many from rank r-1 (a ring),
/// `window` in flight. Buffers are allocated and touched before the clock starts.
///
/// Returns `None` on a single rank (there is no peer).
pub fn p2p_bandwidth(
    message_bytes: usize,
    messages: usize,
    window: usize,
) -> Result<Option<P2pBandwidth>> {
    let comm = Comm::dup_world()?;
    let (rank, size) = (comm.rank(), comm.size());
    if size < 2 {
        return Ok(None);
    }
    let window = window.clamp(1, messages.max(1));
    let dest = (rank + 1) % size;
    let source = (rank + size - 1) % size;
    let send = vec![0xA5u8; message_bytes * window];
    let mut recv = vec![0u8; message_bytes * window];
    // One untimed round warms the transport (connections, registration caches).
    round(&comm, &send, &mut recv, message_bytes, window, dest, source)?;
    comm.barrier()?;
    let start = Instant::now();
    let mut done = 0;
    while done < messages {
        let n = window.min(messages - done);
        round(&comm, &send, &mut recv, message_bytes, n, dest, source)?;
        done += n;
    }
    let mine = start.elapsed().as_secs_f64();
    comm.barrier()?;
    // Every rank's time (a sum of one-hot vectors gathers them); the slowest counts.
    let times = comm.sum_u64(&one_hot(rank as usize, size as usize, (mine * 1e9) as u64))?;
    let seconds = times.iter().copied().max().unwrap_or(0) as f64 / 1e9;
    let bytes = (message_bytes * messages) as f64;
    let per_rank = if seconds > 0.0 {
        bytes / seconds / 1e9
    } else {
        0.0
    };
    Ok(Some(P2pBandwidth {
        message_bytes,
        messages,
        window,
        seconds,
        per_rank_gbps: per_rank,
        aggregate_gbps: per_rank * f64::from(size),
    }))
}

fn one_hot(rank: usize, size: usize, value: u64) -> Vec<u64> {
    let mut v = vec![0u64; size];
    v[rank] = value;
    v
}

fn round(
    comm: &Comm,
    send: &[u8],
    recv: &mut [u8],
    message_bytes: usize,
    n: usize,
    dest: i32,
    source: i32,
) -> Result<()> {
    let parts: Vec<&[u8]> = send.chunks(message_bytes.max(1)).take(n).collect();
    let mut buffers: Vec<&mut [u8]> = recv.chunks_mut(message_bytes.max(1)).take(n).collect();
    comm.exchange_parts(&parts, dest, &mut buffers, source, 1)?;
    Ok(())
}
