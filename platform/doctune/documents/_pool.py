"""Extraction off the caller's thread and process: each file is read in a child process (from a
forkserver, so the API's threads are never forked) under an address-space limit
(``resource.setrlimit(RLIMIT_AS)``) and a wall-clock timeout, a few files at a time. A file that
hangs, loops or blows up memory ends as a per-file error; the caller's process is untouched.
"""

from __future__ import annotations

import multiprocessing
import resource
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable

from doctune.documents._model import Document, DocumentError, Limits

_CONTEXT = None


def _context() -> Any:
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(["doctune.documents._formats"])
    return _CONTEXT


def _child(conn: Any, name: str, blob: bytes, limits: Limits, language: str | None) -> None:
    """In the child: cap the address space, extract, send back a Document's dict or an error."""
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    except (ValueError, OSError):
        pass
    from doctune.documents._formats import extract_bytes

    try:
        conn.send(("ok", extract_bytes(name, blob, limits, language).to_dict()))
    except DocumentError as exc:
        conn.send(("error", exc.code, exc.message))
    except MemoryError:
        conn.send(("error", "out_of_memory", f"extraction needed more than {limits.memory_bytes >> 20} MiB"))
    except Exception as exc:  # a library's bug on a strange file is this file's error, not the upload's
        conn.send(("error", "corrupt", f"the file cannot be read ({type(exc).__name__}: {str(exc)[:160]})"))
    finally:
        conn.close()


def extract_isolated(name: str, blob: bytes, limits: Limits | None = None, language: str | None = None) -> Document:
    """One file's Document, extracted in a child process under ``limits``; DocumentError otherwise
    (including ``timeout``, ``out_of_memory`` and ``crashed``)."""
    limits = limits or Limits()
    ctx = _context()
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, name, blob, limits, language), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(limits.timeout_s):
            raise DocumentError("timeout", f"extraction took longer than {limits.timeout_s:.0f} s; split the document "
                                           "or upload its pages as separate files")
        try:
            reply = parent.recv()
        except EOFError:
            proc.join(5)
            raise DocumentError("crashed" if proc.exitcode not in (None, 0) else "out_of_memory",
                                f"the extractor died (exit {proc.exitcode}) on this file, probably from its size; "
                                "re-save or split it") from None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        parent.close()
    if reply[0] == "ok":
        return Document.from_dict(reply[1])
    raise DocumentError(reply[1], reply[2])


def extract_many(files: Iterable[tuple[str, bytes]], limits: Limits | None = None, language: str | None = None,
                 progress: Callable[[str], None] | None = None) -> dict[str, Document | DocumentError]:
    """Each file's Document or DocumentError, ``limits.workers`` files at a time, in input order."""
    limits = limits or Limits()
    files = list(files)

    def one(item: tuple[str, bytes]) -> Document | DocumentError:
        try:
            return extract_isolated(item[0], item[1], limits, language)
        except DocumentError as exc:
            return exc
        finally:
            if progress:
                progress(item[0])

    with ThreadPoolExecutor(max_workers=max(1, limits.workers)) as pool:
        results = list(pool.map(one, files))
    return {name: result for (name, _), result in zip(files, results)}
