"""PIPELINE.* through redis-py, RESP2 and RESP3 (run by tests/redis_py.rs).

Usage: python3 pipelines.py PORT. Exits non-zero, with the reason, on the
first wrong reply. Every wait is bounded.
"""
import sys
import time

import redis

SQL = ("INSERT INTO big_trades SELECT symbol, price, volume, price * volume AS notional "
       "FROM trades WHERE volume > 10 AND symbol IN ('BTC','ETH')")


def wait_caught_up(r, name, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        info = as_dict(r.execute_command("PIPELINE.INFO", name))
        if info[b"state"] == b"failed":
            raise AssertionError(f"{name} failed: {info}")
        if info[b"lag_entries"] == 0:
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} not caught up: {info}")
        time.sleep(0.002)


def as_dict(reply):
    if isinstance(reply, dict):
        return reply
    return {reply[i]: reply[i + 1] for i in range(0, len(reply), 2)}


def check(port, protocol):
    r = redis.Redis(port=port, protocol=protocol, socket_timeout=10)
    r.flushall()
    r.xadd("trades", {"symbol": "BTC", "price": "2.5", "volume": "20"})
    r.xadd("trades", {"symbol": "SOL", "price": "3", "volume": "50"})
    assert r.execute_command("PIPELINE.CREATE", "big", "FROM", "0", "AS", SQL) in (b"OK", "OK", True)
    info = wait_caught_up(r, "big")
    assert info[b"entries_in"] == 2 and info[b"entries_out"] == 1, info
    rows = r.xrange("big_trades")
    assert [f for _, f in rows] == [{b"symbol": b"BTC", b"price": b"2.5", b"volume": b"20", b"notional": b"50"}], rows
    assert r.execute_command("PIPELINE.LIST") == [b"big"]
    plan = r.execute_command("PIPELINE.EXPLAIN", "big")
    assert b"Sink big_trades" in (plan if isinstance(plan, bytes) else str(plan).encode()), plan
    groups = r.xinfo_groups("trades")
    assert groups[0]["name"] == b"big" and groups[0]["lag"] == 0, groups
    for verb in ("PAUSE", "RESUME"):
        assert r.execute_command(f"PIPELINE.{verb}", "big") in (b"OK", "OK", True)
    assert r.execute_command("PIPELINE.RESET", "big", "FROM", "0") in (b"OK", "OK", True)
    wait_caught_up(r, "big")
    assert r.xlen("big_trades") == 2
    try:
        r.execute_command("PIPELINE.INFO", "nope")
        raise AssertionError("PIPELINE.INFO nope did not fail")
    except redis.ResponseError as e:
        assert str(e) == "no such pipeline 'nope'", e
    assert r.info("pipelines")["pipelines"] == 1
    assert r.execute_command("PIPELINE.DROP", "big") in (b"OK", "OK", True)
    assert r.execute_command("PIPELINE.LIST") == []
    r.close()


def main():
    port = int(sys.argv[1])
    for protocol in (2, 3):
        check(port, protocol)
    print("redis-py", redis.__version__, "ok")


if __name__ == "__main__":
    main()
