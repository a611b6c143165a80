"""Sweep specifications: the TOML format of ``sweeps/*.toml`` parsed, checked and written.

A spec names the activation(s), the axes ``sw2``, ``sb2`` (and optionally ``rho``), the
chunking and the solver options (format: ``sweeps/README.md``).  Every error names the
source, the dotted key and, when known, the line.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core import validate as V
from ..core.activation import builtin_activations, get_activation
from ..core.vocabulary import CRITICAL_TOL, DEPTH_CONSTANT, Q0

__all__ = ["SweepSpec", "parse_spec", "load_spec", "as_spec"]

# --------------------------------------------------------------------------- spec format
_TOP_KEYS = ("name", "description", "activation", "axes", "chunks", "options")
_ACT_KEYS = ("name", "params", "label")
_AXES = ("sw2", "sb2", "rho")  # the order of the optional/required grid axes in the spec
_RANGE_KEYS = ("start", "stop", "count", "spacing")
_AXIS_KEYS = _RANGE_KEYS + ("values",)
_CHUNK_KEYS = ("sw2", "sb2")
_OPTION_KEYS = ("q0", "depth_constant", "critical_tol", "rho")
_SPACINGS = ("linear", "log")

# About 10^4 points per chunk: a few seconds of work for the quadrature activations
# (~0.2 ms per tanh point), large enough that the ~40 ms of zarr bookkeeping per chunk is
# noise, small enough that a stopped run loses little work.
_DEFAULT_CHUNK = 100


def _line_of(text, table, key):
    """Best-effort 1-based line of ``key = ...`` inside ``[table]`` of a TOML text (or None)."""
    if not text:
        return None
    current = ""
    fallback = None
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line.startswith("["):
            current = line.strip("[] ")
            continue
        head = line.split("=", 1)[0].strip().strip('"').strip("'") if "=" in line else ""
        dotted = head.split(".")
        if head == key and current == table:
            return no
        # Dotted keys ("axes.sw2.start = ...") or inline tables put the key elsewhere.
        if fallback is None and (dotted[-1] == key or f"{key} =" in line or f"{key}=" in line):
            fallback = no
    if table and table.split(".")[-1] == key:
        for no, raw in enumerate(text.splitlines(), 1):
            if raw.split("#", 1)[0].strip().strip("[] ") == table:
                return no
    return fallback


class _Checker:
    """Builds one-line ValueErrors that name the source, the key and (when known) the line."""

    def __init__(self, source, text):
        self.source = source
        self.text = text

    def fail(self, table, key, message):
        where = f"{table}.{key}" if table and key else (table or key)
        line = _line_of(self.text, table, key) if key else _line_of(self.text, "", table)
        at = f" (line {line})" if line else ""
        raise ValueError(f"sweep spec {self.source}: {where}{at}: {message}")

    def keys(self, table, mapping, allowed):
        if not isinstance(mapping, dict):
            self.fail("", table, f"must be a table, got {type(mapping).__name__}")
        for k in mapping:
            if k not in allowed:
                self.fail(table, k, f"unknown key {k!r}; allowed keys: {', '.join(allowed)}")

    def number(self, table, key, value, **bounds):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(table, key, f"must be a number, got {value!r}")
        try:
            return V.scalar(key, value, **bounds)
        except ValueError as err:
            self.fail(table, key, str(err))


def _parse_activation(chk, entry, where):
    # For `activation = "tanh"` errors point at the `activation` key itself.
    name_key = ("", "activation") if isinstance(entry, str) else ("activation", "name")
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict):
        chk.fail("", "activation", f"{where}must be a name or a table with a name, got {entry!r}")
    chk.keys("activation", entry, _ACT_KEYS)
    name = entry.get("name")
    if not isinstance(name, str):
        chk.fail("activation", "name", f"{where}must be a string, got {name!r}")
    params = entry.get("params", {})
    if not isinstance(params, dict):
        chk.fail("activation", "params", f"{where}must be a table, got {params!r}")
    key = name.strip().lower().replace("-", "_")
    if key not in builtin_activations():
        # Registered (custom) activations live only in this process: worker processes and
        # later resumes could not rebuild them, so sweeps accept built-in names only.
        chk.fail(*name_key, f"{where}unknown activation {name!r}; sweeps accept the "
                 f"built-in activations: {', '.join(builtin_activations())}")
    try:
        act = get_activation(key, **params)
    except ValueError as err:
        chk.fail("activation", "params", f"{where}{err}")
    label = entry.get("label")
    if label is None:
        p = ",".join(f"{k}={v:g}" for k, v in act.parameters.items())
        label = f"{act.name}({p})" if p else act.name
    if not isinstance(label, str) or not label:
        chk.fail("activation", "label", f"{where}must be a non-empty string, got {label!r}")
    return {"label": label, "name": act.name, "params": act.parameters}


def _parse_axis(chk, name, table):
    where = f"axes.{name}"
    chk.keys(where, table, _AXIS_KEYS)
    is_rho = name == "rho"
    bounds = dict(minimum=0.0, inclusive=False, maximum=1.0) if is_rho else dict(minimum=0.0)
    if "values" in table:
        extra = [k for k in _RANGE_KEYS if k in table]
        if extra:
            chk.fail(where, extra[0], "give either 'values' or 'start'/'stop'/'count', not both")
        vals = table["values"]
        if not isinstance(vals, list) or not vals:
            chk.fail(where, "values", f"must be a non-empty array of numbers, got {vals!r}")
        vals = [chk.number(where, "values", v, **bounds) for v in vals]
        if any(b <= a for a, b in zip(vals, vals[1:])):
            chk.fail(where, "values", "must be strictly increasing")
        return {"values": vals}
    missing = [k for k in ("start", "stop", "count") if k not in table]
    if missing:
        chk.fail(where, missing[0], "missing; an axis needs 'values' or start, stop and count")
    start = chk.number(where, "start", table["start"], **bounds)
    stop = chk.number(where, "stop", table["stop"], **bounds)
    count = table["count"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        chk.fail(where, "count", f"must be a positive integer, got {count!r}")
    spacing = table.get("spacing", "linear")
    if spacing not in _SPACINGS:
        chk.fail(where, "spacing", f"must be one of {', '.join(_SPACINGS)}, got {spacing!r}")
    if count == 1 and stop != start:
        chk.fail(where, "count", f"count = 1 needs start == stop, got {start:g} and {stop:g}")
    if count > 1 and not stop > start:
        chk.fail(where, "stop", f"bad range: stop ({stop:g}) must be greater than start ({start:g})")
    if spacing == "log" and start <= 0:
        chk.fail(where, "start", f"log spacing needs start > 0, got {start:g}")
    return {"start": start, "stop": stop, "count": count, "spacing": spacing}


def _axis_values(ax) -> np.ndarray:
    if "values" in ax:
        return np.array(ax["values"], dtype=np.float64)
    if ax["spacing"] == "log":
        return np.geomspace(ax["start"], ax["stop"], ax["count"])
    return np.linspace(ax["start"], ax["stop"], ax["count"])


def _normalize(raw: dict, source: str, text: str | None) -> dict:
    chk = _Checker(source, text)
    chk.keys("", raw, _TOP_KEYS)
    for k in ("name", "description"):
        if k in raw and not isinstance(raw[k], str):
            chk.fail("", k, f"must be a string, got {raw[k]!r}")
    if "activation" not in raw:
        chk.fail("", "activation", "missing; name at least one activation")
    acts = raw["activation"]
    is_list = isinstance(acts, list)
    if is_list and not acts:
        chk.fail("", "activation", "the list of activations is empty")
    entries = acts if is_list else [acts]
    parsed = [_parse_activation(chk, e, f"entry {i + 1}: " if is_list else "")
              for i, e in enumerate(entries)]
    labels = [p["label"] for p in parsed]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        chk.fail("activation", "label", f"labels must be unique, {dup[0]!r} repeats; give each "
                 f"entry a 'label'")

    axes_raw = raw.get("axes")
    if axes_raw is None:
        chk.fail("", "axes", "missing; the spec needs [axes.sw2] and [axes.sb2]")
    chk.keys("axes", axes_raw, _AXES)
    axes = {}
    for name in _AXES:
        if name in axes_raw:
            axes[name] = _parse_axis(chk, name, axes_raw[name])
        elif name != "rho":
            chk.fail("axes", name, f"missing; the spec needs [axes.{name}]")

    opts_raw = raw.get("options", {})
    chk.keys("options", opts_raw, _OPTION_KEYS)
    options = {
        "q0": chk.number("options", "q0", opts_raw.get("q0", Q0), minimum=0.0),
        "depth_constant": chk.number("options", "depth_constant",
                                     opts_raw.get("depth_constant", DEPTH_CONSTANT),
                                     minimum=0.0, inclusive=False),
        "critical_tol": chk.number("options", "critical_tol",
                                   opts_raw.get("critical_tol", CRITICAL_TOL), minimum=0.0),
    }
    if "rho" in opts_raw:
        if "rho" in axes:
            chk.fail("options", "rho", "rho is already an axis ([axes.rho]); remove one of them")
        options["rho"] = chk.number("options", "rho", opts_raw["rho"], minimum=0.0,
                                    inclusive=False, maximum=1.0)
    elif "rho" not in axes:
        options["rho"] = 1.0

    chunks_raw = raw.get("chunks", {})
    chk.keys("chunks", chunks_raw, _CHUNK_KEYS)
    chunks = {}
    for k in _CHUNK_KEYS:
        v = chunks_raw.get(k, _DEFAULT_CHUNK)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            chk.fail("chunks", k, f"must be a positive integer, got {v!r}")
        chunks[k] = v

    return {
        "name": raw.get("name", ""),
        "description": raw.get("description", ""),
        "activation": parsed if is_list else parsed[0],
        "axes": axes,
        "options": options,
        "chunks": chunks,
    }


def _toml_value(v):
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def _to_toml(spec: dict) -> str:
    """TOML text of a normalized spec (for specs given as dicts, so the store records one)."""
    out = [f"name = {_toml_value(spec['name'])}", f"description = {_toml_value(spec['description'])}"]
    acts = spec["activation"]
    for a in (acts if isinstance(acts, list) else [acts]):
        out += ["", "[[activation]]" if isinstance(acts, list) else "[activation]",
                f"name = {_toml_value(a['name'])}", f"label = {_toml_value(a['label'])}",
                f"params = {_toml_value(a['params'])}"]
    for name, ax in spec["axes"].items():
        out += ["", f"[axes.{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in ax.items()]
    for table in ("chunks", "options"):
        out += ["", f"[{table}]"] + [f"{k} = {_toml_value(v)}" for k, v in spec[table].items()]
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep specification.

    Attributes
    ----------
    name, description : str
        Free text from the spec (recorded in the dataset).
    activations : tuple of dict
        One ``{"label", "name", "params"}`` per activation, in spec order.
    activation_axis : bool
        Whether ``activation`` is a dimension (the spec gave a list); otherwise the single
        activation is recorded in the global attributes, as :func:`phase_diagram` does.
    axes : dict
        ``sw2``, ``sb2`` and optionally ``rho``: each the normalized axis table.
    options : dict
        ``q0``, ``depth_constant``, ``critical_tol`` and, without a rho axis, ``rho``.
    chunks : dict
        Chunk lengths along ``sw2`` and ``sb2`` (along activation and rho chunks are 1).
    text : str
        The TOML text the spec came from (generated for specs given as dicts).
    source : str
        Where the spec came from (file name or ``"<dict>"``), for messages only.
    """

    name: str
    description: str
    activations: tuple
    activation_axis: bool
    axes: dict
    options: dict
    chunks: dict
    text: str = field(repr=False)
    source: str = field(default="<dict>", repr=False)

    @classmethod
    def _from_normalized(cls, norm, text, source):
        acts = norm["activation"]
        return cls(name=norm["name"], description=norm["description"],
                   activations=tuple(acts if isinstance(acts, list) else [acts]),
                   activation_axis=isinstance(acts, list), axes=norm["axes"],
                   options=norm["options"], chunks=norm["chunks"], text=text, source=source)

    def to_dict(self) -> dict:
        """The normalized spec as plain JSON-compatible data."""
        acts = [dict(a) for a in self.activations]
        return {"name": self.name, "description": self.description,
                "activation": acts if self.activation_axis else acts[0],
                "axes": self.axes, "options": self.options, "chunks": dict(self.chunks)}

    def with_chunks(self, chunks) -> "SweepSpec":
        """The same spec with other chunk lengths (an int, a (sw2, sb2) pair or a dict)."""
        if chunks is None:
            return self
        if isinstance(chunks, (int, np.integer)) and not isinstance(chunks, bool):
            chunks = {"sw2": int(chunks), "sb2": int(chunks)}
        elif isinstance(chunks, (tuple, list)):
            if len(chunks) != 2:
                raise ValueError(f"chunks must be (sw2, sb2), got {chunks!r}")
            chunks = dict(zip(_CHUNK_KEYS, chunks))
        if not isinstance(chunks, dict):
            raise ValueError(f"chunks must be an int, a (sw2, sb2) pair or a dict, got {chunks!r}")
        merged = dict(self.chunks)
        for k, v in chunks.items():
            if k not in _CHUNK_KEYS:
                raise ValueError(f"chunks: unknown axis {k!r}; chunk lengths are set for "
                                 f"{', '.join(_CHUNK_KEYS)}")
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"chunks.{k} must be a positive integer, got {v!r}")
            merged[k] = int(v)
        d = self.to_dict()
        d["chunks"] = merged
        return SweepSpec._from_normalized(d, self.text, self.source)

    # ---- grid geometry
    @property
    def dims(self) -> tuple:
        """Dimension names of the dataset: (activation, rho, sw2, sb2), present ones only."""
        return ((("activation",) if self.activation_axis else ())
                + (("rho",) if "rho" in self.axes else ()) + ("sw2", "sb2"))

    def axis(self, name) -> np.ndarray:
        """Coordinate values of ``sw2``, ``sb2`` or ``rho``."""
        return _axis_values(self.axes[name])

    @property
    def shape(self) -> tuple:
        return tuple(len(self.activations) if d == "activation" else len(self.axis(d))
                     for d in self.dims)

    @property
    def chunk_shape(self) -> tuple:
        """Storage chunk of every variable: 1 along activation and rho."""
        return tuple(min(self.chunks[d], n) if d in self.chunks else 1
                     for d, n in zip(self.dims, self.shape))

    @property
    def chunk_grid(self) -> tuple:
        """Number of chunks along each dimension."""
        return tuple(-(-n // c) for n, c in zip(self.shape, self.chunk_shape))


def parse_spec(text: str, source: str = "<string>") -> SweepSpec:
    """Validate a sweep spec given as TOML text.

    Raises
    ------
    ValueError
        TOML syntax errors (with line and column), unknown keys, bad ranges, unknown
        activations; the message names the offending key and, when it can, its line.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"sweep spec {source}: invalid TOML: {err}") from None
    return SweepSpec._from_normalized(_normalize(raw, source, text), text, source)


def load_spec(path) -> SweepSpec:
    """Read and validate a sweep spec file (TOML; format in ``sweeps/README.md``)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"sweep spec {str(p)!r} is not UTF-8 text (byte 0x{err.object[err.start]:02x} "
                         f"at offset {err.start}); TOML files are UTF-8") from None
    except OSError as err:
        what = "is a directory" if p.is_dir() else err.strerror
        raise ValueError(f"cannot read sweep spec {str(p)!r}: {what}") from None
    spec = parse_spec(text, source=p.name)
    if not spec.name:
        norm = spec.to_dict()
        norm["name"] = p.stem
        spec = SweepSpec._from_normalized(norm, text, p.name)
    return spec


def as_spec(spec_or_path) -> SweepSpec:
    if isinstance(spec_or_path, SweepSpec):
        return spec_or_path
    if isinstance(spec_or_path, dict):
        norm = _normalize(spec_or_path, "<dict>", None)
        return SweepSpec._from_normalized(norm, _to_toml(norm), "<dict>")
    if isinstance(spec_or_path, (str, os.PathLike)):
        return load_spec(spec_or_path)
    raise ValueError(f"sweep spec must be a path, a dict or a SweepSpec, got "
                     f"{type(spec_or_path).__name__}")

