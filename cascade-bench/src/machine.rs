//! The machine and the moment of a run, for the report's header.

use serde::Serialize;

/// What ran the benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Logical CPUs of the machine.
    pub cpus: usize,
    /// Logical CPUs this process may run on (fewer under `mpirun`'s binding or taskset).
    pub usable_cpus: usize,
    /// Memory in GiB.
    pub memory_gib: u64,
    /// Whether the CPU reports running under a hypervisor.
    pub virtualized: bool,
}

impl Machine {
    /// Reads /proc (Linux); unknown fields stay empty.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let virtualized = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .is_some_and(|l| l.split_whitespace().any(|f| f == "hypervisor"));
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let usable_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let listed = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        Self {
            cpu,
            cpus: listed.max(usable_cpus),
            usable_cpus,
            memory_gib: (kib + (1 << 19)) >> 20,
            virtualized,
        }
    }

    /// One line, e.g. "2 vCPU AMD EPYC 7B13 (virtualized), 24 GiB".
    pub fn describe(&self) -> String {
        let unit = if self.virtualized { "vCPU" } else { "CPU" };
        let virt = if self.virtualized {
            " (virtualized)"
        } else {
            ""
        };
        let bound = if self.usable_cpus < self.cpus {
            format!(" (this process bound to {})", self.usable_cpus)
        } else {
            String::new()
        };
        format!(
            "{} {unit} {}{virt}, {} GiB{bound}",
            self.cpus, self.cpu, self.memory_gib
        )
    }
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Formats seconds since the epoch as `YYYY-MM-DD HH:MM UTC`.
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_in_utc() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_utc(1_795_696_200), "2026-11-26 12:30 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00 UTC");
    }
}
