//! Finding sensitive data in text: the built-in entity types, custom patterns and word lists.
//!
//! Each detector is a regular expression that proposes candidates and a check that accepts or
//! rejects each one: card numbers must pass Luhn and start like a card, IBANs must have their
//! country's length and pass mod-97, SSNs must use assignable numbers, addresses must parse.
//! Look-alikes (order numbers, dates, versions, timestamps) fail the checks and pass through.
//!
//! Patterns avoid `\b` and look-around: the checks test the characters around a candidate, so
//! every pattern runs on the regex crate's fast DFA engines.

use regex::Regex;

/// A built-in entity type, with its name as configs, placeholders and metrics spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Email,
    Phone,
    Card,
    Ssn,
    Iban,
    Ipv4,
    Ipv6,
    /// A token: not glued to other word characters.
    Token,
    None,
}

/// The built-in entity types, in priority order (an earlier one wins an overlap of equal length).
pub const BUILTIN: &[&str] = &[
    "PRIVATE_KEY",
    "JWT",
    "API_KEY",
    "AWS_ACCESS_KEY",
    "GITHUB_TOKEN",
    "EMAIL",
    "IBAN",
    "CREDIT_CARD",
    "US_SSN",
    "IP_ADDRESS",
    "PHONE",
];

fn builtin_pattern(entity: &str) -> Option<(&'static str, Check)> {
    Some(match entity {
        "PRIVATE_KEY" => (r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?s:.*?)-----END [A-Z ]*PRIVATE KEY-----", Check::None),
        "JWT" => (r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", Check::Token),
        "API_KEY" => (r"sk-(?:ant-|proj-|svcacct-)?[A-Za-z0-9_-]{20,}", Check::Token),
        "AWS_ACCESS_KEY" => (r"(?:AKIA|ASIA)[0-9A-Z]{16}", Check::Token),
        "GITHUB_TOKEN" => (r"(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})", Check::Token),
        // Run only on the address characters around an `@` (`Detector::candidates`), so the
        // classes can be loose and small: Unicode word classes compile to megabytes.
        "EMAIL" => (r"[^\s@]+@[^\s@.]+(?:\.[^\s@.]+)*\.[A-Za-z]{2,24}", Check::Email),
        // Any case: people write IBANs as they like; mod-97 keeps look-alikes out.
        "IBAN" => (r"[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]){11,32}", Check::Iban),
        "CREDIT_CARD" => (r"[0-9](?:[ -]?[0-9]){12,18}", Check::Card),
        "US_SSN" => (r"[0-9]{3}([- ])[0-9]{2}[- ][0-9]{4}", Check::Ssn),
        "IP_ADDRESS" => (
            r"(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.[0-9]{1,3}){0,3})",
            Check::Ipv4,
        ),
        "PHONE" => (
            r"(?:(?:\+|00)[1-9][0-9]{0,2}[ .-]?(?:\(0\)[ .-]?)?(?:\([0-9]{1,4}\)|[0-9]{1,5})(?:[ .-]?[0-9]{2,8}){1,5}|\(?[2-9][0-9]{2}\)?[ .-]?[2-9][0-9]{2}[ .-][0-9]{4})",
            Check::Phone,
        ),
        _ => return None,
    })
}

/// One finding: an entity type and where it is (byte offsets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub entity: String,
    pub start: usize,
    pub end: usize,
}

struct Detector {
    entity: String,
    regex: Regex,
    check: Check,
}

/// Longest email address considered (RFC 5321: 64 for the local part, 255 for the domain).
const EMAIL_SPAN: (usize, usize) = (64, 255);

impl Detector {
    /// The regex's matches as byte ranges. Emails are searched only around each `@`: a pattern
    /// that may start at any word character is slow over long prose, and `@` is rare.
    fn candidates(&self, text: &str) -> Vec<(usize, usize)> {
        if self.check != Check::Email {
            return self.regex.find_iter(text).map(|m| (m.start(), m.end())).collect();
        }
        let mut out: Vec<(usize, usize)> = Vec::new();
        for (at, _) in text.match_indices('@') {
            // The run of address characters around the `@`, bounded by RFC 5321's lengths.
            let left: usize = text
                .get(..at)
                .unwrap_or_default()
                .chars()
                .rev()
                .take_while(|&c| is_local_char(Some(c)))
                .take(EMAIL_SPAN.0)
                .map(char::len_utf8)
                .sum();
            let right: usize = text
                .get(at + 1..)
                .unwrap_or_default()
                .chars()
                .take_while(|&c| c.is_alphanumeric() || c == '.' || c == '-' || c == '_')
                .take(EMAIL_SPAN.1)
                .map(char::len_utf8)
                .sum();
            let mut from = at - left;
            from += text
                .get(from..at)
                .unwrap_or_default()
                .chars()
                .take_while(|&c| is_quote(c))
                .map(char::len_utf8)
                .sum::<usize>();
            let Some(window) = text.get(from..at + 1 + right) else { continue };
            for m in self.regex.find_iter(window) {
                let (start, end) = (from + m.start(), from + m.end());
                if start <= at && at < end && out.last().is_none_or(|&(_, e)| start >= e) {
                    out.push((start, end));
                }
            }
        }
        out
    }
}

