//! The server's own write users for a named cache (`writers_file`), so a CI runner can push
//! through the server with a netrc entry instead of registry credentials or a signing key.
//!
//! Hashes are argon2 (PHC strings) or bcrypt, checked by the RustCrypto `argon2` and the
//! `bcrypt` crates. Both are slow on purpose, so every check goes through the
//! [`PasswordGate`] (bounded at once and per client), and since a netrc sends the
//! credentials with every request of a `nix copy`, a verdict is remembered for a few
//! minutes under a digest of the pair (the password itself is never kept or logged).
//!
//! A guesser learns nothing about who the writers are: an unknown name is checked against
//! a writer's hash too (the same work, the same time) and answered like a wrong password.

use std::collections::HashMap;
use std::time::Duration;

use argon2::password_hash::PasswordHash;

use crate::client_addr::ClientAddr;
use crate::error::ServerError;
use crate::password_gate::PasswordGate;

/// How long a checked password is believed (a changed writers file is read at restart).
const VERDICT_TTL: Duration = Duration::from_secs(300);
/// Good verdicts remembered; every writer's few pairs fit many times over.
const MAX_VALID_VERDICTS: u64 = 10_000;
/// Bad verdicts remembered (so a client retrying the same wrong pair costs no new check);
/// bounded apart from the good ones, so guesses never push a writer's verdict out.
const MAX_INVALID_VERDICTS: u64 = 1_000;

/// What a client's Basic credentials are to a cache with writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterCheck {
    /// Not a writer's: an unknown name or a wrong password, told apart to nobody (the
    /// credentials may still be the registry's own).
    NotAWriter,
    Valid,
}

#[derive(Debug)]
pub struct Writers {
    hashes: HashMap<String, String>,
    /// A writer's hash, checked for names that are nobody's.
    decoy: String,
    valid: moka::sync::Cache<[u8; 32], ()>,
    invalid: moka::sync::Cache<[u8; 32], ()>,
}

fn verdicts(capacity: u64) -> moka::sync::Cache<[u8; 32], ()> {
    moka::sync::Cache::builder()
        .max_capacity(capacity)
        .time_to_live(VERDICT_TTL)
        .build()
}

impl Writers {
    /// Reads `user:hash` lines; blank lines and `#` comments are skipped.
    pub fn load(path: &str) -> Result<Self, ServerError> {
        let text = std::fs::read_to_string(path).map_err(|error| ServerError::UnreadableFile {
            what: "writers_file",
            path: path.to_owned(),
            error,
        })?;
        Self::parse(&text).map_err(|reason| ServerError::InvalidWritersFile {
            path: path.to_owned(),
            reason,
        })
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut hashes = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: expected user:hash", number + 1))?;
            if !is_supported_hash(hash) {
                return Err(format!(
                    "line {}: the hash of {user:?} is neither argon2 ($argon2…) nor bcrypt ($2b$…)",
                    number + 1
                ));
            }
            if hashes.insert(user.to_owned(), hash.to_owned()).is_some() {
                return Err(format!("line {}: {user:?} is listed twice", number + 1));
            }
        }
        let decoy = hashes
            .iter()
            .min_by_key(|(user, _)| *user)
            .map(|(_, hash)| hash.clone())
            .ok_or("no writers listed")?;
        Ok(Self {
            hashes,
            decoy,
            valid: verdicts(MAX_VALID_VERDICTS),
            invalid: verdicts(MAX_INVALID_VERDICTS),
        })
    }

    /// Whether `user` and `password` are a writer's; a check that cannot run now (busy, or
    /// the client's checks spent) is an error for the request.
    pub async fn check(
        &self,
        user: &str,
        password: &str,
        gate: &PasswordGate,
        client: Option<ClientAddr>,
    ) -> Result<WriterCheck, ServerError> {
        let digest = crate::client_auth::credential_digest(user, password);
        if self.valid.contains_key(&digest) {
            return Ok(WriterCheck::Valid);
        }
        if self.invalid.contains_key(&digest) {
            return Ok(WriterCheck::NotAWriter);
        }
        let (hash, known) = match self.hashes.get(user) {
            Some(hash) => (hash.clone(), true),
            None => (self.decoy.clone(), false),
        };
        let password = password.to_owned();
        let matches = gate.check(client, move || verify(&hash, &password)).await?;
        if matches && known {
            self.valid.insert(digest, ());
            Ok(WriterCheck::Valid)
        } else {
            self.invalid.insert(digest, ());
            Ok(WriterCheck::NotAWriter)
        }
    }
}

