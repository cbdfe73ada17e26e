//! SCRAM-SHA-256 verifiers as PostgreSQL stores them in `pg_authid.rolpassword`
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, RFC 5802/7677).
//!
//! Computing them here lets `pg_role` (1) tell whether the stored password is the secret's
//! without ever changing it, and (2) send the server a ready verifier, so the cleartext
//! password never reaches PostgreSQL (nor its logs, nor `pg_stat_activity`).

use data_encoding::BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

const PREFIX: &str = "SCRAM-SHA-256$";
/// PostgreSQL's default (`scram_iterations` in 16+, fixed in 15).
pub const ITERATIONS: u32 = 4096;
/// PostgreSQL's salt length.
pub const SALT_LEN: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl Verifier {
    /// The verifier of `password` with this salt and iteration count. PostgreSQL runs the
    /// password through SASLprep first, which leaves printable ASCII unchanged; callers refuse
    /// anything else (see `usable_password`).
    pub fn compute(password: &str, salt: &[u8], iterations: u32) -> Verifier {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        Verifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// A fresh verifier with a random salt.
    pub fn new(password: &str) -> std::io::Result<Verifier> {
        let mut salt = [0u8; SALT_LEN];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut salt)?;
        Ok(Verifier::compute(password, &salt, ITERATIONS))
    }

    /// Parse a stored `rolpassword`; `None` for anything else (MD5, plain text).
    pub fn parse(s: &str) -> Option<Verifier> {
        let (head, keys) = s.strip_prefix(PREFIX)?.split_once('$')?;
        let (iterations, salt) = head.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(Verifier {
            iterations: iterations.parse().ok().filter(|i| *i > 0)?,
            salt: BASE64.decode(salt.as_bytes()).ok()?,
            stored_key: BASE64.decode(stored.as_bytes()).ok()?.try_into().ok()?,
            server_key: BASE64.decode(server.as_bytes()).ok()?.try_into().ok()?,
        })
    }

    /// Whether `password` is the one this verifier was made from (same salt and iterations).
    pub fn matches(&self, password: &str) -> bool {
        Verifier::compute(password, &self.salt, self.iterations) == *self
    }
}

impl std::fmt::Display for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{PREFIX}{}:{}${}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(&self.stored_key),
            BASE64.encode(&self.server_key)
        )
    }
}

/// Passwords whose verifier we compute exactly as clients do: printable ASCII, which SASLprep
/// leaves as it is. Other characters would need the full SASLprep (Unicode normalisation),
/// and a mistake there would lock the application out.
pub fn usable_password(password: &str) -> bool {
    !password.is_empty() && password.bytes().all(|b| (0x20..0x7f).contains(&b))
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}
