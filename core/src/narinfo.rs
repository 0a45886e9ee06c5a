//! `.narinfo` files: parse what Nix (or the original oranc) wrote and render exactly what
//! Nix writes.
//!
//! Written here rather than taken from the `narinfo` crate: that crate only parses into
//! borrowed strings, cannot render, and reports no line numbers; we need typed fields,
//! byte-exact rendering in Nix's field order and errors that say which line was wrong.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::hash::Sha256Hash;
use crate::path_info::PathInfo;
use crate::signing::{fingerprint, PublicKey, SecretKey, Signature};
use crate::store_path::{StoreDir, StorePath};

/// Content type of a narinfo object.
pub const CONTENT_TYPE: &str = "text/x-nix-narinfo";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    pub store_dir: StoreDir,
    pub store_path: StorePath,
    /// Where the NAR is, relative to the cache (`nar/<hash>.nar.zst`).
    pub url: String,
    /// `zstd`, `xz`, `bzip2`, `none`...; Nix assumes `bzip2` when absent.
    pub compression: Option<String>,
    pub file_hash: Option<Sha256Hash>,
    pub file_size: Option<u64>,
    pub nar_hash: Sha256Hash,
    pub nar_size: u64,
    pub references: Vec<StorePath>,
    pub deriver: Option<StorePath>,
    pub system: Option<String>,
    pub signatures: Vec<Signature>,
    pub ca: Option<String>,
    /// Fields this version does not know, kept in order so that nothing is lost.
    pub unknown_fields: Vec<(String, String)>,
}

impl NarInfo {
    /// A narinfo for `info` whose NAR is stored at `url`.
    pub fn for_path(store_dir: &StoreDir, info: &PathInfo, url: String) -> Self {
        Self {
            store_dir: store_dir.clone(),
            store_path: info.path.clone(),
            url,
            compression: None,
            file_hash: None,
            file_size: None,
            nar_hash: info.nar_hash,
            nar_size: info.nar_size,
            references: info.references.clone(),
            deriver: info.deriver.clone(),
            system: None,
            signatures: info.signatures.clone(),
            ca: info.ca.clone(),
            unknown_fields: Vec::new(),
        }
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(
            &self.store_dir,
            &self.store_path,
            &self.nar_hash,
            self.nar_size,
            &self.references,
        )
    }

    /// Signs with `key`, replacing any signature under the same key name (a stale one would
    /// only fail to verify).
    pub fn sign(&mut self, key: &SecretKey) {
        self.signatures.retain(|s| s.key_name() != key.name());
        self.signatures.push(key.sign(&self.fingerprint()));
    }

    /// True when any signature verifies with any of `keys`.
    pub fn is_signed_by_any(&self, keys: &[PublicKey]) -> bool {
        let fp = self.fingerprint();
        self.signatures
            .iter()
            .any(|sig| keys.iter().any(|key| key.verifies(&fp, sig)))
    }

    pub fn parse(text: &str) -> Result<Self> {
        NarInfoParser::default().parse(text)
    }
}

