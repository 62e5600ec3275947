"""Data taken out and put back: export then import gives every stored field of every kind
back, across both store adapters; an import killed part way resumes to the same result; a
move to the server adapter and back is verified; a backup taken under writes restores."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hirag_oz.archive import backup, dump
from hirag_oz.archive.export import export, open_service
from hirag_oz.archive.load import import_dump
from hirag_oz.archive.move import move
from hirag_oz.config import Settings
from hirag_oz.embeddings.onnx import OnnxMiniLMEmbedder
from hirag_oz.errors import ConflictError, ValidationError
from hirag_oz.service import Hirag
from hirag_oz.store.base import scan
from hirag_oz.store.server import ServerStore
from tests.fake_http import JsonHandler, serving
from tests.fake_qdrant import QdrantRest
from tests.vision_samples import text_pdf

T0 = "2027-01-15T10:00:00+00:00"
T1 = "2027-03-01T09:00:00+00:00"


def _settings(data_dir: Path, **sections: Any) -> Settings:
    return Settings(  # type: ignore[arg-type]
        server={"data_dir": data_dir},
        hirag={"maintenance_enabled": False},
        rate_limit={"enabled": False},
        facts={"functional_predicates": ["lives_in"]},
        **sections,
    )


def _open(
    data_dir: Path, model: OnnxMiniLMEmbedder, server: bool = False, **sections: Any
) -> Hirag:
    store = ServerStore.connect(":memory:") if server else None
    return Hirag(_settings(data_dir, **sections), model=model, store=store)


def fill(hirag: Hirag, documents: Path) -> None:
    """Some of every kind: contexts at each level, for two agents, updated and accessed;
    facts, one closed by a later one; a session folded and closed; a document indexed."""
    for agent in ("ana", "bo"):
        hirag.store_contexts(
            items=[
                {
                    "text": f"{agent} prefers tea in the morning, item {i}",
                    "level": level,
                    "agent_id": agent,
                    "session_id": f"s{i % 2}",
                    "user_id": "u1",
                    "metadata": {"topic": "drinks", "n": i, "tags": ["a", "b"], "x": 0.5},
                    "timestamp": T0,
                }
                for i, level in enumerate(["Immediate", "ShortTerm", "LongTerm"] * 3)
            ]
        )
        found = hirag.search_contexts(query="tea", max_tokens=500, agent_id=agent)
        hirag.update_context(
            context_id=found.contexts[0].id, agent_id=agent, metadata={"edited": True}
        )
        hirag.add_fact(
            subject=agent,
            predicate="lives_in",
            object="Porto",
            confidence=0.9,
            agent_id=agent,
            source_doc="letters.pdf",
            source_anchor={"doc_id": "letters.pdf", "page": 2},
            observed_at=T0,
            valid_from=T0,
        )
        hirag.add_fact(
            subject=agent,
            predicate="lives_in",
            object="Lisbon",
            confidence=0.8,
            agent_id=agent,
            observed_at=T1,
            valid_from=T1,
        )
        for turn in range(12):
            hirag.append_messages(
                session_id="chat",
                agent_id=agent,
                user_id="u1",
                messages=[
                    {"role": "user", "content": f"turn {turn}: my dog Biscuit ate {turn} socks"},
                    {"role": "assistant", "content": f"noted, {turn} socks", "name": "helper"},
                ],
            )
        hirag.update_brief(session_id="chat", agent_id=agent, brief=f"{agent} has a dog.")
        hirag.close_session(session_id="chat", agent_id=agent)
        hirag.append_messages(
            session_id="open", agent_id=agent, messages=[{"role": "user", "content": "hello"}]
        )
    path = documents / "depot.pdf"
    path.write_bytes(text_pdf([["The Porto depot budget grew by nine percent."], ["Page two."]]))
    job = hirag.index_document(doc_url=str(path), agent_id="ana", metadata={"k": 1}, wait=True)
    assert job.status == "succeeded", job


def snapshot(hirag: Hirag, vectors: bool = True) -> dict[str, Any]:
    """Every point of every collection (payload, and vectors rounded) and every file."""
    open_service(hirag)
    prefix = hirag.settings.vector_db.collection_prefix
    found: dict[str, Any] = {}
    for kind in dump.KINDS:
        points = {}
        for page in scan(hirag.store, dump.collection(prefix, kind), None, 256, vectors):
            for p in page:
                entry: dict[str, Any] = {"payload": p.payload}
                if vectors:
                    entry["dense"] = [round(x, 4) for x in p.dense or []]
                    entry["sparse"] = (
                        sorted(
                            zip(
                                p.sparse.indices,
                                [round(v, 4) for v in p.sparse.values],
                                strict=True,
                            )
                        )
                        if p.sparse
                        else []
                    )
                points[p.id] = entry
        found[kind.suffix] = points
    root = Path(hirag.settings.server.data_dir)
    found["files"] = {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in ("pages", "docs", "jobs")
        for p in sorted((root / "vision" / folder).rglob("*"))
        if p.is_file()
    }
    return found


@pytest.fixture(scope="module")
def filled(model: OnnxMiniLMEmbedder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hirag]:
    """One filled service for the module: each test compares with what it finds at its
    start, so what an earlier test added (a backup's writers) changes no outcome."""
    root = tmp_path_factory.mktemp("archive")
    documents = root / "documents"
    documents.mkdir()
    with _open(root / "source", model) as hirag:
        fill(hirag, documents)
        yield hirag


def test_the_scenario_fills_every_kind(filled: Hirag) -> None:
    found = snapshot(filled, vectors=False)
    assert all(found[kind.suffix] for kind in dump.KINDS), {k: len(v) for k, v in found.items()}
    facts = [f["payload"] for f in found["facts"].values()]
    assert any(f.get("valid_to") for f in facts)  # a fact closed by a later one
    sessions = [s["payload"] for s in found["sessions"].values()]
    assert {s["state"] for s in sessions} == {"active", "closed"}
    assert any(p.endswith(".png") for p in found["files"])
    assert any("/docs/" in p for p in found["files"]) and any("/jobs/" in p for p in found["files"])


@pytest.mark.parametrize("via", ["edge", "server"])
def test_export_then_import_gives_everything_back(
    filled: Hirag, model: OnnxMiniLMEmbedder, tmp_path: Path, via: str
) -> None:
    before = snapshot(filled)
    first = tmp_path / "first.jsonl.gz"
    exported = export(filled, first)
    assert sum(exported.points.values()) == sum(len(before[k.suffix]) for k in dump.KINDS)
    # Into the other adapter and out again, then into an empty embedded store.
    with _open(tmp_path / "middle", model, server=via == "server") as middle:
        report = import_dump(middle, first)
        assert report.complete and report.skipped == 0 and report.embedded == 0
        assert snapshot(middle) == before
        second = tmp_path / "second.jsonl"
        export(middle, second)
    with _open(tmp_path / "last", model) as last:
        assert import_dump(last, second).complete
        assert snapshot(last) == before
        again = import_dump(last, second)  # idempotent: nothing is written twice
        assert sum(again.written.values()) == 0 and again.files_written == 0
        assert sum(again.unchanged.values()) == sum(exported.points.values())
        # The imported data serves: search, facts valid now, the session's messages.
        hits = last.search_contexts(query="tea", max_tokens=500, agent_id="bo")
        assert hits.contexts and all(c.agent_id == "bo" for c in hits.contexts)
        facts = last.query_facts(subject="ana", agent_id="ana")
        assert [f.object for f in facts.facts if f.valid_to is None] == ["Lisbon"]
        assert last.get_session(session_id="chat", agent_id="ana").state == "closed"
        regions = last.search_regions(query="depot budget", agent_id="ana", top_k=2)
        assert regions.regions


def test_an_import_without_vectors_embeds_them_again(
    filled: Hirag, model: OnnxMiniLMEmbedder, tmp_path: Path
) -> None:
    before = snapshot(filled)
    path = tmp_path / "bare.jsonl"
    export(filled, path, vectors=False)
    assert b'"dense"' not in path.read_bytes()
    with _open(tmp_path / "bare", model) as target:
        report = import_dump(target, path)
        after = snapshot(target)
    assert report.embedded == sum(len(before[s]) for s in before if s not in ("sessions", "files"))
    for suffix in before:
        if suffix == "files":
            assert after[suffix] == before[suffix]
            continue
        assert after[suffix].keys() == before[suffix].keys()
        for point_id, entry in before[suffix].items():
            again = after[suffix][point_id]
            assert again["payload"] == entry["payload"] and again["sparse"] == entry["sparse"]
            assert (
                max(abs(a - b) for a, b in zip(again["dense"], entry["dense"], strict=True)) < 2e-3
            )


def test_an_agent_export_holds_that_agent_only(filled: Hirag, tmp_path: Path) -> None:
    path = tmp_path / "ana.jsonl"
    report = export(filled, path, agent_id="ana")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    points = [line for line in lines if line["type"] == "point"]
    assert points and {p["payload"]["agent_id"] for p in points} == {"ana"}
    assert sum(report.points.values()) == len(points)
    assert report.files == sum(1 for line in lines if line["type"] == "file") > 0
    assert export(filled, tmp_path / "nobody.jsonl", agent_id="nobody").files == 0


def test_a_hostile_dump_is_refused_or_skipped_line_by_line(
    filled: Hirag, model: OnnxMiniLMEmbedder, tmp_path: Path
) -> None:
    good = tmp_path / "good.jsonl"
    export(filled, good, agent_id="bo")
    lines = good.read_text().splitlines()
    head, body, end = lines[0], lines[1:-1], lines[-1]
    point = json.loads(body[0])
    bad = [
        "not json",
        "[1, 2]",
        json.dumps({"type": "point", "collection": "../etc", "id": "x", "payload": {}}),
        json.dumps({**point, "payload": {**point["payload"], "agent_id": 7}}),
        json.dumps({**point, "dense": ["a"]}),
        json.dumps({**point, "id": "not-a-uuid"}),
        json.dumps({**point, "sparse": {"indices": [2**40], "values": [1.0]}}),
        json.dumps({"type": "file", "path": "vision/../../escape.txt", "data": "aGk="}),
        json.dumps({"type": "file", "path": "/etc/passwd", "data": "aGk="}),
        json.dumps({"type": "file", "path": "vision/pages/x/1.png", "data": "@@@"}),
        json.dumps({"type": "mystery"}),
    ]
    hostile = tmp_path / "hostile.jsonl"
    hostile.write_text("\n".join([head, *bad, *body, end]) + "\n")
    with _open(tmp_path / "target", model) as target:
        report = import_dump(target, hostile)
        assert report.skipped == len(bad) and report.complete
        assert [s["line"] for s in report.skips] == list(range(2, 2 + len(bad)))
        assert sum(report.written.values()) == len(body) - sum(
            1 for line in body if json.loads(line)["type"] == "file"
        )
        assert not (tmp_path / "escape.txt").exists()
        # A file that is not a dump, a newer dump and a newer data format are refused whole.
        for first, message in [
            ('{"hello": 1}', "not a hirag-oz dump"),
            (json.dumps({**json.loads(head), "version": 99}), "dump format 99"),
            (
                json.dumps(
                    {
                        **json.loads(head),
                        "data_format": {"version": 9, "migrations": ["9999-future"]},
                    }
                ),
                "newer than format",
            ),
        ]:
            refused = tmp_path / "refused.jsonl"
            refused.write_text(first + "\n" + end + "\n")
            with pytest.raises(ValidationError, match=message):
                import_dump(target, refused)
        cut = tmp_path / "cut.jsonl"
        cut.write_text("\n".join([head, *body[:3]]) + "\n")
        assert not import_dump(target, cut).complete


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "hirag_oz.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "HIRAG_HIRAG__MAINTENANCE_ENABLED": "false", **(env or {})},
    )


