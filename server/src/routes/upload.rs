//! PUT of binary-cache files (`nix copy --to http://…`, an S3 client, curl), with the rules
//! that keep a cache usable whoever can reach the server:
//!
//! - a narinfo is stored only when the NAR it names is stored and its `FileHash` /
//!   `FileSize` are that blob's digest and size, so no narinfo points at a missing or wrong
//!   NAR;
//! - an anonymous writer (`allow_write`) adds files and never replaces one: a re-upload of
//!   the same bytes is a no-op, anything else for an existing key is 409, and an existing
//!   NAR (named by its hash) stays as it is;
//! - a named cache's `trusted_public_keys` must sign every narinfo, and its `signing_key_file`
//!   signs what its writers upload.
//!
//! Bodies of NARs and other large files stream into a blob; only small files are read whole.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::TryStreamExt as _;
use oranc_core::cache_key::KeyKind;
use oranc_core::{BlobInfo, CacheKey, CacheObject, NarInfo, RegistryCache, Sha256Hash};
use tokio_util::io::StreamReader;

use super::small_file::{check_upload, SmallFile};
use super::{body, content_coding};
use crate::client_addr::ClientAddr;
use crate::error::ServerError;
use crate::request_context::RequestContext;
use crate::resolve::{resolve, Target, WriteAccess};
use crate::state::{AppState, NamedCache, Purpose};

pub async fn write(
    state: &AppState,
    headers: &HeaderMap,
    context: &RequestContext,
    address: Option<ClientAddr>,
    body: Body,
) -> Result<Response, ServerError> {
    let target = resolve(state, context, Purpose::Write, address).await?;
    let cache = target.cache.clone();
    let outcome = store(state, headers, target, body).await;
    if outcome.is_err() {
        // The registry may have lost the shared config blob (emptied, garbage-collected):
        // the next upload looks for it again.
        state.forget_shared_config(&cache);
    }
    outcome
}

async fn store(
    state: &AppState,
    headers: &HeaderMap,
    target: Target<'_>,
    body: Body,
) -> Result<Response, ServerError> {
    let Target {
        cache,
        key,
        access,
        named,
        credentials_refused,
        ..
    } = target;
    if access == WriteAccess::ReadOnly {
        return Err(credentials_refused.unwrap_or(ServerError::CredentialsRequired));
    }
    refuse_framed_body(headers)?;
    refuse_unverifiable(&key, access, named)?;
    let codings = content_coding::of_upload(headers, key.kind())?;
    // The existence check and the write of one key run alone (see write_locks.rs).
    let _writing = state
        .lock_writes(format!(
            "{}\0{}\0{key}",
            cache.registry().name(),
            cache.repository()
        ))
        .await;
    let existing = match access {
        WriteAccess::AddOnly => cache.get(&key).await?,
        _ => None,
    };
    let stall = Duration::from_secs(state.config().clients.body_stall_timeout_secs);
    match key.kind() {
        KeyKind::CacheInfo
        | KeyKind::NarInfo
        | KeyKind::DebugInfo
        | KeyKind::Realisation
        | KeyKind::BuildTrace => {
            let limit = state.config().max_small_body_bytes as u64;
            // Bounded as sent and once decoded.
            let sent = body::capped(Box::pin(body::stall_bounded(body, stall)), limit);
            let bytes =
                body::read_whole(body::capped(content_coding::decoded(sent, &codings), limit))
                    .await
                    .map_err(|error| content_coding::upload_error(error, &codings))?;
            let (checked, rendered) =
                check_upload(&key, &bytes).map_err(ServerError::BadRequest)?;
            if let (SmallFile::CacheInfo(info), WriteAccess::AddOnly) = (&checked, access) {
                refuse_foreign_cache_info(info)?;
            }
            // Rendered from what was parsed: the stored file says nothing Nix would read
            // otherwise.
            let bytes = rendered.map_or(bytes, Bytes::from);
            if let Some(existing) = &existing {
                return add_only_outcome(&key, existing, Sha256Hash::of(&bytes));
            }
            let bytes = match checked {
                SmallFile::NarInfo(narinfo) => {
                    checked_narinfo(&cache, *narinfo, bytes, access, named).await?
                }
                SmallFile::Realisation => checked_realisation(&key, bytes, access, named)?,
                _ => bytes,
            };
            cache.put_bytes(&key, key.content_type(), bytes).await?;
        }
        KeyKind::Nar if existing.is_some() => {
            // Named by its hash: the stored NAR stays whatever this one holds. The body is
            // read to its end so the client's connection stays usable.
            body::stall_bounded(body, stall)
                .try_for_each(|_| std::future::ready(Ok(())))
                .await
                .map_err(ServerError::from_body_error)?;
            return Ok(StatusCode::OK.into_response());
        }
        KeyKind::Nar | KeyKind::Listing | KeyKind::Log => {
            let mut sent: body::BodyStream = Box::pin(body::stall_bounded(body, stall));
            if !codings.is_empty() {
                let limit = state.config().max_decoded_body_bytes;
                sent = body::capped(content_coding::decoded(sent, &codings), limit);
            }
            let blob = upload_stream(&cache, sent, &codings).await?;
            if let Some(existing) = &existing {
                // The blob stays untagged; the registry's garbage collection takes it.
                return add_only_outcome(&key, existing, blob.digest);
            }
            if access == WriteAccess::AddOnly && key.kind() == KeyKind::Nar {
                refuse_misnamed_nar(&key, &blob)?;
            }
            cache.tag_blob(&key, key.content_type(), &blob).await?;
        }
    }
    tracing::info!(key = %key, "stored");
    Ok(StatusCode::OK.into_response())
}

