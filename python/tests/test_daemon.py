"""Threads sharing one Reader while the real daemon (``quiver sync --watch``) publishes the
commits of a writer: every read sees the table at some committed state, never a torn one."""

import datetime as dt
import os
import shutil
import subprocess
import threading
import time

import pyarrow as pa
from conftest import minute_bars, utc

BIN = os.environ.get("QUIVER_BIN") or shutil.which("quiver")
COMMITS = 40
PER_COMMIT = 50


def test_threads_read_while_the_daemon_publishes(db, tmp_path):
    assert BIN, "QUIVER_BIN must name the quiver binary (cargo test sets it)"
    log = open(tmp_path / "daemon.log", "w")
    daemon = subprocess.Popen(
        [BIN, "sync", "--watch"], env=db.env(), stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
    )
    try:
        reader = db.reader()
        done = threading.Event()
        seen: list[set[int]] = []
        failures: list[BaseException] = []

        def read_loop():
            counts = set()
            try:
                while not done.is_set():
                    try:
                        bars = reader.bars("AAA", "1m", start=utc(2024, 3, 1, 9, 30), warmup=20)
                    except Exception as e:  # before the first publication
                        if type(e).__name__ in ("EmptyCacheError", "UnknownSeriesError"):
                            continue
                        raise
                    t = pa.table(bars)
                    ts = t.column("ts").to_pylist()
                    assert ts == sorted(set(ts)), "rows out of order or duplicated"
                    assert bars.warmup == 20
                    # The 30 bars from 09:00 to 09:29 are warmup or skipped; the table only
                    # ever holds whole commits of PER_COMMIT bars.
                    everything = t.num_rows - bars.warmup + 30
                    assert everything % PER_COMMIT == 0, f"a torn state: {everything} bars"
                    counts.add(everything)
                    opens = t.column("open").to_pylist()
                    assert all(o.as_tuple().exponent >= -8 for o in opens)
            except BaseException as e:
                failures.append(e)
            seen.append(counts)

        threads = [threading.Thread(target=read_loop) for _ in range(4)]
        for t in threads:
            t.start()
        start = utc(2024, 3, 1, 9, 0)
        for i in range(COMMITS):
            batch = minute_bars("AAA", start + dt.timedelta(minutes=i * PER_COMMIT), PER_COMMIT, base=100 + i)
            db.store.insert(batch)
        deadline = time.monotonic() + 120
        final = None
        while time.monotonic() < deadline:
            try:
                final = reader.bars("AAA", "1m").num_rows
            except Exception:
                final = None
            if final == COMMITS * PER_COMMIT or daemon.poll() is not None:
                break
            time.sleep(0.05)
        done.set()
        for t in threads:
            t.join()
        assert daemon.poll() is None, "the daemon exited"
        assert not failures, failures
        assert final == COMMITS * PER_COMMIT
        assert all(seen), "a reader thread never saw a published version"
        # The readers saw the table grow, commit by commit, while they read.
        assert len(set().union(*seen)) > 1
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()
