"""Starting the server binary itself: both command-line spellings, and data
surviving a clean restart on the same database file."""

from __future__ import annotations

from datetime import datetime, timezone

import bitmapist
import pytest
from bitmapist import DayEvents, mark_event

from conftest import reset_bitmapist, start_server_under_test

NOW = datetime(2024, 3, 14, 15, 9, 26, tzinfo=timezone.utc)


def test_go_style_flags_start_the_server(tmp_path):
    """`-addr 127.0.0.1:PORT -db PATH`, as the Go bitmapist-server spells it."""
    srv = start_server_under_test(tmp_path, go_style=True, name="server-go-flags")
    try:
        cli = srv.client()
        assert cli.ping() is True
        assert cli.setbit("go", 9, 1) == 0
        assert cli.getbit("go", 9) == 1
        assert cli.get("go") == b"\x00\x40"
        cli.close()
    finally:
        srv.stop()
    assert not srv.alive()


def test_data_survives_restart(tmp_path):
    """SIGTERM, then a new process on the same --db file still has the events."""
    db = tmp_path / "persist.db"
    srv = start_server_under_test(tmp_path / "a", db_path=db, name="server-persist-1")
    try:
        bitmapist.setup_redis("default", srv.host, srv.port)
        for uid in (3, 5, 70_000):
            mark_event("active", uid, now=NOW)
        assert list(DayEvents("active", 2024, 3, 14)) == [3, 5, 70_000]
    finally:
        rc = srv.stop()
        reset_bitmapist()
    assert rc is not None
    srv2 = start_server_under_test(tmp_path / "b", db_path=db, name="server-persist-2")
    try:
        bitmapist.setup_redis("default", srv2.host, srv2.port)
        assert list(DayEvents("active", 2024, 3, 14)) == [3, 5, 70_000]
        assert srv2.client().get("trackist_active_2024-3-14") == srv2.client().get(
            "trackist_active_2024-3")
        assert sorted(bitmapist.get_event_names()) == ["active"]
    finally:
        srv2.stop()
        reset_bitmapist()
