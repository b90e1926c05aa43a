"""What every pipeline stage is: a named callable on numpy batches that reports its work.

A stage is built on the driver (cheap: settings only), pickled to Ray workers, and called once
per batch there. Whatever is expensive to build (a model) is built in :meth:`Stage.setup`, which
runs in the worker (for actor stages, in the actor's constructor), never on the driver.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..schema import Columns
from .stats import StageReporter


class Stage:
    """Base of the Ray Data stages: a name (for the stats), the batch size it wants, ``setup()``
    on the worker, ``__call__`` on each batch, and :meth:`apply` to add it to a dataset as CPU tasks.

    ``batch_size`` is rows per call; ``None`` means one whole block per call.
    """

    name: ClassVar[str] = "stage"
    batch_size: ClassVar[int | None] = None

    def __init__(self, reporter: StageReporter | None = None):
        self.reporter = reporter or StageReporter()

    def setup(self) -> None:
        """Build what the stage needs on the worker (models); nothing by default."""

    def __call__(self, batch: Columns) -> Columns:
        raise NotImplementedError

    def apply(self, ds: Any, *, num_cpus: float = 1.0) -> Any:
        """``ds`` with this stage mapped over it as Ray tasks of ``num_cpus`` CPU slots each."""
        return ds.map_batches(self, batch_size=self.batch_size, batch_format="numpy", num_cpus=num_cpus)
