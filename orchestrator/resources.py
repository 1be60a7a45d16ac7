"""Where the project's bundled files are: the configs (`configs/`), the shipped models (`models/`), the real traces
and usage series (`data/traces`, `data/series`) and the example workflows (`examples/`).

Run from a checkout (or an editable install) they are the checkout's top-level folders. A non-editable install
(`pip install .`) carries them inside the package, as `orchestrator/_bundled/{configs,models,data}` (see
pyproject.toml), and `examples` as a package of its own beside `orchestrator` (its workflows name
`examples.etl:...`). One rule decides: an `orchestrator/_bundled` folder means an installed copy, otherwise the
checkout holding this package. A missing folder or file is an `OrchestratorError` naming the path that was looked
at, never a silent fallback to defaults.
"""

from __future__ import annotations

from pathlib import Path

from .errors import OrchestratorError

PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLED_DIR = PACKAGE_DIR / "_bundled"  # only in an installed copy
CHECKOUT_DIR = PACKAGE_DIR.parent  # the source tree, when run from one

# name -> its path under root() (the checkout's layout, mirrored under orchestrator/_bundled when installed)
FOLDERS = {
    "configs": Path("configs"),
    "models": Path("models"),
    "traces": Path("data") / "traces",
    "series": Path("data") / "series",
}


class MissingResourceError(OrchestratorError):
    """A file or folder that ships with the project is not where it should be."""


def installed() -> bool:
    """True for an installed (non-editable) copy, False when running from a checkout."""
    return BUNDLED_DIR.is_dir() or not (CHECKOUT_DIR / "pyproject.toml").is_file()


def root() -> Path:
    """The folder holding configs/, models/ and data/: the checkout, or orchestrator/_bundled when installed."""
    return BUNDLED_DIR if installed() else CHECKOUT_DIR


def location(name: str) -> Path:
    """Where a bundled folder ("configs", "models", "traces", "series", "examples") should be, unchecked (for
    defaults computed at import time; the functions below check)."""
    if name == "examples":
        return PACKAGE_DIR.parent / "examples"  # the same in both layouts: a package beside `orchestrator`
    try:
        return root() / FOLDERS[name]
    except KeyError:
        raise ValueError(f"Unknown bundled folder {name!r}; one of {sorted([*FOLDERS, 'examples'])}") from None


def _missing(what: str, path: Path) -> MissingResourceError:
    if installed():
        how = (f"the installed copy at {PACKAGE_DIR} lacks its bundled files; reinstall ray-orchestrator from a "
               "checkout or a wheel built from one (pip install --force-reinstall PATH)")
    else:
        how = f"the checkout at {CHECKOUT_DIR} lacks it; restore it from the repository"
    return MissingResourceError(f"Bundled {what} not found: looked for {path}; {how}")


def folder(name: str) -> Path:
    """A bundled folder, which must exist."""
    path = location(name)
    if not path.is_dir():
        raise _missing(f"folder '{name}'", path)
    return path


def file(name: str, *parts: str) -> Path:
    """A file inside a bundled folder, which must exist: file("configs", "bench.yaml")."""
    path = location(name).joinpath(*parts)
    if not path.is_file():
        raise _missing(f"file '{Path(name, *parts).as_posix()}'", path)
    return path


def configs_dir() -> Path:
    return folder("configs")


def config_file(name: str) -> Path:
    """configs/<name>, e.g. config_file("prediction.yaml")."""
    return file("configs", name)


def models_dir() -> Path:
    return folder("models")


def traces_dir() -> Path:
    """The real WfCommons traces (provenance: data/traces/README.md)."""
    return folder("traces")


def series_dir() -> Path:
    """The real usage series the demand forecaster is trained and evaluated on (data/series/*.csv)."""
    return folder("series")


def examples_dir() -> Path:
    """The example workflows; its parent is the folder from which `examples` (their task functions) imports."""
    file("examples", "__init__.py")
    return folder("examples")
