//! The Lua that runs in Redis: one atomic call to check and reserve on the request path, one to
//! charge spend afterwards. Arguments are built and replies read here.

use sluice_shared::redis::{RedisValue, Script};

use serde_json::{json, Value};

use crate::ledger::{Batch, Charge};
use crate::limits::Counter;

/// Check-and-reserve. KEYS: the request's counters, then its reservation marker. ARGV, four per
/// counter: capacity, cost, TTL in seconds, and 1 when a full counter blocks the request (0: it
/// downgrades instead); then the marker's TTL. Every counter is read; if no blocking counter is
/// full, each counter with room is charged its cost (a full downgrade counter is not: the request
/// will not use that model) and the marker is set, so a settlement whose check reply was lost can
/// still tell that this reservation happened. Replies `{admitted, used_1, ..., used_n}` with the
/// values before this request.
pub const CHECK: &str = r#"
local n = #KEYS - 1
local used, room, admitted = {}, {}, 1
for i = 1, n do
  local a = 4 * (i - 1)
  local capacity, cost = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  used[i] = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  room[i] = used[i] < capacity and used[i] + cost <= capacity
  if not room[i] and ARGV[a + 4] == '1' then admitted = 0 end
end
if admitted == 1 then
  for i = 1, n do
    local a = 4 * (i - 1)
    if room[i] and ARGV[a + 2] ~= '0' then
      redis.call('INCRBY', KEYS[i], ARGV[a + 2])
      redis.call('EXPIRE', KEYS[i], ARGV[a + 3], 'NX')
    end
  end
  redis.call('SET', KEYS[n + 1], '1', 'EX', ARGV[4 * n + 1])
end
local reply = {admitted}
for i = 1, n do reply[i + 1] = used[i] end
return reply
"#;

/// Applies charge batches exactly once. ARGV[1]: JSON `{"prefix", "memory", "batches": [{"id",
/// "charges": [[key, delta, ttl]], "forget": [marker], "conditional": [{"marker", "reserved",
/// "unreserved"}]}]}` (numbers as strings). A batch whose id Redis remembers was applied before
/// (a retry after a lost reply) and is skipped. Replies the number of batches applied now.
pub const CHARGE: &str = r#"
local doc = cjson.decode(ARGV[1])
local function apply(charges)
  for _, c in ipairs(charges) do
    if c[2] ~= '0' then
      redis.call('INCRBY', c[1], c[2])
      redis.call('EXPIRE', c[1], c[3], 'NX')
    end
  end
end
local applied = 0
for _, batch in ipairs(doc.batches) do
  if redis.call('SET', doc.prefix .. ':batch:' .. batch.id, '1', 'NX', 'EX', doc.memory) then
    apply(batch.charges)
    for _, marker in ipairs(batch.forget) do redis.call('DEL', marker) end
    for _, c in ipairs(batch.conditional) do
      if redis.call('DEL', c.marker) == 1 then apply(c.reserved) else apply(c.unreserved) end
    end
    applied = applied + 1
  end
end
return applied
"#;

/// Batch ids are remembered for a day: a retry later than that would apply twice.
const BATCH_MEMORY_S: u64 = 86_400;
/// A reservation marker outlives any settlement delay short of a day-long outage.
pub const MARKER_TTL_S: u64 = 86_400;

pub struct Scripts {
    pub check: Script,
    pub charge: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts { check: Script::new(CHECK), charge: Script::new(CHARGE) }
    }
}

/// `KEYS` and `ARGV` of a check.
pub fn check_args(counters: &[Counter], marker: &str) -> (Vec<String>, Vec<String>) {
    let mut keys: Vec<String> = counters.iter().map(|c| c.key.clone()).collect();
    keys.push(marker.to_string());
    let mut args: Vec<String> = counters
        .iter()
        .flat_map(|c| {
            [c.capacity.to_string(), c.cost.to_string(), c.ttl_s.to_string(), u8::from(c.blocks()).to_string()]
        })
        .collect();
    args.push(MARKER_TTL_S.to_string());
    (keys, args)
}

/// A check's reply: admitted, and each counter's use before this request.
pub fn read_check(reply: &RedisValue, counters: usize) -> Option<(bool, Vec<i64>)> {
    let items = reply.as_array()?;
    let (admitted, used) = items.split_first()?;
    let used: Vec<i64> = used.iter().map(RedisValue::as_i64).collect::<Option<_>>()?;
    (used.len() == counters).then_some((admitted.as_i64()? == 1, used))
}

/// The `ARGV` that applies `batches` (no `KEYS`: a batch's keys are only known inside it).
pub fn charge_args(prefix: &str, batches: &[Batch]) -> Vec<String> {
    let list = |charges: &[Charge]| -> Vec<Value> {
        charges.iter().map(|c| json!([c.key, c.delta.to_string(), c.ttl_s.to_string()])).collect()
    };
    let batches: Vec<Value> = batches
        .iter()
        .map(|b| {
            json!({
                "id": b.id,
                "charges": list(&b.charges),
                "forget": b.forget,
                "conditional": b.conditional.iter().map(|c| json!({
                    "marker": c.marker, "reserved": list(&c.reserved), "unreserved": list(&c.unreserved),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    vec![json!({"prefix": prefix, "memory": BATCH_MEMORY_S.to_string(), "batches": batches}).to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Charge;

    #[test]
    fn check_replies() {
        let reply = RedisValue::Array(vec![RedisValue::Int(1), RedisValue::Int(3), RedisValue::Int(0)]);
        assert_eq!(read_check(&reply, 2), Some((true, vec![3, 0])));
        assert_eq!(read_check(&reply, 3), None);
        assert_eq!(read_check(&RedisValue::Nil, 0), None);
        let junk = RedisValue::Array(vec![RedisValue::Int(0), RedisValue::Text("x".into())]);
        assert_eq!(read_check(&junk, 1), None);
    }

    #[test]
    fn charge_layout() {
        let batch = Batch {
            id: "vm-1".into(),
            charges: vec![
                Charge { key: "k1".into(), delta: 5, ttl_s: 60 },
                Charge { key: "k2".into(), delta: -2, ttl_s: 7 },
            ],
            forget: vec!["m1".into()],
            conditional: vec![crate::ledger::Conditional {
                marker: "m2".into(),
                reserved: vec![],
                unreserved: vec![Charge { key: "k1".into(), delta: 3, ttl_s: 60 }],
            }],
        };
        let args = charge_args("p", &[batch]);
        let doc: Value = serde_json::from_str(&args[0]).unwrap();
        assert_eq!(doc["prefix"], "p");
        assert_eq!(doc["memory"], "86400");
        assert_eq!(doc["batches"][0]["charges"], json!([["k1", "5", "60"], ["k2", "-2", "7"]]));
        assert_eq!(doc["batches"][0]["forget"], json!(["m1"]));
        assert_eq!(doc["batches"][0]["conditional"][0]["unreserved"], json!([["k1", "3", "60"]]));
        assert_eq!(doc["batches"][0]["conditional"][0]["reserved"], json!([]));
    }
}
