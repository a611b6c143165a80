"""The ``--conv K [--padding circular|same] [--readout flatten|gap]`` options shared by
``meanfield kernel`` and ``meanfield predict``: a convolutional network on images
(docs/theory.md, "Convolutional networks")."""

from __future__ import annotations


def add_architecture(p):
    """Add --conv, --padding and --readout to the argparse parser ``p``."""
    p.add_argument("--conv", type=int, metavar="K",
                   help="convolutional network with K x K filters (K odd); data (n, H, W, C)")
    p.add_argument("--padding", choices=("circular", "same"), default=None,
                   help="with --conv: circular (default) or zero ('same') padding")
    p.add_argument("--readout", choices=("flatten", "gap"), default=None,
                   help="with --conv: flatten (default) or global average pooling")


def architecture(args):
    """The ``Conv`` of --conv/--padding/--readout, or None (fully connected)."""
    from ..ntk import Conv

    if args.conv is None:
        for flag, v in (("--padding", args.padding), ("--readout", args.readout)):
            if v is not None:
                raise ValueError(f"{flag} needs --conv K (a convolutional network)")
        return None
    try:
        return Conv(args.conv, args.padding or "circular", args.readout or "flatten")
    except ValueError as exc:
        raise ValueError(f"--conv: {exc}") from None


def check_shape(flag, arr, conv):
    """One-line errors for data of the wrong number of dimensions."""
    if conv is not None and arr.ndim != 4:
        raise ValueError(f"{flag}: --conv needs images of shape (n, H, W, C), got shape {arr.shape}")
    if conv is None and arr.ndim == 4:
        raise ValueError(f"{flag}: shape {arr.shape} looks like images; add --conv K for a "
                         f"convolutional network")
    if conv is not None and (conv.filter_size > arr.shape[1] or conv.filter_size > arr.shape[2]):
        raise ValueError(f"--conv: filter_size {conv.filter_size} is larger than the "
                         f"{arr.shape[1]} x {arr.shape[2]} images of {flag}")


def architecture_line(attrs):
    """The line that tables print under their header for a convolutional dataset: [] or
    ["conv 3x3, padding circular, readout gap"]."""
    if attrs.get("architecture") != "conv":
        return []
    return [f"conv {attrs['filter_size']}x{attrs['filter_size']}, padding {attrs['padding']}, "
            f"readout {attrs['readout']}"]


def table_heading(attrs, what):
    """The first lines of a per-depth table: activation, variances, ``what`` and the method,
    then :func:`architecture_line`."""
    return ([f"{attrs['activation']}  sw2={attrs['sw2']:g} sb2={attrs['sb2']:g}  {what}  "
             f"[{attrs['method']}]"] + architecture_line(attrs))
