//! One connection's HPACK state as the server sees it: decodes every request header block
//! with a decoder that follows the client's dynamic table, and encodes a block that needs no
//! table at all (literals without indexing).
//!
//! `loona-hpack` does the table and the Huffman code (it bounds integers, checks every length
//! against the input and rejects table sizes over the limit instead of panicking, unlike
//! `hpack` 0.3, which unwraps on a truncated size update, or `httlib-hpack`, which indexes past
//! the end of a truncated literal). It does not say which fields were "never indexed" and it
//! accepts a table size update anywhere in a block, so [`representations`] reads the block's
//! structure first: the size updates it finds at the start are applied here, one found later
//! is refused (as h2's decoder refuses it), and the never-indexed flag travels with each field.

/// HPACK's own name for a decoding failure, shown in the connection's closing log line.
pub type HpackError = String;

/// A decoded header field, as the client sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
    /// Sent as "literal never indexed" (RFC 7541 §6.2.3): an intermediary must keep it so.
    pub never_indexed: bool,
}

/// The decoder side of one connection (client → server).
pub struct BlockDecoder {
    decoder: loona_hpack::Decoder<'static>,
    max_table_size: usize,
}

impl BlockDecoder {
    /// `max_table_size` is the server's SETTINGS_HEADER_TABLE_SIZE: the most the client's
    /// encoder may use.
    pub fn new(max_table_size: usize) -> BlockDecoder {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(max_table_size);
        decoder.set_max_table_size(max_table_size);
        BlockDecoder {
            decoder,
            max_table_size,
        }
    }

    /// Decodes one complete header block, updating the table as the client's encoder did.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<Field>, HpackError> {
        let reps = representations(block)?;
        let mut fields_start = 0;
        for rep in reps.iter().take_while(|r| r.kind == Kind::SizeUpdate) {
            let size = rep.size_update.unwrap_or(0);
            if size > self.max_table_size {
                return Err(format!(
                    "table size update to {size} over the limit {}",
                    self.max_table_size
                ));
            }
            self.decoder.set_max_table_size(size);
            fields_start = rep.end;
        }
        let mut fields = Vec::with_capacity(reps.len());
        let mut kinds = reps.iter().filter(|r| r.kind != Kind::SizeUpdate);
        let mut missing_kind = false;
        self.decoder
            .decode_with_cb(&block[fields_start..], |name, value| {
                let never_indexed = match kinds.next() {
                    Some(rep) => rep.kind == Kind::NeverIndexed,
                    None => {
                        missing_kind = true;
                        false
                    }
                };
                fields.push(Field {
                    name: name.into_owned(),
                    value: value.into_owned(),
                    never_indexed,
                });
            })
            .map_err(|e| format!("HPACK: {e}"))?;
        if missing_kind || kinds.next().is_some() {
            return Err("HPACK: the block's fields and its structure disagree".to_string());
        }
        Ok(fields)
    }
}

/// Appends a block that leaves the server's table untouched: optionally a size update to 0
/// first (so the table is empty and stays so), then every field as a literal with a literal
/// name, without indexing (never indexed where the client said so), no Huffman.
pub fn encode_literal_block(fields: &[Field], empty_table_first: bool, out: &mut Vec<u8>) {
    if empty_table_first {
        out.push(0x20);
    }
    for field in fields {
        out.push(if field.never_indexed { 0x10 } else { 0x00 });
        encode_string(&field.name, out);
        encode_string(&field.value, out);
    }
}

fn encode_string(bytes: &[u8], out: &mut Vec<u8>) {
    encode_integer(bytes.len(), 7, 0x00, out);
    out.extend_from_slice(bytes);
}

/// RFC 7541 §5.1: `value` with an N-bit prefix, the octet's high bits from `flags`.
fn encode_integer(value: usize, prefix_bits: u8, flags: u8, out: &mut Vec<u8>) {
    let max_prefix = (1usize << prefix_bits) - 1;
    if value < max_prefix {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max_prefix as u8);
    let mut rest = value - max_prefix;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// How a field is represented in a block (RFC 7541 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Indexed,
    IncrementalIndexing,
    WithoutIndexing,
    NeverIndexed,
    SizeUpdate,
}

struct Representation {
    kind: Kind,
    /// The new size, for a size update.
    size_update: Option<usize>,
    /// Offset just past this representation.
    end: usize,
}

/// The block's representations in order, read from their prefixes and lengths alone
/// (nothing decoded). A size update after a field is an error, as in h2.
fn representations(block: &[u8]) -> Result<Vec<Representation>, HpackError> {
    let mut reps = Vec::new();
    let mut at = 0;
    let mut fields_seen = false;
    while at < block.len() {
        let octet = block[at];
        let (kind, prefix) = match octet {
            o if o & 0x80 != 0 => (Kind::Indexed, 7),
            o if o & 0x40 != 0 => (Kind::IncrementalIndexing, 6),
            o if o & 0x20 != 0 => (Kind::SizeUpdate, 5),
            o if o & 0x10 != 0 => (Kind::NeverIndexed, 4),
            _ => (Kind::WithoutIndexing, 4),
        };
        let (index, mut next) = read_integer(block, at, prefix)?;
        let mut size_update = None;
        match kind {
            Kind::SizeUpdate if fields_seen => {
                return Err("HPACK: table size update after a header field".to_string())
            }
            Kind::SizeUpdate => size_update = Some(index),
            Kind::Indexed => fields_seen = true,
            _ => {
                fields_seen = true;
                if index == 0 {
                    next = skip_string(block, next)?;
                }
                next = skip_string(block, next)?;
            }
        }
        reps.push(Representation {
            kind,
            size_update,
            end: next,
        });
        at = next;
    }
    Ok(reps)
}

