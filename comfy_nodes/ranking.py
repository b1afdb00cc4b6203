"""Rank by Likeness and Evaluate Likeness: the core's identity scoring over an IMAGE batch."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from . import host
from .common import CATEGORY, FACE_BACKENDS, face_backend_input, face_analyzer, resolve_folder
from .images import image_batch_to_pils, no_images, pil_to_image_batch
from .paths import RULE, user_path


def identity_inputs() -> dict:
    """The optional inputs that say who the person is (the first one given is used)."""
    return {
        "lora_name": (["none"] + host.file_list("loras"), {"default": "none", "tooltip": "An identity LoRA trained "
                      "here: its <name>.identity.json (written beside it) is the person's face."}),
        "reference_images": ("IMAGE", {"tooltip": "Photos of the person (e.g. Load Photos' images)."}),
        "reference_folder": ("STRING", {"default": "", "tooltip": "A folder of photos of the person." + RULE}),
        "identity_file": ("STRING", {"default": "", "tooltip": "Path of an .identity.json file." + RULE}),
    }


def resolve_identity(face_backend: str, lora_name: str = "none", reference_images=None, reference_folder: str = "",
                     identity_file: str = ""):
    """(analyzer, Identity or None, where it came from). An identity file decides the backend under 'auto'."""
    from headshot.finish.ranking import identity_from_photos, load_identity

    path = None
    if identity_file.strip():
        path = user_path(identity_file, "identity_file", "file")
    elif lora_name and lora_name != "none":
        path = host.full_path("loras", lora_name).with_suffix(".identity.json")
    if path is not None:
        backend = face_backend
        if backend == "auto" and path.is_file():
            recorded = json.loads(path.read_text()).get("backend")
            backend = recorded if recorded in FACE_BACKENDS else backend
        analyzer = face_analyzer(backend)
        return analyzer, load_identity(path, analyzer), str(path)
    analyzer = face_analyzer(face_backend)
    if reference_images is not None:
        folder = host.temp_dir() / "headshot_reference" / hashlib.sha256(
            reference_images.detach().cpu().numpy().tobytes()).hexdigest()[:16]
        folder.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(image_batch_to_pils(reference_images)):
            img.save(folder / f"reference_{i:03d}.png")
        return analyzer, identity_from_photos(folder, analyzer), "reference images"
    if reference_folder.strip():
        folder = resolve_folder(reference_folder, "reference_folder")
        return analyzer, identity_from_photos(folder, analyzer), str(folder)
    return analyzer, None, None


def score_batch(pictures, analyzer, identity) -> list[dict]:
    """One entry per picture, as the core's results: index, identity_score, identity_distance, faceless."""
    from headshot.finish.ranking import likeness

    entries = []
    for i, picture in enumerate(pictures):
        host.raise_if_interrupted()
        result = likeness(picture, analyzer, identity)
        entries.append({"index": i, "identity_score": result.score, "identity_distance": result.distance,
                        "faceless": result.faceless})
    return entries


def _batch(pictures, entries, like):
    if not entries:
        return no_images(like.shape[1], like.shape[2])
    return pil_to_image_batch([pictures[e["index"]] for e in entries])


def _describe(entry: dict) -> str:
    if entry["faceless"]:
        return "no face"
    if entry["identity_score"] is None:
        return "face found, not scored (no identity given)"
    return f"likeness {entry['identity_score']:.3f} (distance {entry['identity_distance']:.3f})"


class HeadshotRankByLikeness:
    DESCRIPTION = ("Scores each picture's face against the person (the identity saved with the LoRA, or photos of "
                   "them) and sorts the batch best first; keeps the top K, and sets pictures without a face aside.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The pictures to rank."}),
                "top_k": ("INT", {"default": 0, "min": 0, "max": 4096, "tooltip": "Keep the K most alike in "
                              "'ranked' (the rest go to 'below_top'); 0 keeps all."}),
                "face_backend": face_backend_input(),
            },
            "optional": identity_inputs(),
        }

    RETURN_TYPES = ("IMAGE", "STRING", "IMAGE", "IMAGE")
    RETURN_NAMES = ("ranked", "scores", "faceless", "below_top")
    OUTPUT_TOOLTIPS = ("Pictures with a face, most alike first (the top K; none: the nodes it feeds are skipped).",
                       "Each picture's rank and likeness score (1 identical, 0.5 at the same-person threshold).",
                       "Pictures in which no face was found (none: the nodes it feeds are skipped).",
                       "Pictures with a face below the top K (none: the nodes it feeds are skipped).")
    FUNCTION = "rank"
    CATEGORY = f"{CATEGORY}/finish"

    def rank(self, images, top_k: int, face_backend: str, lora_name: str = "none", reference_images=None,
             reference_folder: str = "", identity_file: str = ""):
        from headshot.finish.ranking import rank

        analyzer, identity, source = resolve_identity(face_backend, lora_name, reference_images, reference_folder,
                                                      identity_file)
        pictures = image_batch_to_pils(images)
        entries = score_batch(pictures, analyzer, identity)
        kept, below, faceless = rank(entries, top_k or None)
        lines = [f"identity: {source or 'none given (faces are found, not scored)'}"]
        lines += [f"#{n} picture {e['index'] + 1}: {_describe(e)}" for n, e in enumerate(kept, 1)]
        lines += [f"below top {top_k}: picture {e['index'] + 1}: {_describe(e)}" for e in below]
        lines += [f"set aside: picture {e['index'] + 1}: no face" for e in faceless]
        return (_batch(pictures, kept, images), "\n".join(lines), _batch(pictures, faceless, images),
                _batch(pictures, below, images))


