"""The report's files, from a real (torch-free) benchmark result with known answers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from benchmark_data import known_answer_results

from voicetune.voice import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp("report")
    names = report.write_report(folder, known_answer_results())
    return folder, names


def test_every_report_file_is_written(written: tuple[Path, list[str]]) -> None:
    folder, names = written
    plots = set(report.PLOTS) - {report.PLOT_FILE_STRENGTH}  # no strength sweep in these results
    expected = {"report.md", "report.html", "results.json", "samples.md", *plots}
    assert set(names) == expected
    assert {p.name for p in folder.iterdir()} == expected
    for name in plots:
        data = (folder / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000, name


def test_results_json_round_trips_and_has_no_nan(written: tuple[Path, list[str]]) -> None:
    folder, _ = written
    text = (folder / "results.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON for any reader
    data = json.loads(text)
    assert data["schema_version"] == 2
    assert data["baseline"] == "base" and data["reference"] == "author (held-out)"
    for entry in data["measures"].values():
        assert entry["direction"] in ("lower", "higher", "closer")
        for value in entry["values"].values():
            assert set(value) == {"value", "ci_low", "ci_high", "n"}


def test_results_schema_documents_every_key(written: tuple[Path, list[str]], repo_root: Path) -> None:
    folder, _ = written
    data = json.loads((folder / "results.json").read_text())
    doc = (repo_root / "docs" / "results_schema.md").read_text()
    documented = set(re.findall(r"`([a-z_0-9]+)`", doc))
    missing = [key for key in data if key not in documented]
    missing += [key for key in data["measures"] if key not in documented]
    missing += [key for key in data["comparisons"][0] if key not in documented]
    missing += [key for key in data["summary"]["tuned"] if key not in documented]
    missing += [key for key in data["voice_scale"] if key not in documented]
    missing += [key for key in data["voice_scale"]["measures"] if key not in documented]
    missing += [key for key in data["measures"]["style_distance"] if key not in documented]
    missing += [key for key in data["measures"]["style_distance"]["discrimination"] if key not in documented]
    assert not missing, f"docs/results_schema.md does not mention: {missing}"


def test_markdown_opens_with_the_voice_score(written: tuple[Path, list[str]]) -> None:
    folder, _ = written
    lines = (folder / "report.md").read_text().splitlines()
    assert lines[0] == "# Voice benchmark: known-answers"
    headline = lines[2]
    assert headline.startswith("**How much does it sound like you? tuned: ")
    assert re.search(r"tuned: -?\d\.\d\d \[-?\d\.\d\d, -?\d\.\d\d\]", headline), headline
    assert "0 is other writers' real text and 1 is your own held-out writing" in headline
    assert "words" in headline  # how much each system wrote
    assert lines[4].startswith("![") and "(voice_score.png)" in lines[4]


def test_markdown_states_the_verdicts_with_intervals_and_the_ceiling(written: tuple[Path, list[str]]) -> None:
    folder, _ = written
    md = (folder / "report.md").read_text()
    assert md.startswith("# Voice benchmark: known-answers")
    assert "tuned beats base?" in md and "copycat beats base?" in md
    row = next(line for line in md.splitlines() if line.startswith("| Style distance"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "yes"  # it tells the author from the other writers at this length
    assert re.fullmatch(r"[\d.]+ \[[\d.]+, [\d.]+\]", cells[3]), cells  # value [low, high]
    assert cells[-3] == "yes"  # tuned beats base on the style distance
    assert "author (held-out)" in md and "ceiling" in md
    assert "Copying: copycat" in md and "more than the author's own new writing" in md
    for name in set(report.PLOTS) - {report.PLOT_FILE_STRENGTH}:  # no sweep in these results
        assert f"]({name})" in md


def test_html_embeds_the_plots_and_needs_no_javascript(written: tuple[Path, list[str]]) -> None:
    folder, _ = written
    page = (folder / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(report.PLOTS) - 1  # no strength sweep here
    assert "<script" not in page.lower()
    assert '<td class="yes">yes</td>' in page
    assert page.count('<table class="samples">') == 3 + len(known_answer_results()["samples"])
    assert page.index('id="headline"') < page.index('id="voice-scale"') < page.index("Every measure")


def test_samples_are_side_by_side(written: tuple[Path, list[str]]) -> None:
    folder, _ = written
    samples = (folder / "samples.md").read_text()
    results = known_answer_results()
    assert samples.count("## Prompt ") == len(results["samples"])
    assert "| you (held-out) | base | tuned | copycat | another writer |" in samples
    first = results["samples"][0]["continuations"]["tuned"]
    assert " ".join(first.split())[:60] in samples


def test_report_page_in_a_real_browser(written: tuple[Path, list[str]]) -> None:
    """Headless Chromium opens report.html: every plot image decoded, and the headline (a number with
    its interval) is visible on the first screen."""
    from browser import headless_browser

    folder, _ = written
    with headless_browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto((folder / "report.html").as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate(
            "Array.from(document.images).map(i => ({ok: i.complete, w: i.naturalWidth, alt: i.alt}))"
        )
        assert len(images) == len(report.PLOTS) - 1  # no strength sweep here
        assert all(img["ok"] and img["w"] > 0 for img in images), images
        headline = page.locator("#headline")
        assert headline.is_visible()
        box = headline.bounding_box()
        assert box is not None and box["y"] + box["height"] < 900
        assert re.search(r"\d\.\d\d \[-?\d\.\d\d, -?\d\.\d\d\]", headline.inner_text())
        scale = page.locator("#voice-scale img").bounding_box()
        assert scale is not None and scale["y"] < 900  # the picture starts on the first screen
        page.close()


def test_formatting_helpers() -> None:
    half = {"value": 0.5, "ci_low": 0.25, "ci_high": 0.75}
    assert report.fmt_estimate(half, percent=True) == "50% [25%, 75%]"
    assert report.fmt_estimate({"value": 12.345, "ci_low": None, "ci_high": None}) == "12.35"
    assert report.fmt_estimate(None) == "n/a"
    assert report.md_table(["a|b"], [["x\ny"]]) == "| a\\|b |\n|---|\n| x y |"


def test_style_strength_section_shows_the_sweep_or_how_to_ask(
    written: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """Issue 20's dial in the report: without a sweep, one line on how to run it; with one, a row a
    scale (the adapter as trained marked) and the plot, embedded in the HTML page."""
    folder, _ = written
    assert "## Style strength" not in (folder / "report.md").read_text()  # three models, no sweep
    line = report.strength_intro({"strength_sweep": None})
    assert "Not swept on this run" in line and "--strengths 0.5,1.5" in line

    results = known_answer_results()
    results["strength_sweep"] = {
        "fine_tuned_scale": 1.0,
        "author_voice_score": 1.02,
        "points": [
            {
                "scale": s,
                "voice_score": {"value": v, "ci_low": v - 0.1, "ci_high": v + 0.1, "n": 32},
                "perplexity": ppl,
                "copying": {"ngram_share": 0.001 * s},
            }
            for s, v, ppl in ((1.0, 0.61, 30.5), (1.5, 0.83, 33.25))
        ],
    }
    names = report.write_report(tmp_path, results)
    assert report.PLOT_FILE_STRENGTH in names
    md = (tmp_path / "report.md").read_text()
    assert "| x1 (as trained, the fine-tuned model) | 0.61 [0.51, 0.71] | 30.50 | 0.10% |" in md
    assert "| x1.5 | 0.83 [0.73, 0.93] | 33.25 | 0.15% |" in md
    assert "your held-out writing scores 1.02" in md and "Not swept" not in md
    assert f"]({report.PLOT_FILE_STRENGTH})" in md
    assert md.count(report.PLOT_FILE_STRENGTH) == 1  # in its section, not again under Plots
    page = (tmp_path / "report.html").read_text()
    assert '<figure id="strength">' in page and "<h2>Style strength</h2>" in page


def test_models_table_shows_how_long_each_model_wrote(written: tuple[Path, list[str]]) -> None:
    folder, _ = written
    data = json.loads((folder / "results.json").read_text())
    text = (folder / "report.md").read_text()
    assert "| Words a continuation | Ended early |" in text
    for model in data["models"]:
        assert model["mean_words"] > 0 and 0 <= model["ended_early_share"] <= 1
        assert f"| {model['mean_words']:.1f} | {model['ended_early_share']:.1%} |" in text
    heads, rows = report.models_table({"models": [{**data["models"][0], "mean_words": None}]})
    assert rows[0][heads.index("Words a continuation")] == "—"  # results written before these fields
