//! Detection quality on a generated corpus: for each built-in entity type, 600 positives in
//! varied formats and sentences, and 600 hard negatives (order numbers, dates, versions,
//! timestamps, look-alike numbers that fail the checks, near-miss secrets).
//!
//! Recall: the positive's exact value is found as its entity. False positives: a negative in
//! which anything at all is found. Targets: recall >= 99%, false positives <= 1%.
//!
//! The table for the README: `cargo test -p sluice-pii-scrubber --release --test corpus -- --nocapture`

// A test generator: indexing into its own tables cannot go out of range.
#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::wrong_self_convention)]

use sluice_pii_scrubber::detect::{luhn, Detectors, BUILTIN};

const PER_KIND: usize = 600;

/// A small deterministic generator (xorshift), so the corpus is the same on every run.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn digits(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'0' + self.below(10) as u8)).collect()
    }
    /// `min` plus up to `extra - 1` more characters from `alphabet`.
    fn from_n(&mut self, alphabet: &str, min: usize, extra: usize) -> String {
        let n = min + self.below(extra.max(1));
        self.from(alphabet, n)
    }
    fn from(&mut self, alphabet: &str, n: usize) -> String {
        let chars: Vec<char> = alphabet.chars().collect();
        (0..n).map(|_| chars[self.below(chars.len())]).collect()
    }
}

const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_DIGITS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const B64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

const SENTENCES: &[&str] = &[
    "Please update my record: {}.",
    "{}",
    "Hi team, the value is {} — can you check?",
    "Customer wrote: \"my details are {}\" yesterday.",
    "{} is what they gave us on the phone.",
    "Notes:\n- contact {}\n- follow up Monday",
    "Grüße, bitte {} prüfen. 日本語のテキスト",
    "{{\"field\": \"{}\"}}",
];

fn sentence(g: &mut Gen, value: &str) -> String {
    g.pick(SENTENCES).replacen("{}", value, 1)
}

/// The check digit that makes `partial` + digit pass the detector's own Luhn check.
fn luhn_digit(partial: &[u32]) -> u32 {
    (0..10).find(|&d| luhn(&[partial, &[d]].concat())).unwrap_or(0)
}

fn card_number(g: &mut Gen) -> (String, usize) {
    let (prefix, len, groups): (String, usize, &[usize]) = match g.below(6) {
        0 => ("4".into(), 16, &[4, 4, 4, 4]),
        1 => (format!("5{}", 1 + g.below(5)), 16, &[4, 4, 4, 4]),
        2 => (g.pick(&["34", "37"]).into(), 15, &[4, 6, 5]),
        3 => ("6011".into(), 16, &[4, 4, 4, 4]),
        4 => (format!("{}", 2221 + g.below(500)), 16, &[4, 4, 4, 4]),
        _ => (format!("35{}", 28 + g.below(60)), 16, &[4, 4, 4, 4]),
    };
    let mut number = prefix.clone();
    number.push_str(&g.digits(len - prefix.len() - 1));
    let d: Vec<u32> = number.chars().filter_map(|c| c.to_digit(10)).collect();
    number.push(char::from(b'0' + luhn_digit(&d) as u8));
    let format = g.below(3);
    (group(&number, groups, ["", " ", "-"][format]), len)
}

fn group(number: &str, groups: &[usize], sep: &str) -> String {
    if sep.is_empty() {
        return number.to_string();
    }
    let mut out = Vec::new();
    let mut at = 0;
    for &n in groups {
        out.push(&number[at..at + n]);
        at += n;
    }
    out.join(sep)
}

const IBAN_COUNTRIES: &[(&str, usize, bool)] = &[
    ("DE", 22, true),
    ("GB", 22, false),
    ("FR", 27, false),
    ("NL", 18, false),
    ("ES", 24, true),
    ("IT", 27, false),
    ("CH", 21, true),
    ("BE", 16, true),
    ("PL", 28, true),
    ("NO", 15, true),
    ("SE", 24, true),
    ("AT", 20, true),
];

