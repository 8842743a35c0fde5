//! The HTTP/2 authority adapter (`server::authority::Rewriter`): no client bytes make it panic,
//! and whatever it emits, an h2 server decodes to the requests the client sent (`:authority`
//! aside, which becomes `localhost` when h2 would refuse it), or the connection is closed.
//!
//! Two kinds of input. `Raw` bytes, fed in arbitrary chunks: every request h2 accepts from the
//! adapter's output must equal a reference decode of the input (an independent frame walk and
//! a fresh HPACK decoder). `Requests`: well-formed gRPC requests encoded the way clients encode
//! them (Huffman, incremental indexing, never-indexed, table size updates, CONTINUATION,
//! padding, priority): h2 must accept every one of them, each exactly as generated.
#![no_main]

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use crisp::server::authority::{Rewriter, LIMITS};
use libfuzzer_sys::fuzz_target;
use std::task::Poll;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;
const PING_DATA: [u8; 8] = *b"crispfz!";

#[derive(Arbitrary, Debug)]
enum Input {
    Raw {
        with_preface: bool,
        chunks: Vec<u16>,
        bytes: Vec<u8>,
    },
    Requests {
        chunks: Vec<u16>,
        requests: Vec<Request>,
    },
}

#[derive(Arbitrary, Debug)]
struct Request {
    authority: AuthorityChoice,
    path: u16,
    metadata: Vec<(u8, Vec<u8>, u8)>,
    pseudo_flags: u8,
    table_size_update: Option<u16>,
    splits: Vec<u8>,
    padding: Option<u8>,
    priority: bool,
    body: bool,
}

#[derive(Arbitrary, Debug)]
enum AuthorityChoice {
    Absent,
    Localhost,
    SocketPath,
    EncodedPath,
    Empty,
    Other(Vec<u8>),
}

/// One request as h2 hands it to the server, in comparable form.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    stream: u32,
    method: String,
    scheme: Option<String>,
    authority: Option<String>,
    path: Option<String>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
}

fuzz_target!(|input: Input| match input {
    Input::Raw {
        with_preface,
        chunks,
        bytes,
    } => {
        let stream = if with_preface {
            [PREFACE, &bytes].concat()
        } else {
            bytes
        };
        check_raw(&stream, &chunks);
    }
    Input::Requests { chunks, requests } => check_requests(&requests, &chunks),
});

fn check_raw(stream: &[u8], chunks: &[u16]) {
    let (out, _broken) = rewrite(stream, chunks);
    let reference = reference_decode(stream);
    for seen in serve(out) {
        let fields = reference
            .iter()
            .find(|(id, _)| *id == seen.stream)
            .map(|(_, fields)| fields)
            .unwrap_or_else(|| panic!("h2 accepted stream {} the input never opened", seen.stream));
        assert_matches(&seen, fields);
    }
}

fn check_requests(requests: &[Request], chunks: &[u16]) {
    let mut encoder = httlib_hpack::Encoder::with_dynamic_size(LIMITS.header_table_size as u32);
    let mut stream = PREFACE.to_vec();
    frame(&mut stream, 0x4, 0, 0, &[]); // the client's SETTINGS
    let mut expected = Vec::new();
    for (i, request) in requests.iter().take(64).enumerate() {
        let id = 1 + 2 * i as u32;
        let Some(seen) = encode_request(&mut encoder, request, id, &mut stream) else {
            return; // the encoder refused a field: nothing to check
        };
        expected.push(seen);
    }
    let (out, broken) = rewrite(&stream, chunks);
    assert_eq!(broken, None, "the adapter closed a well-formed connection");
    assert_eq!(serve(out), expected);
}

/// Feeds the adapter as a socket would, `chunks` giving the read sizes.
fn rewrite(stream: &[u8], chunks: &[u16]) -> (Vec<u8>, Option<crisp::server::authority::Broken>) {
    let mut rewriter = Rewriter::new(LIMITS);
    let (mut pending, mut out) = (BytesMut::new(), BytesMut::new());
    let mut sizes = chunks
        .iter()
        .map(|n| 1 + *n as usize)
        .chain(std::iter::repeat(4096));
    let mut rest = stream;
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(4096).min(rest.len());
        pending.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        if let Err(broken) = rewriter.process(&mut pending, &mut out) {
            return (out.to_vec(), Some(broken));
        }
    }
    (out.to_vec(), None)
}

