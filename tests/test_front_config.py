"""The fronts' HAProxy configurations (runner/embedded/front.py) and the http front's certificate.

Fast: no namespace, no cluster. Where HAProxy is installed, each configuration is also checked by
HAProxy itself (`haproxy -c`), with the http front's real certificate files.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from runner.config.matrix import MAX_SECONDS
from runner.config.profiles import FRONTS
from runner.credentials import pki
from runner.embedded.front import APISERVER_NAME, FRONT_TIMEOUT_S, FrontError, FrontTls, haproxy_config

BIND, TARGET = "198.18.1.20", "198.18.1.1"


@pytest.fixture(scope="module")
def cluster_pki(tmp_path_factory: pytest.TempPathFactory) -> pki.Pki:
    return pki.generate(tmp_path_factory.mktemp("pki"), ip_sans=[TARGET, BIND, "198.18.1.8"],
                        dns_sans=["kubernetes", "kubernetes.default", "kubernetes.default.svc"])


@pytest.fixture(scope="module")
def tls(cluster_pki: pki.Pki) -> FrontTls:
    return FrontTls(cert_pem=pki.issue_front(cluster_pki, "front-0"), ca_file=cluster_pki.ca_cert)


def lines(cfg: str) -> list[str]:
    return [ln.strip() for ln in cfg.splitlines() if ln.strip()]


def timeouts(cfg: str) -> dict[str, int]:
    found = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s*timeout ([\w-]+) (\d+)s$", cfg, re.M)}
    found.pop("connect", None)  # dialing kube-apiserver, not a flow's life
    return found


def test_every_front_kind_is_known() -> None:
    assert FRONTS == ("tcp", "passthrough", "http")


def test_tcp_front_is_a_tcp_proxy(tls: FrontTls) -> None:
    cfg = haproxy_config("tcp", BIND, TARGET)
    assert "mode tcp" in lines(cfg) and "mode http" not in cfg
    assert f"bind {BIND}:6443" in lines(cfg)
    assert f"server kube-apiserver {TARGET}:6443" in lines(cfg)
    # Neither TLS nor TCP keepalive: bytes and closes pass through as they come.
    assert "ssl" not in cfg and "tcpka" not in cfg
    assert haproxy_config("tcp", BIND, TARGET, tls) == cfg


def test_http_front_ends_tls_and_http(tls: FrontTls) -> None:
    cfg = haproxy_config("http", BIND, TARGET, tls)
    ls = lines(cfg)
    assert "mode http" in ls and "mode tcp" not in cfg
    assert f"bind {BIND}:6443 ssl crt {tls.cert_pem} alpn h2,http/1.1" in ls
    # Its own pool toward kube-apiserver, trusted only under the cluster's CA and under its name.
    assert "http-reuse always" in ls
    assert (f"server kube-apiserver {TARGET}:6443 ssl verify required ca-file {tls.ca_file} "
            f"verifyhost {APISERVER_NAME}") in ls
    # Keep-alive on both sides, each its own: closing after each response would pass the server's
    # closes on, which is the one thing an L7 front does not do.
    for option in ("http-server-close", "httpclose", "forceclose", "tcpka"):
        assert option not in cfg
    # No client certificate is forwarded or presented: identities are the requests' bearer tokens.
    assert " crt " not in ls[-1]


@pytest.mark.parametrize("front", ["tcp", "http"])
def test_the_front_never_ends_a_flow_by_itself(front: str, tls: FrontTls) -> None:
    found = timeouts(haproxy_config(front, BIND, TARGET, tls))  # type: ignore[arg-type]
    want = {"client", "server", "tunnel"} | ({"http-request", "http-keep-alive"} if front == "http" else set())
    assert set(found) == want
    assert all(v == FRONT_TIMEOUT_S > MAX_SECONDS for v in found.values()), found


def test_http_front_needs_its_certificate() -> None:
    with pytest.raises(FrontError):
        haproxy_config("http", BIND, TARGET)
    with pytest.raises(FrontError):
        haproxy_config("passthrough", BIND, TARGET)


def test_the_front_certificate_names_what_kube_apiserver_names(cluster_pki: pki.Pki, tls: FrontTls) -> None:
    pem = tls.cert_pem.read_bytes()
    assert tls.cert_pem.stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" in pem
    cert = x509.load_pem_x509_certificate(pem)
    serving = x509.load_pem_x509_certificate(cluster_pki.serving_cert.read_bytes())
    ca = x509.load_pem_x509_certificate(cluster_pki.ca_cert.read_bytes())
    cert.verify_directly_issued_by(ca)

    def sans(c: x509.Certificate) -> list[x509.GeneralName]:
        return list(c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)

    assert sans(cert) == sans(serving)
    assert cert.subject != serving.subject and cert.public_key() != serving.public_key()
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="no haproxy")
@pytest.mark.parametrize("front", ["tcp", "http"])
def test_haproxy_accepts_the_config(front: str, tls: FrontTls, tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_config(front, "127.0.0.1", "127.0.0.1", tls))  # type: ignore[arg-type]
    proc = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
