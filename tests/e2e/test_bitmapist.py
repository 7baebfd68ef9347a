"""The real bitmapist library, unchanged, against redis-server and against the
server under test. Every scenario runs on both (`compare.run`), the results must
be identical, and each test also checks concrete expected values so that a
scenario doing nothing on both servers cannot pass.

Key names bitmapist uses (bitmapist 3.x):
  trackist_<event>_<Y>-<M>            month     (no zero padding: 2024-3)
  trackist_<event>_W<isoY>-<isoW>     week
  trackist_<event>_<Y>-<M>-<D>        day
  trackist_<event>_<Y>-<M>-<D>-<H>    hour
  trackist_<event>_u                  unique
  trackist_bitop_<OP>_<key1>-<key2>   bit operation result (OP: AND OR XOR NOT)
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import bitmapist
import bitmapist.cohort as cohort
import pytest
import redis
from bitmapist import (
    BitOpAnd,
    BitOpNot,
    BitOpOr,
    BitOpXor,
    DayEvents,
    HourEvents,
    MonthEvents,
    UniqueEvents,
    WeekEvents,
    YearEvents,
    delete_all_events,
    delete_runtime_bitop_keys,
    delete_temporary_bitop_keys,
    get_event_names,
    mark_event,
    mark_unique,
    unmark_event,
    unmark_unique,
)

from conftest import free_port

UTC = timezone.utc
NOW = datetime(2024, 3, 14, 15, 9, 26, tzinfo=UTC)  # Thursday, ISO 2024-W11
BIG_ID = 20_000_000
MAX_ID = 2**32 - 1  # the largest bit offset Redis accepts (512 MB string)


def keyspace(b, skip_larger_than: int = 1 << 20) -> dict[bytes, bytes | int]:
    """Every key with its GET value (only the length for very large values)."""
    cli = b.client()
    out: dict[bytes, bytes | int] = {}
    for key in sorted(cli.keys("*")):
        n = cli.bitcount(key)
        val = cli.get(key) if n < 100_000 else None
        if val is not None and len(val) <= skip_larger_than:
            out[key] = val
        else:
            out[key] = ("large", n)
    return out


def summarize(ev) -> dict:
    """What bitmapist can tell about one events object."""
    return {
        "key": ev.redis_key,
        "len": len(ev),
        "count": ev.get_count(),
        "ids": list(ev),
        "marked": ev.has_events_marked(),
    }


# --------------------------------------------------------------------------
# marking and the period classes


def test_mark_event_all_periods(compare):
    def scenario(b):
        bitmapist.TRACK_HOURLY = True
        for uid in (1, 7, 8, 100, 1000):
            mark_event("active", uid, now=NOW)
        mark_event("active", 5, now=NOW - timedelta(days=1))  # same week/month, other day
        mark_event("active", 9, now=NOW - timedelta(days=20))  # previous month, other week
        mark_event("song:play", 7, now=NOW)
        evs = {
            "month": MonthEvents("active", 2024, 3),
            "prev_month": MonthEvents("active", 2024, 2),
            "week": WeekEvents("active", 2024, 11),
            "day": DayEvents("active", 2024, 3, 14),
            "yesterday": DayEvents("active", 2024, 3, 13),
            "hour": HourEvents("active", 2024, 3, 14, 15),
            "other_hour": HourEvents("active", 2024, 3, 14, 16),
            "year": YearEvents("active", 2024),
            "from_date": DayEvents.from_date("song:play", NOW),
            "empty": MonthEvents("never", 2024, 3),
        }
        res = {name: summarize(ev) for name, ev in evs.items()}
        res["contains"] = {
            name: [uid in ev for uid in (0, 1, 5, 7, 9, 1000, 1001, 10**6)]
            for name, ev in evs.items()
        }
        res["next_prev"] = [
            summarize(MonthEvents("active", 2024, 2).next()),
            summarize(DayEvents("active", 2024, 3, 14).prev()),
            summarize(WeekEvents("active", 2024, 12).prev()),
        ]
        res["keyspace"] = keyspace(b)
        return res

    r = compare.run(scenario)
    assert r["month"]["ids"] == [1, 5, 7, 8, 100, 1000]
    assert r["month"]["len"] == r["month"]["count"] == 6
    assert r["month"]["key"] == "trackist_active_2024-3"
    assert r["prev_month"]["ids"] == [9]
    assert r["week"]["ids"] == [1, 5, 7, 8, 100, 1000]
    assert r["week"]["key"] == "trackist_active_W2024-11"
    assert r["day"]["ids"] == [1, 7, 8, 100, 1000]
    assert r["day"]["key"] == "trackist_active_2024-3-14"
    assert r["yesterday"]["ids"] == [5]
    assert r["hour"]["ids"] == [1, 7, 8, 100, 1000]
    assert r["hour"]["key"] == "trackist_active_2024-3-14-15"
    assert r["other_hour"] == {"key": "trackist_active_2024-3-14-16", "len": 0, "count": 0,
                               "ids": [], "marked": False}
    assert r["year"]["ids"] == [1, 5, 7, 8, 9, 100, 1000]
    assert r["from_date"]["ids"] == [7]
    assert r["empty"]["marked"] is False and r["empty"]["ids"] == []
    assert r["contains"]["month"] == [False, True, True, True, False, True, False, False]
    assert r["contains"]["prev_month"] == [False, False, False, False, True, False, False, False]
    assert r["next_prev"][0]["ids"] == r["month"]["ids"]
    assert r["next_prev"][1]["ids"] == [5]
    assert r["next_prev"][2]["ids"] == r["week"]["ids"]
    # 1000 -> byte 125: bitmaps are exactly as long as the highest set bit needs
    assert len(r["keyspace"][b"trackist_active_2024-3"]) == 126
    assert r["keyspace"][b"trackist_active_2024-3-14"][0] == 0b01000001  # ids 1 and 7


def test_track_hourly_off_by_default(compare):
    def scenario(b):
        mark_event("login", 3, now=NOW)
        mark_event("login", 4, now=NOW, track_hourly=True)
        hour = HourEvents("login", 2024, 3, 14, 15)
        return {"hour": list(hour), "day": list(DayEvents.from_date("login", NOW)),
                "keys": sorted(b.client().keys("*"))}

    r = compare.run(scenario)
    assert r["hour"] == [4]
    assert r["day"] == [3, 4]
    assert r["keys"] == [b"trackist_login_2024-3", b"trackist_login_2024-3-14",
                         b"trackist_login_2024-3-14-15", b"trackist_login_W2024-11"]


def test_unmark_event(compare):
    def scenario(b):
        bitmapist.TRACK_HOURLY = True
        for uid in (2, 3, 4):
            mark_event("active", uid, now=NOW)
        unmark_event("active", 3, now=NOW)
        # unmarking on a day with no data creates an all-zero key (SETBIT ... 0)
        unmark_event("active", 100, now=NOW + timedelta(days=1))
        unmark_event("ghost", 17, now=NOW, use_pipeline=False)
        day = DayEvents("active", 2024, 3, 14)
        tomorrow = DayEvents("active", 2024, 3, 15)
        return {
            "day": summarize(day),
            "hour": list(HourEvents("active", 2024, 3, 14, 15)),
            "month": list(MonthEvents("active", 2024, 3)),
            "3_in_day": 3 in day,
            "tomorrow": summarize(tomorrow),
            "names": sorted(get_event_names()),
            "keyspace": keyspace(b),
        }

    r = compare.run(scenario)
    assert r["day"]["ids"] == [2, 4] and r["day"]["count"] == 2
    assert r["hour"] == [2, 4]
    assert r["month"] == [2, 4]
    assert r["3_in_day"] is False
    assert r["tomorrow"]["marked"] is False and r["tomorrow"]["ids"] == []
    # the zero-filled key exists and is 13 bytes long (bit 100 -> byte 12)
    assert r["keyspace"][b"trackist_active_2024-3-15"] == b"\x00" * 13
    assert r["keyspace"][b"trackist_ghost_2024-3-14"] == b"\x00" * 3
    assert r["names"] == ["active", "ghost"]


def test_pipeline_and_client_as_system(compare):
    """`system` may be a Redis client; use_pipeline=False with a caller-managed
    pipeline (bitmapist then never calls execute itself)."""
    def scenario(b):
        cli = b.client()
        mark_event("visit", 11, system=cli, now=NOW)
        pipe = cli.pipeline()
        for uid in (12, 13):
            mark_event("visit", uid, system=pipe, now=NOW, use_pipeline=False)
        before = list(DayEvents("visit", 2024, 3, 14))
        executed = pipe.execute()
        after = list(DayEvents("visit", 2024, 3, 14))
        return {"before": before, "executed": executed, "after": after}

    r = compare.run(scenario)
    assert r["before"] == [11]
    assert r["executed"] == [0, 0, 0, 0, 0, 0]
    assert r["after"] == [11, 12, 13]


def test_unique_events(compare):
    def scenario(b):
        for uid in (42, 43, 44):
            mark_unique("premium", uid)
        unmark_unique("premium", 43)
        mark_event("paid", 50, now=NOW, track_unique=True)
        bitmapist.TRACK_UNIQUE = True
        mark_event("paid", 51, now=NOW)
        prem = UniqueEvents("premium")
        paid = UniqueEvents.from_date("paid", NOW)
        return {
            "premium": summarize(prem),
            "paid": summarize(paid),
            "paid_month": list(MonthEvents("paid", 2024, 3)),
            "contains": [42 in prem, 43 in prem, 44 in prem, 50 in paid],
            "next_is_self": prem.next() == prem and prem.prev() == prem,
            "and": list(BitOpAnd(prem, MonthEvents("active", 2024, 3))),
            "or": list(prem | paid),
            "keyspace": keyspace(b),
        }

    r = compare.run(scenario)
    assert r["premium"]["key"] == "trackist_premium_u"
    assert r["premium"]["ids"] == [42, 44] and r["premium"]["count"] == 2
    assert r["paid"]["ids"] == [50, 51]
    assert r["paid_month"] == [50, 51]
    assert r["contains"] == [True, False, True, True]
    assert r["next_is_self"] is True
    assert r["and"] == []
    assert r["or"] == [42, 44, 50, 51]


# --------------------------------------------------------------------------
# bit operations


def test_nested_bit_operations(compare):
    def scenario(b):
        feb = datetime(2024, 2, 10, 9, tzinfo=UTC)
        mar = NOW
        for uid in (1, 2, 3, 10):
            mark_event("active", uid, now=feb)
        for uid in (2, 3, 4, 30):
            mark_event("active", uid, now=mar)
        for uid in (3, 4, 5):
            mark_event("song:play", uid, now=mar)

        m_feb = MonthEvents("active", 2024, 2)
        m_mar = MonthEvents("active", 2024, 3)
        play = MonthEvents("song:play", 2024, 3)
        missing = MonthEvents("active", 2023, 1)

        ops = {
            "and": BitOpAnd(m_feb, m_mar),
            "or": BitOpOr(m_feb, m_mar),
            "xor": BitOpXor(m_feb, m_mar),
            "not_feb": BitOpNot(m_feb),
            "not_or": BitOpNot(BitOpOr(m_feb, m_mar)),
            "and_or": BitOpAnd(BitOpOr(m_feb, m_mar), play),
            "three_way_or": BitOpOr(m_feb, m_mar, play),
            "nested3": BitOpXor(BitOpAnd(m_feb, m_mar), BitOpOr(play, BitOpNot(m_mar))),
            "operators": (m_feb & m_mar) | (play ^ m_feb),
            "invert": ~(m_feb | play),
            "and_missing": BitOpAnd(m_feb, missing),
            "or_missing": BitOpOr(missing, m_mar),
            "not_missing": BitOpNot(missing),
            "explicit_system": BitOpAnd("default", m_feb, m_mar),
        }
        res = {name: summarize(op) for name, op in ops.items()}
        res["contains"] = {name: [u in op for u in (1, 2, 3, 4, 5, 10, 30, 31, 1000)]
                           for name, op in ops.items()}
        # bytes as bitmapist's iteration sees them (GET), and key existence (GET != nil)
        cli = b.client()
        res["raw"] = {name: cli.get(op.redis_key) for name, op in ops.items()}
        res["exists"] = {name: cli.get(op.redis_key) is not None for name, op in ops.items()}
        res["keyspace"] = keyspace(b)
        return res

    r = compare.run(scenario)
    assert r["and"]["ids"] == [2, 3]
    assert r["or"]["ids"] == [1, 2, 3, 4, 10, 30]
    assert r["xor"]["ids"] == [1, 4, 10, 30]
    # NOT flips every bit of the (byte-padded) source: Feb is 2 bytes long
    assert r["not_feb"]["ids"] == [b for b in range(16) if b not in (1, 2, 3, 10)]
    # OR is as long as the longer source (4 bytes, bit 30)
    assert r["not_or"]["ids"] == [b for b in range(32) if b not in (1, 2, 3, 4, 10, 30)]
    assert r["and_or"]["ids"] == [3, 4]
    assert r["three_way_or"]["ids"] == [1, 2, 3, 4, 5, 10, 30]
    assert r["nested3"]["ids"] == sorted(
        ({3, 4, 5} | (set(range(32)) - {2, 3, 4, 30})) ^ {2, 3}
    )
    assert r["operators"]["ids"] == [1, 2, 3, 4, 5, 10]
    assert r["invert"]["ids"] == [b for b in range(16) if b not in (1, 2, 3, 4, 5, 10)]
    # AND with a missing key: all-zero result as long as the longest source
    assert r["and_missing"]["ids"] == [] and r["raw"]["and_missing"] == b"\x00\x00"
    assert r["or_missing"]["ids"] == [2, 3, 4, 30]
    # NOT of a missing key: empty result, the key is not created
    assert r["not_missing"]["marked"] is False and r["exists"]["not_missing"] is False
    assert r["not_missing"]["ids"] == []
    assert r["explicit_system"]["key"] == r["and"]["key"]
    assert r["and"]["key"] == "trackist_bitop_AND_trackist_active_2024-2-trackist_active_2024-3"
    assert r["not_or"]["key"] == (
        "trackist_bitop_NOT_trackist_bitop_OR_trackist_active_2024-2-trackist_active_2024-3"
    )


def test_bitop_result_overwritten_when_sources_change(compare):
    """The same BitOp recomputes into the same key; an all-missing OR deletes it."""
    def scenario(b):
        mark_event("a", 1, now=NOW)
        mark_event("b", 1, now=NOW)
        first = list(BitOpAnd(DayEvents("a", 2024, 3, 14), DayEvents("b", 2024, 3, 14)))
        unmark_event("b", 1, now=NOW)
        mark_event("b", 200, now=NOW)
        second = summarize(BitOpAnd(DayEvents("a", 2024, 3, 14), DayEvents("b", 2024, 3, 14)))
        or_key = BitOpOr(DayEvents("x", 2024, 1, 1), DayEvents("y", 2024, 1, 1)).redis_key
        return {"first": first, "second": second, "or_missing_exists": b.client().get(or_key) is not None,
                "keyspace": keyspace(b)}

    r = compare.run(scenario)
    assert r["first"] == [1]
    assert r["second"]["ids"] == [] and r["second"]["marked"] is False
    assert r["or_missing_exists"] is False
    # AND result is as long as the longer source (bit 200 -> 26 bytes), all zero
    assert r["keyspace"][r["second"]["key"].encode()] == b"\x00" * 26


# --------------------------------------------------------------------------
# large ids, errors, named systems


def test_large_user_ids(compare):
    """20,000,000 and 2^32-1 (the largest offset Redis takes: a 512 MB string
    on redis-server, so this scenario keeps the number of such keys small)."""
    def scenario(b):
        mark_event("big", BIG_ID, now=NOW)
        mark_event("big", MAX_ID, now=NOW)
        mark_event("big", 0, now=NOW)
        mark_unique("bigu", BIG_ID)
        day = DayEvents("big", 2024, 3, 14)
        month = MonthEvents("big", 2024, 3)
        res = {
            "day_count": len(day),
            "contains": [u in day for u in (0, 1, BIG_ID - 1, BIG_ID, BIG_ID + 1, MAX_ID - 1, MAX_ID)],
            "month_contains": [u in month for u in (0, BIG_ID, MAX_ID)],
            "unique": [BIG_ID in UniqueEvents("bigu"), len(UniqueEvents("bigu"))],
        }
        both = BitOpAnd(day, month)
        res["and_count"] = len(both)
        res["and_contains"] = [BIG_ID in both, MAX_ID in both, MAX_ID - 1 in both]
        # iterate ids of a 2.5 MB bitmap (GET + bitmapist's byte loop)
        mark_event("mid", BIG_ID, now=NOW)
        mark_event("mid", BIG_ID - 7, now=NOW)
        res["mid_ids"] = list(DayEvents("mid", 2024, 3, 14))
        res["mid_xor_unique"] = list(DayEvents("mid", 2024, 3, 14) ^ UniqueEvents("bigu"))
        res["mid_raw_len"] = len(b.client().get("trackist_mid_2024-3-14"))
        res["names"] = sorted(get_event_names())
        # free the 512 MB strings on redis-server straight away
        delete_all_events()
        res["after_delete"] = b.client().keys("*")
        return res

    r = compare.run(scenario)
    assert r["day_count"] == 3
    assert r["contains"] == [True, False, False, True, False, False, True]
    assert r["month_contains"] == [True, True, True]
    assert r["unique"] == [True, 1]
    assert r["and_count"] == 3 and r["and_contains"] == [True, True, False]
    assert r["mid_ids"] == [BIG_ID - 7, BIG_ID]
    assert r["mid_xor_unique"] == [BIG_ID - 7]
    assert r["mid_raw_len"] == BIG_ID // 8 + 1
    assert r["names"] == ["big", "bigu", "mid"]
    # delete_all_events removes bit-operation results too (KEYS trackist_*)
    assert r["after_delete"] == []


def test_id_out_of_range_is_an_error(compare):
    def scenario(b):
        errors = []
        for call in (
            lambda: mark_event("oops", 2**32, now=NOW),
            lambda: mark_event("oops", -1, now=NOW, use_pipeline=False),
            lambda: mark_unique("oops", 2**32),
        ):
            try:
                call()
                errors.append(None)
            except redis.exceptions.ResponseError as exc:
                errors.append(type(exc).__name__)
        try:
            errors.append(2**32 in DayEvents("oops", 2024, 3, 14))
        except redis.exceptions.ResponseError as exc:
            errors.append(type(exc).__name__)
        return {"errors": errors, "keys": b.client().keys("*")}

    r = compare.run(scenario)
    assert r["errors"] == ["ResponseError"] * 4
    assert r["keys"] == []


def test_named_system(compare):
    """Everything through system='stats'; 'default' points at a closed port so
    any call that ignores the system argument fails."""
    def scenario(b):
        b.setup_system("stats")
        bitmapist.setup_redis("default", "127.0.0.1", free_port(), socket_timeout=2)
        for uid in (1, 2, 3):
            mark_event("active", uid, system="stats", now=NOW)
        mark_event("active", 9, system="stats", now=NOW - timedelta(days=31))
        mark_unique("vip", 2, system="stats")
        m = MonthEvents("active", 2024, 3, system="stats")
        feb = MonthEvents("active", 2024, 2, system="stats")
        y = YearEvents("active", 2024, system="stats")
        vip = UniqueEvents("vip", system="stats")
        op = BitOpAnd("stats", m, vip)
        nested = BitOpNot("stats", BitOpOr("stats", m, feb))
        res = {
            "month": summarize(m),
            "year": summarize(y),
            "and": summarize(op),
            "not_or": list(nested),
            "names": sorted(get_event_names(system="stats")),
            "names_prefixed": sorted(get_event_names(system="stats", prefix="vi", batch=1)),
        }
        delete_temporary_bitop_keys(system="stats")
        res["after_bitop_delete"] = sorted(b.client().keys("*"))
        delete_all_events(system="stats")
        res["after_delete"] = b.client().keys("*")
        try:
            len(MonthEvents("active", 2024, 3))  # default system: must not reach a server
            res["default_unreachable"] = False
        except redis.exceptions.ConnectionError:
            res["default_unreachable"] = True
        return res

    r = compare.run(scenario)
    assert r["month"]["ids"] == [1, 2, 3]
    assert r["year"]["ids"] == [1, 2, 3, 9]
    assert r["and"]["ids"] == [2]
    assert r["not_or"] == [b for b in range(16) if b not in (1, 2, 3, 9)]  # 2 bytes
    assert r["names"] == ["active", "vip"]
    assert r["names_prefixed"] == ["vip"]
    assert r["after_bitop_delete"] == sorted([
        b"trackist_active_2024-2", b"trackist_active_2024-2-12", b"trackist_active_W2024-7",
        b"trackist_active_2024-3", b"trackist_active_2024-3-14", b"trackist_active_W2024-11",
        b"trackist_vip_u",
    ])
    assert r["after_delete"] == []
    assert r["default_unreachable"] is True


# --------------------------------------------------------------------------
# listing and deleting


def test_get_event_names(compare):
    def scenario(b):
        names = ["active", "song:play", "song:add", "user_signed_up", "a*b", "x"]
        names += [f"ev{i:03d}" for i in range(150)]
        pipe = b.client().pipeline()
        for i, name in enumerate(names):
            mark_event(name, i, system=pipe, now=NOW, use_pipeline=False)
        pipe.execute()
        mark_unique("flag", 1)
        BitOpAnd(MonthEvents("active", 2024, 3), MonthEvents("x", 2024, 3))
        b.client().setbit("unrelated", 1, 1)
        return {
            "all": sorted(get_event_names()),
            "batch1": sorted(get_event_names(batch=1)),
            "batch7": sorted(get_event_names(batch=7)),
            "song": sorted(get_event_names(prefix="song")),
            "song_colon": sorted(get_event_names(prefix="song:p", batch=2)),
            "ev01": sorted(get_event_names(prefix="ev01")),
            "star": sorted(get_event_names(prefix="a*")),
            "none": get_event_names(prefix="nope"),
        }

    r = compare.run(scenario)
    assert len(r["all"]) == 157
    assert "user_signed_up" in r["all"] and "flag" in r["all"] and "a*b" in r["all"]
    assert not any(n.startswith("bitop") for n in r["all"])
    assert r["batch1"] == r["all"] and r["batch7"] == r["all"]
    assert r["song"] == ["song:add", "song:play"]
    assert r["song_colon"] == ["song:play"]
    assert r["ev01"] == [f"ev01{i}" for i in range(10)]
    # the prefix is a glob: "a*" matches "active" and "a*b"
    assert r["star"] == ["a*b", "active"]
    assert r["none"] == []


def test_delete_all_and_temporary_keys(compare):
    def scenario(b):
        cli = b.client()
        for uid in (1, 2):
            mark_event("active", uid, now=NOW)
            mark_event("buy", uid + 1, now=NOW)
        cli.setbit("not_trackist", 3, 1)
        cli.setbit("trackist", 9, 1)
        a = BitOpOr(DayEvents("active", 2024, 3, 14), DayEvents("buy", 2024, 3, 14))
        BitOpNot(a)
        res = {"before": sorted(cli.keys("*"))}
        delete_temporary_bitop_keys()
        res["after_temporary"] = sorted(cli.keys("*"))
        res["day_still"] = list(DayEvents("active", 2024, 3, 14))
        c = BitOpAnd(DayEvents("active", 2024, 3, 14), DayEvents("buy", 2024, 3, 14))
        res["runtime_and"] = list(c)
        delete_runtime_bitop_keys()
        res["after_runtime"] = sorted(cli.keys("*"))
        delete_all_events()
        res["after_all"] = sorted(cli.keys("*"))
        delete_all_events()  # nothing left: must not send an empty DEL
        res["day_after"] = summarize(DayEvents("active", 2024, 3, 14))
        res["other_kept"] = [cli.getbit("not_trackist", 3), cli.get("trackist")]
        return res

    r = compare.run(scenario)
    events = [b"trackist_active_2024-3", b"trackist_active_2024-3-14", b"trackist_active_W2024-11",
              b"trackist_buy_2024-3", b"trackist_buy_2024-3-14", b"trackist_buy_W2024-11"]
    assert len(r["before"]) == 2 + len(events) + 2
    assert r["after_temporary"] == sorted([b"not_trackist", b"trackist"] + events)
    assert r["day_still"] == [1, 2]
    assert r["runtime_and"] == [2]
    assert r["after_runtime"] == r["after_temporary"]
    assert r["after_all"] == [b"not_trackist", b"trackist"]
    assert r["day_after"]["ids"] == [] and r["day_after"]["marked"] is False
    assert r["other_kept"] == [1, b"\x00\x40"]


# --------------------------------------------------------------------------
# cohorts


def _cohort_data():
    """Deterministic activity over six weeks of 2024: user u is active on days
    on days picked by small modular rules, signs up on day u % 10, buys on
    some days; even users are in country:US."""
    start = datetime(2024, 2, 19, 10, tzinfo=UTC)  # Monday
    pipe_marks = []
    for day in range(42):
        now = start + timedelta(days=day)
        for uid in range(1, 61):
            if (uid + day) % 3 == 0 or (uid * day) % 7 == 1:
                pipe_marks.append(("active", uid, now))
            if day == uid % 10:
                pipe_marks.append(("signup", uid, now))
            if (uid + day) % 11 == 0:
                pipe_marks.append(("buy", uid, now))
            if uid % 2 == 0:
                pipe_marks.append(("country:US", uid, now))
    return pipe_marks


def test_cohort_get_dates_data(compare):
    marks = _cohort_data()

    def scenario(b):
        pipe = b.client().pipeline()
        for name, uid, now in marks:
            mark_event(name, uid, system=pipe, now=now, use_pipeline=False)
        pipe.execute()
        for uid in range(1, 61, 4):
            mark_unique("premium", uid)
        res = {}
        res["days"] = cohort.get_dates_data(
            "signup", "active", time_group="days", num_results=7, num_of_rows=5,
            start_date="2024-02-19")
        res["days_counts"] = cohort.get_dates_data(
            "signup", "buy", time_group="days", as_percent=False, num_results=5,
            num_of_rows=4, start_date="2024-02-20")
        res["days_b"] = cohort.get_dates_data(
            "active", "buy", select1b="country:US", select2b="active",
            time_group="days", num_results=4, num_of_rows=3, start_date="2024-02-21")
        res["weeks"] = cohort.get_dates_data(
            "active", "buy", time_group="weeks", num_results=4, num_of_rows=3,
            start_date="2024-03-11")  # rows start 3 weeks before 03-14: 02-22
        res["months"] = cohort.get_dates_data(
            "active", "active", time_group="months", num_results=2, num_of_rows=2,
            start_date="2024-03-01", as_percent=False)  # rows: Feb, Mar
        res["years"] = cohort.get_dates_data(
            "signup", "active", time_group="years", num_of_rows=1, start_date="2024-01-01")

        cohort.set_custom_handler(
            "active_premium", lambda key, cls, args: cls("active", *args) & UniqueEvents("premium"))
        res["custom"] = cohort.get_dates_data(
            "active_premium", "buy", time_group="weeks", num_results=3, num_of_rows=2,
            start_date="2024-03-11")  # rows: weeks of 02-28, 03-06, 03-13
        res["html_len"] = len(cohort.render_html_data(res["days"], time_group="days",
                                                      num_results=7, num_of_rows=5))
        res["leftover_bitop_keys"] = b.client().keys("trackist_bitop_*")
        return res

    r = compare.run(scenario)
    days = r["days"]
    assert len(days) == 7 and all(len(row) == 2 + 6 for row in days)
    assert days[0][0] == datetime(2024, 2, 19, tzinfo=UTC)
    assert [row[1] for row in days] == [6, 6, 6, 6, 6, 6, 6]  # signups per day (u % 10)
    assert any(isinstance(v, float) and 0 < v <= 100 for row in days for v in row[2:])
    # as_percent=False: counts, but an empty intersection is still the float 0.0
    counts = [v for row in r["days_counts"] for v in row[2:] if v != ""]
    assert counts and all(isinstance(v, int) or v == 0.0 for v in counts)
    assert any(isinstance(v, int) and v > 0 for v in counts)
    assert len(r["weeks"]) == 4 and r["weeks"][0][0] == datetime(2024, 2, 22, tzinfo=UTC)
    assert all(row[1] > 0 for row in r["weeks"])
    assert len(r["months"]) == 2 and r["months"][0][0] == datetime(2024, 2, 1, tzinfo=UTC)
    assert r["months"][0][1] == r["months"][0][2] > 0  # active vs active, same month
    assert len(r["years"]) == 3 and r["years"][2][1] == 60
    assert all(0 < row[1] <= 15 for row in r["custom"])  # 15 premium users
    assert all(row[1] > 0 for row in r["days_b"])
    assert any(isinstance(v, float) and v > 0 for row in r["days_b"] for v in row[2:])
    assert r["html_len"] > 1000
    assert r["leftover_bitop_keys"] == []


def test_cohort_empty_database(compare):
    def scenario(b):
        return cohort.get_dates_data("active", "active", time_group="days",
                                     num_results=3, num_of_rows=2, start_date="2024-03-01")

    r = compare.run(scenario)
    assert [row[1:] for row in r] == [[0, "", "", ""]] * 3


# --------------------------------------------------------------------------
# one backend at a time


def test_has_events_marked_per_backend(backend):
    """Parametrized form: the same checks on each server on its own."""
    assert not DayEvents("active", 2024, 3, 14).has_events_marked()
    mark_event("active", 123, now=NOW)
    assert DayEvents("active", 2024, 3, 14).has_events_marked()
    assert 123 in WeekEvents("active", 2024, 11)
    assert list(MonthEvents("active", 2024, 3)) == [123]
    assert sorted(get_event_names()) == ["active"]
    delete_all_events()
    assert backend.client().keys("*") == []
