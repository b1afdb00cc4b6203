"""Caption cleaning for an identity LoRA: the packaged rules, custom rule files, caption text."""

from __future__ import annotations

import pytest

from headshot.dataset.captions import DEFAULT_RULES_PATH, build_caption, clean_tags, load_tag_rules
from headshot.dataset.tags import Tag
from headshot.errors import HeadshotError


def general(*names: str) -> list[Tag]:
    return [Tag(n, 0.9, "general") for n in names]


@pytest.fixture(scope="module")
def rules():
    return load_tag_rules()


def test_identity_tags_are_removed_with_their_reasons(rules):
    identity = [
        "blue eyes",
        "brown hair",
        "short hair",
        "thick eyebrows",
        "lips",
        "mole under eye",
        "freckles",
        "dark skin",
        "beard",
        "1boy",
        "male focus",
        "solo",
    ]
    kept, removed = clean_tags(general(*identity), rules)
    assert kept == []
    reasons = dict(removed)
    assert list(reasons) == identity
    assert "eye colour" in reasons["blue eyes"]
    assert "class word" in reasons["1boy"]
    assert all(reason.strip() for reason in reasons.values())


def test_what_changes_between_photos_is_kept(rules):
    variable = [
        "white shirt",
        "jacket",
        "glasses",
        "scarf",
        "outdoors",
        "simple background",
        "smile",
        "open mouth",
        "portrait",
        "upper body",
        "looking at viewer",
        "ponytail",
    ]
    kept, removed = clean_tags(general(*variable), rules)
    assert kept == variable and removed == []


def test_closed_eyes_is_kept_while_blue_eyes_goes(rules):
    kept, removed = clean_tags(general("closed eyes", "blue eyes", "half-closed eyes"), rules)
    assert kept == ["closed eyes", "half-closed eyes"]
    assert [tag for tag, _ in removed] == ["blue eyes"]


def test_scar_patterns_leave_the_scarf_alone(rules):
    kept, removed = clean_tags(general("scar on cheek", "scarf", "mole", "mole on neck"), rules)
    assert kept == ["scarf"]
    assert [tag for tag, _ in removed] == ["scar on cheek", "mole", "mole on neck"]


def test_rating_and_character_tags_are_removed_by_category(rules):
    tags = [
        Tag("general", 0.9, "rating"),
        Tag("kaga (kantai collection)", 0.95, "character"),
        Tag("smile", 0.8, "general"),
    ]
    kept, removed = clean_tags(tags, rules)
    assert kept == ["smile"]
    assert [tag for tag, _ in removed] == ["general", "kaga (kantai collection)"]


def test_matching_ignores_case_and_underscores(rules):
    kept, removed = clean_tags(general("Blue_Eyes", "WHITE_SHIRT"), rules)
    assert kept == ["WHITE_SHIRT"] and [t for t, _ in removed] == ["Blue_Eyes"]


def test_clean_tags_drops_repeats_and_keeps_order(rules):
    kept, _ = clean_tags(general("smile", "white shirt", "white_shirt", "smile", "outdoors"), rules)
    assert kept == ["smile", "white shirt", "outdoors"]


def test_caption_starts_with_trigger_and_class_as_one_token():
    assert build_caption("ohwx", "man", ["smile", "white shirt"]) == "ohwx man, smile, white shirt"


def test_caption_drops_tags_that_repeat_the_trigger_or_class():
    assert build_caption("ohwx", "man", ["man", "ohwx", "Ohwx Man", "smile"]) == "ohwx man, smile"


def test_caption_strips_commas_inside_tags():
    assert build_caption("ohwx", "woman", ["hat, red", " outdoors "]) == "ohwx woman, hat red, outdoors"


def test_caption_without_tags_is_just_the_trigger():
    assert build_caption("ohwx", "man", []) == "ohwx man"


def test_caption_needs_a_trigger():
    with pytest.raises(HeadshotError, match="trigger"):
        build_caption("  ", "man", ["smile"])


def test_packaged_rules_load_from_the_package_folder(rules):
    assert rules.source == DEFAULT_RULES_PATH and DEFAULT_RULES_PATH.name == "tag_rules.toml"
    assert rules.remove and rules.keep


def test_a_custom_rules_file_replaces_the_packaged_one(tmp_path):
    path = tmp_path / "my_rules.toml"
    path.write_text('[[remove]]\nreason = "I want no smiles"\ntags = ["smile"]\n', encoding="utf-8")
    kept, removed = clean_tags(general("smile", "blue eyes"), load_tag_rules(path))
    assert kept == ["blue eyes"]  # the packaged eye-colour rule is not in force
    assert removed == [("smile", "I want no smiles")]


def test_keep_rules_win_over_a_broad_remove_pattern(tmp_path):
    path = tmp_path / "broad.toml"
    path.write_text(
        '[[remove]]\nreason = "anything about eyes"\npatterns = ["^.* eyes$"]\n'
        '[[keep]]\nreason = "expression"\ntags = ["closed eyes"]\n',
        encoding="utf-8",
    )
    kept, removed = clean_tags(general("closed eyes", "blue eyes"), load_tag_rules(path))
    assert kept == ["closed eyes"]
    assert removed == [("blue eyes", "anything about eyes")]


def test_malformed_toml_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('[[remove]]\nreason = "x"\ntags "smile"\n\n[[keep]]\n', encoding="utf-8")
    with pytest.raises(HeadshotError) as caught:
        load_tag_rules(path)
    assert str(path) in str(caught.value) and "line 3" in str(caught.value)


def test_a_rule_without_reason_is_rejected(tmp_path):
    path = tmp_path / "noreason.toml"
    path.write_text('[[remove]]\ntags = ["smile"]\n', encoding="utf-8")
    with pytest.raises(HeadshotError, match=r"\[\[remove\]\] #1 has no `reason`"):
        load_tag_rules(path)


def test_a_misspelt_key_is_rejected(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text('[[remove]]\nreason = "x"\ntag = ["smile"]\n', encoding="utf-8")
    with pytest.raises(HeadshotError, match="unknown key"):
        load_tag_rules(path)


def test_an_invalid_pattern_is_rejected(tmp_path):
    path = tmp_path / "regex.toml"
    path.write_text('[[remove]]\nreason = "x"\npatterns = ["(unclosed"]\n', encoding="utf-8")
    with pytest.raises(HeadshotError, match="not a valid regex"):
        load_tag_rules(path)


def test_a_missing_rules_file_is_named(tmp_path):
    with pytest.raises(HeadshotError, match="nothing.toml"):
        load_tag_rules(tmp_path / "nothing.toml")
