"""Settings dataclasses check their fields' types and ranges, in the words the CLI uses."""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from pspnet.errors import ConfigError
from pspnet.settings import Option, check_settings, field_docs, setting


@dataclass(frozen=True)
class Example:
    """An example.

    Attributes:
        count: how many, at least one.
        share: a fraction in (0, 1].
        kind: one of two.
        sizes: two sizes.
        scales: one or more scales, each > 0.
        folder: a folder
            on two lines.
        name: a name or nothing.
    """

    count: int = setting(1, low=1)
    share: float = setting(0.5, low=0, low_open=True, high=1)
    kind: Literal["a", "b"] = "a"
    sizes: tuple[int, int] = setting((1, 2), low=1)
    scales: tuple[float, ...] = setting((1.0,), low=0, low_open=True)
    folder: Path = Path(".")
    name: str | None = None

    def __post_init__(self) -> None:
        check_settings(self)


def test_defaults_pass_and_lists_become_tuples():
    assert Example() == Example(sizes=[1, 2], scales=[1.0])
    assert Example(sizes=[3, 4]).sizes == (3, 4)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"count": 0}, "count must be an integer >= 1, got 0"),
        ({"count": 1.5}, "count must be an integer >= 1"),
        ({"count": True}, "count must be an integer >= 1"),
        ({"share": 0}, r"share must be a number in \(0, 1\], got 0"),
        ({"share": float("nan")}, "share must be a number in"),
        ({"kind": "c"}, r"kind must be one of \['a', 'b'\]"),
        ({"sizes": (1,)}, r"sizes must be 2 values \(int\)"),
        ({"sizes": (1, 0)}, "sizes must be values that are each an integer >= 1"),
        ({"scales": ()}, "scales must be one or more values"),
        ({"scales": (1.0, -1.0)}, "each a number > 0"),
        ({"folder": 3}, "folder must be a path"),
        ({"name": 3}, "name must be a string or None"),
    ],
)
def test_a_bad_value_names_the_field_and_what_it_must_be(values, message):
    with pytest.raises(ConfigError, match=message):
        Example(**values)


@pytest.mark.parametrize(
    ("option", "kind", "text"),
    [
        (Option(low=1), int, "an integer >= 1"),
        (Option(low=0, low_open=True), float, "a number > 0"),
        (Option(low=0, high=255), int, "an integer in 0..255"),
        (Option(low=0, high=1, high_open=True), float, "a number in [0, 1)"),
        (Option(), float, "a number"),
    ],
)
def test_ranges_in_words(option, kind, text):
    assert option.requirement(kind) == text


def test_field_docs_join_continuation_lines():
    assert field_docs(Example)["folder"] == "a folder on two lines."