def test_an_import_killed_part_way_resumes_to_the_same_result(
    model: OnnxMiniLMEmbedder, tmp_path: Path
) -> None:
    # Without vectors, so that the import embeds: slow enough to be killed in the middle.
    with _open(tmp_path / "big", model) as source:
        for start in range(0, 2000, 500):
            source.store_contexts(
                items=[
                    {"text": f"note {i}: the shipment {i} left dock {i % 17}", "agent_id": "a"}
                    for i in range(start, start + 500)
                ]
            )
        dump_path = tmp_path / "big.jsonl.gz"
        export(source, dump_path, vectors=False)
        expected = snapshot(source, vectors=False)
    target_dir = tmp_path / "target"
    checkpoints = target_dir / "imports"
    killed = _cli("import", str(dump_path), "--data-dir", str(target_dir))
    deadline = time.monotonic() + 240
    while not any(checkpoints.glob("*.json")) and killed.poll() is None:
        assert time.monotonic() < deadline, "the import never recorded a checkpoint"
        time.sleep(0.05)
    assert killed.poll() is None, killed.communicate()
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    [checkpoint] = checkpoints.glob("*.json")
    resumed_at = json.loads(checkpoint.read_text())["resumed_at_line"]
    assert 1 < resumed_at < 2001
    resumed = _cli("import", str(dump_path), "--data-dir", str(target_dir))
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["complete"] and report["resumed_at_line"] == resumed_at
    assert not any(checkpoints.glob("*.json"))
    with _open(target_dir, model) as target:
        assert snapshot(target, vectors=False) == expected