/// Runs an h2 server (configured as crisp's) over `bytes` and returns what it accepted. When
/// the bytes end at a frame boundary a PING follows them, and its ACK tells that h2 has read
/// everything before it (closing the socket instead would make h2 drop what it has not yet
/// handed out); otherwise the socket is closed after the bytes.
fn serve(mut bytes: Vec<u8>) -> Vec<Seen> {
    if bytes.is_empty() {
        return Vec::new();
    }
    let ping = ends_at_frame_boundary(&bytes);
    if ping {
        frame(&mut bytes, PING, 0, 0, &PING_DATA);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async move {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (from_server, mut to_server) = tokio::io::split(client);
        let writer = tokio::spawn(async move {
            let _ = to_server.write_all(&bytes).await;
            if ping {
                std::future::pending::<()>().await;
            }
            let _ = to_server.shutdown().await;
        });
        let (acked, ack) = tokio::sync::oneshot::channel();
        let reader = tokio::spawn(wait_for_ping_ack(from_server, acked));
        let seen = accept_all(server, ack).await;
        writer.abort();
        reader.abort();
        seen
    })
}

fn ends_at_frame_boundary(bytes: &[u8]) -> bool {
    let Some(mut rest) = bytes.strip_prefix(PREFACE) else {
        return false;
    };
    while rest.len() >= 9 {
        let len = 9 + u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        let Some(next) = rest.get(len..) else {
            return false;
        };
        rest = next;
    }
    rest.is_empty()
}

/// Reads what the server writes and says when the ACK of our PING arrives.
async fn wait_for_ping_ack(
    mut from_server: ReadHalf<DuplexStream>,
    acked: tokio::sync::oneshot::Sender<()>,
) {
    let mut read = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut at = 0;
    while let Ok(n @ 1..) = from_server.read(&mut chunk).await {
        read.extend_from_slice(&chunk[..n]);
        while let Some(header) = read.get(at..at + 9) {
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let Some(payload) = read.get(at + 9..at + 9 + len) else {
                break;
            };
            if header[3] == PING && header[4] & ACK != 0 && payload == PING_DATA {
                let _ = acked.send(());
                return;
            }
            at += 9 + len;
        }
    }
}

async fn accept_all(io: DuplexStream, mut ack: tokio::sync::oneshot::Receiver<()>) -> Vec<Seen> {
    let mut seen = Vec::new();
    let handshake = h2::server::Builder::new()
        .max_header_list_size(LIMITS.max_header_list_size as u32)
        .max_frame_size(LIMITS.max_frame_size as u32)
        .handshake::<_, Bytes>(io);
    let Ok(mut conn) = handshake.await else {
        return seen;
    };
    loop {
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((request, respond))) => seen.push(Seen::of(&request, &respond)),
                _ => return seen,
            },
            _ = &mut ack => break,
        }
    }
    // The PING came after every request: what h2 read before it is queued, ready at once.
    while let Poll::Ready(Some(Ok((request, respond)))) =
        std::future::poll_fn(|cx| Poll::Ready(conn.poll_accept(cx))).await
    {
        seen.push(Seen::of(&request, &respond));
    }
    seen
}

impl Seen {
    fn of<B>(request: &http::Request<B>, respond: &h2::server::SendResponse<Bytes>) -> Seen {
        let uri = request.uri();
        let mut headers: Vec<_> = request
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        headers.sort();
        Seen {
            stream: u32::from(respond.stream_id()),
            method: request.method().as_str().to_string(),
            scheme: uri.scheme_str().map(str::to_string),
            authority: uri.authority().map(|a| a.as_str().to_string()),
            path: uri.path_and_query().map(|p| p.as_str().to_string()),
            headers,
        }
    }
}

/// What h2 must deliver for a request whose first header block decoded to `fields`.
fn assert_matches(seen: &Seen, fields: &[(Vec<u8>, Vec<u8>)]) {
    let pseudo = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| v.clone())
    };
    let method = pseudo(":method").expect("h2 accepted a request without :method");
    assert_eq!(seen.method.as_bytes(), method.as_slice(), "{seen:?}");
    // h2 keeps the scheme only in a URI that has an authority.
    if let (Some(scheme), Some(_)) = (pseudo(":scheme"), &seen.authority) {
        assert_eq!(seen.scheme.as_deref().map(str::as_bytes), Some(&scheme[..]));
    }
    if let Some(Ok(path)) = pseudo(":path").map(|p| http::uri::PathAndQuery::try_from(p)) {
        assert_eq!(seen.path.as_deref(), Some(path.as_str()), "{seen:?}");
    }
    assert_eq!(seen.authority, expected_authority(pseudo(":authority")));
    let mut headers: Vec<_> = fields
        .iter()
        .filter(|(n, _)| !n.starts_with(b":"))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect();
    headers.sort();
    assert_eq!(seen.headers, headers, "{seen:?}");
}

