//! Bench clusters: the test harness's [`Cluster`] of release `flagraft-node`
//! processes, plus what the benches need on top (stream keys in the configs,
//! extra admin connections, a node's resident memory).

use crate::{admin_client, Admin};
use crate::{Cluster, ClusterOptions};
use anyhow::{anyhow, Context};
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::Endpoint;

/// Longest a bench waits for a cluster to come up or a node to be ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Points the harness at the release `flagraft-node` next to this bench binary
/// unless `FLAGRAFT_NODE_BIN` is already set. Call before any thread starts.
pub fn use_sibling_node_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("FLAGRAFT_NODE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating this binary")?;
    let bin = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent dir", exe.display()))?
        .join("flagraft-node");
    if !bin.is_file() {
        return Err(anyhow!(
            "{} not found: build it (cargo build --release -p flagraft-node) or set FLAGRAFT_NODE_BIN",
            bin.display()
        ));
    }
    // Single-threaded here (called first thing in main), so setting the
    // environment races with nothing.
    std::env::set_var("FLAGRAFT_NODE_BIN", &bin);
    Ok(bin)
}

/// A `[stream]` section granting `key` server access to project `default`.
pub fn stream_section(key: &str) -> String {
    format!(
        "\n[stream]\n\n[stream.keys]\n\"{key}\" = {{ project = \"default\", kind = \"server\" }}\n"
    )
}

/// Starts a three-node cluster with the harness's LAN timeouts (the node's
/// defaults), optionally with a stream key, and waits until every node is
/// ready and they agree on a leader.
pub async fn start(stream_key: Option<&str>) -> anyhow::Result<Cluster> {
    let c = Cluster::configure(ClusterOptions::default());
    for id in c.ids() {
        if let Some(key) = stream_key {
            let path = c.config_path(id);
            let mut text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            text.push_str(&stream_section(key));
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        c.spawn(id);
    }
    for id in c.ids() {
        c.wait_ready(id, START_TIMEOUT)
            .await
            .map_err(|e| anyhow!("{e}; node log:\n{}", tail(&c.log(id), 10)))?;
    }
    c.wait_for_leader(&c.ids(), START_TIMEOUT)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    Ok(c)
}

/// The last `n` lines of a log.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A new admin connection (its own HTTP/2 connection) to node `id`.
pub fn admin_connection(c: &Cluster, id: u64) -> anyhow::Result<Admin> {
    let channel = Endpoint::from_shared(format!("http://127.0.0.1:{}", c.ports(id).admin))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(admin_client(channel))
}

/// Resident set size of process `pid`, in bytes (`VmRSS` of /proc/<pid>/status).
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&text).ok_or_else(|| anyhow!("no VmRSS line in {path}"))
}

/// CPU time a process (all its threads) has used, in user space and in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTime {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTime {
    pub fn total(self) -> Duration {
        self.user + self.system
    }

    /// The CPU time used since `earlier` was read.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }

    /// The kernel's share of the total, in percent (NaN when nothing was used).
    pub fn system_percent(self) -> f64 {
        let total = self.total().as_secs_f64();
        if total > 0.0 {
            self.system.as_secs_f64() * 100.0 / total
        } else {
            f64::NAN
        }
    }
}

impl std::iter::Sum for CpuTime {
    fn sum<I: Iterator<Item = CpuTime>>(iter: I) -> CpuTime {
        iter.fold(CpuTime::default(), |a, b| CpuTime {
            user: a.user + b.user,
            system: a.system + b.system,
        })
    }
}

/// CPU time process `pid` has used so far.
pub fn cpu_time(pid: u32) -> anyhow::Result<CpuTime> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let (user, system) = parse_cpu_ticks(&text).ok_or_else(|| anyhow!("cannot parse {path}"))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100);
    let time = |ticks: u64| Duration::from_micros(ticks.saturating_mul(1_000_000) / hz);
    Ok(CpuTime {
        user: time(user),
        system: time(system),
    })
}

/// utime and stime (fields 14 and 15) of a /proc/<pid>/stat line; the command
/// name (field 2) may contain spaces, so fields are counted after its ')'.
fn parse_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// Total CPU time of every running node of `c`.
pub fn cluster_cpu_time(c: &Cluster) -> CpuTime {
    c.ids()
        .into_iter()
        .filter_map(|id| c.pid(id))
        .filter_map(|pid| cpu_time(pid).ok())
        .sum()
}

/// Time the threads of process `pid` have spent runnable but waiting for a
/// CPU (second field of /proc/<pid>/task/*/schedstat), summed over the threads
/// alive now: how much the machine's other load delayed it.
pub fn run_queue_wait(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .sum()
}

