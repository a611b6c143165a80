"""Sweeps at scale: declarative specs, chunked zarr stores, resumable and distributed runs.

A sweep is described by a small TOML file (format: ``sweeps/README.md``) naming the
activation(s), the axes ``sw2``, ``sb2`` (and optionally ``rho``), the chunking and the
options.  :func:`sweep` splits the grid into chunks, computes every chunk with
:func:`meanfield._engine.compute_points` -- the function behind :func:`meanfield.phase_diagram`
-- as one dask task, and writes each chunk into a zarr store as soon as it is done.

Resumability rests on one rule: a chunk's completion flag (the boolean zarr array
``_sweep/done``, one element per chunk) is set only after that chunk's data has been
written.  A run stopped at any moment (Ctrl-C, SIGKILL) leaves at worst a chunk whose data
is partly written and whose flag is unset; the next run recomputes exactly the chunks
whose flag is unset.  Every point depends only on its own inputs, so the stored dataset is
identical bit for bit whatever the chunking, the number of workers or the interruptions.

Durability is against the death of the process, not of the machine: the zarr store does not
fsync its chunk files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from . import _engine
from . import _validate as V
from ._version import __version__
from .activations import _BUILTINS, Activation, get_activation
from .api import (DEFAULT_CRITICAL_TOL, DEFAULT_DEPTH_CONSTANT, _attrs, _options,
                  dataset_attrs, to_dataset)

__all__ = ["SweepSpec", "SweepStatus", "load_spec", "parse_spec", "sweep", "open_sweep",
           "sweep_status", "critical_line_from_data"]

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

# Layout of the bookkeeping inside the store: a zarr subgroup, so xarray ignores it when
# opening the dataset and it travels with the store (local disk or any zarr store).
_META_GROUP = "_sweep"
_DONE = "done"
_FORMAT = 1  # version of this store layout, bumped if the bookkeeping changes

_RHO_ATTRS = {"long_name": "dropout keep probability rho", "units": "1"}
_ACT_COORD_ATTRS = {
    "activation": {"long_name": "activation function (label)", "units": "1"},
    "activation_name": {"long_name": "activation registry name", "units": "1"},
    "activation_formula": {"long_name": "activation definition", "units": "1"},
    "activation_parameters": {"long_name": "activation parameters (JSON)", "units": "1"},
}


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
    if key not in _BUILTINS:
        # Registered (custom) activations live only in this process: worker processes and
        # later resumes could not rebuild them, so sweeps accept built-in names only.
        chk.fail(*name_key, f"{where}unknown activation {name!r}; sweeps accept the "
                 f"built-in activations: {', '.join(_BUILTINS)}")
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
        "q0": chk.number("options", "q0", opts_raw.get("q0", 1.0), minimum=0.0),
        "depth_constant": chk.number("options", "depth_constant",
                                     opts_raw.get("depth_constant", DEFAULT_DEPTH_CONSTANT),
                                     minimum=0.0, inclusive=False),
        "critical_tol": chk.number("options", "critical_tol",
                                   opts_raw.get("critical_tol", DEFAULT_CRITICAL_TOL), minimum=0.0),
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
    except OSError as err:
        raise ValueError(f"cannot read sweep spec {str(p)!r}: {err.strerror}") from None
    spec = parse_spec(text, source=p.name)
    if not spec.name:
        norm = spec.to_dict()
        norm["name"] = p.stem
        spec = SweepSpec._from_normalized(norm, text, p.name)
    return spec


def _as_spec(spec_or_path) -> SweepSpec:
    if isinstance(spec_or_path, SweepSpec):
        return spec_or_path
    if isinstance(spec_or_path, dict):
        norm = _normalize(spec_or_path, "<dict>", None)
        return SweepSpec._from_normalized(norm, _to_toml(norm), "<dict>")
    if isinstance(spec_or_path, (str, os.PathLike)):
        return load_spec(spec_or_path)
    raise ValueError(f"sweep spec must be a path, a dict or a SweepSpec, got "
                     f"{type(spec_or_path).__name__}")


# --------------------------------------------------------------------------- dataset layout
def _opts(spec, rho):
    return _options(rho, spec.options["q0"], spec.options["depth_constant"],
                    spec.options["critical_tol"])


def _act(entry) -> Activation:
    return get_activation(entry["name"], **entry["params"])


def _global_attrs(spec: SweepSpec) -> dict:
    rho = spec.options.get("rho", 1.0)
    if spec.activation_axis:
        attrs = dataset_attrs(_act(spec.activations[0]), _opts(spec, rho))
        labels = ", ".join(a["label"] for a in spec.activations)
        attrs["title"] = f"mean-field phase diagrams: {labels}"
        attrs["activation"] = labels
        # Per-activation formula and parameters are coordinates along `activation`.
        for k in [k for k in attrs if k.startswith("activation_")]:
            del attrs[k]
    else:
        attrs = dataset_attrs(_act(spec.activations[0]), _opts(spec, rho))
    if "rho" in spec.axes:
        del attrs["rho"]  # rho is a coordinate
    attrs.update({
        "sweep_name": spec.name,
        "sweep_description": spec.description,
        "sweep_spec": spec.text,
        "sweep_dims": " ".join(spec.dims),
    })
    return attrs


def _strings(values) -> np.ndarray:
    # Variable-length strings: zarr v3 specifies them, unlike fixed-width '<U' arrays.
    return np.array(values, dtype=np.dtypes.StringDType())


def _coords(spec: SweepSpec) -> dict:
    coords = {}
    if spec.activation_axis:
        acts = [_act(a) for a in spec.activations]
        columns = {
            "activation": [a["label"] for a in spec.activations],
            "activation_name": [a.name for a in acts],
            "activation_formula": [a.formula for a in acts],
            "activation_parameters": [json.dumps(a.parameters, sort_keys=True) for a in acts],
        }
        for name, values in columns.items():
            coords[name] = ("activation", _strings(values), _ACT_COORD_ATTRS[name])
    if "rho" in spec.axes:
        coords["rho"] = ("rho", spec.axis("rho"), _RHO_ATTRS)
    coords["sw2"] = ("sw2", spec.axis("sw2"), _attrs("sw2"))
    coords["sb2"] = ("sb2", spec.axis("sb2"), _attrs("sb2"))
    return coords


def _variables_of(spec: SweepSpec, res: dict, act: Activation, rho: float) -> xr.Dataset:
    """A chunk's data variables with the sweep's dims; built by api.to_dataset so the
    derived variables (converged) and attributes are defined in one place."""
    ds = to_dataset(res, {}, ("sw2", "sb2"), act, _opts(spec, rho))
    lead = [d for d in spec.dims if d not in ("sw2", "sb2")]
    if lead:
        ds = ds.expand_dims(lead)
    return ds.transpose(*spec.dims)


def _template(spec: SweepSpec) -> xr.Dataset:
    """The full dataset with lazy (never computed) data: writes metadata and coordinates."""
    import dask.array as da

    # A 1 x 1 evaluation at an ordinary point supplies the variables' names, dtypes and
    # attributes (its values are discarded).
    entry = spec.activations[0]
    rho = spec.axis("rho")[0] if "rho" in spec.axes else spec.options["rho"]
    probe = _engine.compute_points(_act(entry), np.ones((1, 1)), np.ones((1, 1)), parallel=False,
                                   **_opts(spec, rho))
    small = _variables_of(spec, probe, _act(entry), rho)
    data = {name: (spec.dims, da.empty(spec.shape, dtype=v.dtype, chunks=spec.chunk_shape), v.attrs)
            for name, v in small.data_vars.items()}
    return xr.Dataset(data, coords=_coords(spec), attrs=_global_attrs(spec))


def _encoding(ds: xr.Dataset, spec: SweepSpec) -> dict:
    enc = {}
    for name, v in ds.data_vars.items():
        enc[name] = {"chunks": spec.chunk_shape}
        if v.dtype.kind in "ib":
            # Flags must decode as int8/bool, not be masked into floats.
            enc[name]["_FillValue"] = None
    return enc


# --------------------------------------------------------------------------- store handling
def _fingerprint(spec: SweepSpec) -> dict:
    """What a store must agree on to be resumed: everything that changes the data."""
    d = spec.to_dict()
    d.pop("chunks")
    return d


def _diff(a, b, prefix=""):
    """Dotted names of the keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            out += _diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [prefix or "spec"]


