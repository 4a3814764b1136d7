//! One channel of answer text (a choice's content, a tool call's arguments), as it streams:
//! placeholders are restored to the prompt's values and, when configured, sensitive data the
//! prompt did not contain is redacted or blocks the answer.
//!
//! A placeholder or an entity can be split across events (`<EMA` then `IL_1>`), so the stream
//! holds back the tail that could still grow into one and releases it with the next text or at
//! the end. Entities the answer writes (output scanning) are held for up to [`SCAN_HOLDBACK`]
//! bytes, the length of the longest structured entity in practice.

use crate::config::OutputAction;
use crate::detect::Finding;
use crate::scrub::{Scrubber, Tally, Vault};

/// Bytes held back from a stream while output scanning is on.
pub const SCAN_HOLDBACK: usize = 64;

/// What the answer side needs to process text.
pub struct Answering<'a> {
    pub vault: &'a Vault,
    pub restore: bool,
    /// Output scanning: the detectors and what to do.
    pub scan: Option<(&'a Scrubber, OutputAction)>,
}

#[derive(Debug, Default)]
pub struct TextStream {
    pending: String,
    /// Hold everything until the end (a JSON answer checked whole).
    pub hold_all: bool,
    /// Sensitive data blocked the answer: no more text is released.
    pub blocked: bool,
    /// Everything released so far (kept only when `hold_all` or for a format check).
    pub released: String,
    pub keep_released: bool,
}

impl TextStream {
    /// `hold_all`: release nothing until the end; `keep_released`: keep what was released.
    pub fn new(hold_all: bool, keep_released: bool) -> TextStream {
        TextStream { hold_all, keep_released, ..TextStream::default() }
    }

    /// Adds text; returns what can be released now. `last` releases everything.
    pub fn push(&mut self, text: &str, last: bool, a: &Answering<'_>, tally: &mut Tally) -> String {
        self.pending.push_str(text);
        if self.blocked {
            self.pending.clear();
            return String::new();
        }
        // One detection pass over the held text serves both the cut and the redaction.
        let scan = a.scan.filter(|(_, action)| *action != OutputAction::Off);
        let findings = scan.map(|(scrubber, _)| scrubber.find(&self.pending)).unwrap_or_default();
        let cut = if last { self.pending.len() } else { self.release_point(a, &findings) };
        if cut == 0 || (self.hold_all && !last) {
            return String::new();
        }
        let rest = self.pending.split_off(cut.min(self.pending.len()));
        let ready = std::mem::replace(&mut self.pending, rest);
        let released: Vec<Finding> = findings.into_iter().filter(|f| f.end <= ready.len()).collect();
        let out = match scan {
            Some((_, action)) => self.redact_output(&ready, &released, action, a.vault, tally),
            None => ready,
        };
        let out = if a.restore && !a.vault.is_empty() { restore(&out, a.vault) } else { out };
        if self.keep_released || self.hold_all {
            self.released.push_str(&out);
        }
        out
    }

    /// Where the text that can no longer change ends.
    fn release_point(&self, a: &Answering<'_>, findings: &[Finding]) -> usize {
        let text = &self.pending;
        let mut cut = text.len();
        if a.restore && !a.vault.is_empty() {
            // A `<` whose tail could still become a placeholder.
            if let Some(lt) = text.rfind('<') {
                let tail = text.get(lt + 1..).unwrap_or_default();
                let could_be = tail.len() < a.vault.longest_placeholder()
                    && tail.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
                if could_be {
                    cut = lt;
                }
            }
        }
        if a.scan.is_some_and(|(_, action)| action != OutputAction::Off) {
            let mut limit = cut.min(text.len().saturating_sub(SCAN_HOLDBACK));
            while !text.is_char_boundary(limit) {
                limit -= 1;
            }
            // Never cut through an entity.
            for f in findings {
                if f.start < limit && limit < f.end {
                    limit = f.start;
                }
            }
            cut = limit;
        }
        cut
    }