/// On a cache that requires signatures, an anonymous writer may add only what a client
/// can verify: narinfos (signed), NARs (fetched only through a signed narinfo, and checked
/// against its hash), realisations and build-trace entries (signed, checked in
/// [`checked_realisation`]), `nix-cache-info` (for the default store only, see
/// [`refuse_foreign_cache_info`]). Listings, build logs and
/// debuginfo entries carry no signature and their readers (file browsers, `nix log`,
/// debuginfod clients) trust them as they are, so only writers add those there.
fn refuse_unverifiable(
    key: &CacheKey,
    access: WriteAccess,
    named: Option<&NamedCache>,
) -> Result<(), ServerError> {
    let signed_cache = named.is_some_and(|cache| !cache.trusted_keys.is_empty());
    let unsigned = matches!(
        key.kind(),
        KeyKind::Listing | KeyKind::Log | KeyKind::DebugInfo
    );
    if access == WriteAccess::AddOnly && signed_cache && unsigned {
        return Err(ServerError::Refused(format!(
            "{key} carries no signature, and this cache requires signatures (trusted_public_keys): only its writers (writers_file) may add {} files",
            key.kind().label()
        )));
    }
    Ok(())
}

/// An anonymous writer may create `nix-cache-info` (Nix writes one into a new cache),
/// but only for the store every client here uses: one naming another store directory
/// would lock every reader out until a writer replaced it.
fn refuse_foreign_cache_info(info: &oranc_core::NixCacheInfo) -> Result<(), ServerError> {
    if info.store_dir != oranc_core::StoreDir::default() {
        return Err(ServerError::Refused(format!(
            "nix-cache-info for {} refused: uploads without credentials may only create one for {}",
            info.store_dir,
            oranc_core::StoreDir::default()
        )));
    }
    Ok(())
}

/// An anonymous NAR must be named as Nix names the NARs it uploads: `nar/<the SHA-256 of
/// the file, nix32>.nar[.ext]`. Any other name could be one a later push will use (`oranc
/// push` names a NAR by its NarHash, public for any reproducible path): junk planted there
/// was reused by the push and named by its signed narinfo, and nothing repaired it. The
/// blob stays untagged; the registry's garbage collection takes it.
fn refuse_misnamed_nar(key: &CacheKey, blob: &BlobInfo) -> Result<(), ServerError> {
    let named = key
        .as_str()
        .strip_prefix("nar/")
        .and_then(|file| file.split_once('.'))
        .map(|(hash, _)| hash);
    let digest = blob.digest.to_nix32();
    if named == Some(digest.as_str()) {
        return Ok(());
    }
    Err(ServerError::Refused(format!(
        "{key} is not named by the SHA-256 of its bytes ({digest}): uploads without credentials may add a NAR only under nar/<its sha256, nix32>.nar[.ext], as Nix names them"
    )))
}

/// An anonymous writer sent a file the cache has: the same bytes are fine (nothing is
/// written), other bytes would replace it and are refused.
fn add_only_outcome(
    key: &CacheKey,
    existing: &CacheObject,
    sent: Sha256Hash,
) -> Result<Response, ServerError> {
    if existing.blob.digest == sent {
        return Ok(StatusCode::OK.into_response());
    }
    Err(ServerError::Conflict(format!(
        "{key} is already in this cache with other content; uploads without credentials may add files, never replace them"
    )))
}

/// A narinfo that may be stored: its NAR is there and matches, it is signed as the cache
/// requires (by the server, for a writer). Returns the bytes to store.
async fn checked_narinfo(
    cache: &RegistryCache,
    mut narinfo: NarInfo,
    bytes: Bytes,
    access: WriteAccess,
    named: Option<&NamedCache>,
) -> Result<Bytes, ServerError> {
    let nar_key: CacheKey = narinfo
        .url
        .parse()
        .map_err(|e: oranc_core::Error| ServerError::BadRequest(format!("URL: {e}")))?;
    let nar = cache.get(&nar_key).await?.ok_or_else(|| {
        ServerError::BadRequest(format!(
            "the narinfo points at {nar_key}, which is not in the cache; upload the NAR first"
        ))
    })?;
    check_matches_nar(&narinfo, &nar_key, &nar.blob)?;
    let Some(named) = named else {
        return Ok(bytes);
    };
    let mut bytes = bytes;
    if let (WriteAccess::Writer, Some(key)) = (access, &named.signing_key) {
        narinfo.sign(key);
        bytes = Bytes::from(narinfo.to_string());
    }
    if let Some(trusted) = required_signers(named) {
        if !narinfo.is_signed_by_any(&trusted) {
            return Err(ServerError::Refused(format!(
                "{} carries no valid signature by a key in this cache's trusted_public_keys",
                narinfo.store_path
            )));
        }
    }
    Ok(bytes)
}