def _meta(store: Path):
    """The store's bookkeeping group, or None if ``store`` is not a meanfield sweep store."""
    if not (store / "zarr.json").is_file():
        return None
    try:
        g = zarr.open_group(str(store), mode="r", path=_META_GROUP)
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.GroupNotFoundError):
        return None
    return g if "spec" in g.attrs else None


def _describe(spec, chunks=None):
    return ", ".join(f"{k}={v}" for k, v in (chunks or spec.chunks).items())


def _create(store: Path, spec: SweepSpec):
    """Write the template into a temporary sibling directory, then rename it into place:
    a run killed during initialization leaves no half-made store at ``store``."""
    store.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{store.name}.init-", dir=store.parent))
    try:
        tmpl = _template(spec)
        tmpl.to_zarr(str(tmp), mode="w", compute=False, encoding=_encoding(tmpl, spec),
                     consolidated=False, zarr_format=3)
        root = zarr.open_group(str(tmp), mode="r+")
        meta = root.create_group(_META_GROUP, attributes={
            "format": _FORMAT,
            "spec": json.dumps(_fingerprint(spec), sort_keys=True),
            "chunks": dict(spec.chunks),
            "dims": list(spec.dims),
            "meanfield_version": __version__,
            "runs": [],
        })
        meta.create_array(_DONE, shape=spec.chunk_grid, chunks=(1,) * len(spec.chunk_grid),
                          dtype=bool, fill_value=False, dimension_names=list(spec.dims))
        if store.exists():
            # overwrite=True: the old store stays intact until the new one is complete.
            trash = Path(tempfile.mkdtemp(prefix=f".{store.name}.old-", dir=store.parent))
            os.replace(store, trash / "store")
            os.replace(tmp, store)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, store)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_existing(store: Path, spec: SweepSpec, chunks_given: bool):
    meta = _meta(store)
    if meta is None:
        raise ValueError(f"{str(store)!r} exists and is not a meanfield sweep store; "
                         f"refusing to touch it")
    if meta.attrs.get("format") != _FORMAT:
        raise ValueError(f"store {str(store)!r} has layout format {meta.attrs.get('format')!r}, "
                         f"this meanfield writes {_FORMAT}; pass overwrite=True "
                         f"(CLI: --overwrite) to replace it")
    stored = json.loads(meta.attrs["spec"])
    diff = _diff(stored, _fingerprint(spec))
    if diff:
        raise ValueError(f"store {str(store)!r} was written by a different spec (differs in "
                         f"{', '.join(diff)}); pass overwrite=True (CLI: --overwrite) "
                         f"to replace it")
    if meta.attrs.get("meanfield_version") != __version__:
        raise ValueError(f"store {str(store)!r} was written by meanfield "
                         f"{meta.attrs.get('meanfield_version')}, this is {__version__}; results "
                         f"could differ, pass overwrite=True (CLI: --overwrite) to recompute")
    stored_chunks = dict(meta.attrs["chunks"])
    if stored_chunks != spec.chunks:
        if chunks_given:
            raise ValueError(f"store {str(store)!r} is chunked as {_describe(spec, stored_chunks)}, "
                             f"not {_describe(spec)}; resume with the store's chunks or use "
                             f"overwrite=True (CLI: --overwrite)")
        # The spec file's chunking changed: chunking never changes the values, so resume
        # with the store's layout.
        spec = spec.with_chunks(stored_chunks)
    return spec


