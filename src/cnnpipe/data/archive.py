"""Zip and tar archives of images: fetch (local path or http(s) URL), verify, extract safely.

Archives are untrusted input. Before a single byte is written every member is checked:
no absolute paths, no ``..``, no links that leave the extraction folder, no devices, at most
``max_members`` members; while writing, the bytes actually produced are counted against
``max_bytes`` (the sizes an archive declares can lie). Only regular files and folders are
materialised, into a fresh folder that replaces the target only once everything succeeded.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from cnnpipe.core.errors import DataError
from cnnpipe.data.download import DownloadLimits, download

CHUNK_BYTES = 1 << 20
# Written last into an extracted folder: its presence means the extraction completed.
COMPLETE_MARKER = ".cnnpipe-extracted"


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str | None) -> str:
    """The file's sha256; DataError when ``expected`` is given and differs."""
    actual = sha256_of_file(path)
    if expected is not None and actual != expected.lower():
        raise DataError(f"{path}: checksum mismatch (sha256 {actual}, expected {expected.lower()})")
    return actual


def fetch_archive(
    location: str, sha256: str | None, download_dir: Path, limits: DownloadLimits
) -> tuple[Path, str]:
    """A verified local archive file and its sha256.

    URLs are downloaded once into ``download_dir`` under their checksum, so a later run (or
    a changed URL with the same content) reuses the file; a download that fails the check
    is deleted so the next run tries again instead of failing the same way.
    """
    if is_url(location):
        if sha256 is None:
            raise DataError(f"{location}: an archive URL needs its sha256 (data.archive.sha256)")
        expected = sha256.lower()
        suffix = _archive_suffix(location)
        cached = Path(download_dir) / f"archive-{expected[:16]}{suffix}"
        if cached.is_file():
            try:
                return cached, verify_sha256(cached, expected)
            except DataError:
                cached.unlink()
        download(location, cached, limits)
        try:
            return cached, verify_sha256(cached, expected)
        except DataError:
            cached.unlink(missing_ok=True)
            raise
    path = Path(location)
    if not path.is_file():
        raise DataError(f"archive {path} not found (data.archive.path_or_url)")
    return path, verify_sha256(path, sha256)


def _archive_suffix(location: str) -> str:
    name = posixpath.basename(location.split("?", 1)[0].split("#", 1)[0]).lower()
    for suffix in (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".zip"):
        if name.endswith(suffix):
            return suffix
    return ""


@dataclass(frozen=True)
class Member:
    """One archive entry, reduced to what the safety checks need."""

    name: str
    kind: str  # "file", "dir", "symlink", "hardlink" or "other"
    link_target: str = ""  # for links, as stored in the archive


def safe_relative_path(name: str) -> str:
    """The member's path relative to the extraction folder, or DataError if it could escape."""
    unified = name.replace("\\", "/")
    if unified.startswith("/") or re.match(r"^[A-Za-z]:", unified):
        raise DataError(f"archive member `{name}` has an absolute path; refusing to extract")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"archive member `{name}` contains `..`; refusing to extract")
    if not parts:
        raise DataError(f"archive member `{name}` has an empty path; refusing to extract")
    return "/".join(parts)


def check_members(members: list[Member], max_members: int) -> None:
    """DataError naming the first member that is unsafe; nothing is written by this check."""
    if len(members) > max_members:
        raise DataError(
            f"archive holds {len(members)} members, more than the limit of {max_members} "
            "(data.archive.max_members)"
        )
    for member in members:
        relative = safe_relative_path(member.name)
        if member.kind == "other":
            raise DataError(
                f"archive member `{member.name}` is a device, fifo or other special file; "
                "refusing to extract"
            )
        if member.kind in ("symlink", "hardlink"):
            target = member.link_target.replace("\\", "/")
            # Symlinks resolve from their own folder, tar hard links from the archive root.
            base = posixpath.dirname(relative) if member.kind == "symlink" else ""
            resolved = posixpath.normpath(posixpath.join(base, target))
            if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                raise DataError(
                    f"archive member `{member.name}` is a link to `{member.link_target}` outside "
                    "the extraction folder; refusing to extract"
                )


def _tar_members(archive: tarfile.TarFile) -> list[tuple[Member, tarfile.TarInfo]]:
    result = []
    for info in archive.getmembers():
        if info.isreg():
            kind = "file"
        elif info.isdir():
            kind = "dir"
        elif info.issym():
            kind = "symlink"
        elif info.islnk():
            kind = "hardlink"
        else:
            kind = "other"
        result.append((Member(info.name, kind, info.linkname), info))
    return result


