"""Least-privilege access for one watcher: its namespace, ServiceAccount, Role, RoleBinding, token.

The watcher may get, list and watch ConfigMaps in its own namespace, and nothing else. The harness
writes (trigger, failure-*) over the runner's admin connection, never with the watcher's token.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from runner.credentials.kubeconfig import token_user, write_kubeconfig

SERVICE_ACCOUNT = "watcher"
ROLE = "watchdrop-watcher"
WATCHER_VERBS = ["get", "list", "watch"]
#: The shortest lifetime a watcher token is asked for.
TOKEN_SECONDS = 6 * 3600
#: A token outlives its cell's estimated length by this much: set-up, waiting for the watch to
#: open, a slow stop. Credentials that expire inside a cell would read as a verdict about the LB.
TOKEN_MARGIN = 3600
#: The longest lifetime asked for; the matrix check refuses cells that would need more
#: (runner/config/matrix.py), rather than run them and judge an expired token.
TOKEN_MAX_SECONDS = 24 * 3600


def token_seconds(cell_seconds: int, floor: int = TOKEN_SECONDS) -> int:
    """The lifetime to ask for a watcher token of a cell that runs about `cell_seconds`."""
    return min(TOKEN_MAX_SECONDS, max(floor, cell_seconds + TOKEN_MARGIN))


@dataclass(frozen=True)
class WatcherAccess:
    namespace: str
    kubeconfig: Path
    token: str


def role_manifest(namespace: str) -> client.V1Role:
    return client.V1Role(
        metadata=client.V1ObjectMeta(name=ROLE, namespace=namespace),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=WATCHER_VERBS)],
    )


def binding_manifest(namespace: str) -> client.V1RoleBinding:
    return client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name=ROLE, namespace=namespace),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=ROLE),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name=SERVICE_ACCOUNT, namespace=namespace)],
    )


def create_watcher_access(api: client.ApiClient, namespace: str, *, server: str, ca_pem: bytes,
                          kubeconfig_path: Path, labels: dict[str, str] | None = None,
                          seconds: int = TOKEN_SECONDS) -> WatcherAccess:
    """Everything the watcher of one namespace needs; its token is valid for at least `seconds`,
    or this raises (an API server that caps token lifetimes below what the cell needs)."""
    core = client.CoreV1Api(api)
    rbac = client.RbacAuthorizationV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace, labels=labels)))
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=SERVICE_ACCOUNT)))
    rbac.create_namespaced_role(namespace, role_manifest(namespace))
    rbac.create_namespaced_role_binding(namespace, binding_manifest(namespace))
    tr = core.create_namespaced_service_account_token(
        SERVICE_ACCOUNT, namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)),
    )
    token = tr.status.token
    expires = tr.status.expiration_timestamp
    if isinstance(expires, dt.datetime):
        left = (expires - dt.datetime.now(dt.UTC)).total_seconds()
        if left < seconds - 120:
            raise RuntimeError(f"the API server issued the watcher a token valid for {left:.0f} s; the cell needs "
                               f"{seconds} s (is --service-account-max-token-expiration lower?)")
    write_kubeconfig(kubeconfig_path, server=server, ca_pem=ca_pem, user=token_user(token),
                     namespace=namespace)
    return WatcherAccess(namespace=namespace, kubeconfig=kubeconfig_path, token=token)


def user_can(api: client.ApiClient, user: str, groups: list[str], *, verb: str, resource: str,
             target_namespace: str | None, group: str = "", name: str | None = None) -> bool:
    """Ask the API server (SubjectAccessReview) whether this user may do this; `resource` may name
    a subresource (`pods/exec`)."""
    res, _, sub = resource.partition("/")
    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=user, groups=groups,
        resource_attributes=client.V1ResourceAttributes(
            verb=verb, resource=res, subresource=sub or None, group=group, namespace=target_namespace, name=name),
    ))
    return bool(client.AuthorizationV1Api(api).create_subject_access_review(review).status.allowed)


def service_account_groups(namespace: str) -> list[str]:
    return ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]


def service_account_can(api: client.ApiClient, namespace: str, *, verb: str, resource: str,
                        target_namespace: str | None, group: str = "") -> bool:
    """Ask the API server (SubjectAccessReview) whether the watcher's ServiceAccount may do this."""
    return user_can(api, f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}", service_account_groups(namespace),
                    verb=verb, resource=resource, target_namespace=target_namespace, group=group)
