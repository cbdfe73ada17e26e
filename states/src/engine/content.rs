//! File content that remembers whether it was derived from a secret, and how it is shown.

use sha2::{Digest, Sha256};
use similar::TextDiff;

/// Bytes for a file, marked secret when any secret went into them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content {
    pub bytes: Vec<u8>,
    pub secret: bool,
}

impl Content {
    pub fn public(bytes: impl Into<Vec<u8>>) -> Self {
        Content { bytes: bytes.into(), secret: false }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `sha256_hex` of everything `r` gives, a piece at a time (a downloaded file may be large).
pub fn sha256_hex_of(mut r: impl std::io::Read) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0; 64 << 10];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(hex::encode(h.finalize())),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// How secret content is shown everywhere: its size, never the text nor a hash of it (an
/// unkeyed hash of a small file lets anyone who reads the report test guesses of the password
/// offline). A diff is shown only when the content changed, so nothing is lost.
pub fn redacted(bytes: &[u8]) -> String {
    let lines = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
    format!("<redacted: {lines} lines, {} bytes>", bytes.len())
}

/// A unified diff from `old` to `new` for `path`; redacted when either side is secret, a short
/// note when either side is not text.
pub fn unified_diff(path: &str, old: &[u8], new: &[u8], secret: bool) -> String {
    if secret {
        return format!("{} -> {}", redacted(old), redacted(new));
    }
    match (std::str::from_utf8(old), std::str::from_utf8(new)) {
        (Ok(o), Ok(n)) => TextDiff::from_lines(o, n).unified_diff().context_radius(3).header(path, path).to_string(),
        _ => format!(
            "binary content: {} bytes sha256 {} -> {} bytes sha256 {}",
            old.len(),
            &sha256_hex(old)[..12],
            new.len(),
            &sha256_hex(new)[..12]
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_diff_shows_no_text() {
        let d = unified_diff("/x", b"", b"password=canary-123\n", true);
        assert!(!d.contains("canary"), "{d}");
        assert_eq!(d, "<redacted: 0 lines, 0 bytes> -> <redacted: 1 lines, 20 bytes>");
        assert!(!d.contains(&sha256_hex(b"password=canary-123\n")[..12]), "{d}");
    }

    #[test]
    fn a_hash_read_in_pieces_is_the_hash_of_the_whole() {
        let big = vec![7u8; (64 << 10) * 2 + 3];
        assert_eq!(sha256_hex_of(&big[..]).unwrap(), sha256_hex(&big));
    }

    #[test]
    fn text_diff_is_unified() {
        let d = unified_diff("/etc/motd", b"a\nb\n", b"a\nc\n", false);
        assert!(d.contains("--- /etc/motd") && d.contains("-b") && d.contains("+c"), "{d}");
    }
}
