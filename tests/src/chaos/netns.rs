//! Network partitions with real network namespaces.
//!
//! Each node runs in its own namespace with one address, `10.X.Y.<id>/32` on
//! its loopback device, and is joined to every other node by a point-to-point
//! veth pair carrying a /32 route to that peer's address. A second veth pair
//! joins each namespace to the rig's (root) namespace, so the rig's clients
//! and subscribers reach every node at all times: only node-to-node links are
//! ever cut.
//!
//! A cut is per direction: `cut(a, b)` replaces a's route to b with a
//! blackhole route, so every packet from a to b is dropped (b's TCP
//! acknowledgments to a still flow, which is exactly a one-way partition).
//! Established connections stall and new ones fail at once (`EINVAL` from a
//! blackhole route); `heal` restores the route. This kernel has no `netem`,
//! and no iptables/nft, so routes are the drop mechanism.
//!
//! Everything is created under names derived from the rig's PID and removed
//! on drop (deleting a namespace destroys its veth ends, and with them the
//! peer ends in the root namespace). Needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("`ip {args}` failed: {stderr}")]
    Command { args: String, stderr: String },
    #[error("cannot run ip: {0}")]
    Spawn(std::io::Error),
}

pub struct Netns {
    tag: String,
    nodes: Vec<u64>,
    prefix: [u8; 2],
    /// Namespaces created so far (removed on drop).
    created: Vec<String>,
    /// Directed links currently cut.
    cut: Mutex<BTreeSet<(u64, u64)>>,
}

