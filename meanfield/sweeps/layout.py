"""The dataset layout of a sweep: coordinates, attributes, the lazy template of a store,
and the variables of one computed chunk (built by the same ``to_dataset`` as
:func:`meanfield.phase_diagram`, so a sweep's variables are exactly a phase diagram's)."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from ..core import engine
from ..core.activation import Activation, get_activation
from ..core.analysis import dataset_attrs, options, to_dataset
from ..core.vocabulary import attrs
from .spec import SweepSpec


def solver_options(spec, rho):
    """The solver options of the spec at dropout rho (keyword arguments of compute_points)."""
    return options(rho, spec.options["q0"], spec.options["depth_constant"],
                    spec.options["critical_tol"])


def activation_of(entry) -> Activation:
    """The activation of one spec entry."""
    return get_activation(entry["name"], **entry["params"])


def _global_attrs(spec: SweepSpec) -> dict:
    rho = spec.options.get("rho", 1.0)
    if spec.activation_axis:
        meta = dataset_attrs(activation_of(spec.activations[0]), solver_options(spec, rho))
        labels = ", ".join(a["label"] for a in spec.activations)
        meta["title"] = f"mean-field phase diagrams: {labels}"
        meta["activation"] = labels
        # Per-activation formula and parameters are coordinates along `activation`.
        for k in [k for k in meta if k.startswith("activation_")]:
            del meta[k]
    else:
        meta = dataset_attrs(activation_of(spec.activations[0]), solver_options(spec, rho))
    if "rho" in spec.axes:
        del meta["rho"]  # rho is a coordinate
    meta.update({
        "sweep_name": spec.name,
        "sweep_description": spec.description,
        "sweep_spec": spec.text,
        "sweep_dims": " ".join(spec.dims),
    })
    return meta


def _strings(values) -> np.ndarray:
    # Variable-length strings: zarr v3 specifies them, unlike fixed-width '<U' arrays.
    return np.array(values, dtype=np.dtypes.StringDType())


def _coords(spec: SweepSpec) -> dict:
    coords = {}
    if spec.activation_axis:
        acts = [activation_of(a) for a in spec.activations]
        columns = {
            "activation": [a["label"] for a in spec.activations],
            "activation_name": [a.name for a in acts],
            "activation_formula": [a.formula for a in acts],
            "activation_parameters": [json.dumps(a.parameters, sort_keys=True) for a in acts],
        }
        for name, values in columns.items():
            coords[name] = ("activation", _strings(values), attrs(name))
    if "rho" in spec.axes:
        coords["rho"] = ("rho", spec.axis("rho"), attrs("rho"))
    coords["sw2"] = ("sw2", spec.axis("sw2"), attrs("sw2"))
    coords["sb2"] = ("sb2", spec.axis("sb2"), attrs("sb2"))
    return coords


def variables_of(spec: SweepSpec, res: dict, act: Activation, rho: float) -> xr.Dataset:
    """A chunk's data variables with the sweep's dims; built by to_dataset so the
    derived variables (converged) and attributes are defined in one place."""
    ds = to_dataset(res, {}, ("sw2", "sb2"), act, solver_options(spec, rho))
    lead = [d for d in spec.dims if d not in ("sw2", "sb2")]
    if lead:
        ds = ds.expand_dims(lead)
    return ds.transpose(*spec.dims)


def template(spec: SweepSpec) -> xr.Dataset:
    """The full dataset with lazy (never computed) data: writes metadata and coordinates."""
    import dask.array as da

    # A 1 x 1 evaluation at an ordinary point supplies the variables' names, dtypes and
    # attributes (its values are discarded).
    entry = spec.activations[0]
    rho = spec.axis("rho")[0] if "rho" in spec.axes else spec.options["rho"]
    probe = engine.compute_points(activation_of(entry), np.ones((1, 1)), np.ones((1, 1)), parallel=False,
                                   **solver_options(spec, rho))
    small = variables_of(spec, probe, activation_of(entry), rho)
    data = {name: (spec.dims, da.empty(spec.shape, dtype=v.dtype, chunks=spec.chunk_shape), v.attrs)
            for name, v in small.data_vars.items()}
    return xr.Dataset(data, coords=_coords(spec), attrs=_global_attrs(spec))


def encoding(ds: xr.Dataset, spec: SweepSpec) -> dict:
    enc = {}
    for name, v in ds.data_vars.items():
        enc[name] = {"chunks": spec.chunk_shape}
        if v.dtype.kind in "ib":
            # Flags must decode as int8/bool, not be masked into floats.
            enc[name]["_FillValue"] = None
    return enc


