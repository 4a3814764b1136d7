//! The Lua that runs in Redis (stock Redis 7, no modules): one call finds the most similar
//! cached prompts, one stores an answer. Arguments are built and replies read here.
//!
//! **Cost of a lookup.** The search reads the prompt's LSH bucket and the buckets one bit away
//! (`lsh_bits + 1` lists) and, in each, at most the `bucket_capacity` newest entries. Each entry
//! costs 8 byte comparisons of 64-bit signatures; the few whose signature is close enough for the
//! threshold cost one `HMGET` and a dot product over the 8-bit vector. So it grows with the number of entries in the
//! scope until the probed buckets are full, then stays at `(lsh_bits + 1) * bucket_capacity`
//! entries (256 with the defaults) however many are cached; older entries drop out of the
//! buckets (their answers still serve exact repeats until their TTL). Entries whose TTL ran out
//! are removed from the lists as the search meets them.

use sluice_shared::redis::{RedisValue, Script};

/// KEYS: the buckets to read. ARGV: query vector (one byte per component, level + 128), its
/// 8-byte signature, most signature bits an entry may differ in, threshold, most candidates
/// returned, entries read per bucket, prefix of entry keys, the threshold of an entry whose hits
/// were contradicted (field `w`, [`WRONG`]). A bucket item is the entry's signature followed by its
/// id: entries whose signature is too far are skipped after 8 byte comparisons; the others are
/// compared in full. Replies `{scanned, compared, similarity_1, question_1, answer_1, id_1, ...}`,
/// best first, similarities as text.
pub const SEARCH: &str = r#"
local POP = '0112122312232334122323342334344512232334233434452334344534454556122323342334344523343445344545562334344534454556344545564556566712232334233434452334344534454556233434453445455634454556455656672334344534454556344545564556566734454556455656674556566756676778'
local q = {string.byte(ARGV[1], 1, -1)}
local qs = {string.byte(ARGV[2], 1, 8)}
local n, qsum, qn = #q, 0, 0
for i = 1, n do
  q[i] = q[i] - 128
  qsum = qsum + q[i]
  qn = qn + q[i] * q[i]
