#!/usr/bin/env bash
# Builds the A1111/Forge tab with the gradio each WebUI ships (A1111 1.10: 3.41.2; Forge: 4.40.0), each in a
# venv of its own beside .venv (gradio would move packages the suite pins), then runs tests/test_a1111_tab.py.
# Usage: tools/gradio_tab_check.sh   (from the repository root, after the README's test command made .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for spec in "3.41.2" "4.40.0 huggingface_hub==0.25.2"; do
  read -r version extra <<<"$spec"
  env=".venv-gradio-$version"
  if [ ! -x "$env/bin/python" ] || ! "$env/bin/python" -c "import gradio" 2>/dev/null; then
    python3 -m venv "$env"
    # Forge pins an older huggingface_hub: gradio 4.40 imports HfFolder, gone from hub 1.x
    "$env/bin/pip" install -q "gradio==$version" ${extra:+"$extra"}
  fi
  pysite=$("$env/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # the project and the suite's packages, after gradio's own (a .pth appends to sys.path)
  printf '%s\n%s\n%s\n' "$site" "$PWD/shared" "$PWD" >"$pysite/zz_headshot_suite.pth"
  echo "+ tab with gradio $version"
  "$env/bin/python" -m pytest -q -p no:cacheprovider tests/test_a1111_tab.py
done
