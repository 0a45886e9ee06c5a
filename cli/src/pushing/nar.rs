//! One streaming pass per store path: serialise the NAR (`nix-nar`), hash it (NarHash and
//! NarSize), compress it, and hand the compressed bytes to the uploader through a small
//! bounded channel. Memory per path is the channel plus the compressor's window, whatever
//! the path's size.
//!
//! The serialiser and compressors are synchronous, so they run on a blocking thread; the
//! upload reads the other end as an `AsyncRead`.

use std::io::{Read as _, Write};
use std::path::PathBuf;

use bytes::Bytes;
use oranc_core::Sha256Hash;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio_util::io::StreamReader;

use super::listing::{ListingBuilder, NarContents};
use crate::cli::Compression;

/// Bytes handed to the uploader per message, and messages in flight.
const CHUNK: usize = 1 << 20;
const CHANNEL_DEPTH: usize = 4;
/// `nix-nar` needs its buffer 200 bytes larger than the longest file name (255 bytes).
const NAR_BUFFER: usize = 64 << 10;

impl Compression {
    /// The NAR file extension and narinfo `Compression:` value.
    pub fn nix_name(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Xz => "xz",
            Self::None => "none",
        }
    }

    /// The compression a narinfo's `Compression:` value names, if oranc writes it.
    pub fn from_nix_name(name: &str) -> Option<Self> {
        [Self::Zstd, Self::Xz, Self::None]
            .into_iter()
            .find(|compression| compression.nix_name() == name)
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Zstd => ".zst",
            Self::Xz => ".xz",
            Self::None => "",
        }
    }
}

/// NarHash and NarSize, as measured while streaming, and the NAR's listing and debug
/// files when asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarDigest {
    pub hash: Sha256Hash,
    pub size: u64,
    /// See [`super::listing`].
    pub contents: Option<NarContents>,
}

/// Sends what is written to it down the channel in `CHUNK`-sized pieces.
struct ChannelWriter {
    sender: mpsc::Sender<std::io::Result<Bytes>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    fn send_buffer(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.sender.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped reading")
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.send_buffer()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buffer()
    }
}

enum Compressor {
    Zstd(zstd::Encoder<'static, ChannelWriter>),
    Xz(xz2::write::XzEncoder<ChannelWriter>),
    None(ChannelWriter),
}

impl Compressor {
    fn new(
        compression: Compression,
        zstd_level: i32,
        sink: ChannelWriter,
    ) -> std::io::Result<Self> {
        Ok(match compression {
            Compression::Zstd => Self::Zstd(zstd::Encoder::new(sink, zstd_level)?),
            Compression::Xz => Self::Xz(xz2::write::XzEncoder::new(sink, 6)),
            Compression::None => Self::None(sink),
        })
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Self::Zstd(w) => w,
            Self::Xz(w) => w,
            Self::None(w) => w,
        }
    }

    fn finish(self) -> std::io::Result<ChannelWriter> {
        match self {
            Self::Zstd(w) => w.finish(),
            Self::Xz(w) => w.finish(),
            Self::None(w) => Ok(w),
        }
    }
}

fn serialise(
    path: PathBuf,
    compression: Compression,
    zstd_level: i32,
    with_listing: bool,
    sender: mpsc::Sender<std::io::Result<Bytes>>,
) -> std::io::Result<NarDigest> {
    let mut encoder = nix_nar::Encoder::builder(&path)
        .internal_buffer_size(NAR_BUFFER)
        .build()
        .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
    let sink = ChannelWriter {
        sender,
        buffer: Vec::with_capacity(CHUNK),
    };
    let mut compressor = Compressor::new(compression, zstd_level, sink)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buffer = vec![0u8; 256 << 10];
    let mut listing = with_listing.then(ListingBuilder::start);
    loop {
        let read = encoder.read(&mut buffer).map_err(|e| {
            std::io::Error::new(e.kind(), format!("reading {}: {e}", path.display()))
        })?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        if let Some(listing) = &mut listing {
            listing.feed(&buffer[..read]);
        }
        size += read as u64;
        compressor.writer().write_all(&buffer[..read])?;
    }
    compressor.finish()?.flush()?;
    Ok(NarDigest {
        hash: Sha256Hash::from_bytes(hasher.finalize().into()),
        size,
        contents: listing.map(ListingBuilder::finish).transpose()?,
    })
}

/// The compressed NAR of `path` as a reader, and the task that reports its NarHash/NarSize
/// once the reader has been drained.
pub fn stream(
    path: PathBuf,
    compression: Compression,
    zstd_level: i32,
    with_listing: bool,
) -> (
    impl tokio::io::AsyncRead + Unpin + Send,
    tokio::task::JoinHandle<std::io::Result<NarDigest>>,
) {
    let (sender, receiver) = mpsc::channel(CHANNEL_DEPTH);
    let error_sender = sender.clone();
    let task = tokio::task::spawn_blocking(move || {
        let result = serialise(path, compression, zstd_level, with_listing, sender);
        if let Err(error) = &result {
            // Make the upload fail too, with the cause, rather than end early and "succeed".
            let _ = error_sender
                .blocking_send(Err(std::io::Error::new(error.kind(), error.to_string())));
        }
        result
    });
    let chunks = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    (StreamReader::new(Box::pin(chunks)), task)
}
