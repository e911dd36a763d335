//! A real `redis-server` (Debian's package; `scripts/test.sh` installs it) started by the test on
//! a free loopback port, with no persistence, killed on drop; and [`Relay`], a TCP relay in front
//! of it that can be cut (bytes stop flowing both ways, connections stay open: a partition, not a
//! refusal) and restored; and [`replica`], a proxy on a shared tier, up once it reaches Redis.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{get, wait_until, MemU, Proxy};
use tokio::net::{TcpListener, TcpStream};

/// A replica on `redis_url` in front of `memu`, with `tweak` applied after the shared settings.
pub async fn replica(
    memu: &MemU,
    redis_url: &str,
    tweak: impl FnOnce(&mut memu_proxy::config::Settings),
) -> Proxy {
    let url = redis_url.to_owned();
    let proxy = Proxy::start(&memu.url(), move |s| {
        s.shared_cache.url = Some(url);
        s.shared_cache.offline_grace_ms = 600;
        tweak(s);
    })
    .await;
    wait_for_redis(&proxy).await;
    proxy
}

/// Waits until the replica's link and stream to Redis are both up.
pub async fn wait_for_redis(proxy: &Proxy) {
    wait_until("the replica to reach Redis", 10, || async {
        let health = get(&proxy.url("/healthz")).await.json();
        health["shared_cache"]["link"] == "up" && health["shared_cache"]["stream"] == "up"
    })
    .await;
}

/// A running `redis-server`; killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// Where a persistent server keeps its snapshot (`SAVE`), read again on restart.
    dir: Option<std::path::PathBuf>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer {
            child: None,
            port,
            dir: None,
        };
        server.restart();
        server
    }

    /// Starts a server that loads its snapshot from `dir` when (re)started: `SAVE` takes one.
    pub fn start_persistent(dir: &std::path::Path) -> RedisServer {
        let mut server = RedisServer::start();
        server.dir = Some(dir.to_owned());
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills the server (as a crash would: SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty, or from its snapshot when persistent),
    /// and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"]);
        if let Some(dir) = &self.dir {
            command
                .arg("--dir")
                .arg(dir)
                .args(["--dbfilename", "dump.rdb"]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command(&["PING"]).as_deref() != Some("+PONG\r\n") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends one command (RESP) and returns the raw reply, or `None` if the server is not there.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.addr()).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut reply = vec![0; 64 * 1024];
        let n = stream.read(&mut reply).ok()?;
        (n > 0).then(|| String::from_utf8_lossy(&reply[..n]).into_owned())
    }

    /// Every key name in the server (KEYS *), as the raw reply.
    pub fn keys(&self) -> String {
        self.command(&["KEYS", "*"]).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP relay on 127.0.0.1:0 to `target`; [`Relay::cut`] silences it.
pub struct Relay {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cut);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let flag = Arc::clone(&flag);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        pump(client_read, server_write, Arc::clone(&flag)),
                        pump(server_read, client_write, flag),
                    );
                });
            }
        });
        Relay { addr, cut, task }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// From now on, bytes are read and dropped both ways: the link goes silent.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` until either ends, dropping what arrives while `cut` is set.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) if !cut.load(Ordering::SeqCst) => {
                if to.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
        }
    }
}
