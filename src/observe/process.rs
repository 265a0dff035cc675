//! The process's own resource use, read from `/proc/self` (Linux): resident memory, CPU
//! time, open file descriptors, threads and start time. `/metrics` reports them and the
//! overload probe compares resident memory with its threshold. Elsewhere every figure reads
//! as unknown (`None`) rather than failing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessFigures {
    pub resident_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub threads: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

/// Resident memory in bytes (`VmRSS`, reported in KiB whatever the page size).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

pub fn read() -> ProcessFigures {
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat
        .as_deref()
        .and_then(|s| s.rsplit_once(')'))
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // `rest` starts at field 3 (state): utime is field 14, stime 15, threads 20, start 22.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let ticks = 100.0; // USER_HZ: 100 on every Linux architecture we build for
    let cpu_seconds = match (field(14), field(15)) {
        (Some(user), Some(system)) => Some((user + system) as f64 / ticks),
        _ => None,
    };
    ProcessFigures {
        resident_bytes: resident_bytes(),
        cpu_seconds,
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as u64),
        threads: field(20),
        start_time_seconds: field(22)
            .and_then(|start| Some(boot_time()?.as_secs_f64() + start as f64 / ticks)),
    }
}

/// The boot time as a wall-clock instant (from `btime` in `/proc/stat`).
fn boot_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime = stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let since_epoch = Duration::from_secs(btime);
    // Sanity: a boot time after now means the file said something else.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    (since_epoch <= now).then_some(since_epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let figures = read();
        if !cfg!(target_os = "linux") {
            return;
        }
        let rss = figures.resident_bytes.unwrap();
        assert!(rss > 1024 * 1024, "{rss}");
        assert!(figures.open_fds.unwrap() >= 3);
        assert!(figures.threads.unwrap() >= 1);
        assert!(figures.cpu_seconds.unwrap() >= 0.0);
        let start = figures.start_time_seconds.unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!(start <= now.as_secs_f64() + 1.0 && start > now.as_secs_f64() - 86_400.0 * 365.0);
    }
}
