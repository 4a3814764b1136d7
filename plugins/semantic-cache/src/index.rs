//! The exact index: which answers Redis may hold, known without asking it.
//!
//! Most prompts are new, and a new prompt's exact lookup is a Redis call that finds nothing: as
//! much gateway CPU as half a proxied request, and a round trip. The index answers "absent" or
//! "maybe" from memory; only "maybe" asks Redis.
//!
//! - **What it is.** A blocked Bloom filter of answer keys: a key picks one page of 2048 bits
//!   and sets 8 of them. A page is one entry of Envoy's shared data, so every worker of an Envoy
//!   sees an answer as soon as any of them stores it, and a lookup reads one page per generation.
//! - **Generations.** Bits are never cleared, so the filter would fill up; instead a key goes into
//!   the generation of the time it is stored (`period_seconds` long), and a lookup reads the
//!   current and the previous generation. Every TTL fits in a period, so an answer outlives
//!   neither, and older generations are simply ignored (their pages are reused).
//! - **Other gateways.** Each store also sets the bits in Redis (one bitmap per generation, and
//!   a list of changed pages by sequence number, in the same script as the answer). Each worker
//!   copies the pages changed since its last look every `sync_ms` ([`Sync`]), so an answer
//!   stored elsewhere, or before this Envoy started, is found.
//! - **Never wrong, only slower.** The index is trusted only while the last copy from Redis
//!   is recent and complete; before that (start, Redis down) every lookup asks Redis. A false
//!   "maybe" costs the `GET` it always cost. A false "absent" can only come from a store that
//!   reached Redis after the last copy, through another gateway: a miss, answered again.

use std::cell::Cell;

use sluice_shared::host::SharedData;
use sluice_shared::redis::RedisValue;

use crate::config::ExactIndex;
use crate::scripts::IndexBits;

/// Bytes per page: 2048 bits, about 200 keys each at under 1% false "maybe"s.
pub const PAGE_BYTES: usize = 256;
const PAGE_BITS: u64 = (PAGE_BYTES * 8) as u64;
/// Bits set per key.
const PROBES: u64 = 8;
/// The generation number in front of a page's bits in shared data.
const HEADER: usize = 8;
/// Tries of a compare-and-swap write before giving up (another worker keeps writing).
const CAS_TRIES: usize = 16;
/// Most pages per generation in one copy from Redis (a reply of about 35 KB).
pub const SYNC_PAGES: usize = 64;

/// What the index says about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Redis does not hold it: no lookup needed.
    Absent,
    /// Redis may hold it: ask.
    Maybe,
    /// The index is not in sync with Redis: ask.
    Unready,
}

impl Answer {
    pub fn name(self) -> &'static str {
        match self {
            Answer::Absent => "absent",
            Answer::Maybe => "maybe",
            Answer::Unready => "unready",
        }
    }
}

/// A bit's mask in its byte, in Redis's order (`SETBIT` offset 0 is the first byte's high bit),
/// so pages copied from Redis read the same.
fn mask(bit: u16) -> u8 {
    0x80 >> (bit % 8)
}

/// Where a key's bits are: one page, eight bits in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub page: u32,
    bits: [u16; PROBES as usize],
}

impl Slot {
    pub fn of(key: &str, pages: u32) -> Slot {
        // FNV-1a, then a second, mixed hash for double hashing inside the page.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in key.bytes() {
            h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        let mut g = h ^ (h >> 33);
        g = g.wrapping_mul(0xff51_afd7_ed55_8ccd);
        g ^= g >> 33;
        let page = u32::try_from(h % u64::from(pages.max(1))).unwrap_or(0);
        // An odd step is coprime with the page's 2048 bits: the eight bits are distinct.
        let (a, b) = (g % PAGE_BITS, ((g >> 32) % PAGE_BITS) | 1);
        let mut bits = [0u16; PROBES as usize];
        for (i, bit) in (0u64..).zip(bits.iter_mut()) {
            *bit = u16::try_from((a + i * b) % PAGE_BITS).unwrap_or(0);
        }
        Slot { page, bits }
    }

    fn set(&self, page: &mut [u8]) {
        for bit in self.bits {
            if let Some(byte) = page.get_mut(usize::from(bit / 8)) {
                *byte |= mask(bit);
            }
        }
    }

    fn held_by(&self, page: &[u8]) -> bool {
        self.bits.iter().all(|bit| page.get(usize::from(bit / 8)).is_some_and(|byte| byte & mask(*bit) != 0))
    }