/// The keys one of which must sign a narinfo or realisation stored in `named`: its
/// `trusted_public_keys` and the server's own key; `None` where it requires no signature.
fn required_signers(named: &NamedCache) -> Option<Vec<oranc_core::PublicKey>> {
    if named.trusted_keys.is_empty() {
        return None;
    }
    let own = named.signing_key.as_ref().map(|k| k.to_public());
    Some(named.trusted_keys.iter().cloned().chain(own).collect())
}

/// A realisation or build-trace entry that may be stored: signed by the server for a writer
/// (where it has a key), and on a cache with `trusted_public_keys` signed by one of them (or
/// the server's key) over Nix's fingerprint (a build trace's binds its derivation and
/// output). Nix 2.8 does not check a realisation's
/// signatures before it uses one: an unsigned realisation resolved a content-addressed
/// derivation to another path, and its client got the wrong build output. Returns the
/// bytes to store.
fn checked_realisation(
    key: &CacheKey,
    bytes: Bytes,
    access: WriteAccess,
    named: Option<&NamedCache>,
) -> Result<Bytes, ServerError> {
    let Some(named) = named else {
        return Ok(bytes);
    };
    let mut bytes = bytes;
    if let (WriteAccess::Writer, Some(signing_key)) = (access, &named.signing_key) {
        let signed = oranc_core::realisation::signed(key, &bytes, signing_key)
            .ok_or_else(|| ServerError::BadRequest(format!("{key} is not a JSON object")))?;
        bytes = Bytes::from(signed);
    }
    if let Some(trusted) = required_signers(named) {
        if !oranc_core::realisation::is_signed_by_any(key, &bytes, &trusted) {
            return Err(ServerError::Refused(format!(
                "{key} carries no valid signature by a key in this cache's trusted_public_keys"
            )));
        }
    }
    Ok(bytes)
}

/// `FileHash` and `FileSize`, where given, must be the stored NAR blob's: the blob digest
/// is the SHA-256 of the compressed file.
fn check_matches_nar(
    narinfo: &NarInfo,
    nar_key: &CacheKey,
    blob: &BlobInfo,
) -> Result<(), ServerError> {
    if let Some(file_hash) = &narinfo.file_hash {
        if *file_hash != blob.digest {
            return Err(ServerError::BadRequest(format!(
                "FileHash {} does not match {nar_key} as stored ({})",
                file_hash.to_nix_string(),
                blob.digest.to_nix_string()
            )));
        }
    }
    if let Some(file_size) = narinfo.file_size {
        if file_size != blob.size {
            return Err(ServerError::BadRequest(format!(
                "FileSize {file_size} does not match {nar_key} as stored ({} bytes)",
                blob.size
            )));
        }
    }
    Ok(())
}

/// An S3 client may frame the body with per-chunk signatures; stored as it is, that framing
/// would corrupt the file. Nix's S3 store and boto3 over http send it plain.
fn refuse_framed_body(headers: &HeaderMap) -> Result<(), ServerError> {
    let framed = headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("STREAMING-"));
    if framed {
        return Err(ServerError::BadRequest(
            "aws-chunked (streaming SigV4) uploads are not supported; send the body unframed"
                .into(),
        ));
    }
    Ok(())
}

async fn upload_stream(
    cache: &RegistryCache,
    sent: body::BodyStream,
    codings: &[content_coding::Coding],
) -> Result<BlobInfo, ServerError> {
    // The client's errors (a stall, a broken or badly encoded body, too large once
    // decoded) are marked, so they are told from the registry's or the disk's.
    let mut reader = StreamReader::new(
        sent.map_err(|error| std::io::Error::new(error.kind(), body::FromTheClient(error))),
    );
    cache
        .upload_blob(&mut reader)
        .await
        .map_err(|error| match error {
            oranc_core::Error::Io { source, .. }
                if source
                    .get_ref()
                    .is_some_and(|inner| inner.is::<body::FromTheClient>()) =>
            {
                let inner = source
                    .into_inner()
                    .and_then(|inner| inner.downcast::<body::FromTheClient>().ok());
                match inner {
                    Some(from_client) => content_coding::upload_error(from_client.0, codings),
                    None => ServerError::Internal("an upload's body error was lost".into()),
                }
            }
            error => error.into(),
        })
}
