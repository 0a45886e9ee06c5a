//! Uploads sent with `Content-Encoding`. Since 2.32, Nix can compress the metadata it
//! uploads (`narinfo-compression`, `ls-compression`, `log-compression`; Nix's own test uses
//! gzip, gzip and br). The coding is undone as the body streams in and the file is stored
//! plain: every client, old or new, then reads it with no header to honour, and a narinfo
//! is checked exactly as a plain one is.
//!
//! What is decoded is bounded, since a few KB of brotli can say terabytes: a small file by
//! `max_small_body_bytes` (as sent and decoded), a log or a listing by
//! `max_decoded_body_bytes`. A NAR is never
//! taken encoded: its compression is part of its name (`.nar.xz`) and of its FileHash.

use std::pin::Pin;

use async_compression::tokio::bufread::{
    BrotliDecoder, BzDecoder, GzipDecoder, XzDecoder, ZstdDecoder,
};
use axum::http::{header, HeaderMap};
use oranc_core::cache_key::KeyKind;
use tokio::io::{AsyncRead, BufReader};
use tokio_util::io::{ReaderStream, StreamReader};

use super::body::{BodyStream, BodyTooLarge};
use crate::error::ServerError;

/// The codings oranc undoes, as `Accept-Encoding` lists them in a 415.
pub const ACCEPTED: &str = "gzip, br, zstd, xz, bzip2";

/// One content coding an upload may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Brotli,
    Zstd,
    Xz,
    Bzip2,
}

/// The codings of an upload of `kind`, in the order they were applied (none for a plain
/// body): 415 for a coding oranc does not undo, or for any on a NAR.
pub fn of_upload(headers: &HeaderMap, kind: KeyKind) -> Result<Vec<Coding>, ServerError> {
    let mut codings = Vec::new();
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let value = value.to_str().map_err(|_| {
            ServerError::UnsupportedEncoding("an unreadable Content-Encoding".into())
        })?;
        for name in value
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            let coding = match name.to_ascii_lowercase().as_str() {
                "identity" => continue,
                "gzip" | "x-gzip" => Coding::Gzip,
                "br" => Coding::Brotli,
                "zstd" => Coding::Zstd,
                "xz" => Coding::Xz,
                "bzip2" | "x-bzip2" => Coding::Bzip2,
                other => {
                    return Err(ServerError::UnsupportedEncoding(format!(
                        "Content-Encoding {other:?} is not one oranc undoes ({ACCEPTED})"
                    )))
                }
            };
            codings.push(coding);
        }
    }
    if kind == KeyKind::Nar && !codings.is_empty() {
        return Err(ServerError::UnsupportedEncoding(
            "a NAR file is taken as its own bytes, with no Content-Encoding: its compression is part of its name (.nar.xz) and of its FileHash".into(),
        ));
    }
    Ok(codings)
}

/// `body` with `codings` undone, last applied first (bound it with [`capped`]); `body`
/// itself when there are none.
pub fn decoded(body: BodyStream, codings: &[Coding]) -> BodyStream {
    if codings.is_empty() {
        return body;
    }
    let mut reader: Pin<Box<dyn AsyncRead + Send>> = Box::pin(StreamReader::new(body));
    for coding in codings.iter().rev() {
        let buffered = BufReader::new(reader);
        reader = match coding {
            Coding::Gzip => {
                let mut decoder = GzipDecoder::new(buffered);
                decoder.multiple_members(true);
                Box::pin(decoder)
            }
            Coding::Brotli => Box::pin(BrotliDecoder::new(buffered)),
            Coding::Zstd => {
                let mut decoder = ZstdDecoder::new(buffered);
                decoder.multiple_members(true);
                Box::pin(decoder)
            }
            Coding::Xz => {
                let mut decoder = XzDecoder::new(buffered);
                decoder.multiple_members(true);
                Box::pin(decoder)
            }
            Coding::Bzip2 => {
                let mut decoder = BzDecoder::new(buffered);
                decoder.multiple_members(true);
                Box::pin(decoder)
            }
        };
    }
    Box::pin(ReaderStream::new(reader))
}

/// The answer for an error reading an upload's body, decoded by `codings`: 413 past its
/// limit, 408 for a stall, else 400 naming the coding (or the body) that failed.
pub fn upload_error(error: std::io::Error, codings: &[Coding]) -> ServerError {
    if let Some(BodyTooLarge(limit)) = error.get_ref().and_then(|e| e.downcast_ref()) {
        return ServerError::TooLarge(usize::try_from(*limit).unwrap_or(usize::MAX));
    }
    if codings.is_empty() || error.kind() == std::io::ErrorKind::TimedOut {
        return ServerError::from_body_error(error);
    }
    ServerError::BadRequest(format!(
        "undoing the body's Content-Encoding ({codings:?}): {error}"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use axum::http::HeaderValue;
    use bytes::Bytes;
    use futures::TryStreamExt as _;

    use super::*;

    fn headers(encoding: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_str(encoding).unwrap(),
        );
        headers
    }

    async fn decode(bytes: Vec<u8>, codings: &[Coding], limit: u64) -> std::io::Result<Vec<u8>> {
        let body: BodyStream = Box::pin(futures::stream::iter(
            bytes
                .chunks(7)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        ));
        let chunks: Vec<Bytes> = super::super::body::capped(decoded(body, codings), limit)
            .try_collect()
            .await?;
        Ok(chunks.concat())
    }

    #[test]
    fn codings_are_read_in_the_order_applied_and_refused_on_nars() {
        let both = of_upload(&headers("gzip, identity, br"), KeyKind::Log).unwrap();
        assert_eq!(both, [Coding::Gzip, Coding::Brotli]);
        assert!(of_upload(&HeaderMap::new(), KeyKind::Nar)
            .unwrap()
            .is_empty());
        assert!(matches!(
            of_upload(&headers("compress"), KeyKind::NarInfo),
            Err(ServerError::UnsupportedEncoding(_))
        ));
        assert!(matches!(
            of_upload(&headers("gzip"), KeyKind::Nar),
            Err(ServerError::UnsupportedEncoding(_))
        ));
    }

    #[tokio::test]
    async fn a_body_is_decoded_and_a_bomb_stops_at_the_limit() {
        let text = b"StorePath: /nix/store/x\n".repeat(50);
        let zstd = zstd::encode_all(&text[..], 3).unwrap();
        assert_eq!(decode(zstd, &[Coding::Zstd], 1 << 20).await.unwrap(), text);
        let bomb = zstd::encode_all(&vec![0u8; 8 << 20][..], 3).unwrap();
        let error = decode(bomb, &[Coding::Zstd], 1 << 20).await.unwrap_err();
        assert!(matches!(
            upload_error(error, &[Coding::Zstd]),
            ServerError::TooLarge(_)
        ));
        let error = decode(b"not zstd".to_vec(), &[Coding::Zstd], 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(
            upload_error(error, &[Coding::Zstd]),
            ServerError::BadRequest(_)
        ));
    }
}
