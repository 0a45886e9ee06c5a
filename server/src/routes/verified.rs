//! A blob streamed to a client is checked against its digest on the way: the registry's
//! bytes are only as good as its word, and an nginx or CDN in front keeps a NAR for a year
//! (`immutable`). The last chunk is held back until the whole body has been hashed; on a
//! mismatch (or a short body) it is never sent and the stream ends in an error, so the
//! client sees a body shorter than its `Content-Length` (or an unterminated chunked one),
//! which no cache stores. Counted in `oranc_blob_digest_mismatches_total` and logged.

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use oranc_core::{BlobInfo, ByteStream, CacheKey, Sha256Hash};
use sha2::{Digest as _, Sha256};

use crate::metrics::Metrics;

struct Checking {
    body: ByteStream,
    hasher: Sha256,
    seen: u64,
    held: Option<Bytes>,
}

/// `body`, the whole of `blob`, cut off before its last bytes unless they match its digest.
pub fn verified(
    body: ByteStream,
    blob: BlobInfo,
    key: CacheKey,
    metrics: Metrics,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let start = Checking {
        body,
        hasher: Sha256::new(),
        seen: 0,
        held: None,
    };
    futures::stream::unfold(Some(start), move |state| {
        let (key, metrics) = (key.clone(), metrics.clone());
        async move {
            let mut state = state?;
            loop {
                match state.body.next().await {
                    Some(Ok(chunk)) => {
                        state.hasher.update(&chunk);
                        state.seen += chunk.len() as u64;
                        if let Some(previous) = state.held.replace(chunk) {
                            return Some((Ok(previous), Some(state)));
                        }
                    }
                    Some(Err(error)) => return Some((Err(error), None)),
                    None => {
                        let digest = Sha256Hash::from_bytes(state.hasher.finalize().into());
                        if digest == blob.digest && state.seen == blob.size {
                            return state.held.map(|last| (Ok(last), None));
                        }
                        metrics.digest_mismatches.inc();
                        tracing::error!(
                            key = %key,
                            expected = %blob.digest.to_oci_digest(),
                            got = %digest.to_oci_digest(),
                            bytes = state.seen,
                            "the registry's bytes do not match their digest; the answer is cut short so no cache keeps it"
                        );
                        let error = std::io::Error::other(format!(
                            "{key}: the registry's bytes do not match their digest"
                        ));
                        return Some((Err(error), None));
                    }
                }
            }
        }
    })
}