def test_move_to_the_server_adapter_and_back_is_verified(
    filled: Hirag, model: OnnxMiniLMEmbedder, tmp_path: Path
) -> None:
    before = snapshot(filled)
    server = _open(Path(filled.settings.server.data_dir), model, server=True)
    try:
        there = move(filled, server)
        assert there.verified and there.sampled > 0, there.mismatches
        assert sum(there.copied.values()) == sum(c for c, _ in there.counts.values())
        assert snapshot(server) == before
        assert sum(move(filled, server).copied.values()) == 0  # resumable: nothing left to copy
        # Damage one point on the server: the check finds it, and a move again mends it.
        prefix = server.settings.vector_db.collection_prefix
        [point] = server.store.scroll(f"{prefix}_facts", None, 1)
        server.store.set_payload(f"{prefix}_facts", [point.id], {"object": "Mars"})
        from hirag_oz.archive.move import MoveReport, collections, verify

        checked = MoveReport()
        verify(filled.store, server.store, collections(filled), 10_000, checked)
        assert checked.mismatches == [f"{prefix}_facts: point {point.id} differs in the target"]
        assert move(filled, server).copied[f"{prefix}_facts"] == 1
        assert snapshot(server) == before
        with _open(tmp_path / "back", model) as back:
            # Back into an empty embedded store.
            returned = move(server, back)
            assert (
                returned.verified and snapshot(back, vectors=True)["longterm"] == before["longterm"]
            )
    finally:
        server.close()