fn is_supported_hash(hash: &str) -> bool {
    hash.starts_with("$argon2") && PasswordHash::new(hash).is_ok()
        || ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
}

fn verify(hash: &str, password: &str) -> bool {
    if hash.starts_with("$argon2") {
        PasswordHash::new(hash).is_ok_and(|parsed| verify_argon2(&parsed, password))
    } else {
        bcrypt::verify(password, hash).unwrap_or(false)
    }
}

thread_local! {
    /// The argon2 work area of this (password-checking) thread, kept between checks.
    static ARGON2_MEMORY: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// argon2's own verification, but in a work area this thread keeps: `verify_password`
/// allocates its m_cost (19 MiB at the defaults) for every check, and the allocator kept
/// each of those blocks (measured: +19 MB of peak memory per check, 168 MB after ten).
/// The comparison is `Output`'s, in constant time.
fn verify_argon2(hash: &PasswordHash<'_>, password: &str) -> bool {
    let (Some(expected), Some(salt)) = (hash.hash, hash.salt) else {
        return false;
    };
    let Ok(params) = argon2::Params::try_from(hash) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(hash.algorithm) else {
        return false;
    };
    let version = hash
        .version
        .map_or(Ok(argon2::Version::V0x13), argon2::Version::try_from);
    let Ok(version) = version else {
        return false;
    };
    let mut salt_buffer = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buffer) else {
        return false;
    };
    let blocks = params.block_count();
    let mut out = vec![0u8; expected.len()];
    let hasher = argon2::Argon2::new(algorithm, version, params);
    let computed = ARGON2_MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() < blocks {
            memory.resize(blocks, argon2::Block::default());
        }
        hasher.hash_password_into_with_memory(
            password.as_bytes(),
            salt,
            &mut out,
            &mut memory[..blocks],
        )
    });
    computed.is_ok()
        && argon2::password_hash::Output::new(&out).is_ok_and(|output| output == expected)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use argon2::password_hash::{PasswordHasher as _, SaltString};

    fn argon2_hash(password: &str) -> String {
        let salt = SaltString::encode_b64(b"a fixed test salt").unwrap();
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    fn gate() -> PasswordGate {
        PasswordGate::new(
            &oranc_config::PasswordChecksConfig::default(),
            crate::metrics::Metrics::new(None),
        )
    }

    #[tokio::test]
    async fn argon2_and_bcrypt_writers_are_checked_and_strangers_look_like_wrong_passwords() {
        let text = format!(
            "# CI writers\nci:{}\n\nadmin:{}\n",
            argon2_hash("s3cret"),
            bcrypt::hash("hunter2", 4).unwrap()
        );
        let writers = Writers::parse(&text).unwrap();
        let gate = gate();
        let check = |user: &'static str, password: &'static str| {
            let (writers, gate) = (&writers, &gate);
            async move { writers.check(user, password, gate, None).await.unwrap() }
        };
        assert_eq!(check("ci", "s3cret").await, WriterCheck::Valid);
        assert_eq!(check("ci", "wrong").await, WriterCheck::NotAWriter);
        assert_eq!(check("admin", "hunter2").await, WriterCheck::Valid);
        assert_eq!(check("admin", "s3cret").await, WriterCheck::NotAWriter);
        assert_eq!(check("me", "s3cret").await, WriterCheck::NotAWriter);
        // A remembered verdict answers the same.
        assert_eq!(check("ci", "wrong").await, WriterCheck::NotAWriter);
        assert_eq!(check("ci", "s3cret").await, WriterCheck::Valid);
    }

    #[test]
    fn a_malformed_writers_file_names_the_line() {
        for (text, needle) in [
            ("ci\n", "line 1"),
            ("ci:plaintext\n", "neither argon2"),
            ("# nobody\n", "no writers"),
            ("a:$2b$04$abcdefghijklmnopqrstuv\na:$2b$04$x\n", "line 2"),
        ] {
            let error = Writers::parse(text).unwrap_err();
            assert!(error.contains(needle), "{text:?}: {error}");
        }
    }
}
