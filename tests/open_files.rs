//! The binary under a soft open-files limit of 1024 (a service's usual start): it raises the limit
//! to the hard one, so 3,000 idle connections do not stop another client being served.
//! Skipped (with a note) where the hard limit leaves no room to show it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const IDLE: usize = 3_000;

/// The proxy binary started by a shell that first lowers the soft limit to 1024; killed on drop.
struct Binary(Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary and reads its log up to the "listening" line, which names the address.
fn start_under_1024() -> (Binary, SocketAddr) {
    let mut child = Command::new("sh")
        .args(["-c", r#"ulimit -Sn 1024 && exec "$0" "$@""#])
        .arg(env!("CARGO_BIN_EXE_memu-proxy"))
        .args(["--config", "/dev/null", "--listen", "127.0.0.1:0"])
        .args(["--upstream", "http://127.0.0.1:9"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let binary = Binary(child);
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(log.read_line(&mut line).unwrap() > 0, "the binary exited");
        if let Some(rest) = line.split("listen=").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    // Keep reading the log so the binary never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
    (binary, addr)
}

#[test]
fn three_thousand_idle_connections_under_a_1024_soft_limit_do_not_stop_other_clients() {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    if hard < 4 * IDLE as u64 {
        eprintln!("skipped: the hard open-files limit {hard} is too low to show this");
        return;
    }
    // This process holds the idle clients' ends.
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let (_binary, addr) = start_under_1024();
    // A connect may wait out a SYN retransmit while the proxy catches up; a few may fail.
    let mut idle = Vec::with_capacity(IDLE);
    let mut failed = 0;
    while idle.len() < IDLE && failed < 50 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(stream) => idle.push(stream),
            Err(_) => failed += 1,
        }
    }
    assert!(idle.len() > 2 * 1024, "only {} connected", idle.len());
    let mut client = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    client
        .read_to_string(&mut answer)
        .expect("an answer within 10 s");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(idle);
}
