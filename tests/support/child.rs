//! The release binary as a child process, for the benchmarks that measure the process itself
//! (`benches/memory.rs`, `benches/soak.rs`): started with a config of the caller's, on a free
//! loopback port, killed on drop; its resident memory read from `/proc`.

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
    }
}