def test_a_backup_under_writes_restores_exactly(
    filled: Hirag, model: OnnxMiniLMEmbedder, tmp_path: Path
) -> None:
    stop = threading.Event()
    acked: list[str] = []
    failures: list[BaseException] = []

    def writer() -> None:
        n = 0
        while not stop.is_set():
            try:
                out = filled.store_context(text=f"written during the backup {n}", agent_id="w")
                acked.append(out.id)
            except BaseException as exc:
                failures.append(exc)
                return
            n += 1

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    while len(acked) < 20:
        time.sleep(0.01)
    taken = backup.create(filled)
    at_backup = len(acked)
    while len(acked) < at_backup + 10:
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    assert not failures, failures
    assert backup.listed(filled)[0].name == taken.name
    with gzip.open(taken.path / backup.DUMP, "rt") as f:
        in_backup = {
            line["id"]
            for line in map(json.loads, f)
            if line["type"] == "point" and line["payload"].get("agent_id") == "w"
        }
    # Consistent: every write acknowledged before the backup began is in it, and the writes
    # after it ended are not.
    assert set(acked[:20]) <= in_backup and not in_backup & set(acked[at_backup + 2 :])
    with _open(tmp_path / "restored", model) as restored:
        report = backup.restore(restored, taken)
        assert report.complete and report.skipped == 0
        got = snapshot(restored)
    with gzip.open(taken.path / backup.DUMP, "rt") as f:
        lines = [json.loads(line) for line in f]
    points = {
        (line["collection"], line["id"]): line["payload"]
        for line in lines
        if line["type"] == "point"
    }
    assert {(s, i): e["payload"] for s in got if s != "files" for i, e in got[s].items()} == points
    files = {
        line["path"]: hashlib.sha256(base64.b64decode(line["data"])).hexdigest()
        for line in lines
        if line["type"] == "file"
    }
    assert got["files"] == {p: h for p, h in files.items() if not p.startswith("vision/uploads/")}
    with _open(tmp_path / "restored", model) as again, pytest.raises(ConflictError):
        backup.restore(again, taken)