# --------------------------------------------------------------------------- chunk tasks
def _tasks(spec: SweepSpec, store: str, done: np.ndarray) -> list:
    """One task per chunk whose completion flag is unset."""
    sw2, sb2 = spec.axis("sw2"), spec.axis("sb2")
    rhos = spec.axis("rho") if "rho" in spec.axes else None
    cs = dict(zip(spec.dims, spec.chunk_shape))
    tasks = []
    for idx in np.ndindex(*spec.chunk_grid):
        if done[idx]:
            continue
        pos = dict(zip(spec.dims, idx))
        ia = pos.get("activation", 0)
        rho = float(rhos[pos["rho"]]) if rhos is not None else spec.options["rho"]
        region = {d: slice(i * cs[d], min((i + 1) * cs[d], n))
                  for d, i, n in zip(spec.dims, idx, spec.shape)}
        tasks.append({
            "store": store, "index": idx, "region": region, "dims": spec.dims,
            "activation": spec.activations[ia], "rho": rho,
            "sw2": sw2[region["sw2"]], "sb2": sb2[region["sb2"]],
            "spec": spec,
        })
    return tasks


def _run_chunk(task) -> tuple:
    """Compute one chunk, write it, then flag it done.  Runs in a dask worker."""
    spec = task["spec"]
    act = _act(task["activation"])
    W, B = np.meshgrid(task["sw2"], task["sb2"], indexing="ij")
    # Serial kernel: the parallelism is across chunks, and nested thread pools would
    # oversubscribe the cores.
    res = _engine.compute_points(act, W, B, parallel=False, **_opts(spec, task["rho"]))
    ds = _variables_of(spec, res, act, task["rho"])
    for v in ds.variables.values():
        v.attrs = {}
    ds.attrs = {}
    ds.to_zarr(task["store"], region=task["region"], mode="r+", consolidated=False)
    # The flag is written only after to_zarr has returned: a chunk killed mid-write keeps
    # its flag unset and is recomputed by the next run.
    flags = zarr.open_array(task["store"], path=f"{_META_GROUP}/{_DONE}", mode="r+")
    flags[task["index"]] = True
    return task["index"]


