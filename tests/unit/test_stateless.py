"""The predictor keeps nothing: core dumps off, file-system writes refused once serving.

Audit hooks cannot be removed and hardening changes the whole process, so
each check runs in a fresh interpreter (``sys.executable``; the package is
installed, so no ``PYTHONPATH`` is needed) and reports back as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from privproc import events
from privproc.predictor import stateless


def _run(script: str, *args: str) -> Any:
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


ATTEMPTS = """
import json, os, shutil, sqlite3, sys, tempfile
from pathlib import Path

from privproc import events
from privproc.predictor import stateless

base = Path(sys.argv[1])
existing, folder = base / "existing.txt", base / "folder"
results = {}


def attempt(name, action):
    try:
        handle = action()
        if hasattr(handle, "close"):
            handle.close()
        results[name] = "ok"
    except PermissionError as error:
        results[name] = "refused" if str(error) == stateless.REFUSAL_MESSAGE else "other: " + str(error)


def attempts():
    attempt("open w", lambda: open(base / "new.txt", "w"))
    attempt("open a", lambda: open(existing, "a"))
    attempt("open r+", lambda: open(existing, "r+"))
    attempt("open xb", lambda: open(base / "new.bin", "xb"))
    attempt("os.open O_CREAT", lambda: os.open(base / "new", os.O_RDONLY | os.O_CREAT))
    attempt("os.open O_WRONLY", lambda: os.open(existing, os.O_WRONLY))
    attempt("write_text", lambda: (base / "new.txt").write_text("x"))
    attempt("mkdir", lambda: os.mkdir(base / "d"))
    attempt("makedirs", lambda: os.makedirs(base / "a" / "b"))
    attempt("rename", lambda: os.rename(existing, base / "moved.txt"))
    attempt("replace", lambda: os.replace(existing, base / "moved.txt"))
    attempt("remove", lambda: os.remove(existing))
    attempt("unlink", lambda: existing.unlink())
    attempt("rmdir", lambda: os.rmdir(folder))
    attempt("link", lambda: os.link(existing, base / "hard"))
    attempt("symlink", lambda: os.symlink(existing, base / "soft"))
    attempt("truncate", lambda: os.truncate(existing, 0))
    attempt("chmod", lambda: os.chmod(existing, 0o600))
    attempt("utime", lambda: os.utime(existing))
    attempt("copyfile", lambda: shutil.copyfile(existing, base / "copy.txt"))
    attempt("copytree", lambda: shutil.copytree(folder, base / "tree"))
    attempt("rmtree", lambda: shutil.rmtree(folder))
    attempt("move", lambda: shutil.move(existing, base / "moved.txt"))
    attempt("sqlite3 file", lambda: sqlite3.connect(base / "db.sqlite"))
    attempt("sqlite3 memory", lambda: sqlite3.connect(":memory:"))
    # With a dir: without one, gettempdir() probes by writing, which fails first.
    attempt("mkstemp", lambda: tempfile.mkstemp(dir=base))
    attempt("mkdtemp", lambda: tempfile.mkdtemp(dir=base))
    attempt("read", lambda: existing.read_text())
    attempt("listdir", lambda: os.listdir(base))
    attempt("/dev/null", lambda: open(os.devnull, "w").write("x"))
    attempt("open fd", lambda: os.fdopen(os.dup(1), "w"))


stateless.forbid_disk_writes(*[[entry] for entry in sys.argv[2:]])
installed = stateless.write_guard_installed()
stateless.forbid_disk_writes(*[[entry] for entry in sys.argv[2:]])  # idempotent
attempts()
try:
    stateless.forbid_disk_writes([base / "elsewhere"])
    changed = "allowed"
except Exception as error:
    changed = type(error).__name__
