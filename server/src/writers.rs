//! The server's own write users for a named cache (`writers_file`), so a CI runner can push
//! through the server with a netrc entry instead of registry credentials or a signing key.
//!
//! Hashes are argon2 (PHC strings) or bcrypt, checked by the RustCrypto `argon2` and the
//! `bcrypt` crates. Both are slow on purpose (tens of milliseconds), and a netrc sends the
//! credentials with every request of a `nix copy`, so a verdict is remembered for a few
//! minutes under a digest of the pair; the password itself is never kept or logged.

use std::collections::HashMap;
use std::time::Duration;

use argon2::password_hash::PasswordHash;
use argon2::PasswordVerifier as _;

/// How long a checked password is believed (a changed writers file is read at restart).
const VERDICT_TTL: Duration = Duration::from_secs(300);
const MAX_VERDICTS: u64 = 10_000;

/// What a client's Basic credentials are to a cache with writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterCheck {
    /// The user is not in the writers file (its credentials may be the registry's).
    NotAWriter,
    Valid,
    WrongPassword,
}

#[derive(Debug)]
pub struct Writers {
    hashes: HashMap<String, String>,
    verdicts: moka::sync::Cache<[u8; 32], bool>,
}

impl Writers {
    /// Reads `user:hash` lines; blank lines and `#` comments are skipped.
    pub fn load(path: &str) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read writers_file {path}: {e}"))?;
        Self::parse(&text).map_err(|e| format!("writers_file {path}: {e}"))
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
        if hashes.is_empty() {
            return Err("no writers listed".into());
        }
        Ok(Self {
            hashes,
            verdicts: moka::sync::Cache::builder()
                .max_capacity(MAX_VERDICTS)
                .time_to_live(VERDICT_TTL)
                .build(),
        })
    }

    pub async fn check(&self, user: &str, password: &str) -> WriterCheck {
        let Some(hash) = self.hashes.get(user) else {
            return WriterCheck::NotAWriter;
        };
        let digest = crate::client_auth::credential_digest(user, password);
        let valid = match self.verdicts.get(&digest) {
            Some(valid) => valid,
            None => {
                let (hash, password) = (hash.clone(), password.to_owned());
                // Deliberately slow hashing stays off the request threads.
                let valid = tokio::task::spawn_blocking(move || verify(&hash, &password))
                    .await
                    .unwrap_or(false);
                self.verdicts.insert(digest, valid);
                valid
            }
        };
        if valid {
            WriterCheck::Valid
        } else {
            WriterCheck::WrongPassword
        }
    }
}

fn is_supported_hash(hash: &str) -> bool {
    hash.starts_with("$argon2") && PasswordHash::new(hash).is_ok()
        || ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
}

fn verify(hash: &str, password: &str) -> bool {
    if hash.starts_with("$argon2") {
        PasswordHash::new(hash).is_ok_and(|parsed| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    } else {
        bcrypt::verify(password, hash).unwrap_or(false)
    }
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

    #[tokio::test]
    async fn argon2_and_bcrypt_writers_are_checked() {
        let text = format!(
            "# CI writers\nci:{}\n\nadmin:{}\n",
            argon2_hash("s3cret"),
            bcrypt::hash("hunter2", 4).unwrap()
        );
        let writers = Writers::parse(&text).unwrap();
        assert_eq!(writers.check("ci", "s3cret").await, WriterCheck::Valid);
        assert_eq!(
            writers.check("ci", "wrong").await,
            WriterCheck::WrongPassword
        );
        assert_eq!(writers.check("admin", "hunter2").await, WriterCheck::Valid);
        assert_eq!(
            writers.check("admin", "s3cret").await,
            WriterCheck::WrongPassword
        );
        assert_eq!(writers.check("me", "s3cret").await, WriterCheck::NotAWriter);
        // A remembered verdict answers the same.
        assert_eq!(
            writers.check("ci", "wrong").await,
            WriterCheck::WrongPassword
        );
        assert_eq!(writers.check("ci", "s3cret").await, WriterCheck::Valid);
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
