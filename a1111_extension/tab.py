"""The "Headshot Studio" tab (script_callbacks.on_ui_tabs): Photos → dataset, Train, Generate, Finish.

Only gradio APIs present in both 3.41 (A1111 1.10) and 4.40 (Forge): Blocks, Tab, Row, Accordion, the
basic components, gr.update, generator handlers for progress (no .style(), no gr.Timer). The handlers
are plain module functions, callable from a script inside the WebUI process. A missing optional piece
(a face backend, ControlNet, a restoration model) greys out its control with a note; the tab always loads.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from headshot.errors import HeadshotError

from . import host, photos, photoshoot, training
from .likeness_numbers import measured

TICK = 1.0
LAST: dict[str, object] = {}  # the last batch's results and folder: Finish and the zip can take them


def _fail(exc: Exception):
    """A core error as the tab's message (gr.Error shows it in a toast)."""
    import gradio as gr

    return gr.Error(str(exc))


# --- Photos -------------------------------------------------------------------------------------------


def photos_prepare(files, folder: str, dataset_name: str, trigger: str, class_word: str, resolution, backend: str):
    """-> (gallery of kept and rejected photos, summary, caption rows)"""
    from headshot.dataset.prepare_report import prepare_summary

    try:
        source = photos.store_uploads(files, dataset_name) if files else photos.typed_folder(folder)
        result = photos.prepare(source, dataset_name, trigger, class_word, int(resolution), backend)
    except HeadshotError as exc:
        raise _fail(exc) from None
    return photos.gallery(result, source), prepare_summary(result), photos.captions(result.out_dir)


def photos_save_captions(dataset_name: str, rows) -> str:
    rows = rows.values.tolist() if hasattr(rows, "values") else rows  # gradio 3 may hand a DataFrame
    try:
        changed = photos.save_captions(photos.dataset_dir(dataset_name), rows)
    except HeadshotError as exc:
        raise _fail(exc) from None
    return f"{changed} caption(s) saved"


# --- Train --------------------------------------------------------------------------------------------


def _train_view():
    state = training.SESSION.progress
    lora = state.lora.stem if state.lora is not None else ""
    curve = str(state.loss_curve) if state.loss_curve is not None else None
    return state.text(), curve, [str(p) for p in state.samples], lora


def train_watch():
    """Progress of the running (or last) job, every second until it ends."""
    while True:
        yield _train_view()
        if not training.SESSION.busy:
            return
        time.sleep(TICK)


def train_start(
    dataset_name, checkpoint, output_name, preset, steps, rank, lr, resolution, seed, validation, backend, resume=False
):
    try:
        dataset = photos.dataset_dir(dataset_name)
        if not dataset.is_dir():
            raise HeadshotError(f"no dataset {dataset.name!r}: prepare it in the Photos tab first", "no_dataset")
        chosen = training.choices(output_name, preset, steps, rank, lr, resolution, seed, validation, backend)
        settings = training.build_settings(dataset, host.checkpoint_file(checkpoint), chosen)
        training.SESSION.start(settings, dataset, resume=bool(resume))
    except HeadshotError as exc:
        raise _fail(exc) from None
    yield from train_watch()


def train_resume(*args):
    yield from train_start(*args, resume=True)


def train_cancel() -> str:
    return training.SESSION.cancel()


# --- Generate and Finish -----------------------------------------------------------------------------------


def _in_thread(work):
    """Run `work(progress)` in a thread and yield (status, None) while it runs, then ("done", its result)."""
    box: dict = {}
    note = {"text": "starting"}

    def progress(done, total, message):
        note["text"] = f"{message} ({done + 1} of {total})" if total else message

    def run():
        try:
            box["result"] = work(progress)
        except Exception as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True, name="headshot-pictures")
    thread.start()
    while thread.is_alive():
        step, steps = host.sampling_progress()
        yield (note["text"] + (f", step {step} of {steps}" if steps else "")), None
        thread.join(TICK)
    if "error" in box:
        exc = box["error"]
        raise _fail(exc) if isinstance(exc, HeadshotError) else exc
    yield "done", box["result"]


