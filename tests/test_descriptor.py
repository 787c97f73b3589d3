"""clients/<name>/client.yaml: the descriptor schema, its one-line errors, and requirements."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.config.descriptor import Descriptor, expand, load_descriptor, missing_requirements
from runner.errors import MatrixError

GOOD = """\
name: client-python
language: python
library: kubernetes
version: "35.0.0"
api_style: watch.Watch().stream
requires: [sh]
build:
  - [python3, -m, venv, "{out}/venv"]
  - ["{out}/venv/bin/pip", install, --quiet, -r, requirements.txt]
run: ["{out}/venv/bin/python", "{src}/watcher.py"]
styles: [watch]
settings:
  WATCHDROP_TCP_KEEPALIVE: seconds of idle before TCP keepalive probes
"""


def folder_with(tmp_path: Path, text: str, name: str = "client-python") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "client.yaml").write_text(text)
    return folder


def problems(folder: Path) -> list[str]:
    with pytest.raises(MatrixError) as info:
        load_descriptor(folder)
    for text in info.value.problems:
        assert "\n" not in text and re.search(r"; fix: \S", text), text
    return info.value.problems


def test_good_descriptor(tmp_path: Path) -> None:
    desc = load_descriptor(folder_with(tmp_path, GOOD))
    assert isinstance(desc, Descriptor)
    assert (desc.name, desc.language, desc.library, desc.version) == (
        "client-python",
        "python",
        "kubernetes",
        "35.0.0",
    )
    assert desc.styles == ["watch"] and desc.requires == ["sh"]
    assert desc.settings == {"WATCHDROP_TCP_KEEPALIVE": "seconds of idle before TCP keepalive probes"}
    src, out = Path("/src/client-python"), Path("/cache/out")
    assert desc.run_argv(src, out) == ["/cache/out/venv/bin/python", "/src/client-python/watcher.py"]
    assert desc.build_argvs(src, out)[0] == ["python3", "-m", "venv", "/cache/out/venv"]


def test_minimal_descriptor_defaults(tmp_path: Path) -> None:
    text = 'name: c\nlanguage: go\nlibrary: l\nversion: "1"\napi_style: s\nrun: ["{out}/w"]\n'
    desc = load_descriptor(folder_with(tmp_path, text, "c"))
    assert (desc.requires, desc.build, desc.styles, desc.settings) == ([], [], [], {})


def test_name_must_equal_the_folder(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, GOOD.replace("name: client-python", "name: client-py"))
    assert problems(folder) == [
        f"{folder / 'client.yaml'}:1: name: name 'client-py' differs from the folder name 'client-python'; "
        "fix: write name: client-python (the name is the column key and the folder's name)"
    ]


def test_all_problems_at_once_with_lines(tmp_path: Path) -> None:
    text = GOOD.replace('version: "35.0.0"', "version: 35.0").replace("requires: [sh]", "requires: [sh]\nbuid: []")
    text = text.replace('"{src}/watcher.py"', '"{dir}/watcher.py"')
    folder = folder_with(tmp_path, text)
    path = folder / "client.yaml"
    found = problems(folder)
    assert [p.split(": ")[0:2] for p in found] == [
        [f"{path}:4", "version"],
        [f"{path}:7", "buid"],
        [f"{path}:11", "run[1]"],
    ]
    assert 'quote it: "35.0"' in found[0]
    assert "did you mean 'build'?" in found[1]
    assert "unknown placeholder {dir}" in found[2]


def test_run_must_not_be_empty(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, GOOD.replace('run: ["{out}/venv/bin/python", "{src}/watcher.py"]', "run: []"))
    (found,) = problems(folder)
    assert f"{folder / 'client.yaml'}:10: run: needs at least 1 entry" in found


def test_run_missing(tmp_path: Path) -> None:
    text = "\n".join(line for line in GOOD.splitlines() if not line.startswith("run:")) + "\n"
    folder = folder_with(tmp_path, text)
    (found,) = problems(folder)
    assert found.startswith(f"{folder / 'client.yaml'}:1: run: required key is missing; fix: add `run:`")


def test_build_placeholder_points_at_the_argument(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, GOOD.replace("requirements.txt]", "'{src}/requirements.txt', '{cache}']"))
    (found,) = problems(folder)
    assert found.startswith(f"{folder / 'client.yaml'}:9: build[1][5]: unknown placeholder {{cache}}")


def test_missing_folder_and_file(tmp_path: Path) -> None:
    (found,) = problems(tmp_path / "client-nope")
    assert found.startswith(f"{tmp_path / 'client-nope'}: no such client folder; fix:")
    (tmp_path / "empty").mkdir()
    (found,) = problems(tmp_path / "empty")
    assert found == f"{tmp_path / 'empty' / 'client.yaml'}: no such file; fix: check the path, or create the file"


def test_not_a_mapping(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, "- a\n- b\n")
    (found,) = problems(folder)
    assert found.startswith(f"{folder / 'client.yaml'}:1: expected a mapping")


def test_missing_requirements() -> None:
    desc = Descriptor(
        name="c",
        language="dotnet",
        library="KubernetesClient",
        version="17.0.4",
        api_style="Watch",
        requires=["sh", "watchdrop-no-such-tool-xyz"],
        run=["{out}/w"],
    )
    assert missing_requirements(desc) == ["watchdrop-no-such-tool-xyz"]


def test_expand_leaves_other_braces_alone() -> None:
    assert expand(["{src}/a", "{out}", '{"json": 1}'], Path("/s"), Path("/o")) == ["/s/a", "/o", '{"json": 1}']


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_fuzz_descriptor_loader(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "client-x"
        folder.mkdir()
        (folder / "client.yaml").write_bytes(content)
        try:
            load_descriptor(folder)
        except MatrixError as exc:
            assert exc.problems and all("\n" not in p and "; fix: " in p for p in exc.problems)
