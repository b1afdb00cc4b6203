#!/usr/bin/env python
"""Walk through the Headshot Studio tab of a running AUTOMATIC1111 or Forge in headless Chromium, pressing the
tab's own buttons, and take screenshots: Photos → dataset, Train while running and done, Generate with results,
Finish. Used to check the extension on the real hosts (see the README's development section); it is not a test.

    python tools/webui_tab_walkthrough.py --url http://127.0.0.1:7861 --photos /tmp/a1111/outputs/faces \
        --out docs/ --prefix a1111 [--steps 2] [--resolution 256] [--count 2] [--size 256] [--sample-steps 4]
    python tools/webui_tab_walkthrough.py --url http://127.0.0.1:7861 --one-photo A.jpg --one-photo B.png \
        --out /tmp/faceid-run [--size 256] [--sample-steps 2]

--one-photo (repeatable) skips prepare and train: Generate with LoRA "none" and that reference photo at FaceID
weight --faceid-weight, then the first photo again at weight 0; each picture is copied to OUT as
<prefix>-<photo stem>-w<weight>.png (compare them with tools/webui_faceid_check.py compare OUT).

Needs playwright (pip) and a Chromium binary (Debian: apt-get install chromium); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

TAB = "#tab_headshot_studio"


def tab(root, name: str):
    """A tab's button (role "button" in gradio 3, "tab" in gradio 4): the tab strip comes before the panels."""
    return root.locator(f"button:text-is('{name}')").first


def panel(root):
    """The sub-tab on show: labels like "Status" repeat across sub-tabs."""
    return root.locator("div.tabitem:visible").first


def field(root, label: str):
    """The input of the gradio component labelled `label` (Textbox, Number, Slider's number box, Dropdown) in
    the sub-tab on show. The innermost `.block` holding the label is the component (a Slider's label does not
    wrap its input)."""
    # gradio 3 puts the name in a <label>; gradio 4's Dropdown in a <span data-testid="block-info">
    name = root.page.locator("label, span[data-testid=block-info]", has_text=label)
    block = panel(root).locator(".block", has=name).last
    return block.locator("textarea, input[type=number], input[type=text], input:not([type])").first


def value(root, label: str) -> str:
    return field(root, label).input_value()


