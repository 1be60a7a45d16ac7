"""A non-editable install carries the project's bundled files (configs, models, traces and series, the example
workflows) and `orchestrator.resources` finds them there, not in the checkout; a missing one is an error naming it.

The wheel is built from a copy of the working tree (as `pip install .` builds it), installed with
`pip install --target`, and used from a subprocess in another folder that cannot import the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from orchestrator import resources
from orchestrator.resources import MissingResourceError

ROOT = Path(__file__).resolve().parent.parent
CODE_PACKAGES = ("orchestrator", "policies", "training", "serve", "examples")
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
                                    ".pytest_cache", ".hypothesis", "results", ".orchestrator", "checkpoints")


def _pip(*args: str, cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True, text=True, check=False,
                          timeout=300)
    assert proc.returncode == 0, f"pip {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(tmp / "dist"), str(src),
         cwd=tmp)
    (whl,) = (tmp / "dist").glob("*.whl")
    return whl


@pytest.fixture(scope="module")
def site(wheel) -> Path:
    target = wheel.parent.parent / "site"
    _pip("install", "--no-deps", "--no-index", "--no-compile", "-q", "--target", str(target), str(wheel),
         cwd=wheel.parent.parent)
    return target


def _files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(ROOT) for p in folder.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def test_wheel_holds_the_bundled_files_and_every_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    bundled = {"configs": "orchestrator/_bundled/configs", "models": "orchestrator/_bundled/models",
               "data/traces": "orchestrator/_bundled/data/traces", "data/series": "orchestrator/_bundled/data/series"}
    for folder, inside in bundled.items():
        files = _files(ROOT / folder)
        assert files, folder
        missing = [str(f) for f in files if f"{inside}/{f.relative_to(folder).as_posix()}" not in names]
        assert not missing, f"not in the wheel: {missing}"
    for needed in ("orchestrator/_bundled/configs/prediction.yaml", "orchestrator/_bundled/configs/bench.yaml",
                   "orchestrator/_bundled/models/predictor/selection.json",
                   "orchestrator/_bundled/models/predictor/v1/model.pt",
                   "orchestrator/_bundled/models/predictor/v1/metadata.json",
                   "orchestrator/_bundled/data/traces/README.md",
                   "orchestrator/_bundled/data/traces/wfcommons/montage/montage-chameleon-2mass-01d-001.json.gz",
                   "examples/__init__.py", "examples/etl.py", "examples/etl.yaml"):
        assert needed in names, needed
    # Packages are listed by hand in pyproject.toml: every module of the source tree must be in the wheel.
    modules = [f for pkg in CODE_PACKAGES for f in _files(ROOT / pkg) if f.suffix == ".py"]
    missing = [str(f) for f in modules if f.as_posix() not in names]
    assert not missing, f"modules not in the wheel (add their package to pyproject.toml): {missing}"
    assert not [n for n in names if n.startswith(("configs/", "models/", "data/"))], "data installed top-level"


CHECK = r"""
import json, sys
from pathlib import Path

site, checkout = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
# Only the installed copy: no checkout on sys.path, no finder of an editable install of the project.
sys.path[:] = [str(site)] + [p for p in sys.path if p and Path(p).resolve() != checkout]
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
sys.path_importer_cache.clear()

import examples, orchestrator
from orchestrator import resources
from orchestrator.bench.config import load_config as bench_config
from orchestrator.loaders import default_trace_dir, load_trace_files, load_workflow
from orchestrator.prediction.config import load_config
from orchestrator.prediction.node_types import load_node_types
from orchestrator.prediction.predictor import Predictor
from orchestrator.runtime.executor import resolve_entrypoint