end
qn = math.sqrt(qn)
local max_bits, threshold, top = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local capacity, prefix, strict = tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8])
local found, scanned, compared = {}, 0, 0
for _, bucket in ipairs(KEYS) do
  for _, item in ipairs(redis.call('LRANGE', bucket, 0, capacity - 1)) do
    scanned = scanned + 1
    local s = {string.byte(item, 1, 8)}
    local bits = 0
    for k = 1, 8 do bits = bits + string.byte(POP, bit.bxor(s[k] or 0, qs[k] or 0) + 1) - 48 end
    if bits <= max_bits then
      local id = string.sub(item, 9)
      local entry = redis.call('HMGET', prefix .. id, 'v', 'n', 'w')
      local v, en, wrong = entry[1], tonumber(entry[2]), tonumber(entry[3] or '0')
      if not v then
        redis.call('LREM', bucket, 0, item)
      elseif #v == n and en and en > 0 and qn > 0 then
        compared = compared + 1
        local e = {string.byte(v, 1, -1)}
        -- Stored bytes are levels + 128: sum((e - 128) * q) = sum(e * q) - 128 * sum(q).
        local dot = 0
        for i = 1, n do dot = dot + e[i] * q[i] end
        local similarity = (dot - 128 * qsum) / (en * qn)
        if similarity >= threshold and (wrong == 0 or similarity >= strict) then found[#found + 1] = {similarity, id} end
      end
    end
  end
end
table.sort(found, function(a, b) return a[1] > b[1] end)
local reply = {tostring(scanned), tostring(compared)}
for i = 1, math.min(top, #found) do
  local fields = redis.call('HMGET', prefix .. found[i][2], 'q', 'x')
  local answer = fields[2] and redis.call('GET', fields[2])
  if fields[1] and answer then
    reply[#reply + 1] = string.format('%.4f', found[i][1])
    reply[#reply + 1] = fields[1]
    reply[#reply + 1] = answer
    reply[#reply + 1] = found[i][2]
  end
end
return reply
"#;

/// KEYS: an answer and its semantic entry (`x:<id>`, `e:<id>`). ARGV: `exact` (the complaint
/// came with the very request that was answered: the answer itself is wrong) or `semantic` (a
/// paraphrase was: the match is), and the contradictions that evict. Replies `evicted`,
/// `stricter` (the entry now needs the contradicted threshold) or `unknown`.
pub const WRONG: &str = r#"
if ARGV[1] == 'exact' or redis.call('EXISTS', KEYS[2]) == 0 then
  if redis.call('DEL', KEYS[1], KEYS[2]) > 0 then return 'evicted' end
  return 'unknown'
end
if redis.call('HINCRBY', KEYS[2], 'w', 1) >= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 'evicted'
end
return 'stricter'
"#;

/// KEYS: the answer, the semantic entry and its bucket, the index's bitmap, changed pages and
/// meta of the current generation (unused keys repeat the answer's). ARGV: the answer record,
/// TTL in seconds, `semantic` or not, `index` or not; for the semantic entry the vector, its
/// length, the question, the bucket item (signature and id) and the bucket capacity; for the
/// index its keys' TTL, the page, the bit offsets (comma-separated) and a birth mark used if the
/// generation is new. The bucket keeps its newest `capacity` items and lives as long as its
/// newest entry; each store gives its index page the next change number, so copies of the index
/// ask only for pages changed since their last look.
pub const STORE: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[3] == 'semantic' then
  redis.call('HSET', KEYS[2], 'v', ARGV[5], 'n', ARGV[6], 'q', ARGV[7], 'x', KEYS[1])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  redis.call('LREM', KEYS[3], 0, ARGV[8])
  redis.call('LPUSH', KEYS[3], ARGV[8])
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[9]) - 1)
  redis.call('EXPIRE', KEYS[3], ARGV[2])
end
if ARGV[4] == 'index' then
  for offset in string.gmatch(ARGV[12], '%d+') do redis.call('SETBIT', KEYS[4], tonumber(offset), 1) end
  redis.call('HSETNX', KEYS[6], 'born', ARGV[13])
  redis.call('ZADD', KEYS[5], redis.call('HINCRBY', KEYS[6], 'n', 1), ARGV[11])
  for i = 4, 6 do redis.call('EXPIRE', KEYS[i], ARGV[10]) end
end
return 1
"#;

/// KEYS: per generation (newest first) its bitmap, changed pages and meta. ARGV: per generation
/// the birth mark and the change number already copied, then the most pages per generation and
/// the page size in bytes. A birth mark that is not the generation's (Redis lost it) copies from
/// the start. Replies, per generation one after the other, `born` (`-`: none yet), `after`,
/// `complete` (0 or 1), the number of pages that follow, then `page, change, hex bits` for
/// each: flat, because the bridge does not carry nested arrays.
pub const SYNC: &str = r#"
local limit, size = tonumber(ARGV[#ARGV - 1]), tonumber(ARGV[#ARGV])
local reply = {}
for g = 0, #KEYS / 3 - 1 do
  local born = redis.call('HGET', KEYS[g * 3 + 3], 'born') or '-'
  local after = ARGV[g * 2 + 2]
  if born ~= ARGV[g * 2 + 1] then after = '0' end
  local changed = redis.call('ZRANGEBYSCORE', KEYS[g * 3 + 2], '(' .. after, '+inf', 'WITHSCORES', 'LIMIT', 0, limit)
  reply[#reply + 1] = born
  reply[#reply + 1] = tonumber(after)
  reply[#reply + 1] = #changed / 2 < limit and 1 or 0
  reply[#reply + 1] = #changed / 2
  for i = 1, #changed, 2 do
    local page = tonumber(changed[i])
    local bytes = redis.call('GETRANGE', KEYS[g * 3 + 1], page * size, page * size + size - 1)
    reply[#reply + 1] = page
    reply[#reply + 1] = tonumber(changed[i + 1])
    reply[#reply + 1] = string.format(string.rep('%02x', #bytes), string.byte(bytes, 1, -1))
  end
end
return reply
"#;

/// The semantic entry a store writes besides the answer: what lets similar prompts find it.
pub struct Entry {
    /// The entry's key, and its bucket's.
    pub key: String,
    pub bucket: String,
    pub vector: Vec<u8>,
    pub norm: f64,
    pub question: String,
    /// The bucket's list item: signature and id.
    pub item: Vec<u8>,
    pub capacity: u32,
}

/// The exact index's part of a store: the generation's keys and the answer's bits in it.
pub struct IndexBits {
    /// Bitmap, changed pages, meta.
    pub keys: [String; 3],
    pub ttl_seconds: u64,
    pub page: u32,
    /// Bit offsets in the bitmap, comma-separated.
    pub offsets: String,
    /// Birth mark of the generation, if this store creates it.
    pub born: u64,
}

/// Keys and arguments of a [`STORE`] call, in the script's fixed slots (unused keys repeat the
/// answer's, unused arguments are empty).
pub fn store_args(
    answer_key: &str,
    record: String,
    ttl_seconds: u64,
    entry: Option<Entry>,
    index: Option<IndexBits>,
) -> (Vec<String>, Vec<Vec<u8>>) {
    let answer = || answer_key.to_string();
    let (semantic, entry_keys, entry_args) = match entry {
        Some(e) => (
            "semantic",
            [e.key, e.bucket],
            vec![
                e.vector,
                format!("{:.6}", e.norm).into_bytes(),
                e.question.into_bytes(),
                e.item,
                e.capacity.to_string().into_bytes(),
            ],
        ),
        None => ("", [answer(), answer()], vec![Vec::new(); 5]),
    };
    let (indexed, index_keys, index_args) = match index {
        Some(i) => (
            "index",
            i.keys,
            vec![
                i.ttl_seconds.to_string().into_bytes(),
                i.page.to_string().into_bytes(),
                i.offsets.into_bytes(),
                i.born.to_string().into_bytes(),
            ],
        ),
        None => ("", [answer(), answer(), answer()], vec![Vec::new(); 4]),
    };
    let keys = std::iter::once(answer()).chain(entry_keys).chain(index_keys).collect();
    let head = [record.into_bytes(), ttl_seconds.to_string().into_bytes(), semantic.into(), indexed.into()];
    let args = head.into_iter().chain(entry_args).chain(index_args).collect();
    (keys, args)
}

/// Candidates kept per search: the guard may turn the most similar one down.
pub const TOP_CANDIDATES: usize = 3;

pub struct Scripts {
    pub search: Script,
    pub store: Script,
    pub sync: Script,
    pub wrong: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            search: Script::new(SEARCH),
            store: Script::new(STORE),
            sync: Script::new(SYNC),
            wrong: Script::new(WRONG),
        }
    }
}

/// A cached prompt close enough to the request's.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub similarity: f64,
    pub question: String,
    pub record: String,
    /// The entry's id (the exact hash of the request that stored it).
    pub id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Bucket items read.
    pub scanned: u64,
    /// Entries whose signature was close enough for a full comparison.
    pub compared: u64,
    pub candidates: Vec<Candidate>,
}

/// Reads the search's reply; `None` when it is not one.
pub fn read_search(reply: &RedisValue) -> Option<Found> {
    let items = reply.as_array()?;
    let count = |value: &RedisValue| value.as_i64().and_then(|n| u64::try_from(n).ok());
    let [scanned, compared, rest @ ..] = items else { return None };
    let (scanned, compared) = (count(scanned)?, count(compared)?);
    let mut candidates = Vec::new();
    for found in rest.chunks(4) {
        if let [similarity, question, record, id] = found {
            candidates.push(Candidate {
                similarity: similarity.as_text()?.parse().ok()?,
                question: question.as_text()?.to_string(),
                record: record.as_text()?.to_string(),
                id: id.as_text()?.to_string(),
            });
        }
    }
    Some(Found { scanned, compared, candidates })
}

/// A bucket item: the entry's signature, then its id.
pub fn bucket_item(signature: &[u8; 8], id: &str) -> Vec<u8> {
    [&signature[..], id.as_bytes()].concat()
}

/// The arguments of a search: bytes are passed as they are (the bridge percent-encodes them).
pub fn search_args(
    vector: &[u8],
    signature: &[u8; 8],
    threshold: f64,
    strict: f64,
    capacity: u32,
    entry_prefix: &str,
) -> Vec<Vec<u8>> {
    vec![
        vector.to_vec(),
        signature.to_vec(),
        crate::vector::max_differing_bits(threshold).to_string().into_bytes(),
        threshold.to_string().into_bytes(),
        TOP_CANDIDATES.to_string().into_bytes(),
        capacity.to_string().into_bytes(),
        entry_prefix.as_bytes().to_vec(),
        strict.to_string().into_bytes(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_search_replies() {
        let text = |s: &str| RedisValue::Text(s.to_string());
        let reply = RedisValue::Array(vec![
            RedisValue::Int(12),
            text("2"),
            text("0.9312"),
            text("capital of France?"),
            text("{\"choices\":[]}"),
            text("0123abcd"),
        ]);
        let found = read_search(&reply).unwrap();
        assert_eq!((found.scanned, found.compared), (12, 2));
        assert_eq!(found.candidates.len(), 1);
        assert_eq!((found.candidates[0].similarity, found.candidates[0].id.as_str()), (0.9312, "0123abcd"));
        assert_eq!(read_search(&RedisValue::Array(vec![text("0"), text("0")])).unwrap().candidates, vec![]);
        for bad in [RedisValue::Nil, RedisValue::Array(vec![]), RedisValue::Array(vec![text("x")])] {
            assert_eq!(read_search(&bad), None, "{bad:?}");
        }
        let garbled = RedisValue::Array(vec![text("1"), text("1"), text("high"), text("q"), text("a"), text("i")]);
        assert_eq!(read_search(&garbled), None);
    }

    #[test]
    fn store_calls_fill_the_scripts_slots() {
        let text = |args: &[Vec<u8>]| args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>();
        let (keys, args) = store_args("x", "{}".into(), 60, None, None);
        assert_eq!(keys, vec!["x"; 6]);
        assert_eq!(text(&args), ["{}", "60", "", "", "", "", "", "", "", "", "", "", ""]);
        let entry = Entry {
            key: "e".into(),
            bucket: "b".into(),
            vector: b"v".to_vec(),
            norm: 1.5,
            question: "q".into(),
            item: b"i".to_vec(),
            capacity: 8,
        };
        let index = IndexBits {
            keys: ["bits".into(), "pages".into(), "meta".into()],
            ttl_seconds: 7,
            page: 3,
            offsets: "1,2".into(),
            born: 9,
        };
        let (keys, args) = store_args("x", "{}".into(), 60, Some(entry), Some(index));
        assert_eq!(keys, ["x", "e", "b", "bits", "pages", "meta"]);
        assert_eq!(
            text(&args),
            ["{}", "60", "semantic", "index", "v", "1.500000", "q", "i", "8", "7", "3", "1,2", "9"]
        );
    }

    #[test]
    fn search_calls_carry_binary_vectors() {
        let scripts = Scripts::default();
        let args = search_args(&[0x81, 0x7f], &[1, 2, 3, 4, 5, 6, 7, 8], 0.85, 0.95, 64, "sluice:cache:g:e:");
        let command = scripts.search.call(true, &["b0"], &args);
        let expected: Vec<&[u8]> = vec![
            b"EVALSHA",
            scripts.search.sha1().as_bytes(),
            b"1",
            b"b0",
            &[0x81, 0x7f],
            &[1, 2, 3, 4, 5, 6, 7, 8],
            b"24",
            b"0.85",
            b"3",
            b"64",
            b"sluice:cache:g:e:",
            b"0.95",
        ];
        assert_eq!(command.iter().map(Vec::as_slice).collect::<Vec<_>>(), expected);
    }
}