def wait_for(root, label: str, words: tuple[str, ...], timeout: float, page=None, shot: Path | None = None) -> str:
    """Poll the text of `label` until it holds one of `words`; fail with what it said."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = value(root, label)
        if any(word in text for word in words):
            return text
        time.sleep(1)
    if page is not None and shot is not None:
        page.screenshot(path=str(shot), full_page=True)
    raise SystemExit(f"waited {timeout:.0f} s for {words} in {label!r}; it says: {text!r}")


def choose(page, root, label: str, option: str | None = None) -> None:
    """Pick `option` (default: the first) in the gradio dropdown labelled `label`."""
    field(root, label).click()
    options = page.locator("ul.options li")
    (options.filter(has_text=option).first if option else options.first).click()


def finish(args, page, root, shot) -> int:
    tab(root, "Finish").click()
    if args.finish_folder:
        field(root, "…or a folder of pictures").fill(args.finish_folder)
        panel(root).locator("label", has_text="The last results").locator("input").uncheck()
    if args.detailer:
        panel(root).locator("label", has_text="Face detailer").locator("input").check()
    panel(root).get_by_role("button", name="Finish", exact=True).click()
    failed = args.out / f"{args.prefix}-failed.png"
    finished = wait_for(root, "Status", ("pictures in",), args.timeout, page, failed)
    print(finished, flush=True)
    time.sleep(3)
    shot(page, "finish")
    return 0


def one_photo(args, page, photo: Path, weight: float) -> Path:
    """Generate one picture from the tab with `photo` as the reference (no LoRA, no pose); -> its copy in OUT."""
    import shutil

    page.goto(args.url, timeout=120_000)
    tab(page, "Headshot Studio").click()
    root = page.locator(TAB)
    tab(root, "Generate").click()
    choose(page, root, "Identity LoRA (newest first)", "none")
    field(root, "Count").fill("1")
    field(root, "Seed").fill(str(args.seed))
    field(root, "Width (0: the style's)").fill(str(args.size))
    field(root, "Height (0: the style's)").fill(str(args.size))
    field(root, "Sampling steps (0: the style's)").fill(str(args.sample_steps))
    pose = panel(root).locator("label", has_text="Pose (ControlNet OpenPose)").locator("input")
    if pose.is_enabled() and pose.is_checked():
        pose.uncheck()
    name = page.locator("label, span[data-testid=block-info]", has_text="Reference photo")
    if not name.first.is_visible():
        root.get_by_text("One photo (IP-Adapter FaceID").click()
    panel(root).locator("input[type=file]").first.set_input_files(str(photo))  # the Generate panel's only upload
    time.sleep(2)
    weight_box = field(root, "FaceID weight")
    weight_box.fill(f"{weight:g}")
    weight_box.press("Tab")
    panel(root).get_by_role("button", name="Generate", exact=True).click()
    failed = args.out / f"{args.prefix}-failed.png"
    status = wait_for(root, "Status", ("pictures in",), args.timeout, page, failed)
    print(status, flush=True)
    out = Path(status.split("pictures in ", 1)[1].split(": ", 1)[0])
    made = sorted(p for p in out.rglob("*.png") if p.parent.name != "contact")
    target = args.out / f"{args.prefix}-{photo.stem}-w{weight:g}.png"
    shutil.copyfile(made[0], target)
    print(f"{photo.name} at weight {weight:g} -> {made[0]} -> {target}", flush=True)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:7861")
    parser.add_argument("--photos", help="a folder of photos inside the WebUI's folders")
    parser.add_argument("--one-photo", type=Path, action="append", help="Generate with this reference photo only")
    parser.add_argument("--faceid-weight", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--prefix", default="a1111")
    parser.add_argument("--dataset", default="walkthrough")
    parser.add_argument("--lora", default="walkthrough")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--sample-steps", type=int, default=4)
    parser.add_argument("--finish-folder", help="Finish this folder (default: the last results)")
    parser.add_argument("--detailer", action="store_true", help="Finish with the face detailer (img2img inpainting)")
    parser.add_argument("--only-finish", action="store_true", help="skip prepare, train and generate")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for each long step")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)

    def shot(page, name: str) -> None:
        path = args.out / f"{args.prefix}-{name}.png"
        page.screenshot(path=str(path), full_page=False)
        print(f"screenshot {path}", flush=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(args.url, timeout=120_000)
        tab(page, "Headshot Studio").click()
        root = page.locator(TAB)

        if args.one_photo:
            for photo in args.one_photo:
                one_photo(args, page, photo, args.faceid_weight)
            one_photo(args, page, args.one_photo[0], 0.0)
            return 0
        if not args.photos:
            raise SystemExit("--photos is needed (or --one-photo)")
        if args.only_finish:
            return finish(args, page, root, shot)
        tab(root, "Photos → dataset").click()
        field(root, "…or a folder of photos").fill(args.photos)
        field(root, "Dataset name").fill(args.dataset)
        field(root, "Crop size").fill(str(args.resolution))
        root.get_by_role("button", name="Prepare dataset").click()
        report = wait_for(root, "Report", ("photos kept", "kept as"), args.timeout)
        print(report.splitlines()[-3] if len(report.splitlines()) > 2 else report, flush=True)
        time.sleep(2)
        shot(page, "photos")

        tab(root, "Train").click()
        choose(page, root, "Base model")
        field(root, "LoRA name").fill(args.lora)
        root.get_by_text("Advanced options").click()
        field(root, "Steps (0: from the preset)").fill(str(args.steps))
        field(root, "Resolution (0: the dataset's)").fill(str(args.resolution))
        root.get_by_role("button", name="Start").click()
        wait_for(root, "Progress", ("step 1 of", "done:", "failed:"), args.timeout)
        time.sleep(2)
        shot(page, "train-running")
        done = wait_for(root, "Progress", ("done:", "failed:", "cancelled:"), args.timeout)
        print(done, flush=True)
        time.sleep(2)
        shot(page, "train-done")
        if not done.startswith("done:"):
            return 1

        tab(root, "Generate").click()
        root.get_by_role("button", name="Refresh LoRA list").click()
        time.sleep(2)
        field(root, "Count").fill(str(args.count))
        field(root, "Width (0: the style's)").fill(str(args.size))
        field(root, "Height (0: the style's)").fill(str(args.size))
        field(root, "Sampling steps (0: the style's)").fill(str(args.sample_steps))
        panel(root).get_by_role("button", name="Generate", exact=True).click()
        status = wait_for(root, "Status", ("pictures in",), args.timeout, page, args.out / f"{args.prefix}-failed.png")
        print(status, flush=True)
        time.sleep(3)
        shot(page, "generate")

        finish(args, page, root, shot)
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