fn iban_check(country: &str, bban: &str) -> u32 {
    let rearranged = format!("{bban}{country}00");
    let remainder = rearranged.chars().fold(0u32, |acc, c| {
        let v = c.to_digit(36).unwrap_or(0);
        if v >= 10 {
            (acc * 100 + v) % 97
        } else {
            (acc * 10 + v) % 97
        }
    });
    98 - remainder
}

fn iban(g: &mut Gen, valid: bool) -> String {
    let (country, len, numeric) = IBAN_COUNTRIES[g.below(IBAN_COUNTRIES.len())];
    let bban = if numeric {
        g.digits(len - 4)
    } else {
        format!("{}{}", g.from("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 4), g.digits(len - 8))
    };
    let mut check = iban_check(country, &bban);
    if !valid {
        check = (check + 1 + g.below(90) as u32) % 97 + 2;
        if check == iban_check(country, &bban) {
            check = if check > 2 { check - 1 } else { check + 1 };
        }
    }
    let compact = format!("{country}{check:02}{bban}");
    if g.below(2) == 0 {
        compact
    } else {
        compact.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" ")
    }
}

fn ssn_valid(g: &mut Gen) -> String {
    let area = loop {
        let a = 1 + g.below(899);
        if a != 666 {
            break a;
        }
    };
    let sep = g.pick(&["-", " "]);
    format!("{area:03}{sep}{:02}{sep}{:04}", 1 + g.below(99), 1 + g.below(9999))
}

fn ipv6(g: &mut Gen) -> String {
    let groups: Vec<String> = (0..8).map(|_| format!("{:x}", g.below(0x10000))).collect();
    match g.below(3) {
        0 => groups.join(":"),
        1 => format!("{}::{}", groups[..3].join(":"), groups[6..].join(":")),
        _ => format!("2001:db8::{}", groups[7]),
    }
}

fn phone(g: &mut Gen) -> String {
    match g.below(9) {
        0 => format!("+1 {}{} {}{} {}", 2 + g.below(8), g.digits(2), 2 + g.below(8), g.digits(2), g.digits(4)),
        1 => format!("+44 20 {} {}", g.digits(4), g.digits(4)),
        2 => format!("+49 30 {}", g.digits(7)),
        3 => format!("+33 {} {} {} {} {}", 1 + g.below(9), g.digits(2), g.digits(2), g.digits(2), g.digits(2)),
        4 => format!("+81-3-{}-{}", g.digits(4), g.digits(4)),
        5 => format!("+91 {}{} {}", 7 + g.below(3), g.digits(4), g.digits(5)),
        6 => format!("({}{}) {}{}-{}", 2 + g.below(8), g.digits(2), 2 + g.below(8), g.digits(2), g.digits(4)),
        7 => format!("{}{}.{}{}.{}", 2 + g.below(8), g.digits(2), 2 + g.below(8), g.digits(2), g.digits(4)),
        _ => format!("0044 20 {} {}", g.digits(4), g.digits(4)),
    }
}

fn jwt(g: &mut Gen) -> String {
    format!("eyJ{}.eyJ{}.{}", g.from_n(B64URL, 17, 20), g.from_n(B64URL, 30, 60), g.from(B64URL, 43))
}

fn positive(g: &mut Gen, entity: &str) -> String {
    match entity {
        "EMAIL" => {
            let local = format!(
                "{}{}{}",
                g.pick(&[
                    "jane",
                    "j.doe",
                    "max_mustermann",
                    "a",
                    "support+billing",
                    "o'neil".get(..1).unwrap_or("o"),
                    "jürgen",
                    "user-42"
                ]),
                g.pick(&["", ".x", "99", "_b"]),
                g.from_n("0123456789", 0, 3)
            );
            format!(
                "{local}@{}{}",
                g.pick(&["", "mail.", "eu.corp."]),
                g.pick(&["example.com", "example.co.uk", "company.de", "uni.edu", "startup.io", "bücher.de"])
            )
        }
        "PHONE" => phone(g),
        "CREDIT_CARD" => card_number(g).0,
        "US_SSN" => ssn_valid(g),
        "IBAN" => iban(g, true),
        "IP_ADDRESS" => {
            if g.below(2) == 0 {
                format!("{}.{}.{}.{}", 1 + g.below(254), g.below(256), g.below(256), 1 + g.below(254))
            } else {
                ipv6(g)
            }
        }
        "AWS_ACCESS_KEY" => format!("{}{}", g.pick(&["AKIA", "ASIA"]), g.from(UPPER_DIGITS, 16)),
        "API_KEY" => format!("sk-{}{}", g.pick(&["", "proj-", "ant-api03-", "svcacct-"]), g.from_n(B64URL, 24, 60)),
        "GITHUB_TOKEN" => {
            if g.below(3) == 0 {
                format!("github_pat_{}", g.from(ALNUM, 70))
            } else {
                format!("{}_{}", g.pick(&["ghp", "gho", "ghu", "ghs", "ghr"]), g.from(ALNUM, 36))
            }
        }
        "JWT" => jwt(g),
        _ => {
            let kind = g.pick(&["RSA ", "EC ", "", "OPENSSH "]);
            let body: Vec<String> = (0..3 + g.below(6))
                .collect::<Vec<_>>()
                .into_iter()
                .map(|_| g.from(&format!("{ALNUM}+/"), 64))
                .collect();
            format!("-----BEGIN {kind}PRIVATE KEY-----\n{}\n-----END {kind}PRIVATE KEY-----", body.join("\n"))
        }
    }
}

fn negative(g: &mut Gen, entity: &str) -> String {
    let date = |g: &mut Gen| format!("20{:02}-{:02}-{:02}", g.below(30), 1 + g.below(12), 1 + g.below(28));
    let time = |g: &mut Gen| format!("{:02}:{:02}:{:02}", g.below(24), g.below(60), g.below(60));
    match entity {
        "EMAIL" => match g.below(5) {
            0 => format!("ping @{} on chat", g.pick(&["jane", "ops-team", "max"])),
            1 => format!("{} at example dot com", g.pick(&["jane", "sales"])),
            2 => format!("ssh {}@localhost", g.pick(&["root", "deploy"])),
            3 => {
                format!("install @types/{}@{}.{}.{}", g.pick(&["node", "react"]), g.below(20), g.below(10), g.below(10))
            }
            _ => format!("price@{}.{} today", g.below(100), g.digits(2)),
        },
        "PHONE" => match g.below(8) {
            0 => format!("on {} at {}", date(g), time(g)),
            1 => format!("{}T{}Z", date(g), time(g)),
            2 => format!("version {}.{}.{}", g.below(20), g.below(20), g.below(100)),
            3 => format!("Order #{}-{}-{}", g.digits(3), g.digits(3), g.digits(4)),
            4 => format!("ISBN 978-{}-{}-{}-{}", g.below(10), g.digits(2), g.digits(6), g.below(10)),
            5 => format!("total {},{},{}.{}", 1 + g.below(99), g.digits(3), g.digits(3), g.digits(2)),
            6 => format!("coords {}.{}, -{}.{}", g.below(90), g.digits(4), g.below(180), g.digits(4)),
            _ => format!("{}-{}-{}", 100 + g.below(100), g.digits(3), g.digits(4)),
        },
        "CREDIT_CARD" => match g.below(5) {
            0 | 1 => {
                // A card-shaped number whose last digit breaks Luhn.
                let (valid, _) = card_number(g);
                let mut chars: Vec<char> = valid.chars().collect();
                if let Some(last) = chars.last_mut() {
                    let d = last.to_digit(10).unwrap_or(0);
                    *last = char::from(b'0' + ((d + 1 + g.below(9) as u32) % 10) as u8);
                }
                format!("card {}", chars.into_iter().collect::<String>())
            }
            2 => format!("Order #{} shipped", card_number(g).0.replace([' ', '-'], "")),
            3 => format!("event at {} ms", 1_600_000_000_000u64 + g.next() % 200_000_000_000),
            _ => format!("tracking 1Z{}{}", g.from(UPPER_DIGITS, 6), g.digits(10)),
        },
        "US_SSN" => match g.below(5) {
            0 => format!("000-{}-{}", g.digits(2), g.digits(4)),
            1 => format!("666-{}-{}", g.digits(2), g.digits(4)),
            2 => format!("{}-{}-{}", 900 + g.below(100), g.digits(2), g.digits(4)),
            3 => format!("{}-00-{}", 100 + g.below(500), g.digits(4)),
            _ => format!("{} and {}", date(g), time(g)),
        },
        "IBAN" => match g.below(3) {
            0 | 1 => iban(g, false),
            _ => {
                format!("code {}{} {}", g.from("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 2), g.digits(2), g.from(UPPER_DIGITS, 12))
            }
        },
        "IP_ADDRESS" => match g.below(6) {
            0 => format!("version {}.{}.{}.{}", g.below(20), g.below(20), g.below(100), g.below(1000)),
            1 => format!("v{}.{}.{}.{}", g.below(20), g.below(20), g.below(100), g.below(100)),
            2 => format!("{}.{}.{}.{}", 256 + g.below(700), g.below(256), g.below(256), g.below(256)),
            3 => format!("build 10.0.{}.{}", 19000 + g.below(1000), g.below(3000)),
            4 => format!("mac {}", (0..6).map(|_| g.from("0123456789ABCDEF", 2)).collect::<Vec<_>>().join(":")),
            _ => format!("at {}.{}", time(g), g.digits(3)),
        },
        "AWS_ACCESS_KEY" => match g.below(2) {
            0 => format!("AKIA{}", g.from_n(UPPER_DIGITS, 8, 6)),
            _ => format!("XAKIA{}", g.from(UPPER_DIGITS, 16)),
        },
        "API_KEY" => match g.below(3) {
            0 => format!("sk-{}", g.from_n(ALNUM, 5, 10)),
            1 => format!("task-{}", g.from(ALNUM, 24)),
            _ => format!("risk-{}", g.from(ALNUM, 24)),
        },
        "GITHUB_TOKEN" => match g.below(2) {
            0 => format!("ghp_{}", g.from_n(ALNUM, 10, 20)),
            _ => format!("the ghp_ prefix and {}", g.from(ALNUM, 36)),
        },
        "JWT" => match g.below(3) {
            0 => format!("eyJ{}", g.from(B64URL, 30)),
            1 => format!("eyJ{}.{}", g.from(B64URL, 20), g.from(B64URL, 20)),
            _ => format!("{}.{}.{}", g.from(ALNUM, 20), g.from(ALNUM, 20), g.from(ALNUM, 20)),
        },
        _ => match g.below(2) {
            0 => format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----", g.from(ALNUM, 64)),
            _ => format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----", g.from(ALNUM, 64)),
        },
    }
}

#[test]
fn recall_and_false_positives_per_entity() {
    let detectors = Detectors::new(BUILTIN, &[]).unwrap();
    let mut g = Gen(0x5eed_1234_abcd_ef01);
    let mut failures = Vec::new();
    println!("| entity | positives | recall | hard negatives | false positives |");
    println!("|---|---|---|---|---|");
    for entity in BUILTIN {
        let mut found = 0;
        for _ in 0..PER_KIND {
            let value = positive(&mut g, entity);
            let text = sentence(&mut g, &value);
            let hit = detectors.find(&text).iter().any(|f| f.entity == *entity && text[f.start..f.end] == value);
            if hit {
                found += 1;
            } else if failures.len() < 20 {
                failures.push(format!("missed {entity}: {text:?} -> {:?}", detectors.find(&text)));
            }
        }
        let mut false_positives = 0;
        for _ in 0..PER_KIND {
            let value = negative(&mut g, entity);
            let text = sentence(&mut g, &value);
            let hits = detectors.find(&text);
            if !hits.is_empty() {
                false_positives += 1;
                if failures.len() < 40 {
                    let shown: Vec<&str> = hits.iter().map(|f| &text[f.start..f.end]).collect();
                    failures.push(format!("false {entity}: {text:?} -> {shown:?}"));
                }
            }
        }
        let recall = found as f64 / PER_KIND as f64;
        let fp = false_positives as f64 / PER_KIND as f64;
        println!("| {entity} | {PER_KIND} | {:.1}% | {PER_KIND} | {:.1}% |", recall * 100.0, fp * 100.0);
        assert!(
            recall >= 0.99 && fp <= 0.01,
            "{entity}: recall {recall}, false positives {fp}\n{}",
            failures.join("\n")
        );
    }
}