def _execute(tasks, client, workers, progress, n_total, n_done):
    from tqdm.auto import tqdm

    bar = tqdm(total=n_total, initial=n_done, unit="chunk", desc="sweep", disable=not progress,
               dynamic_ncols=True)
    computed = 0
    try:
        if client is None and (workers <= 1 or len(tasks) <= 1):
            for t in tasks:
                _run_chunk(t)
                computed += 1
                bar.update()
            return computed
        own = None
        if client is None:
            from dask.distributed import Client, LocalCluster

            # One single-threaded process per core: the Numba kernels hold the GIL.
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
            own = client = Client(cluster)
        from dask.distributed import as_completed

        futures = client.map(_run_chunk, tasks, pure=False)
        try:
            for fut in as_completed(futures):
                fut.result()  # re-raises a worker's exception here
                computed += 1
                bar.update()
        except BaseException:
            client.cancel(futures)
            raise
        finally:
            if own is not None:
                own.close()
                cluster.close()
        return computed
    finally:
        bar.close()


def _log_run(store: Path, entry: dict):
    g = zarr.open_group(str(store), mode="r+", path=_META_GROUP)
    g.attrs["runs"] = list(g.attrs.get("runs", [])) + [entry]


# --------------------------------------------------------------------------- public API
def sweep(spec_or_path, store, *, client=None, chunks=None, resume=True, overwrite=False,
          progress=True, workers=None) -> xr.Dataset:
    """Run a sweep into a zarr store, chunk by chunk; resumable and distributable.

    Parameters
    ----------
    spec_or_path : str, path, dict or SweepSpec
        A TOML spec file (``sweeps/*.toml``; format in ``sweeps/README.md``), the same
        content as a dict, or a :class:`SweepSpec`.
    store : str or path
        Directory of the zarr (v3) store.  On a cluster it must be on a file system that
        every worker can write.
    client : dask.distributed.Client, optional
        Run the chunks on this cluster.  Without one, a local cluster of ``workers``
        single-threaded processes is started for the run (or, with ``workers <= 1``, the
        chunks run one after another in this process).
    chunks : int, (int, int) or dict, optional
        Chunk lengths along sw2 and sb2, overriding the spec's ``[chunks]``.  The chunking
        of an existing store cannot change on resume.
    resume : bool, default True
        If ``store`` holds this sweep, compute only the chunks not yet flagged done.
        With False an existing store is an error.
    overwrite : bool, default False
        Replace an existing sweep store (the only way one is ever replaced).  The old store
        is removed only once the new one has been initialized; a directory that is not a
        meanfield sweep store is never removed.
    progress : bool, default True
        Show a progress bar (tqdm, on stderr) counting chunks.
    workers : int, optional
        Local worker processes when ``client`` is None; default ``os.cpu_count()``.

    Returns
    -------
    xarray.Dataset
        The stored dataset, opened lazily (dask arrays backed by the store).  Dims
        ``(activation, rho, sw2, sb2)`` (activation only when the spec lists several,
        rho only when it is an axis); the variables, their attributes and the values are
        those of :func:`meanfield.phase_diagram` on the same axes, bit for bit.  Global
        attributes add the spec (``sweep_spec``, its TOML text) and the package version.
        Per-run statistics (chunks computed) are in :func:`sweep_status`.

    Raises
    ------
    ValueError
        Invalid spec (naming the key), a store written by another spec or another
        meanfield version, an existing store with ``resume=False``, a path that is not a
        sweep store.  Nothing on disk is changed when this is raised.
    """
    spec = _as_spec(spec_or_path).with_chunks(chunks)
    if store is None:
        raise ValueError("sweep needs a store path")
    store = Path(store)
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise ValueError(f"workers must be a non-negative integer, got {workers!r}")
    if store.exists() and not overwrite:
        if not resume:
            raise ValueError(f"store {str(store)!r} already exists; resume it or pass "
                             f"overwrite=True (CLI: --overwrite) to replace it")
        spec = _check_existing(store, spec, chunks is not None)
    elif store.exists():
        if _meta(store) is None and not (store.is_dir() and not any(store.iterdir())):
            raise ValueError(f"{str(store)!r} exists and is not a meanfield sweep store; "
                             f"refusing to overwrite it")
        _create(store, spec)
    else:
        _create(store, spec)

    done = zarr.open_array(str(store), path=f"{_META_GROUP}/{_DONE}", mode="r")[...]
    tasks = _tasks(spec, str(store), done)
    n_total = int(done.size)
    started = time.time()
    entry = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
             "chunks_total": n_total, "chunks_done_before": int(done.sum()),
             "chunks_computed": 0, "seconds": 0.0, "outcome": "interrupted",
             "meanfield_version": __version__}
    try:
        entry["chunks_computed"] = _execute(tasks, client, int(workers), progress, n_total,
                                            int(done.sum()))
        entry["outcome"] = "complete"
    except BaseException:
        # Ctrl-C or a failing chunk: count what got flagged before the stop.
        flags = zarr.open_array(str(store), path=f"{_META_GROUP}/{_DONE}", mode="r")[...]
        entry["chunks_computed"] = int(flags.sum()) - entry["chunks_done_before"]
        raise
    finally:
        entry["seconds"] = round(time.time() - started, 3)
        _log_run(store, entry)
    return open_sweep(store)


