"""What the CLI shows: lines printed by rank 0 only, and progress bars that appear when used."""

from __future__ import annotations

import os


def is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def say(*parts: object) -> None:
    if is_main_rank():
        print(*parts)


def write(line: str, error: bool = False) -> None:
    """A line printed above any progress bar: by rank 0, or by every rank for an error."""
    if error or is_main_rank():
        import sys

        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr if error else sys.stdout)


class ProgressBar:
    """A tqdm bar that appears at its first update, on rank 0 only.

    A command that fails while it sets up (a missing folder, a bad option) thus prints its
    error on a clean line instead of after an empty bar.
    """

    def __init__(self, **options):
        self.options, self.bar = options, None

    def update_to(self, done: int, total: int | None = None) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(disable=not is_main_rank(), dynamic_ncols=True, **self.options)
        if total is not None:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def set_postfix(self, values: dict[str, str]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(values, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def download_bar() -> ProgressBar:
    """The bar of a checkpoint named by registry name or URL, shown while it downloads."""
    return ProgressBar(desc="downloading", unit="B", unit_scale=True, unit_divisor=1024)