impl FromStr for NarInfo {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Renders in Nix's order and spelling (`NarInfo::to_string` in libstore), so that a narinfo
/// Nix wrote parses and renders back to the same bytes.
impl fmt::Display for NarInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "StorePath: {}", self.store_dir.display(&self.store_path))?;
        writeln!(f, "URL: {}", self.url)?;
        if let Some(compression) = &self.compression {
            writeln!(f, "Compression: {compression}")?;
        }
        if let Some(hash) = &self.file_hash {
            writeln!(f, "FileHash: {hash}")?;
        }
        if let Some(size) = self.file_size {
            writeln!(f, "FileSize: {size}")?;
        }
        writeln!(f, "NarHash: {}", self.nar_hash)?;
        writeln!(f, "NarSize: {}", self.nar_size)?;
        let refs: Vec<&str> = self.references.iter().map(StorePath::as_str).collect();
        writeln!(f, "References: {}", refs.join(" "))?;
        if let Some(deriver) = &self.deriver {
            writeln!(f, "Deriver: {deriver}")?;
        }
        if let Some(system) = &self.system {
            writeln!(f, "System: {system}")?;
        }
        for sig in &self.signatures {
            writeln!(f, "Sig: {sig}")?;
        }
        if let Some(ca) = &self.ca {
            writeln!(f, "CA: {ca}")?;
        }
        for (key, value) in &self.unknown_fields {
            writeln!(f, "{key}: {value}")?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct NarInfoParser {
    store_path: Option<(StoreDir, StorePath)>,
    url: Option<String>,
    compression: Option<String>,
    file_hash: Option<Sha256Hash>,
    file_size: Option<u64>,
    nar_hash: Option<Sha256Hash>,
    nar_size: Option<u64>,
    references: Option<Vec<StorePath>>,
    deriver: Option<Option<StorePath>>,
    system: Option<String>,
    signatures: Vec<Signature>,
    ca: Option<String>,
    unknown_fields: Vec<(String, String)>,
}

fn set_once<T>(slot: &mut Option<T>, value: T, field: &str) -> std::result::Result<(), String> {
    if slot.is_some() {
        return Err(format!("{field} appears twice"));
    }
    *slot = Some(value);
    Ok(())
}

fn parse_store_path_field(value: &str) -> std::result::Result<(StoreDir, StorePath), String> {
    let (dir, base) = value
        .rsplit_once('/')
        .ok_or_else(|| format!("StorePath {value:?} is not an absolute path"))?;
    let dir = StoreDir::new(dir).map_err(|e| e.to_string())?;
    let path = StorePath::from_base_name(base).map_err(|e| e.to_string())?;
    Ok((dir, path))
}

impl NarInfoParser {
    fn parse(mut self, text: &str) -> Result<NarInfo> {
        let mut line_no = 0;
        // Lines end at '\n' only, as in Nix's parser: a '\r' is part of the value (so what
        // we accept renders back the same, and is what Nix would read).
        for line in text.strip_suffix('\n').unwrap_or(text).split('\n') {
            line_no += 1;
            if line.is_empty() {
                continue;
            }
            self.field(line).map_err(|reason| Error::InvalidNarinfo {
                line: line_no,
                reason,
            })?;
        }
        self.finish(line_no)
    }

    fn field(&mut self, line: &str) -> std::result::Result<(), String> {
        let (key, value) = line
            .split_once(": ")
            .or_else(|| line.strip_suffix(':').map(|k| (k, "")))
            .ok_or_else(|| format!("expected 'Field: value', found {line:?}"))?;
        let parse_u64 = |field: &str| {
            value
                .parse::<u64>()
                .map_err(|_| format!("{field} {value:?} is not a number"))
        };
        let parse_hash = |field: &str| {
            value
                .parse::<Sha256Hash>()
                .map_err(|e| format!("{field}: {e}"))
        };
        match key {
            "StorePath" => set_once(&mut self.store_path, parse_store_path_field(value)?, key),
            "URL" if value.is_empty() => Err("URL is empty".into()),
            "URL" => set_once(&mut self.url, value.to_owned(), key),
            "Compression" => set_once(&mut self.compression, value.to_owned(), key),
            "FileHash" => set_once(&mut self.file_hash, parse_hash(key)?, key),
            "FileSize" => set_once(&mut self.file_size, parse_u64(key)?, key),
            "NarHash" => set_once(&mut self.nar_hash, parse_hash(key)?, key),
            "NarSize" => set_once(&mut self.nar_size, parse_u64(key)?, key),
            "References" => {
                let refs = value
                    .split(' ')
                    .filter(|r| !r.is_empty())
                    .map(|r| StorePath::from_base_name(r).map_err(|e| e.to_string()))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                set_once(&mut self.references, refs, key)
            }
            "Deriver" => {
                let deriver = match value {
                    "unknown-deriver" => None,
                    d => Some(StorePath::from_base_name(d).map_err(|e| e.to_string())?),
                };
                set_once(&mut self.deriver, deriver, key)
            }
            "System" => set_once(&mut self.system, value.to_owned(), key),
            // A malformed signature is skipped, as Nix skips it (it keeps each as text and
            // verifies those it can read): one bad line beside a valid one must not make
            // the whole narinfo unreadable.
            "Sig" => {
                if let Ok(sig) = value.parse::<Signature>() {
                    self.signatures.push(sig);
                }
                Ok(())
            }
            "CA" => set_once(&mut self.ca, value.to_owned(), key),
            _ if key.is_empty() || key.contains(char::is_whitespace) => {
                Err(format!("{key:?} is not a field name"))
            }
            _ => {
                self.unknown_fields.push((key.to_owned(), value.to_owned()));
                Ok(())
            }
        }
    }

    fn finish(self, last_line: usize) -> Result<NarInfo> {
        let missing = |field: &str| Error::InvalidNarinfo {
            line: last_line,
            reason: format!("required field {field} is missing"),
        };
        let (store_dir, store_path) = self.store_path.ok_or_else(|| missing("StorePath"))?;
        Ok(NarInfo {
            store_dir,
            store_path,
            url: self.url.ok_or_else(|| missing("URL"))?,
            compression: self.compression,
            file_hash: self.file_hash,
            file_size: self.file_size,
            nar_hash: self.nar_hash.ok_or_else(|| missing("NarHash"))?,
            nar_size: self.nar_size.ok_or_else(|| missing("NarSize"))?,
            references: self.references.unwrap_or_default(),
            deriver: self.deriver.flatten(),
            system: self.system,
            signatures: self.signatures,
            ca: self.ca,
            unknown_fields: self.unknown_fields,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by Nix 2.8 (`nix copy --to file://`), as documented in docs/nix-binary-cache.md.
    const BY_NIX: &str = "StorePath: /nix/store/5kk4mwqi310s9ssry90al6mxrb47vdiw-app
URL: nar/1n7bp8gfz80mjraq5jq1qghh5dcsbb5gfi3rkp2b6v1pr8i7gbcf.nar.xz
Compression: xz
FileHash: sha256:1n7bp8gfz80mjraq5jq1qghh5dcsbb5gfi3rkp2b6v1pr8i7gbcf
FileSize: 248
NarHash: sha256:13zkh9mx7kkmdiz0wx9arwvkx0ss3ixkmhill5dx2j682ibp8v8x
NarSize: 584
References: mbm1hdp6jm1wb664ydrga5w9lpary4ib-tool
Deriver: v873jj33sxxhc8d6jf84lbn85p09wm3i-app.drv
Sig: test-1:LQRg8g3f78adsT8fGji7jIbjWcU8lHSc79MHQYJXPrvtRb6HNjbnrwf3l/KDJsNUBjC0M9uuy7QnAM3354p8CA==
";

    /// Written by the original oranc (tests/fixtures/original-oranc), no references.
    const BY_ORIGINAL_ORANC: &str = "StorePath: /nix/store/kicgbgg16znbxwy45q9nd14f7cqxivqg-fixture-data-shared
URL: nar/0cjyn0zbsfhc54l9pwj1i11bi3w4zlvn90rphhr1wf3sxqazgh1n.nar.zst
Compression: zstd
FileHash: sha256:1hd5whnpm5hggvrry04dkr0si537i4p4vvn1aj7zxhk6vq90vhgm
FileSize: 3001627
NarHash: sha256:0cjyn0zbsfhc54l9pwj1i11bi3w4zlvn90rphhr1wf3sxqazgh1n
NarSize: 3001552
References: 
Deriver: wmilqqk29xxkd1iaw1g0lwn5f2c1vizh-fixture-data-shared.drv
Sig: oranc-fixture-1:Pd6MCf38geXih+JdeZlRxhePpcijBucnof0Gx5QLwwUv2HXc1zhIhYoxxFEgTY+CtH13FJf4uYZd8Alnx59kAA==
";

    #[test]
    fn a_carriage_return_stays_in_its_value_and_renders_back() {
        // Found by the narinfo fuzz target: `lines()` dropped a '\r' before '\n', so a
        // value ending in '\r' changed on a second round trip.
        let text = format!("{}Extra: x\r\r\n", BY_NIX);
        let once = NarInfo::parse(&text).unwrap();
        let twice = NarInfo::parse(&once.to_string()).unwrap();
        assert_eq!(once, twice);
        assert_eq!(once.to_string(), twice.to_string());
        let crlf = BY_NIX.replace('\n', "\r\n");
        assert!(
            NarInfo::parse(&crlf).is_err(),
            "Nix would not read it either"
        );
    }

    #[test]
    fn round_trips_what_nix_writes_byte_for_byte() {
        for text in [BY_NIX, BY_ORIGINAL_ORANC] {
            let parsed = NarInfo::parse(text).unwrap();
            assert_eq!(parsed.to_string(), text);
        }
    }

    #[test]
    fn parses_every_field_including_optional_ones() {
        // Nix's order: System after Deriver, then every Sig, then CA.
        let (head, sig_line) = BY_NIX.split_at(BY_NIX.find("Sig: ").unwrap());
        let text = format!(
            "{head}System: x86_64-linux\n{sig_line}Sig: other:{}==\nCA: fixed:r:sha256:1n7bp8gfz80mjraq5jq1qghh5dcsbb5gfi3rkp2b6v1pr8i7gbcf\nX-Future: kept\n",
            "A".repeat(86)
        );
        let info = NarInfo::parse(&text).unwrap();
        assert_eq!(info.store_path.name(), "app");
        assert_eq!(info.compression.as_deref(), Some("xz"));
        assert_eq!(info.file_size, Some(248));
        assert_eq!(info.nar_size, 584);
        assert_eq!(info.references.len(), 1);
        assert_eq!(info.deriver.as_ref().unwrap().name(), "app.drv");
        assert_eq!(info.system.as_deref(), Some("x86_64-linux"));
        assert_eq!(info.signatures.len(), 2);
        assert!(info.ca.as_deref().unwrap().starts_with("fixed:r:"));
        assert_eq!(
            info.unknown_fields,
            vec![("X-Future".into(), "kept".into())]
        );
        assert_eq!(info.to_string(), text);
    }

    #[test]
    fn a_malformed_signature_beside_a_good_one_is_skipped_as_nix_skips_it() {
        let text = format!("{BY_NIX}Sig: not-a-signature\nSig: x:\n");
        let parsed = NarInfo::parse(&text).unwrap();
        assert_eq!(parsed, NarInfo::parse(BY_NIX).unwrap());
        assert_eq!(parsed.signatures.len(), 1);
    }

    #[test]
    fn verifies_the_signature_the_original_oranc_wrote() {
        let text = "StorePath: /nix/store/ghps7vpmpzhkq7dghlxfala5gjxsxa0l-fixture-app-shared
URL: nar/0vz6fc1hgh1irh0s8x5qp7ykn2y0g7rb5ybcfsvfq6xln98r91bb.nar.zst
Compression: zstd
FileHash: sha256:0scw6cchqq3lrbj2lrj3pdw8yzv0w7gbmrhl88pxm0fgvpfz2pbz
FileSize: 218
NarHash: sha256:0vz6fc1hgh1irh0s8x5qp7ykn2y0g7rb5ybcfsvfq6xln98r91bb
NarSize: 608
References: 4qyafslvkxfpnnj5ia207zh7mkkq1hwh-fixture-tool-shared
Deriver: 0qqvkm5iadiciw2sgjizflrb0w0kjxzr-fixture-app-shared.drv
Sig: oranc-fixture-1:HneEgxUNv8dH4NAg29JxyMtVbtMe5gH6rhFAZpULQ9gO70DjDrBQmHdKE8zkaqgdYsc4k1bTvK+06JSkWx9PCg==
";
        let info = NarInfo::parse(text).unwrap();
        let key: PublicKey = "oranc-fixture-1:0Gg/nW/ItQON70fVFJaMFIjq/v/Pz6NjvAjdy6S5L8I="
            .parse()
            .unwrap();
        assert!(info.is_signed_by_any(&[key]));
        assert_eq!(info.to_string(), text);
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        for (text, line, needle) in [
            ("StorePath: /nix/store/bad\n", 1, "too short"),
            ("URL: x\nNarSize: ten\n", 2, "not a number"),
            ("URL: x\nURL: y\n", 2, "appears twice"),
            ("URL: x\nNarHash: sha256:zz\n", 2, "NarHash"),
            ("URL: x\ngarbage\n", 2, "expected 'Field: value'"),
            ("URL: x\n", 1, "StorePath is missing"),
        ] {
            match NarInfo::parse(text) {
                Err(Error::InvalidNarinfo { line: l, reason }) => {
                    assert_eq!(l, line, "{text:?}: {reason}");
                    assert!(reason.contains(needle), "{text:?}: {reason}");
                }
                other => panic!("{text:?}: expected an InvalidNarinfo error, got {other:?}"),
            }
        }
    }
}
