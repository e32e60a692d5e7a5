"""The tilegraph file container: a JSON header and raw tensors, checksummed. It replaces
pickle for compileAndExport files and for executable-cache entries, so that reading a file
can never run code, and a truncated, corrupted or tampered file is refused with an error
that names it.

Layout (all integers little-endian):

    magic    8 bytes   b"TGARCHV\\n"
    version  u32       FORMAT_VERSION
    length   u64       byte length of the header
    header   JSON      {"kind": ..., "meta": {...}, "texts": {name: str},
                        "tensors": [{"name", "dtype", "shape", "offset", "nbytes"}]}
    payload  bytes     tensor data, each tensor 64-byte aligned, offsets relative to here
    digest   32 bytes  SHA-256 of everything above

Files are written to a private temporary file in the destination's directory (O_EXCL,
mode 0600: a planted symlink is never followed) and renamed over the destination.
"""
import hashlib
import json
import os
import struct
import tempfile

import torch

MAGIC = b"TGARCHV\n"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sIQ")  # magic, version, header length
_DIGEST = 32
_ALIGN = 64
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
           "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32,
           "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}
_NAMES = {v: k for k, v in _DTYPES.items()}


class ArchiveError(ValueError):
    """A tilegraph file that cannot be read: truncated, corrupted, tampered or foreign."""


def write(path, kind, meta, texts=None, tensors=None):
    """Writes an archive atomically. `tensors` maps names to CPU tensors."""
    entries, chunks, offset = [], [], 0
    for name, t in (tensors or {}).items():
        t = t.detach().contiguous().cpu()
        if t.dtype not in _NAMES:
            raise TypeError(f"{name}: tilegraph files cannot hold dtype {t.dtype}")
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        pad = (-offset) % _ALIGN
        chunks.append(b"\0" * pad + data)
        offset += pad
        entries.append(dict(name=name, dtype=_NAMES[t.dtype], shape=list(t.shape),
                            offset=offset, nbytes=len(data)))
        offset += len(data)
    header = json.dumps(dict(kind=kind, meta=meta, texts=texts or {}, tensors=entries),
                        separators=(",", ":")).encode()
    body = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header + b"".join(chunks)
    _write_atomically(path, body + hashlib.sha256(body).digest())


def _write_atomically(path, data):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tilegraph-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic; replaces a symlink at `path` itself, not its target
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class Archive:
    """A verified archive: kind, meta (JSON), texts and tensors (torch, on CPU)."""

    def __init__(self, kind, meta, texts, tensors):
        self.kind, self.meta, self.texts, self.tensors = kind, meta, texts, tensors


def read(path, expected_kind):
    """Reads and verifies an archive; raises ArchiveError naming `path` on any defect."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) if expected_kind == "cache" else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ArchiveError(f"{path}: cannot be opened ({e.strerror})") from None
    try:  # (a directory opens; reading it names the descriptor, not the path)
        with os.fdopen(fd, "rb") as f:
            data = bytearray(f.read())
    except OSError as e:
        raise ArchiveError(f"{path}: cannot be read ({e.strerror})") from None
    return _parse(path, data, expected_kind)


def _parse(path, data, expected_kind):
    def fail(why):
        raise ArchiveError(f"{path}: {why}")

    if data[:4] == b"PK\x03\x04" or data[:1] == b"\x80":
        fail("this is a pickle-based file (an export from tilegraph before format 1, or a "
             "torch.save file); tilegraph no longer reads pickle, because loading it can run "
             "arbitrary code. Export the model again with this version")
    if len(data) < _PREFIX.size + _DIGEST:
        fail(f"truncated: {len(data)} bytes, shorter than any tilegraph file")
    magic, version, header_len = _PREFIX.unpack_from(data, 0)
    if magic != MAGIC:
        fail("not a tilegraph file (wrong magic bytes)")
    if version > FORMAT_VERSION:
        fail(f"written in tilegraph file format {version}; this tilegraph reads up to "
             f"{FORMAT_VERSION}")
    body_end = len(data) - _DIGEST
    if hashlib.sha256(memoryview(data)[:body_end]).digest() != bytes(data[body_end:]):
        fail("checksum mismatch: the file is truncated, corrupted or was modified")
    header_end = _PREFIX.size + header_len
    if header_end > body_end:
        fail("corrupt: the header runs past the end of the file")
    try:
        header = json.loads(bytes(data[_PREFIX.size:header_end]).decode())
        kind, meta, texts = header["kind"], header["meta"], header["texts"]
        entries = header["tensors"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        fail("corrupt header")
    if kind != expected_kind:
        fail(f"holds a tilegraph {kind!r}, not an {expected_kind!r}")
    if not isinstance(texts, dict) or not all(isinstance(v, str) for v in texts.values()):
        fail("corrupt header (texts)")
    payload = memoryview(data)[header_end:body_end]
    tensors = {}
    for e in entries if isinstance(entries, list) else [None]:
        try:
            tensors[e["name"]] = _tensor(e, payload)
        except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as why:
            fail(f"corrupt tensor entry {e!r:.200}: {why}")
    return Archive(kind, meta, texts, tensors)


def _tensor(entry, payload):
    dtype = _DTYPES[entry["dtype"]]
    shape, offset, nbytes = entry["shape"], entry["offset"], entry["nbytes"]
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise ValueError("bad shape")
    if type(offset) is not int or type(nbytes) is not int or offset < 0:
        raise ValueError("bad offset")
    numel = 1
    for d in shape:
        numel *= d
    itemsize = torch.empty((), dtype=dtype).element_size()
    if nbytes != numel * itemsize or offset + nbytes > len(payload) or offset % _ALIGN:
        raise ValueError("size or offset does not fit the file")
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    raw = torch.frombuffer(payload, dtype=torch.uint8, count=nbytes, offset=offset)
    if dtype == torch.bool:
        return raw.ne(0).reshape(shape)  # any byte value reads as a valid bool
    return raw.view(dtype).reshape(shape)