/// A valid authority arrives unchanged, one h2 would refuse arrives as `localhost`.
fn expected_authority(sent: Option<Vec<u8>>) -> Option<String> {
    let sent = sent?;
    match http::uri::Authority::from_maybe_shared(Bytes::from(sent)) {
        Ok(valid) => Some(valid.as_str().to_string()),
        Err(_) => Some("localhost".to_string()),
    }
}

/// The reference: walks the input's frames and decodes each stream's first header block with
/// a fresh decoder, stopping at the first thing it cannot read.
fn reference_decode(stream: &[u8]) -> Vec<(u32, Vec<(Vec<u8>, Vec<u8>)>)> {
    let mut decoded: Vec<(u32, Vec<(Vec<u8>, Vec<u8>)>)> = Vec::new();
    let Some(mut rest) = stream.strip_prefix(PREFACE) else {
        return decoded;
    };
    let mut decoder = loona_hpack::Decoder::new();
    decoder.set_max_allowed_table_size(LIMITS.header_table_size);
    decoder.set_max_table_size(LIMITS.header_table_size);
    let mut block: Option<(u32, Vec<u8>)> = None;
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        let (kind, flags) = (rest[3], rest[4]);
        let id = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
        let Some(payload) = rest.get(9..9 + len) else {
            break;
        };
        rest = &rest[9 + len..];
        let fragment = match (kind, &mut block) {
            (HEADERS, None) => match headers_fragment(payload, flags) {
                Some(fragment) => {
                    block = Some((id, Vec::new()));
                    fragment
                }
                None => break,
            },
            (CONTINUATION, Some((open, _))) if *open == id => payload,
            (_, Some(_)) | (CONTINUATION, None) => break,
            _ => continue,
        };
        if let Some((_, bytes)) = &mut block {
            bytes.extend_from_slice(fragment);
        }
        if flags & END_HEADERS == 0 {
            continue;
        }
        let Some((id, bytes)) = block.take() else {
            break;
        };
        let Ok(fields) = decoder.decode(&bytes) else {
            break;
        };
        if !decoded.iter().any(|(seen, _)| *seen == id) {
            decoded.push((id, fields));
        }
    }
    decoded
}

/// A HEADERS payload without its padding and priority.
fn headers_fragment(payload: &[u8], flags: u8) -> Option<&[u8]> {
    let mut fragment = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        pad = *fragment.first()? as usize;
        fragment = &fragment[1..];
    }
    if flags & PRIORITY != 0 {
        fragment = fragment.get(5..)?;
    }
    fragment.get(..fragment.len().checked_sub(pad)?)
}

const PATHS: &[&str] = &[
    "/runtime.v1.RuntimeService/Version",
    "/runtime.v1.RuntimeService/PodSandboxStatus",
    "/runtime.v1.RuntimeService/ListPodSandbox",
    "/runtime.v1.ImageService/ImageFsInfo",
];
const METADATA: &[&str] = &[
    "user-agent",
    "grpc-timeout",
    "grpc-accept-encoding",
    "x-request-id",
    "x-trace-bin",
    "authorization",
];

