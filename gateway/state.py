"""Redis key layout, pub/sub channels and the Lua scripts shared by the gateway and dispatcher.

Redis is a cache and a router, never the only copy of anything durable: everything here can be
rebuilt from Cassandra or is refreshed by heartbeats (see docs/protocol.md, "Data path").
"""

from __future__ import annotations

PREFIX = "im:"

# Pub/sub: deliveries and receipts for one gateway node; presence changes for all gateways.
PRESENCE_CHANNEL = PREFIX + "presence"

# A set that is complete (loaded from Cassandra, then kept up to date) holds this member.
COMPLETE = "*"


def node_channel(node_id: str) -> str:
    return f"{PREFIX}gw:{node_id}"


def dedup_key(user_id: str, client_msg_id: str) -> str:
    """Gateway dedup of client sends. Value: '<state>|<conversation>|<accepted_at_ms>'."""
    return f"{PREFIX}dd:{user_id}:{client_msg_id}"


def counter_key(conversation_id: str) -> str:
    """Hash {seq, bucket}: last assigned seq and the bucket in use (monotonic per conversation)."""
    return f"{PREFIX}cs:{{{conversation_id}}}"


def assigned_key(conversation_id: str, message_id: str) -> str:
    """'<seq>:<bucket>' once the dispatcher assigned a seq to this message (replay-safe)."""
    return f"{PREFIX}mid:{{{conversation_id}}}:{message_id}"


def recent_key(conversation_id: str) -> str:
    """List of the newest messages (client JSON), oldest first: the first-level sync cache."""
    return f"{PREFIX}rc:{{{conversation_id}}}"


def user_conversations_key(user_id: str) -> str:
    return f"{PREFIX}uc:{user_id}"


def route_key(user_id: str) -> str:
    """Sorted set: gateway node id -> expiry (epoch s). Refreshed by gateway heartbeats."""
    return f"{PREFIX}rt:{user_id}"


def members_key(group_id: str) -> str:
    return f"{PREFIX}gm:{group_id}"


def receipts_key(conversation_id: str) -> str:
    """Hash '<user>|<device>|<kind>' -> highest seq acknowledged."""
    return f"{PREFIX}rcpt:{{{conversation_id}}}"


# KEYS: counter, then one assigned key per message of that conversation (in Kafka order).
# ARGV: bucket_now, assigned_ttl_s. Returns one entry per message: '<seq>:<bucket>:<1 if new
# else 0>', or 'INIT' when the counter is gone (Redis lost its data): the dispatcher then
# reloads it from Cassandra and retries. One call per conversation per batch.
ASSIGN_SEQS = """
local out = {}
local has_counter = redis.call('EXISTS', KEYS[1]) == 1
local now_bucket = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local bucket = nil
for i = 2, #KEYS do
  local got = redis.call('GET', KEYS[i])
  if got then
    out[#out + 1] = got .. ':0'
  elseif not has_counter then
    out[#out + 1] = 'INIT'
  else
    local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
    if bucket == nil then
      bucket = tonumber(redis.call('HGET', KEYS[1], 'bucket') or '0')
      if now_bucket > bucket then
        bucket = now_bucket
        redis.call('HSET', KEYS[1], 'bucket', bucket)
      end
    end
    local value = seq .. ':' .. bucket
    redis.call('SET', KEYS[i], value, 'EX', ttl)
    out[#out + 1] = value .. ':1'
  end
end
return out
"""

# KEYS: receipts hash.  ARGV: field, seq.  Keeps the maximum; returns 1 when it moved forward.
MAX_RECEIPT = """
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local seq = tonumber(ARGV[2])
if seq > cur then
  redis.call('HSET', KEYS[1], ARGV[1], seq)
  return 1
end
return 0
"""