    /// Sensitive data the prompt did not hold: redacted to `<ENTITY>`, or blocking the answer.
    fn redact_output(
        &mut self,
        text: &str,
        findings: &[Finding],
        action: OutputAction,
        vault: &Vault,
        tally: &mut Tally,
    ) -> String {
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for f in findings {
            let (Some(before), Some(value)) = (text.get(at..f.start), text.get(f.start..f.end)) else { continue };
            if vault.holds_value(value) {
                continue;
            }
            out.push_str(before);
            if action == OutputAction::Block {
                tally.count_output(&f.entity, "output_block");
                self.blocked = true;
                self.pending.clear();
                return String::new();
            }
            tally.count_output(&f.entity, "output_redact");
            out.push('<');
            out.push_str(&f.entity);
            out.push('>');
            at = f.end;
        }
        out.push_str(text.get(at..).unwrap_or_default());
        out
    }
}

/// Every complete placeholder replaced by its value.
pub fn restore(text: &str, vault: &Vault) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(lt) = rest.find('<') {
        let (before, from) = rest.split_at(lt);
        out.push_str(before);
        let value = from.find('>').and_then(|gt| from.get(..=gt)).and_then(|p| vault.value(p).map(|v| (p.len(), v)));
        match value {
            Some((len, v)) => {
                out.push_str(v);
                rest = from.get(len..).unwrap_or_default();
            }
            None => {
                out.push('<');
                rest = from.get(1..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn vault() -> Vault {
        let mut v = Vault::default();
        v.placeholder("EMAIL", "jane@x.com");
        v.placeholder("PHONE", "+44 20 7946 0958");
        v
    }

    #[test]
    fn restores_across_every_split_point() {
        let v = vault();
        let a = Answering { vault: &v, restore: true, scan: None };
        let text = "Mail <EMAIL_1> or call <PHONE_1>; <b>bold</b> and 1 < 2 stay.";
        let expected = "Mail jane@x.com or call +44 20 7946 0958; <b>bold</b> and 1 < 2 stay.";
        for i in 0..=text.len() {
            for j in i..=text.len() {
                let (Some(x), Some(y), Some(z)) = (text.get(..i), text.get(i..j), text.get(j..)) else { continue };
                let mut s = TextStream::default();
                let mut t = Tally::default();
                let out =
                    [s.push(x, false, &a, &mut t), s.push(y, false, &a, &mut t), s.push(z, true, &a, &mut t)].concat();
                assert_eq!(out, expected, "split at {i}, {j}");
            }
        }
    }

    #[test]
    fn unicode_and_unknown_placeholders() {
        let v = vault();
        let a = Answering { vault: &v, restore: true, scan: None };
        let mut s = TextStream::default();
        let mut t = Tally::default();
        let out = [s.push("Grüße <EMA", false, &a, &mut t), s.push("IL_1> 日本 <EMAIL_9>", true, &a, &mut t)].concat();
        assert_eq!(out, "Grüße jane@x.com 日本 <EMAIL_9>");
    }

    #[test]
    fn output_scanning_redacts_or_blocks_what_the_prompt_did_not_hold() {
        let v = vault();
        let scrubber = Scrubber::new(&Config::default()).unwrap();
        for (action, expected) in
            [(OutputAction::Redact, "Write to <EMAIL_1>, not bob@y.org."), (OutputAction::Block, "")]
        {
            let a = Answering { vault: &v, restore: false, scan: Some((&scrubber, action)) };
            let mut s = TextStream::default();
            let mut t = Tally::default();
            let pieces = ["Write to <EMAIL_1>, not b", "ob@", "y.org."];
            let mut out = String::new();
            for (i, p) in pieces.iter().enumerate() {
                out.push_str(&s.push(p, i == pieces.len() - 1, &a, &mut t));
            }
            let expected = if action == OutputAction::Redact {
                expected.replace("bob@y.org", "<EMAIL>")
            } else {
                expected.to_string()
            };
            assert_eq!(out, expected);
            assert_eq!(s.blocked, action == OutputAction::Block);
        }
    }
}