/// An HPACK integer at `at` with an N-bit prefix: its value and the offset after it. At most
/// five octets, as every decoder in the field limits it, so it never overflows.
fn read_integer(block: &[u8], at: usize, prefix_bits: u8) -> Result<(usize, usize), HpackError> {
    let truncated = || "HPACK: truncated integer".to_string();
    let first = *block.get(at).ok_or_else(truncated)?;
    let max_prefix = (1usize << prefix_bits) - 1;
    let mut value = usize::from(first) & max_prefix;
    if value < max_prefix {
        return Ok((value, at + 1));
    }
    for (i, shift) in (0..4).map(|i| (i, i * 7)) {
        let octet = *block.get(at + 1 + i).ok_or_else(truncated)?;
        value += usize::from(octet & 0x7f) << shift;
        if octet & 0x80 == 0 {
            return Ok((value, at + 2 + i));
        }
    }
    Err("HPACK: integer longer than five octets".to_string())
}

/// Skips a string literal (H bit, length, octets) at `at`.
fn skip_string(block: &[u8], at: usize) -> Result<usize, HpackError> {
    let (len, start) = read_integer(block, at, 7)?;
    let end = start
        .checked_add(len)
        .filter(|end| *end <= block.len())
        .ok_or_else(|| "HPACK: string longer than the block".to_string())?;
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, value: &str) -> Field {
        Field {
            name: name.into(),
            value: value.into(),
            never_indexed: false,
        }
    }

    /// Encodes with httlib-hpack (Huffman, incremental indexing, as grpc-go does).
    fn client_block(enc: &mut httlib_hpack::Encoder, fields: &[(&str, &str, u8)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v, flags) in fields {
            enc.encode(
                (n.as_bytes().to_vec(), v.as_bytes().to_vec(), *flags),
                &mut out,
            )
            .expect("encodes");
        }
        out
    }

    const INDEXED: u8 = 0x1 | 0x2 | 0x4 | 0x10;
    const SENSITIVE: u8 = 0x2 | 0x8;

    #[test]
    fn follows_the_clients_table_and_keeps_never_indexed() {
        let mut enc = httlib_hpack::Encoder::with_dynamic_size(4096);
        let mut dec = BlockDecoder::new(4096);
        for round in 0..3 {
            let block = client_block(
                &mut enc,
                &[
                    (":method", "POST", INDEXED),
                    (":authority", "/run/crisp/crisp.sock", INDEXED),
                    ("authorization", "secret", SENSITIVE),
                ],
            );
            let fields = dec.decode(&block).expect("decodes");
            assert_eq!(fields[0], field(":method", "POST"), "round {round}");
            assert_eq!(fields[1], field(":authority", "/run/crisp/crisp.sock"));
            assert!(fields[2].never_indexed, "{:?}", fields[2]);
        }
    }

    #[test]
    fn literal_block_round_trips_through_a_fresh_decoder() {
        let fields = vec![
            field(":path", "/runtime.v1.RuntimeService/Version"),
            Field {
                never_indexed: true,
                ..field("x-long", &"v".repeat(300))
            },
        ];
        let mut out = Vec::new();
        encode_literal_block(&fields, true, &mut out);
        assert_eq!(out[0], 0x20, "starts with a size update to 0");
        let mut dec = BlockDecoder::new(4096);
        assert_eq!(dec.decode(&out).expect("decodes"), fields);
    }

    /// Each malformed block is an error with a reason, never a panic.
    #[test]
    fn malformed_blocks_are_errors() {
        let cases: &[(&str, &[u8])] = &[
            ("truncated integer", &[0x3f]),
            (
                "integer over five octets",
                &[0x3f, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
            ("string past the end", &[0x00, 0x05, b'a']),
            ("literal with no value", &[0x00, 0x01, b'a']),
            ("index out of range", &[0xff, 0x40]),
            ("size update after a field", &[0x82, 0x20]),
            ("size update over the limit", &[0x3f, 0xe2, 0x1f]),
            ("bad huffman", &[0x00, 0x81, 0xff, 0x00]),
        ];
        for (what, block) in cases {
            let mut dec = BlockDecoder::new(4096);
            assert!(dec.decode(block).is_err(), "{what}: {block:?}");
        }
    }

    #[test]
    fn leading_size_updates_apply_in_order() {
        let mut dec = BlockDecoder::new(4096);
        let fields = dec
            .decode(&[0x20, 0x3f, 0xe1, 0x1f, 0x82])
            .expect("decodes");
        assert_eq!(fields, vec![field(":method", "GET")]);
    }
}
