//! Incremental Server-Sent Events parser: feed chunks as they arrive, split anywhere (inside a
//! line, a UTF-8 sequence or a CRLF), and get whole events back.

/// One dispatched event. `data` is the `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    event: Option<String>,
    data: String,
    has_data: bool,
    /// The previous chunk ended in `\r`: a `\n` that starts the next one belongs to it.
    pending_cr: bool,
    /// Lines longer than this are dropped (and [`SseParser::overflowed`] is set) so that a stream
    /// without newlines cannot grow memory without bound.
    max_line_bytes: usize,
    skipping_long_line: bool,
    overflowed: bool,
}

impl SseParser {
    pub fn new(max_line_bytes: usize) -> Self {
        SseParser {
            line: Vec::new(),
            event: None,
            data: String::new(),
            has_data: false,
            pending_cr: false,
            max_line_bytes,
            skipping_long_line: false,
            overflowed: false,
        }
    }

    /// Whether any line was dropped for exceeding the line limit.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Feeds one chunk and returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut rest = chunk;
        if self.pending_cr {
            self.pending_cr = false;
            if let Some(after_lf) = rest.strip_prefix(b"\n") {
                rest = after_lf;
            }
        }
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(end) => {
                    let (head, tail) = rest.split_at(end);
                    self.append(head);
                    let is_cr = tail.first() == Some(&b'\r');
                    rest = tail.get(1..).unwrap_or_default();
                    if is_cr {
                        match rest.first() {
                            Some(b'\n') => rest = rest.get(1..).unwrap_or_default(),
                            None => self.pending_cr = true,
                            Some(_) => {}
                        }
                    }
                    self.end_line(&mut events);
                }
                None => {
                    self.append(rest);
                    rest = &[];
                }
            }
        }
        events
    }

    /// Ends the stream: an event whose blank line never came is still delivered, because the
    /// usage it may carry is worth more than strictness.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let mut events = Vec::new();
        if !self.line.is_empty() {
            self.end_line(&mut events);
        }
        self.end_line(&mut events);
        events.pop()
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.skipping_long_line {
            return;
        }
        if self.line.len().saturating_add(bytes.len()) > self.max_line_bytes {
            self.line.clear();
            self.skipping_long_line = true;
            self.overflowed = true;
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn end_line(&mut self, events: &mut Vec<SseEvent>) {
        if self.skipping_long_line {
            self.skipping_long_line = false;
            return;
        }
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if self.has_data {
                let mut data = std::mem::take(&mut self.data);
                if data.ends_with('\n') {
                    data.pop();
                }
                events.push(SseEvent { event: self.event.take(), data });
            }
            self.event = None;
            self.has_data = false;
            return;
        }
        if line.first() == Some(&b':') {
            return; // comment
        }
        let text = String::from_utf8_lossy(&line);
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_ref(), ""),
        };
        match field {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_string()),
            _ => {} // id, retry and unknown fields do not matter for accounting
        }
    }
}

/// Appends one event to `out`: its `event:` line when named, one `data:` line per line of
/// `data` (a newline in the payload stays a newline to the reader), then the blank line.
pub fn write_event(out: &mut String, name: Option<&str>, data: &str) {
    if let Some(name) = name {
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const STREAM: &str =
        "event: message_start\ndata: {\"a\":1}\n\n: keep-alive\n\ndata: first\ndata: second\n\nid: 7\ndata: [DONE]\n\n";

    fn expected() -> Vec<SseEvent> {
        vec![
            SseEvent { event: Some("message_start".into()), data: "{\"a\":1}".into() },
            SseEvent { event: None, data: "first\nsecond".into() },
            SseEvent { event: None, data: "[DONE]".into() },
        ]
    }

    fn parse_in_pieces(stream: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
        let mut parser = SseParser::new(1 << 20);
        let mut events = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
            events.extend(parser.push(&stream[start..cut]));
            start = cut;
        }
        events.extend(parser.finish());
        events
    }

    #[test]
    fn whole_stream_at_once() {
        assert_eq!(parse_in_pieces(STREAM.as_bytes(), &[]), expected());
    }

    #[test]
    fn every_single_split_point() {
        let bytes = STREAM.as_bytes();
        for cut in 0..=bytes.len() {
            assert_eq!(parse_in_pieces(bytes, &[cut]), expected(), "split at {cut}");
        }
    }

    #[test]
    fn written_events_parse_back() {
        let mut out = String::new();
        for event in expected() {
            write_event(&mut out, event.event.as_deref(), &event.data);
        }
        assert_eq!(out, "event: message_start\ndata: {\"a\":1}\n\ndata: first\ndata: second\n\ndata: [DONE]\n\n");
        assert_eq!(parse_in_pieces(out.as_bytes(), &[]), expected());
    }

    #[test]
    fn byte_by_byte_with_crlf_and_cr() {
        for ending in ["\r\n", "\r"] {
            let stream = STREAM.replace('\n', ending);
            let bytes = stream.as_bytes();
            let cuts: Vec<usize> = (1..bytes.len()).collect();
            assert_eq!(parse_in_pieces(bytes, &cuts), expected(), "ending {ending:?}");
        }
    }

    #[test]
    fn utf8_split_inside_a_character() {
        let stream = "data: héllo 世界\n\n".as_bytes();
        for cut in 0..=stream.len() {
            let events = parse_in_pieces(stream, &[cut]);
            assert_eq!(events[0].data, "héllo 世界", "split at {cut}");
        }
    }

    #[test]
    fn unterminated_last_event_is_delivered() {
        assert_eq!(
            parse_in_pieces(b"data: {\"usage\":1}", &[]),
            vec![SseEvent { event: None, data: "{\"usage\":1}".into() }]
        );
    }

    #[test]
    fn overlong_line_is_dropped_and_flagged() {
        let mut parser = SseParser::new(16);
        let mut events = parser.push(b"data: 0123456789012345678901234567890\n\n");
        events.extend(parser.push(b"data: ok\n\n"));
        assert!(parser.overflowed());
        assert_eq!(events, vec![SseEvent { event: None, data: "ok".into() }]);
    }

    #[test]
    fn non_utf8_is_replaced_not_fatal() {
        let mut parser = SseParser::new(1024);
        let events = parser.push(b"data: \xff\xfe\n\n");
        assert_eq!(events.len(), 1);
        assert!(events[0].data.contains('\u{FFFD}'));
    }
}
