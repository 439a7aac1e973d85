"""Data files: checksums, mirror / cache / download look-up, and one clear error per bad input."""

import http.server
import json
import shutil
import threading
from collections import Counter
from pathlib import Path

import pytest

from papers.socialbench import data
from papers.socialbench.data import SocialBenchDataError, data_file, git_blob_id, load_file, load_items

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
EP = SHARED / "socialbench" / "emotional_perception.json"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache, no $REPRO_DATA_DIR and no ../shared/data: only a given mirror or a download."""
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("REPRO_DATA_DIR", raising=False)
    monkeypatch.setattr(data, "shared_mirror", lambda: None)
    return tmp_path / "cache"


def test_no_data_dir_reads_the_shared_mirror_beside_the_checkout(monkeypatch, tmp_path):
    monkeypatch.delenv("REPRO_DATA_DIR", raising=False)
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "cache"))
    assert data_file("emotional_perception.json").resolve() == EP.resolve()


def test_mirror_file_matches_the_pinned_blob_id():
    assert git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"  # `git hash-object`
    assert git_blob_id(EP.read_bytes()) == data.FILES["emotional_perception.json"]


def test_load_ep_items_from_the_mirror(cache):
    items = load_items(["EP Situ.", "EP Emo."], SHARED)
    assert len(items) == 1209
    counts = Counter(it["meta"]["category"] for it in items)
    assert counts == {
        "Individual-EP-DialogueEmotionDetect": 604,
        "Individual-EP-HumorSarcasmDetect": 412,
        "Individual-EP-SituationUnderstanding": 193,
    }
    assert items[0]["id"] == "emotional_perception:0" and len({it["id"] for it in items}) == 1209
    situ = load_items(["EP Situ."], SHARED)
    assert len(situ) == 193
    assert data.files_for(["SP Neg.", "EP Emo."]) == ["emotional_perception.json", "social_preference.json"]


def test_an_edited_mirror_fails_its_checksum(cache, tmp_path):
    mirror = tmp_path / "mirror" / "socialbench"
    mirror.mkdir(parents=True)
    raw = EP.read_bytes()
    (mirror / "emotional_perception.json").write_bytes(raw[:-1] + b" ")
    with pytest.raises(SocialBenchDataError, match=r"emotional_perception.json: git blob id .* != 5da98a4"):
        data_file("emotional_perception.json", tmp_path / "mirror")


def test_missing_file_with_downloads_off_names_both_places(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SocialBenchDataError, match=r"self_awareness.json is in neither .* downloads are off"):
        data_file("self_awareness.json", SHARED)
    with pytest.raises(SocialBenchDataError, match="unknown SocialBench file 'x.json'"):
        data_file("x.json")


def _serve(directory: Path):
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(directory), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_download_is_checked_cached_and_atomic(cache, tmp_path, monkeypatch):
    good, bad = tmp_path / "good" / "data", tmp_path / "bad" / "data"
    good.mkdir(parents=True)
    bad.mkdir(parents=True)
    shutil.copy(EP, good / "emotional_perception.json")
    (bad / "emotional_perception.json").write_bytes(EP.read_bytes()[:1000])  # a truncated transfer
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for root, ok in ((bad, False), (good, True)):
        server = _serve(root.parent)
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/data/{{file}}"
            monkeypatch.setattr(data, "RAW_URL", url)
            if ok:
                path = data_file("emotional_perception.json")
            else:
                with pytest.raises(SocialBenchDataError, match="git blob id"):
                    data_file("emotional_perception.json")
                assert not any(cache.rglob("*.json*"))  # nothing half-written is left
        finally:
            server.shutdown()
            server.server_close()
    assert path.parent.parent == cache / "socialbench" and path.read_bytes() == EP.read_bytes()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert data_file("emotional_perception.json") == path  # served from the cache, offline


def test_unreachable_download_says_where_to_put_the_file(cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(data, "RAW_URL", "http://127.0.0.1:9/data/{file}")  # discard port: refused
    with pytest.raises(SocialBenchDataError, match=r"could not download .* <data-dir>/socialbench/"):
        data_file("social_preference.json")


def test_bad_files_and_items_name_the_file_and_item(tmp_path):
    path = tmp_path / "f.json"
    path.write_text("{not json")
    with pytest.raises(SocialBenchDataError, match="f.json: not valid JSON"):
        load_file(path)
    path.write_text(json.dumps({"a": 1}))
    with pytest.raises(SocialBenchDataError, match="expected a JSON list"):
        load_file(path)
    ok = {"dialogue": [], "choices": {"A": "x"}, "label": ["A"], "meta": {"category": "Group-SAP-Neutral"}}
    path.write_text(json.dumps([ok, {**ok, "meta": {"category": "Nope"}}]))
    with pytest.raises(SocialBenchDataError, match="f.json item 1: unknown category 'Nope'"):
        load_file(path)
    path.write_text(json.dumps([ok, {**ok, "label": []}]))
    with pytest.raises(SocialBenchDataError, match="item 1: field 'label'"):
        load_file(path)
    path.write_text(json.dumps([ok, 3]))
    with pytest.raises(SocialBenchDataError, match="item 1: expected an object"):
        load_file(path)
