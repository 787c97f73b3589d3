"""Code under test runs without root: client builds and watchers as unprivileged uids.

The runner is root (namespaces, nftables, captures), but nothing it builds or runs from a client
folder needs root, and both a watcher and a dependency's install script are code we did not write.
So, when the runner is root, each build step and each watcher is started as

    unshare --mount --propagation private -- bash -c SCRIPT … -- setpriv --reuid U --regid U
        --clear-groups --no-new-privs -- argv

(inside `ip netns exec <pod>` for a watcher: entering the namespace needs root, so privileges are
dropped last). SCRIPT, still root but in a mount namespace of its own:
- mounts fresh tmpfs over /tmp, /var/tmp and /dev/shm (nothing left there by others is visible,
  nothing written there outlives the process), and over every directory on the way to a needed
  path that the uid could not traverse anyway (root's 0700 home where pyenv, rustup or the cache
  live, the run's 0700 work dir holding the admin kubeconfig, PKI keys and the cells' tokens);
- binds back exactly the paths the process needs (toolchains on PATH, the client folder, its build
  output, its own cell folder), read-only unless they are its to write.

The uids have no passwd entry (nothing is added to the machine): builds use BUILD_UID, and every
cell gets a uid of its own derived from the run's address block and the cell's index, so one
watcher can neither read another cell's token nor reach it through /proc/<pid>/root of a process
of the same uid. The environment is built from an allow-list, never inherited: no KUBECONFIG, CI
tokens or agent sockets reach code under test.
"""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: "WD" in the high half: far above any uid a distribution hands out, and no passwd entry.
UID_BASE = 0x5744_0000
BUILD_UID = UID_BASE
#: Per run block (at most 32 blocks in 198.18.0.0/15) a range of cell uids.
CELL_UIDS_PER_BLOCK = 0x1000

#: Variables of the runner's environment that code under test may see (toolchain locations, proxies,
#: locale). Everything else — KUBECONFIG, CI tokens, SSH_AUTH_SOCK, cloud credentials — stays out.
ALLOWED_ENV = (
    "PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ",
    "PYENV_ROOT", "PYENV_VERSION", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN", "RUSTUP_AUTO_INSTALL",
    "JAVA_HOME", "GOROOT", "GOPROXY", "GONOSUMDB", "GONOSUMCHECK", "GOPRIVATE", "GOSUMDB",
    "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
    "SSL_CERT_FILE", "SSL_CERT_DIR",
)
#: Mount points every sandboxed process gets privately (world-writable places shared by everyone).
PRIVATE_TMP = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))

_SCRIPT = r"""
set -eu
umask 022
hides=(); paths=(); fds=(); modes=()
while [ "$1" != "--" ]; do
  case "$1" in
    hide) hides+=("$2"); [ "$3" = 1 ] && hidemode=1777 || hidemode=0755; hidemodes+=("$hidemode"); shift 3 ;;
    ro|rw) exec {fd}<"$2"; fds+=("$fd"); paths+=("$2"); modes+=("$1"); shift 2 ;;
    *) echo "watchdrop sandbox: bad argument $1" >&2; exit 126 ;;
  esac
done
shift
for i in "${!hides[@]}"; do
  mount -t tmpfs -o "mode=${hidemodes[$i]},nosuid,nodev" watchdrop-private "${hides[$i]}"
done
for i in "${!paths[@]}"; do
  p="${paths[$i]}"; fd="${fds[$i]}"
  mkdir -p "$p"
  mount --no-canonicalize --bind "/proc/$$/fd/$fd" "$p"
  if [ "${modes[$i]}" = ro ]; then mount -o remount,bind,ro,nosuid,nodev "$p"; fi
  exec {fd}<&-
done
exec "$@"
"""


def cell_uid(block_index: int, cell_index: int) -> int:
    """A uid no other cell of any live run has (run blocks are unique among live runs)."""
    if not 0 <= cell_index < CELL_UIDS_PER_BLOCK - 1:
        raise ValueError(f"cell index {cell_index} out of range")
    return UID_BASE + CELL_UIDS_PER_BLOCK * (1 + block_index) + 1 + cell_index


def enabled() -> bool:
    """Dropping privileges needs root; a runner that is not root runs nothing as root anyway."""
    return os.geteuid() == 0


def _traversable(path: Path, uid: int) -> bool:
    st = path.stat()
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == uid:  # gid == uid, and the supplementary groups are cleared
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def blocked_ancestor(path: Path, uid: int) -> Path | None:
    """The topmost directory on the way to `path` that `uid` cannot enter, or None."""
    for parent in reversed(path.parents):
        if parent == Path("/"):
            continue
        try:
            if not _traversable(parent, uid):
                return parent
        except OSError:
            return None
    return None


