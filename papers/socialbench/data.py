"""The four official SocialBench data files: from a local mirror, the cache, or GitHub at a pinned commit.

Each file is checked against its git blob id at commit 1287b67 (`git hash-object FILE` gives the same
id), wherever it comes from, so a truncated download or an edited mirror stops with one clear line.
Look-up order for a file:
1. a mirror directory holding `socialbench/<file>`: `data_dir` (`--data-dir`), else $REPRO_DATA_DIR, else
   `../shared/data` beside the checkout (`common.data.shared_mirror()`; it mirrors only
   emotional_perception.json: the other three are 4 MiB or more);
2. the cache, `$REPRO_CACHE/socialbench/<commit>/<file>`;
3. a download of the raw file from GitHub at the pinned commit into the cache (atomic; skipped when
   HF_HUB_OFFLINE=1 or `download=False`).
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from pathlib import Path

from common.data import DataError, resolve_data_dir, shared_mirror
from common.stages import atomic_write_text, cache_dir
from papers.socialbench.prompts import ItemError, column_of, normalize_category

REPO = "X-PLUG/SocialBench"
COMMIT = "1287b67034f6c76c4b3b068c51a3a9300f85ee0a"
RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/data/{file}"
# file -> git blob id at COMMIT (../shared/data/socialbench/SOURCE.md; EP recomputed from the mirror).
FILES = {
    "self_awareness.json": "3779119a9ef38fceb32cea42375c496627542dd2",
    "emotional_perception.json": "5da98a400225082f09585e27de654c37135d8fd7",
    "conversation_memory.json": "8249a01568c6c4238ddc0f9ce157aa8bb48f0082",
    "social_preference.json": "b12486923fd537b7c44b0ba2fd6e82ae95c3ae26",
}
# Which file holds which columns, so `--categories` loads only the files it needs.
FILE_COLUMNS = {
    "self_awareness.json": ("SA Style", "SA Know"),
    "emotional_perception.json": ("EP Situ.", "EP Emo."),
    "conversation_memory.json": ("CM Short", "CM Long"),
    "social_preference.json": ("SP Pos.", "SP Neu.", "SP Neg."),
}
DOWNLOAD_TIMEOUT_S = 60


class SocialBenchDataError(DataError):
    """A data file that is missing, fails its checksum, or holds a bad item (file and item named)."""


def git_blob_id(data: bytes) -> str:
    """The id git gives a file's contents: sha1 of `blob <size>\\0` + contents."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _check(data: bytes, name: str, where: str) -> bytes:
    got = git_blob_id(data)
    if got != FILES[name]:
        raise SocialBenchDataError(
            f"{where}: git blob id {got} != {FILES[name]} expected for {REPO}@{COMMIT[:7]}:data/{name} "
            "(truncated or edited file; delete it to download again)"
        )
    return data


def _verified(path: Path, name: str) -> bytes:
    return _check(path.read_bytes(), name, str(path))


def _download(name: str, dest: Path) -> None:
    """Fetch one file at the pinned commit, check its blob id in memory, then write it atomically."""
    url = RAW_URL.format(repo=REPO, commit=COMMIT, file=name)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            data = response.read()
    except OSError as err:
        raise SocialBenchDataError(
            f"could not download {url} ({err}); put the file in <data-dir>/socialbench/{name}"
        ) from None
    # UTF-8 JSON (checked): decoding and re-encoding gives the same bytes, so the blob id still holds
    atomic_write_text(dest, _check(data, name, url).decode("utf-8"))


def data_file(name: str, data_dir: str | Path | None = None, download: bool | None = None) -> Path:
    """A verified local copy of one official file (see the module docstring for the look-up order)."""
    if name not in FILES:
        raise SocialBenchDataError(f"unknown SocialBench file {name!r}; valid: {', '.join(FILES)}")
    root = resolve_data_dir(data_dir) or shared_mirror()
    if root is not None and (root / "socialbench" / name).exists():
        path = root / "socialbench" / name
        _verified(path, name)
        return path
    cached = cache_dir() / "socialbench" / COMMIT[:7] / name
    if cached.exists():
        _verified(cached, name)
        return cached
    if download is None:
        download = os.environ.get("HF_HUB_OFFLINE") != "1"
    if not download:
        where = f"{root / 'socialbench'} or " if root is not None else ""
        raise SocialBenchDataError(
            f"SocialBench file {name} is in neither {where}{cached.parent} and downloads are off "
            f"(HF_HUB_OFFLINE=1); pass --data-dir DIR holding socialbench/{name}"
        )
    _download(name, cached)
    return cached


def load_file(path: Path, name: str | None = None) -> list[dict]:
    """Items of one data file, each with `id` = "<file stem>:<index>", checked to be renderable."""
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SocialBenchDataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(items, list):
        raise SocialBenchDataError(f"{path}: expected a JSON list of items, got {type(items).__name__}")
    stem = Path(name or path.name).stem
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise SocialBenchDataError(f"{path} item {i}: expected an object, got {type(item).__name__}")
        try:
            normalize_category(item)
            label = item.get("label")
            if not isinstance(label, list) or not label or not all(isinstance(x, str) for x in label):
                raise ItemError("field 'label' should be a non-empty list of strings")
        except ItemError as err:
            raise SocialBenchDataError(f"{path} item {i}: {err}") from None
        out.append({**item, "id": f"{stem}:{i}"})
    return out


def files_for(columns: list[str] | None) -> list[str]:
    """The data files that hold the given columns (all four for None)."""
    if columns is None:
        return list(FILES)
    return [name for name, cols in FILE_COLUMNS.items() if any(c in cols for c in columns)]


def load_items(
    columns: list[str] | None = None, data_dir: str | Path | None = None, download: bool | None = None
) -> list[dict]:
    """All items of the requested columns (None: the whole benchmark), in file order."""
    items = []
    for name in files_for(columns):
        items += [
            it
            for it in load_file(data_file(name, data_dir, download), name)
            if columns is None or column_of(it) in columns
        ]
    return items