    /// The bits' offsets in the generation's Redis bitmap.
    pub fn offsets(&self) -> String {
        let base = u64::from(self.page) * PAGE_BITS;
        self.bits.iter().map(|bit| (base + u64::from(*bit)).to_string()).collect::<Vec<_>>().join(",")
    }
}

/// The index of one configuration, in this Envoy's shared data.
pub struct Index {
    config: ExactIndex,
    /// Shared-data and Redis key prefix: the geometry is in it, so indexes of different
    /// geometry never mix.
    shared_prefix: String,
    redis_prefix: String,
    /// Until when this worker trusts its copy (ms since the epoch).
    ready_until_ms: Cell<u64>,
}

impl Index {
    pub fn new(config: &ExactIndex) -> Index {
        let geometry = format!("{}:{}", config.pages, config.period_seconds);
        Index {
            config: config.clone(),
            shared_prefix: format!("sluice.cache.index.{geometry}."),
            redis_prefix: format!("sluice:cache:index:{geometry}:"),
            ready_until_ms: Cell::new(0),
        }
    }

    pub fn generation(&self, now_ms: u64) -> u64 {
        now_ms / 1000 / self.config.period_seconds.max(1)
    }

    pub fn slot(&self, key: &str) -> Slot {
        Slot::of(key, self.config.pages)
    }

    fn shared_key(&self, generation: u64, page: u32) -> String {
        format!("{}{}.{page}", self.shared_prefix, generation % 2)
    }

    /// A page's bits in shared data, if they belong to `generation`, and the entry's version.
    fn read(&self, host: &dyn SharedData, generation: u64, page: u32) -> (Option<Vec<u8>>, Option<u32>) {
        let (value, cas) = host.get_shared(&self.shared_key(generation, page));
        let bits =
            value.filter(|v| v.get(..HEADER) == Some(&generation.to_le_bytes()[..])).map(|mut v| v.split_off(HEADER));
        (bits, cas)
    }

    /// ORs `bits` into a page of `generation` (a page of an older generation is replaced).
    fn merge(&self, host: &dyn SharedData, generation: u64, page: u32, bits: &[u8]) -> bool {
        let key = self.shared_key(generation, page);
        for _ in 0..CAS_TRIES {
            let (current, cas) = self.read(host, generation, page);
            let mut merged = current.unwrap_or_default();
            merged.resize(PAGE_BYTES, 0);
            let before = merged.clone();
            for (into, from) in merged.iter_mut().zip(bits) {
                *into |= from;
            }
            if merged == before && cas.is_some() {
                return true;
            }
            let value = [&generation.to_le_bytes()[..], &merged].concat();
            if host.set_shared(&key, &value, cas) {
                return true;
            }
        }
        false
    }

    /// Records a key being stored now.
    pub fn add(&self, host: &dyn SharedData, slot: &Slot, now_ms: u64) -> bool {
        let mut bits = vec![0u8; PAGE_BYTES];
        slot.set(&mut bits);
        self.merge(host, self.generation(now_ms), slot.page, &bits)
    }

    pub fn answer(&self, host: &dyn SharedData, slot: &Slot, now_ms: u64) -> Answer {
        if now_ms > self.ready_until_ms.get() {
            return Answer::Unready;
        }
        let current = self.generation(now_ms);
        let held = [Some(current), current.checked_sub(1)]
            .into_iter()
            .flatten()
            .any(|generation| self.read(host, generation, slot.page).0.is_some_and(|page| slot.held_by(&page)));
        if held {
            Answer::Maybe
        } else {
            Answer::Absent
        }
    }

    /// The Redis keys of a generation: its bitmap, its changed pages, its birth mark and count.
    pub fn redis_keys(&self, generation: u64) -> [String; 3] {
        let base = format!("{}{generation}", self.redis_prefix);
        [format!("{base}:bits"), format!("{base}:pages"), format!("{base}:meta")]
    }

    /// What a store of the key in `slot` now sets in Redis. The generation's keys live through
    /// the next generation, when its answers may still be alive.
    pub fn bits(&self, slot: &Slot, now_ms: u64) -> IndexBits {
        IndexBits {
            keys: self.redis_keys(self.generation(now_ms)),
            ttl_seconds: 2 * self.config.period_seconds + 60,
            page: slot.page,
            offsets: slot.offsets(),
            born: now_ms,
        }
    }

    pub fn sync_ms(&self) -> u64 {
        self.config.sync_ms
    }
}

