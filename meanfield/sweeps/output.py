"""One output policy for everything meanfield writes: netCDF files, PNG figures, zarr stores.

The rules, the same for every command and function that writes:

* An existing file or directory is never replaced unless ``overwrite`` is given, and even
  then only if it is something meanfield wrote: a netCDF file whose global attributes carry
  ``meanfield_version``, a PNG whose ``Software`` text chunk names meanfield, a zarr store
  whose root attributes carry ``meanfield_version`` (every dataset meanfield builds has it).
  A directory that is not such a store is never deleted.
* Everything is written under a temporary name in the target's directory and renamed into
  place (``os.replace``, atomic on one file system), so a crash or a kill leaves either the
  old content or the new one under the requested name, never half a file.
* Every refusal and every failure is a :class:`OutputError` (a ValueError) with one line
  naming the argument and the real cause (missing directory, a file where a directory is
  expected, read-only file system, no space left, ...).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import struct
import tempfile
import warnings
from pathlib import Path

from .._version import __version__

__all__ = ["OutputError", "check_output", "write_file", "write_store", "save_figure",
           "is_ours", "os_error_text", "SOFTWARE"]

MARK = "meanfield_version"  # global attribute every meanfield dataset carries
SOFTWARE = f"meanfield {__version__}"  # the PNG `Software` text chunk of our figures
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NETCDF_SIGNATURES = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n")
FULL_BYTES = 1 << 20  # a file system with less free space than this counts as full
KINDS = {"netcdf": "netCDF file", "png": "PNG file", "zarr": "zarr store"}


class OutputError(ValueError):
    """An output location that must not or cannot be written; the message is one line."""


def os_error_text(exc: OSError) -> str:
    """The real cause of an OSError in a few words (no errno numbers, no tracebacks)."""
    causes = {
        errno.EROFS: "read-only file system",
        errno.ENOSPC: "no space left on device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.ENOTDIR: "a path component is a file, not a directory",
        errno.EISDIR: "is a directory",
        errno.ENOENT: "no such file or directory",
        errno.ENAMETOOLONG: "file name too long",
        errno.EEXIST: "already exists",
        errno.ENOTEMPTY: "directory not empty",
    }
    return causes.get(exc.errno, exc.strerror or type(exc).__name__)


def _parent_problem(path: Path):
    """Why files cannot be created next to ``path`` (None if they can, as far as we can tell)."""
    parent = path.parent
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe != parent:
        if probe.is_dir():
            return f"directory {str(parent)!r} does not exist"
        return f"{str(probe)!r} is a file, not a directory"
    if not parent.is_dir():
        return f"{str(parent)!r} is a file, not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        try:
            readonly = bool(os.statvfs(parent).f_flag & os.ST_RDONLY)
        except OSError:
            readonly = False
        return (f"directory {str(parent)!r} is on a read-only file system" if readonly
                else f"directory {str(parent)!r} is not writable (permission denied)")
    return None


def _png_software(path: Path):
    """The PNG's ``Software`` text (None if absent); raises ValueError if not a PNG."""
    with open(path, "rb") as f:
        if f.read(8) != PNG_SIGNATURE:
            raise ValueError("not a PNG")
        while True:
            head = f.read(8)
            if len(head) < 8:
                return None
            length, kind = struct.unpack(">I4s", head)
            if kind in (b"IDAT", b"IEND") or length > 1 << 20:
                return None  # matplotlib writes its text chunks before the image data
            body = f.read(length)
            f.read(4)  # CRC
            if kind == b"tEXt" and body.startswith(b"Software\x00"):
                return body.split(b"\x00", 1)[1].decode("latin-1")


def is_ours(path, kind) -> bool:
    """Whether ``path`` is a ``kind`` ('netcdf', 'png', 'zarr') that meanfield wrote."""
    path = Path(path)
    try:
        if kind == "zarr":
            if not path.is_dir():
                return False
            meta = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
            return MARK in meta.get("attributes", {})
        if not path.is_file():
            return False
        if kind == "png":
            return (_png_software(path) or "").startswith("meanfield")
        if kind == "netcdf":
            with open(path, "rb") as f:
                if not f.read(8).startswith(NETCDF_SIGNATURES):
                    return False
            import netCDF4

            with netCDF4.Dataset(str(path), "r") as nc:
                return MARK in nc.ncattrs()
    except (OSError, ValueError, UnicodeDecodeError, AttributeError, RuntimeError):
        return False
    raise ValueError(f"unknown output kind {kind!r}")


