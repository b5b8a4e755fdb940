//! Worker processes at the OS level: ports, spawning into their own process group
//! with a parent-death signal, signals to the group, and the record of running
//! workers that lets the next start reap what a killed hive left behind.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// A port nobody listens on now, from `range` (tried in order, `reserved` skipped)
/// or, without a range, one the OS picks. The listener that proved it free is
/// closed before the worker binds it; a worker that then finds it taken fails to
/// start and is started again on another.
pub fn free_port(range: Option<(u16, u16)>, reserved: &HashSet<u16>) -> std::io::Result<u16> {
    let probe = |port: u16| TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    match range {
        None => loop {
            let port = probe(0)?.local_addr()?.port();
            if !reserved.contains(&port) {
                return Ok(port);
            }
        },
        Some((start, end)) => {
            for port in start..=end {
                if reserved.contains(&port) {
                    continue;
                }
                match probe(port) {
                    Ok(_) => return Ok(port),
                    Err(e) => tracing::debug!(port, "port taken: {e}"),
                }
            }
            Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("every port in {start}-{end} is taken"),
            ))
        }
    }
}

/// Whether `port` on loopback can be bound now by a server that sets `SO_REUSEADDR`
/// (as workers do): connections of an earlier process left in TIME_WAIT do not hold it.
pub fn port_is_free(port: u16) -> bool {
    let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
        return false;
    };
    socket.set_reuseaddr(true).is_ok()
        && socket
            .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .is_ok()
}

/// What is needed to start one worker process.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The executable.
    pub binary: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Environment variables to add.
    pub env: Vec<(String, String)>,
    /// Where stdout and stderr go (appended).
    pub log: PathBuf,
}

/// Variables of the hive's environment that no worker inherits, besides `RBEE_*`.
const SECRET_VARS: &[&str] = &[
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "LLAMA_API_KEY",
    "DOCKER_AUTH_CONFIG",
];

/// Starts a worker in its own process group, its output appended to its log. On
/// Linux it gets SIGKILL when the hive dies, however it dies.
pub fn spawn(launch: &Launch) -> std::io::Result<tokio::process::Child> {
    if let Some(dir) = launch.log.parent() {
        fs_err::create_dir_all(dir)?;
    }
    let log = fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)?
        .into_parts()
        .0;
    let err = log.try_clone()?;
    let mut cmd = tokio::process::Command::new(&launch.binary);
    // the hive's secrets stay with the hive: its token, the registries' and the hub's
    // credentials, every RBEE_ setting; a worker gets only what `launch.env` says
    for (key, _) in std::env::vars_os() {
        if let Some(k) = key.to_str()
            && (k.starts_with("RBEE_") || SECRET_VARS.contains(&k))
        {
            cmd.env_remove(&key);
        }
    }
    cmd.args(&launch.args)
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .process_group(0)
        .kill_on_drop(false);
    #[cfg(target_os = "linux")]
    {
        let hive = std::process::id();
        // SAFETY: runs in the forked child before exec; prctl, getppid and _exit are
        // async-signal-safe and nothing here allocates or takes a lock.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // The hive died between fork and prctl: the signal will never come.
                if std::os::unix::process::parent_id() != hive {
                    nix::libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    forker::spawn(cmd)
}

/// The one thread workers are forked from. A parent-death signal fires when the
/// *thread* that forked the child ends, not the process, and tokio ends threads on
/// its own: a worker thread that ran `block_in_place` is retired, an idle blocking
/// thread exits after ten seconds. A worker forked from one of those was killed
/// seconds after it started. This thread lives as long as the hive.
mod forker {
    use std::sync::{Mutex, OnceLock, PoisonError, mpsc};

    type Reply = mpsc::SyncSender<std::io::Result<tokio::process::Child>>;
    type Order = (tokio::process::Command, tokio::runtime::Handle, Reply);

    /// Forks `cmd` on the forker thread and waits for the child (a fork and exec:
    /// milliseconds). Outside a tokio runtime it is forked here.
    pub fn spawn(mut cmd: tokio::process::Command) -> std::io::Result<tokio::process::Child> {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return cmd.spawn();
        };
        let (reply, answer) = mpsc::sync_channel(1);
        orders()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send((cmd, handle, reply))
            .map_err(|_| std::io::Error::other("the thread that starts workers is gone"))?;
        answer
            .recv()
            .map_err(|_| std::io::Error::other("the thread that starts workers is gone"))?
    }

    fn orders() -> &'static Mutex<mpsc::Sender<Order>> {
        static ORDERS: OnceLock<Mutex<mpsc::Sender<Order>>> = OnceLock::new();
        ORDERS.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Order>();
            let started = std::thread::Builder::new()
                .name("rbee-forker".into())
                .spawn(move || {
                    for (mut cmd, handle, reply) in rx {
                        // the child is registered with the runtime that asked for it
                        let _runtime = handle.enter();
                        let _ = reply.send(cmd.spawn());
                    }
                });
            if let Err(e) = started {
                tracing::error!("cannot start the thread that starts workers: {e}");
            }
            Mutex::new(tx)
        })
    }
}

/// Sends `signal` to a worker's process group (its pid: it leads its group).
pub fn signal_group(pid: u32, signal: Signal) -> bool {
    i32::try_from(pid).is_ok_and(|pid| pid > 1 && killpg(Pid::from_raw(pid), signal).is_ok())
}

/// Whether a process with this pid exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match fs_err::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22):
/// with the pid, it names one process, even after the pid is reused.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = fs_err::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// One running worker as the record on disk keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Running {
    /// The worker's id.
    pub id: String,
    /// Its pid, which is also its process group.
    pub pid: u32,
    /// Its start time, so a reused pid is never killed.
    pub start_time: Option<u64>,
}