fn ip(args: &[&str]) -> Result<(), NetError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(NetError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Command {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

impl Netns {
    /// Creates one namespace per node and all the links. `run_id` makes names
    /// and addresses unique among concurrent rigs (the PID is a good choice).
    pub fn create(nodes: &[u64], run_id: u32) -> Result<Netns, NetError> {
        // 10.X.Y.0/24 with X in 64..128: away from the usual 10.0/16 and 10.1/16.
        let prefix = [64 + ((run_id >> 8) % 64) as u8, (run_id & 0xff) as u8];
        let mut net = Netns {
            tag: format!("frc{:04x}", run_id & 0xffff),
            nodes: nodes.to_vec(),
            prefix,
            created: Vec::new(),
            cut: Mutex::new(BTreeSet::new()),
        };
        // On error, drop removes whatever was created.
        net.build()?;
        Ok(net)
    }

    fn build(&mut self) -> Result<(), NetError> {
        for &id in &self.nodes.clone() {
            let ns = self.ns_name(id);
            ip(&["netns", "add", &ns])?;
            self.created.push(ns.clone());
            let addr = format!("{}/32", self.node_ip(id));
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "lo"])?;
            // The rig's side: <tag>h<id> in the root namespace, "host" inside.
            let host_if = format!("{}h{id}", self.tag);
            let host_ip = self.host_ip(id).to_string();
            let node_ip = self.node_ip(id).to_string();
            ip(&[
                "link", "add", &host_if, "type", "veth", "peer", "name", "host", "netns", &ns,
            ])?;
            ip(&["addr", "add", &format!("{host_ip}/32"), "dev", &host_if])?;
            ip(&["link", "set", &host_if, "up"])?;
            ip(&["-n", &ns, "link", "set", "host", "up"])?;
            ip(&[
                "route",
                "add",
                &format!("{node_ip}/32"),
                "dev",
                &host_if,
                "src",
                &host_ip,
            ])?;
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                &format!("{host_ip}/32"),
                "dev",
                "host",
                "src",
                &node_ip,
            ])?;
        }
        let nodes = self.nodes.clone();
        for (i, &a) in nodes.iter().enumerate() {
            for &b in &nodes[i + 1..] {
                let (ns_a, ns_b) = (self.ns_name(a), self.ns_name(b));
                ip(&[
                    "link",
                    "add",
                    &format!("p{b}"),
                    "netns",
                    &ns_a,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &format!("p{a}"),
                    "netns",
                    &ns_b,
                ])?;
                ip(&["-n", &ns_a, "link", "set", &format!("p{b}"), "up"])?;
                ip(&["-n", &ns_b, "link", "set", &format!("p{a}"), "up"])?;
                self.route(a, b)?;
                self.route(b, a)?;
            }
        }
        Ok(())
    }

    /// The normal route from `from` to `to` over their link.
    fn route(&self, from: u64, to: u64) -> Result<(), NetError> {
        ip(&[
            "-n",
            &self.ns_name(from),
            "route",
            "replace",
            &format!("{}/32", self.node_ip(to)),
            "dev",
            &format!("p{to}"),
            "src",
            &self.node_ip(from).to_string(),
        ])
    }

    pub fn ns_name(&self, id: u64) -> String {
        format!("{}-n{id}", self.tag)
    }

    /// The file to `setns` into to run a process in node `id`'s namespace.
    pub fn ns_path(&self, id: u64) -> PathBuf {
        PathBuf::from("/run/netns").join(self.ns_name(id))
    }

    /// Node `id`'s address (it listens and is reached there).
    pub fn node_ip(&self, id: u64) -> Ipv4Addr {
        Ipv4Addr::new(10, self.prefix[0], self.prefix[1], id as u8)
    }

    /// The rig's address on its link to node `id`.
    fn host_ip(&self, id: u64) -> Ipv4Addr {
        Ipv4Addr::new(10, self.prefix[0], self.prefix[1], 100 + id as u8)
    }

    pub fn namespaces(&self) -> &[String] {
        &self.created
    }

    fn cut_set(&self) -> std::sync::MutexGuard<'_, BTreeSet<(u64, u64)>> {
        self.cut.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops every packet from `from` to `to`.
    pub fn cut(&self, from: u64, to: u64) -> Result<(), NetError> {
        ip(&[
            "-n",
            &self.ns_name(from),
            "route",
            "replace",
            "blackhole",
            &format!("{}/32", self.node_ip(to)),
        ])?;
        self.cut_set().insert((from, to));
        Ok(())
    }

    pub fn heal(&self, from: u64, to: u64) -> Result<(), NetError> {
        self.route(from, to)?;
        self.cut_set().remove(&(from, to));
        Ok(())
    }

    /// Cuts `id` off from every other node, both ways.
    pub fn isolate(&self, id: u64) -> Result<(), NetError> {
        for &other in self.nodes.iter().filter(|&&o| o != id) {
            self.cut(id, other)?;
            self.cut(other, id)?;
        }
        Ok(())
    }

    /// Restores every cut link.
    pub fn heal_all(&self) -> Result<(), NetError> {
        let cut: Vec<(u64, u64)> = self.cut_set().iter().copied().collect();
        for (from, to) in cut {
            self.heal(from, to)?;
        }
        Ok(())
    }

    pub fn cut_links(&self) -> Vec<(u64, u64)> {
        self.cut_set().iter().copied().collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in self.created.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("chaos: could not remove network namespace {ns}: {e}");
            }
        }
    }
}

