"""What an exported graph is: the metadata record every ONNX export of this project carries.

Written by the exporter (:mod:`denoise.export`), read by the ONNX backend before it runs a graph; neither
imports the other. Stored as JSON under ``metadata_props['denoise']``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

EXPORT_VERSION = 2  # bump when the exported graph changes for the same weights (cache key)
METADATA_KEY = "denoise"


@dataclass(frozen=True)
class OnnxMetadata:
    """What an exported graph is; stored as JSON under ``metadata_props['denoise']``.

    ``io`` is ``"wav"`` (``[B, samples] -> [B, samples']``) or ``"spec"`` (``[B, 257, frames, 2]``, STFT
    outside the graph). Lengths are in samples at ``sample_rate`` Hz. ``state`` names the graph's state
    inputs (batch axis first; zeros at the start of a signal): for each, the graph returns the state after the
    last frame as the output ``<name>_next``, so a signal can be run in pieces (GTCRN). Empty: no state.
    """

    model: str  # "frcrn" | "gtcrn"
    weights: str  # manifest name, file name, or "random"
    weights_sha256: str  # sha256 of the weights file ("" for random weights)
    sample_rate: int
    win_length: int  # analysis frame (samples)
    hop_length: int  # frame shift (samples)
    n_fft: int
    min_samples: int  # shortest waveform the backend may feed
    io: str  # "wav" | "spec"
    stft: str  # where the STFT lives and how it is framed
    exporter: str
    opset: int
    precision: str = "fp32"  # "fp32" | "int8-dynamic" | "fp16"
    state: tuple[str, ...] = ()  # state inputs, in order (see above)
    export_version: int = EXPORT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> OnnxMetadata:
        raw = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        fields = {k: v for k, v in raw.items() if k in known}
        fields["state"] = tuple(fields.get("state", ()))  # JSON has lists
        return cls(**fields)


def read_metadata(path: str | Path) -> OnnxMetadata:
    """The :class:`OnnxMetadata` of an exported graph (reads the header only, not the weights).

    Raises:
        ValueError: the file has no ``denoise`` metadata (not exported by this project).
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return OnnxMetadata.from_json(prop.value)
    raise ValueError(f"{path}: no '{METADATA_KEY}' metadata; export it with `denoise export-onnx`")


def write_metadata(model: object, meta: OnnxMetadata) -> None:
    """Store ``meta`` in an ``onnx.ModelProto`` (replacing an earlier record), before it is saved."""
    props = model.metadata_props  # type: ignore[attr-defined]
    for i in reversed(range(len(props))):
        if props[i].key == METADATA_KEY:
            del props[i]
    entry = props.add()
    entry.key, entry.value = METADATA_KEY, meta.to_json()
    model.producer_name = "speech-denoise-workstation"  # type: ignore[attr-defined]
