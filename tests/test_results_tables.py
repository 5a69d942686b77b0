"""The course and performance pages show exactly the measured numbers of benchmarks/results/."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import results_tables  # noqa: E402


def test_generated_blocks_match_the_committed_results(capsys):
    assert results_tables.main(["check"]) == 0, capsys.readouterr().out


def test_check_fails_when_a_recorded_number_changes(tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    rec = {"date": "2026-12-02", "machine": "x86_64, 2 cores", "scale": "quick", "total_seconds": 12.0,
           "chapters": {"01_generative_models": {"seconds": 12.0}}}
    (results / "chapter_times_cpu.json").write_text(json.dumps(rec))
    page = tmp_path / "course.md"
    page.write_text("# Course\n<!-- begin generated: chapter-times -->\n<!-- end generated: chapter-times -->\n")
    monkeypatch.setattr(results_tables, "RESULTS", results)
    monkeypatch.setattr(results_tables, "PAGES", {"course": page})
    assert results_tables.main(["check"]) == 1          # the block is empty: out of date
    assert results_tables.main(["render"]) == 0
    assert "| Generative models and maximum likelihood | 12 | not measured yet |" in page.read_text()
    assert results_tables.main(["check"]) == 0
    rec["chapters"]["01_generative_models"]["seconds"] = 99.0   # a new measurement...
    (results / "chapter_times_cpu.json").write_text(json.dumps(rec))
    assert results_tables.main(["check"]) == 1          # ...makes the page stale
    assert page.read_text().startswith("# Course\n<!-- begin generated")  # text outside the markers is kept


def test_leaderboard_record_covers_every_registered_recipe():
    """``benchmarks/results/leaderboard_cpu.json`` ranks every kind of ``gencore.leaderboard.kinds()``
    (the built-in five and the recipes later chapters register), with three seeds each."""
    from gencore import leaderboard
    rec = json.loads((ROOT / "benchmarks" / "results" / "leaderboard_cpu.json").read_text())
    assert set(leaderboard.kinds()) <= set(rec["rows"]), \
        f"re-run benchmarks/leaderboard.py: missing {sorted(set(leaderboard.kinds()) - set(rec['rows']))}"
    for kind, row in rec["rows"].items():
        assert len(row["scores"]) == len(rec["seeds"]) >= 3, kind
    # the table separates real digits from an untrained generator (a check that could not fail would not)
    assert rec["floor"]["fid"] < 0.1 * min(s["fid"] for s in rec["rows"]["untrained DCGAN"]["scores"])
