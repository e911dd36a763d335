//! The nginx children the bench measures: a process with its own config and temp dir, stopped and
//! cleaned up on drop, serving either memU's answer from its config (the `floor`) or as a caching
//! proxy in front of the stand-in memU (`nginx`, `nginx-auto`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::{NGINX, UPSTREAM_BODY};

/// What an nginx instance serves.
#[derive(Clone, Copy)]
pub enum Role {
    /// memU's answer from its config (`return 200`): the CPU floor of an HTTP server.
    Static,
    /// A caching proxy in front of this upstream, as memu-proxy is.
    Cache(SocketAddr),
}

/// An nginx child with its own config and temp dir; stopped and cleaned up on drop (and panic).
pub struct Nginx {
    pub child: Child,
    dir: PathBuf,
    args: Vec<String>,
}

impl Nginx {
    /// Starts nginx as `name` with `worker_processes {workers}` serving as `role`.
    pub fn start(name: &str, workers: &str, role: Role) -> Result<(Self, SocketAddr), String> {
        let free = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
        let addr = free.map_err(|e| format!("no free port: {e}"))?;
        let dir = std::env::temp_dir().join(format!("memu-bench-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // Workers run as `nobody` when we are root: let them reach the cache dir.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
        let (conf, log) = (dir.join("nginx.conf"), dir.join("error.log"));
        let files = [("-c", &conf), ("-p", &dir), ("-e", &log)];
        let args = files
            .map(|(flag, path)| [flag.into(), path.display().to_string()])
            .concat();
        let text = nginx_conf(&dir.display().to_string(), addr, workers, role);
        let spawn =
            std::fs::write(&conf, text).and_then(|()| Command::new(NGINX).args(&args).spawn());
        let child = spawn.map_err(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            format!("cannot start {NGINX}: {e}")
        })?;
        let mut nginx = Nginx { child, dir, args };
        nginx.wait_ready(addr)?;
        Ok((nginx, addr))
    }

    fn wait_ready(&mut self, addr: SocketAddr) -> Result<(), String> {
        let give_up = Instant::now() + Duration::from_secs(5);
        while Instant::now() < give_up {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
                return Err(format!("nginx exited with {status}:\n{log}"));
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(10));
        }
        Err("nginx did not answer within 5 s".into())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let mut stop = Command::new(NGINX);
        let _ = stop
            .args(&self.args)
            .args(["-s", "stop"])
            .stderr(Stdio::null())
            .status();
        let give_up = Instant::now() + Duration::from_secs(3);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < give_up {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nginx_conf(dir: &str, listen: SocketAddr, workers: &str, role: Role) -> String {
    let (cache, location) = match role {
        Role::Static => (
            String::new(),
            format!("default_type application/json;\n            return 200 '{UPSTREAM_BODY}';"),
        ),
        Role::Cache(upstream) => (nginx_cache(dir, upstream), NGINX_CACHE_LOCATION.into()),
    };
    // keepalive_requests: nginx closes keep-alive connections after 1000 requests by default.
    format!(
        r#"daemon off;
master_process on;
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
{cache}
    server {{
        listen {listen};
        keepalive_requests 1000000;
        client_body_buffer_size 64k;
        location / {{
            {location}
        }}
    }}
}}
"#
    )
}

/// The cache zone and the pooled upstream of `Role::Cache`.
fn nginx_cache(dir: &str, upstream: SocketAddr) -> String {
    format!(
        r#"    proxy_cache_path {dir}/cache levels=1:2 keys_zone=memu:10m max_size=256m use_temp_path=off;
    upstream memu {{
        server {upstream};
        keepalive 64;
        keepalive_requests 1000000;
    }}"#
    )
}

const NGINX_CACHE_LOCATION: &str = r#"proxy_pass http://memu;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache memu;
            proxy_cache_methods POST;
            proxy_cache_key "$request_uri|$http_authorization|$request_body";
            proxy_cache_lock on;
            proxy_cache_valid 200 5m;
            add_header X-Cache-Status $upstream_cache_status always;"#;