/// Encodes one request as a client would and returns what h2 must deliver for it.
fn encode_request(
    encoder: &mut httlib_hpack::Encoder<'static>,
    request: &Request,
    id: u32,
    stream: &mut Vec<u8>,
) -> Option<Seen> {
    let path = format!(
        "{}{}",
        PATHS[request.path as usize % PATHS.len()],
        request.path
    );
    let authority = match &request.authority {
        AuthorityChoice::Absent => None,
        AuthorityChoice::Localhost => Some(b"localhost".to_vec()),
        AuthorityChoice::SocketPath => Some(b"/run/crisp/crisp.sock".to_vec()),
        AuthorityChoice::EncodedPath => Some(b"%2Frun%2Fcrisp%2Fcrisp.sock".to_vec()),
        AuthorityChoice::Empty => Some(Vec::new()),
        AuthorityChoice::Other(bytes) => Some(bytes.iter().map(|b| 0x21 + b % 94).collect()),
    };
    let mut fields: Vec<(Vec<u8>, Vec<u8>, u8)> = vec![
        (b":method".to_vec(), b"POST".to_vec(), request.pseudo_flags),
        (b":scheme".to_vec(), b"http".to_vec(), request.pseudo_flags),
        (
            b":path".to_vec(),
            path.clone().into_bytes(),
            request.pseudo_flags,
        ),
    ];
    if let Some(authority) = &authority {
        fields.push((
            b":authority".to_vec(),
            authority.clone(),
            request.pseudo_flags,
        ));
    }
    fields.push((
        b"content-type".to_vec(),
        b"application/grpc".to_vec(),
        request.pseudo_flags,
    ));
    fields.push((b"te".to_vec(), b"trailers".to_vec(), request.pseudo_flags));
    for (name, value, flags) in request.metadata.iter().take(8) {
        let name = METADATA[*name as usize % METADATA.len()]
            .as_bytes()
            .to_vec();
        let value = value.iter().take(64).map(|b| 0x20 + b % 95).collect();
        fields.push((name, value, *flags));
    }
    let mut block = Vec::new();
    if let Some(size) = request.table_size_update {
        let size = u32::from(size) % (LIMITS.header_table_size as u32 + 1);
        encoder.update_max_dynamic_size(size, &mut block).ok()?;
    }
    for (name, value, flags) in &fields {
        let flags = hpack_flags(*flags);
        encoder
            .encode((name.clone(), value.clone(), flags), &mut block)
            .ok()?;
    }
    write_block(stream, id, request, &block);
    let mut headers: Vec<_> = fields[3..]
        .iter()
        .filter(|(n, _, _)| !n.starts_with(b":"))
        .map(|(n, v, _)| (n.clone(), v.clone()))
        .collect();
    headers.sort();
    Some(Seen {
        stream: id,
        method: "POST".to_string(),
        scheme: authority.is_some().then(|| "http".to_string()),
        authority: expected_authority(authority),
        path: Some(path),
        headers,
    })
}

/// One of the representations clients use: plain literal, incremental indexing or never
/// indexed, each optionally Huffman-coded, optionally reusing what the table already holds.
fn hpack_flags(choice: u8) -> u8 {
    use httlib_hpack::Encoder as E;
    let indexing = [0, E::WITH_INDEXING, E::NEVER_INDEXED][choice as usize % 3];
    let huffman = (choice >> 2) & (E::HUFFMAN_NAME | E::HUFFMAN_VALUE);
    let best = if choice & 0x80 != 0 {
        E::BEST_FORMAT
    } else {
        0
    };
    indexing | huffman | best
}

/// HEADERS (padded, with priority, as asked) and CONTINUATIONs at the asked split points,
/// then a DATA frame if the request has a body.
fn write_block(stream: &mut Vec<u8>, id: u32, request: &Request, block: &[u8]) {
    let mut cuts: Vec<usize> = request
        .splits
        .iter()
        .take(3)
        .map(|s| *s as usize * block.len() / 256)
        .collect();
    cuts.sort();
    cuts.dedup();
    cuts.push(block.len());
    let mut start = 0;
    for (i, end) in cuts.iter().enumerate() {
        let fragment = &block[start..(*end).max(start)];
        start = (*end).max(start);
        let last = i + 1 == cuts.len();
        let mut flags = if last { END_HEADERS } else { 0 };
        if i > 0 {
            frame(stream, CONTINUATION, flags, id, fragment);
            continue;
        }
        if !request.body {
            flags |= END_STREAM;
        }
        let mut payload = Vec::new();
        if let Some(pad) = request.padding {
            flags |= PADDED;
            payload.push(pad);
        }
        if request.priority {
            flags |= PRIORITY;
            payload.extend_from_slice(&[0, 0, 0, 0, 15]);
        }
        payload.extend_from_slice(fragment);
        payload.resize(payload.len() + request.padding.unwrap_or(0) as usize, 0);
        frame(stream, HEADERS, flags, id, &payload);
    }
    if request.body {
        frame(stream, 0x0, END_STREAM, id, &[0, 0, 0, 0, 0]);
    }
}

fn frame(stream: &mut Vec<u8>, kind: u8, flags: u8, id: u32, payload: &[u8]) {
    let len = (payload.len() as u32).to_be_bytes();
    stream.extend_from_slice(&[len[1], len[2], len[3], kind, flags]);
    stream.extend_from_slice(&id.to_be_bytes());
    stream.extend_from_slice(payload);
}