def clip_scores(pictures, prompt: str, model_dir: Path) -> list[float]:
    """CLIPScore (100 x cosine of image and text embeddings, floored at 0) with a local CLIP model folder."""
    import torch
    from headshot.train.models import find_clip_tokenizer
    from transformers import CLIPImageProcessor, CLIPModel

    # safetensors only: a pickled pytorch_model.bin in a shared folder could run code
    model = CLIPModel.from_pretrained(str(model_dir), local_files_only=True, use_safetensors=True).eval()
    tokenizer = find_clip_tokenizer([model_dir])
    if (model_dir / "preprocessor_config.json").is_file():
        processor = CLIPImageProcessor.from_pretrained(str(model_dir), local_files_only=True)
    else:
        side = model.config.vision_config.image_size
        processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    with torch.no_grad():
        pixels = processor(images=[p.convert("RGB") for p in pictures], return_tensors="pt")["pixel_values"]
        tokens = tokenizer([prompt], padding="max_length", truncation=True, max_length=77, return_tensors="pt")
        image_emb = _features(model.get_image_features(pixel_values=pixels))
        text_emb = _features(model.get_text_features(input_ids=tokens["input_ids"]))
    image_emb = torch.nn.functional.normalize(image_emb.float(), dim=-1)
    text_emb = torch.nn.functional.normalize(text_emb.float(), dim=-1)
    return [round(100.0 * max(0.0, float(v)), 3) for v in (image_emb @ text_emb.T)[:, 0]]


def _features(output):
    """The projected embeddings, whether transformers returns a tensor or an output object."""
    if hasattr(output, "pooler_output") and not hasattr(output, "shape"):
        return output.pooler_output
    return output


class HeadshotEvaluateLikeness:
    DESCRIPTION = ("Measures a batch: identity distance of each face to the person, how many pictures have no "
                   "face, and the CLIP score of the pictures against a prompt when a CLIP model folder is given.")

    @classmethod
    def INPUT_TYPES(cls):
        optional = identity_inputs()
        optional.update({
            "prompt": ("STRING", {"default": "", "multiline": True, "tooltip": "Text for the CLIP score (e.g. the "
                                  "positive prompt)."}),
            "clip_model_dir": ("STRING", {"default": "", "tooltip": "A Hugging Face CLIP model folder (config.json, "
                                          "safetensors weights, tokenizer), e.g. clip-vit-large-patch14; empty: the "
                                          "CLIP score is not computed." + RULE}),
        })
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The pictures to measure."}),
                "face_backend": face_backend_input(),
            },
            "optional": optional,
        }

    RETURN_TYPES = ("STRING", "STRING", "FLOAT", "INT")
    RETURN_NAMES = ("report", "report_json", "mean_distance", "faceless_count")
    OUTPUT_TOOLTIPS = ("The measurements in words.", "The measurements as JSON.",
                       "Mean identity distance of the faces (lower is more alike); -1 when not computed.",
                       "Pictures in which no face was found.")
    FUNCTION = "evaluate"
    CATEGORY = f"{CATEGORY}/evaluate"

    def evaluate(self, images, face_backend: str, lora_name: str = "none", reference_images=None,
                 reference_folder: str = "", identity_file: str = "", prompt: str = "", clip_model_dir: str = ""):
        analyzer, identity, source = resolve_identity(face_backend, lora_name, reference_images, reference_folder,
                                                      identity_file)
        pictures = image_batch_to_pils(images)
        entries = score_batch(pictures, analyzer, identity)
        distances = [e["identity_distance"] for e in entries if e["identity_distance"] is not None]
        faceless = sum(1 for e in entries if e["faceless"])
        limit = analyzer.same_person_distance
        report = {
            "images": entries, "count": len(entries), "faces": len(entries) - faceless, "faceless": faceless,
            "face_backend": analyzer.name, "identity": source, "same_person_distance": limit,
            "mean_distance": round(sum(distances) / len(distances), 4) if distances else None,
            "same_person_share": round(sum(d < limit for d in distances) / len(distances), 4) if distances else None,
        }
        if not clip_model_dir.strip():
            report["clip_score"] = {"computed": False, "reason": "no CLIP model folder given (clip_model_dir)"}
        elif not prompt.strip():
            report["clip_score"] = {"computed": False, "reason": "no prompt given to compare the pictures with"}
        else:
            folder = user_path(clip_model_dir, "clip_model_dir")
            scores = clip_scores(pictures, prompt, folder)
            report["clip_score"] = {"computed": True, "model": str(folder), "prompt": prompt,
                                    "mean": round(sum(scores) / len(scores), 3), "per_image": scores}
        mean = report["mean_distance"]
        return (report_text(report), json.dumps(report, indent=2), float(mean) if mean is not None else -1.0,
                int(faceless))


def report_text(report: dict) -> str:
    lines = [f"{report['count']} picture(s): {report['faces']} with a face, {report['faceless']} without"]
    if report["identity"] is None:
        lines.append("identity distance: not computed (no identity given: a LoRA, reference photos or a file)")
    elif report["mean_distance"] is None:
        lines.append("identity distance: not computed (no face found)")
    else:
        lines.append(f"identity distance: mean {report['mean_distance']:.3f} ({report['face_backend']}; same person "
                     f"below {report['same_person_distance']:.2f}: {report['same_person_share']:.0%} of the faces)")
    clip = report["clip_score"]
    lines.append(f"CLIP score: mean {clip['mean']:.2f}" if clip["computed"] else f"CLIP score: not computed "
                                                                                   f"({clip['reason']})")
    return "\n".join(lines)