/// What a worker has copied of one generation in Redis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Known {
    generation: u64,
    /// The generation's birth mark in Redis: a different one means Redis lost it (flushed,
    /// restarted), and the copy starts over.
    born: String,
    /// Highest change number copied.
    after: u64,
}

/// One worker's copying of the index from Redis.
#[derive(Debug, Default)]
pub struct Sync {
    known: Vec<Known>,
    /// When the call in flight was sent (0: none).
    sent_ms: u64,
}

/// What a copy call needs: keys, then arguments.
pub type SyncCall = (Vec<String>, Vec<String>);

impl Sync {
    /// Whether a call may be sent now (none in flight, or the last one is long gone).
    pub fn due(&self, now_ms: u64, give_up_ms: u64) -> bool {
        self.sent_ms == 0 || now_ms.saturating_sub(self.sent_ms) > give_up_ms
    }

    /// The call that copies what changed in the current and the previous generation.
    pub fn call(&mut self, index: &Index, now_ms: u64) -> SyncCall {
        let current = index.generation(now_ms);
        let wanted: Vec<u64> = [Some(current), current.checked_sub(1)].into_iter().flatten().collect();
        let mut known: Vec<Known> = wanted
            .iter()
            .map(|g| {
                self.known
                    .iter()
                    .find(|k| k.generation == *g)
                    .cloned()
                    .unwrap_or(Known { generation: *g, ..Known::default() })
            })
            .collect();
        std::mem::swap(&mut self.known, &mut known);
        let mut keys = Vec::new();
        let mut args = Vec::new();
        for k in &self.known {
            keys.extend(index.redis_keys(k.generation));
            args.push(k.born.clone());
            args.push(k.after.to_string());
        }
        args.push(SYNC_PAGES.to_string());
        args.push(PAGE_BYTES.to_string());
        self.sent_ms = now_ms;
        (keys, args)
    }

    /// Takes a copy call's reply into shared data. `Some(true)`: in sync with Redis; `Some(false)`:
    /// more to copy; `None`: not a reply to this call (the index stays untrusted).
    pub fn absorb(&mut self, index: &Index, host: &dyn SharedData, reply: &RedisValue, now_ms: u64) -> Option<bool> {
        self.sent_ms = 0;
        let number = |value: &RedisValue| value.as_i64().and_then(|n| u64::try_from(n).ok());
        let mut items = reply.as_array()?;
        let mut complete = true;
        for known in &mut self.known {
            let [born, after, done, count, rest @ ..] = items else { return None };
            let born = born.as_text()?.to_string();
            let mut after = if born == known.born { number(after)? } else { 0 };
            let count = usize::try_from(number(count)?).ok()?;
            let (changes, next) = (rest.get(..count.checked_mul(3)?)?, rest.get(count * 3..)?);
            for change in changes.chunks(3) {
                let [page, score, hex] = change else { return None };
                let page = number(page).and_then(|n| u32::try_from(n).ok())?;
                let bits = decode_hex(hex.as_text().unwrap_or_default())?;
                if !index.merge(host, known.generation, page, &bits) {
                    return None;
                }
                after = after.max(number(score)?);
            }
            known.born = born;
            known.after = after;
            complete &= done.as_i64() == Some(1);
            items = next;
        }
        if !items.is_empty() {
            return None;
        }
        if complete {
            index.ready_until_ms.set(now_ms + 3 * index.sync_ms());
        }
        Some(complete)
    }

