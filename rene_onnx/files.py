"""Files a command reads and writes: the rule that no write destroys a read, and atomic writes.

**The rule.** Before any work, a command lists every path it will read (the model and its external
data files, weights, calibration and dataset files, a rank plan, a search checkpoint folder's plans)
and every path it will write (the model and its external data file, the report, plots, export
artifacts, a plan). :func:`check_io` refuses, with one :class:`~rene_onnx.errors.PathConflictError`,
any write that lands on a read or on another write -- symlinks and hard links count as the same
file -- and any write whose folder does not exist or cannot take a new file (it creates and removes
a probe file there, which is the only test that also holds for ``/proc``, read-only mounts and root).

**Atomic writes.** Every output is written to a uniquely named temporary file in its own folder
and renamed into place (:func:`atomic_write`), so a failed or killed run leaves no half-written
output and two processes writing the same path never collide. New files get the mode a plain
``open(path, "w")`` would give them (:func:`default_file_mode`), the external data file of a model
included. :func:`save_onnx` writes an ONNX model (with its tensors in ``<name>.data`` when asked).

**Reads.** :func:`check_array_file` reads only the headers of a ``.npy`` / ``.npz`` before any command
loads it: no pickled objects, and no more declared bytes than there is memory for (a zip bomb).

No torch here; onnx is imported only by :func:`save_onnx`, numpy only by the array checks.
"""
from __future__ import annotations

import glob
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
from pathlib import Path
from typing import Callable

from rene_onnx.errors import PathConflictError, UnsafeFileError, first_line

#: a temporary file older than this (seconds) is a leftover of a killed run and may be removed
STALE_TEMP_SECONDS = 3600


# ------------------------------------------------------------------------------------------------ the rule


@dataclass(frozen=True)
class _Key:
    """The identity of a path: (device, inode) when it exists, else its resolved absolute path."""

    dev_ino: tuple[int, int] | None
    real: str


def _key(path: str | os.PathLike) -> _Key:
    real = os.path.realpath(os.path.abspath(os.fspath(path)))
    try:
        st = os.stat(real)
        return _Key((st.st_dev, st.st_ino), real)
    except OSError:
        return _Key(None, real)


def _same(a: _Key, b: _Key) -> bool:
    if a.dev_ino is not None and b.dev_ino is not None:
        return a.dev_ino == b.dev_ino
    return a.real == b.real


def _inside(key: _Key, folder: _Key) -> bool:
    return os.path.commonpath([key.real, folder.real]) == folder.real and key.real != folder.real


def check_io(reads: Mapping[str, Iterable[str | os.PathLike] | str | os.PathLike | None],
             writes: Mapping[str, Iterable[str | os.PathLike] | str | os.PathLike | None], *,
             new_folders: Iterable[str] = ("plots", "output_dir")) -> None:
    """Refuse a write that would land on a read or on another write; check every write can be created.

    ``reads`` / ``writes`` map a role (an option name such as ``"model"``, ``"weights"``,
    ``"output"``, ``"report"``, ``"plots"``) to a path, several paths, or None (not used); a write role
    ``OPTION/WHAT`` names one of several files an option writes. A read that is a
    folder (a dataset, a checkpoint folder) protects every file already inside it. Raises
    :class:`PathConflictError` naming both roles. The writes of the roles in ``new_folders`` go into
    a folder that is created when missing (its parent must exist and take a new folder).
    """
    read_keys = []
    for role, paths in reads.items():
        for i, p in enumerate(_as_list(paths)):
            # a role's later paths are the files its first one brings along (a model's external data)
            shown = role.replace("_", " ")
            read_keys.append((shown if i == 0 else f"{shown} file", p, _key(p), os.path.isdir(p)))
    seen_writes = []
    for role, p in ((role, p) for role, paths in writes.items() for p in _as_list(paths)):
        k = _key(p)
        option, shown = _write_role(role, p)
        for other_role, other, ok, is_dir in read_keys:
            if _same(k, ok) or (is_dir and k.dev_ino is not None and _inside(k, ok)):
                what = f"a file in {other_role} {other}" if is_dir and not _same(k, ok) else f"{other_role} {other}"
                raise PathConflictError(f"{shown} would overwrite {what}: write it somewhere else", option=option)
        for other_role, other, ok in seen_writes:
            if _same(k, ok):
                raise PathConflictError(f"{shown} is also where {other_role} {other} goes: give them different paths",
                                        option=option)
        seen_writes.append((role, p, k))
        if option in new_folders and not Path(p).parent.exists():
            check_folder_writable(Path(p).parent, option)
        else:
            check_writable(p, option)


