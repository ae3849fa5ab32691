"""The resumable training state in ``OUT/state/``, replaced atomically every ``save_every``
steps: the trainable weights, the optimizer and schedule, the random state and where the data
order stands (``progress.json``). A run killed at any moment resumes from the last state and
ends exactly as an uninterrupted run would."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .. import atomic
from ..artifacts import file_marker
from ..errors import RagloomError
from ..torch_files import first_line, load_tensors

STATE_DIRECTORY = "state"
STATE_KIND = file_marker("training state", "progress.json")


class TrainingStateError(RagloomError):
    """A training state that belongs to another run or cannot be read."""


@dataclass
class Progress:
    """Where training stands: optimizer ``step``s done, the ``epoch`` and the ``batch``es of it
    done, the last step's loss (the mean per question), the best dev score so far and at which
    step, and the dev score before training (``baseline``). ``run`` identifies the spec and data
    the state belongs to."""

    run: str
    step: int = 0
    loss: float | None = None
    epoch: int = 0
    batch: int = 0
    best: float | None = None
    best_step: int | None = None
    baseline: float | None = None


def save_state(
    out: Path,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    progress: Progress,
) -> None:
    """Replace ``OUT/state/`` with the current state."""
    state = {
        "modules": {name: module.state_dict() for name, module in modules.items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "cpu_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    with atomic.directory(out / STATE_DIRECTORY, STATE_KIND, root=out) as staging:
        torch.save(state, staging / "state.pt")
        (staging / "progress.json").write_text(json.dumps(asdict(progress), indent=1) + "\n")


def load_state(
    out: Path,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    run: str,
) -> Progress | None:
    """Restore the state in ``OUT/state/`` into the given objects; None when there is none.
    A state from another spec or data file is refused."""
    directory = out / STATE_DIRECTORY
    atomic.recover_directory(directory)
    if not (directory / "progress.json").is_file():
        return None
    damaged = _damaged_advice(out, directory)
    progress = _read_progress(directory / "progress.json", damaged)
    if progress.run != run:
        raise TrainingStateError(
            f"{out} holds a training run of another spec or data file (state {progress.run}, "
            f"this run {run}). Give another --out, or delete {directory} to start over."
        )
    state = load_tensors(directory / "state.pt", damaged)
    try:
        for name, module in modules.items():
            module.load_state_dict(state["modules"][name])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["cpu_rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise TrainingStateError(
            f"{directory / 'state.pt'} does not hold this run's state ({first_line(error)}). "
            f"{damaged}"
        ) from None
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return progress


def _damaged_advice(out: Path, directory: Path) -> str:
    """What to do about a training state that cannot be read."""
    return (
        f"The run's training state is damaged, so the run cannot resume where it stopped. "
        f"Delete {directory} and rerun the same command to train again from the start (copy "
        f"{out / 'best'} aside first to keep the best checkpoint so far), or give another --out."
    )


def _read_progress(path: Path, damaged: str) -> Progress:
    """``progress.json`` of a training state."""
    try:
        return Progress(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as error:
        raise TrainingStateError(f"{path} cannot be read ({error}). {damaged}") from None
