"""Reading files that strangers published (dataset jsons, results files, CodaLab zips, images) with bounded
work.

Every limit is a named constant (here, in `mdqe.utils.rle` and in `mdqe.data.frames`) and can be raised
(or lowered) with the environment variable `MDQE_<NAME>` (`limit`), e.g. `MDQE_MAX_JSON_BYTES=8589934592`
for a json of up to 8 GiB. A file past a limit is refused with `UntrustedInputError` (one line naming the
file, the limit and the variable) before it is decoded: a json by its size on disk and its nesting depth,
a zip member by its name and the size its header declares (and, since a header can lie, by the bytes
actually inflated, read in chunks). An image is opened from memory (`open_image`).

Standard library and numpy only (Pillow on use; no torch), for the torch-free tools.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from typing import Any

import numpy as np

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "ZIP_ERRORS",
    "UntrustedInputError",
    "check_zip_member_names",
    "json_depth",
    "limit",
    "open_image",
    "parse_json",
    "past_limit",
    "read_json_file",
    "read_limited",
    "read_zip_member",
]

# The largest json we know of (YouTube-VIS 2021 train, an OVIS results file) is well under 1 GiB.
MAX_JSON_BYTES = 2 << 30
# A YouTube-VIS json nests 6 deep (annotations / track / segmentations / polygons / polygon / coordinate).
MAX_JSON_DEPTH = 64

_CHUNK = 1 << 20  # bytes read at a time
_SCAN_CHUNK = 1 << 18  # characters of the depth scan at a time (a few int64 arrays of this length)

# What zipfile raises on a corrupt, encrypted or foreign archive, besides OSError and ValueError.
ZIP_ERRORS = (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, zlib.error)


class UntrustedInputError(ValueError):
    """A file refused before it is decoded: past a size or nesting limit, or an unsafe zip member."""


def limit(name: str, default: int) -> int:
    """The limit `name` (e.g. "MAX_JSON_BYTES"): `default`, or the integer in the environment variable
    MDQE_<name> when it is set."""
    variable = f"MDQE_{name}"
    value = os.environ.get(variable)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise UntrustedInputError(f"environment variable {variable}={value!r} is not an integer") from None
    if number <= 0:
        raise UntrustedInputError(f"environment variable {variable}={value!r} must be positive")
    return number


def past_limit(source: str, what: str, found: int, name: str, cap: int) -> UntrustedInputError:
    """The error for `what` of `source` being `found`, past the limit `name` (now `cap`)."""
    return UntrustedInputError(
        f"{source}: {what} {found:,} is past the limit {cap:,} (raise it with the environment variable "
        f"MDQE_{name})"
    )


def open_image(path: str) -> Any:
    """The image file at `path` opened with Pillow from memory: Pillow reads the rest of a PNG chunk of
    the length the chunk states with one file read, which Python allocates in full before reading (a
    100-byte file could make it allocate 2 GiB); from memory it reads only what there is."""
    from PIL import Image

    with open(path, "rb") as f:
        return Image.open(io.BytesIO(f.read()))


def _json_bytes_cap() -> int:
    return limit("MAX_JSON_BYTES", MAX_JSON_BYTES)


def read_limited(stream: Any, cap: int, source: str, name: str = "MAX_JSON_BYTES") -> bytes:
    """Read `stream` to its end in chunks, refusing it as soon as it has given more than `cap` bytes."""
    chunks, total = [], 0
    while chunk := stream.read(min(_CHUNK, cap + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > cap:
            raise past_limit(source, "size in bytes (at least)", total, name, cap)
    return b"".join(chunks)


def check_zip_member_names(archive: zipfile.ZipFile, source: str) -> list[str]:
    """The member names of `archive`, refusing a name that is a path out of the archive (absolute, with
    a drive, or with a `..` component): an unpacking tool would write that file outside its folder."""
    names = archive.namelist()
    for name in names:
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or name[1:2] == ":" or ".." in parts:
            raise UntrustedInputError(f"{source}: the archive member {name!r} is a path out of the archive")
    return names


def read_zip_member(archive: zipfile.ZipFile, name: str, source: str) -> bytes:
    """The content of member `name`, refused when the size its header declares or the bytes actually
    inflated are past MAX_JSON_BYTES (a zip bomb), before more than that is inflated."""
    cap = _json_bytes_cap()
    info = archive.getinfo(name)
    where = f"{source}: member {name!r}"
    if info.file_size > cap:
        raise past_limit(where, "declared size in bytes", info.file_size, "MAX_JSON_BYTES", cap)
    with archive.open(info) as member:
        return read_limited(member, cap, where)


def json_depth(payload: bytes) -> int:
    """How deep the arrays and objects of a json text nest (0 for a scalar), without parsing it.

    Only the structural characters count: escaped backslashes and quotes are dropped, then everything but
    quotes and brackets, then the brackets inside strings; the depth is the largest running sum of the
    remaining brackets, computed in chunks so that the memory stays bounded whatever the file.
    """
    text = payload.replace(b"\\\\", b"").replace(b'\\"', b"")
    structural = np.frombuffer(text.translate(None, _NOT_STRUCTURAL), np.uint8)
    deepest, depth, quotes = 0, 0, 0
    for start in range(0, structural.size, _SCAN_CHUNK):
        chunk = structural[start : start + _SCAN_CHUNK]
        is_quote = chunk == ord('"')
        in_string = (np.cumsum(is_quote, dtype=np.int64) + quotes) % 2 == 1
        quotes += int(np.count_nonzero(is_quote))
        running = np.cumsum(np.where(in_string, 0, _STEPS[chunk]), dtype=np.int64) + depth
        deepest = max(deepest, int(running.max()))
        depth = int(running[-1])
    return deepest


_NOT_STRUCTURAL = bytes(c for c in range(256) if c not in b'"[]{}')
_STEPS = np.zeros(256, np.int64)
_STEPS[[ord("["), ord("{")]] = 1
_STEPS[[ord("]"), ord("}")]] = -1


def parse_json(payload: bytes | str, source: str) -> Any:
    """`json.loads(payload)`, refused past MAX_JSON_BYTES or MAX_JSON_DEPTH before it is parsed; json's
    own errors (ValueError: malformed json, not UTF-8, an integer of too many digits) pass through."""
    raw = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
    cap = _json_bytes_cap()
    if len(raw) > cap:
        raise past_limit(source, "size in bytes", len(raw), "MAX_JSON_BYTES", cap)
    depth, max_depth = json_depth(raw), limit("MAX_JSON_DEPTH", MAX_JSON_DEPTH)
    if depth > max_depth:
        raise past_limit(source, "json nesting depth", depth, "MAX_JSON_DEPTH", max_depth)
    try:
        return json.loads(payload)
    except RecursionError:  # only a text the depth scan misreads (e.g. UTF-16) gets here
        raise UntrustedInputError(f"{source}: the json nests too deep to be parsed") from None


def read_json_file(path: str) -> Any:
    """The json in the file at `path`, refused past MAX_JSON_BYTES (its size on disk is checked before it
    is read) or MAX_JSON_DEPTH. Raises OSError, UntrustedInputError, or json's ValueError."""
    cap = _json_bytes_cap()
    size = os.path.getsize(path)
    if size > cap:
        raise past_limit(path, "size in bytes", size, "MAX_JSON_BYTES", cap)
    with open(path, "rb") as f:
        return parse_json(read_limited(f, cap, path), path)