def check_output(path, kind, *, overwrite=False, flag="-o") -> Path:
    """Check, before any work is done, that ``kind`` may be written at ``path``.

    Raises :class:`OutputError` (one line, naming ``flag``) if the directory is missing,
    not a directory or not writable, if ``path`` exists and ``overwrite`` is false, or if it
    exists and is not a ``kind`` meanfield wrote.  Returns the path.
    """
    if path is None or not str(path).strip():
        raise OutputError(f"{flag}: the output path is empty")
    path = Path(path)
    what = KINDS[kind]
    if path.name in ("", ".", ".."):
        raise OutputError(f"{flag}: {str(path)!r} is a directory; give a {what} name")
    problem = _parent_problem(path)
    if problem:
        raise OutputError(f"{flag}: cannot write {str(path)!r}: {problem}")
    if path.exists() or path.is_symlink():
        if kind != "zarr" and path.is_dir():
            raise OutputError(f"{flag}: {str(path)!r} is a directory; give a {what} name")
        if kind == "zarr" and not path.is_dir():
            raise OutputError(f"{flag}: {str(path)!r} is a file, not a zarr store (a directory)")
        if not overwrite:
            raise OutputError(f"{flag}: {str(path)!r} exists; pass --overwrite "
                              f"(overwrite=True) to replace it")
        if path.is_symlink() or not is_ours(path, kind):
            raise OutputError(f"{flag}: {str(path)!r} exists and is not a {what} written by "
                              f"meanfield; refusing to replace it")
    return path


def _fail(flag, path, exc):
    """The one-line error of a failed write.  Libraries do not always say ENOSPC (netCDF's
    HDF5 layer raises "NetCDF: HDF error"): a nearly full file system is named as such."""
    if isinstance(exc, OSError):
        cause = os_error_text(exc)
    else:
        try:
            full = shutil.disk_usage(path.parent).free < FULL_BYTES
        except OSError:
            full = False
        first = str(exc).splitlines()[0] if str(exc) else ""
        cause = ("no space left on device" if full
                 else f"{type(exc).__name__}: {first}" if first else type(exc).__name__)
    return OutputError(f"{flag}: cannot write {str(path)!r}: {cause}")


def write_file(path, writer, kind, *, overwrite=False, flag="-o") -> Path:
    """Write one file through ``writer(tmp_path)`` under a temporary name, then rename it.

    The checks of :func:`check_output` run first (again: the target may have appeared
    since).  On any failure the temporary file is removed and the target is untouched.
    """
    path = check_output(path, kind, overwrite=overwrite, flag=flag)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise _fail(flag, path, exc) from None
    try:
        writer(tmp)
        publish_mode(tmp)
        os.replace(tmp, path)
    except Exception as exc:  # the writer's library decides the type: report the cause
        raise _fail(flag, path, exc) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import (os.umask can only be read by setting it).
_UMASK = _current_umask()


def publish_mode(path):
    """Give a file or directory made by mkstemp/mkdtemp (0600/0700) the permissions of any
    new file or directory, before it is renamed into place."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~_UMASK)


def replace_dir(new: Path, target: Path):
    """Move the finished directory ``new`` to ``target``; an old ``target`` is removed only
    once the new one is in place (a crash in between leaves it in a hidden sibling)."""
    if target.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, trash / "old")
        try:
            os.replace(new, target)
        except BaseException:
            os.replace(trash / "old", target)
            raise
        finally:
            shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(new, target)


def write_store(path, writer, *, overwrite=False, flag="-o") -> Path:
    """Write a zarr store through ``writer(tmp_dir)`` into a temporary sibling directory,
    then move it into place; replaces only a store meanfield wrote (and only with
    ``overwrite``)."""
    path = check_output(path, "zarr", overwrite=overwrite, flag=flag)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    except OSError as exc:
        raise _fail(flag, path, exc) from None
    try:
        writer(str(tmp))
        publish_mode(tmp)
        replace_dir(tmp, path)
    except Exception as exc:  # the writer's library decides the type: report the cause
        raise _fail(flag, path, exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


@contextlib.contextmanager
def quiet_consolidation():
    """A context in which zarr's note that consolidated metadata is not part of the v3
    specification is not shown (we write it so that xarray opens stores without a warning)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        yield


def save_figure(fig, path, *, dpi=150, overwrite=False, flag="-o") -> Path:
    """Save a matplotlib figure as a PNG marked as meanfield's (``Software`` text chunk),
    refusing a resolution whose image would not fit in memory."""
    from ..core.budget import check_memory

    if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not dpi > 0:
        raise OutputError(f"--dpi: must be a positive number, got {dpi!r}")
    w, h = fig.get_size_inches()
    pixels = float(w * dpi) * float(h * dpi)
    # Agg renders into an RGBA buffer, and the PNG writer holds another copy of it.
    check_memory(8 * pixels, f"--dpi {dpi:g}: a {w * dpi:.0f} x {h * dpi:.0f} pixel image")
    return write_file(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png",
                                                    metadata={"Software": SOFTWARE}),
                      "png", overwrite=overwrite, flag=flag)


def write_netcdf(path, ds, *, overwrite=False, flag="-o") -> Path:
    """Write the Dataset ``ds`` to netCDF through :func:`write_file`; boolean variables are
    stored as int8 (netCDF has no boolean type)."""
    out = ds.copy()
    for name, var in out.data_vars.items():
        if var.dtype == bool:
            out[name] = var.astype("int8")
    return write_file(path, out.to_netcdf, "netcdf", overwrite=overwrite, flag=flag)
