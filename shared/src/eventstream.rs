//! The AWS event-stream framing (Bedrock's `ConverseStream` answers), decoded incrementally:
//! bytes arrive split anywhere; whole messages come out once both checksums hold.
//!
//! A message is: total length (u32, big-endian), headers length (u32), CRC-32 of those eight
//! bytes, the headers, the payload, and the CRC-32 of everything before it. A header is a name
//! (u8 length, bytes), a type byte and a value; Bedrock's are strings (type 7: u16 length,
//! bytes), and the decoder skips the other types by their documented sizes.

/// One decoded message: its `:message-type`, `:event-type` (or `:exception-type`) and payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// `event` or `exception`.
    pub message_type: String,
    /// The event's or the exception's type (`contentBlockDelta`, `throttlingException`, ...).
    pub event_type: String,
    pub payload: Vec<u8>,
}

/// Why a stream cannot be decoded further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broken {
    /// The prelude's or the message's checksum does not match.
    Checksum,
    /// A length or a header is impossible.
    Malformed,
    /// A message is larger than the decoder accepts.
    TooLarge,
}

const PRELUDE: usize = 12;
const TRAILER: usize = 4;

/// Decodes messages as bytes arrive, holding at most one message's bytes.
#[derive(Debug)]
pub struct Decoder {
    pending: Vec<u8>,
    max_message: usize,
    broken: Option<Broken>,
}

impl Decoder {
    pub fn new(max_message: usize) -> Decoder {
        Decoder { pending: Vec::new(), max_message, broken: None }
    }

    /// The messages `bytes` completes; once the stream is broken, nothing more (see [`Decoder::broken`]).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Message> {
        let mut out = Vec::new();
        if self.broken.is_some() {
            return out;
        }
        self.pending.extend_from_slice(bytes);
        loop {
            match self.next() {
                Ok(Some(message)) => out.push(message),
                Ok(None) => break,
                Err(broken) => {
                    self.broken = Some(broken);
                    self.pending.clear();
                    break;
                }
            }
        }
        out
    }

    /// Why decoding stopped, if it did.
    pub fn broken(&self) -> Option<&Broken> {
        self.broken.as_ref()
    }

    /// Bytes of an unfinished message (at the end of the stream: a cut message).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn next(&mut self) -> Result<Option<Message>, Broken> {
        let Some(prelude) = self.pending.get(..PRELUDE) else { return Ok(None) };
        let total = be32(prelude, 0) as usize;
        let headers_len = be32(prelude, 4) as usize;
        if crc32(prelude.get(..8).unwrap_or_default()) != be32(prelude, 8) {
            return Err(Broken::Checksum);
        }
        if total < PRELUDE + TRAILER || headers_len > total - PRELUDE - TRAILER {
            return Err(Broken::Malformed);
        }
        if total > self.max_message {
            return Err(Broken::TooLarge);
        }
        let Some(whole) = self.pending.get(..total) else { return Ok(None) };
        let (body, trailer) = whole.split_at(total - TRAILER);
        if crc32(body) != be32(trailer, 0) {
            return Err(Broken::Checksum);
        }
        let headers = body.get(PRELUDE..PRELUDE + headers_len).ok_or(Broken::Malformed)?;
        let payload = body.get(PRELUDE + headers_len..).ok_or(Broken::Malformed)?.to_vec();
        let mut message = Message { payload, ..Message::default() };
        read_headers(headers, &mut message)?;
        self.pending.drain(..total);
        Ok(Some(message))
    }
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(slice) = bytes.get(at..at + 4) {
        word.copy_from_slice(slice);
    }
    u32::from_be_bytes(word)
}

