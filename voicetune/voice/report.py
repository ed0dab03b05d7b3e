"""The benchmark's report: results.json, report.md, report.html, samples.md and PNG plots.

Pure rendering of the results dictionary that `voicetune.voice.benchmark.run_benchmark` returns (schema in
docs/results_schema.md): no model, no torch. The Markdown and the HTML say the same things; the HTML
embeds its plots (base64 PNG) and needs no JavaScript, so it can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from voicetune.core.manifest import write_json_atomic, write_text_atomic
from voicetune.voice import blind_test, strength
from voicetune.voice.strength import PLOT_FILE as PLOT_FILE_STRENGTH

PLOTS = {
    "voice_score.png": "How much each system sounds like the author: 0 = the other writers' real text, "
    "1 = the author's own held-out text; dots with 95% intervals.",
    "measures.png": "Every measure, per model, with 95% bootstrap intervals (the author's own held-out "
    "continuations in grey: the ceiling).",
    "attribution.png": "Share of continuations attributed to the author (dashed: chance).",
    "sentence_lengths.png": "Sentence-length distributions (cumulative), pooled over prompts.",
    "profiles.png": "Punctuation per 100 words and the author's 20 commonest function words.",
    PLOT_FILE_STRENGTH: "The fine-tuned adapter at each LoRA scale: voice score against held-out "
    "perplexity (left) and 8-gram copying (right).",
}
VERDICT_WORDS = {
    "better": "yes",
    "worse": "no (worse)",
    "no clear difference": "not clearly",
    "not measured": "not measured",
    "cannot tell at this length": "left out (cannot tell)",
}


# ------------------------------------------------------------------------------------ formatting


def fmt_number(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.1f}"
    if abs(x) >= 10:
        return f"{x:.2f}"
    return f"{x:.{digits}f}"


def fmt_estimate(entry: Mapping[str, Any] | None, percent: bool = False) -> str:
    """'0.412 [0.37, 0.45]' (or as percentages)."""
    if not entry or entry.get("value") is None:
        return "n/a"

    def f(x: float | None) -> str:
        if x is None:
            return "n/a"
        return f"{100 * x:.0f}%" if percent else fmt_number(x)

    low, high = entry.get("ci_low"), entry.get("ci_high")
    interval = f" [{f(low)}, {f(high)}]" if low is not None and high is not None else ""
    return f"{f(entry['value'])}{interval}"


def _is_share(measure: Mapping[str, Any]) -> bool:
    return measure.get("unit") == "share"


def direction_words(direction: str) -> str:
    return {"lower": "lower", "higher": "higher", "closer": "closer to author"}[direction]


def systems_in_order(results: Mapping[str, Any]) -> list[str]:
    """The models, the author's held-out text, and the other writers' text when it was scored."""
    tail = ["others"] if "others" in (results.get("voice_score") or {}) else []
    return [m["name"] for m in results["models"]] + [results["reference"]] + tail


def model_names(results: Mapping[str, Any]) -> list[str]:
    return [m["name"] for m in results["models"]]


def challengers(results: Mapping[str, Any]) -> list[str]:
    return [m["name"] for m in results["models"] if m["name"] != results["baseline"]]


def comparison(results: Mapping[str, Any], measure: str, model: str) -> Mapping[str, Any] | None:
    for c in results["comparisons"]:
        if c["measure"] == measure and c["model"] == model:
            return c
    return None


# ------------------------------------------------------------------------------------ tables


def results_table(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Measure | better | each system's value [CI] | each challenger - baseline [CI] and verdict."""
    baseline = results["baseline"]
    systems = systems_in_order(results)
    heads = ["Measure", "Better", "Tells you from others?"] + [f"{s}" for s in systems]
    for model in challengers(results):
        heads += [f"{model} − {baseline} [95% CI]", f"{model} beats {baseline}?"]
    rows = []
    for key, m in results["measures"].items():
        share = _is_share(m)
        check = m.get("discrimination")
        tells = "n/a" if check is None else ("yes" if check["passed"] else "cannot tell at this length")
        row = [m["label"], direction_words(m["direction"]), tells]
        row += [fmt_estimate(m["values"].get(s), share) for s in systems]
        for model in challengers(results):
            c = comparison(results, key, model)
            if c is None:
                row += ["n/a", "n/a"]
                continue
            diff = fmt_estimate(c["difference"], share)
            if c["difference_of"] == "gap to author":
                diff += " (gap)"
            row += [diff, VERDICT_WORDS[c["verdict"]]]
        rows.append(row)
    return heads, rows