def test_backups_keep_the_newest(model: OnnxMiniLMEmbedder, tmp_path: Path) -> None:
    with _open(tmp_path / "d", model, backup={"keep": 2, "dir": tmp_path / "b"}) as hirag:
        hirag.store_context(text="one", agent_id="a")
        made = [backup.create(hirag).name for _ in range(3)]
        assert [b.name for b in backup.listed(hirag)] == made[:0:-1]
        assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(made[1:])
        damaged = backup.listed(hirag)[0]
        (damaged.path / backup.DUMP).write_bytes(b"changed")
        with _open(tmp_path / "e", model) as empty, pytest.raises(ConflictError, match="sha256"):
            backup.restore(empty, damaged)


KEY = "archive-test-key-0123456789"


def test_over_http_export_import_and_backups(
    filled: Hirag, model: OnnxMiniLMEmbedder, tmp_path: Path
) -> None:
    import httpx

    from hirag_oz.api.app import create_app
    from tests.conftest import ServerThread, keyed_settings

    before = snapshot(filled)
    dumped = tmp_path / "dump.jsonl"
    export(filled, dumped)
    auth = {"Authorization": f"Bearer {KEY}"}
    # A dump an earlier server was receiving when it stopped: removed at start.
    stale = tmp_path / "served" / "imports" / ".upload-0123.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a dump")
    app = create_app(
        keyed_settings(tmp_path / "served", KEY, facts={"functional_predicates": ["lives_in"]}),
        model=model,
    )
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        assert not stale.exists()
        assert http.post("/api/v1/import", content=dumped.read_bytes()).status_code == 401
        for body in (b'{"not": "a dump"}\n', b"\x1f\x8b not gzip at all", b"[" * 100_000):
            refused = http.post("/api/v1/import", content=body, headers=auth)
            assert refused.status_code == 422 and refused.json()["code"] == "VALIDATION_ERROR"
        # Streamed up gzip-compressed, as the CLI's export writes it.
        imported = http.post(
            "/api/v1/import", content=gzip.compress(dumped.read_bytes()), headers=auth
        )
        assert imported.status_code == 200, imported.text
        assert imported.json()["complete"] and imported.json()["skipped"] == 0
        assert snapshot(app.state.hirag) == before
        with http.stream("GET", "/api/v1/export", params={"agent_id": "bo"}, headers=auth) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("application/x-ndjson")
            lines = [json.loads(line) for line in r.iter_lines() if line]
        assert lines[0]["type"] == "header" and lines[-1]["type"] == "end"
        assert {line["payload"]["agent_id"] for line in lines if line["type"] == "point"} == {"bo"}
        bad = http.get("/api/v1/export", params={"agent_id": "x" * 500}, headers=auth)
        assert bad.status_code == 422 and bad.json()["code"] == "VALIDATION_ERROR"
        made = http.post("/api/v1/backups", headers=auth)
        assert made.status_code == 201, made.text
        listed = http.get("/api/v1/backups", headers=auth).json()["backups"]
        assert [b["name"] for b in listed] == [made.json()["name"]]
        assert made.json()["points"] == {k: len(v) for k, v in before.items() if k != "files"}


