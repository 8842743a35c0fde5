//! The client → server half of one HTTP/2 connection, frame by frame, without I/O: bytes go
//! through untouched until a request header block carries an `:authority` that h2 would
//! refuse; from that block on, every header block of the connection is re-encoded.
//!
//! Why every block: the client's encoder keeps indexing into its dynamic table, and h2's
//! decoder mirrors that table only while it sees the client's exact bytes. Once one block is
//! rewritten the two tables differ, so the first rewritten block empties the server's table
//! (a size update to 0) and every later block is sent as literals that need no table. Passing
//! a later block through would let an index mean one thing to the client and another to the
//! server: a request could run another RPC than the one it names.

use bytes::{BufMut, BytesMut};

use super::hpack::{encode_literal_block, BlockDecoder, Field};

/// The connection preface every HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;

const TYPE_HEADERS: u8 = 0x1;
const TYPE_PUSH_PROMISE: u8 = 0x5;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// What the server advertises, so that the adapter never lets through more than h2 would.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// SETTINGS_HEADER_TABLE_SIZE: the client's encoder may use this much.
    pub header_table_size: usize,
    /// SETTINGS_MAX_FRAME_SIZE: no frame the adapter sends to the server is larger.
    pub max_frame_size: usize,
    /// SETTINGS_MAX_HEADER_LIST_SIZE: a header block is refused before it grows past this.
    pub max_header_list_size: usize,
}

impl Limits {
    /// CONTINUATION frames allowed for one block, computed as h2 computes its own cap.
    fn max_continuations(&self) -> usize {
        let for_list = (self.max_header_list_size / self.max_frame_size).max(1);
        (for_list + for_list / 4).max(5)
    }
}

/// Why a connection is closed. Shown once in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken(pub String);

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn broken<T>(why: impl Into<String>) -> Result<T, Broken> {
    Err(Broken(why.into()))
}

/// Where the reader is in the byte stream.
#[derive(Debug)]
enum Phase {
    /// This many preface bytes checked so far.
    Preface(usize),
    /// At the start of a frame.
    FrameHeader,
    /// Inside a frame that passes unchanged: this many payload bytes still to pass.
    Passing(usize),
}

/// A header block being collected until END_HEADERS.
struct Pending {
    stream_id: u32,
    end_stream: bool,
    /// The 5 priority bytes of a HEADERS frame with PRIORITY, kept when re-encoding.
    priority: Option<[u8; 5]>,
    /// The frames exactly as received, to pass through unchanged if nothing needs rewriting.
    raw: BytesMut,
    /// The HPACK fragment, padding and priority removed.
    fragment: Vec<u8>,
    continuations: usize,
}

/// One connection's rewriter: feed it what the client sent, read what the server should see.
pub struct Rewriter {
    limits: Limits,
    phase: Phase,
    decoder: BlockDecoder,
    pending: Option<Pending>,
    /// Set once a block was rewritten: every later block is re-encoded too.
    rewriting: bool,
    table_emptied: bool,
}

impl Rewriter {
    pub fn new(limits: Limits) -> Rewriter {
        Rewriter {
            limits,
            phase: Phase::Preface(0),
            decoder: BlockDecoder::new(limits.header_table_size),
            pending: None,
            rewriting: false,
            table_emptied: false,
        }
    }

    /// Whether some block had to be re-encoded (for tests and the log).
    pub fn is_rewriting(&self) -> bool {
        self.rewriting
    }

