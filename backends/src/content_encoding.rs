//! Undoing an HTTP `Content-Encoding` on a small file. Nix uploads build logs and NAR
//! listings to S3 compressed (`log-compression`, `ls-compression`; cache.nixos.org uses
//! `br`) and S3 serves them with that header, which Nix's curl undoes; oranc's HTTP client
//! is built without decompression (registries must hand over blobs byte for byte), so the
//! binary-cache client undoes it here, bounded, for the files that may carry one.

use std::io::Read;

/// The bytes of `body` with `encoding` undone, at most `limit` of them: an error names what
/// went wrong (an encoding Nix does not write, a corrupt body, more than `limit` bytes). A
/// list (`gzip, br`: applied in that order) is undone last first, as HTTP says.
pub fn decode(encoding: &str, body: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut bytes = body.to_vec();
    for step in encoding.rsplit(',') {
        bytes = decode_one(step, &bytes, limit)?;
    }
    Ok(bytes)
}

fn decode_one(encoding: &str, body: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let encoding = encoding.trim().to_ascii_lowercase();
    let reader: Box<dyn Read + '_> = match encoding.as_str() {
        "" | "identity" => Box::new(body),
        "br" => Box::new(brotli_decompressor::Decompressor::new(body, 64 << 10)),
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(body)),
        "zstd" => Box::new(zstd::Decoder::new(body).map_err(|e| format!("zstd: {e}"))?),
        "xz" => Box::new(xz2::read::XzDecoder::new_multi_decoder(body)),
        other => return Err(format!("Content-Encoding {other:?} is not one oranc reads")),
    };
    let mut decoded = Vec::new();
    // One byte past the limit tells a file that fits from one that does not.
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut decoded)
        .map_err(|e| format!("undoing Content-Encoding {encoding}: {e}"))?;
    if decoded.len() > limit {
        return Err(format!("larger than {limit} bytes once decoded"));
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Write as _;

    use super::*;

    #[test]
    fn what_nix_and_web_servers_write_is_undone_and_bounded() {
        let text = b"building '/nix/store/x.drv'...\n".repeat(100);
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&text).unwrap();
        let gzip = gzip.finish().unwrap();
        assert_eq!(decode("gzip", &gzip, 1 << 20).unwrap(), text);
        let zstd = zstd::encode_all(&text[..], 3).unwrap();
        assert_eq!(decode("zstd", &zstd, 1 << 20).unwrap(), text);
        assert_eq!(decode("", &text, 1 << 20).unwrap(), text);
        // `printf 'building oranc\n' | brotli -c`
        let br = [
            0x1f, 0x0e, 0x00, 0xf8, 0xa5, 0x14, 0xc6, 0x92, 0x90, 0x43, 0x24, 0x29, 0x66, 0x60,
            0x0a, 0xd5, 0x62, 0x07,
        ];
        assert_eq!(decode("br", &br, 1 << 20).unwrap(), b"building oranc\n");
        // A bomb stops at the limit.
        let zeros = zstd::encode_all(&vec![0u8; 10 << 20][..], 3).unwrap();
        assert!(decode("zstd", &zeros, 1 << 20)
            .unwrap_err()
            .contains("larger"));
        assert!(decode("compress", &text, 1 << 20).is_err());
        // Applied gzip then zstd: undone zstd first.
        let both = zstd::encode_all(&gzip[..], 3).unwrap();
        assert_eq!(decode("gzip, zstd", &both, 1 << 20).unwrap(), text);
        assert!(decode("gzip", b"not gzip", 1 << 20).is_err());
    }
}