class _QdrantHandler(JsonHandler):
    rest: QdrantRest

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        status, body = self.rest(self.command, self.path, self.rfile.read(length))
        self.send_json(status, body)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _answer


def test_the_move_command_goes_to_a_qdrant_server_and_back(
    model: OnnxMiniLMEmbedder, tmp_path: Path
) -> None:
    with _open(tmp_path / "data", model) as hirag:
        hirag.store_contexts(
            items=[
                {"text": f"moved note {i}", "agent_id": "m", "level": "LongTerm"}
                for i in range(300)
            ]
        )
        hirag.add_fact(subject="a", predicate="b", object="c", confidence=0.9, agent_id="m")
        before = snapshot(hirag)
    handler = type("Handler", (_QdrantHandler,), {"rest": QdrantRest()})
    env = {"HIRAG_RATE_LIMIT__ENABLED": "false"}
    with serving(handler) as port:
        url = f"http://127.0.0.1:{port}"
        there = _cli("move", "--to", url, "--data-dir", str(tmp_path / "data"), env=env)
        out, err = there.communicate(timeout=300)
        assert there.returncode == 0, err.decode()
        report = json.loads(out)
        assert report["verified"] and report["counts"]["contexts_longterm"] == [300, 300]
        # Some points lost on the server, as after a move cut short: a move again copies them.
        server = ServerStore.connect(url)
        lost = [p.id for p in server.scroll("contexts_longterm", None, 40)]
        server.delete("contexts_longterm", lost)
        server.close()
        again = _cli("move", "--to", url, "--data-dir", str(tmp_path / "data"), env=env)
        out, err = again.communicate(timeout=300)
        assert again.returncode == 0, err.decode()
        report = json.loads(out)
        assert report["copied"]["contexts_longterm"] == 40 and report["verified"]
        assert report["unchanged"]["contexts_longterm"] == 260
        back = _cli("move", "--from", url, "--data-dir", str(tmp_path / "back"), env=env)
        out, err = back.communicate(timeout=300)
        assert back.returncode == 0, err.decode()
        assert json.loads(out)["verified"]
    with _open(tmp_path / "back", model) as returned:
        got = snapshot(returned)
    assert {k: v for k, v in got.items() if k != "files"} == {
        k: v for k, v in before.items() if k != "files"
    }
    usage = _cli("move", "--data-dir", str(tmp_path / "data"))
    assert usage.wait(timeout=120) == 2


def test_a_tenants_data_is_exported_and_moved_as_its_own(
    model: OnnxMiniLMEmbedder, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from hirag_oz.cli import cli

    data = tmp_path / "data"
    with _open(data, model) as hirag:
        hirag.store_context(text="the default tenant's note", agent_id="a")
        hirag.tenant("acme").store_context(text="acme's note", agent_id="a")
        server = _open(data, model, server=True)
        try:
            report = move(hirag, server)
            assert report.verified and report.counts["contexts-t-acme_shortterm"] == (1, 1)
            moved = server.tenant("acme").search_contexts(
                query="note", max_tokens=100, agent_id="a"
            )
            assert [c.text for c in moved.contexts] == ["acme's note"]
        finally:
            server.close()
    env = {"HIRAG_HIRAG__MAINTENANCE_ENABLED": "false"}
    for tenant, expected in (("acme", "acme's note"), ("default", "the default tenant's note")):
        out = tmp_path / f"{tenant}.jsonl"
        result = CliRunner().invoke(
            cli, ["export", str(out), "--data-dir", str(data), "--tenant", tenant], env=env
        )
        assert result.exit_code == 0, result.output
        texts = [
            line["payload"]["text"]
            for line in map(json.loads, out.read_text().splitlines())
            if line["type"] == "point"
        ]
        assert texts == [expected]
    bad = CliRunner().invoke(cli, ["export", "x.jsonl", "--tenant", "No!"], env=env)
    assert bad.exit_code != 0