/// [`run_queue_wait`] of every running node of `c`.
pub fn cluster_run_queue_wait(c: &Cluster) -> Duration {
    c.ids()
        .into_iter()
        .filter_map(|id| c.pid(id))
        .map(run_queue_wait)
        .sum()
}

/// The kernel's count of connections dropped because a listen queue was full
/// (`TcpExt: ListenOverflows` of /proc/net/netstat, this network namespace).
pub fn listen_overflows() -> Option<u64> {
    parse_netstat(
        &std::fs::read_to_string("/proc/net/netstat").ok()?,
        "TcpExt:",
        "ListenOverflows",
    )
}

/// The kernel's count of TCP tail-loss probes sent (`TcpExt: TCPLossProbes`): a segment or its
/// ACK went missing and the sender probed, after at least 200 ms when one segment was in flight.
pub fn tcp_loss_probes() -> Option<u64> {
    parse_netstat(
        &std::fs::read_to_string("/proc/net/netstat").ok()?,
        "TcpExt:",
        "TCPLossProbes",
    )
}

/// Packets the kernel dropped because a CPU's input backlog was full (second column of
/// /proc/net/softnet_stat, summed over CPUs; machine-wide). Loopback traffic goes through that
/// backlog, which holds `net.core.netdev_max_backlog` packets.
pub fn backlog_drops() -> Option<u64> {
    parse_softnet_drops(&std::fs::read_to_string("/proc/net/softnet_stat").ok()?)
}

fn parse_softnet_drops(text: &str) -> Option<u64> {
    text.lines()
        .map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .sum()
}

/// A counter of /proc/net/netstat: a header line of names and a line of values.
fn parse_netstat(text: &str, prefix: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_drops_sum_the_second_column_of_every_cpu() {
        let text = "0d4ea0b3 00007c42 0000002b 00000000\n0d185229 00000010 00000025 00000000\n";
        assert_eq!(parse_softnet_drops(text), Some(0x7c42 + 0x10));
        assert_eq!(
            parse_softnet_drops("0d4ea0b3\n"),
            None,
            "a short line is not a count"
        );
        assert_eq!(parse_softnet_drops(""), Some(0));
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tflagraft-node\nVmPeak:\t  9000 kB\nVmRSS:\t   1234 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "42 (flag raft) S 1 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 4 0";
        assert_eq!(parse_cpu_ticks(stat), Some((250, 30)));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn netstat_counters_are_found_by_name() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 32 33\nIpExt: InNoRoutes\nIpExt: 5\n";
        assert_eq!(parse_netstat(text, "TcpExt:", "ListenOverflows"), Some(32));
        assert_eq!(parse_netstat(text, "TcpExt:", "Missing"), None);
        assert_eq!(parse_netstat(text, "IpExt:", "InNoRoutes"), Some(5));
    }

    #[test]
    fn own_run_queue_wait_is_readable() {
        // Zero is possible on an idle machine; the call must simply not fail.
        let _ = run_queue_wait(std::process::id());
        assert_eq!(run_queue_wait(u32::MAX), Duration::ZERO);
    }

    #[test]
    fn cpu_times_add_subtract_and_give_the_kernel_share() {
        let ms = Duration::from_millis;
        let a = CpuTime {
            user: ms(30),
            system: ms(10),
        };
        let b = CpuTime {
            user: ms(50),
            system: ms(70),
        };
        let sum: CpuTime = [a, b].into_iter().sum();
        assert_eq!(
            sum,
            CpuTime {
                user: ms(80),
                system: ms(80)
            }
        );
        assert_eq!(sum.since(a), b);
        assert_eq!(
            a.since(b),
            CpuTime::default(),
            "a counter never runs backwards"
        );
        assert_eq!(sum.system_percent(), 50.0);
        assert_eq!(b.total(), ms(120));
        assert!(CpuTime::default().system_percent().is_nan());
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(cpu_time(std::process::id()).is_ok());
    }

    #[test]
    fn own_rss_is_positive() {
        assert!(rss_bytes(std::process::id()).is_ok_and(|b| b > 0));
    }

    #[test]
    fn stream_section_parses_to_a_server_key_of_default() {
        let v: toml::Table = toml::from_str(&stream_section("k1")).unwrap();
        let grant = &v["stream"]["keys"]["k1"];
        assert_eq!(grant["project"].as_str(), Some("default"));
        assert_eq!(grant["kind"].as_str(), Some("server"));
    }
}
