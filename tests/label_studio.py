"""Label Studio's JSON export, as a person's labelling writes it (tests of the labelling loop)."""

from __future__ import annotations


def choice(label: str, **extra) -> dict:
    """A classification result: the `choices` a person picked."""
    return {"id": "r1", "from_name": "label", "to_name": "text", "type": "choices", "origin": "manual",
            "value": {"choices": [label]}, **extra}


def annotation(result: list, *, cancelled: bool = False, updated: str = "2026-12-01T12:00:00.000000Z") -> dict:
    """One person's submitted (or cancelled) annotation of a task."""
    return {"id": 1, "completed_by": 1, "result": result, "was_cancelled": cancelled, "ground_truth": False,
            "created_at": "2026-12-01T11:00:00.000000Z", "updated_at": updated, "lead_time": 4.2}