def _zip_members(archive: zipfile.ZipFile) -> list[tuple[Member, zipfile.ZipInfo]]:
    result = []
    for info in archive.infolist():
        unix_mode = info.external_attr >> 16
        if stat.S_ISLNK(unix_mode):
            # A zip symlink stores its target as the member's content.
            with archive.open(info) as handle:
                target = handle.read(4096).decode("utf-8", "replace")
            result.append((Member(info.filename, "symlink", target), info))
        elif info.is_dir():
            result.append((Member(info.filename, "dir"), info))
        elif unix_mode and not (stat.S_ISREG(unix_mode) or stat.S_IFMT(unix_mode) == 0):
            result.append((Member(info.filename, "other"), info))
        else:
            result.append((Member(info.filename, "file"), info))
    return result


def _open_archive(path: Path) -> tuple[str, object]:
    if zipfile.is_zipfile(path):
        try:
            return "zip", zipfile.ZipFile(path)
        except zipfile.BadZipFile as exc:
            raise DataError(f"{path}: corrupt zip archive ({exc})") from None
    try:
        return "tar", tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a zip or tar archive ({exc})") from None


@dataclass(frozen=True)
class Extraction:
    folder: Path
    members: int
    files: int
    bytes: int
    links_not_extracted: int


def extract_archive(
    archive_path: Path, target: Path, max_bytes: int, max_members: int
) -> Extraction:
    """Extract into ``target`` (created; reused when a previous extraction completed).

    Links are checked but not recreated: image folders need regular files only, and a link
    that is never written cannot be followed out of the folder later.
    """
    target = Path(target)
    marker = target / COMPLETE_MARKER
    if marker.is_file():
        try:
            return Extraction(folder=target, **json.loads(marker.read_text()))
        except (ValueError, TypeError):
            pass  # a marker from an older layout: extract again
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        kind, archive = _open_archive(Path(archive_path))
        with archive:
            if kind == "zip":
                pairs = _zip_members(archive)
                opener = archive.open
            else:
                pairs = _tar_members(archive)
                opener = archive.extractfile
            members = [m for m, _ in pairs]
            check_members(members, max_members)
            written = _write_members(pairs, opener, staging, max_bytes, Path(archive_path))
        stats = {
            "members": len(members),
            "files": sum(m.kind == "file" for m in members),
            "bytes": written,
            "links_not_extracted": sum(m.kind in ("symlink", "hardlink") for m in members),
        }
        (staging / COMPLETE_MARKER).write_text(json.dumps(stats) + "\n")
        if target.exists():
            shutil.rmtree(target)  # an earlier, incomplete extraction
        os.replace(staging, target)
        return Extraction(folder=target, **stats)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, RuntimeError) as exc:
        raise DataError(f"{archive_path}: cannot extract ({exc})") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _write_members(
    pairs: list, opener: Callable, staging: Path, max_bytes: int, archive_path: Path
) -> int:
    written = 0
    for member, info in pairs:
        relative = safe_relative_path(member.name)
        destination = staging / relative
        if member.kind == "dir":
            destination.mkdir(parents=True, exist_ok=True)
            continue
        if member.kind != "file":
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        source = opener(info)
        if source is None:
            continue
        with source, open(destination, "xb") as out:
            for chunk in _chunks(source):
                written += len(chunk)
                if written > max_bytes:
                    raise DataError(
                        f"{archive_path}: extracting would write more than "
                        f"{max_bytes // 2**20} MiB (data.archive.max_extracted_mb); refusing"
                    )
                out.write(chunk)
    return written


def _chunks(handle) -> Iterator[bytes]:
    return iter(lambda: handle.read(CHUNK_BYTES), b"")


def dataset_root(extracted: Path, subdir: str | None = None) -> Path:
    """Where the class folders are: ``subdir`` if given, else below single wrapping folders.

    Archives are usually made by zipping one folder (``flower_photos/daisy/...``); that folder,
    not the extraction folder, is the dataset root.
    """
    if subdir:
        root = extracted / safe_relative_path(subdir)
        if not root.is_dir():
            available = ", ".join(sorted(p.name for p in extracted.iterdir() if p.is_dir()))
            raise DataError(
                f"data.archive.subdir `{subdir}` is not a folder in the archive; "
                f"top-level folders: {available or 'none'}"
            )
        return root
    root = extracted
    while True:
        visible = [
            p for p in root.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"
        ]
        if len(visible) == 1 and visible[0].is_dir() and _has_subfolders(visible[0]):
            root = visible[0]
        else:
            return root


def _has_subfolders(folder: Path) -> bool:
    return any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir())