    /// A copy call failed: the index is trusted no longer than it already was.
    pub fn failed(&mut self) {
        self.sent_ms = 0;
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if digits.len() % 2 != 0 || digits.len() > 2 * PAGE_BYTES {
        return None;
    }
    let nibble = |c: u8| char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok());
    digits.chunks(2).map(|pair| Some(nibble(*pair.first()?)? << 4 | nibble(*pair.get(1)?)?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::host::fake::FakeHost;

    const HOUR_MS: u64 = 3_600_000;

    fn index() -> Index {
        Index::new(&ExactIndex { enabled: true, period_seconds: 3600, pages: 16, sync_ms: 1000 })
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn text(s: &str) -> RedisValue {
        RedisValue::Text(s.to_string())
    }

    /// A reply's items for one generation: birth mark, highest change, complete, then changes.
    fn part(born: &str, after: i64, done: bool, changes: &[(u32, i64, &[u8])]) -> Vec<RedisValue> {
        let count = i64::try_from(changes.len()).unwrap();
        let mut items =
            vec![text(born), RedisValue::Int(after), RedisValue::Int(i64::from(done)), RedisValue::Int(count)];
        for (page, score, bits) in changes {
            items.extend([RedisValue::Int(i64::from(*page)), RedisValue::Int(*score), text(&hex(bits))]);
        }
        items
    }

    fn flat(parts: [Vec<RedisValue>; 2]) -> RedisValue {
        RedisValue::Array(parts.concat())
    }

    /// A ready index: one empty, complete copy from Redis.
    fn ready(index: &Index, host: &FakeHost, now: u64) -> Sync {
        let mut sync = Sync::default();
        sync.call(index, now);
        let reply = flat([part("b", 0, true, &[]), part("b", 0, true, &[])]);
        assert_eq!(sync.absorb(index, host, &reply, now), Some(true));
        sync
    }

    #[test]
    fn keys_spread_over_pages_and_set_eight_bits() {
        let pages: std::collections::HashSet<u32> = (0..200).map(|i| Slot::of(&format!("k{i}"), 16).page).collect();
        assert_eq!(pages.len(), 16);
        let slot = Slot::of("sluice:cache:team:x:abc", 512);
        let mut page = vec![0u8; PAGE_BYTES];
        slot.set(&mut page);
        let set: u32 = page.iter().map(|b| b.count_ones()).sum();
        assert!((6..=8).contains(&set), "{set}");
        assert!(slot.held_by(&page));
        // The offsets Redis sets (`SETBIT`, high bit first) give the same page bytes.
        let offsets: Vec<u64> = slot.offsets().split(',').map(|o| o.parse().unwrap()).collect();
        assert_eq!(offsets.len(), 8);
        let mut redis_page = vec![0u8; PAGE_BYTES];
        for offset in offsets {
            assert_eq!(offset / PAGE_BITS, u64::from(slot.page));
            let within = offset % PAGE_BITS;
            redis_page[usize::try_from(within / 8).unwrap()] |= 0x80 >> (within % 8);
        }
        assert_eq!(redis_page, page);
    }

    #[test]
    fn false_maybes_stay_rare_at_the_documented_load() {
        // 200 keys per page, then 10,000 keys never stored.
        let (host, index) = (FakeHost::default(), index());
        let now = 10 * HOUR_MS;
        ready(&index, &host, now);
        for i in 0..16 * 200 {
            index.add(&host, &index.slot(&format!("stored {i}")), now);
        }
        let maybes =
            (0..10_000).filter(|i| index.answer(&host, &index.slot(&format!("new {i}")), now) == Answer::Maybe).count();
        assert!(maybes < 150, "{maybes} false maybes in 10000");
    }

    #[test]
    fn an_untrusted_index_always_asks() {
        let (host, index) = (FakeHost::default(), index());
        let (slot, now) = (index.slot("k"), HOUR_MS + 1000);
        assert_eq!(index.answer(&host, &slot, now), Answer::Unready);
        ready(&index, &host, now);
        assert_eq!(index.answer(&host, &slot, now), Answer::Absent);
        // No copy from Redis for three sync periods: Redis may be gone.
        assert_eq!(index.answer(&host, &slot, now + 3001), Answer::Unready);
    }

    #[test]
    fn a_stored_key_is_found_through_the_next_generation_only() {
        let (host, index) = (FakeHost::default(), index());
        let stored_at = 10 * HOUR_MS + 5;
        let slot = index.slot("sluice:cache:team:x:1");
        index.add(&host, &slot, stored_at);
        for now in [stored_at, 11 * HOUR_MS + 1, 12 * HOUR_MS - 1] {
            ready(&index, &host, now);
            assert_eq!(index.answer(&host, &slot, now), Answer::Maybe, "{now}");
        }
        // Two generations on, the page slot is reused: its old bits do not count.
        let later = 12 * HOUR_MS + 1;
        ready(&index, &host, later);
        assert_eq!(index.answer(&host, &slot, later), Answer::Absent);
        index.add(&host, &index.slot("other"), later);
        assert_eq!(index.answer(&host, &slot, later), Answer::Absent);
    }

    #[test]
    fn writes_survive_another_worker_writing_in_between() {
        /// Shared data where another worker writes the same page between this worker's read
        /// and its write, once.
        struct Racing<'a> {
            host: &'a FakeHost,
            index: &'a Index,
            other: Slot,
            raced: Cell<bool>,
        }
        impl SharedData for Racing<'_> {
            fn get_shared(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
                self.host.get_shared(key)
            }
            fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
                if !self.raced.replace(true) {
                    assert!(self.index.add(self.host, &self.other, HOUR_MS));
                }
                self.host.set_shared(key, value, cas)
            }
        }
        let (host, index) = (FakeHost::default(), index());
        // Two keys on one page.
        let a = index.slot("a");
        let other = (0..).map(|i| index.slot(&format!("k{i}"))).find(|s| s.page == a.page).unwrap();
        index.add(&host, &a, HOUR_MS);
        let racing = Racing { host: &host, index: &index, other, raced: Cell::new(false) };
        let b = (0..).map(|i| index.slot(&format!("b{i}"))).find(|s| s.page == a.page && *s != other).unwrap();
        // The first write fails its compare-and-swap; the retry keeps everyone's bits.
        assert!(index.add(&racing, &b, HOUR_MS));
        assert!(racing.raced.get());
        ready(&index, &host, HOUR_MS);
        for slot in [a, other, b] {
            assert_eq!(index.answer(&host, &slot, HOUR_MS), Answer::Maybe);
        }
    }

