//! [`GpuTierConfig`]: the settings of a `gpu` tier, read from its `[[tiers]]` entry.

use cascade_core::config::ByteSize;
use cascade_core::{Error, Result};
use serde::Deserialize;

/// Settings of a `gpu` tier.
///
/// ```toml
/// [[tiers]]
/// kind = "gpu"
/// device_id = 0
/// capacity = "16 GiB"
/// streams = 4
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpuTierConfig {
    /// CUDA device ordinal. Default: 0.
    pub device_id: usize,
    /// Bytes of device memory the tier holds, allocated as one slab when the tier opens.
    /// Default: 1 GiB.
    pub capacity: ByteSize,
    /// CUDA streams copies are spread over; batches rotate their groups of copies among
    /// them. Between 1 and 64. Default: 4.
    pub streams: usize,
    /// Size of each pinned staging buffer that pageable host memory is copied through.
    /// At least 64 KiB. Default: 4 MiB.
    pub staging_buffer_size: ByteSize,
    /// Number of pinned staging buffers, allocated at open. Several are filled by the
    /// copy threads at once while others are in DMA, so there should be a few more
    /// buffers than copy threads. At least 1. Default: 16 (64 MiB pinned in all).
    pub staging_buffers: usize,
    /// Threads that copy between pageable memory and the staging buffers; 0 picks one
    /// per core, at most 16 (one thread copies about 8 GB/s, a PCIe Gen5 link moves 55).
    /// Default: 0.
    pub copy_threads: usize,
    /// Copies handed to the driver in one `cuMemcpyBatchAsync` call. Between 1 and 4096.
    /// Default: 64 (128 KiB blocks reach full PCIe rate in groups of about 64).
    pub batch_group: usize,
    /// Register the host memory of the tier below (the shm pool, or a memory tier) with
    /// CUDA when the store attaches it, so moves between the two are one DMA with no
    /// staging copy. Registering pins the whole region (about 54 ms per GiB on an H100
    /// host), which also faults in any page not yet touched. Default: true.
    pub register_below: bool,
}

impl Default for GpuTierConfig {
    fn default() -> Self {
        Self {
            device_id: 0,
            capacity: ByteSize::gib(1),
            streams: 4,
            staging_buffer_size: ByteSize::mib(4),
            staging_buffers: 16,
            copy_threads: 0,
            batch_group: 64,
            register_below: true,
        }
    }
}

impl GpuTierConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.capacity.as_u64() == 0 {
            return Err(Error::config("capacity must be greater than zero"));
        }
        if !(1..=64).contains(&self.streams) {
            return Err(Error::config("streams must be between 1 and 64")
                .with_context("streams", self.streams));
        }
        let staging = self.staging_buffer_size.as_u64();
        if !(64 << 10..=1 << 30).contains(&staging) {
            return Err(
                Error::config("staging_buffer_size must be between 64 KiB and 1 GiB")
                    .with_context("staging_buffer_size", self.staging_buffer_size),
            );
        }
        if !(1..=1024).contains(&self.staging_buffers) {
            return Err(Error::config("staging_buffers must be between 1 and 1024")
                .with_context("staging_buffers", self.staging_buffers));
        }
        if self.copy_threads > 256 {
            return Err(Error::config("copy_threads must be at most 256")
                .with_context("copy_threads", self.copy_threads));
        }
        if !(1..=4096).contains(&self.batch_group) {
            return Err(Error::config("batch_group must be between 1 and 4096")
                .with_context("batch_group", self.batch_group));
        }
        Ok(())
    }

    /// The copy thread count after resolving 0 to the machine's cores (at most 16).
    pub fn resolved_copy_threads(&self) -> usize {
        match self.copy_threads {
            0 => std::thread::available_parallelism().map_or(4, |n| n.get().min(16)),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        GpuTierConfig::default().validate().unwrap();
        assert!(GpuTierConfig::default().resolved_copy_threads() >= 1);
    }

    #[test]
    fn bad_values_are_config_errors() {
        let bad = [
            GpuTierConfig {
                capacity: ByteSize::b(0),
                ..Default::default()
            },
            GpuTierConfig {
                streams: 0,
                ..Default::default()
            },
            GpuTierConfig {
                staging_buffer_size: ByteSize::kib(4),
                ..Default::default()
            },
            GpuTierConfig {
                staging_buffers: 0,
                ..Default::default()
            },
            GpuTierConfig {
                batch_group: 0,
                ..Default::default()
            },
        ];
        for config in bad {
            let err = config.validate().unwrap_err();
            assert_eq!(err.kind(), cascade_core::ErrorKind::Config, "{config:?}");
        }
    }

    #[test]
    fn parses_from_toml_with_units() {
        let config: GpuTierConfig =
            toml::from_str("device_id = 1\ncapacity = \"2 GiB\"\nstreams = 8\n").unwrap();
        assert_eq!(config.device_id, 1);
        assert_eq!(config.capacity, ByteSize::gib(2));
        assert_eq!(config.streams, 8);
        assert_eq!(config.staging_buffers, 16);
        assert!(toml::from_str::<GpuTierConfig>("colour = 3").is_err());
    }
}
