"""The wheel installs into another project's environment and imports from outside the source tree."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import lightning_contloss

ROOT = Path(__file__).resolve().parents[1]


def test_public_api_is_declared() -> None:
    for name in lightning_contloss.__all__:
        assert hasattr(lightning_contloss, name), name
    assert isinstance(lightning_contloss.__version__, str)


@pytest.mark.slow
def test_wheel_installs_into_fresh_venv(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
    )
    (wheel,) = wheels.glob("lightning_contloss-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lightning_contloss/py.typed" in names
    for data in ("kjv.en.gz", "rv1909.es.gz", "split.json", "README.md"):
        assert f"lightning_contloss/examples/bible/{data}" in names, data
    assert not any(n.startswith("tests/") for n in names)
    for config in ("ptb_softmax", "ptb_cosine", "ptb_vmf", "ptb_infonce", "ptb_cosine_ppmi", "ptb_cosine_glove"):
        assert f"lightning_contloss/configs/{config}.yaml" in names, config

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    # The dependencies are already installed here; expose them to the new environment the
    # way a user's project would already have torch and lightning.
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)], check=True
    )
    probe = (
        "import pathlib, lightning_contloss as lc;"
        "p = pathlib.Path(lc.__file__).parent;"
        "print(p); print((p / 'py.typed').exists());"
        "t = lc.TargetEmbeddings.random(10, 4); print(len(t), t.dim);"
        "from lightning_contloss.examples.translation_data import bible_corpus, BIBLE_DIR;"
        "print(len(bible_corpus()['test'].src), BIBLE_DIR.is_relative_to(p))"
    )
    out = subprocess.run(
        [str(py), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path
    ).stdout.split("\n")
    assert out[0].startswith(str(venv)), out  # imported from the new environment, not the source tree
    assert out[1] == "True"
    assert out[2] == "10 4"
    assert out[3] == "1000 True"  # the translation data was installed with the package
