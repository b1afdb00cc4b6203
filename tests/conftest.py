"""Shared fixtures: real photos that ship in installed packages, and the offline dlib backend."""

from __future__ import annotations

import os
import sys

# One torch (OpenMP) thread per process, here and in every worker or CLI process a test starts (they inherit
# the environment): xdist runs two test processes on the suite's two cores, and OpenMP threads spinning
# against each other make a tiny model's training step ~15x slower. Set before torch is first imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")
if "torch" in sys.modules:
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

import pytest  # noqa: E402
from PIL import Image  # noqa: E402

# helper modules the test modules import: their asserts report values as the test modules' do
pytest.register_assert_rewrite(
    "base_model_fixtures",
    "comfy_host_standin",
    "generate_helpers",
    "insightface_stubs",
    "lora_format_helpers",
    "train_fixtures",
    "workflow_checker",
)

from headshot.samples import astronaut, insightface_image  # noqa: E402


@pytest.fixture(scope="session")
def astronaut_img() -> Image.Image:
    """NASA's portrait of Eileen Collins, from scikit-image (512x512, face about 91 px wide)."""
    return astronaut()


@pytest.fixture(scope="session")
def group_img() -> Image.Image:
    """insightface's t1.jpg: six people side by side."""
    return insightface_image("t1.jpg")


@pytest.fixture(scope="session")
def dlib_analyzer():
    from headshot.faces.dlib_backend import DlibFaceAnalyzer

    return DlibFaceAnalyzer()


# The longest tests (a minute or more each on two cores: worker processes, several trainings). Their modules go
# first, each led by its long test, so that xdist's other worker fills the time with short tests instead of one
# of these starting last and running alone at the end. A module stays together (its module-scoped fixtures are
# built once); only the order changes, and a name missing here just runs in its usual place.
SLOW_FIRST = (
    "test_train_jobs.py::test_killed_worker_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_run",
    "test_sweep_queue.py::test_queued_sweep_runs_on_two_workers_and_writes_what_the_local_sweep_writes",
    "test_sweep.py::test_a_sweep_records_every_run_reuses_them_and_resumes_after_a_failure",
    "test_service_e2e.py::test_train_then_generate_then_erase_through_a_real_worker",
    "test_service_durability.py::test_kill_9_while_training_then_a_restart_resumes_from_the_last_checkpoint",
    "test_comfy_training.py::test_train_node_cancels_on_interrupt_resumes_then_reuses_the_finished_job",
    "test_sweep_methods.py::test_four_methods_run_on_the_same_seeds_are_recorded_reused_and_reported",
    "test_service_page.py::test_a_person_trains_then_draws_through_the_page_in_headless_chromium",
    "test_single_photo.py::test_train_single_photo_writes_a_lora_with_the_short_preset",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    modules = {name.partition("::")[0]: i for i, name in reversed(list(enumerate(SLOW_FIRST)))}

    def key(item: pytest.Item) -> tuple[int, bool]:
        name = item.nodeid.rpartition("/")[2]
        return modules.get(name.partition("::")[0], len(modules)), name not in SLOW_FIRST

    items.sort(key=key)