/// RFC 5322 `atext` and `.` (plus non-ASCII letters, RFC 6531): `o'brien@`, `a{b}@`, `x/y@`.
fn is_local_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || ".!#$%&'*+/=?^_`{|}~-".contains(c))
}

/// Punctuation that quotes an address rather than starting it (`'jane@x.com'`).
fn is_quote(c: char) -> bool {
    "'`{|/=?#!".contains(c)
}

/// A set of detectors, compiled once per configuration.
pub struct Detectors {
    detectors: Vec<Detector>,
}

/// A custom pattern from the configuration.
pub struct Custom<'a> {
    pub entity: &'a str,
    pub pattern: String,
}

impl Detectors {
    /// The built-in detectors named in `builtin` (in their priority order), then the custom ones.
    pub fn new(builtin: &[&str], custom: &[Custom<'_>]) -> Result<Detectors, String> {
        let mut detectors = Vec::new();
        for entity in BUILTIN.iter().filter(|e| builtin.contains(e)) {
            let (pattern, check) = builtin_pattern(entity).ok_or_else(|| format!("unknown entity `{entity}`"))?;
            let regex = compact(pattern).map_err(|e| format!("{entity}: {e}"))?;
            detectors.push(Detector { entity: entity.to_string(), regex, check });
        }
        for c in custom {
            let regex = compact(&c.pattern).map_err(|e| format!("{}: {e}", c.entity))?;
            detectors.push(Detector { entity: c.entity.to_string(), regex, check: Check::None });
        }
        Ok(Detectors { detectors })
    }

    /// Every finding in `text`, sorted, none overlapping: of overlapping candidates the longest
    /// wins, then the detector listed first.
    pub fn find(&self, text: &str) -> Vec<Finding> {
        let mut all: Vec<(usize, Finding)> = Vec::new();
        for (rank, detector) in self.detectors.iter().enumerate() {
            for (start, end) in detector.candidates(text) {
                let Some(candidate) = text.get(start..end) else { continue };
                // The IP pattern proposes both families; each has its own check.
                let check = match (detector.check, candidate.contains(':')) {
                    (Check::Ipv4, true) => Check::Ipv6,
                    (c, _) => c,
                };
                if let Some(end) = accept(check, text, start, end) {
                    all.push((rank, Finding { entity: detector.entity.clone(), start, end }));
                }
            }
        }
        all.sort_by(|(ra, a), (rb, b)| {
            a.start.cmp(&b.start).then((b.end - b.start).cmp(&(a.end - a.start))).then(ra.cmp(rb))
        });
        let mut kept: Vec<Finding> = Vec::new();
        for (_, f) in all {
            match kept.last_mut() {
                Some(last) if f.start < last.end => {
                    // Overlap: keep the longer one.
                    if f.end - f.start > last.end - last.start {
                        *last = f;
                    }
                }
                _ => kept.push(f),
            }
        }
        kept
    }
}

/// Lazy-DFA cache per regex. Each Envoy worker has its own VM and each VM its own detectors:
/// the default 2 MiB per regex would cost ~25 MB per worker for little speed.
const DFA_CACHE_BYTES: usize = 256 << 10;

fn compact(pattern: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(pattern).size_limit(1 << 20).dfa_size_limit(DFA_CACHE_BYTES).build()
}

fn before(text: &str, start: usize) -> Option<char> {
    text.get(..start).and_then(|s| s.chars().next_back())
}

fn after(text: &str, end: usize) -> Option<char> {
    text.get(end..).and_then(|s| s.chars().next())
}

fn is_word(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// Whether a digit or a separator-then-digit continues the number (so the candidate is a
/// fragment of a longer number).
fn glued_digits(text: &str, start: usize, end: usize) -> bool {
    let prev = before(text, start);
    let next = after(text, end);
    let next_next = text.get(end..).and_then(|s| s.chars().nth(1));
    let prev_prev = text.get(..start).and_then(|s| s.chars().rev().nth(1));
    is_word(prev)
        || (matches!(prev, Some(' ' | '-')) && prev_prev.is_some_and(|c| c.is_ascii_digit()))
        || is_word(next)
        || matches!(prev, Some('.' | '/' | ':' | '#' | '+'))
        || (matches!(next, Some('.' | '-' | '/' | ':')) && next_next.is_some_and(|c| c.is_ascii_digit()))
}

/// Words before a number that make it an identifier rather than personal data.
const ID_CONTEXT: &[&str] =
    &["order", "invoice", "tracking", "ticket", "confirmation", "ref", "reference", "serial", "sku", "isbn", "build"];

fn preceded_by_id_word(text: &str, start: usize) -> bool {
    let from = start.saturating_sub(24);
    let window = (from..=start).find_map(|i| text.get(i..start)).unwrap_or_default().to_ascii_lowercase();
    ID_CONTEXT.iter().any(|w| window.contains(w))
}

/// The candidate's end if it is accepted.
fn accept(check: Check, text: &str, start: usize, end: usize) -> Option<usize> {
    let candidate = text.get(start..end)?;
    let ok = match check {
        Check::None => true,
        Check::Token => !is_word(before(text, start)) && !is_word(after(text, end)),
        Check::Email => {
            let local = candidate.split('@').next().unwrap_or_default();
            !local.starts_with('.') && !local.ends_with('.') && !local.contains("..") && !is_word(after(text, end))
        }
        Check::Card => !glued_digits(text, start, end) && card(candidate) && !preceded_by_id_word(text, start),
        Check::Ssn => !glued_digits(text, start, end) && ssn(candidate),
        Check::Iban => return iban(text, start),
        Check::Ipv4 => {
            let prev = before(text, start);
            let version = text.get(start.saturating_sub(8)..start).is_some_and(|w| {
                let w = w.to_ascii_lowercase();
                w.ends_with('v') || w.contains("version") || w.contains("ver ")
            });
            !glued_digits(text, start, end) && !matches!(prev, Some('v' | 'V')) && !version && ipv4(candidate)
        }
        Check::Ipv6 => {
            !is_word(before(text, start))
                && !is_word(after(text, end))
                && !matches!(before(text, start), Some(':'))
                && candidate.parse::<std::net::Ipv6Addr>().is_ok()
                && candidate.chars().filter(|c| c.is_ascii_hexdigit()).count() >= 2
        }
        Check::Phone => !glued_digits(text, start, end) && phone(candidate) && !preceded_by_id_word(text, start),
    };
    ok.then_some(end)
}

fn digits(s: &str) -> Vec<u32> {
    s.chars().filter_map(|c| c.to_digit(10)).collect()
}

/// Luhn's checksum.
pub fn luhn(number: &[u32]) -> bool {
    let sum: u32 = number
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    !number.is_empty() && sum % 10 == 0
}

/// A payment card number: a card network's prefix and length, consistent grouping, Luhn.
fn card(candidate: &str) -> bool {
    let d = digits(candidate);
    let separators: Vec<char> = candidate.chars().filter(|c| !c.is_ascii_digit()).collect();
    let grouped = separators.is_empty() || {
        let sep = separators.first().copied().unwrap_or(' ');
        let groups: Vec<usize> = candidate.split(sep).map(str::len).collect();
        separators.iter().all(|&c| c == sep)
            && matches!(groups.as_slice(), [4, 4, 4, 4] | [4, 6, 5] | [4, 6, 4] | [4, 4, 4, 4, 3] | [4, 4, 4, 2])
    };
    let prefix = |n: usize| d.iter().take(n).fold(0u32, |acc, x| acc * 10 + x);
    let network = match (d.len(), d.first()) {
        (13 | 16 | 19, Some(4)) => true,                     // Visa
        (16, Some(5)) => (51..=55).contains(&prefix(2)),     // Mastercard
        (16, Some(2)) => (2221..=2720).contains(&prefix(4)), // Mastercard 2-series
        (15, Some(3)) => matches!(prefix(2), 34 | 37),       // Amex
        (14, Some(3)) => matches!(prefix(2), 36 | 38) || (300..=305).contains(&prefix(3)), // Diners
        (16..=19, Some(3)) => (3528..=3589).contains(&prefix(4)), // JCB
        (16..=19, Some(6)) => prefix(4) == 6011 || prefix(2) == 65 || (644..=649).contains(&prefix(3)), // Discover
        _ => false,
    };
    grouped && network && luhn(&d)
}

/// A US Social Security number in an assignable range, one separator throughout.
fn ssn(candidate: &str) -> bool {
    let parts: Vec<&str> = candidate.split(['-', ' ']).collect();
    let same_separator =
        candidate.chars().filter(|c| !c.is_ascii_digit()).collect::<Vec<_>>().windows(2).all(|w| w.first() == w.last());
    let [area, group, serial] = parts.as_slice() else { return false };
    let area: u32 = area.parse().unwrap_or(0);
    same_separator && area != 0 && area != 666 && area < 900 && *group != "00" && *serial != "0000"
}

/// IBAN lengths by country (ISO 13616 registry).
fn iban_length(country: &str) -> Option<usize> {
    Some(match country {
        "NO" => 15,
        "BE" => 16,
        "DK" | "FI" | "FO" | "GL" | "NL" => 18,
        "MK" | "SI" => 19,
        "AT" | "BA" | "EE" | "KZ" | "LT" | "LU" | "XK" => 20,
        "CH" | "CR" | "HR" | "LI" | "LV" => 21,
        "BG" | "BH" | "DE" | "GB" | "GE" | "IE" | "ME" | "RS" | "VA" => 22,
        "AE" | "GI" | "IL" | "TL" => 23,
        "AD" | "CZ" | "ES" | "MD" | "PK" | "RO" | "SA" | "SE" | "SK" | "TN" | "VG" => 24,
        "PT" | "ST" => 25,
        "IS" | "TR" => 26,
        "FR" | "GR" | "IT" | "MC" | "MR" | "SM" => 27,
        "AL" | "AZ" | "BY" | "CY" | "DO" | "GT" | "HU" | "LB" | "PL" | "SV" => 28,
        "BR" | "EG" | "PS" | "QA" | "UA" => 29,
        "JO" | "KW" | "MU" => 30,
        "MT" | "SC" => 31,
        "LC" => 32,
        _ => return None,
    })
}

/// An IBAN starting at `start`: exactly its country's length (single spaces allowed between
/// characters), then mod-97. Returns its end.
fn iban(text: &str, start: usize) -> Option<usize> {
    if is_word(before(text, start)) {
        return None;
    }
    let rest = text.get(start..)?;
    let length = iban_length(&rest.get(..2)?.to_ascii_uppercase())?;
    let mut compact = String::with_capacity(length);
    let mut end = start;
    let mut previous_space = false;
    for (i, c) in rest.char_indices() {
        if compact.len() == length {
            break;
        }
        if c == ' ' && !previous_space && !compact.is_empty() {
            previous_space = true;
            continue;
        }
        if !c.is_ascii_alphanumeric() {
            return None;
        }
        previous_space = false;
        compact.push(c.to_ascii_uppercase());
        end = start + i + 1;
    }
    if compact.len() != length || is_word(after(text, end)) {
        return None;
    }
    let (head, tail) = compact.split_at(4);
    let remainder = tail.chars().chain(head.chars()).try_fold(0u32, |acc, c| {
        let value = c.to_digit(36)?;
        Some(if value >= 10 { (acc * 100 + value) % 97 } else { (acc * 10 + value) % 97 })
    })?;
    (remainder == 1).then_some(end)
}

fn ipv4(candidate: &str) -> bool {
    let octets: Vec<&str> = candidate.split('.').collect();
    octets.len() == 4
        && octets.iter().all(|o| o.parse::<u16>().is_ok_and(|v| v <= 255) && (o.len() == 1 || !o.starts_with('0')))
}

/// A phone number: 8 to 15 digits (E.164), international prefix or a North American number.
fn phone(candidate: &str) -> bool {
    let count = digits(candidate).len();
    let international = candidate.starts_with('+') || candidate.starts_with("00");
    let international_digits = if candidate.starts_with("00") { count.saturating_sub(2) } else { count };
    if international {
        (8..=15).contains(&international_digits)
    } else {
        count == 10
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Detectors {
        Detectors::new(BUILTIN, &[]).unwrap()
    }

    fn found(text: &str) -> Vec<(String, String)> {
        all().find(text).into_iter().map(|f| (f.entity, text[f.start..f.end].to_string())).collect()
    }

    #[test]
    fn finds_each_builtin_entity() {
        let cases = [
            ("mail jane.doe+x@example.co.uk now", "EMAIL", "jane.doe+x@example.co.uk"),
            ("from o'brien@example.com today", "EMAIL", "o'brien@example.com"),
            ("iban gb82west12345698765432 ok", "IBAN", "gb82west12345698765432"),
            // E.164 subscriber numbers come in blocks of up to 8 digits (Berlin: 6).
            ("call +49 30 123456 now", "PHONE", "+49 30 123456"),
            ("call +49 (0)30 12345678 now", "PHONE", "+49 (0)30 12345678"),
            ("quoted 'ann@example.com' here", "EMAIL", "ann@example.com"),
            (
                "odd but valid: a!b#c$d&e*f/g=h?i^j`k{l|m}n~o@example.org",
                "EMAIL",
                "a!b#c$d&e*f/g=h?i^j`k{l|m}n~o@example.org",
            ),
            ("card 4111 1111 1111 1111.", "CREDIT_CARD", "4111 1111 1111 1111"),
            ("amex 3782-822463-10005", "CREDIT_CARD", "3782-822463-10005"),
            ("ssn 123-45-6789", "US_SSN", "123-45-6789"),
            ("iban DE89 3704 0044 0532 0130 00 please", "IBAN", "DE89 3704 0044 0532 0130 00"),
            ("iban GB82WEST12345698765432", "IBAN", "GB82WEST12345698765432"),
            ("host 192.168.10.20 up", "IP_ADDRESS", "192.168.10.20"),
            ("v6 2001:db8::8a2e:370:7334 up", "IP_ADDRESS", "2001:db8::8a2e:370:7334"),
            ("call +44 20 7946 0958 today", "PHONE", "+44 20 7946 0958"),
            ("call (415) 555-0132 today", "PHONE", "(415) 555-0132"),
            ("key AKIAIOSFODNN7EXAMPLE ok", "AWS_ACCESS_KEY", "AKIAIOSFODNN7EXAMPLE"),
            ("key sk-proj-abcdefghijklmnopqrstuvwx ok", "API_KEY", "sk-proj-abcdefghijklmnopqrstuvwx"),
            ("key sk-ant-api03-abcdefghijklmnopqrstuv ok", "API_KEY", "sk-ant-api03-abcdefghijklmnopqrstuv"),
            (
                "tok ghp_abcdefghijklmnopqrstuvwxyz0123456789 ok",
                "GITHUB_TOKEN",
                "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            ),
        ];
        for (text, entity, value) in cases {
            assert_eq!(found(text), vec![(entity.to_string(), value.to_string())], "{text}");
        }
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(found(&format!("bearer {jwt}")), vec![("JWT".to_string(), jwt.to_string())]);
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----";
        assert_eq!(found(&format!("x {pem} y")), vec![("PRIVATE_KEY".to_string(), pem.to_string())]);
    }

    #[test]
    fn look_alikes_pass() {
        for text in [
            "card 4111 1111 1111 1112",        // Luhn fails
            "order #4111111111111111 shipped", // an order number
            "ssn 000-12-3456 and 666-12-3456 and 912-34-5678",
            "iban DE89 3704 0044 0532 0130 01", // mod-97 fails
            "version 1.2.3.4 and v10.0.0.1 and 10.0.19045.2965",
            "at 2024-05-17 12:30:45 and 12:30:45.123",
            "phone 123-456-7890", // not a North American number
            "sku 1234-5678-9012",
            "build 20240517123045",
            "id 1700000000123",
            "not a key: sk-short",
            "mac 00:1A:2B:3C:4D:5E",
        ] {
            assert_eq!(found(text), vec![], "{text}");
        }
    }

    #[test]
    fn luhn_and_iban_checks() {
        assert!(luhn(&digits("79927398713")));
        assert!(!luhn(&digits("79927398710")));
        assert_eq!(iban("NL91ABNA0417164300", 0), Some(18));
        assert_eq!(iban("NL91ABNA0417164301", 0), None);
        assert_eq!(iban("ZZ91ABNA0417164300", 0), None);
    }

    #[test]
    fn custom_patterns_and_unicode() {
        let d =
            Detectors::new(&["EMAIL"], &[Custom { entity: "EMPLOYEE_ID", pattern: "EMP-[0-9]{6}".into() }]).unwrap();
        let text = "Grüße an jürgen@example.de, Mitarbeiter EMP-123456 — 日本語";
        let f: Vec<&str> = d.find(text).iter().map(|f| &text[f.start..f.end]).collect();
        assert_eq!(f, ["jürgen@example.de", "EMP-123456"]);
        assert!(Detectors::new(&[], &[Custom { entity: "BAD", pattern: "(".into() }]).is_err());
    }
}
