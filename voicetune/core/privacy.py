"""Private by default: the environment every voicetune process (and its children) runs with."""

from __future__ import annotations

import os

# Set before transformers/axolotl/wandb import: no hub, no telemetry, no online tracking.
PRIVATE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "AXOLOTL_DO_NOT_TRACK": "1",
    "DO_NOT_TRACK": "1",
    "WANDB_MODE": "offline",
    "WANDB_DISABLED": "true",
    "TOKENIZERS_PARALLELISM": "false",
}


def apply_private_env(wandb_mode: str | None = None) -> dict[str, str]:
    """Put the private defaults into os.environ (user-set values win, except telemetry, which stays off).

    wandb_mode: None keeps wandb disabled; "offline" or "online" enables it in that mode (online is
    the only setting that lets anything leave the machine, and only when the user asks).
    """
    for key, value in PRIVATE_ENV.items():
        os.environ.setdefault(key, value)
    # Telemetry is never the user's accident: force it off even if the shell says otherwise.
    os.environ["AXOLOTL_DO_NOT_TRACK"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    if wandb_mode in ("offline", "online"):
        os.environ["WANDB_MODE"] = wandb_mode
        os.environ.pop("WANDB_DISABLED", None)
    return dict(os.environ)
