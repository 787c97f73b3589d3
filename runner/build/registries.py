"""Which versions of a library its package registry has released: one URL and one parser per registry.

`python -m runner versions` asks each client's registry what it serves, to show how far a pin is
behind. The parsers are pure (payload in, version strings out) so recorded payloads test them
without a network; `fetch_released` is the only function that talks HTTP. Registry failures become
one `RegistryError` whose message is what the report shows in `unknown (...)`.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import requests

#: Seconds before one registry request gives up (connect and each read).
TIMEOUT = 10.0

#: crates.io refuses requests without a User-Agent; the others do not mind one.
USER_AGENT = "watchdrop-versions (python -m runner versions)"


class RegistryError(Exception):
    """A registry could not say which versions exist; the message is shown as the row's reason."""



# --- URLs: where each registry lists a package's versions -------------------------------------------


def pypi_url(name: str) -> str:
    return f"https://pypi.org/pypi/{quote(name)}/json"


def npm_url(name: str) -> str:
    # A scoped name keeps its '@' and escapes its '/': @kubernetes%2Fclient-node.
    return f"https://registry.npmjs.org/{quote(name, safe='@')}"


def maven_url(coordinates: str) -> str:
    """`group:artifact` -> Maven Central's maven-metadata.xml for it."""
    group, sep, artifact = coordinates.partition(":")
    if not sep or not group or not artifact or ":" in artifact:
        raise RegistryError(f"library {coordinates!r} is not Maven group:artifact")
    return f"https://repo1.maven.org/maven2/{group.replace('.', '/')}/{quote(artifact)}/maven-metadata.xml"


def crates_url(name: str) -> str:
    """The crate's file in cargo's sparse index (index.crates.io), the source cargo itself reads.

    Preferred over the crates.io web API: the index is a static file per crate, needs no API
    etiquette, and is reachable from networks where the API host is not (as on the lab machine).
    """
    name = name.lower()
    if len(name) <= 2:
        prefix = str(len(name))
    elif len(name) == 3:
        prefix = f"3/{name[0]}"
    else:
        prefix = f"{name[:2]}/{name[2:4]}"
    return f"https://index.crates.io/{prefix}/{quote(name)}"


def goproxy_url(module: str) -> str:
    """The module proxy's version list; capitals are escaped as '!' + lowercase (go help goproxy)."""
    escaped = "".join(f"!{c.lower()}" if c.isupper() else c for c in module)
    return f"https://proxy.golang.org/{quote(escaped, safe='/!')}/@v/list"


def nuget_url(package_id: str) -> str:
    return f"https://api.nuget.org/v3-flatcontainer/{quote(package_id.lower())}/index.json"


# --- parsers: payload -> every released version (pre-releases included; selection is elsewhere) ------


def parse_pypi(payload: bytes) -> list[str]:
    """Releases with at least one file that is not yanked (pip installs nothing else)."""
    releases = json.loads(payload)["releases"]
    return [v for v, files in releases.items() if any(not f.get("yanked", False) for f in files)]


def parse_npm(payload: bytes) -> list[str]:
    """Every published version that is not deprecated (npm warns on install of those)."""
    versions = json.loads(payload)["versions"]
    return [v for v, meta in versions.items() if not (isinstance(meta, dict) and meta.get("deprecated"))]


def parse_maven(payload: bytes) -> list[str]:
    """`<versioning><versions><version>` of maven-metadata.xml."""
    root = ET.fromstring(payload)
    return [(v.text or "").strip() for v in root.findall("./versioning/versions/version") if (v.text or "").strip()]


def parse_crates(payload: bytes) -> list[str]:
    """One JSON object per line in the sparse index; yanked versions are left out."""
    out: list[str] = []
    for line in payload.decode().splitlines():
        if line.strip():
            entry = json.loads(line)
            if not entry.get("yanked", False):
                out.append(entry["vers"])
    return out


def parse_goproxy(payload: bytes) -> list[str]:
    """One tagged version per line (pseudo-versions are never listed)."""
    return [line.strip() for line in payload.decode().splitlines() if line.strip()]


def parse_nuget(payload: bytes) -> list[str]:
    """The flat container's `versions` (lowercased, unlisted ones included: NuGet hides no less)."""
    return [str(v) for v in json.loads(payload)["versions"]]


@dataclass(frozen=True)
class Registry:
    """One package registry: its name in the report, where a package's list lives, how to read it."""

    kind: str
    title: str
    url: Callable[[str], str]
    parse: Callable[[bytes], list[str]]


REGISTRIES: dict[str, Registry] = {
    r.kind: r
    for r in (
        Registry("pypi", "PyPI", pypi_url, parse_pypi),
        Registry("npm", "npm", npm_url, parse_npm),
        Registry("maven", "Maven Central", maven_url, parse_maven),
        Registry("crates", "crates.io", crates_url, parse_crates),
        Registry("go", "Go proxy", goproxy_url, parse_goproxy),
        Registry("nuget", "NuGet", nuget_url, parse_nuget),
    )
}

#: A descriptor's `language` -> the registry its `library` is published on.
LANGUAGE_REGISTRY: dict[str, str] = {
    "python": "pypi",
    "javascript": "npm",
    "typescript": "npm",
    "java": "maven",
    "kotlin": "maven",
    "rust": "crates",
    "go": "go",
    "csharp": "nuget",
}


#: (registry, library) -> every released version; raises RegistryError when the registry cannot say.
#: `fetch_released` is the real one; `versions` and `bisect` take another in tests.
Fetch = Callable[[Registry, str], list[str]]


def registry_for(language: str) -> Registry | None:
    """The registry a client in this language installs its library from, if the runner knows one."""
    kind = LANGUAGE_REGISTRY.get(language.lower())
    return REGISTRIES[kind] if kind else None


def fetch_released(registry: Registry, library: str, timeout: float = TIMEOUT) -> list[str]:
    """Ask the registry for the library's released versions; any failure is one RegistryError.

    requests uses the environment's CA configuration (REQUESTS_CA_BUNDLE, the system bundle):
    outbound TLS may be re-signed by a proxy only that bundle trusts, so verification stays on.
    """
    url = registry.url(library)
    host = url.split("/")[2]
    try:
        resp = requests.get(url, timeout=timeout, headers={"User-Agent": USER_AGENT})
    except requests.Timeout:
        raise RegistryError(f"{registry.title} did not answer within {timeout:g} s") from None
    except requests.ConnectionError as exc:
        raise RegistryError(f"{registry.title} not reachable from this machine: {_why(exc, host)}") from None
    except requests.RequestException as exc:
        raise RegistryError(f"{registry.title} request failed: {type(exc).__name__}") from None
    if resp.status_code == 404:
        raise RegistryError(f"{registry.title} has no package {library}")
    if resp.status_code != 200:
        raise RegistryError(f"{registry.title} answered HTTP {resp.status_code}")
    try:
        return registry.parse(resp.content)
    except (ValueError, KeyError, TypeError, AttributeError, ET.ParseError) as exc:
        raise RegistryError(f"{registry.title} sent an answer that cannot be read ({type(exc).__name__})") from None


def _why(exc: requests.ConnectionError, host: str) -> str:
    """A few words for a failed connection; urllib3's full chain of reprs does not fit a table cell."""
    text = str(exc)
    if "NameResolution" in text or "Name or service not known" in text or "nodename nor servname" in text:
        return f"{host} does not resolve"
    if "CERTIFICATE_VERIFY_FAILED" in text or "SSLError" in text:
        return f"TLS to {host} not trusted"
    if "Connection refused" in text:
        return f"{host} refused the connection"
    return f"cannot connect to {host}"