/// `home/run/workers.json`: the workers this hive started and has not seen exit.
#[derive(Debug)]
pub struct RunRecord {
    path: PathBuf,
    entries: std::sync::Mutex<Vec<Running>>,
}

impl RunRecord {
    /// The record of `home`.
    pub fn new(home: &Path) -> Self {
        Self {
            path: home.join("run").join("workers.json"),
            entries: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Kills the process groups of workers a previous hive left running (it was
    /// killed before it could stop them), and empties the record. Returns the pids.
    pub fn reap_leftovers(&self) -> Vec<u32> {
        let Ok(text) = fs_err::read_to_string(&self.path) else {
            return Vec::new();
        };
        let left: Vec<Running> = serde_json::from_str(&text).unwrap_or_default();
        let mut reaped = Vec::new();
        for r in left {
            if is_alive(r.pid) && start_time(r.pid) == r.start_time {
                tracing::warn!(worker = %r.id, pid = r.pid, "stopping a worker the last run left behind");
                signal_group(r.pid, Signal::SIGKILL);
                reaped.push(r.pid);
            }
        }
        self.save(&[]);
        reaped
    }

    /// Adds a started worker.
    pub fn add(&self, id: &str, pid: u32) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.retain(|r| r.pid != pid);
        entries.push(Running {
            id: id.to_owned(),
            pid,
            start_time: start_time(pid),
        });
        self.save(&entries);
    }

    /// Removes a worker that exited.
    pub fn remove(&self, pid: u32) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.retain(|r| r.pid != pid);
        self.save(&entries);
    }

    fn save(&self, entries: &[Running]) {
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                fs_err::create_dir_all(dir)?;
            }
            let tmp = self.path.with_extension("json.tmp");
            let mut f = fs_err::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &serde_json::to_vec(entries)?)?;
            f.sync_all()?;
            fs_err::rename(&tmp, &self.path)
        };
        // the write and its fsync block: on the runtime's worker threads, tokio is told
        // so, and moves the other tasks off this thread meanwhile
        let on_runtime = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let written = if on_runtime {
            tokio::task::block_in_place(write)
        } else {
            write()
        };
        if let Err(e) = written {
            tracing::error!(path = %self.path.display(), "cannot record the running workers: {e}");
        }
    }
}

/// Rotates a live worker's log past `max` bytes: its content goes to `<log>.1`
/// (replacing the one before) and the log is emptied in place, so the worker,
/// which appends to it, writes on at its start. Lines written between the copy and
/// the truncation are lost, as with logrotate's `copytruncate`. Blocking.
pub fn rotate_if_over(log: &Path, max: u64) -> std::io::Result<bool> {
    let Ok(meta) = fs_err::metadata(log) else {
        return Ok(false);
    };
    if meta.len() <= max {
        return Ok(false);
    }
    let mut older = log.as_os_str().to_owned();
    older.push(".1");
    fs_err::copy(log, std::path::PathBuf::from(older))?;
    fs_err::OpenOptions::new()
        .write(true)
        .open(log)?
        .set_len(0)?;
    Ok(true)
}

/// The last `lines` lines of a log file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    use std::io::{Read as _, Seek as _, SeekFrom};
    // the last 64 KiB, read after a seek: a log of gigabytes costs the same
    let Ok(mut f) = fs_err::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let mut text = Vec::new();
    if f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))
        .is_err()
        || f.read_to_end(&mut text).is_err()
    {
        return String::new();
    }
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::{Launch, log_tail, rotate_if_over, spawn};
    use std::io::Write as _;
    use std::os::unix::process::ExitStatusExt as _;

    /// A worker started from a thread that then ends (as tokio retires its threads)
    /// lives on: only the hive's death kills it.
    #[test]
    fn a_worker_outlives_the_thread_that_started_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|_| unreachable!());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|_| unreachable!());
        let launch = Launch {
            binary: "sleep".into(),
            args: vec!["60".into()],
            env: Vec::new(),
            log: dir.path().join("w.log"),
        };
        let handle = runtime.handle().clone();
        let mut child = std::thread::spawn(move || {
            let _runtime = handle.enter();
            spawn(&launch)
        })
        .join()
        .unwrap_or_else(|_| unreachable!())
        .unwrap_or_else(|e| panic!("{e}"));
        let pid = child.id().unwrap_or_else(|| unreachable!());
        // the thread is gone; a parent-death signal would have been SIGKILL
        assert!(super::signal_group(pid, nix::sys::signal::Signal::SIGTERM));
        let status = runtime
            .block_on(child.wait())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            status.signal(),
            Some(nix::sys::signal::Signal::SIGTERM as i32),
            "{status:?}"
        );
    }

    #[test]
    fn a_live_log_past_its_limit_is_rotated_in_place() {
        let dir = tempfile::tempdir().unwrap_or_else(|_| unreachable!());
        let log = dir.path().join("w.log");
        // the worker's handle: append mode, as the hive opens it
        let mut worker = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|_| unreachable!());
        for i in 0..1000 {
            writeln!(worker, "line {i}").unwrap_or_else(|_| unreachable!());
        }
        assert_eq!(
            rotate_if_over(&log, 1 << 20).ok(),
            Some(false),
            "under the limit"
        );
        assert_eq!(rotate_if_over(&log, 100).ok(), Some(true));
        let older = fs_err::read_to_string(dir.path().join("w.log.1")).unwrap_or_default();
        assert!(older.ends_with("line 999\n"), "the old part is kept");
        // the worker writes on at the start of the emptied file
        writeln!(worker, "after").unwrap_or_else(|_| unreachable!());
        assert_eq!(fs_err::read_to_string(&log).unwrap_or_default(), "after\n");
        assert_eq!(log_tail(&log, 5), "after");
    }
}