    /// Consumes from `input` every complete unit it holds (what is left is an incomplete
    /// frame) and appends to `out` what the server should read.
    pub fn process(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> Result<(), Broken> {
        loop {
            match self.phase {
                Phase::Preface(seen) => {
                    let n = input.len().min(PREFACE.len() - seen);
                    if input[..n] != PREFACE[seen..seen + n] {
                        return broken("not HTTP/2: the connection preface is wrong");
                    }
                    out.put(input.split_to(n));
                    if seen + n < PREFACE.len() {
                        self.phase = Phase::Preface(seen + n);
                        return Ok(());
                    }
                    self.phase = Phase::FrameHeader;
                }
                Phase::Passing(0) => self.phase = Phase::FrameHeader,
                Phase::Passing(left) => {
                    let n = input.len().min(left);
                    if n == 0 {
                        return Ok(());
                    }
                    out.put(input.split_to(n));
                    self.phase = Phase::Passing(left - n);
                }
                Phase::FrameHeader => {
                    if !self.frame(input, out)? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Handles the frame at the start of `input`; false when more bytes are needed.
    fn frame(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> Result<bool, Broken> {
        if input.len() < FRAME_HEADER_LEN {
            return Ok(false);
        }
        let len = usize::from(input[0]) << 16 | usize::from(input[1]) << 8 | usize::from(input[2]);
        let kind = input[3];
        let stream_id = u32::from_be_bytes([input[5], input[6], input[7], input[8]]) & 0x7fff_ffff;
        let is_block = kind == TYPE_HEADERS || kind == TYPE_CONTINUATION;
        if self.pending.is_some() && kind != TYPE_CONTINUATION {
            return broken(format!("frame type {kind} inside a header block"));
        }
        if kind == TYPE_PUSH_PROMISE {
            return broken("a client sent PUSH_PROMISE");
        }
        if !is_block {
            out.put(input.split_to(FRAME_HEADER_LEN));
            self.phase = Phase::Passing(len);
            return Ok(true);
        }
        if len > self.limits.max_frame_size {
            return broken(format!(
                "a {len}-byte header frame is over the frame size limit {}",
                self.limits.max_frame_size
            ));
        }
        if input.len() < FRAME_HEADER_LEN + len {
            return Ok(false);
        }
        let end_headers = input[4] & FLAG_END_HEADERS != 0;
        let frame = input.split_to(FRAME_HEADER_LEN + len);
        if kind == TYPE_HEADERS {
            self.headers(frame, stream_id)?;
        } else {
            self.continuation(frame, stream_id)?;
        }
        if end_headers {
            self.finish_block(out)?;
        }
        Ok(true)
    }

    /// A HEADERS frame opens a block: padding and priority are taken off its fragment.
    fn headers(&mut self, frame: BytesMut, stream_id: u32) -> Result<(), Broken> {
        let flags = frame[4];
        let mut payload = &frame[FRAME_HEADER_LEN..];
        let mut pad = 0;
        if flags & FLAG_PADDED != 0 {
            let Some((&n, rest)) = payload.split_first() else {
                return broken("a PADDED HEADERS frame with no pad length");
            };
            pad = usize::from(n);
            payload = rest;
        }
        let mut priority = None;
        if flags & FLAG_PRIORITY != 0 {
            if payload.len() < 5 {
                return broken("a PRIORITY HEADERS frame shorter than its priority");
            }
            let mut p = [0u8; 5];
            p.copy_from_slice(&payload[..5]);
            priority = Some(p);
            payload = &payload[5..];
        }
        if pad > payload.len() {
            return broken("HEADERS padding longer than the frame");
        }
        let fragment = payload[..payload.len() - pad].to_vec();
        self.pending = Some(Pending {
            stream_id,
            end_stream: flags & FLAG_END_STREAM != 0,
            priority,
            fragment,
            raw: frame,
            continuations: 0,
        });
        self.check_block_size()
    }

    fn continuation(&mut self, frame: BytesMut, stream_id: u32) -> Result<(), Broken> {
        let max_continuations = self.limits.max_continuations();
        let Some(pending) = self.pending.as_mut() else {
            return broken("CONTINUATION without a header block");
        };
        if pending.stream_id != stream_id {
            return broken("CONTINUATION on another stream than its HEADERS");
        }
        pending.continuations += 1;
        if pending.continuations > max_continuations {
            return broken(format!(
                "more than {max_continuations} CONTINUATION frames in one header block"
            ));
        }
        pending
            .fragment
            .extend_from_slice(&frame[FRAME_HEADER_LEN..]);
        pending.raw.unsplit(frame);
        self.check_block_size()
    }

    fn check_block_size(&self) -> Result<(), Broken> {
        let size = self.pending.as_ref().map_or(0, |p| p.fragment.len());
        if size > self.limits.max_header_list_size {
            return broken(format!(
                "a header block over {} bytes (the server's header list limit)",
                self.limits.max_header_list_size
            ));
        }
        Ok(())
    }

    /// The block is complete: decode it, then pass it through or re-encode it.
    fn finish_block(&mut self, out: &mut BytesMut) -> Result<(), Broken> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        let mut fields = self
            .decoder
            .decode(&pending.fragment)
            .map_err(|e| Broken(format!("stream {}: {e}", pending.stream_id)))?;
        let replaced = replace_bad_authority(&mut fields);
        if !self.rewriting && !replaced {
            out.put(pending.raw);
            return Ok(());
        }
        self.rewriting = true;
        let mut block = Vec::with_capacity(pending.fragment.len() * 2 + 1);
        encode_literal_block(&fields, !self.table_emptied, &mut block);
        self.table_emptied = true;
        self.write_block(&pending, &block, out);
        Ok(())
    }

    /// Writes `block` as one HEADERS frame and as many CONTINUATION frames as it needs.
    fn write_block(&self, pending: &Pending, block: &[u8], out: &mut BytesMut) {
        let max = self.limits.max_frame_size;
        let mut flags = if pending.end_stream {
            FLAG_END_STREAM
        } else {
            0
        };
        let priority: &[u8] = match &pending.priority {
            Some(p) => {
                flags |= FLAG_PRIORITY;
                p
            }
            None => &[],
        };
        let first_len = block.len().min(max - priority.len());
        let (first, mut rest) = block.split_at(first_len);
        if rest.is_empty() {
            flags |= FLAG_END_HEADERS;
        }
        put_frame_header(
            out,
            priority.len() + first.len(),
            TYPE_HEADERS,
            flags,
            pending.stream_id,
        );
        out.put_slice(priority);
        out.put_slice(first);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(max));
            rest = tail;
            let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
            put_frame_header(
                out,
                chunk.len(),
                TYPE_CONTINUATION,
                flags,
                pending.stream_id,
            );
            out.put_slice(chunk);
        }
    }
}

/// Replaces every `:authority` h2 would refuse (the check is h2's own,
/// `Authority::from_maybe_shared`) with `localhost`; true if any was replaced.
fn replace_bad_authority(fields: &mut [Field]) -> bool {
    let mut replaced = false;
    for field in fields.iter_mut().filter(|f| f.name == b":authority") {
        let value = bytes::Bytes::copy_from_slice(&field.value);
        if http::uri::Authority::from_maybe_shared(value).is_err() {
            field.value = b"localhost".to_vec();
            replaced = true;
        }
    }
    replaced
}

fn put_frame_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream_id: u32) {
    out.put_uint(len as u64, 3);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream_id & 0x7fff_ffff);
}
