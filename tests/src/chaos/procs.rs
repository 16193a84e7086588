//! Node processes: spawned into their network namespaces by one long-lived
//! supervisor thread, and signalled by PID.
//!
//! Every child gets `PR_SET_PDEATHSIG = SIGKILL`, so if the rig dies in any
//! way its nodes die with it. The death signal fires when the *thread* that
//! forked the child exits, which is why one dedicated thread spawns them all
//! and lives as long as the supervisor.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("node {0}: {1}")]
    Node(u64, String),
    #[error("the supervisor thread is gone")]
    Gone,
}

/// How to start node `id`.
#[derive(Clone, Debug)]
pub struct NodeLaunch {
    pub id: u64,
    pub binary: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    /// Network namespace file to enter (None: stay in the rig's namespace).
    pub netns: Option<PathBuf>,
}

enum Cmd {
    Spawn(NodeLaunch, mpsc::Sender<Result<u32, ProcError>>),
    Kill(u64, mpsc::Sender<Result<(), ProcError>>),
    Signal(u64, libc::c_int, mpsc::Sender<Result<(), ProcError>>),
    Running(u64, mpsc::Sender<bool>),
    StopAll(mpsc::Sender<()>),
}

pub struct Supervisor {
    tx: mpsc::Sender<Cmd>,
    thread: Option<JoinHandle<()>>,
}

impl Supervisor {
    /// `pid_file` lists "node <id> <pid>" for every spawn, for the outer
    /// script to clean up if even the supervisor fails.
    pub fn start(pid_file: &Path) -> Supervisor {
        let (tx, rx) = mpsc::channel();
        let pid_file = pid_file.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("chaos-supervisor".into())
            .spawn(move || run(rx, pid_file))
            .ok();
        Supervisor { tx, thread }
    }

    fn ask<T>(&self, make: impl FnOnce(mpsc::Sender<T>) -> Cmd) -> Result<T, ProcError> {
        let (reply, rx) = mpsc::channel();
        self.tx.send(make(reply)).map_err(|_| ProcError::Gone)?;
        rx.recv().map_err(|_| ProcError::Gone)
    }

    pub fn spawn(&self, launch: NodeLaunch) -> Result<u32, ProcError> {
        self.ask(|r| Cmd::Spawn(launch, r))?
    }

    /// `kill -9`, then reap.
    pub fn kill9(&self, id: u64) -> Result<(), ProcError> {
        self.ask(|r| Cmd::Kill(id, r))?
    }

    pub fn pause(&self, id: u64) -> Result<(), ProcError> {
        self.ask(|r| Cmd::Signal(id, libc::SIGSTOP, r))?
    }

    pub fn resume(&self, id: u64) -> Result<(), ProcError> {
        self.ask(|r| Cmd::Signal(id, libc::SIGCONT, r))?
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.ask(|r| Cmd::Running(id, r)).unwrap_or(false)
    }

    /// SIGCONT + SIGKILL every node and reap it.
    pub fn stop_all(&self) {
        let _ = self.ask(Cmd::StopAll);
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop_all();
        // Closing the channel ends the thread.
        let (tx, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(rx: mpsc::Receiver<Cmd>, pid_file: PathBuf) {
    let mut children: HashMap<u64, Child> = HashMap::new();
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Cmd::Spawn(launch, reply) => {
                let id = launch.id;
                let result = match children.get_mut(&id).map(|c| c.try_wait()) {
                    Some(Ok(None)) => Err(ProcError::Node(id, "already running".into())),
                    _ => spawn(&launch).map(|child| {
                        let pid = child.id();
                        note_pid(&pid_file, id, pid);
                        children.insert(id, child);
                        pid
                    }),
                };
                let _ = reply.send(result);
            }
            Cmd::Kill(id, reply) => {
                let result = match children.remove(&id) {
                    Some(mut child) => {
                        let killed = child.kill().map_err(|e| ProcError::Node(id, e.to_string()));
                        let _ = child.wait();
                        killed
                    }
                    None => Err(ProcError::Node(id, "not running".into())),
                };
                let _ = reply.send(result);
            }
            Cmd::Signal(id, sig, reply) => {
                let result = match children.get_mut(&id) {
                    Some(child) => match child.try_wait() {
                        Ok(None) => signal(child.id(), sig).map_err(|e| ProcError::Node(id, e)),
                        _ => Err(ProcError::Node(id, "not running".into())),
                    },
                    None => Err(ProcError::Node(id, "not running".into())),
                };
                let _ = reply.send(result);
            }
            Cmd::Running(id, reply) => {
                let running = children
                    .get_mut(&id)
                    .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
                let _ = reply.send(running);
            }
            Cmd::StopAll(reply) => {
                stop_all(&mut children);
                let _ = reply.send(());
            }
        }
    }
    stop_all(&mut children);
}

fn stop_all(children: &mut HashMap<u64, Child>) {
    for (_, mut child) in children.drain() {
        // SIGKILL ends a stopped (SIGSTOP) process too.
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn signal(pid: u32, sig: libc::c_int) -> Result<(), String> {
    let pid = libc::pid_t::try_from(pid).map_err(|e| e.to_string())?;
    // SAFETY: kill(2) with a PID we spawned and have not reaped.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

fn note_pid(pid_file: &Path, id: u64, pid: u32) {
    if let Ok(mut f) = File::options().create(true).append(true).open(pid_file) {
        let _ = writeln!(f, "node {id} {pid}");
    }
}

fn spawn(launch: &NodeLaunch) -> Result<Child, ProcError> {
    let id = launch.id;
    let err = |what: &str, e: std::io::Error| ProcError::Node(id, format!("{what}: {e}"));
    let log = File::options()
        .create(true)
        .append(true)
        .open(&launch.log)
        .map_err(|e| err("log file", e))?;
    let log_err = log.try_clone().map_err(|e| err("log file", e))?;
    let ns = match &launch.netns {
        Some(path) => Some(File::open(path).map_err(|e| err("network namespace", e))?),
        None => None,
    };
    let ns_fd = ns.as_ref().map(|f| f.as_raw_fd());
    let mut cmd = Command::new(&launch.binary);
    cmd.arg("--config")
        .arg(&launch.config)
        .env("RUST_LOG", "info,openraft=warn")
        .env(crate::ADMIN_KEY_ENV, crate::TEST_ADMIN_KEY)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // SAFETY: only async-signal-safe syscalls (setns, prctl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = ns_fd {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| err("spawn", e))?;
    // The namespace file stays open until here, so the fd was valid in the child.
    drop(ns);
    Ok(child)
}
