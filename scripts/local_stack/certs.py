"""The stack's TLS: a CA made once per STACK_DIR, the registry's server certificate, and trust.

The registry speaks TLS only because clients insist on it: azure-containerregistry refuses a
plain-http endpoint even for anonymous calls. So the stack makes its own CA with openssl, signs a
certificate for every loopback name with it, and hands the CA to clients: as a file
(BASETRIGGER_REGISTRY_CA), as a --cert-dir for buildah/skopeo, and, where /etc/containers is
writable, in the system's per-registry trust folder so no --cert-dir is needed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import subprocess
from pathlib import Path

from .files import write_if_changed
from .settings import StackConfig, StackError

# Where buildah and skopeo look for per-registry CAs when no --cert-dir is given.
SYSTEM_CERTS_D = Path("/etc/containers/certs.d")


def _openssl(*args: str) -> None:
    if not shutil.which("openssl"):
        raise StackError("openssl is not installed; run scripts/install.sh")
    res = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise StackError(f"openssl {args[0]} failed:\n{res.stderr.strip()}")


def ensure_certificates(cfg: StackConfig) -> list[str]:
    """A CA (made once per stack dir) and a server certificate for localhost signed by it."""
    made = []
    cfg.registry_dir.mkdir(parents=True, exist_ok=True)
    if not (cfg.ca_cert.exists() and cfg.ca_key.exists()):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
            "-keyout", str(cfg.ca_key), "-out", str(cfg.ca_cert),
            "-subj", "/CN=basetrigger local stack CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "subjectKeyIdentifier=hash",
        )  # fmt: skip
        os.chmod(cfg.ca_key, 0o600)
        cfg.server_cert.unlink(missing_ok=True)  # signed by the old CA, if any
        made.append(f"CA {cfg.ca_cert}")
    if not (cfg.server_cert.exists() and cfg.server_key.exists()):
        csr = cfg.registry_dir / "server.csr"
        ext = cfg.registry_dir / "server.ext"
        # SANs for every name a client may use; the key identifiers and key usages make it pass
        # strict verifiers too (Go's crypto/x509, OpenSSL 3 with X509_STRICT as in Python 3.13+).
        ext.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n"
        )
        _openssl(
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256",
            "-keyout", str(cfg.server_key), "-out", str(csr), "-subj", "/CN=localhost",
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-sha256", "-days", "825", "-in", str(csr),
            "-CA", str(cfg.ca_cert), "-CAkey", str(cfg.ca_key), "-CAcreateserial",
            "-out", str(cfg.server_cert), "-extfile", str(ext),
        )  # fmt: skip
        os.chmod(cfg.server_key, 0o600)
        csr.unlink(missing_ok=True)
        made.append(f"server certificate {cfg.server_cert}")
    # buildah/skopeo --cert-dir wants a folder holding ca.crt.
    write_if_changed(cfg.cert_dir / "ca.crt", cfg.ca_cert.read_text())
    return made


def registry_context(cfg: StackConfig) -> ssl.SSLContext:
    """An SSL context that trusts exactly the stack's CA."""
    return ssl.create_default_context(cafile=str(cfg.ca_cert))


def register_system_trust(cfg: StackConfig) -> list[str]:
    """Let buildah/skopeo trust the registry without --cert-dir, where /etc/containers is writable.

    Returns the files written (recorded in stack.json so `down` removes exactly those).
    """
    written = []
    for host in (cfg.registry, f"127.0.0.1:{cfg.registry_port}", cfg.public_registry, cfg.auth_registry):
        target = SYSTEM_CERTS_D / host / "ca.crt"
        try:
            write_if_changed(target, cfg.ca_cert.read_text())
        except OSError:
            continue
        written.append(str(target))
    return written


def unregister_system_trust(cfg: StackConfig, files: list[str]) -> list[str]:
    """Remove those of `files` that still hold this stack's CA; returns the ones removed."""
    removed = []
    ca = cfg.ca_cert.read_text() if cfg.ca_cert.exists() else None
    for name in files:
        path = Path(name)
        with contextlib.suppress(OSError):
            if ca is not None and path.read_text() == ca:  # still ours, not another stack's
                path.unlink()
                removed.append(name)
                with contextlib.suppress(OSError):
                    path.parent.rmdir()
    return removed
