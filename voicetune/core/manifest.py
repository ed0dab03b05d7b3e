"""Artifacts: atomic writes, manifests, fingerprints, and one-writer locks.

Every step writes its output folder through `atomic_output_dir` (a temporary sibling renamed into
place), ends it with a `manifest.json`, and is skipped on a re-run when `is_up_to_date` finds a
manifest whose fingerprint (hash of inputs + settings) matches and whose listed files are all there.
A later step trusts an artifact only when its manifest exists, so a crash never leaves a folder
that looks complete.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from voicetune.core.errors import MissingArtifactError, VoicetuneError

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able parts (settings, input hashes, upstream fingerprints)."""
    return sha256_text(json.dumps(parts, sort_keys=True, default=str))


def hash_tree(root: Path, suffixes: Iterable[str] | None = None) -> dict[str, str]:
    """sha256 of every regular file under root (relative posix path -> hash), sorted."""
    wanted = {s.lower() for s in suffixes} if suffixes is not None else None
    result: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        if wanted is None or path.suffix.lower() in wanted:
            result[path.relative_to(root).as_posix()] = sha256_file(path)
    return result


def library_versions(names: Iterable[str]) -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write data to path through a temporary file in the same folder, fsynced, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _os_error_to_voicetune(exc, path) from exc


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def _os_error_to_voicetune(exc: OSError, path: Path) -> VoicetuneError:
    if exc.errno == errno.ENOSPC:
        return VoicetuneError(f"disk full while writing {path}: free some space and run again")
    if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return VoicetuneError(f"cannot write {path} ({exc.strerror}): choose a writable output folder")
    return VoicetuneError(f"cannot write {path}: {exc.strerror or exc}")


@contextlib.contextmanager
def atomic_output_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success it replaces `final` in one rename.

    On any exception the temporary folder is removed and `final` is left as it was.
    """
    final = final.resolve()
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _os_error_to_voicetune(exc, final.parent) from exc
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
    except OSError as exc:
        raise _os_error_to_voicetune(exc, tmp) from exc
    try:
        yield tmp
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _os_error_to_voicetune(exc, final) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temporaries(parent: Path) -> list[Path]:
    """Delete `.name.tmp-PID` / `.name.old-PID` leftovers of killed processes; return what went."""
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        if entry.name.startswith(".") and (".tmp-" in entry.name or ".old-" in entry.name):
            pid = entry.name.rsplit("-", 1)[-1]
            if pid.isdigit() and _pid_alive(int(pid)):
                continue
            final = parent / entry.name[1:].rsplit(".old-", 1)[0]
            if ".old-" in entry.name and not final.exists():
                # killed between moving the previous artifact aside and renaming the new one in:
                # the previous one is still complete, so it goes back
                os.replace(entry, final)
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def build_manifest(
    step: str,
    fingerprint_value: str,
    settings: Mapping[str, Any],
    inputs: Mapping[str, Any],
    outputs: Mapping[str, str],
    libraries: Iterable[str] = (),
    **extra: Any,
) -> dict[str, Any]:
    """The standard manifest: what step made this, from what, with which settings and versions."""
    from voicetune import __version__

    return {
        "step": step,
        "voicetune_version": __version__,
        "created": utc_now(),
        "fingerprint": fingerprint_value,
        "settings": dict(settings),
        "inputs": dict(inputs),
        "outputs": dict(outputs),
        "versions": library_versions(libraries),
        **extra,
    }


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    write_json_atomic(folder / MANIFEST_NAME, manifest)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def require_manifest(folder: Path, what: str, run_first: str) -> dict[str, Any]:
    """The manifest of an earlier step's artifact, or one clear error naming the script to run."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise MissingArtifactError(what, folder, run_first)
    missing = [name for name in manifest.get("outputs", {}) if not (folder / name).exists()]
    if missing:
        raise VoicetuneError(
            f"{what} at {folder} is incomplete ({missing[0]} is missing): run {run_first} again",
            exit_code=2,
        )
    return manifest


def is_up_to_date(folder: Path, fingerprint_value: str) -> bool:
    """True when folder holds a manifest with this fingerprint and every listed output exists."""
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("fingerprint") != fingerprint_value:
        return False
    return all((folder / name).exists() for name in manifest.get("outputs", {}))


@contextlib.contextmanager
def exclusive_lock(target: Path, purpose: str) -> Iterator[None]:
    """Hold a non-blocking lock beside `target`; a second writer is refused with a clear line."""
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.with_name(f".{target.name}.lock")
    handle = open(lock_path, "a+")  # noqa: SIM115 - held for the whole block
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise VoicetuneError(
                f"another voicetune process is already {purpose} {target}: wait for it to finish "
                f"(or stop it) and run again"
            ) from exc
        yield
    finally:
        handle.close()
