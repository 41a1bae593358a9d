"""The launch load: the model image and the labelling reference data the ground installs before
launch, as one file a flight process reads at its first boot (`flightsw run --load FILE`).

A NumPy `.npz` archive read with `allow_pickle=False` (arrays and scalars only, nothing that
executes), with a format tag and version. Every field is checked for presence, and a missing or
malformed one is named with the file in the error.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path

import numpy as np

from flight_sw.ml.labels import ReferenceData
from flight_sw.ml.model import ModelImage
from flight_sw.ml.teacher import TeacherImage

FORMAT = "orbit-learning launch load"
VERSION = 1


class LaunchLoadError(ValueError):
    """A launch load file that cannot be used (names the file and the field)."""


def save_launch_load(path: Path | str, image: ModelImage, reference: ReferenceData | None) -> None:
    """Write `image` and `reference` (and its teacher, if any) to `path`."""
    arrays: dict[str, np.ndarray] = {"format": np.array(FORMAT), "version": np.array(VERSION)}
    for f in fields(ModelImage):
        arrays[f"image.{f.name}"] = np.asarray(getattr(image, f.name))
    if reference is not None:
        for f in fields(ReferenceData):
            value = getattr(reference, f.name)
            if f.name == "teacher" or value is None:
                continue
            arrays[f"reference.{f.name}"] = np.asarray(value)
        teacher = reference.teacher
        if teacher is not None:
            arrays["teacher.version"] = np.array(teacher.version)
            arrays["teacher.input_mean"] = teacher.input_mean
            arrays["teacher.input_std"] = teacher.input_std
            arrays["teacher.min_confidence"] = np.array(teacher.min_confidence)
            arrays["teacher.layers"] = np.array(len(teacher.weights))
            for i, (w, b) in enumerate(zip(teacher.weights, teacher.biases, strict=True)):
                arrays[f"teacher.w{i}"] = w
                arrays[f"teacher.b{i}"] = b
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def load_launch_load(path: Path | str) -> tuple[ModelImage, ReferenceData | None]:
    """Read a file written by `save_launch_load`; `LaunchLoadError` names what is wrong."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise LaunchLoadError(f"{path}: not a readable launch load ({exc})") from exc

    def get(key: str) -> np.ndarray:
        if key not in data:
            raise LaunchLoadError(f"{path}: field {key!r} is missing")
        return data[key]

    if str(get("format")) != FORMAT or int(get("version")) != VERSION:
        raise LaunchLoadError(f"{path}: format {str(get('format'))!r} version {int(get('version'))}, "
                              f"expected {FORMAT!r} version {VERSION}")
    image = ModelImage(**{f.name: _scalar_or_array(get(f"image.{f.name}"), f.type) for f in fields(ModelImage)})
    if "reference.site_maps" not in data:
        return image, None
    teacher = None
    if "teacher.layers" in data:
        n = int(get("teacher.layers"))
        teacher = TeacherImage(
            version=int(get("teacher.version")), input_mean=get("teacher.input_mean"),
            input_std=get("teacher.input_std"),
            weights=tuple(get(f"teacher.w{i}") for i in range(n)),
            biases=tuple(get(f"teacher.b{i}") for i in range(n)),
            min_confidence=float(get("teacher.min_confidence")),
        )
    kwargs = {}
    for f in fields(ReferenceData):
        if f.name == "teacher":
            continue
        key = f"reference.{f.name}"
        if key in data:
            kwargs[f.name] = _scalar_or_array(data[key], f.type)
        elif f.default is MISSING:
            get(key)  # required: raises naming it
    return image, ReferenceData(teacher=teacher, **kwargs)


def _scalar_or_array(value: np.ndarray, annotation) -> object:
    """Scalars back to Python numbers, tuples back to tuples; arrays stay arrays."""
    text = str(annotation)
    if value.ndim == 0:
        return int(value) if text == "int" else float(value)
    if text.startswith("tuple"):
        return tuple(int(v) for v in value)
    return value