def _write_role(role: str, path) -> tuple[str, str]:
    """(the option to name, how to show the path) for a write role.

    ``OPTION/WHAT`` is one of several files an option writes (``output/its external data file``, a file
    of an export's ``output_dir``): errors name OPTION and say which file it is.
    """
    option, _, what = role.partition("/")
    return option, f"{path} ({what})" if what else str(path)


def _as_list(paths) -> list[str]:
    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths if p is not None]


def check_writable(path: str | os.PathLike, role: str | None = None) -> None:
    """Refuse early if ``path`` cannot be written: no such folder, a folder in its place, or no new file there."""
    path = Path(path)
    if path.is_dir():
        raise PathConflictError(f"{path} is a folder, not a file", option=role)
    parent = path.parent
    if not parent.is_dir():
        raise PathConflictError(f"folder {parent} does not exist", option=role)
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PathConflictError(f"cannot write in {parent}: {e.strerror or e}", option=role) from None


def check_folder_writable(folder: str | os.PathLike, role: str | None = None) -> None:
    """Like :func:`check_writable` for an output folder (created later if missing, when its parent exists)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PathConflictError(f"{folder} exists and is not a folder", option=role)
    check_writable((folder if folder.is_dir() else folder.parent) / ".rene-onnx-probe", role)


def external_data_files(model_path: str | os.PathLike) -> list[str]:
    """The external data files an ONNX file points at (resolved in its folder), without loading tensors."""
    import onnx

    try:
        light = onnx.load(os.fspath(model_path), load_external_data=False)
    except Exception:  # not readable: the loader reports that properly later
        return []
    folder = Path(model_path).parent
    out = []
    for t in _external_tensors(light.graph):
        loc = next((e.value for e in t.external_data if e.key == "location"), None)
        if loc and (folder / loc) not in out:
            out.append(folder / loc)
    return [os.fspath(p) for p in out]


def onnx_outputs(path: str | os.PathLike, external_data: bool) -> dict[str, str]:
    """The files :func:`save_onnx` writes for ``path``: the model, and ``<name>.data`` with external data."""
    out = {"output": os.fspath(path)}
    if external_data:
        out["output/its external data file"] = os.fspath(external_data_path(path))
    return out


# ------------------------------------------------------------------------------------------------ reads


def memory_limit() -> int:
    """Bytes an input file's arrays may take in all: half the memory available now (4 GiB if unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def check_array_file(p: str | os.PathLike, limit: int | None = None) -> dict[str, tuple[tuple[int, ...], "np.dtype"]]:
    """Read only the headers of a ``.npy`` / ``.npz``: name -> (shape, dtype); refuse what must not be loaded.

    Refused (:class:`~rene_onnx.errors.UnsafeFileError`): a file that is neither (no numpy or zip magic),
    an array of Python objects (loading it would unpickle), and arrays whose declared sizes add up to
    more than ``limit`` bytes (default :func:`memory_limit`) -- a small compressed ``.npz`` can declare
    gigabytes (a member that is not a ``.npy`` counts with its uncompressed size).
    """
    import zipfile

    import numpy as np

    p = Path(p)
    limit = memory_limit() if limit is None else limit
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    raw = 0  # a member that is not an array: numpy hands its bytes over, uncompressed
    with open(p, "rb") as f:
        magic = f.read(6)
        f.seek(0)
        if magic == b"\x93NUMPY":
            headers["arr_0"] = _npy_header(f, p)
        elif magic[:4] == b"PK\x03\x04":
            try:
                with zipfile.ZipFile(f) as z:
                    for info in z.infolist():
                        if not info.filename.endswith(".npy"):
                            raw += info.file_size
                            continue
                        with z.open(info) as member:
                            headers[info.filename[:-4]] = _npy_header(member, p, info.filename)
            except zipfile.BadZipFile as e:
                raise UnsafeFileError(f"{p}: a damaged .npz ({first_line(e)})") from None
        else:
            raise UnsafeFileError(f"{p}: not a .npy or .npz file (no numpy or zip header)")
    total = raw
    for name, (shape, dtype) in headers.items():
        if dtype.hasobject:
            raise UnsafeFileError(f"{p}: array {name!r} holds Python objects (pickled); only numeric arrays are read")
        total += int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if total > limit:
        raise UnsafeFileError(f"{p}: its arrays declare {total / 2**30:.3g} GiB, more than the {limit / 2**30:.3g} GiB "
                              f"that may be loaded here")
    return headers