print(json.dumps({
    "results": results,
    "installed": installed,
    "refused": stateless.refused_writes(),
    "events": events.STATS.emitted["predictor.write_refused"],
    "changed": changed,
    "bytecode": sys.dont_write_bytecode,
    "files": sorted(str(path.relative_to(base)) for path in base.rglob("*")),
    "content": existing.read_text(),
}))
"""

WRITES = {
    "open w",
    "open a",
    "open r+",
    "open xb",
    "os.open O_CREAT",
    "os.open O_WRONLY",
    "write_text",
    "mkdir",
    "makedirs",
    "rename",
    "replace",
    "remove",
    "unlink",
    "rmdir",
    "link",
    "symlink",
    "truncate",
    "chmod",
    "utime",
    "copyfile",
    "copytree",
    "rmtree",
    "move",
    "sqlite3 file",
    "sqlite3 memory",
    "mkstemp",
    "mkdtemp",
}


def _layout(base: Path) -> list[str]:
    (base / "existing.txt").write_text("kept")
    (base / "folder").mkdir()
    (base / "folder" / "inside.txt").write_text("kept")
    return ["existing.txt", "folder", "folder/inside.txt"]


def test_the_guard_refuses_every_write_and_allows_reads(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    report = _run(ATTEMPTS, str(tmp_path))
    results = report["results"]
    assert {name for name, outcome in results.items() if outcome == "refused"} == WRITES
    assert {name for name, outcome in results.items() if outcome == "ok"} == {
        "read",
        "listdir",
        "/dev/null",
        "open fd",
    }
    assert report["installed"] is True
    assert report["refused"] == report["events"] == len(WRITES)  # each refusal counted, and an event
    assert report["changed"] == "ConfigError"  # the installed allow-list cannot be changed
    assert report["bytecode"] is True
    assert report["files"] == layout and report["content"] == "kept"  # nothing changed on disk


def test_an_allowed_directory_is_writable_but_not_a_way_out(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "scratch", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "escape").symlink_to(outside / "target.txt")
    report = _run(
        """
        import json, os, sys
        from pathlib import Path
        from privproc.predictor import stateless

        allowed, outside = Path(sys.argv[1]), Path(sys.argv[2])
        stateless.forbid_disk_writes([allowed, os.devnull])
        results = {}
        for name, path in [
            ("inside", allowed / "file.txt"),
            ("outside", outside / "file.txt"),
            ("dotdot", allowed / ".." / "outside" / "file.txt"),
            ("symlink out", allowed / "escape"),
        ]:
            try:
                path.write_text("x")
                results[name] = "ok"
            except PermissionError:
                results[name] = "refused"
        try:
            os.mkdir(allowed / "sub")
            os.rename(allowed / "file.txt", allowed / "sub" / "file.txt")
            results["inside tree"] = "ok"
        except PermissionError:
            results["inside tree"] = "refused"
        print(json.dumps({"results": results, "refused": stateless.refused_writes()}))
        """,
        str(allowed),
        str(outside),
    )
    assert report["results"] == {
        "inside": "ok",
        "outside": "refused",
        "dotdot": "refused",
        "symlink out": "refused",
        "inside tree": "ok",
    }
    assert report["refused"] == 3
    assert (allowed / "sub" / "file.txt").read_text() == "x"
    assert not (outside / "file.txt").exists() and not (outside / "target.txt").exists()


def test_hardening_turns_core_dumps_off() -> None:
    report = _run(
        """
        import json, resource
        from privproc.predictor import stateless

        before = stateless.process_is_hardened()
        stateless.harden_process()
        print(json.dumps({
            "before": before,
            "after": stateless.process_is_hardened(),
            "dumpable": stateless._prctl(3),
            "core": list(resource.getrlimit(resource.RLIMIT_CORE)),
        }))
        """
    )
    assert report == {"before": False, "after": True, "dumpable": 0, "core": [0, 0]}


def test_a_full_request_completes_under_the_guard_with_no_refused_write() -> None:
    report = _run(
        """
        import json
        from privproc.predictor import stateless
        from privproc.predictor.model import LanguageModel
        from privproc.predictor.tasks import TaskProcessor
        from privproc.v1 import predictor_pb2 as pb


        class Embedder:
            def embed(self, texts):
                return [[float("offsite" in text), 1.0] for text in texts]


        # As the predictor does: load the models, then harden and stop writing, then serve.
        model = LanguageModel.tiny_random(seed=0)
        processors = [
            TaskProcessor(model, Embedder(), phrase_summaries=True),
            TaskProcessor(model, summary_strategy="generative"),
        ]
        stateless.harden_process()
        stateless.forbid_disk_writes()
        chat = [
            pb.ChatMessage(sender="Ana", time="2026-11-24T09:00:00Z", text="The offsite venue is booked."),
            pb.ChatMessage(sender="Bo", time="2026-11-24T09:01:00Z", text="lol the match"),
            pb.ChatMessage(sender="Chen", time="2026-11-24T09:02:00Z", text="Offsite flights by Friday."),
            pb.ChatMessage(sender="Dee", time="2026-11-24T09:03:00Z", text="my cat"),
        ]
        responses = []
        for processor in processors:
            for request in (
                pb.ProcessRequest(task=pb.TASK_SUMMARIZE, messages=chat, max_output_tokens=12),
                pb.ProcessRequest(task=pb.TASK_SUGGEST_REWRITE, draft="send it", max_output_tokens=12),
            ):
                response = processor.process(request)
                responses.append([response.refusal_reason, response.output_tokens > 0])
        print(json.dumps({
            "responses": responses,
            "refused": stateless.refused_writes(),
            "guarded": stateless.write_guard_installed(),
            "hardened": stateless.process_is_hardened(),
        }))
        """
    )
    assert report["guarded"] is True and report["hardened"] is True
    assert report["refused"] == 0
    # Every request was answered by the model (random weights may say nothing usable: no_output).
    assert [generated for _, generated in report["responses"]] == [True] * 4
    assert {refusal for refusal, _ in report["responses"]} <= {"", "no_output"}


def test_the_refusal_event_names_only_the_audit_event() -> None:
    spec = events.REGISTRY["predictor.write_refused"].fields
    assert set(spec) == {"operation"}
    assert spec["operation"].choices == stateless.WATCHED_EVENTS
    # This test process never installed the guard.
    assert stateless.write_guard_installed() is False and stateless.refused_writes() == 0
