"""Our sampler names and what each host calls them (ComfyUI, A1111/Forge, diffusers)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import HeadshotError


@dataclass(frozen=True)
class SamplerSpec:
    """One of our sampler names, and what each host calls it."""

    name: str
    comfy_sampler: str  # ComfyUI KSampler `sampler_name`
    comfy_scheduler: str  # ComfyUI KSampler `scheduler`
    a1111_sampler: str  # A1111 >= 1.9 / Forge: sampler ...
    a1111_scheduler: str  # ... and schedule type
    a1111_legacy: str  # A1111 < 1.9: the single combined sampler name
    diffusers_scheduler: str  # diffusers scheduler class name ...
    diffusers_kwargs: tuple = ()  # ... and (key, value) pairs for its config

    @property
    def comfy(self) -> tuple[str, str]:
        return self.comfy_sampler, self.comfy_scheduler

    @property
    def a1111(self) -> tuple[str, str]:
        return self.a1111_sampler, self.a1111_scheduler


SAMPLERS: dict[str, SamplerSpec] = {
    s.name: s
    for s in (
        SamplerSpec("euler", "euler", "normal", "Euler", "Automatic", "Euler", "EulerDiscreteScheduler"),
        SamplerSpec(
            "euler_a", "euler_ancestral", "normal", "Euler a", "Automatic", "Euler a", "EulerAncestralDiscreteScheduler"
        ),
        SamplerSpec(
            "dpmpp_2m",
            "dpmpp_2m",
            "normal",
            "DPM++ 2M",
            "Automatic",
            "DPM++ 2M",
            "DPMSolverMultistepScheduler",
            (("algorithm_type", "dpmsolver++"), ("solver_order", 2)),
        ),
        SamplerSpec(
            "dpmpp_2m_karras",
            "dpmpp_2m",
            "karras",
            "DPM++ 2M",
            "Karras",
            "DPM++ 2M Karras",
            "DPMSolverMultistepScheduler",
            (("algorithm_type", "dpmsolver++"), ("solver_order", 2), ("use_karras_sigmas", True)),
        ),
        # DDIM's own schedule is evenly spaced timesteps: ComfyUI's "ddim_uniform"
        SamplerSpec("ddim", "ddim", "ddim_uniform", "DDIM", "Automatic", "DDIM", "DDIMScheduler"),
        SamplerSpec("unipc", "uni_pc", "normal", "UniPC", "Automatic", "UniPC", "UniPCMultistepScheduler"),
    )
}


def sampler_spec(name: str) -> SamplerSpec:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise HeadshotError(
            f"Unknown sampler {name!r}; use one of {', '.join(SAMPLERS)}.", code="unknown_sampler"
        ) from None


def comfy_sampler(name: str) -> tuple[str, str]:
    """(sampler_name, scheduler) for ComfyUI's KSampler."""
    return sampler_spec(name).comfy


def a1111_sampler(name: str) -> tuple[str, str]:
    """(sampler, schedule type) for A1111 1.9+ and Forge; older A1111 takes `.a1111_legacy`."""
    return sampler_spec(name).a1111
