"""Run API-format prompts through a real ComfyUI's own prompt executor (a helper for
test_comfy_identity_adapter, started with ComfyUI's interpreter in its checkout, on the CPU).

stdin: {"pack": this repository, "base": a folder with models/, input/ (output/ is written),
"prompts": {name: API prompt}}. stdout: a line "RESULT {name: {"images": {node: [files]}, "texts":
{node: text}}}"; a prompt ComfyUI refuses or fails ends the run with its errors.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

sys.argv = ["main.py", "--cpu"]
sys.path.insert(0, os.getcwd())
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import execution  # noqa: E402
import folder_paths  # noqa: E402
import nodes  # noqa: E402


class Server:
    """What the executor asks of ComfyUI's PromptServer when no client is connected."""

    client_id = None
    last_node_id = None
    last_prompt_id = None

    def send_sync(self, *args, **kwargs):
        pass


def main() -> None:
    job = json.loads(sys.stdin.read())
    base = job["base"]
    folder_paths.set_input_directory(os.path.join(base, "input"))
    folder_paths.set_output_directory(os.path.join(base, "output"))
    folder_paths.set_temp_directory(os.path.join(base, "temp"))
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    if not asyncio.run(nodes.load_custom_node(job["pack"])):
        raise SystemExit("IMPORT FAILED: " + job["pack"])
    for key in ("checkpoints", "clip_vision", "ipadapter", "insightface"):
        folder_paths.add_model_folder_path(key, os.path.join(base, "models", key), is_default=True)
    executor = execution.PromptExecutor(Server())
    results = {}
    for number, (name, prompt) in enumerate(job["prompts"].items()):
        prompt_id = f"run-{number}"
        valid = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
        if not valid[0]:
            raise SystemExit(f"{name}: prompt refused: {json.dumps(valid[1])} {json.dumps(valid[3])[:3000]}")
        executor.execute(prompt, prompt_id, {}, valid[2])
        if not executor.success:
            raise SystemExit(f"{name}: failed: {json.dumps(executor.status_messages, default=str)[-4000:]}")
        images, texts = {}, {}
        for node, out in executor.history_result["outputs"].items():
            if "images" in out:
                images[node] = [os.path.join(i.get("subfolder", ""), i["filename"]) for i in out["images"]]
            if "text" in out:
                texts[node] = "\n".join(map(str, out["text"]))
        results[name] = {"images": images, "texts": texts}
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main()
