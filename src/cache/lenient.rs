//! Reading a write's body as memU reads it, when serde_json alone cannot. Pure.
//!
//! FastAPI parses a body with Python's `json.loads(bytes)`, which accepts what serde_json
//! rejects: a UTF-8 byte-order mark, UTF-16 and UTF-32 (detected as `json.detect_encoding`
//! does), `NaN` and `Infinity`, `1e400`, lone surrogates in `\u` escapes, nesting deeper than 128.
//! memU applies such a write; the proxy must still invalidate what it touches. [`text`] undoes
//! the encoding, so serde_json can try again; where it still fails, [`user_ids`] scans the text
//! for the `user_id` strings it names, and the caller invalidates every scope of those users (or
//! everything, when the scan finds none it can read): more than the write touched, never less.

use std::borrow::Cow;

/// `body` as text, decoded as `json.detect_encoding` would: byte-order marks first, then the
/// pattern of zero bytes at the start; invalid sequences replaced.
pub fn text(body: &[u8]) -> Cow<'_, str> {
    const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
    match body {
        [0, 0, 0xFE, 0xFF, rest @ ..] => Cow::Owned(utf32(rest, u32::from_be_bytes)),
        [0xFF, 0xFE, 0, 0, rest @ ..] => Cow::Owned(utf32(rest, u32::from_le_bytes)),
        [0xFE, 0xFF, rest @ ..] => Cow::Owned(utf16(rest, u16::from_be_bytes)),
        [0xFF, 0xFE, rest @ ..] => Cow::Owned(utf16(rest, u16::from_le_bytes)),
        _ if body.starts_with(UTF8_BOM) => String::from_utf8_lossy(&body[UTF8_BOM.len()..]),
        [0, 0, _, _, ..] => Cow::Owned(utf32(body, u32::from_be_bytes)),
        [0, _, _, _, ..] => Cow::Owned(utf16(body, u16::from_be_bytes)),
        [_, 0, 0, 0, ..] => Cow::Owned(utf32(body, u32::from_le_bytes)),
        [_, 0, _, _, ..] => Cow::Owned(utf16(body, u16::from_le_bytes)),
        _ => String::from_utf8_lossy(body),
    }
}

fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> String {
    let units = bytes.chunks_exact(2).map(|c| unit([c[0], c[1]]));
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

fn utf32(bytes: &[u8], unit: fn([u8; 4]) -> u32) -> String {
    bytes
        .chunks_exact(4)
        .map(|c| {
            char::from_u32(unit([c[0], c[1], c[2], c[3]])).unwrap_or(char::REPLACEMENT_CHARACTER)
        })
        .collect()
}

/// Every `"user_id": "<string>"` member in `text`, at any depth, key and value as JSON decodes
/// them (so `"user\u005fid"` is one too). `None` when a `user_id` member holds anything else, or
/// a string JSON cannot decode (a lone surrogate): the scan cannot say whose memories the write
/// touches. Strings are walked whole, so text inside another string is never taken for a member.
pub fn user_ids(text: &str) -> Option<Vec<String>> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('"') {
        let literal = string_literal(&rest[at..])?;
        rest = &rest[at + literal.len()..];
        let Some(value) = rest.trim_start().strip_prefix(':') else {
            continue;
        };
        let is_user_id = match serde_json::from_str::<String>(literal) {
            Ok(key) => key == "user_id",
            // A key JSON cannot decode might spell `user_id`: unknown.
            Err(_) => return None,
        };
        if !is_user_id {
            continue;
        }
        let value = value.trim_start();
        let literal = string_literal(value)?;
        found.push(serde_json::from_str::<String>(literal).ok()?);
        rest = &value[literal.len()..];
    }
    Some(found)
}

/// The JSON string literal at the start of `text`, quotes included.
fn string_literal(text: &str) -> Option<&str> {
    let body = text.strip_prefix('"')?;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(&text[..i + 2]),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded_utf16(text: &str, big_endian: bool, bom: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let units = bom.then_some(0xFEFF).into_iter().chain(text.encode_utf16());
        for unit in units {
            out.extend(if big_endian {
                unit.to_be_bytes()
            } else {
                unit.to_le_bytes()
            });
        }
        out
    }

    fn encoded_utf32(text: &str, big_endian: bool, bom: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let chars = bom.then_some('\u{FEFF}').into_iter().chain(text.chars());
        for c in chars {
            let c = u32::from(c);
            out.extend(if big_endian {
                c.to_be_bytes()
            } else {
                c.to_le_bytes()
            });
        }
        out
    }

    #[test]
    fn bodies_decode_as_json_detect_encoding_decodes_them() {
        let json = r#"{"user_id":"ユーザー"}"#;
        let mut bodies = vec![
            json.as_bytes().to_vec(),
            [b"\xEF\xBB\xBF", json.as_bytes()].concat(),
        ];
        for big_endian in [true, false] {
            for bom in [true, false] {
                bodies.push(encoded_utf16(json, big_endian, bom));
                bodies.push(encoded_utf32(json, big_endian, bom));
            }
        }
        for body in bodies {
            assert_eq!(text(&body), json, "{body:?}");
        }
    }

    #[test]
    fn the_scan_finds_every_user_id_member_and_only_members() {
        let cases: &[(&str, Option<Vec<&str>>)] = &[
            (r#"{"user_id":"u","score":NaN}"#, Some(vec!["u"])),
            (
                r#"{"user_id":"a","user\u005fid":"victim","x":NaN}"#,
                Some(vec!["a", "victim"]),
            ),
            (r#"{"k":"user_id","v":"user_id:","x":1e400}"#, Some(vec![])),
            (r#"{"\ud800":1,"user_id":"u"}"#, None),
            (
                r#"{"user": {"user_id" : "u\u00e9", "agent_id": "a"}, "x": 1e400}"#,
                Some(vec!["ué"]),
            ),
            (
                r#"{"a":"\"user_id\": \"mallory\"","user_id":"u"}"#,
                Some(vec!["u"]),
            ),
            (r#"{"user_id":"a","user_id":"b"}"#, Some(vec!["a", "b"])),
            (r#"{"text":"\ud800","score":Infinity}"#, Some(vec![])),
            (r#"{"user_id":"\ud800"}"#, None),
            (r#"{"user_id":5}"#, None),
            (r#"{"user_id":"unterminated"#, None),
        ];
        for (body, want) in cases {
            let want = want
                .as_ref()
                .map(|ids| ids.iter().map(|s| s.to_string()).collect());
            assert_eq!(user_ids(body), want, "{body}");
        }
    }
}
