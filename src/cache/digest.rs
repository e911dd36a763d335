//! Digests the same in every process: SHA-256 over length-prefixed fields (so no two different
//! field lists share an input), and lower-case hex. Slot ids (`generations.rs`), long-query keys
//! (`key.rs`) and the shared tier's key names (`shared_tier/names.rs`) are built with them. Pure.

use sha2::{Digest, Sha256};

/// A SHA-256 digest built field by field.
#[derive(Default)]
pub struct Fields(Sha256);

impl Fields {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one field, prefixed by its length.
    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// Adds an optional field: `None` and `Some("")` differ.
    pub fn optional(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.field(b"some").field(value.as_bytes()),
            None => self.field(b"none"),
        }
    }

    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}