/// Whether this process may create network namespaces (it tries one).
pub fn available(run_id: u32) -> Result<(), NetError> {
    let probe = format!("frc{:04x}-probe", run_id & 0xffff);
    ip(&["netns", "add", &probe])?;
    ip(&["netns", "del", &probe])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// A UDP socket bound to `addr` inside `ns` (a socket stays in the
    /// namespace it was created in, whichever thread uses it later).
    fn udp_in(ns: &std::path::Path, addr: Ipv4Addr) -> UdpSocket {
        let ns = std::fs::File::open(ns).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on this short-lived thread only.
                assert_eq!(
                    unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                    0
                );
                let sock = UdpSocket::bind((addr, 0)).unwrap();
                sock.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                sock
            })
            .join()
            .unwrap()
        })
    }

    /// Whether a datagram from `from` reaches `to` (within the read timeout).
    fn reaches(from: &UdpSocket, to: &UdpSocket) -> bool {
        let target: SocketAddr = to.local_addr().unwrap();
        // Several tries: the first datagram may wait for ARP.
        for _ in 0..3 {
            if from.send_to(b"ping", target).is_err() {
                return false;
            }
            let mut buf = [0u8; 8];
            if let Ok((n, _)) = to.recv_from(&mut buf) {
                return &buf[..n] == b"ping";
            }
        }
        false
    }

    fn tcp_listener_in(ns: &std::path::Path, addr: Ipv4Addr) -> std::net::TcpListener {
        let ns = std::fs::File::open(ns).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on this short-lived thread only.
                assert_eq!(
                    unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                    0
                );
                std::net::TcpListener::bind((addr, 0)).unwrap()
            })
            .join()
            .unwrap()
        })
    }

    /// Whether a new TCP connection from inside `ns` to `to` succeeds.
    fn tcp_connects(ns: &std::path::Path, to: SocketAddr) -> bool {
        let ns = std::fs::File::open(ns).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on this short-lived thread only.
                assert_eq!(
                    unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                    0
                );
                std::net::TcpStream::connect_timeout(&to, Duration::from_millis(300)).is_ok()
            })
            .join()
            .unwrap()
        })
    }

    #[test]
    fn repeated_isolation_cuts_new_tcp_connections_every_time() {
        let run_id = std::process::id() ^ 0x3c3c;
        if let Err(e) = available(run_id) {
            eprintln!("skipped: network namespaces are not available here ({e})");
            return;
        }
        let net = Netns::create(&[1, 2, 3], run_id).unwrap();
        let listeners: Vec<std::net::TcpListener> = (1..=3)
            .map(|id| tcp_listener_in(&net.ns_path(id), net.node_ip(id)))
            .collect();
        let addr = |id: u64| listeners[(id - 1) as usize].local_addr().unwrap();
        for round in 0..20u64 {
            let lone = round % 3 + 1;
            net.isolate(lone).unwrap();
            for other in (1..=3).filter(|&o| o != lone) {
                assert!(
                    !tcp_connects(&net.ns_path(lone), addr(other)),
                    "round {round}: {lone} -> {other}"
                );
                assert!(
                    !tcp_connects(&net.ns_path(other), addr(lone)),
                    "round {round}: {other} -> {lone}"
                );
            }
            net.heal_all().unwrap();
            for other in (1..=3).filter(|&o| o != lone) {
                assert!(
                    tcp_connects(&net.ns_path(lone), addr(other)),
                    "round {round}: healed {lone} -> {other}"
                );
            }
        }
    }

    #[test]
    fn cuts_are_per_direction_and_the_rig_always_reaches_every_node() {
        let run_id = std::process::id() ^ 0x5a5a;
        if let Err(e) = available(run_id) {
            eprintln!("skipped: network namespaces are not available here ({e})");
            return;
        }
        let net = Netns::create(&[1, 2, 3], run_id).unwrap();
        let s: Vec<UdpSocket> = (1..=3)
            .map(|id| udp_in(&net.ns_path(id), net.node_ip(id)))
            .collect();
        let rig = UdpSocket::bind(("0.0.0.0", 0)).unwrap();
        assert!(reaches(&s[0], &s[1]) && reaches(&s[1], &s[0]));
        assert!(reaches(&rig, &s[0]));

        net.cut(1, 2).unwrap();
        assert!(!reaches(&s[0], &s[1]), "1 -> 2 is cut");
        assert!(reaches(&s[1], &s[0]), "2 -> 1 still flows");
        assert!(reaches(&s[0], &s[2]), "1 -> 3 untouched");
        net.heal(1, 2).unwrap();
        assert!(reaches(&s[0], &s[1]));

        net.isolate(3).unwrap();
        assert!(!reaches(&s[2], &s[0]) && !reaches(&s[0], &s[2]));
        assert!(!reaches(&s[2], &s[1]) && !reaches(&s[1], &s[2]));
        assert!(reaches(&s[0], &s[1]), "the majority still talks");
        assert!(reaches(&rig, &s[2]), "the rig reaches an isolated node");
        assert_eq!(net.cut_links().len(), 4);
        net.heal_all().unwrap();
        assert!(net.cut_links().is_empty());
        assert!(reaches(&s[2], &s[0]) && reaches(&s[1], &s[2]));

        let names = net.namespaces().to_vec();
        drop(s);
        drop(net);
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let listed = String::from_utf8_lossy(&out.stdout);
        for n in names {
            assert!(!listed.contains(&n), "{n} was not removed");
        }
    }
}
