//! The Lua that runs in Redis: one atomic call to check and reserve on the request path, one to
//! charge spend afterwards. Arguments are built and replies read here.

use sluice_shared::redis::{RedisValue, Script};

use crate::ledger::Batch;
use crate::limits::Counter;

/// Check-and-reserve. KEYS: the request's counters. ARGV, four per counter: capacity, cost,
/// TTL in seconds, and 1 when a full counter blocks the request (0: it downgrades instead).
/// Every counter is read; if no blocking counter is full, each counter with room is charged its
/// cost (a full downgrade counter is not: the request will not use that model). Replies
/// `{admitted, used_1, ..., used_n}` with the values before this request.
pub const CHECK: &str = r#"
local used, room, admitted = {}, {}, 1
for i = 1, #KEYS do
  local a = 4 * (i - 1)
  local capacity, cost = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  used[i] = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  room[i] = used[i] < capacity and used[i] + cost <= capacity
  if not room[i] and ARGV[a + 4] == '1' then admitted = 0 end
end
if admitted == 1 then
  for i = 1, #KEYS do
    local a = 4 * (i - 1)
    if room[i] and ARGV[a + 2] ~= '0' then
      redis.call('INCRBY', KEYS[i], ARGV[a + 2])
      redis.call('EXPIRE', KEYS[i], ARGV[a + 3], 'NX')
    end
  end
end
local reply = {admitted}
for i = 1, #KEYS do reply[i + 1] = used[i] end
return reply
"#;

/// Applies charge batches exactly once. ARGV[1]: how long a batch id is remembered (s). Then per
/// batch: its number of charges n, then n pairs (delta, TTL). KEYS, per batch: the batch's
/// marker key, then its n counter keys. A batch whose marker exists was applied before (a retry
/// after a lost reply) and is skipped. Replies the number of batches applied now.
pub const CHARGE: &str = r#"
local k, a, applied = 1, 2, 0
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  a = a + 1
  local fresh = redis.call('SET', KEYS[k], '1', 'NX', 'EX', ARGV[1])
  k = k + 1
  for i = 1, n do
    if fresh and ARGV[a] ~= '0' then
      redis.call('INCRBY', KEYS[k], ARGV[a])
      redis.call('EXPIRE', KEYS[k], ARGV[a + 1], 'NX')
    end
    k, a = k + 1, a + 2
  end
  if fresh then applied = applied + 1 end
end
return applied
"#;

/// Batch ids are remembered for a day: a retry later than that would apply twice.
const BATCH_MEMORY_S: u64 = 86_400;

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
pub fn check_args(counters: &[Counter]) -> (Vec<String>, Vec<String>) {
    let keys = counters.iter().map(|c| c.key.clone()).collect();
    let args = counters
        .iter()
        .flat_map(|c| {
            [c.capacity.to_string(), c.cost.to_string(), c.ttl_s.to_string(), u8::from(c.blocks()).to_string()]
        })
        .collect();
    (keys, args)
}

/// A check's reply: admitted, and each counter's use before this request.
pub fn read_check(reply: &RedisValue, counters: usize) -> Option<(bool, Vec<i64>)> {
    let items = reply.as_array()?;
    let (admitted, used) = items.split_first()?;
    let used: Vec<i64> = used.iter().map(RedisValue::as_i64).collect::<Option<_>>()?;
    (used.len() == counters).then_some((admitted.as_i64()? == 1, used))
}

/// `KEYS` and `ARGV` that apply `batches`.
pub fn charge_args(prefix: &str, batches: &[Batch]) -> (Vec<String>, Vec<String>) {
    let mut keys = Vec::new();
    let mut args = vec![BATCH_MEMORY_S.to_string()];
    for batch in batches {
        keys.push(format!("{prefix}:batch:{}", batch.id));
        args.push(batch.charges.len().to_string());
        for charge in &batch.charges {
            keys.push(charge.key.clone());
            args.push(charge.delta.to_string());
            args.push(charge.ttl_s.to_string());
        }
    }
    (keys, args)
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
        };
        let (keys, args) = charge_args("p", &[batch]);
        assert_eq!(keys, vec!["p:batch:vm-1", "k1", "k2"]);
        assert_eq!(args, vec!["86400", "2", "5", "60", "-2", "7"]);
    }
}