def _npy_header(f, p: Path, member: str = "") -> tuple[tuple[int, ...], "np.dtype"]:
    import numpy as np
    from numpy.lib import format as npf

    where = f"{p}{':' + member if member else ''}"
    try:
        version = npf.read_magic(f)
        read = {(1, 0): npf.read_array_header_1_0, (2, 0): npf.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, _, dtype = read(f)
    except Exception as e:  # a damaged header
        raise UnsafeFileError(f"{where}: not a readable .npy header ({first_line(e)})") from None
    return tuple(int(d) for d in shape), np.dtype(dtype)


# ------------------------------------------------------------------------------------------------ writes


def default_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _temp_in(path: Path, suffix: str = ".tmp") -> str:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    os.chmod(tmp, default_file_mode())
    return tmp


def remove_stale_temps(path: str | os.PathLike, max_age: float = STALE_TEMP_SECONDS) -> list[str]:
    """Remove temporary files / folders a killed run left next to ``path`` (older than ``max_age`` seconds).

    Younger ones may belong to a run still in progress, and are left alone (their names are unique,
    so they never get in the way).
    """
    path = Path(path)
    removed = []
    now = time.time()
    for tmp in glob.glob(os.path.join(glob.escape(str(path.parent)), f".{glob.escape(path.name)}.*.tmp")):
        try:
            if now - os.path.getmtime(tmp) > max_age:
                if os.path.isdir(tmp) and not os.path.islink(tmp):
                    shutil.rmtree(tmp)
                else:
                    os.unlink(tmp)
                removed.append(tmp)
        except OSError:
            pass
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a uniquely named temporary file next to ``path``, then rename it into place.

    A failure leaves no half-written ``path`` (and no temporary file); the result gets the usual
    file mode (mkstemp alone makes 0600 files).
    """
    path = Path(path)
    remove_stale_temps(path)
    tmp = _temp_in(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text to ``path`` through a temporary file in the same folder, then rename."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    return atomic_write(path, write)


def external_data_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.parent / f"{path.name}.data"


def save_onnx(model, path: str | os.PathLike, external_data: bool = False, check: bool = True) -> Path:
    """Write an ONNX model atomically (checked with ``full_check`` first when ``check``).

    With ``external_data`` the tensors go to ``<name>.data`` beside it (models over protobuf's 2 GB
    limit). Both files are written into a uniquely named temporary folder next to ``path`` under
    their final names (so the model's data location needs no rewriting), checked there, then renamed
    into place, data first: the pair is complete whenever the model exists, and two runs saving the
    same path never share a temporary file.
    """
    import onnx

    path = Path(path)
    if not path.parent.is_dir():
        raise PathConflictError(f"folder {path.parent} does not exist", option="output")
    data_final = external_data_path(path)
    remove_stale_temps(path)
    tmpdir = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        tmp = os.path.join(tmpdir, path.name)
        if external_data:
            onnx.save(model, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                      location=data_final.name)
        else:
            onnx.save(model, tmp)
        if check:
            onnx.checker.check_model(tmp, full_check=True)
        mode = default_file_mode()
        os.chmod(tmp, mode)
        if external_data:
            tmp_data = os.path.join(tmpdir, data_final.name)
            os.chmod(tmp_data, mode)
            os.replace(tmp_data, data_final)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path


def _external_tensors(graph):
    import onnx

    for t in graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            yield t
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t") and a.t.data_location == onnx.TensorProto.EXTERNAL:
                yield a.t


def model_reads(model: str | os.PathLike | None) -> list[str]:
    """The files reading ``model`` touches: an ONNX file and its external data files (nothing for a zoo name)."""
    if model is None or not str(model).endswith(".onnx") or not os.path.isfile(model):
        return []
    return [os.fspath(model), *external_data_files(model)]


def existing(path: str | os.PathLike | None) -> str | None:
    """``path`` when it names something on disk (a dataset folder, a plan file), else None (a name, no file)."""
    return os.fspath(path) if path is not None and os.path.exists(path) else None