def tests_table(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    heads = [
        "System",
        "Sentences",
        "Sentence lengths KS D (p)",
        "Punctuation χ² (p)",
        "Function words χ² (p)",
    ]
    rows = []

    def stat(entry: Mapping[str, Any]) -> str:
        if entry.get("statistic") is None:
            return "n/a"
        p = entry.get("p_value")
        return (
            f"{fmt_number(entry['statistic'])} (p={p:.2g})"
            if p is not None
            else fmt_number(entry["statistic"])
        )

    for name in systems_in_order(results):
        t = results["tests"].get(name)
        if not t:
            continue
        rows.append(
            [
                name,
                str(t["sentences"]),
                stat(t["sentence_length_ks"]),
                stat(t["punctuation_chi2"]),
                stat(t["function_word_chi2"]),
            ]
        )
    return heads, rows


def models_table(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    heads = [
        "Model", "Weights", "Adapter", "Style strength", "Prompt format", "Perplexity tokens",
        "Words a continuation", "Ended early",
    ]  # fmt: skip
    rows = [
        [
            m["name"],
            m["model_dir"],
            m["adapter_dir"] or "—",
            f"x{m['style_strength']:g}" if m.get("style_strength") is not None else "—",
            m["prompt_format"],
            str(m["perplexity_tokens"]),
            f"{m['mean_words']:.1f}" if m.get("mean_words") is not None else "—",
            f"{m['ended_early_share']:.1%}" if m.get("ended_early_share") is not None else "—",
        ]
        for m in results["models"]
    ]
    return heads, rows


# ------------------------------------------------------------------------------------ prose

OTHERS = "others"


def _score(entry: Mapping[str, Any] | None) -> str:
    """'0.62 [0.48, 0.77]' for a voice-score entry."""
    if not entry or entry.get("value") is None:
        return "n/a"
    low, high = entry.get("ci_low"), entry.get("ci_high")
    interval = f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
    return f"{entry['value']:.2f}{interval}"


def voice_headline(results: Mapping[str, Any]) -> str:
    """The report's first sentence: how much does the fine-tuned model sound like the author?"""
    voice = results.get("voice_score") or {}
    scale = results.get("voice_scale") or {}
    baseline = results["baseline"]
    models = [m["name"] for m in results["models"]]
    tuned = next((m for m in models if m != baseline), baseline)
    words = scale.get("words", {})
    if not voice or voice.get(tuned, {}).get("value") is None:
        return (
            "**Voice score: not measured.** No measure told the author's own held-out text from the other "
            "writers' at this length and count; give more prompts or longer continuations."
        )
    diff = voice.get("difference") or {}
    low, high = diff.get("ci_low"), diff.get("ci_high")
    if low is not None and low > 0:
        change = "closer to you than the base model"
    elif high is not None and high < 0:
        change = "further from you than the base model"
    else:
        change = "not clearly different from the base model"
    n = (voice.get(tuned) or {}).get("n")
    return (
        f"**How much does it sound like you? {tuned}: {_score(voice.get(tuned))}** on a scale where 0 is "
        f"other writers' real text and 1 is your own held-out writing; {baseline}: "
        f"{_score(voice.get(baseline))}. Difference {tuned} − {baseline}: {_score(diff)}, {change}. "
        f"95% intervals over {n} prompts; each system wrote about {_words(words.get(tuned))} words "
        f"({baseline}: {_words(words.get(baseline))}; your held-out text: "
        f"{_words(words.get(results['reference']))})."
    )


def _words(x: int | None) -> str:
    return "n/a" if x is None else f"{x:,}"


def voice_table(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """System | voice score [95% CI] | words scored."""
    voice = results.get("voice_score") or {}
    scale = results.get("voice_scale") or {}
    words = scale.get("words", {})
    rows = []
    for name in systems_in_order(results):
        if name in voice:
            label = {OTHERS: "other writers (held-out, floor ≈ 0)",
                     results["reference"]: "you: held-out writing (ceiling ≈ 1)"}.get(name, name)  # fmt: skip
            rows.append([label, _score(voice[name]), _words(words.get(name))])
    if "difference" in voice:
        rows.append([f"difference {scale.get('difference_of') or ''}", _score(voice["difference"]), ""])
    return ["System", "Voice score [95% CI]", "Words scored"], rows


def voice_measures_lines(results: Mapping[str, Any]) -> list[str]:
    """Which measures the score is made of, and which could not tell the author from the others."""
    scale = results.get("voice_scale") or {}
    if scale.get("error"):
        return [f"No voice score: {scale['error']}."]
    measures = scale.get("measures", {})
    used = [f"{m['label']} ({100 * m['weight']:.0f}%)" for m in measures.values() if m["passed"]]
    dropped = [m["label"] for m in measures.values() if not m["passed"]]
    cal = scale.get("calibration", {})
    lines = [
        f"The voice score combines {len(used)} text profiles pooled over each system's continuations: "
        + (", ".join(used) or "none")
        + ". Each is the pooled profile's position on the line from the other writers to you, "
        f"calibrated on {cal.get('author_pieces', 'n/a')} pieces of your held-out writing and "
        f"{cal.get('other_pieces', 'n/a')} of the other writers', {cal.get('words_per_piece', 'n/a')} words "
        "each, none of them scored here.",
    ]
    if dropped:
        lines.append(
            "Left out because they cannot tell your held-out writing from the other writers' at "
            f"{cal.get('check_count', 'n/a')} pieces of this length: " + ", ".join(dropped) + "."
        )
    return lines


def answer_lines(results: Mapping[str, Any]) -> list[str]:
    """The plain answer, one paragraph per challenger."""
    baseline = results["baseline"]
    lines = []
    for model, s in results["summary"].items():
        total = len(s["better"]) + len(s["worse"]) + len(s["no_clear_difference"])
        labels = {k: results["measures"][k]["label"] for k in results["measures"]}

        def names(keys: Sequence[str], labels: Mapping[str, str] = labels) -> str:
            return ", ".join(labels[k] for k in keys) if keys else "none"

        share = s.get("copied_ngram_share")
        own = s.get("author_copied_ngram_share")
        copy_line = (
            f"Copying: {model} writes {fmt_share(share)} of its 8-grams as found in the training text "
            f"(the author's own held-out text: {fmt_share(own)}); longest copied span "
            f"{fmt_number(s.get('longest_copied_span_max'), 0)} words (author's own: "
            f"{fmt_number(s.get('author_longest_copied_span_max'), 0)}) — {s['copying']}."
        )
        lines.append(
            f"**{model} vs {baseline}: closer to the author on {len(s['better'])} of {total} measures** "
            f"(95% interval of the paired difference excludes zero): {names(s['better'])}. "
            f"Further from the author on {len(s['worse'])}: {names(s['worse'])}. "
            f"No clear difference on {len(s['no_clear_difference'])}: {names(s['no_clear_difference'])}. "
            + (
                f"Left out of the count ({len(s.get('cannot_tell', []))}, they cannot tell the author from "
                f"the other writers at this length): {names(s.get('cannot_tell', []))}. "
                if s.get("cannot_tell")
                else ""
            )
            + copy_line
        )
    attribution = results["measures"]["attribution_share"]["values"]
    ceiling = attribution.get(results["reference"]) or {}
    chance = results["attribution"]["chance"]
    parts = [f"{name} {fmt_estimate(attribution.get(name), True)}" for name in model_names(results)]
    lines.append(
        f"Attribution: the classifier takes {', '.join(parts)} of the continuations for the author's; "
        f"the author's own held-out passages (ceiling): {fmt_estimate(ceiling, True)}; the other "
        f"writers' held-out passages: {fmt_estimate(attribution.get(OTHERS), True)}; chance: "
        f"{100 * chance:.0f}%."
    )
    return lines


def attribution_line(results: Mapping[str, Any]) -> str:
    att = results["attribution"]
    return (
        f"Classes: {', '.join(att['classes'])} (chance {100 * att['chance']:.0f}%). Trained on "
        f"{att['segment_words']}-word segments; accuracy on held-back segments "
        f"{fmt_share(att['validation_accuracy'])}, "
        f"author recall {fmt_share(att['validation_author_recall'])}."
    )


def reading_note(results: Mapping[str, Any]) -> str:
    return (
        f"Values are point estimates with 95% bootstrap intervals; '{results['reference']}' is the "
        "author's real continuation of the same prompts (the ceiling). 'Beats' means the interval of "
        "the paired difference excludes zero in the better direction."
    )


def fmt_share(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def setup_lines(results: Mapping[str, Any]) -> list[str]:
    a, p, st = results["author"], results["prompts"], results["settings"]
    timing = results.get("timing_seconds", {})
    return [
        f"Author: {a['train_texts']} training texts ({a['train_words']:,} words) in `{a['train_dir']}`; "
        f"{a['test_texts']} held-out text{'s' if a['test_texts'] != 1 else ''} ({a['test_words']:,} words) "
        f"in `{a['test_dir']}`.",
        f"Prompts: {p['count']} from the held-out texts only, about {p['prompt_tokens']} tokens of whole "
        f"sentences each; every model continues each for {p['max_new_tokens']} new tokens; the author's "
        f"real continuation, cut to the same budget (median {p['reference_words_median']} words), is the "
        "reference.",
        f"Sampling: temperature {st['temperature']}, top-p {st['top_p']}, repetition penalty "
        f"{st['repetition_penalty']}, seed {st['seed']}, batch {st['batch_size']}, device {st['device']}. "
        f"Bootstrap: {st['bootstrap']} replicates over prompts (perplexity: over 128-token blocks of "
        "the scored text).",
        f"Other authors (attribution, Delta): {', '.join(results['others']['authors'])}.",
        f"Time: {fmt_number(timing.get('total'), 1)} s in all.",
    ]


METHOD_NOTES = [
    "Perplexity: exp of the mean negative log-likelihood per token of the author's held-out texts, "
    "sliding windows; lower means the model finds the author's real text more predictable.",
    "Attribution: a linear SVM over character 2-4-grams (TF-IDF) and function-word frequencies "
    "(Stamatatos 2009; Mosteller & Wallace 1964), trained on segments of the author's training text "
    "against the other authors, segments as long as the continuations.",
    "Delta: z-scores of the most frequent words (shared by most authors) standardised on segments of "
    "the same length; Burrows' Delta (Burrows 2002) is their mean absolute difference to the author, "
    "Cosine Delta (Smith & Aldridge 2011) the cosine distance.",
    "Style distance: voicetune's calibrated single-text distance (the one generate's best-of-N uses): "
    "mean |z| over function words, function-word word order (a Markov chain over the text's "
    "function-word skeleton), punctuation, sentence length and word length.",
    "Profiles: Kolmogorov-Smirnov distance for sentence lengths; Jensen-Shannon distance and a "
    "chi-square test of homogeneity for punctuation and function-word counts, against the author's "
    "training text. With hundreds of sentences even small differences test as significant: read the "
    "distances and their intervals first. Only complete sentences count, so short continuations "
    "under-represent long sentences; the author's own continuations, cut the same way, show how much.",
    "MATTR (Covington & McFall 2010) and repetition: better means closer to the author's own "
    "continuations of the same prompts (not simply higher or lower).",
    "Copying: share of the continuation's word 8-grams found in the training text, and the longest "
    "run of words found there. The author's own new text gives the natural level.",
    "Tells you from others?: before a measure judges models, it must tell the author's own held-out "
    "continuations from the other writers' real text (same length, same number of pieces; the 95% "
    "interval of the difference excludes zero). Measures that cannot are shown, but stay out of the "
    "verdicts and the voice score.",
    "Voice score: each pooled text profile placed on the line from the other writers (0) to the "
    "author's held-out text (1), both ends fixed on pieces that are never scored, the profiles that "
    "tell the two apart averaged by their precision (voicetune/voice/voice_score.py). It sees movement "
    "along that line only: text unlike both writers in another way (broken sentences, shuffled words) "
    "shows in the distance measures, the copying check and the samples.",
    "Intervals: 95% bootstrap over prompts, the same draws for every model, so each 'beats' verdict "
    "rests on the interval of the paired difference; percentile intervals for means and shares, and "
    "for pooled distances (Delta, Jensen-Shannon, KS) the bootstrap bias-corrected value with its basic "
    "interval, since sampling noise inflates a distance; all widened for small samples (Hesterberg "
    "2015). Each verdict is a 5% test on its own: over ten measures, expect about one in twenty to flip "
    "by chance; read the pattern, not a single row.",
]


# ------------------------------------------------------------------------------------ markdown


def _md_cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def md_table(heads: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(results: Mapping[str, Any], plots: Sequence[str]) -> str:
    out = [f"# Voice benchmark: {results['run']}", "", voice_headline(results), ""]
    if "voice_score.png" in plots:
        out += [f"![{PLOTS['voice_score.png']}](voice_score.png)", ""]
    out += [md_table(*voice_table(results)), ""]
    out += [*voice_measures_lines(results), ""]
    for note in results.get("notes", []):
        out.append(f"> Note: {note}\n")
    if _has_strength_section(results):
        table = strength_table(results)
        out += ["## Style strength", "", strength_intro(results), ""]
        if table is not None:
            out += [md_table(*table), ""]
            if PLOT_FILE_STRENGTH in plots:
                out += [f"![{PLOTS[PLOT_FILE_STRENGTH]}]({PLOT_FILE_STRENGTH})", ""]
    out += ["## Samples, side by side", ""]
    out.append(render_samples_markdown(results, limit=3, heading_level=3))
    out += [f"All {len(results['samples'])} prompts: [samples.md](samples.md).", ""]
    out += ["## Every measure", "", f"**Question.** {results['question']}", ""]
    out += [line + "\n" for line in answer_lines(results)]
    out += [md_table(*results_table(results)), ""]
    out.append(reading_note(results))
    out += ["", "## Setup", ""] + [f"- {line}" for line in setup_lines(results)]
    out += ["", md_table(*models_table(results)), ""]
    out += [
        "## Attribution classifier",
        "",
        attribution_line(results),
        "",
        "## Distribution tests (pooled, against the author's training text)",
        "",
        md_table(*tests_table(results)),
        "",
        "## Plots",
        "",
    ]
    for name in plots:
        if name not in ("voice_score.png", PLOT_FILE_STRENGTH):
            out += [f"![{PLOTS.get(name, name)}]({name})", "", f"*{PLOTS.get(name, name)}*", ""]
    out += ["## How to read the measures", ""] + [f"- {note}" for note in METHOD_NOTES]
    return "\n".join(out).rstrip() + "\n"


def _has_strength_section(results: Mapping[str, Any]) -> bool:
    """A sweep to show, or a base and one fine-tuned model (where one could be asked for)."""
    return bool(results.get("strength_sweep")) or len(model_names(results)) == 2


def strength_table(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """The fine-tuned adapter at each swept LoRA scale (voicetune.voice.strength), or None."""
    sweep = results.get("strength_sweep") or {}
    if not sweep.get("points"):
        return None
    rows = []
    for point in sweep["points"]:
        score = point["voice_score"]
        copying = (point.get("copying") or {}).get("ngram_share")
        merged = point["scale"] == sweep.get("fine_tuned_scale", 1.0)
        notes = ["as trained"] if point["scale"] == 1.0 else []
        notes += ["the fine-tuned model"] if merged else []
        rows.append([
            f"x{point['scale']:g}" + (f" ({', '.join(notes)})" if notes else ""),
            _score(score),
            f"{point['perplexity']:.2f}" if point.get("perplexity") is not None else "n/a",
            f"{100 * copying:.2f}%" if copying is not None else "n/a",
        ])  # fmt: skip
    return ["LoRA scale", "Voice score [95% CI]", "Held-out perplexity", "8-gram copying"], rows


def strength_intro(results: Mapping[str, Any]) -> str:
    sweep = results.get("strength_sweep") or {}
    if not sweep.get("points"):
        merged = [
            f"{m['name']} is its adapter at x{m['style_strength']:g}. "
            for m in results.get("models", [])
            if m.get("style_strength") not in (None, 1.0)
        ]
        return "".join(merged) + (
            "Not swept on this run (on a CPU each scale costs one more generation pass): "
            "`benchmarks/1_voice_comparison.sh --run NAME --strengths 0.5,1.5` adds the fine-tuned "
            "adapter at those LoRA scales; `voicetune merge --scale S` keeps one."
        )
    author = sweep.get("author_voice_score")
    return (
        "The fine-tuned adapter at other LoRA scales, without retraining, on the same prompts and voice "
        "scale: above 1 the imitation is pushed further, below 1 weakened"
        + (f"; your held-out writing scores {author:.2f}." if author is not None else ".")
    )


def sample_columns(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(heading, key) of the side-by-side columns: you, each model, another writer."""
    columns = [("you (held-out)", results["reference"])]
    columns += [(name, name) for name in model_names(results)]
    if any(s.get("other_author") for s in results["samples"]):
        columns.append(("another writer", "__other__"))
    return columns


def _sample_text(sample: Mapping[str, Any], key: str) -> str:
    if key == "__other__":
        return str(sample.get("other_author") or "")
    return str(sample["continuations"].get(key, ""))


def render_samples_markdown(
    results: Mapping[str, Any], limit: int | None = None, heading_level: int = 2
) -> str:
    columns = sample_columns(results)
    mark = "#" * heading_level
    out = [] if heading_level > 2 else [f"# Sample continuations: {results['run']}", ""]
    for sample in results["samples"][:limit]:
        out += [f"{mark} Prompt {sample['index'] + 1}", "", "> " + sample["prompt"].replace("\n", "\n> "), ""]
        out.append(md_table([h for h, _ in columns], [[_sample_text(sample, k) for _, k in columns]]))
        out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------------------------ html

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;line-height:1.45;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.92em}
th,td{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#f3f3f3}
td.yes{background:#e3f4e1}td.worse{background:#fbe3e1}td.unclear{background:#f7f7f7}
.samples td{width:25%;font-family:Georgia,serif;font-size:0.95em}
blockquote{border-left:4px solid #ccc;margin:0.5em 0;padding:0.2em 1em;color:#444;white-space:pre-wrap}
img{max-width:100%;border:1px solid #eee}
.note{background:#fff8e1;padding:0.5em 1em}
.headline{font-size:1.25em;background:#eef5ff;padding:0.6em 1em;border-radius:4px}
"""


_CELL_CLASSES = {
    "yes": "yes",
    "no (worse)": "worse",
    "not clearly": "unclear",
    "left out (cannot tell)": "unclear",
    "cannot tell at this length": "unclear",
}


def _html_table(heads: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    def cell(text: str) -> str:
        css = _CELL_CLASSES.get(text, "")
        return f'<td class="{css}">{html.escape(text)}</td>' if css else f"<td>{html.escape(text)}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in heads)
    body = "".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _inline_md(text: str) -> str:
    """Escape, then turn **bold** and `code` into HTML (the only Markdown the prose uses)."""
    import re

    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


def _figure(name: str, data: bytes, element_id: str = "") -> str:
    encoded = base64.b64encode(data).decode("ascii")
    caption = html.escape(PLOTS.get(name, name))
    ident = f' id="{element_id}"' if element_id else ""
    return (
        f'<figure{ident}><img alt="{caption}" src="data:image/png;base64,{encoded}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _html_samples(results: Mapping[str, Any], samples: Sequence[Mapping[str, Any]]) -> list[str]:
    columns = sample_columns(results)
    parts = []
    for sample in samples:
        parts.append(
            f"<h3>Prompt {sample['index'] + 1}</h3><blockquote>{html.escape(sample['prompt'])}</blockquote>"
        )
        parts.append(
            _html_table([h for h, _ in columns], [[_sample_text(sample, k) for _, k in columns]], "samples")
        )
    return parts


def render_html(results: Mapping[str, Any], plot_files: Mapping[str, bytes]) -> str:
    title = f"Voice benchmark: {results['run']}"
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p id="headline" class="headline">{_inline_md(voice_headline(results))}</p>',
    ]
    if "voice_score.png" in plot_files:
        parts.append(_figure("voice_score.png", plot_files["voice_score.png"], "voice-scale"))
    parts.append(_html_table(*voice_table(results)))
    parts += [f"<p>{_inline_md(line)}</p>" for line in voice_measures_lines(results)]
    parts += [f'<p class="note">Note: {html.escape(n)}</p>' for n in results.get("notes", [])]
    if _has_strength_section(results):
        table = strength_table(results)
        parts += ["<h2>Style strength</h2>", f"<p>{_inline_md(strength_intro(results))}</p>"]
        if table is not None:
            parts.append(_html_table(*table))
            if PLOT_FILE_STRENGTH in plot_files:
                parts.append(_figure(PLOT_FILE_STRENGTH, plot_files[PLOT_FILE_STRENGTH], "strength"))
    parts += ["<h2>Samples, side by side</h2>", *_html_samples(results, results["samples"][:3])]
    parts += [
        "<h2>Every measure</h2>",
        f"<p><strong>Question.</strong> {html.escape(results['question'])}</p>",
    ]
    parts += [f"<p>{_inline_md(line)}</p>" for line in answer_lines(results)]
    parts += [_html_table(*results_table(results))]
    parts.append(f"<p>{html.escape(reading_note(results))}</p>")
    parts += ["<h2>Setup</h2>", "<ul>"] + [f"<li>{_inline_md(line)}</li>" for line in setup_lines(results)]
    parts += ["</ul>", _html_table(*models_table(results))]
    parts += [
        "<h2>Attribution classifier</h2>",
        f"<p>{html.escape(attribution_line(results))}</p>",
        "<h2>Distribution tests (pooled, against the author's training text)</h2>",
        _html_table(*tests_table(results)),
        "<h2>Plots</h2>",
    ]
    parts += [
        _figure(name, data)
        for name, data in plot_files.items()
        if name not in ("voice_score.png", PLOT_FILE_STRENGTH)
    ]
    parts += ["<h2>How to read the measures</h2>", "<ul>"] + [
        f"<li>{html.escape(n)}</li>" for n in METHOD_NOTES
    ]
    parts += ["</ul>", "<h2>All samples, side by side</h2>", *_html_samples(results, results["samples"])]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------ plots


def render_plots(results: Mapping[str, Any]) -> dict[str, bytes]:
    """PNG bytes of each plot (matplotlib, Agg backend: no display needed)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = systems_in_order(results)
    reference = results["reference"]
    colors = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(model_names(results))}
    colors[reference] = (0.45, 0.45, 0.45, 1.0)
    colors[OTHERS] = (0.75, 0.75, 0.75, 1.0)
    out: dict[str, bytes] = {}

    def save(fig: Any, name: str) -> None:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        out[name] = buffer.getvalue()

    # 0. the voice score: one scale from the other writers to the author
    voice = results.get("voice_score") or {}
    rows = [
        name
        for name in [OTHERS, *model_names(results), reference]
        if (voice.get(name) or {}).get("value") is not None
    ]
    if rows:
        labels = {OTHERS: "other writers", reference: "you (held-out)"}
        fig, ax = plt.subplots(figsize=(8.5, 0.75 + 0.55 * len(rows)))
        ends = [0.0, 1.0] + [
            x for n in rows for x in (voice[n].get("ci_low"), voice[n].get("ci_high")) if x is not None
        ]
        lo, hi = min(ends) - 0.08, max(ends) + 0.08
        ax.axvspan(lo, 0, color="#f3f3f3")
        ax.axvline(0, color="#888", lw=1)
        ax.axvline(1, color="#888", lw=1)
        for y, name in enumerate(rows):
            v = voice[name]
            color = colors.get(name, (0.6, 0.6, 0.6, 1.0)) if name != OTHERS else (0.2, 0.2, 0.2, 1.0)
            if v.get("ci_low") is not None and v.get("ci_high") is not None:
                xerr = [[max(0.0, v["value"] - v["ci_low"])], [max(0.0, v["ci_high"] - v["value"])]]
                ax.errorbar(v["value"], y, xerr=xerr, fmt="o", ms=9, color=color, capsize=5, lw=2)
            else:
                ax.plot(v["value"], y, "o", ms=9, color=color)
            ax.annotate(f"{v['value']:.2f}", (v["value"], y), xytext=(0, 9), textcoords="offset points",
                        ha="center", fontsize=9)  # fmt: skip
        ax.set_yticks(range(len(rows)), [labels.get(n, n) for n in rows])
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_xlim(lo, hi)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1], ["0\nother writers", "0.25", "0.5", "0.75", "1\nyou"])
        ax.set_title("How much does it sound like you? (95% intervals)", fontsize=11)
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        save(fig, "voice_score.png")

    # 1. every measure: a small forest plot each
    measures = list(results["measures"].items())
    cols = 4
    rows = math.ceil(len(measures) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.1 * rows + 0.6), squeeze=False)
    for ax, (_, m) in zip(axes.flat, measures, strict=False):
        names = [s for s in systems if m["values"].get(s) and m["values"][s].get("value") is not None]
        for y, name in enumerate(names):
            v = m["values"][name]
            low, high = v.get("ci_low"), v.get("ci_high")
            if low is not None and high is not None:
                # Guard: a point value at the very edge of its interval must not give a negative bar.
                xerr = [[max(0.0, v["value"] - low)], [max(0.0, high - v["value"])]]
                ax.errorbar(v["value"], y, xerr=xerr, fmt="o", color=colors[name], capsize=3)
            else:
                ax.plot(v["value"], y, "o", color=colors[name])
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_ylim(-0.7, len(names) - 0.3)
        ax.invert_yaxis()
        ax.set_title(f"{m['label']}\n({direction_words(m['direction'])} is better)", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(measures) :]:
        ax.axis("off")
    fig.tight_layout()
    save(fig, "measures.png")

    # 2. attribution share with chance
    values = results["measures"]["attribution_share"]["values"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(systems), 3.4))
    for x, name in enumerate(systems):
        v = values.get(name) or {}
        if v.get("value") is None:
            continue
        err = None
        if v.get("ci_low") is not None and v.get("ci_high") is not None:
            err = [[max(0.0, v["value"] - v["ci_low"])], [max(0.0, v["ci_high"] - v["value"])]]
        ax.bar(x, v["value"], color=colors[name], yerr=err, capsize=4)
    ax.axhline(results["attribution"]["chance"], ls="--", color="black", lw=1, label="chance")
    ax.set_xticks(range(len(systems)), systems, fontsize=8, rotation=15)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share attributed to the author")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, "attribution.png")

    # 3. sentence lengths (cumulative distributions)
    profiles = results["profiles"]["systems"]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for name, prof in profiles.items():
        hist = prof["sentence_length_hist"]
        total = sum(hist)
        if not total:
            continue
        cumulative, running = [], 0
        for count in hist:
            running += count
            cumulative.append(running / total)
        style = {"color": "black", "lw": 2.2} if name == "author (training)" else {"color": colors.get(name)}
        ax.step(range(len(hist)), cumulative, where="post", label=f"{name} (n={total})", **style)
    ax.set_xlim(0, 80)
    ax.set_xlabel("words per sentence")
    ax.set_ylabel("cumulative share")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save(fig, "sentence_lengths.png")

    # 4. punctuation and function-word profiles
    marks = results["profiles"]["punctuation_marks"]
    words = results["profiles"]["function_words"]
    names = list(profiles)
    width = 0.8 / max(1, len(names))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6.5))
    for i, name in enumerate(names):
        color = "black" if name == "author (training)" else colors.get(name)
        xs = [x + (i - (len(names) - 1) / 2) * width for x in range(len(marks))]
        ax1.bar(xs, profiles[name]["punctuation_per_100_words"], width, label=name, color=color)
        xs = [x + (i - (len(names) - 1) / 2) * width for x in range(len(words))]
        ax2.bar(xs, profiles[name]["function_word_share"], width, label=name, color=color)
    ax1.set_xticks(range(len(marks)), [repr(m)[1:-1] for m in marks])
    ax1.set_ylabel("per 100 words")
    ax1.set_title("punctuation", fontsize=10)
    ax1.legend(fontsize=7, ncol=len(names))
    ax2.set_xticks(range(len(words)), words, rotation=45, fontsize=8)
    ax2.set_ylabel("share of function words")
    ax2.set_title("the author's 20 commonest function words", fontsize=10)
    fig.tight_layout()
    save(fig, "profiles.png")
    return out


# ------------------------------------------------------------------------------------ writing


def write_report(folder: Path, results: Mapping[str, Any]) -> list[str]:
    """Write every report file into folder; return their names (relative)."""
    folder = Path(folder)
    plots = render_plots(results)
    for name, data in plots.items():
        (folder / name).write_bytes(data)
    for name in strength.plot_sweep(results.get("strength_sweep"), folder):
        plots[name] = (folder / name).read_bytes()
    write_json_atomic(folder / "results.json", results)
    # voicetune blind-test's section (its result from blind/summary.json, or how to run it)
    blind_md, blind_html = blind_test.report_section(folder, str(results["run"]))
    write_text_atomic(folder / "report.md", render_markdown(results, list(plots)) + "\n" + blind_md)
    write_text_atomic(folder / "samples.md", render_samples_markdown(results))
    page = render_html(results, plots).replace("</body></html>", blind_html + "\n</body></html>")
    write_text_atomic(folder / "report.html", page)
    return ["report.md", "report.html", "results.json", "samples.md", *plots]


def load_results(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "results.json").read_text(encoding="utf-8"))
