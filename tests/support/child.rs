//! The release binary as a child process, for the benchmarks that measure the process itself
//! (`benches/memory.rs`, `benches/soak.rs`, `benches/loopback.rs`): started with a config of the
//! caller's, on a free loopback port, killed on drop (its temp dir removed); its resident memory
//! read from `/proc`. And the CPU time of any process tree (the proxy, or nginx's master and
//! workers), from `/proc` too.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `memu-proxy` child; killed when dropped.
pub struct ProxyProcess {
    child: Child,
    pub port: u16,
    /// Its stderr (the log).
    pub log: PathBuf,
}

impl ProxyProcess {
    /// Starts `binary` with `config` (TOML without `[server] listen`, which is set to a free
    /// port) and waits until it accepts connections.
    pub fn start(binary: &str, name: &str, config: &str) -> ProxyProcess {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("memu-proxy-{name}-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join("proxy.toml");
        std::fs::write(
            &config_path,
            format!("[server]\nlisten = \"127.0.0.1:{port}\"\n{config}"),
        )
        .unwrap();
        let log = dir.join("proxy.log");
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the proxy binary");
        let process = ProxyProcess { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the proxy did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        process
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `VmRSS` and `VmHWM` (peak), in bytes.
    pub fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The temp dir `start` made, with the config and the log.
        if let Some(dir) = self.log.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The CPU time of every thread of some processes at one moment, from `/proc`: subtract an earlier
/// snapshot ([`CpuSnapshot::since`]) for the CPU a phase cost them.
///
/// Per thread, the first field of `/proc/<pid>/task/<tid>/schedstat`: nanoseconds on a CPU, user
/// and kernel (system calls, and the network stack's work done in the thread's context). Where the
/// kernel has no schedstats, `utime + stime` from `.../stat`, in clock ticks ([`cpu_source`]).
#[derive(Debug, Default, Clone)]
pub struct CpuSnapshot(HashMap<u32, u64>);

impl CpuSnapshot {
    /// Every thread of each of `pids`.
    pub fn of(pids: &[u32]) -> CpuSnapshot {
        let mut threads = HashMap::new();
        for &pid in pids {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for tid in tasks.filter_map(|t| t.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
                if let Some(ns) = thread_cpu_ns(pid, tid) {
                    threads.insert(tid, ns);
                }
            }
        }
        CpuSnapshot(threads)
    }

    /// One thread (`tid`) of process `pid`.
    pub fn of_thread(pid: u32, tid: u32) -> CpuSnapshot {
        CpuSnapshot(
            thread_cpu_ns(pid, tid)
                .map(|ns| (tid, ns))
                .into_iter()
                .collect(),
        )
    }

    /// Every thread of `root` and of all its descendants ([`process_tree`]).
    pub fn of_tree(root: u32) -> CpuSnapshot {
        CpuSnapshot::of(&process_tree(root))
    }

    /// The CPU time the threads of `self` spent since `earlier` (a thread new since then counts
    /// in full; one that exited in between is not counted).
    pub fn since(&self, earlier: &CpuSnapshot) -> Duration {
        let spent = self.0.iter().map(|(tid, &ns)| {
            let before = earlier.0.get(tid).copied().unwrap_or(0);
            ns.saturating_sub(before)
        });
        Duration::from_nanos(spent.sum())
    }
}

/// How [`CpuSnapshot`] reads CPU time on this machine, for the benches' reports.
pub fn cpu_source() -> String {
    if std::path::Path::new("/proc/self/schedstat").exists() {
        "/proc/<pid>/task/*/schedstat (ns on CPU, user + kernel)".into()
    } else {
        format!(
            "/proc/<pid>/task/*/stat utime + stime (CLK_TCK = {})",
            clock_ticks()
        )
    }
}

fn thread_cpu_ns(pid: u32, tid: u32) -> Option<u64> {
    let task = format!("/proc/{pid}/task/{tid}");
    if let Ok(schedstat) = std::fs::read_to_string(format!("{task}/schedstat")) {
        return schedstat.split_whitespace().next()?.parse().ok();
    }
    let stat = std::fs::read_to_string(format!("{task}/stat")).ok()?;
    // Fields after the command (which may hold spaces): state is field 3; utime, stime 14, 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 1_000_000_000 / clock_ticks())
}

/// `getconf CLK_TCK`, or 100 (Linux's USER_HZ everywhere) if that fails.
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output();
        let text = out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        text.ok().and_then(|t| t.parse().ok()).unwrap_or(100)
    })
}

/// `root` and all its descendants (nginx's master, workers, cache manager and loader), found by
/// the parent pid in every `/proc/<pid>/stat`.
pub fn process_tree(root: u32) -> Vec<u32> {
    let parent_of = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse::<u32>()
            .ok()
    };
    let entries = std::fs::read_dir("/proc").into_iter().flatten();
    let pids = entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok());
    let links: Vec<(u32, u32)> = pids.filter_map(|p| Some((p, parent_of(p)?))).collect();
    let mut tree = vec![root];
    let mut next = 0;
    while let Some(&parent) = tree.get(next) {
        tree.extend(links.iter().filter(|l| l.1 == parent).map(|l| l.0));
        next += 1;
    }
    tree
}
