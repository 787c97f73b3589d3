"""The command line: argparse in, one clear line out on any error, pytest-style exit codes."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from runner.errors import ExitCode, Interrupted, UsageError, WatchdropError
from runner.host import signals
from runner.host.procs import REGISTRY
from runner.probe.ladder import DEFAULT_LADDER, DEFAULT_MAX_IDLE

if TYPE_CHECKING:
    from runner.kube.manifests import Subject

COMMANDS = ("run", "cluster", "lb-probe", "report", "clean", "kube-rbac", "versions", "bisect")

DESCRIPTION = """\
watchdrop: which Kubernetes API client libraries silently lose their watches when a load
balancer forgets an idle TCP flow, and why.

commands:
  MATRIX.yaml            run every cell of the matrix (same as `run MATRIX.yaml`)
  run MATRIX.yaml        build the watchers, run every cell, write results/ and the table
  report RESULTS.json    re-render the table from a results file, running nothing
  cluster check          start the embedded etcd + kube-apiserver, do one smoke round, tear down
  cluster up             start the embedded cluster and keep it up until Ctrl-C
  cluster up --kind local
                         a real single-node Kubernetes on this machine (kubelet, containerd,
                         kube-proxy, a registry); prints the kubeconfig and context, Ctrl-C ends it
  lb-probe --profile P   the seed's curl experiment through one load-balancer profile
  lb-probe --cluster C [--matrix M] [--max-idle S]
                         idle connections through a local or kubernetes cluster's Service LB, from
                         outside and from a pod: when and how each path broke, which profile fits
  clean [MATRIX.yaml]    remove leftovers (namespaces, nft tables, processes) of crashed runs;
                         with a matrix, also their namespaces on its kubernetes clusters
  kube-rbac --user NAME  print the RBAC and admission policy a cluster admin applies for the
                         runner's identity on a real cluster (`| kubectl apply -f -`)
  versions [MATRIX.yaml] each client's pinned library version beside the newest stable release
                         its registry serves (current, behind, ahead?, unknown); a report, exit 0
  bisect MATRIX.yaml --client NAME --cluster C --scenario S [--from V1] [--to V2]
                         the library release where the cell's grade changes: builds and runs
                         the one cell at the versions a binary search picks

exit codes: 0 ran, no ERROR cells; 1 some cell ERROR; 2 interrupted; 3 internal error;
            4 usage error or bad matrix; 5 nothing selected.
