"""Reading an uploaded ``.zip`` or ``.tar.gz`` of documents without trusting it: member count,
unpacked size and compression ratio are bounded (zip bombs), and names that climb out (``../``),
start at the root, or are links are refused per file, never written anywhere: members are read
into memory only.
"""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import PurePosixPath
from typing import Any

from doctune.documents._model import DocumentError, Limits

__all__ = ["normal_name", "read_archive"]


def read_archive(blob: bytes, limits: Limits | None = None) -> tuple[dict[str, bytes], dict[str, DocumentError]]:
    """``({name: bytes}, {name: DocumentError})`` for the archive's files; a DocumentError for the whole
    archive when it is not a zip or tar(.gz), or breaks the member-count or total-size limits."""
    limits = limits or Limits()
    if blob[:4] == b"PK\x03\x04" or blob[:4] == b"PK\x05\x06":
        return _zip(blob, limits)
    if blob[:2] == b"\x1f\x8b" or blob[257:262] == b"ustar" or blob[:3] == b"BZh" or blob[:6] == b"\xfd7zXZ\x00":
        return _tar(blob, limits)
    raise DocumentError("unknown_format", "the documents file is not a .zip or .tar.gz archive; pack the documents "
                                          "with `zip -r docs.zip folder/` or `tar czf docs.tar.gz folder/`")


def _safe_name(name: str) -> str | None:
    """Why ``name`` is a path trick, or None when it is a plain relative path."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return f"{name!r} is an absolute path; archive members must be relative"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return f"{name!r} climbs out of the archive with '..'"
    return None


def normal_name(name: str) -> str:
    """A member's name as labels refer to it: forward slashes, no leading ``./``."""
    name = PurePosixPath(name.replace("\\", "/")).as_posix()
    while name.startswith("./"):
        name = name[2:]
    return name


def _zip(blob: bytes, limits: Limits) -> tuple[dict[str, bytes], dict[str, DocumentError]]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(blob))
        infos = [i for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise DocumentError("corrupt", f"the zip archive cannot be read ({exc}); re-create it") from None
    _check_totals(len(infos), sum(i.file_size for i in infos), len(blob), limits)
    files, errors = {}, {}
    for info in infos:
        name = info.filename
        trick = _safe_name(name)
        if trick is None and stat.S_ISLNK(info.external_attr >> 16):
            trick = f"{name!r} is a symbolic link; put the file itself in the archive"
        if trick:
            errors[name] = DocumentError("path_trick", trick)
            continue
        if info.file_size > limits.max_file_bytes or (
                info.file_size > 1024**2 and info.file_size > limits.max_ratio * max(info.compress_size, 1)):
            errors[name] = DocumentError("zip_bomb", f"unpacks to {info.file_size} bytes from {info.compress_size} "
                                                     f"(limits: {limits.max_file_bytes} bytes, ratio {limits.max_ratio:.0f})")
            continue
        try:
            with zf.open(info) as fh:
                data = fh.read(limits.max_file_bytes + 1)
        except (zipfile.BadZipFile, RuntimeError, OSError, ValueError, EOFError) as exc:
            kind = "encrypted" if "encrypted" in str(exc) or "password" in str(exc) else "corrupt"
            errors[name] = DocumentError(kind, f"cannot be unpacked ({str(exc)[:120]})")
            continue
        if len(data) > limits.max_file_bytes:  # a header that lied about the size
            errors[name] = DocumentError("zip_bomb", f"unpacks past {limits.max_file_bytes} bytes")
            continue
        _add(files, errors, name, data)
    return files, errors


def _tar(blob: bytes, limits: Limits) -> tuple[dict[str, bytes], dict[str, DocumentError]]:
    files: dict[str, bytes] = {}
    errors: dict[str, DocumentError] = {}
    total = count = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
            for member in tar:
                if member.isdir():
                    continue
                count += 1
                total += member.size if member.isfile() else 0
                _check_totals(count, total, len(blob), limits)
                _tar_member(tar, member, limits, files, errors)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise DocumentError("corrupt", f"the tar archive cannot be read ({str(exc)[:120]}); re-create it") from None
    return files, errors


def _tar_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limits: Limits, files: dict[str, bytes],
                errors: dict[str, DocumentError]) -> None:
    name = member.name
    trick = _safe_name(name)
    if trick is None and (member.issym() or member.islnk()):
        trick = f"{name!r} is a link to {member.linkname!r}; put the file itself in the archive"
    if trick is None and not member.isfile():
        trick = f"{name!r} is a device, FIFO or other special file"
    if trick:
        errors[name] = DocumentError("path_trick", trick)
        return
    if member.size > limits.max_file_bytes:
        errors[name] = DocumentError("zip_bomb", f"is {member.size} bytes, over the {limits.max_file_bytes}-byte limit")
        return
    fh = tar.extractfile(member)
    _add(files, errors, name, fh.read() if fh else b"")


def _check_totals(count: int, total: int, packed: int, limits: Limits) -> None:
    if count > limits.max_files:
        raise DocumentError("zip_bomb", f"the archive holds more than {limits.max_files} files; upload fewer at once")
    if total > limits.max_total_bytes:
        raise DocumentError("zip_bomb", f"the archive unpacks to more than {limits.max_total_bytes} bytes; upload it "
                                        "in parts")
    if total > 10 * 1024**2 and total > limits.max_ratio * max(packed, 1):
        raise DocumentError("zip_bomb", f"the archive unpacks to {total} bytes from {packed} (ratio over "
                                        f"{limits.max_ratio:.0f}); that is a zip bomb, not documents")


def _add(files: dict[str, bytes], errors: dict[str, Any], name: str, data: bytes) -> None:
    key = normal_name(name)
    if key in files:
        errors[name] = DocumentError("path_trick", f"{name!r} appears twice in the archive")
        return
    files[key] = data
