//! The Lua that runs in Redis: one atomic call to check and reserve on the request path, one to
//! charge spend afterwards. Arguments are built and replies read here.

use sluice_shared::redis::{RedisValue, Script};

use serde_json::{json, Value};

use crate::ledger::{Batch, Charge};
use crate::limits::Counter;

/// Check-and-reserve. KEYS: the request's counters, then its reservation marker. ARGV, five per
/// counter: capacity, cost, TTL in seconds, 1 when a full counter blocks the request (0: it
/// downgrades instead), and the most room wanted (a lease, at least the cost); then the marker's
/// TTL and the lease share. Every counter is read; if no blocking counter is full, each counter
/// with room is granted its cost, or more: up to the room wanted, never more than `share` of the
/// room left, and only while the room left is at least twice the room wanted (so leases shrink
/// as a counter fills, and the last requests under a limit are checked one by one). A full downgrade
/// counter is not charged (the request will not use that model). The grants are recorded in the
/// marker (a hash), so a settlement whose reply was lost can give back exactly what Redis
/// granted. Replies `{admitted, used_1, ..., used_n, granted_1, ..., granted_n}`, with the values
/// before this request.
pub const CHECK: &str = r#"
local n = #KEYS - 1
local share = tonumber(ARGV[5 * n + 2])
local used, room, admitted = {}, {}, 1
for i = 1, n do
  local a = 5 * (i - 1)
  local capacity, cost = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  used[i] = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  room[i] = used[i] < capacity and used[i] + cost <= capacity
  if not room[i] and ARGV[a + 4] == '1' then admitted = 0 end
end
local granted = {}
for i = 1, n do granted[i] = 0 end
if admitted == 1 then
  for i = 1, n do
    local a = 5 * (i - 1)
    local capacity, cost, wanted = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 5])
    if room[i] then
      local left, lease = capacity - used[i], 0
      if left >= 2 * wanted then lease = math.min(wanted, math.floor(left * share)) end
      granted[i] = math.max(cost, lease)
      if granted[i] > 0 then
        local amount = string.format('%d', granted[i])
        redis.call('INCRBY', KEYS[i], amount)
        redis.call('EXPIRE', KEYS[i], ARGV[a + 3], 'NX')
        redis.call('HSET', KEYS[n + 1], KEYS[i], amount)
      end
    end
  end
  redis.call('EXPIRE', KEYS[n + 1], ARGV[5 * n + 1])
end
local reply = {admitted}
for i = 1, n do reply[i + 1] = used[i] end
for i = 1, n do reply[n + i + 1] = granted[i] end
return reply
"#;

/// Applies charge batches exactly once. ARGV[1]: JSON `{"prefix", "memory", "batches": [{"id",
/// "charges": [[key, delta, ttl]], "forget": [marker], "conditional": [{"marker", "charges"}]}]}`
/// (numbers as strings). A batch whose id Redis remembers was applied before (a retry after a
/// lost reply) and is skipped. A conditional charge is a request's actual use whose check
/// reply was lost: what its marker says Redis granted is taken off first. Replies the number of
/// batches applied now.
pub const CHARGE: &str = r#"
local doc = cjson.decode(ARGV[1])
local function add(key, delta, ttl)
  if delta ~= 0 then
    redis.call('INCRBY', key, string.format('%d', delta))
    redis.call('EXPIRE', key, ttl, 'NX')
  end
end
local applied = 0
for _, batch in ipairs(doc.batches) do
  if redis.call('SET', doc.prefix .. ':batch:' .. batch.id, '1', 'NX', 'EX', doc.memory) then
    for _, c in ipairs(batch.charges) do add(c[1], tonumber(c[2]), c[3]) end
    for _, marker in ipairs(batch.forget) do redis.call('DEL', marker) end
    for _, c in ipairs(batch.conditional) do
      for _, charge in ipairs(c.charges) do
        local granted = tonumber(redis.call('HGET', c.marker, charge[1]) or '0') or 0
        add(charge[1], tonumber(charge[2]) - granted, charge[3])
      end
      redis.call('DEL', c.marker)
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

/// `KEYS` and `ARGV` of a check: each counter with the room wanted for it.
pub fn check_args(counters: &[(&Counter, i64)], marker: &str, share: f64) -> (Vec<String>, Vec<String>) {
    let mut keys: Vec<String> = counters.iter().map(|(c, _)| c.key.clone()).collect();
    keys.push(marker.to_string());
    let mut args: Vec<String> = counters
        .iter()
        .flat_map(|(c, wanted)| {
            [
                c.capacity.to_string(),
                c.cost.to_string(),
                c.ttl_s.to_string(),
                u8::from(c.blocks()).to_string(),
                wanted.max(&c.cost).to_string(),
            ]
        })
        .collect();
    args.push(MARKER_TTL_S.to_string());
    args.push(format!("{share}"));
    (keys, args)
}

/// A check's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub admitted: bool,
    /// Each counter's use before this request.
    pub used: Vec<i64>,
    /// The room Redis granted per counter (0 for a counter without room, or when refused).
    pub granted: Vec<i64>,
}

pub fn read_check(reply: &RedisValue, counters: usize) -> Option<Checked> {
    let items = reply.as_array()?;
    let (admitted, rest) = items.split_first()?;
    let numbers: Vec<i64> = rest.iter().map(RedisValue::as_i64).collect::<Option<_>>()?;
    if numbers.len() != 2 * counters {
        return None;
    }
    let (used, granted) = numbers.split_at(counters);
    Some(Checked { admitted: admitted.as_i64()? == 1, used: used.to_vec(), granted: granted.to_vec() })
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
                    "marker": c.marker, "charges": list(&c.charges),
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
        let int = RedisValue::Int;
        let reply = RedisValue::Array(vec![int(1), int(3), int(0), int(1), int(0)]);
        assert_eq!(read_check(&reply, 2), Some(Checked { admitted: true, used: vec![3, 0], granted: vec![1, 0] }));
        assert_eq!(read_check(&reply, 3), None);
        assert_eq!(read_check(&reply, 1), None);
        assert_eq!(read_check(&RedisValue::Nil, 0), None);
        let junk = RedisValue::Array(vec![int(0), RedisValue::Text("x".into()), int(0)]);
        assert_eq!(read_check(&junk, 1), None);
    }

    #[test]
    fn check_layout() {
        use crate::config::{Action, Kind};
        let counter = Counter {
            limit: 0,
            key: "c".into(),
            subject: "s".into(),
            kind: Kind::Requests,
            action: Action::Downgrade,
            capacity: 10,
            cost: 1,
            span: sluice_shared::window::Window::Hour.span(0),
            ttl_s: 60,
        };
        let (keys, args) = check_args(&[(&counter, 0)], "m", 0.05);
        assert_eq!(keys, ["c", "m"]);
        // The room wanted is never less than the cost.
        assert_eq!(args, ["10", "1", "60", "0", "1", "86400", "0.05"]);
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
                charges: vec![Charge { key: "k1".into(), delta: 3, ttl_s: 60 }],
            }],
        };
        let args = charge_args("p", &[batch]);
        let doc: Value = serde_json::from_str(&args[0]).unwrap();
        assert_eq!(doc["prefix"], "p");
        assert_eq!(doc["memory"], "86400");
        assert_eq!(doc["batches"][0]["charges"], json!([["k1", "5", "60"], ["k2", "-2", "7"]]));
        assert_eq!(doc["batches"][0]["forget"], json!(["m1"]));
        assert_eq!(doc["batches"][0]["conditional"][0]["charges"], json!([["k1", "3", "60"]]));
    }
}
