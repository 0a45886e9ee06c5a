//! Telling HTTP/2 with prior knowledge (h2c, what proxies such as Envoy or nginx's
//! `grpc_pass` may send to a plain listener) from HTTP/1.1 by the connection's first bytes:
//! HTTP/2 opens with a fixed 24-byte preface, and no HTTP/1.1 request does. The bytes read
//! to decide are handed back to whichever protocol serves the connection.
//!
//! Our own rather than hyper-util's `auto` builder, which waits for those bytes with no
//! timeout at all (a connection that sent nothing was held for ever; found by a red-team
//! run). The caller bounds [`read_preface`] with the header timeout.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};

/// What every HTTP/2 connection starts with (RFC 9113, 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the bytes are HTTP/2's preface or cannot be: whether they are, and the
/// stream with what was read put back in front.
pub async fn read_preface<S: AsyncRead + Unpin>(mut stream: S) -> io::Result<(bool, Rewound<S>)> {
    let mut read = Vec::with_capacity(PREFACE.len());
    let mut chunk = [0u8; PREFACE.len()];
    while read.len() < PREFACE.len() && PREFACE.starts_with(&read) {
        let wanted = PREFACE.len() - read.len();
        let n = stream.read(&mut chunk[..wanted]).await?;
        if n == 0 {
            break;
        }
        read.extend_from_slice(&chunk[..n]);
    }
    let is_h2 = read.as_slice() == PREFACE;
    Ok((
        is_h2,
        Rewound {
            prefix: read,
            offset: 0,
            inner: stream,
        },
    ))
}

/// A stream whose first bytes, already read, are read again.
#[derive(Debug)]
pub struct Rewound<S> {
    prefix: Vec<u8>,
    offset: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.offset < self.prefix.len() {
            let rest = &self.prefix[self.offset..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.offset += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn sniff(sent: &[u8]) -> (bool, Vec<u8>) {
        let (is_h2, mut rewound) = read_preface(sent).await.unwrap();
        let mut back = Vec::new();
        rewound.read_to_end(&mut back).await.unwrap();
        (is_h2, back)
    }

    #[tokio::test]
    async fn the_preface_is_h2_and_anything_else_http1_with_every_byte_read_again() {
        let mut h2 = PREFACE.to_vec();
        h2.extend_from_slice(b"\0\0\0\x04\0\0\0\0\0");
        assert_eq!(sniff(&h2).await, (true, h2.clone()));
        let get = b"GET /nix-cache-info HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(sniff(get).await, (false, get.to_vec()));
        // A method that starts like the preface, and a connection closed early.
        assert!(!sniff(b"PRI * HTTP/1.1\r\n").await.0);
        assert_eq!(sniff(b"PRI * HT").await, (false, b"PRI * HT".to_vec()));
        assert_eq!(sniff(b"").await, (false, Vec::new()));
    }
}
