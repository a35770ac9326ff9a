"""Bearer tokens for model control and (optionally) inference, and the reload path check.

Tokens never live in params.yaml: config names an environment variable or a file holding one.
Both front ends hand the `Authorization` value (HTTP header, gRPC metadata) to `check_bearer`.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from kerasops.serving.config import ServingConfig
from kerasops.serving.errors import ServingError


def read_token(env_name: str, file_name: str, what: str) -> bytes | None:
    """The token from `file_name` (if set) or the env var `env_name`; None when neither names
    one. Raises ServingError when the file named is unreadable or empty."""
    if file_name:
        try:
            token = Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ServingError(
                "FAILED_PRECONDITION", f"{what} token file {file_name}: {exc}"
            ) from None
        if not token:
            raise ServingError("FAILED_PRECONDITION", f"{what} token file {file_name} is empty")
        return token.encode()
    token = os.environ.get(env_name, "").strip() if env_name else ""
    return token.encode() if token else None


class Tokens:
    """The control and inference tokens of one server, read once at start."""

    def __init__(self, config: ServingConfig) -> None:
        self.allow_reload = config.allow_reload
        self.control = (
            read_token(config.control_token_env, config.control_token_file, "control")
            if config.allow_reload
            else None
        )
        if config.allow_reload and self.control is None:
            where = config.control_token_file or f"${config.control_token_env}"
            raise ServingError(
                "FAILED_PRECONDITION",
                f"serving.allow_reload is on but no control token is set: put one in {where}",
            )
        self.inference = read_token(
            config.inference_token_env, config.inference_token_file, "inference"
        )

    def check_control(self, authorization: str | bytes | None) -> None:
        """Raise PERMISSION_DENIED when control is off, UNAUTHENTICATED on a wrong token."""
        if not self.allow_reload:
            raise ServingError(
                "PERMISSION_DENIED",
                "model control is disabled: set serving.allow_reload: true and a control token",
            )
        check_bearer(authorization, self.control)

    def check_inference(self, authorization: str | bytes | None) -> None:
        if self.inference is not None:
            check_bearer(authorization, self.inference)


def check_bearer(authorization: str | bytes | None, token: bytes | None) -> None:
    """Raise UNAUTHENTICATED unless `authorization` is `Bearer <token>` (constant-time)."""
    if isinstance(authorization, str):
        authorization = authorization.encode("utf-8", "replace")
    scheme, _, given = (authorization or b"").partition(b" ")
    if token is None or scheme.lower() != b"bearer" or not given:
        raise ServingError("UNAUTHENTICATED", "missing bearer token: send Authorization: Bearer …")
    if not hmac.compare_digest(given.strip(), token):
        raise ServingError("UNAUTHENTICATED", "invalid bearer token")


def reload_roots(config: ServingConfig) -> list[Path]:
    """Folders a reload's base paths must lie under: the repository and `reload_roots`."""
    return [Path(p).resolve() for p in (config.model_repository, *config.reload_roots) if p]


def check_under_roots(name: str, base_path: Path, roots: list[Path]) -> None:
    """Raise PERMISSION_DENIED unless `base_path` (symlinks and `..` resolved) is in a root."""
    resolved = base_path.resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        listed = ", ".join(str(root) for root in roots)
        raise ServingError(
            "PERMISSION_DENIED",
            f"model {name!r}: base path {base_path} is outside the model repositories ({listed})",
        )