def open_sweep(store) -> xr.Dataset:
    """Open a sweep store lazily as an xarray.Dataset (the bookkeeping group is left out)."""
    store = Path(store)
    if _meta(store) is None:
        raise ValueError(f"{str(store)!r} is not a meanfield sweep store")
    return xr.open_zarr(str(store), consolidated=False)


@dataclass(frozen=True)
class SweepStatus:
    """Progress and provenance of a sweep store.

    Attributes
    ----------
    store : str
        Path of the store.
    dims : tuple of str
        Dataset dimensions, e.g. ``("sw2", "sb2")``.
    shape, chunk_shape, chunk_grid : tuple of int
        Points per dimension, points per chunk, chunks per dimension.
    done : numpy.ndarray of bool, shape ``chunk_grid``
        Completion flag of every chunk.
    n_chunks, n_done : int
        Number of chunks, number flagged done.
    fraction : float
        ``n_done / n_chunks``.
    points_done : int
        Number of grid points in completed chunks.
    meanfield_version : str
        Version that wrote the store.
    runs : list of dict
        One entry per run: ``started``, ``chunks_total``, ``chunks_done_before``,
        ``chunks_computed``, ``seconds``, ``outcome`` (``complete`` or ``interrupted``).
        A run killed with SIGKILL leaves no entry.
    """

    store: str
    dims: tuple
    shape: tuple
    chunk_shape: tuple
    chunk_grid: tuple
    done: np.ndarray = field(repr=False)
    n_chunks: int
    n_done: int
    fraction: float
    points_done: int
    meanfield_version: str
    runs: list = field(repr=False)

    @property
    def complete(self) -> bool:
        return self.n_done == self.n_chunks

    def point_mask(self) -> np.ndarray:
        """Boolean array of the dataset's shape: True where the point's chunk is done."""
        m = self.done
        for axis, c in enumerate(self.chunk_shape):
            m = np.repeat(m, c, axis=axis)
        return m[tuple(slice(0, n) for n in self.shape)]