    #[test]
    fn copies_pages_from_redis_and_continues_where_it_stopped() {
        let (host, index) = (FakeHost::default(), index());
        let now = 5 * HOUR_MS;
        let slot = index.slot("stored elsewhere");
        let mut bits = vec![0u8; PAGE_BYTES];
        slot.set(&mut bits);
        let mut sync = Sync::default();
        let (keys, args) = sync.call(&index, now);
        assert_eq!(keys.len(), 6);
        assert_eq!(keys[0], "sluice:cache:index:16:3600:5:bits");
        assert_eq!(args, ["", "0", "", "0", "64", "256"]);
        assert!(!sync.due(now, 500), "one call at a time");
        // More pages to come: the index is not trusted yet.
        let reply = flat([part("b5", 0, false, &[(slot.page, 7, &bits)]), part("-", 0, true, &[])]);
        assert_eq!(sync.absorb(&index, &host, &reply, now), Some(false));
        assert_eq!(index.answer(&host, &slot, now), Answer::Unready);
        let (_, args) = sync.call(&index, now);
        assert_eq!(args, ["b5", "7", "-", "0", "64", "256"]);
        let reply = flat([part("b5", 7, true, &[]), part("-", 0, true, &[])]);
        assert_eq!(sync.absorb(&index, &host, &reply, now), Some(true));
        assert_eq!(index.answer(&host, &slot, now), Answer::Maybe);
        // Redis lost the generation (flushed): the copy starts from the first change again.
        let reply = flat([part("b5-again", 3, true, &[]), part("-", 0, true, &[])]);
        sync.call(&index, now);
        assert_eq!(sync.absorb(&index, &host, &reply, now), Some(true));
        assert_eq!(sync.call(&index, now).1, ["b5-again", "0", "-", "0", "64", "256"]);
        // A new generation: the old current one becomes the previous one.
        let (keys, args) = sync.call(&index, 6 * HOUR_MS);
        assert_eq!(
            (keys[0].as_str(), keys[3].as_str()),
            ("sluice:cache:index:16:3600:6:bits", "sluice:cache:index:16:3600:5:bits")
        );
        assert_eq!(args, ["", "0", "b5-again", "0", "64", "256"]);
    }

    #[test]
    fn unreadable_replies_leave_the_index_untrusted() {
        let (host, index) = (FakeHost::default(), index());
        let mut sync = Sync::default();
        let short = part("b", 0, true, &[(1, 1, &[0])]);
        for bad in [
            RedisValue::Nil,
            RedisValue::Array(part("b", 0, true, &[])),
            flat([short.get(..5).unwrap().to_vec(), part("b", 0, true, &[])]),
            flat([[&short[..6], &[text("zz")][..]].concat(), part("b", 0, true, &[])]),
            RedisValue::Array([part("b", 0, true, &[]), part("b", 0, true, &[]), vec![text("extra")]].concat()),
        ] {
            sync.call(&index, HOUR_MS);
            assert_eq!(sync.absorb(&index, &host, &bad, HOUR_MS), None, "{bad:?}");
            assert_eq!(index.answer(&host, &index.slot("k"), HOUR_MS), Answer::Unready);
        }
        assert_eq!(decode_hex("0aff"), Some(vec![10, 255]));
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex(&"00".repeat(PAGE_BYTES + 1)), None);
    }
}
