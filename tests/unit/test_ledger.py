import json
import threading

from marlmesh import ledger


def test_ledger_records_every_write_and_retires_per_incarnation(tmp_path):
    stats = tmp_path / "stats" / "train-agent-0.json"
    counts = {"fragments_created": 0}
    book = ledger.FragmentLedger(stats, lambda: dict(counts))
    for incarnation in range(3):
        counts["fragments_created"] = 10 + incarnation
        book.write()
        assert json.loads(ledger.ledger_path(stats).read_text()) == {"fragments_created": 10 + incarnation}
        assert ledger.retire(stats, incarnation) == ledger.retired_path(stats, incarnation)
    assert ledger.retire(stats, 3) is None  # the last incarnation wrote nothing since
    # numeric order, and never matched by the stats files' own pattern
    assert [r["fragments_created"] for r in ledger.retired_ledgers(stats)] == [10, 11, 12]
    assert list((tmp_path / "stats").glob("train-*.json")) == []


def test_ledger_writes_from_many_threads_stay_whole(tmp_path):
    stats = tmp_path / "s.json"
    lock = threading.Lock()
    state = {"n": 0}

    def read():
        with lock:
            return {"n": state["n"]}

    book = ledger.FragmentLedger(stats, read)

    def work():
        for _ in range(50):
            with lock:
                state["n"] += 1
            book.write()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    book.write()
    assert json.loads(ledger.ledger_path(stats).read_text()) == {"n": 200}


def test_ledger_without_stats_file_writes_nothing(tmp_path):
    ledger.FragmentLedger(None, lambda: {"x": 1}).write()
    assert list(tmp_path.iterdir()) == []