def toolchain_dirs() -> list[Path]:
    """The PATH folders, and the homes of the toolchain managers whose PATH entries are proxies
    (pyenv's shims run ../versions, rustup's cargo runs a toolchain under RUSTUP_HOME)."""
    dirs = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p).is_dir()]
    for var, default in (("RUSTUP_HOME", Path.home() / ".rustup"), ("PYENV_ROOT", Path.home() / ".pyenv")):
        d = Path(os.environ.get(var) or default)
        if d.is_dir():
            dirs.append(d)
    return dirs


@dataclass
class Sandbox:
    """How to start one unprivileged process: its uid, HOME, what it may read and write."""

    uid: int
    home: Path
    #: paths the process reads (client folder, build output, its kubeconfig's folder)
    readable: list[Path] = field(default_factory=list)
    #: paths the process writes (its build output while building, its HOME)
    writable: list[Path] = field(default_factory=list)

    def env(self, extra: Mapping[str, str], source: Mapping[str, str] | None = None) -> dict[str, str]:
        """The allow-listed environment plus `extra` (the contract's WATCHDROP_* and the variant's)."""
        source = os.environ if source is None else source
        env = {k: source[k] for k in ALLOWED_ENV if k in source}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        # Toolchains that look for their homes under $HOME would miss root's once HOME moves.
        for var, default in (("RUSTUP_HOME", Path.home() / ".rustup"), ("PYENV_ROOT", Path.home() / ".pyenv")):
            if var not in env and default.is_dir():
                env[var] = str(default)
        home = str(self.home)
        env.update({
            "HOME": home, "USER": "watchdrop", "LOGNAME": "watchdrop", "TMPDIR": "/tmp",
            "GOPATH": f"{home}/go", "GOCACHE": f"{home}/go-build", "GOMODCACHE": f"{home}/go/pkg/mod",
            "CARGO_HOME": f"{home}/.cargo", "npm_config_cache": f"{home}/.npm",
            "PIP_CACHE_DIR": f"{home}/.cache/pip",
            # The JVM takes user.home from the passwd entry these uids lack; Maven's ~/.m2 follows it.
            "MAVEN_OPTS": f"-Duser.home={home}",
        })
        env.update(extra)
        return env

    def mounts(self) -> list[str]:
        """The SCRIPT's arguments: what to hide behind tmpfs and what to bind back, in order."""
        wanted = [(p, "ro") for p in [*toolchain_dirs(), *self.readable]]
        wanted += [(p, "rw") for p in [*self.writable, self.home]]
        hides: dict[Path, bool] = {p: True for p in PRIVATE_TMP if p.is_dir()}
        binds: dict[Path, str] = {}
        for path, kind in wanted:
            path = Path(path).resolve()
            top = blocked_ancestor(path, self.uid)
            if top is None and not any(path.is_relative_to(t) for t in PRIVATE_TMP):
                continue  # visible as it is; its own permissions apply
            if top is not None:
                hides.setdefault(top, False)
            if binds.get(path) != "rw":
                binds[path] = kind
        # Exactly the named folders come back (a toolchain's bin, not the home around it with,
        # say, a registry token); a read-only folder inside one already bound adds nothing.
        binds = {p: k for p, k in binds.items()
                 if k == "rw" or not any(o != p and p.is_relative_to(o) for o in binds)}
        # Hides inside other hides: the outer tmpfs already hid them.
        tops = [h for h in hides if not any(h != o and h.is_relative_to(o) for o in hides)]
        args: list[str] = []
        for h in sorted(tops, key=lambda p: len(p.parts)):
            args += ["hide", str(h), "1" if hides[h] else "0"]
        for p in sorted(binds, key=lambda p: len(p.parts)):
            args += [binds[p], str(p)]
        return args

    def wrap(self, argv: Iterable[str]) -> list[str]:
        """argv, started as root in a private mount namespace, ending as `uid` with no new privileges."""
        return ["unshare", "--mount", "--propagation", "private", "--",
                "bash", "-c", _SCRIPT, "watchdrop-sandbox", *self.mounts(), "--",
                "setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups", "--no-new-privs",
                "--", *[str(a) for a in argv]]


def describe(argv: list[str]) -> str:
    """The wrapped command for logs, without the script's text."""
    if "bash" in argv and "-c" in argv:
        i = argv.index("-c")
        return shlex.join([*argv[:i + 1], "<sandbox script>", *argv[i + 2:]])
    return shlex.join(argv)


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """chown -R without following symlinks (a build may leave links pointing anywhere)."""
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def owned_dir(path: Path, uid: int, mode: int = 0o700) -> Path:
    """Create `path` (parents as root, 0755) owned by `uid` with `mode`; an existing one is re-owned."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir(mode=mode, exist_ok=True)
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        raise OSError(f"{path} is a symlink")
    if st.st_uid != uid:
        chown_tree(path, uid, uid)
    path.chmod(mode)
    return path
