"""Rejections and errors that carry a machine-readable code and a sentence for people."""

from __future__ import annotations

#: Every code a HeadshotError (or a photo's rejection reason) carries, with what it means: one vocabulary for
#: programs, hosts and reports. A new code goes here first (tests/test_error_codes.py checks the source).
CODES: dict[str, str] = {
    "error": "something went wrong that has no more precise code",
    # options and names
    "bad_option": "an option or setting has a value that cannot be used (range, kind, combination)",
    "unknown_option": "a settings key that does not exist (the message suggests the closest one)",
    "bad_name": "a name that becomes part of a path is not a plain file name",
    "bad_file_name": "a file name cannot be shown or stored safely",
    "invalid_trigger": "the trigger word is empty or not one word",
    "invalid_weight": "a prompt weight is not a number in range",
    "unknown_family": "a base-model family that is not sd1, sd2 or sdxl (or not the one a LoRA was made for)",
    # files and folders
    "not_found": "a file or folder that was named does not exist",
    "not_a_file": "a path is a pipe, socket or device, not a file",
    "not_a_folder": "a path that must be a folder is a file",
    "broken_link": "a symbolic link that leads nowhere",
    "symlink_loop": "a symbolic link that leads back to itself",
    "unreadable": "a file cannot be read (permissions, damage)",
    "unreadable_folder": "a folder cannot be listed",
    "not_writable": "the output folder cannot be written",
    "write_failed": "writing a file failed",
    "disk_full": "the disk is full",
    "would_overwrite": "writing would replace a file we did not write",
    "outside_output": "a path leaves the folder it must stay in",
    "folder_busy": "another process is writing the same folder",
    "backend_unavailable": "an optional library or model file is missing; the message says what to install",
    # photos and datasets
    "not_an_image": "a file is not a picture we can read",
    "no_photos": "the photo folder holds no files",
    "no_photos_kept": "screening rejected every photo",
    "no_face": "no face was found in a photo",
    "multiple_faces": "a photo shows several faces of similar size",
    "face_too_small": "the face in a photo is too small",
    "blurry": "the face in a photo is not sharp",
    "badly_exposed": "the face in a photo is too dark or washed out",
    "duplicate": "a photo is a copy of another",
    "different_person": "a photo shows someone other than the rest",
    "bad_reference": "a --reference photo cannot define the person",
    "invalid_tag_rules": "a tag-rules file is malformed",
    "tagger_failed": "the caption tagger failed on a picture",
    "no_dataset": "a folder holds no prepared dataset",
    "bad_dataset_image": "an image in a training dataset or class-image folder cannot be read",
    "no_images": "there are no pictures to work on",
    # base models and LoRA files
    "base_model_not_found": "the base model file, folder or hub id does not exist",
    "not_a_base_model": "a file is not a Stable Diffusion checkpoint",
    "checkpoint_without_vae": "a checkpoint saved without a VAE, and no VAE file was given",
    "vae_not_found": "the --vae file does not exist",
    "not_a_vae": "the --vae file is not a VAE the model can use",
    "unsupported_base_model": "a checkpoint of a kind this version cannot load",
    "unreadable_checkpoint": "a checkpoint file is damaged or unreadable",
    "bad_prediction_type": "the prediction type asked for does not fit the model",
    "conversion_failed": "converting a checkpoint to diffusers' layout failed",
    "hub_unreachable": "a hub id was given and the hub cannot be reached",
    "lora_missing": "a LoRA file is missing",
    "lora_not_found": "a LoRA file named does not exist",
    "lora_not_safetensors": "a LoRA file is not .safetensors",
    "lora_unreadable": "a LoRA file cannot be read",
    "lora_no_keys": "a LoRA file holds no LoRA weights",
    "lora_no_targets": "no layer of the model matches what the LoRA trains",
    "lora_bad_component": "a LoRA names a model part that does not exist",
    "lora_bad_config": "LoRA settings that do not fit together",
    "lora_bad_metadata": "a LoRA's metadata is malformed",
    "lora_bad_name": "a LoRA key that does not follow kohya's naming",
    "lora_bad_state": "LoRA weights of the wrong shape or kind",
    "lora_unknown_modules": "a LoRA holds keys for modules the model does not have",
    "lora_family_mismatch": "a LoRA made for another base-model family",
    "lora_write_failed": "writing a LoRA file failed",
    # training jobs
    "no_job": "a folder holds no training job",
    "job_damaged": "a job record is damaged",
    "job_done": "the job has already finished",
    "job_exists": "the folder already holds a training job",
    "out_not_empty": "the output folder holds files that would be overwritten",
    "resume_mismatch": "a job cannot resume with other settings or inputs",
    "checkpoint_mismatch": "a saved checkpoint does not fit this training run",
    "legacy_checkpoint": "a checkpoint of an older version that is never loaded (it is pickled)",
    "state_not_serialisable": "training state that cannot be saved as data",
    "no_class_images": "the class-image folder for prior preservation is missing",
    "missing_optimizer": "the optimizer's package is not installed",
    "loss_not_finite": "training diverged (the loss is not a number)",
    "interrupted": "the training process stopped without finishing",
    "cancelled": "the person cancelled",
    "training_failed": "training failed (the message quotes why)",
    "trainer_env_failed": "the Python environment for training could not be probed or built",
    "training_output_missing": "training ended without writing its LoRA",
    # generating and finishing
    "unknown_style": "no style of that name",
    "invalid_style": "a style file is malformed",
    "style_dir_missing": "a style folder that was named does not exist",
    "unknown_sampler": "a sampler name that is not known",
    "unknown_pose": "a pose preset that does not exist",
    "invalid_pose": "pose keypoints that are malformed",
    "invalid_pose_detector": "a pose detector's files are malformed",
    "no_pose_found": "no person's pose was found in a picture",
    "unknown_size_preset": "an ID-photo size preset that does not exist",
    "invalid_size_preset": "an ID-photo size preset that is malformed",
    "controlnet_missing": "the ControlNet named cannot be found",
    "controlnet_unreadable": "a ControlNet file cannot be read",
    "controlnet_mismatch": "a ControlNet made for another base-model family",
    "adapter_missing": "the identity adapter (IP-Adapter FaceID) file or CLIP image encoder cannot be found",
    "adapter_unreadable": "an identity adapter file cannot be read safely (damaged, or pickled code)",
    "adapter_mismatch": "an identity adapter that is not FaceID, or made for another base-model family",
    "restore_model_missing": "no face-restoration model file was found",
    "not_a_restore_model": "a file is not a face-restoration model",
    "identity_missing": "no identity reference was found for ranking",
    "identity_unreadable": "an identity reference file is damaged",
    "identity_backend_mismatch": "an identity reference made with another face backend",
    "identity_no_faces": "no face in the pictures that should define the identity",
    # host adapters (ComfyUI, AUTOMATIC1111 / Forge)
    "path_not_allowed": "a path from a workflow or request lies outside the folders the host allows",
    "no_path": "a path field was left empty",
    "host_feature_missing": "the host lacks a piece this feature needs (a WebUI module, an extension, a model)",
    "training_running": "a training job started from the tab is still running",
    "nothing_to_resume": "Resume found no stopped job for the chosen dataset, model and settings",
    # the HTTP service (`headshot serve`)
    "unauthorized": "no API key was sent, or it is not valid",
    "forbidden": "the request names another user than the API key's",
    "invalid_request": "a request body does not match the API's schema",
    "method_not_allowed": "an address was called with a method it does not take",
    "body_too_large": "a request body is over the server's limit",
    "photo_too_large": "an uploaded photo is over the size or megapixel limit",
    "bad_base64": "an uploaded photo is not valid base64",
    "too_few_photos": "fewer photos were sent than training needs",
    "too_many_photos": "more photos were sent than the server takes",
    "too_few_photos_kept": "screening kept fewer photos than training needs (each rejected photo has its reason)",
    "too_many_jobs": "the user already has the most jobs queued or running at once",
    "quota_exceeded": "the user has started the most jobs allowed in 24 hours",
    "idempotency_conflict": "an Idempotency-Key was sent again with a different request",
    "bad_webhook_url": "a webhook URL that is not http(s)",
    "model_not_ready": "pictures were asked of a model whose training has not succeeded",
    "wrong_job_kind": "a training-only address was called with a generation job, or the other way round",
    "job_running": "a job still running was asked to be erased: cancel it, then erase it",
    "no_pictures_yet": "the pictures of a generation job were asked for before it had any",
    "worker_lost": "the worker running a job stopped; the job was queued again",
    "job_crashed": "a job failed unexpectedly (the message quotes why); it is tried again up to the limit",
    "gave_up": "a job failed on every try it was given",
    # evaluation and sweeps
    "invalid_runs_file": "a sweep's --runs file is malformed (not TOML/JSON, unknown setting, repeated run)",
}


class HeadshotError(Exception):
    """An error a person can act on: `code` for programs, the message for people."""

    code = "error"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class PhotoRejected(HeadshotError):
    """One photo cannot be used; the rest of the batch goes on."""


class BackendUnavailable(HeadshotError):
    """An optional model or library is missing; the message says what to install or where to put files."""

    code = "backend_unavailable"
