"""Configuration, read once from the environment (the Lambda function's variables)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

DEFAULT_MODEL_URI = "s3://serverless-poc-models/admission.rds"


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    value = _float(env, name, default)
    if value != int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative whole number, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Settings:
    """Everything the handler reads from its environment."""

    model_uri: str = DEFAULT_MODEL_URI
    threshold: float = 0.5
    cors_origins: tuple[str, ...] = ("*",)
    max_rows: int = 10_000
    max_body_bytes: int = 6 * 1024 * 1024
    cache_dir: str = "/tmp"
    refresh_s: float = 60.0
    # How long Lambda's init waits for the model's download (its limit is
    # 10 s without SnapStart); a fetch still running is finished by the
    # first request.
    init_wait_s: float = 4.0
    # A custom domain's API mapping puts its base path in front of every
    # route (/v1/predict); these prefixes are removed before routing.
    base_paths: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Read settings from ``env`` (default: ``os.environ``); bad values fail loudly."""
        env = os.environ if env is None else env
        origins = tuple(o.strip() for o in env.get("CORS_ORIGINS", "*").split(",") if o.strip())
        threshold = _float(env, "THRESHOLD", 0.5)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"THRESHOLD must be between 0 and 1, got {threshold}")
        return cls(
            model_uri=env.get("MODEL_URI", "").strip() or DEFAULT_MODEL_URI,
            threshold=threshold,
            cors_origins=origins or ("*",),
            max_rows=_int(env, "MAX_ROWS", 10_000),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 6 * 1024 * 1024),
            cache_dir=env.get("MODEL_CACHE_DIR", "").strip() or "/tmp",
            refresh_s=_float(env, "MODEL_REFRESH_S", 60.0),
            init_wait_s=_float(env, "MODEL_INIT_WAIT_S", 4.0),
            base_paths=tuple(p.strip() for p in env.get("BASE_PATH", "").split(",") if p.strip().strip("/")),
        )
