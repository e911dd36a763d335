//! An answer as the shared tier stores it in Redis: a text line the lookup script reads (the
//! three generations its fetch started under and the TTL it was stored with), then the replayed
//! headers and the body, length-prefixed. Pure. Anything that does not decode is a miss, never an
//! error: Redis is a cache, and another version's or a stranger's bytes are not an answer.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Generations as Redis counts them: the read's own slot, its user's every-agent slot, the
/// everything epoch: tokens, compared for equality (`delivery.rs`).
pub type SharedGenerations = [u64; 3];

/// A decoded answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub generations: SharedGenerations,
    /// The TTL it was stored with: with Redis's remaining TTL, its age.
    pub ttl: Duration,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Encodes an answer for Redis.
pub fn encode(
    generations: SharedGenerations,
    ttl: Duration,
    headers: &HeaderMap,
    body: &[u8],
) -> Vec<u8> {
    let [own, user, all] = generations;
    let line = format!("{own} {user} {all} {}\n", ttl.as_millis());
    let mut out = BytesMut::with_capacity(line.len() + 2 + headers.len() * 48 + body.len());
    out.put_slice(line.as_bytes());
    let count = headers.len().min(usize::from(u16::MAX));
    out.put_u16(count as u16);
    for (name, value) in headers.iter().take(count) {
        out.put_u16(name.as_str().len() as u16);
        out.put_slice(name.as_str().as_bytes());
        out.put_u32(value.len() as u32);
        out.put_slice(value.as_bytes());
    }
    out.put_slice(body);
    out.to_vec()
}

/// Decodes what [`encode`] wrote; `None` for anything else.
pub fn decode(bytes: &[u8]) -> Option<Record> {
    let newline = bytes.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&bytes[..newline]).ok()?;
    let mut numbers = line.split(' ').map(str::parse::<u64>);
    let mut next = || numbers.next()?.ok();
    let generations = [next()?, next()?, next()?];
    let ttl = Duration::from_millis(next()?);
    if next().is_some() {
        return None;
    }
    let mut rest = &bytes[newline + 1..];
    let count = take_u16(&mut rest)?;
    let mut headers = HeaderMap::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = usize::from(take_u16(&mut rest)?);
        let name = HeaderName::from_bytes(take(&mut rest, len)?).ok()?;
        let len = usize::try_from(take_u32(&mut rest)?).ok()?;
        let value = HeaderValue::from_bytes(take(&mut rest, len)?).ok()?;
        headers.append(name, value);
    }
    Some(Record {
        generations,
        ttl,
        headers,
        body: Bytes::copy_from_slice(rest),
    })
}

fn take<'a>(rest: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if rest.len() < len {
        return None;
    }
    let (taken, tail) = rest.split_at(len);
    *rest = tail;
    Some(taken)
}

fn take_u16(rest: &mut &[u8]) -> Option<u16> {
    (rest.remaining() >= 2).then(|| rest.get_u16())
}

fn take_u32(rest: &mut &[u8]) -> Option<u32> {
    (rest.remaining() >= 4).then(|| rest.get_u32())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        headers
    }

    #[test]
    fn records_round_trip() {
        let body = br#"{"related_memories":[]}"#;
        let bytes = encode([3, 0, 7], Duration::from_secs(300), &headers(), body);
        assert!(
            bytes.starts_with(b"3 0 7 300000\n"),
            "the script reads this line"
        );
        let record = decode(&bytes).unwrap();
        assert_eq!(record.generations, [3, 0, 7]);
        assert_eq!(record.ttl, Duration::from_secs(300));
        assert_eq!(record.headers, headers());
        assert_eq!(&record.body[..], body);
    }

    #[test]
    fn anything_else_is_not_a_record() {
        let good = encode([1, 2, 3], Duration::from_secs(1), &headers(), b"{}");
        for bad in [
            &b""[..],
            b"1 2 3\n\x00\x00{}",
            b"1 2 3 4 5\n\x00\x00{}",
            b"a b c d\n\x00\x00",
            b"1 2 3 4\n\x00",
            b"1 2 3 4\n\x00\x01\x00\x05ab",
            &good[..good.len() - 3 - 8],
        ] {
            assert_eq!(decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