etl = load_workflow(resources.file("examples", "etl.yaml"))
entrypoints = sorted({t.entrypoint for t in etl.tasks if t.entrypoint_kind == "python"})
traces = load_trace_files(default_trace_dir())
print(json.dumps({
    "modules": {"orchestrator": orchestrator.__file__, "examples": examples.__file__,
                "entrypoints": [resolve_entrypoint(e).__code__.co_filename for e in entrypoints]},
    "installed": resources.installed(),
    "folders": {n: str(resources.folder(n)) for n in ("configs", "models", "traces", "series", "examples")},
    "files": {"prediction": str(resources.config_file("prediction.yaml")),
              "bench": str(resources.config_file("bench.yaml")),
              "models_path": str(load_config().models_path("predictor"))},
    "etl_tasks": len(etl.tasks), "traces": len(traces), "trace_paths": sorted({str(p.parent) for p, _ in traces}),
    "bench_quick": bench_config(quick=True) is not None, "node_types": len(load_node_types()),
    "predictor": Predictor.load().version,
}))
"""


def test_installed_copy_finds_its_bundled_files_not_the_checkout(site, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    proc = subprocess.run([sys.executable, "-I", "-c", CHECK, str(site), str(ROOT)], cwd=work, env=env, check=False,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    site = site.resolve()

    def inside(path: str) -> bool:
        return Path(path).resolve().is_relative_to(site)

    mods = out["modules"]
    assert inside(mods["orchestrator"]) and inside(mods["examples"]), mods
    assert mods["entrypoints"] and all(inside(p) for p in mods["entrypoints"]), mods
    assert out["installed"] is True
    paths = [*out["folders"].values(), *out["files"].values(), *out["trace_paths"]]
    assert all(inside(p) for p in paths), paths
    assert out["folders"]["configs"] == str(site / "orchestrator" / "_bundled" / "configs")
    assert out["folders"]["traces"] == str(site / "orchestrator" / "_bundled" / "data" / "traces")
    assert out["folders"]["examples"] == str(site / "examples")
    assert out["files"]["models_path"] == str(site / "orchestrator" / "_bundled" / "models" / "predictor")
    assert out["etl_tasks"] == 9
    assert out["traces"] == len(list((ROOT / "data" / "traces").rglob("*.json*")))
    assert out["bench_quick"] and out["node_types"] > 0 and out["predictor"]


def test_checkout_resolves_to_its_own_folders():
    assert not resources.installed()
    assert resources.root() == ROOT
    assert resources.configs_dir() == ROOT / "configs" and resources.models_dir() == ROOT / "models"
    assert resources.traces_dir() == ROOT / "data" / "traces" and resources.series_dir() == ROOT / "data" / "series"
    assert resources.examples_dir() == ROOT / "examples"


def test_a_missing_bundled_file_is_an_error_naming_it(tmp_path, monkeypatch):
    """An installed copy whose bundled files are incomplete: every default that needs one says which, and where
    it looked (no silent fallback to built-in defaults)."""
    from orchestrator.bench.config import load_config as bench_config
    from orchestrator.errors import OrchestratorError, PredictionError
    from orchestrator.loaders import default_trace_dir
    from orchestrator.prediction.config import load_config
    from orchestrator.prediction.predictor import Predictor

    bundled = tmp_path / "_bundled"
    (bundled / "configs").mkdir(parents=True)
    monkeypatch.setattr(resources, "BUNDLED_DIR", bundled)
    assert resources.installed() and resources.root() == bundled
    with pytest.raises(MissingResourceError, match="bench.yaml") as exc:
        bench_config()
    assert str(bundled / "configs" / "bench.yaml") in str(exc.value) and "reinstall" in str(exc.value)
    with pytest.raises(MissingResourceError) as exc:
        load_config()
    assert str(bundled / "configs" / "prediction.yaml") in str(exc.value)
    with pytest.raises(MissingResourceError) as exc:
        default_trace_dir()
    assert str(bundled / "data" / "traces") in str(exc.value)
    assert issubclass(MissingResourceError, OrchestratorError)
    # The predictor (runtime: "task predictions off: <this>") names the model folder it looked in.
    shutil.copy(ROOT / "configs" / "prediction.yaml", bundled / "configs")
    with pytest.raises(PredictionError) as exc:
        Predictor.load()
    assert str(bundled / "models" / "predictor") in str(exc.value)


def test_a_missing_checkout_folder_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(resources, "CHECKOUT_DIR", tmp_path)
    (tmp_path / "pyproject.toml").write_text("")
    with pytest.raises(MissingResourceError) as exc:
        resources.traces_dir()
    assert str(tmp_path / "data" / "traces") in str(exc.value) and "checkout" in str(exc.value)
