//! The targets of the load generator: what each one is, where its CPU time is read, its
//! pre-serialised throughput request, and the servers behind them (the stand-in memU, the
//! memu-proxy children and the nginx children), started together and stopped when dropped.

use std::net::SocketAddr;
use std::thread;

use crate::nginx::{Nginx, Role};
use crate::pinning::thread_named;
use crate::support::child::{CpuSnapshot, ProxyProcess};
use crate::support::{MemU, OwnThread, RELATED as PATH};
use crate::{request_body, HOT_QUERY, NGINX, UPSTREAM_BODY};

/// What a target is, which decides its hit header and whether it has misses.
#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    Floor,
    Direct,
    Proxy,
    Nginx,
}

/// Where a target's CPU time is read.
#[derive(Clone, Copy)]
pub enum CpuOf {
    /// A child process and all its descendants.
    Tree(u32),
    /// One thread of this process (the stand-in memU).
    Thread(u32),
}

/// One target of the load generator.
pub struct Target {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub kind: Kind,
    pub cpu_of: Option<CpuOf>,
    /// Worker processes or threads: targets with more than one are not pinned to one CPU.
    pub workers: usize,
    /// The throughput phase's request, serialised once.
    pub raw_request: Vec<u8>,
    /// `\r\n<hit header>: <value>\r\n`, searched case-insensitively in a raw answer's head.
    pub hit_needle: Option<Vec<u8>>,
}

impl Target {
    fn new(name: &'static str, addr: SocketAddr, kind: Kind, cpu_of: Option<CpuOf>) -> Self {
        let body = request_body(HOT_QUERY);
        let mut raw_request = format!(
            "POST {PATH} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Authorization: Bearer bench-key\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw_request.extend_from_slice(&body);
        let hit_needle = hit_header(kind).map(|(h, v)| format!("\r\n{h}: {v}\r\n").into_bytes());
        let workers = 1;
        Target {
            name,
            addr,
            kind,
            cpu_of,
            workers,
            raw_request,
            hit_needle,
        }
    }

    /// The CPU time of the target's threads now; `None` if it cannot be read.
    pub fn cpu(&self) -> Option<CpuSnapshot> {
        Some(match self.cpu_of? {
            CpuOf::Tree(pid) => CpuSnapshot::of_tree(pid),
            CpuOf::Thread(tid) => CpuSnapshot::of_thread(std::process::id(), tid),
        })
    }
}

/// The response header that marks a cache hit, for the caches.
pub fn hit_header(kind: Kind) -> Option<(&'static str, &'static str)> {
    match kind {
        Kind::Proxy => Some(("cache-status", "memu-proxy; hit")),
        Kind::Nginx => Some(("x-cache-status", "HIT")),
        Kind::Floor | Kind::Direct => None,
    }
}

/// The servers measured; each guard stops its server when dropped.
pub struct Servers {
    memu: OwnThread<MemU>,
    proxies: Vec<ProxyProcess>,
    nginxes: Vec<Nginx>,
    pub targets: Vec<Target>,
    /// Targets not started, and why.
    pub skipped: Vec<(&'static str, String)>,
    /// nginx instances that were installed but failed to start.
    pub failed: u64,
}

impl Servers {
    pub fn start() -> Self {
        let memu = MemU::builder()
            .record_requests(false)
            .fixed_answer("related-memory-items", UPSTREAM_BODY)
            .start_on_own_thread();
        let memu_thread = thread_named("memu-stand-in").map(CpuOf::Thread);
        let direct = Target::new("direct", memu.addr, Kind::Direct, memu_thread);
        let upstream = memu.addr;
        let mut servers = Servers {
            memu,
            proxies: Vec::new(),
            nginxes: Vec::new(),
            targets: Vec::new(),
            skipped: Vec::new(),
            failed: 0,
        };
        servers.start_nginx("floor", 1, Role::Static);
        servers.targets.push(direct);
        servers.start_proxy("proxy", 1);
        servers.start_proxy("proxy-2", 2);
        servers.start_nginx("nginx", 1, Role::Cache(upstream));
        servers.start_nginx("nginx-auto", 0, Role::Cache(upstream));
        servers
    }

    /// The binary cargo built, `server.worker_threads = threads`, in front of the stand-in.
    fn start_proxy(&mut self, name: &'static str, threads: usize) {
        let url = self.memu.url();
        let config = format!("worker_threads = {threads}\n[upstream]\nurl = \"{url}\"\n");
        let proxy = ProxyProcess::start(env!("CARGO_BIN_EXE_memu-proxy"), name, &config);
        let addr = SocketAddr::from(([127, 0, 0, 1], proxy.port));
        let mut target = Target::new(name, addr, Kind::Proxy, Some(CpuOf::Tree(proxy.pid())));
        target.workers = threads;
        self.targets.push(target);
        self.proxies.push(proxy);
    }

    /// nginx with `workers` worker processes (0: `auto`, one per CPU), if installed.
    fn start_nginx(&mut self, name: &'static str, workers: usize, role: Role) {
        if !std::path::Path::new(NGINX).exists() {
            println!(
                "{name} skipped: {NGINX} not found; scripts/install-bench-deps.sh installs it"
            );
            return self.skipped.push((name, "nginx not installed".into()));
        }
        let count = thread::available_parallelism().map_or(1, |n| n.get());
        let (setting, workers) = match workers {
            0 => ("auto".to_string(), count),
            n => (n.to_string(), n),
        };
        let (nginx, addr) = match Nginx::start(name, &setting, role) {
            Ok(started) => started,
            Err(e) => {
                println!("!!! {name}: nginx FAILED TO START, skipped: {e}");
                self.failed += 1;
                return self.skipped.push((name, "failed to start".into()));
            }
        };
        let kind = if matches!(role, Role::Static) {
            Kind::Floor
        } else {
            Kind::Nginx
        };
        let cpu_of = Some(CpuOf::Tree(nginx.child.id()));
        let mut target = Target::new(name, addr, kind, cpu_of);
        target.workers = workers;
        self.targets.push(target);
        self.nginxes.push(nginx);
    }
}