fn read_headers(mut headers: &[u8], message: &mut Message) -> Result<(), Broken> {
    let take = |bytes: &mut &[u8], n: usize| -> Result<Vec<u8>, Broken> {
        let (head, rest) = (bytes.get(..n).ok_or(Broken::Malformed)?, bytes.get(n..).ok_or(Broken::Malformed)?);
        let head = head.to_vec();
        *bytes = rest;
        Ok(head)
    };
    while !headers.is_empty() {
        let name_len = *take(&mut headers, 1)?.first().ok_or(Broken::Malformed)? as usize;
        let name = String::from_utf8(take(&mut headers, name_len)?).map_err(|_| Broken::Malformed)?;
        let kind = *take(&mut headers, 1)?.first().ok_or(Broken::Malformed)?;
        // Sizes of the value types: 0/1 true/false, 2 byte, 3 short, 4 int, 5 long,
        // 6 bytes and 7 string (u16 length first), 8 timestamp, 9 uuid.
        let value = match kind {
            0 | 1 => Vec::new(),
            2 => take(&mut headers, 1)?,
            3 => take(&mut headers, 2)?,
            4 => take(&mut headers, 4)?,
            5 | 8 => take(&mut headers, 8)?,
            9 => take(&mut headers, 16)?,
            6 | 7 => {
                let len = take(&mut headers, 2)?;
                let len = u16::from_be_bytes([*len.first().unwrap_or(&0), *len.get(1).unwrap_or(&0)]) as usize;
                take(&mut headers, len)?
            }
            _ => return Err(Broken::Malformed),
        };
        if kind == 7 {
            let value = String::from_utf8(value).map_err(|_| Broken::Malformed)?;
            match name.as_str() {
                ":message-type" => message.message_type = value,
                ":event-type" | ":exception-type" => message.event_type = value,
                _ => {}
            }
        }
    }
    Ok(())
}

/// Encodes one message with string headers (for tests and the mock provider's twin in Rust).
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut encoded_headers = Vec::new();
    for (name, value) in headers {
        encoded_headers.push(name.len() as u8);
        encoded_headers.extend_from_slice(name.as_bytes());
        encoded_headers.push(7);
        encoded_headers.extend_from_slice(&(value.len() as u16).to_be_bytes());
        encoded_headers.extend_from_slice(value.as_bytes());
    }
    let total = PRELUDE + encoded_headers.len() + payload.len() + TRAILER;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(encoded_headers.len() as u32).to_be_bytes());
    let prelude_crc = crc32(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&encoded_headers);
    out.extend_from_slice(payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's), bit by bit: messages are small and few.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn event(kind: &str, payload: &str) -> Vec<u8> {
        encode(
            &[(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")],
            payload.as_bytes(),
        )
    }

    #[test]
    fn crc_matches_zlib() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn messages_split_anywhere_decode_the_same() {
        let mut stream = event("messageStart", r#"{"role":"assistant"}"#);
        stream.extend(event("contentBlockDelta", r#"{"delta":{"text":"Hi"},"contentBlockIndex":0}"#));
        stream.extend(encode(&[(":exception-type", "throttlingException"), (":message-type", "exception")], b"{}"));
        let whole = Decoder::new(1 << 20).push(&stream);
        assert_eq!(whole.len(), 3);
        assert_eq!((whole[0].message_type.as_str(), whole[0].event_type.as_str()), ("event", "messageStart"));
        assert_eq!(whole[1].payload, br#"{"delta":{"text":"Hi"},"contentBlockIndex":0}"#);
        assert_eq!(
            (whole[2].message_type.as_str(), whole[2].event_type.as_str()),
            ("exception", "throttlingException")
        );
        for size in [1, 2, 3, 5, 7, 11, 13, 64] {
            let mut decoder = Decoder::new(1 << 20);
            let got: Vec<Message> = stream.chunks(size).flat_map(|c| decoder.push(c)).collect();
            assert_eq!(got, whole, "chunks of {size}");
            assert_eq!((decoder.pending(), decoder.broken()), (0, None));
        }
    }

    #[test]
    fn corrupt_cut_and_oversized_messages_are_reported_never_passed() {
        let good = event("messageStop", r#"{"stopReason":"end_turn"}"#);
        for at in [0, 5, 9, 14, good.len() - 6, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            let mut decoder = Decoder::new(1 << 20);
            assert_eq!(decoder.push(&bad), Vec::new(), "flipped byte {at}");
            assert!(decoder.broken().is_some(), "flipped byte {at}");
            // Nothing after a broken message is trusted.
            assert_eq!(decoder.push(&good), Vec::new());
        }
        let mut cut = Decoder::new(1 << 20);
        assert!(cut.push(&good[..good.len() - 3]).is_empty());
        assert_eq!((cut.pending(), cut.broken()), (good.len() - 3, None));
        let mut small = Decoder::new(16);
        assert!(small.push(&good).is_empty());
        assert_eq!(small.broken(), Some(&Broken::TooLarge));
    }
}
