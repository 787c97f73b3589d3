"""A client column's descriptor, `clients/<name>/client.yaml` (the contract in clients/README.md).

The runner knows nothing about a client except what this file says: how to build it, how to run
it, and which tools it needs. Problems are reported like matrix.yaml's, one
`client.yaml:LINE: field: what; fix: how` line each, all at once.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from runner.config.yamlmarks import custom_error, load_marked, located_problems, problem, unique_in_file_order
from runner.contract import SCENARIOS, Scenario
from runner.errors import MatrixError

DESCRIPTOR_FILE = "client.yaml"

#: `{src}` is the client folder, `{out}` its build output folder in the cache (clients/README.md).
PLACEHOLDERS = ("{src}", "{out}")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")

_HELP = "clients/README.md (Descriptor)"

Name = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        max_length=63,
        json_schema_extra={"fix": "use lowercase letters, digits and '-', e.g. client-go"},
    ),
]
Text = Annotated[str, Field(min_length=1)]
Tool = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9._+-]+$",
        json_schema_extra={"fix": "name a command looked up on PATH, e.g. python3 or go"},
    ),
]


def _check_placeholders(arg: str) -> str:
    for found in _PLACEHOLDER.findall(arg):
        if found not in PLACEHOLDERS:
            raise custom_error(
                f"unknown placeholder {found} in {arg!r}",
                "use only {src} (the client folder) and {out} (its build output folder)",
            )
    return arg


#: One argv element; checked one by one so an error points at the element's own line.
Arg = Annotated[str, Field(min_length=1), AfterValidator(_check_placeholders)]


class Descriptor(BaseModel):
    """What `clients/<name>/client.yaml` says about one client."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name = Field(description="the column key; must equal the folder name")
    language: Text = Field(description="e.g. go, python")
    library: Text = Field(description="the package or module users install")
    version: Text = Field(
        description="the library version, quoted; must equal the pin in the folder's build files",
        json_schema_extra={"fix": 'quote the version, e.g. version: "35.0.0"'},
    )
    api_style: Text = Field(description="how the watcher uses the library, e.g. watch.Watch().stream")
    requires: list[Tool] = Field(default_factory=list, description="tools needed on PATH to build and run")
    build: list[Annotated[list[Arg], Field(min_length=1)]] = Field(
        default_factory=list, description="argv lists run in order with cwd = the folder"
    )
    run: list[Arg] = Field(
        min_length=1,
        description='the watcher\'s argv, e.g. ["{out}/venv/bin/python", "{src}/watcher.py"]',
        json_schema_extra={"fix": 'write the watcher\'s argv, e.g. run: ["{out}/watcher"]'},
    )
    styles: list[Text] = Field(
        default_factory=list, description="WATCHDROP_STYLE values the watcher implements (first = default)"
    )
    settings: dict[str, str] = Field(
        default_factory=dict, description="extra environment variables the watcher understands -> meaning"
    )
    version_env: str | None = Field(
        None,
        description="a build_env variable a variant may set to build another library version; the watcher must "
        "then report that version instead of `version`",
    )
    scenarios: list[Scenario] = Field(
        default_factory=lambda: list(SCENARIOS),
        description="the scenarios the watcher implements; cells of the others are SKIPPED with the reason",
    )

    def version_for(self, build_env: Mapping[str, str]) -> str:
        """The library version a build with this build_env pins."""
        return (build_env.get(self.version_env) if self.version_env else None) or self.version

    def build_argvs(self, src: Path, out: Path) -> list[list[str]]:
        """The build commands with `{src}`/`{out}` filled in."""
        return [expand(argv, src, out) for argv in self.build]

    def run_argv(self, src: Path, out: Path) -> list[str]:
        """The watcher's command with `{src}`/`{out}` filled in."""
        return expand(self.run, src, out)


def expand(args: Sequence[str], src: Path, out: Path) -> list[str]:
    """Fill in the two placeholders (plain replacement: argv may contain other braces)."""
    return [a.replace("{src}", str(src)).replace("{out}", str(out)) for a in args]


def load_descriptor(folder: Path) -> Descriptor:
    """Read and check `folder/client.yaml`; raise MatrixError with every problem, one line each."""
    if not folder.is_dir():
        raise MatrixError([problem(folder, None, None, "no such client folder", "create it (see clients/README.md)")])
    path = folder / DESCRIPTOR_FILE
    marked = load_marked(path)
    if not isinstance(marked.data, dict):
        raise MatrixError([marked.problem((), "expected a mapping of `key: value` lines", f"see {_HELP}")])
    found: list[tuple[int, str]] = []
    name = marked.data.get("name")
    if isinstance(name, str) and name != folder.name:
        # Checked beside the schema so that a wrong name is reported with everything else.
        found.append(
            (
                marked.line_of(("name",)) or 0,
                marked.problem(
                    ("name",),
                    f"name {name!r} differs from the folder name {folder.name!r}",
                    f"write name: {folder.name} (the name is the column key and the folder's name)",
                ),
            )
        )
    desc: Descriptor | None = None
    try:
        desc = Descriptor.model_validate(marked.data)
    except ValidationError as exc:
        found += located_problems(exc, marked, Descriptor, _HELP)
    if found or desc is None:
        raise MatrixError(unique_in_file_order(found))
    return desc


def missing_requirements(desc: Descriptor) -> list[str]:
    """The tools in `requires` that are not on PATH (the cell is SKIPPED, not FAILED)."""
    return [tool for tool in desc.requires if shutil.which(tool) is None]
