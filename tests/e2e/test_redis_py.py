"""Plain redis-py against both servers: the protocol features bitmapist and its
users lean on (MULTI/EXEC pipelines, WATCH, SCAN cursors, GET of bitmaps,
CLIENT SETNAME/GETNAME)."""

from __future__ import annotations

import threading

import redis

EXPECTED_BYTES = bytes([0b10000001, 0, 0b00100000]) + b"\x00" * 9 + bytes([0b00000001])


def test_redis_py_version_is_known():
    major = int(redis.__version__.split(".")[0])
    assert major in (4, 5), redis.__version__


def test_transactional_pipeline_setbit(compare):
    def scenario(b):
        cli = b.client()
        with cli.pipeline(transaction=True) as pipe:
            pipe.setbit("p:bits", 0, 1)
            pipe.setbit("p:bits", 7, 1)
            pipe.setbit("p:bits", 7, 1)   # already set -> 1
            pipe.setbit("p:bits", 18, 1)
            pipe.setbit("p:bits", 103, 1)
            pipe.setbit("p:other", 5, 1)
            pipe.setbit("p:other", 5, 0)  # was set -> 1
            pipe.getbit("p:bits", 18)
            pipe.bitcount("p:bits")
            first = pipe.execute()
        with cli.pipeline(transaction=False) as pipe:
            for off in (1, 2, 3):
                pipe.setbit("p:plain", off, 1)
            pipe.get("p:plain")
            second = pipe.execute()
        return {
            "first": first,
            "second": second,
            "get": cli.get("p:bits"),
            "other": cli.get("p:other"),
            "getbits": [cli.getbit("p:bits", o) for o in (0, 1, 7, 18, 103, 104, 10**6)],
        }

    r = compare.run(scenario)
    assert r["first"] == [0, 0, 1, 0, 0, 0, 1, 1, 4]
    assert r["second"] == [0, 0, 0, b"\x70"]
    assert r["get"] == EXPECTED_BYTES
    assert r["other"] == b"\x00"
    assert r["getbits"] == [1, 0, 1, 1, 1, 0, 0]


def test_watch_check_and_set(compare):
    """redis-py's optimistic locking (`Redis.transaction`, WATCH/MULTI/EXEC):
    a change by another client between WATCH and EXEC makes the block run
    again, and concurrent check-and-set writers lose no update."""

    def scenario(b):
        cli = b.client()
        other = b.client()
        calls = []

        def take_next_bit(pipe):
            n = pipe.bitcount("cas:bits")
            if not calls:
                other.setbit("cas:bits", 1000, 1)  # the first try must fail
            calls.append(n)
            pipe.multi()
            pipe.setbit("cas:bits", n, 1)

        cli.transaction(take_next_bit, "cas:bits")
        forced = {"calls": calls, "bits": cli.bitcount("cas:bits")}

        workers, rounds = 4, 40
        errors = []

        def writer():
            own = b.client()
            try:
                for _ in range(rounds):
                    def step(pipe):
                        n = pipe.bitcount("cas:counter")
                        pipe.multi()
                        pipe.setbit("cas:counter", n, 1)

                    own.transaction(step, "cas:counter")
            except Exception as exc:  # reported below, in the main thread
                errors.append(repr(exc))

        threads = [threading.Thread(target=writer) for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        total = workers * rounds
        return {
            "forced": forced,
            "errors": errors,
            "count": cli.bitcount("cas:counter"),
            "contiguous": cli.bitpos("cas:counter", 0) == total,
        }

    r = compare.run(scenario)
    # The first try saw no bit and failed (bit 1000 was set in between);
    # the retry saw that one and set bit 1.
    assert r["forced"] == {"calls": [0, 1], "bits": 2}
    assert r["errors"] == []
    assert r["count"] == 160
    assert r["contiguous"] is True


def test_get_bitmap_byte_for_byte(compare):
    offsets = [0, 1, 2, 9, 63, 64, 65, 4095, 4096, 65535, 65536, 100_000, 1_000_003]

    def scenario(b):
        cli = b.client()
        pipe = cli.pipeline()
        for off in offsets:
            pipe.setbit("bm", off, 1)
        for off in range(200_000, 200_000 + 4096, 3):  # a dense run
            pipe.setbit("bm", off, 1)
        pipe.setbit("bm", 65, 0)
        pipe.execute()
        raw = cli.get("bm")
        return {"raw": raw, "missing": cli.get("no-such-key"), "count": cli.bitcount("bm")}

    r = compare.run(scenario)
    expected = bytearray(1_000_003 // 8 + 1)
    for off in [o for o in offsets if o != 65] + list(range(200_000, 200_000 + 4096, 3)):
        expected[off // 8] |= 0x80 >> (off % 8)
    assert r["raw"] == bytes(expected)
    assert r["missing"] is None
    assert r["count"] == len(offsets) - 1 + len(range(200_000, 200_000 + 4096, 3))


def test_scan_iter_collects_every_key(compare):
    def scenario(b):
        cli = b.client()
        pipe = cli.pipeline(transaction=False)
        for i in range(2000):
            pipe.setbit(f"scan:{i}", i % 50, 1)
        for i in range(300):
            pipe.setbit(f"other:{i}", 1, 1)
        pipe.execute()
        res = {}
        for count in (1, 10, 100, 10_000):
            seen = list(cli.scan_iter(match="scan:*", count=count))
            res[count] = (len(set(seen)), sorted(set(seen)))
        everything = list(cli.scan_iter(count=500))
        res["all"] = len(set(everything))
        res["q"] = sorted(set(cli.scan_iter(match="scan:1?9")))
        res["none"] = list(cli.scan_iter(match="zzz*"))
        return res

    r = compare.run(scenario)
    expected = sorted(f"scan:{i}".encode() for i in range(2000))
    for count in (1, 10, 100, 10_000):
        assert r[count] == (2000, expected)
    assert r["all"] == 2300
    assert r["q"] == [f"scan:1{d}9".encode() for d in range(10)]
    assert r["none"] == []


def test_client_setname_getname(backend):
    cli = backend.client()
    assert cli.client_getname() is None
    assert cli.client_setname("bitmapist-e2e") is True
    assert cli.client_getname() == "bitmapist-e2e" or cli.client_getname() == b"bitmapist-e2e"
    named = backend.client(client_name="on-connect")
    assert named.ping() is True
    got = named.client_getname()
    assert got in ("on-connect", b"on-connect")
    cli.close()
    named.close()


def test_decode_responses_client(backend):
    cli = backend.client(decode_responses=True)
    assert cli.setbit("d", 3, 1) == 0
    assert cli.keys("*") == ["d"]
    assert cli.get("d") == "\x10"
    assert cli.delete("d", "not-there") == 1
    assert cli.keys("*") == []
    cli.close()
