"""Training presets. Every default names where it comes from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    value: object
    source: str


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    settings: dict[str, Setting]

    def value(self, key: str):
        return self.settings[key].value


def planned_steps(preset: Preset, image_count: int) -> int:
    """Steps = images x steps_per_image, clamped: small sets still train, large ones don't overcook."""
    per_image = preset.value("steps_per_image")
    low, high = preset.value("min_steps"), preset.value("max_steps")
    return int(max(low, min(high, image_count * per_image)))


_EP = "EasyPhoto (aigc-apps/sd-webui-EasyPhoto, scripts/easyphoto_ui.py and easyphoto_train.py)"
_FC = "FaceChain (modelscope/facechain, app.py train_lora_fn)"
_KOHYA = "kohya sd-scripts docs/train_network_README"

_MIN_SNR = Setting(
    5.0, "Min-SNR weighting paper (Hang et al. 2023): '5 is recommended by paper' (sd-scripts --min_snr_gamma help)"
)
_ADAMW = Setting("adamw", f"{_EP} and {_FC} both train with AdamW")
_CHECKPOINTING = Setting(True, "fits SD1.5 at 512 in 8 GB and SDXL at 1024 in 12 GB, at some speed cost")
_EVERY_100 = Setting(100, f"{_EP}: val_and_checkpointing_steps = 100")

PRESETS = {
    "fast": Preset(
        "fast",
        "a quick likeness check: fewer steps at a higher learning rate",
        {
            "rank": Setting(16, f"between {_FC}'s rank 4 and {_EP}'s 128; small file, quick to train"),
            "alpha": Setting(8.0, f"half the rank, the ratio {_EP} uses (128/64)"),
            "lr": Setting(2e-4, f"{_KOHYA}: LoRA takes 1e-4 to 1e-3; higher for a short run"),
            "steps_per_image": Setting(100, f"half of {_EP}'s steps_per_photos (200)"),
            "min_steps": Setting(200, "fewer steps barely move the LoRA"),
            "max_steps": Setting(400, f"half of {_EP}'s max_train_steps (800)"),
            "optimizer": _ADAMW,
            "scheduler": Setting("constant", f"{_EP}: lr_scheduler constant, no warmup"),
            "warmup_share": Setting(0.0, f"{_EP}: lr_warmup_steps 0"),
            "min_snr_gamma": _MIN_SNR,
            "noise_offset": Setting(0.0, "off: its gain (deeper blacks and whites) needs longer runs"),
            "gradient_checkpointing": _CHECKPOINTING,
            "checkpoint_every": _EVERY_100,
        },
    ),
    "balanced": Preset(
        "balanced",
        "the default: EasyPhoto's schedule at a mid-size rank",
        {
            "rank": Setting(32, f"{_EP}'s SDXL setting (rank 32, alpha 16)"),
            "alpha": Setting(16.0, f"{_EP}'s SDXL setting"),
            "lr": Setting(1e-4, f"{_EP} learning_rate 1e-4; {_KOHYA} example --learning_rate=1e-4"),
            "steps_per_image": Setting(200, f"{_EP} steps_per_photos 200 (also {_FC}: 200 epochs of batch 1)"),
            "min_steps": Setting(400, "sets of 1–2 photos still get a usable run"),
            "max_steps": Setting(800, f"{_EP}: final steps = min(photos x 200, 800)"),
            "optimizer": _ADAMW,
            "scheduler": Setting("cosine", f"{_FC}: lr_scheduler cosine"),
            "warmup_share": Setting(0.0, f"{_EP} and {_FC}: no warmup"),
            "min_snr_gamma": _MIN_SNR,
            "noise_offset": Setting(
                0.05, f"{_KOHYA} (train_README) finds about 0.1 good; half keeps skin tones faithful"
            ),
            "gradient_checkpointing": _CHECKPOINTING,
            "checkpoint_every": _EVERY_100,
        },
    ),
    "quality": Preset(
        "quality",
        "EasyPhoto's rank, a longer run, the best checkpoint chosen by likeness",
        {
            "rank": Setting(128, f"{_EP} rank 128"),
            "alpha": Setting(64.0, f"{_EP} network_alpha 64"),
            "lr": Setting(1e-4, f"{_EP} learning_rate 1e-4"),
            "steps_per_image": Setting(200, f"{_EP} steps_per_photos 200"),
            "min_steps": Setting(800, f"{_EP} max_train_steps 800"),
            "max_steps": Setting(1600, "twice EasyPhoto's cap: the likeness check guards against overfitting"),
            "optimizer": _ADAMW,
            "scheduler": Setting("constant", f"{_EP}: constant"),
            "warmup_share": Setting(0.0, f"{_EP}: no warmup"),
            "min_snr_gamma": _MIN_SNR,
            "noise_offset": Setting(0.1, f"{_KOHYA} (train_README): 'a value of about 0.1 seems to be good'"),
            "gradient_checkpointing": _CHECKPOINTING,
            "checkpoint_every": _EVERY_100,
        },
    ),
    # `headshot train PHOTO --single-photo`: the ~10 pictures are variants of ONE photo (dataset.single_photo),
    # so there is one moment to learn, not ten: a long run memorises that photo's expression, clothes and
    # background rather than the face. Hence few steps, a small rank and frequent checkpoints to choose from.
    "single_photo": Preset(
        "single_photo",
        "one photo's variants: a short, gentle run (weaker than 10 photos, better than nothing)",
        {
            "rank": Setting(16, "small: less room to memorise the one photo's background and clothes (fast's rank)"),
            "alpha": Setting(8.0, f"half the rank, the ratio {_EP} uses (128/64)"),
            "lr": Setting(1e-4, f"{_EP} learning_rate 1e-4: gentle, as the run is short and the set is one photo"),
            "steps_per_image": Setting(25, "one photo's variants hold little new to learn: a quarter of fast's 100"),
            "min_steps": Setting(150, "fewer steps barely move the LoRA"),
            "max_steps": Setting(300, "our cap (reasoned, not measured): below balanced's 400 minimum, near fast's"),
            "optimizer": _ADAMW,
            "scheduler": Setting("cosine", f"{_FC}: lr_scheduler cosine; the rate tapers before it overcooks"),
            "warmup_share": Setting(0.0, f"{_EP} and {_FC}: no warmup"),
            "min_snr_gamma": _MIN_SNR,
            "noise_offset": Setting(0.0, "off: its gain needs longer runs (as fast)"),
            "gradient_checkpointing": _CHECKPOINTING,
            "checkpoint_every": Setting(
                50, "more checkpoints in a short run: the likeness check can pick an early one"
            ),
        },
    ),
}
