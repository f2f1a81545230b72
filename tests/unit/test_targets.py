"""Engine target texts are parsed into sorted engine ids, never eval'ed."""

from __future__ import annotations

import pytest

from pxpool.errors import PxpoolError, TargetError
from pxpool.magics.targets import parse_targets

IDS = [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", [3]),
        ("0,2", [0, 2]),
        ("2-4", [2, 3, 4]),
        ("::2", [0, 2, 4]),
        ("1::2", [1, 3, 5]),
        ("-1", [5]),
        ("-2:", [4, 5]),
        (":2", [0, 1]),
        ("::-1", IDS),
        ("all", IDS),
        ("ALL", IDS),
        ("0,2-4,::2,-1", [0, 2, 3, 4, 5]),
        (" 1 , 3 - 4 ", [1, 3, 4]),
        ("[0, 1]", [0, 1]),
        ("(5)", [5]),
    ],
)
def test_target_text_selects_sorted_unique_ids(text: str, expected: list[int]) -> None:
    assert parse_targets(text, IDS) == expected


def test_negative_index_counts_from_end_of_sorted_ids_not_from_id_zero() -> None:
    assert parse_targets("-1", [7, 3, 9]) == [9]
    assert parse_targets("-3", [7, 3, 9]) == [3]


def test_slices_apply_to_current_ids_with_gaps() -> None:
    assert parse_targets("::2", [2, 5, 8, 11]) == [2, 8]
    assert parse_targets("1:3", [2, 5, 8, 11]) == [5, 8]


def test_target_error_is_a_pxpool_error_and_value_error() -> None:
    assert issubclass(TargetError, PxpoolError)
    assert issubclass(TargetError, ValueError)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "7",
            r"Bad engine target '7': no engine 7 in this pool; .* Engines: \[0, 1, 2, 3, 4, 5\]\.",
        ),
        ("0,9", r"Bad engine target '9' in '0,9': no engine 9 in this pool"),
        ("-7", r"Bad engine target '-7': index -7 is out of range for 6 engines"),
        ("4-2", r"Bad engine target '4-2': range start 4 is after its end 2"),
        ("4-8", r"Bad engine target '4-8': engines \[6, 7, 8\] are not in this pool"),
        ("::0", r"Bad engine target '::0': slice step cannot be zero"),
        ("10:", r"Bad engine target '10:': selects no engines"),
        ("x", r"Bad engine target 'x': not an id, range, slice or 'all'"),
        ("__import__('os')", r"not an id, range, slice or 'all'"),
        ("1.5", r"Bad engine target '1.5': not an id, range, slice or 'all'"),
        ("0,,1", r"Bad engine target '0,,1': empty item between commas"),
        ("", r"Bad engine target '': no engines named"),
        ("[]", r"Bad engine target '\[\]': no engines named"),
    ],
)
def test_bad_target_names_item_and_problem(text: str, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        parse_targets(text, IDS)


def test_bad_target_message_lists_accepted_forms() -> None:
    with pytest.raises(
        TargetError,
        match=r"write ids \(0,2\), ranges \(2-4\), slices \(::2, -2:\), negative indexes \(-1\) or all",
    ):
        parse_targets("two", IDS)


def test_all_of_an_empty_pool_selects_no_engines() -> None:
    with pytest.raises(
        TargetError, match=r"Bad engine target 'all': selects no engines; .* Engines: \[\]\."
    ):
        parse_targets("all", [])
