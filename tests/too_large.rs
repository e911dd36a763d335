//! A too-large body gets its 413 delivered, as JSON, even to a client that writes the whole body
//! before reading (Python's `http.client` does): the proxy drains the unread rest (lingering
//! close) instead of resetting the connection under it.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::*;

/// A blocking client that sends the head and the whole body (announced by `Content-Length`, or
/// chunked), then reads one response: status line, lower-cased headers, body. Any I/O error (a
/// reset) is returned as such.
fn write_all_then_read(
    addr: SocketAddr,
    body_len: usize,
    chunked: bool,
) -> std::io::Result<(String, String, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let framing = if chunked {
        "transfer-encoding: chunked".to_owned()
    } else {
        format!("content-length: {body_len}")
    };
    let head = format!(
        "POST {MEMORIZE} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{framing}\r\n\r\n"
    );
    stream.write_all(head.as_bytes())?;
    if chunked {
        for _ in 0..body_len / 0x10000 {
            stream.write_all(b"10000\r\n")?;
            stream.write_all(&[b' '; 0x10000])?;
            stream.write_all(b"\r\n")?;
        }
        stream.write_all(b"0\r\n\r\n")?;
    } else {
        stream.write_all(&vec![b' '; body_len])?;
    }
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    let mut headers = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        let line = line.to_ascii_lowercase();
        if let Some(value) = line.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        headers.push_str(&line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((
        status.trim_end().to_owned(),
        headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// Twenty tries of a 2 MB body against a 1 MiB limit; each must read its JSON 413.
async fn twenty_413s_delivered(chunked: bool) {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |s| s.server.max_body_bytes = 1024 * 1024).await;
    let addr = proxy.addr;
    for attempt in 0..20 {
        let answer =
            tokio::task::spawn_blocking(move || write_all_then_read(addr, 2_000_000, chunked))
                .await
                .unwrap();
        let (status, headers, body) =
            answer.unwrap_or_else(|error| panic!("attempt {attempt}: {error}"));
        assert_eq!(
            status, "HTTP/1.1 413 Payload Too Large",
            "attempt {attempt}"
        );
        assert!(
            headers.contains("content-type: application/json\r\n"),
            "{headers}"
        );
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body["detail"], "request body exceeds the 1048576-byte limit",
            "{body}"
        );
    }
    assert_eq!(memu.total_hits(), 0, "memU was never contacted");
}

#[tokio::test]
async fn a_client_that_writes_a_2_mb_body_before_reading_gets_its_json_413_every_time() {
    twenty_413s_delivered(false).await;
}

#[tokio::test]
async fn a_chunked_2_mb_upload_written_before_reading_gets_its_json_413_every_time() {
    twenty_413s_delivered(true).await;
}