def sweep_status(store) -> SweepStatus:
    """Completion and run history of a sweep store (reads only the bookkeeping)."""
    store = Path(store)
    meta = _meta(store)
    if meta is None:
        raise ValueError(f"{str(store)!r} is not a meanfield sweep store")
    done = zarr.open_array(str(store), path=f"{_META_GROUP}/{_DONE}", mode="r")[...]
    root = zarr.open_group(str(store), mode="r")
    dims = tuple(meta.attrs["dims"])
    shape = tuple(root[d].shape[0] for d in dims)
    chunks = dict(meta.attrs["chunks"])
    chunk_shape = tuple(min(chunks[d], n) if d in chunks else 1 for d, n in zip(dims, shape))
    status = SweepStatus(store=str(store), dims=dims, shape=shape, chunk_shape=chunk_shape,
                         chunk_grid=done.shape, done=done, n_chunks=int(done.size),
                         n_done=int(done.sum()), fraction=float(done.mean()) if done.size else 1.0,
                         points_done=0, meanfield_version=meta.attrs.get("meanfield_version", "?"),
                         runs=list(meta.attrs.get("runs", [])))
    return SweepStatus(**{**status.__dict__, "points_done": int(status.point_mask().sum())})


def critical_line_from_data(ds: xr.Dataset, mask=None) -> xr.DataArray:
    """The critical line read off a computed grid: per sb2, the sw2 where chi_1 crosses 1.

    Along sw2, finds the first pair of neighbouring points with log chi_1 < 0 <= log chi_1
    (ordered to chaotic) and interpolates log chi_1 linearly in sw2 between them.  Points
    outside ``mask`` (e.g. chunks not yet computed) or with non-finite chi_1 are ignored;
    NaN where no crossing is found.

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep or :func:`meanfield.phase_diagram` dataset (needs ``chi1`` over ``sw2``).
    mask : array_like of bool, optional
        Same shape as ``ds.chi1``: which points to trust.

    Returns
    -------
    xarray.DataArray
        ``sw2_critical`` over the dims of ``chi1`` without ``sw2``.
    """
    chi = ds["chi1"].transpose(..., "sw2", "sb2")
    y = np.asarray(chi.values, dtype=np.float64)
    ok = np.isfinite(y) & (y > 0)
    if mask is not None:
        m = xr.DataArray(np.asarray(mask, dtype=bool), dims=ds["chi1"].dims)
        ok &= m.transpose(*chi.dims).values
    with np.errstate(divide="ignore", invalid="ignore"):
        ly = np.where(ok, np.log(np.where(ok, y, 1.0)), np.nan)
    x = ds["sw2"].values
    lo, hi = ly[..., :-1, :], ly[..., 1:, :]
    cross = (lo < 0) & (hi >= 0)
    first = np.argmax(cross, axis=-2)  # index of the first crossing along sw2
    has = np.take_along_axis(cross, first[..., None, :], axis=-2)[..., 0, :]
    l0 = np.take_along_axis(lo, first[..., None, :], axis=-2)[..., 0, :]
    l1 = np.take_along_axis(hi, first[..., None, :], axis=-2)[..., 0, :]
    x0, x1 = x[first], x[np.minimum(first + 1, x.size - 1)]
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = np.where(has, x0 + (0.0 - l0) * (x1 - x0) / (l1 - l0), np.nan)
    dims = tuple(d for d in chi.dims if d != "sw2")
    coords = {k: v for k, v in ds.coords.items() if set(v.dims) <= set(dims)}
    return xr.DataArray(xc, dims=dims, coords=coords, name="sw2_critical",
                        attrs={"long_name": "critical weight variance (chi_1 = 1), interpolated "
                                            "in log chi_1 along sw2", "units": "1"})
