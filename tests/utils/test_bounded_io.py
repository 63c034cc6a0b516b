"""mdqe.utils.bounded_io: files past the size or nesting limits and unsafe zip members are refused before
they are decoded, with one line naming the file, the limit and the variable that raises it."""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdqe.utils.bounded_io import (
    UntrustedInputError,
    check_zip_member_names,
    json_depth,
    limit,
    parse_json,
    read_json_file,
    read_zip_member,
)

# JSON values whose strings hold the characters the depth scan must see through
_TEXT = st.text(alphabet='[]{}"\\ab\u00e9', max_size=8)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=20,
)


def depth(value) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


@settings(max_examples=200, derandomize=True, database=None)
@given(JSON_VALUES, st.booleans())
def test_the_depth_scan_equals_the_nesting_of_any_json(value, ascii_only):
    assert json_depth(json.dumps(value, ensure_ascii=ascii_only).encode()) == depth(value)


def test_a_json_nested_past_the_limit_is_refused_with_one_line():
    with pytest.raises(UntrustedInputError) as error:
        parse_json(b"[" * 100_000 + b"]" * 100_000, "deep.json")
    assert str(error.value) == (
        "deep.json: json nesting depth 100,000 is past the limit 64 (raise it with the environment variable "
        "MDQE_MAX_JSON_DEPTH)"
    )
    assert parse_json(b"[" * 64 + b"]" * 64, "ok.json") is not None


def test_a_limit_is_raised_by_its_environment_variable(monkeypatch):
    assert limit("MAX_JSON_DEPTH", 64) == 64
    monkeypatch.setenv("MDQE_MAX_JSON_DEPTH", "200")
    assert limit("MAX_JSON_DEPTH", 64) == 200
    assert parse_json(b"[" * 150 + b"]" * 150, "deep.json") is not None
    monkeypatch.setenv("MDQE_MAX_JSON_DEPTH", "lots")
    with pytest.raises(UntrustedInputError, match="MDQE_MAX_JSON_DEPTH='lots' is not an integer"):
        limit("MAX_JSON_DEPTH", 64)


def test_a_json_file_past_the_size_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "big.json"
    path.write_text(json.dumps(list(range(1000))))
    monkeypatch.setenv("MDQE_MAX_JSON_BYTES", "1000")
    with pytest.raises(UntrustedInputError, match=r"big\.json: size in bytes 4,890 is past the limit 1,000"):
        read_json_file(str(path))


@pytest.mark.parametrize(
    "name", ["../results.json", "/tmp/results.json", "a/../../results.json", "C:\\x.json"]
)
def test_a_member_named_as_a_path_out_of_the_archive_is_refused(name):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("results.json", "[]")
        archive.writestr(name, "[]")
    with zipfile.ZipFile(buffer) as archive, pytest.raises(UntrustedInputError) as error:
        check_zip_member_names(archive, "results.zip")
    assert "is a path out of the archive" in str(error.value) and "results.zip" in str(error.value)


def test_a_member_in_a_folder_is_fine():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("submission/results.json", "[]")
    with zipfile.ZipFile(buffer) as archive:
        assert check_zip_member_names(archive, "results.zip") == ["submission/results.json"]


def zip_bomb(size: int, declared: int | None = None) -> bytes:
    """A zip with `results.json` of `size` zero bytes (deflated to about size / 1000), its header saying
    `declared` bytes instead when given (a lying header)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("results.json", b"\0" * size)
    data = bytearray(buffer.getvalue())
    if declared is not None:
        struct.pack_into("<I", data, 22, declared)  # the local header's uncompressed size
        central = data.index(b"PK\x01\x02")
        struct.pack_into("<I", data, central + 24, declared)
    return bytes(data)


def test_a_zip_bomb_is_refused_by_its_declared_size_before_inflating(monkeypatch):
    monkeypatch.setenv("MDQE_MAX_JSON_BYTES", str(1 << 20))
    with (
        zipfile.ZipFile(io.BytesIO(zip_bomb(64 << 20))) as archive,
        pytest.raises(UntrustedInputError) as error,
    ):
        read_zip_member(archive, "results.json", "results.zip")
    assert "results.zip: member 'results.json': declared size in bytes 67,108,864 is past the limit" in str(
        error.value
    )


def test_a_zip_bomb_with_a_lying_header_inflates_no_more_than_it_declares():
    bomb = zip_bomb(64 << 20, declared=1000)
    tracemalloc.start()
    try:
        with (
            zipfile.ZipFile(io.BytesIO(bomb)) as archive,
            pytest.raises(zipfile.BadZipFile, match="Bad CRC-32"),
        ):
            read_zip_member(archive, "results.json", "results.zip")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # of the 64 MiB it would inflate to (2.3 MiB measured)
