"""Style templates: the packaged TOML files, drop-in styles, validation and prompt building."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from headshot.errors import HeadshotError
from headshot.generate.pose_presets import POSE_PRESETS
from headshot.generate.prompt_syntax import build_prompt
from headshot.generate.style_schema import CATEGORIES, Style
from headshot.generate.styles import PACKAGED_DIR, get_style, load_style_file, load_styles
from headshot.sampling.schedulers import SAMPLERS, a1111_sampler, comfy_sampler

FACECHAIN = [
    "winter_hanfu",
    "fairy",
    "school_uniform",
    "traditional_chinese",
    "wedding_dress_cathedral",
    "wedding_dress_seaside",
    "zhuang_costume",
    "hong_kong_night",
    "european_fields",
    "rainy_night",
    "snow_mountain_down_jacket",
    "model",
    "working_suit",
    "motorcycle_racer",
    "armour",
    "t_shirt",
    "polaroid",
    "hanfu",
    "cyberpunk",
    "evening_gown",
    "phoenix_crown",
]
PROFESSIONAL = ["linkedin_corporate", "studio_grey", "outdoor_natural_light", "id_photo"]
AVATARS = ["anime", "cartoon", "oil_painting", "retro_90s"]

TRIGGER, CLASS = "zkqv", "woman"

MINIMAL = """\
title = "Beach headshot"
category = "professional"
prompt = "headshot of {subject} on a beach, (soft backlight:1.2)"
negative = "blurry"
width = 512
height = 640
sampler = "dpmpp_2m_karras"
cfg = 7.0
steps = 30
"""


@pytest.fixture(scope="module")
def packaged() -> dict[str, Style]:
    return load_styles()


def weight_syntax_ok(text: str) -> bool:
    """Independent check of the shared syntax: unescaped parens pair up, never nest, and every
    group is "text:number"; no square or angle brackets, no braces left."""
    unescaped = re.sub(r"\\[()]", "", text)
    if re.search(r"[\[\]<>{}]", unescaped):
        return False
    depth, start = 0, 0
    for i, c in enumerate(unescaped):
        if c == "(":
            depth += 1
            start = i
            if depth > 1:
                return False
        elif c == ")":
            depth -= 1
            if depth < 0 or not re.fullmatch(r"[^():]+:\d+(\.\d+)?", unescaped[start + 1 : i]):
                return False
    return depth == 0


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --- the packaged styles ------------------------------------------------------------------------


def test_every_packaged_file_is_loaded_under_its_file_name(packaged):
    files = sorted(p.stem for p in PACKAGED_DIR.glob("*.toml"))
    assert len(files) >= 29
    assert sorted(packaged) == files
    for path in PACKAGED_DIR.glob("*.toml"):
        assert load_style_file(path).name == path.stem


def test_required_facechain_professional_and_avatar_styles_exist(packaged):
    for names, category in ((FACECHAIN, "portrait"), (PROFESSIONAL, "professional"), (AVATARS, "avatar")):
        for name in names:
            assert name in packaged, name
            assert packaged[name].category == category, name
    assert len(FACECHAIN) == 21 and len(set(FACECHAIN)) == 21
    # the two wedding styles are really different pictures
    a, b = packaged["wedding_dress_cathedral"].prompt, packaged["wedding_dress_seaside"].prompt
    assert a != b and "church" in a and "beach" in b


def test_every_packaged_style_resolves_for_sd1_and_sdxl_with_family_sizes(packaged):
    for name, style in packaged.items():
        assert style.category in CATEGORIES
        sd1, sdxl, sd2 = style.for_family("sd1"), style.for_family("sdxl"), style.for_family("sd2")
        assert sd1.family == "sd1" and sdxl.family == "sdxl"
        for resolved in (sd1, sdxl, sd2):
            assert resolved.width % 8 == 0 and resolved.height % 8 == 0, name
            assert resolved.steps > 0 and resolved.cfg > 0, name
        # SD1.5 near 512, SDXL near one megapixel
        assert 512 * 512 <= sd1.width * sd1.height <= 512 * 768, name
        assert 0.75e6 <= sdxl.width * sdxl.height <= 1.1e6, name
        # same framing in both families (aspect within 10 %)
        assert abs(sd1.width / sd1.height - sdxl.width / sdxl.height) < 0.1 * sd1.width / sd1.height, name


def test_every_packaged_style_builds_a_prompt_with_the_subject_once_and_balanced_weights(packaged):
    subject = f"{TRIGGER} {CLASS}"
    for name, style in packaged.items():
        for family in ("sd1", "sdxl"):
            positive, negative = build_prompt(style.for_family(family), TRIGGER, CLASS)
            assert positive.count(subject) == 1, (name, family)
            assert positive.count(TRIGGER) == 1, (name, family)
            assert TRIGGER not in negative
            assert weight_syntax_ok(positive), (name, positive)
            assert weight_syntax_ok(negative), (name, negative)
            assert "{" not in positive and "<lora" not in positive


def test_packaged_poses_are_presets(packaged):
    poses = {s.pose for s in packaged.values() if s.pose}
    assert poses and poses <= set(POSE_PRESETS)
    assert packaged["linkedin_corporate"].pose == "headshot_front"


def test_id_photo_has_the_common_print_sizes_with_generation_sizes_near_their_aspect(packaged):
    presets = packaged["id_photo"].size_presets
    assert {"passport_35x45", "us_2x2in", "china_33x48", "schengen_visa_35x45"} <= set(presets)
    assert presets["us_2x2in"].crop_aspect == 1.0
    assert presets["passport_35x45"].print_pixels(300) == (413, 531)  # 35 x 45 mm at 300 dpi
    assert presets["us_2x2in"].print_pixels(300) == (600, 600)
    for preset in presets.values():
        for family in ("sd1", "sd2", "sdxl"):
            w, h = preset.generation_size(family)
            assert w % 8 == 0 and h % 8 == 0
            assert abs(w / h - preset.crop_aspect) < 0.02, (preset.name, family)


def test_sampler_mapping_covers_every_sampler_used(packaged):
    used = {s.sampler for s in packaged.values()}
    assert used <= set(SAMPLERS)
    for name in SAMPLERS:
        spec = SAMPLERS[name]
        assert spec.name == name and spec.comfy_sampler and spec.comfy_scheduler
        assert spec.a1111_sampler and spec.a1111_legacy and spec.diffusers_scheduler
    assert set(SAMPLERS) == {"euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "unipc"}
    assert comfy_sampler("euler_a") == ("euler_ancestral", "normal")
    assert comfy_sampler("dpmpp_2m_karras") == ("dpmpp_2m", "karras")
    assert a1111_sampler("dpmpp_2m_karras") == ("DPM++ 2M", "Karras")
    assert SAMPLERS["dpmpp_2m_karras"].a1111_legacy == "DPM++ 2M Karras"
    assert comfy_sampler("unipc") == ("uni_pc", "normal")


# --- family overrides ---------------------------------------------------------------------------


def test_family_tables_override_only_their_family_and_sd2_falls_back_to_sd1(tmp_path):
    write(
        tmp_path,
        "fam",
        MINIMAL + '\n[sd1]\nnegative = "lowres, blurry"\nsteps = 25\n'
        '\n[sdxl]\nwidth = 896\nheight = 1152\ncfg = 5.5\nprompt = "xl {subject}"\n',
    )
    style = load_styles([tmp_path])["fam"]
    sd1, sdxl, sd2 = style.for_family("sd1"), style.for_family("sdxl"), style.for_family("sd2")
    assert (sd1.width, sd1.height, sd1.steps, sd1.cfg, sd1.negative) == (512, 640, 25, 7.0, "lowres, blurry")
    assert (sdxl.width, sdxl.height, sdxl.steps, sdxl.cfg, sdxl.negative) == (896, 1152, 30, 5.5, "blurry")
    assert sdxl.prompt == "xl {subject}"
    assert sd2.steps == 25  # [sd1] applies when there is no [sd2]
    # re-resolving starts from the file's defaults, not from the other family
    assert sdxl.for_family("sd1").cfg == 7.0 and sdxl.for_family("sd1").prompt == style.prompt
    with pytest.raises(HeadshotError, match="sd3"):
        style.for_family("sd3")


# --- drop-in styles -----------------------------------------------------------------------------


def test_a_dropped_in_style_is_listed_and_can_override_a_packaged_one(tmp_path, packaged):
    write(tmp_path, "beach_headshot", MINIMAL)
    write(tmp_path, "anime", MINIMAL.replace("Beach headshot", "My anime"))
    styles = load_styles([tmp_path])
    assert "beach_headshot" in styles and "beach_headshot" not in packaged
    assert styles["anime"].title == "My anime" and packaged["anime"].title != "My anime"
    assert styles["anime"].source == tmp_path / "anime.toml"
    assert set(packaged) <= set(styles)
    assert get_style("beach_headshot", [tmp_path]).title == "Beach headshot"
    # a later folder wins over an earlier one
    second = tmp_path / "second"
    write(second, "beach_headshot", MINIMAL.replace("Beach headshot", "Second beach"))
    assert load_styles([tmp_path, second])["beach_headshot"].title == "Second beach"


def test_a_missing_style_folder_is_an_error_unless_allowed(tmp_path):
    with pytest.raises(HeadshotError, match="nowhere"):
        load_styles([tmp_path / "nowhere"])
    assert "anime" in load_styles([tmp_path / "nowhere"], missing_ok=True)


def test_on_error_skips_bad_files_and_reports_them(tmp_path):
    write(tmp_path, "good", MINIMAL)
    write(tmp_path, "bad", MINIMAL.replace('sampler = "dpmpp_2m_karras"', 'sampler = "heun"'))
    seen = []
    styles = load_styles([tmp_path], on_error=seen.append)
    assert "good" in styles and "bad" not in styles
    assert len(seen) == 1 and "bad.toml" in str(seen[0])


# --- validation: every message names the file and the field -------------------------------------


@pytest.mark.parametrize(
    "text, field, detail",
    [
        (MINIMAL.replace("steps = 30", 'steps = 30\nnegtive = "x"'), "negtive", "did you mean `negative`"),
        (MINIMAL.replace('title = "Beach headshot"\n', ""), "title", "required"),
        (MINIMAL.replace("width = 512", 'width = "512"'), "width", "whole number"),
        (MINIMAL.replace("cfg = 7.0", 'cfg = "high"'), "cfg", "number"),
        (MINIMAL.replace('sampler = "dpmpp_2m_karras"', 'sampler = "dpm_fast"'), "sampler", "not a known sampler"),
        (MINIMAL + 'pose = "headshot_frnt"\n', "pose", "headshot_front"),
        (MINIMAL.replace("height = 640", "height = 0"), "height", "positive"),
        (MINIMAL.replace("steps = 30", "steps = -5"), "steps", "positive"),
        (MINIMAL.replace("width = 512", "width = 500"), "width", "multiple of 8"),
        (MINIMAL.replace('category = "professional"', 'category = "fancy"'), "category", "professional"),
        (MINIMAL.replace("(soft backlight:1.2)", "[soft backlight]"), "prompt", "["),
        (MINIMAL.replace("(soft backlight:1.2)", "(soft backlight"), "prompt", "unclosed"),
        (MINIMAL.replace("(soft backlight:1.2)", "<lora:film:0.5>"), "prompt", "lora"),
        (MINIMAL.replace('negative = "blurry"', 'negative = "blurry {subject}"'), "negative", "{subject}"),
        (MINIMAL + '\n[sdxl]\nsampler = "euler"\n', "sdxl.sampler", "cannot be overridden"),
        (MINIMAL + "\n[sdxl]\nwidth = 1020\n", "sdxl.width", "multiple of 8"),
        (MINIMAL + 'style_lora = { file = "x.safetensors", weight = 0.5 }\n', "style_lora", "unknown key"),
        (
            MINIMAL + '\n[size_presets.visa]\ntitle = "Visa"\nprint_width = 35\nprint_height = 45\nunit = "mm"\n'
            "sd1 = [512, 656]\nsdxl = [896, 1152]\ndpi = 300\n",
            "size_presets.visa.dpi",
            "unknown key",
        ),
        (
            MINIMAL + '\n[size_presets.visa]\ntitle = "Visa"\nprint_width = 35\nprint_height = 45\nunit = "mm"\n'
            "sdxl = [896, 1152]\n",
            "size_presets.visa.sd1",
            "required",
        ),
        (
            MINIMAL + '\n[size_presets.visa]\ntitle = "Visa"\nprint_width = 35\nprint_height = 45\nunit = "cm"\n'
            "sd1 = [512, 656]\nsdxl = [896, 1152]\n",
            "size_presets.visa.unit",
            "mm",
        ),
        (MINIMAL + 'name = "other"\n', "name", "file stem"),
    ],
)
def test_bad_style_files_name_the_file_and_the_field(tmp_path, text, field, detail):
    path = write(tmp_path, "broken_style", text)
    with pytest.raises(HeadshotError) as info:
        load_style_file(path)
    message = str(info.value)
    assert str(path) in message
    assert f"`{field}`" in message
    assert detail in message
    assert info.value.code == "invalid_style"


def test_bad_toml_names_the_file_and_the_line(tmp_path):
    path = write(tmp_path, "broken_toml", MINIMAL.replace("cfg = 7.0", "cfg = = 7.0"))
    with pytest.raises(HeadshotError) as info:
        load_style_file(path)
    line = MINIMAL.splitlines().index("cfg = 7.0") + 1
    assert str(path) in str(info.value) and f"line {line}" in str(info.value)


def test_a_file_name_that_is_not_snake_case_is_refused_with_a_suggestion(tmp_path):
    path = write(tmp_path, "My Style", MINIMAL)
    with pytest.raises(HeadshotError, match="my_style.toml"):
        load_style_file(path)


def test_a_bad_dropped_in_file_stops_load_styles_naming_it(tmp_path):
    write(tmp_path, "typo", MINIMAL.replace("steps = 30", "stesp = 30"))
    with pytest.raises(HeadshotError, match=r"typo\.toml.*`stesp`"):
        load_styles([tmp_path])


# --- lookup -------------------------------------------------------------------------------------


def test_unknown_style_name_suggests_close_matches():
    with pytest.raises(HeadshotError) as info:
        get_style("linkedin_corprate")
    assert "linkedin_corporate" in str(info.value).split("Styles:")[0]
    assert info.value.code == "unknown_style"
    with pytest.raises(HeadshotError, match="Did you mean.*wedding_dress_cathedral"):
        get_style("wedding")


def test_style_names_are_forgiving_about_case_spaces_and_dashes():
    assert get_style("Linkedin Corporate").name == "linkedin_corporate"
    assert get_style("hong-kong-night").name == "hong_kong_night"


# --- build_prompt -------------------------------------------------------------------------------


def _style(prompt: str, negative: str = "blurry") -> Style:
    return Style(
        name="t",
        title="T",
        category="avatar",
        prompt=prompt,
        negative=negative,
        width=512,
        height=512,
        sampler="euler",
        cfg=7.0,
        steps=20,
    )


def test_subject_replaces_the_placeholder_or_goes_first():
    assert build_prompt(_style("photo of {subject}, smiling"), "ohwx", "man")[0] == "photo of ohwx man, smiling"
    assert build_prompt(_style("oil painting, warm light"), "ohwx", "man")[0] == "ohwx man, oil painting, warm light"


def test_subject_weight_uses_the_shared_weight_form():
    positive, _ = build_prompt(_style("photo of {subject}"), "ohwx", "man", subject_weight=1.25)
    assert positive == "photo of (ohwx man:1.25)"
    assert build_prompt(_style("{subject}"), "ohwx", "man", subject_weight=1)[0] == "(ohwx man:1.0)"
    with pytest.raises(HeadshotError):
        build_prompt(_style("{subject}"), "ohwx", "man", subject_weight=0)


def test_user_text_is_escaped_so_both_hosts_read_it_literally():
    positive, negative = build_prompt(
        _style("photo of {subject}"),
        "ohwx",
        "man",
        extra="red scarf (wool) [knitted] <lora:x:1> {a|b} black AND white",
        extra_negative="hat (any)",
    )
    assert positive == r"photo of ohwx man, red scarf \(wool\) \(knitted\) lora:x:1 a|b black and white"
    assert negative == r"blurry, hat \(any\)"
    assert weight_syntax_ok(positive)


def test_empty_trigger_is_refused():
    with pytest.raises(HeadshotError, match="trigger"):
        build_prompt(_style("{subject}"), "  ", "man")


# --- the schema is a pydantic model -------------------------------------------------------------


def test_the_style_schema_is_a_pydantic_model_that_refuses_unknown_keys():
    from headshot.options import ValidationError

    fields = dict(
        name="t",
        title="T",
        category="avatar",
        prompt="{subject}",
        width=512,
        height=512,
        sampler="euler",
        cfg=7.0,
        steps=20,
    )
    style = Style.parse_obj(fields)
    assert style.negative == "" and style.lora_weight == 1.0 and style.source is None and style.family is None
    with pytest.raises(ValidationError, match="negtive"):
        Style.parse_obj({**fields, "negtive": "x"})
    with pytest.raises(ValidationError, match="multiple of 8"):
        Style.parse_obj({**fields, "width": 500})
    # for_family is a validated copy: the file's own values stay, the family is recorded
    resolved = Style.parse_obj({**fields, "sdxl": {"width": 1024}}).for_family("sdxl")
    assert (resolved.width, resolved.family) == (1024, "sdxl")