def _show(results, out, numbers):
    LAST.update(results=results, out=out)
    zipped = photoshoot.zip_results(results, out)
    ranked = sum(1 for e in results if e.get("rank"))
    faceless = sum(1 for e in results if e.get("faceless"))
    text = f"{len(results)} pictures in {out}: {ranked} ranked, {faceless} without a face (set aside in faceless/)"
    return photoshoot.gallery(results, out, numbers.per_picture), text, str(zipped), numbers.text


def lora_lists():
    """Both LoRA dropdowns with the files in models/Lora now, the newest chosen."""
    import gradio as gr

    loras = photoshoot.lora_choices()
    update = gr.update(choices=loras, value=loras[0] if loras else None)
    return update, update


def generate_run(
    style, lora, count, seed, width, height, pose, detailer, restore, top, backend, steps=0, photo=None, weight=0.8
):
    """-> yields (gallery best first, status, zip file, numbers); `photo`: one reference photo (FaceID)."""
    try:
        reference = photoshoot.store_reference(photo) if photo else None
        person = photoshoot.lora_path(lora) or reference
    except HeadshotError as exc:
        raise _fail(exc) from None

    def work(progress):
        return photoshoot.generate(
            style,
            lora,
            count,
            seed,
            width,
            height,
            pose,
            detailer,
            restore,
            top,
            backend,
            steps=steps,
            progress=progress,
            reference=reference,
            adapter_weight=weight,
        )

    for status, result in _in_thread(measured(work, person, backend)):
        if result is None:
            yield [], status, None, ""
        else:
            LAST["reference"] = reference
            yield _show(*result)


def finish_run(folder, use_last, lora, detailer, restore, top, backend):
    reference = LAST.get("reference") if use_last else None  # the last batch's one photo, to rank against
    try:
        person = photoshoot.lora_path(lora) or reference
    except HeadshotError as exc:
        raise _fail(exc) from None

    def work(progress):
        if use_last:
            if "out" not in LAST:
                raise HeadshotError("no pictures made in this session yet: name a folder instead", "not_found")
            source = Path(str(LAST["out"]))
            made = photoshoot.batch_pictures(LAST["results"], source)  # type: ignore[arg-type]
        else:
            source, made = photos.typed_folder(folder, "pictures folder"), None
        return photoshoot.finish_folder(
            source, lora, detailer, restore, top, backend, progress=progress, reference=reference, pictures=made
        )

    for status, result in _in_thread(measured(work, person, backend)):
        if result is None:
            yield [], status, None, ""
        else:
            yield _show(*result)


# --- the tab ---------------------------------------------------------------------------------------------------


def _notes() -> dict[str, tuple[bool, str]]:
    from .controlnet import availability
    from .identity_adapter import availability as one_photo

    faces = photos.face_backend_note()
    restore = photoshoot.restore_choices()
    return {
        "faces": faces if not faces[0] else (True, ""),
        "pose": availability(host.model_family()),
        "one_photo": one_photo(host.model_family()),
        "restore": (
            bool(restore),
            ""
            if restore
            else "put GFPGAN / CodeFormer files in models/GFPGAN or "
            "models/Codeformer (and pip install spandrel) to restore faces",
        ),
    }