"""


#: What each `_add_<command>` adds its subcommand to.
_Sub = argparse._SubParsersAction  # type: ignore[type-arg]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}", fix=f"see `{self.prog} --help`")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m runner", description=DESCRIPTION,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in (_add_run, _add_report, _add_cluster, _add_lb_probe, _add_clean, _add_kube_rbac, _add_versions,
                _add_bisect):
        add(sub)
    return p


def _add_run(sub: _Sub) -> None:
    run = sub.add_parser("run", help="run a matrix", description="Run every selected cell of a matrix.")
    run.add_argument("matrix", help="the matrix file, e.g. matrix.yaml or matrix.quick.yaml")
    run.add_argument("--plan", action="store_true", help="print the cells and what each needs; run nothing")
    run.add_argument("--only", action="append", default=[], metavar="KEY=GLOB",
                     help="select cells: client=, cluster= or scenario= with an exact name or a glob "
                          "(never a prefix); repeat to combine")
    run.add_argument("--jobs", type=int, default=0, help="cells to run at once (default: all)")
    run.add_argument("--out", default="results", help="results directory (default: results/)")
    run.add_argument("--keep", action="store_true",
                     help="leave the embedded cluster up, or the kubernetes namespaces in place, for inspection")
    run.add_argument("--images-from", metavar="REGISTRY",
                     help="kubernetes clusters: use watchdrop images already pushed to REGISTRY "
                          "(same names and content-hash tags a build pushes); build nothing")
    run.add_argument("--no-readme", action="store_true", help="do not update README.md's table")
    run.add_argument("--clients", metavar="DIR", help="the clients folder (default: clients/ next to the matrix)")
    # Test seam, not for users: hold the run a few seconds after entering PHASE (phases.log), so an
    # interruption test can aim its signal at that phase instead of guessing with sleeps.
    run.add_argument("--pause-at", metavar="PHASE", help=argparse.SUPPRESS)
    # Test seam, not for users: this client's captures fail to start (a cell without packet evidence).
    run.add_argument("--break-capture", metavar="CLIENT", help=argparse.SUPPRESS)
    # Test seam, not for users: smaller size caps (MiB) for the watcher's logs and the pod's capture.
    run.add_argument("--limit-log-mib", type=float, metavar="MIB", help=argparse.SUPPRESS)
    run.add_argument("--limit-pcap-mib", type=float, metavar="MIB", help=argparse.SUPPRESS)


def _add_report(sub: _Sub) -> None:
    rep = sub.add_parser("report", help="re-render a results file")
    rep.add_argument("results", help="a results.json written by a run")
    rep.add_argument("--format", choices=["plain", "github"], default="plain")
    rep.add_argument("--wide", action="store_true",
                     help="every cell with its reason (report.md's table) instead of one grade a cell")
    rep.add_argument("--html", action="store_true",
                     help="also (re)write index.html, the cell pages with timelines, and junit.xml")
    rep.add_argument("--against", metavar="RESULTS.json",
                     help="set the run beside another, cell by cell where both ran the same client, scenario "
                          "and LB profile (e.g. a local cluster's run beside an embedded one)")


def _add_cluster(sub: _Sub) -> None:
    cl = sub.add_parser("cluster", help="the embedded or local cluster on its own")
    cl.add_argument("action", choices=["check", "up"])
    cl.add_argument("--kind", choices=["embedded", "local"], default="embedded",
                    help="embedded: etcd + kube-apiserver only (default); local: a real node as well (up only)")


def _add_lb_probe(sub: _Sub) -> None:
    probe = sub.add_parser("lb-probe", help="the seed's curl experiment through one LB profile, or a cluster's LB",
                           description="With --profile: the seed's curl experiment through one LB profile on the "
                                       "embedded cluster. With --cluster: the timer server behind a Service of "
                                       "that cluster (local or kubernetes), connections held idle at a ladder of "
                                       "periods from outside the cluster and from a pod, and per path after how "
                                       "long and how the flow broke, and which profiles that matches.")
    probe.add_argument("--profile", help="a profile name, e.g. azure-slb (the embedded cluster)")
    probe.add_argument("--idle-timeout", type=int, help="with --profile: override the profile's idle timeout (s)")
    probe.add_argument("--cluster", help="a matrix cluster of kind local or kubernetes, e.g. local-silent")
    probe.add_argument("--matrix", default="matrix.yaml", help="with --cluster: the matrix naming it "
                                                               "(default: matrix.yaml)")
    probe.add_argument("--max-idle", type=int, default=DEFAULT_MAX_IDLE, metavar="S",
                       help=f"with --cluster: the longest idle period held (default {DEFAULT_MAX_IDLE} s); the "
                            f"ladder's rungs up to it: {', '.join(map(str, DEFAULT_LADDER))}")
    probe.add_argument("--ladder", metavar="S,S,...", help="with --cluster: other rungs (seconds, comma-separated)")
    probe.add_argument("--out", default="results", help="where the evidence goes")


def _add_clean(sub: _Sub) -> None:
    cln = sub.add_parser("clean", help="remove leftovers of crashed runs (only wd- prefixed resources)")
    cln.add_argument("matrix", nargs="?",
                     help="also delete crashed runs' namespaces on this matrix's kubernetes clusters")


def _add_kube_rbac(sub: _Sub) -> None:
    rbac = sub.add_parser("kube-rbac", help="print the least-privilege manifests for the runner's identity",
                          description="Print the ClusterRoles, ClusterRoleBinding and ValidatingAdmissionPolicies "
                                      "that let the runner do its job on a real cluster and nothing else "
                                      "(apply them with `kubectl apply -f -`).")
    who = rbac.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="the runner's user name as the API server sees it "
                                    "(`kubectl auth whoami` with the runner's context)")
    who.add_argument("--group", help="a group the runner's identity is in (every member is restricted)")
    who.add_argument("--service-account", metavar="NAMESPACE/NAME", help="the runner's ServiceAccount")
    rbac.add_argument("--pull-secret", action="append", default=[], metavar="NAME",
                      help="an image pull secret the matrix names (pull_secrets); repeatable")
    rbac.add_argument("--secrets-namespace", default="default", metavar="NS",
                      help="the kube context's namespace, where the pull secrets are read (default: default)")


def _add_versions(sub: _Sub) -> None:
    ver = sub.add_parser("versions", help="pinned library versions beside the registries' newest releases",
                         description="Print, per client folder (or per pin a matrix's columns build), the "
                                     "registry, the library, the pinned version, the newest stable release "
                                     "and whether the pin is current, behind, ahead? or unknown. Exits 0 "
                                     "however far behind the pins are.")
    ver.add_argument("matrix", nargs="?",
                     help="only the pins this matrix's columns build, variants' build_env pins included "
                          "(default: every folder under clients/)")
    ver.add_argument("--format", choices=["plain", "github"], default="plain")
    ver.add_argument("--json", action="store_true", help="a JSON list of records instead of the table")
    ver.add_argument("--clients", metavar="DIR", help="the clients folder (default: clients/ next to the "
                                                      "matrix, or ./clients)")


def _add_bisect(sub: _Sub) -> None:
    bis = sub.add_parser("bisect", help="the library release where one cell's grade changes",
                         description="List the column's library releases from its registry, build the watcher "
                                     "at each version a binary search picks (the descriptor's version_env), run "
                                     "the one cell, and print the release where the grade changes, each tried "
                                     "version's grade and its evidence. A version that does not build, or whose "
                                     "cell is ERROR or SKIPPED, stops the search (exit 1) instead of a guess.")
    bis.add_argument("matrix", help="the matrix the column, cluster and scenario come from, e.g. matrix.quick.yaml")
    bis.add_argument("--client", required=True, help="the matrix column, e.g. javascript")
    bis.add_argument("--cluster", required=True, help="the matrix cluster, e.g. azure-slb-no-reset-quick")
    bis.add_argument("--scenario", required=True, help="watch or idle-request")
    bis.add_argument("--from", dest="first", metavar="V1",
                     help="the oldest release to try (default: the oldest stable release)")
    bis.add_argument("--to", dest="last", metavar="V2",
                     help="the newest release to try (default: the newest stable release)")
    bis.add_argument("--out", help="where each version's run goes (default: results/bisect-<id>/)")
    bis.add_argument("--format", choices=["plain", "github"], default="plain")
    bis.add_argument("--json", action="store_true", help="print the record (also written as OUT/bisect.json)")
    bis.add_argument("--clients", metavar="DIR", help="the clients folder (default: clients/ next to the matrix)")


def normalise(argv: Sequence[str]) -> list[str]:
    """`python -m runner matrix.yaml ...` means `run matrix.yaml ...`."""
    argv = list(argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    if first is not None and first not in COMMANDS:
        idx = argv.index(first)
        argv.insert(idx, "run")
    return argv


def _subject(args: argparse.Namespace) -> Subject:
    from runner.kube.manifests import Subject
    if args.user:
        return Subject.of_user(args.user)
    if args.group:
        return Subject("Group", args.group)
    ns, sep, name = args.service_account.partition("/")
    if not sep or not ns or not name:
        raise UsageError(f"--service-account {args.service_account}: expected NAMESPACE/NAME",
                         fix="e.g. --service-account watchdrop/runner")
    return Subject("ServiceAccount", name, ns)


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "cluster":
        from runner.host import sysdeps
        if args.kind == "local":
            if args.action != "up":
                raise UsageError("`cluster check` is for the embedded cluster only",
                                 fix="use `python -m runner cluster up --kind local`")
            sysdeps.require_root("the local cluster")
            sysdeps.ensure_local_cluster_tools()
        else:
            sysdeps.require_root("the embedded cluster")
            sysdeps.ensure_tools()
        # Imported only now: as a non-root user the Kubernetes client may not even be importable.
        from runner.cli import cluster as cluster_cli
        if args.kind == "local":
            return cluster_cli.up_local()
        return cluster_cli.check() if args.action == "check" else cluster_cli.up()
    if args.command == "clean":
        from runner.host import cleanup
        return cleanup.main(Path(args.matrix) if args.matrix else None)
    if args.command == "lb-probe":
        if bool(args.profile) == bool(args.cluster):
            raise UsageError("lb-probe: give either --profile (the embedded cluster) or --cluster (a local or "
                             "kubernetes cluster of a matrix)",
                             fix="e.g. `lb-probe --profile azure-slb` or `lb-probe --cluster local-silent "
                                 "--matrix matrix.local.yaml`")
        if args.cluster:
            if args.idle_timeout:
                raise UsageError("lb-probe --idle-timeout applies to --profile only",
                                 fix="with --cluster the profile is the cluster's; bound the ladder with --max-idle")
            from runner.probe import command as probe_command
            return probe_command.main(args)
        if args.ladder or args.max_idle != DEFAULT_MAX_IDLE:
            raise UsageError("lb-probe --max-idle/--ladder apply to --cluster only",
                             fix="with --profile the slow port speaks at the profile's timeout + 10 s")
        from runner.embedded import lbprobe
        return lbprobe.main(args)
    if args.command == "report":
        from runner.report import cli as run_report
        return run_report.report_main(args)
    if args.command == "kube-rbac":
        from runner.kube import manifests
        print(manifests.render_yaml(manifests.runner_rbac(
            _subject(args), pull_secrets=args.pull_secret, secrets_namespace=args.secrets_namespace)), end="")
        return 0
    if args.command == "versions":
        from runner.cli.versions import versions_main
        return versions_main(args)
    if args.command == "bisect":
        from runner.bisect.cli import bisect_main
        return bisect_main(args)
    if args.command == "run":
        from runner import pipeline as run_matrix
        return run_matrix.main(args)
    raise UsageError("no command given", fix="see `python -m runner --help`")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Results are for reading by users, web servers and CI collectors: files 0644, folders 0755
    # whatever root's umask is. Secrets (work dir, keys, kubeconfigs) set their own modes.
    os.umask(0o022)
    signals.install()
    try:
        args = build_parser().parse_args(normalise(argv))
        if args.command is None:
            build_parser().print_help()
            return ExitCode.USAGE
        return int(dispatch(args))
    except WatchdropError as exc:
        print(exc.render(), file=sys.stderr)
        return int(exc.exit_code)
    except Interrupted as exc:
        print(f"watchdrop: interrupted ({exc}); cleaned up", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except SystemExit as exc:  # argparse --help
        return int(exc.code or 0)
    except Exception:
        print("watchdrop: internal error (a bug; please report it with this trace):", file=sys.stderr)
        traceback.print_exc()
        return int(ExitCode.INTERNAL)
    finally:
        _stop_children()


def _stop_children() -> None:
    """Whatever ended the command (a bug included), no child process outlives it."""
    try:
        with signals.shield():
            REGISTRY.stop_all(grace=2.0)
    except Interrupted:
        pass  # a signal during the stop: the children were stopped all the same