def build():
    """The gradio Blocks of the tab."""
    import gradio as gr

    from headshot.faces import face_backend_choices

    notes = _notes()
    faces_ok, faces_note = notes["faces"]
    pose_ok, pose_note = notes["pose"]
    restore_ok, restore_note = notes["restore"]
    photo_ok, photo_note = notes["one_photo"]
    backends = list(face_backend_choices())
    with gr.Blocks(analytics_enabled=False) as tab:
        gr.Markdown(f"**Headshot Studio** — {host.environment_note()}")
        if not faces_ok:
            gr.Markdown(f"⚠ Face detection unavailable: {faces_note}")
        with gr.Tabs():
            with gr.Tab("Photos → dataset"):
                with gr.Row():
                    files = gr.File(label="Photos (3–20 of one person)", file_count="multiple")
                    with gr.Column():
                        folder = gr.Textbox(label="…or a folder of photos (inside the WebUI's folders)")
                        dataset_name = gr.Textbox(label="Dataset name", value="my_identity")
                        trigger = gr.Textbox(label="Trigger word", value="ohwx")
                        class_word = gr.Textbox(label="Class word (empty: detected, else person)")
                        resolution = gr.Slider(256, 1024, value=512, step=64, label="Crop size")
                        backend = gr.Dropdown(backends, value="auto", label="Face backend")
                prepare = gr.Button("Prepare dataset", variant="primary", interactive=faces_ok)
                kept = gr.Gallery(label="Kept and rejected photos (each with its reason)", columns=6, height=320)
                summary = gr.Textbox(label="Report", lines=8)
                rows = gr.Dataframe(headers=["image", "caption"], type="array", label="Captions (edit, then save)")
                save = gr.Button("Save captions")
                saved = gr.Textbox(label="Captions", interactive=False)
                prepare.click(
                    photos_prepare,
                    [files, folder, dataset_name, trigger, class_word, resolution, backend],
                    [kept, summary, rows],
                )
                save.click(photos_save_captions, [dataset_name, rows], [saved])
            with gr.Tab("Train"):
                with gr.Row():
                    checkpoint = gr.Dropdown(host.checkpoint_titles(), label="Base model (the WebUI's checkpoints)")
                    output_name = gr.Textbox(label="LoRA name", value="my_identity")
                    preset = gr.Dropdown(training.PRESETS, value="balanced", label="Preset")
                with gr.Accordion("Advanced options", open=False):
                    steps = gr.Number(value=0, label="Steps (0: from the preset)", precision=0)
                    rank = gr.Number(value=0, label="Rank (0: from the preset)", precision=0)
                    lr = gr.Number(value=0.0, label="Learning rate (0: from the preset)")
                    train_res = gr.Number(value=0, label="Resolution (0: the dataset's)", precision=0)
                    seed = gr.Number(value=42, label="Seed", precision=0)
                    validation = gr.Number(
                        value=-1, label="Validation images (-1: 4 on a GPU, 0 on the CPU)", precision=0
                    )
                with gr.Row():
                    start = gr.Button("Start", variant="primary")
                    cancel = gr.Button("Cancel")
                    resume = gr.Button("Resume")
                    watch = gr.Button("Show progress")
                progress = gr.Textbox(label="Progress", lines=5)
                with gr.Row():
                    curve = gr.Image(label="Loss", type="filepath")
                    samples = gr.Gallery(label="Samples", columns=4, height=240)
                lora_name = gr.Textbox(label="LoRA (Extra Networks → Lora → headshot)", interactive=False)
                train_inputs = [
                    dataset_name,
                    checkpoint,
                    output_name,
                    preset,
                    steps,
                    rank,
                    lr,
                    train_res,
                    seed,
                    validation,
                    backend,
                ]
                train_outputs = [progress, curve, samples, lora_name]
                started = start.click(train_start, train_inputs, train_outputs)
                resumed = resume.click(train_resume, train_inputs, train_outputs)
                watch.click(train_watch, [], train_outputs)
                cancel.click(train_cancel, [], [progress])
            with gr.Tab("Generate"):
                loras = photoshoot.lora_choices()
                with gr.Row():
                    lora = gr.Dropdown(loras, value=loras[0] if loras else None, label="Identity LoRA (newest first)")
                    refresh_loras = gr.Button("Refresh LoRA list")
                    style = gr.Dropdown(photoshoot.style_names(), value="linkedin_corporate", label="Style")
                gr.Gallery(
                    photoshoot.style_previews(host.model_family()), label="Styles (pose of each)", columns=8, height=220
                )
                with gr.Row():
                    count = gr.Slider(1, 32, value=4, step=1, label="Count")
                    gen_seed = gr.Number(value=0, label="Seed", precision=0)
                    width = gr.Number(value=0, label="Width (0: the style's)", precision=0)
                    height = gr.Number(value=0, label="Height (0: the style's)", precision=0)
                with gr.Row():
                    pose = gr.Checkbox(value=pose_ok, label="Pose (ControlNet OpenPose)", interactive=pose_ok)
                    detailer = gr.Checkbox(value=False, label="Face detailer", interactive=faces_ok)
                    restore = gr.Dropdown(
                        ["none", *photoshoot.restore_choices()],
                        value="none",
                        label="Restoration",
                        interactive=restore_ok,
                    )
                    top = gr.Number(value=0, label="Keep top K (0: all)", precision=0)
                    gen_steps = gr.Number(value=0, label="Sampling steps (0: the style's)", precision=0)
                gr.Markdown(f"Pose: {pose_note}" + (f" · Restoration: {restore_note}" if restore_note else ""))
                with gr.Accordion("One photo (IP-Adapter FaceID, no training needed)", open=len(loras) == 1):
                    with gr.Row():
                        # a File, not gr.Image(type="filepath"): Forge replaces gradio 4's save_pil_to_cache with
                        # one lacking `name`, so an Image upload fails there before our code runs
                        photo = gr.File(label="Reference photo (one face)", file_types=["image"], interactive=photo_ok)
                        weight = gr.Slider(0, 2, value=0.8, step=0.05, label="FaceID weight", interactive=photo_ok)
                    gr.Markdown(f"One photo: {photo_note}. With a LoRA chosen too, both draw the face.")
                generate = gr.Button("Generate", variant="primary")
                results = gr.Gallery(label="Results, best first", columns=4, height=420)
                numbers = gr.Textbox(label="Numbers (evaluate: face distance, CLIP score, faceless)", lines=6)
                status = gr.Textbox(label="Status")
                zipped = gr.File(label="All pictures (zip)")
                generate.click(
                    generate_run,
                    [style, lora, count, gen_seed, width, height, pose, detailer, restore, top, backend, gen_steps]
                    + [photo, weight],
                    [results, status, zipped, numbers],
                )
            with gr.Tab("Finish"):
                with gr.Row():
                    use_last = gr.Checkbox(value=True, label="The last results")
                    source = gr.Textbox(label="…or a folder of pictures (inside the WebUI's folders)")
                    fin_lora = gr.Dropdown(loras, value=loras[0] if loras else None, label="Identity LoRA")
                with gr.Row():
                    fin_detailer = gr.Checkbox(
                        value=False, label="Face detailer (img2img inpainting)", interactive=faces_ok
                    )
                    fin_restore = gr.Dropdown(
                        ["none", *photoshoot.restore_choices()],
                        value="none",
                        label="Restoration",
                        interactive=restore_ok,
                    )
                    fin_top = gr.Number(value=0, label="Keep top K (0: all)", precision=0)
                finish = gr.Button("Finish", variant="primary", interactive=faces_ok)
                fin_results = gr.Gallery(label="Finished, best first", columns=4, height=420)
                fin_numbers = gr.Textbox(label="Numbers (evaluate: face distance, CLIP score, faceless)", lines=6)
                fin_status = gr.Textbox(label="Status")
                fin_zip = gr.File(label="All pictures (zip)")
                finish.click(
                    finish_run,
                    [source, use_last, fin_lora, fin_detailer, fin_restore, fin_top, backend],
                    [fin_results, fin_status, fin_zip, fin_numbers],
                )
            # a LoRA trained (or copied in) since the page was built shows up without a WebUI reload
            refresh_loras.click(lora_lists, [], [lora, fin_lora])
            for trained in (started, resumed):
                trained.then(lora_lists, [], [lora, fin_lora])
    return tab


def on_ui_tabs():
    return [(build(), "Headshot Studio", "headshot_studio")]
