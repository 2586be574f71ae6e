"""The one error every adapter raises, and the collector that lets a file report all its problems at once."""

from __future__ import annotations

from chronosweep.core.errors import UserError

# Beyond this many, a broken file is broken everywhere; the count says how much more there is.
SHOWN = 20


class DataError(UserError, ValueError):
    """Bad or missing evaluation data; each problem names the file, the record and the field."""

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems or [])
        lines = [message]
        lines += [f"  - {p}" for p in self.problems[:SHOWN]]
        if len(self.problems) > SHOWN:
            lines.append(f"  ... and {len(self.problems) - SHOWN} more")
        super().__init__("\n".join(lines))


class Problems:
    """Problems found in one file, each 'record R, field F: what'; raise() turns them into one DataError."""

    def __init__(self, file: str):
        self.file = file
        self.items: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            n = len(self.items)
            raise DataError(f"invalid data in {self.file} ({n} problem{'s' if n != 1 else ''}):", self.items)


def type_name(value) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number"}.get(type(value), type(value).__name__)


class Fields:
    """Typed access to one record's fields; a missing or mistyped field becomes a problem and reads as None."""

    def __init__(self, record, where: str, problems: Problems, prefix: str = ""):
        self.record = record
        self.where = where
        self.problems = problems
        # For nested objects: field names are reported as 'target_new.str'.
        self.prefix = prefix

    def fail(self, key: str, what: str) -> None:
        self.problems.add(f"{self.where}, field {self.prefix + key!r}", what)

    def nested(self, value: dict, key: str) -> Fields:
        return Fields(value, self.where, self.problems, f"{self.prefix}{key}.")

    def _get(self, key: str, required: bool):
        if key not in self.record:
            if required:
                self.fail(key, "missing")
            return None
        return self.record[key]

    def text(self, key: str, required: bool = True, nullable: bool = False, empty_ok: bool = False) -> str | None:
        value = self._get(key, required)
        if value is None:
            if key in self.record and not nullable:
                self.fail(key, "expected a string, got null")
            return None
        if not isinstance(value, str):
            self.fail(key, f"expected a string, got {type_name(value)} ({value!r:.60})")
            return None
        if not empty_ok and not value.strip():
            self.fail(key, "must not be empty")
            return None
        return value

    def texts(self, key: str, required: bool = False, allow_str: bool = False) -> tuple[str, ...] | None:
        value = self._get(key, required)
        if value is None:
            if key in self.record:
                self.fail(key, "expected a list of strings, got null")
            return None
        if allow_str and isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.fail(key, f"expected a list of strings, got {type_name(value)} ({value!r:.60})")
            return None
        bad = [i for i, v in enumerate(value) if not isinstance(v, str) or not v.strip()]
        if bad:
            self.fail(f"{key}[{bad[0]}]", f"expected a non-empty string, got {type_name(value[bad[0]])} ({value[bad[0]]!r:.60})")
            return None
        return tuple(value)

    def obj(self, key: str, required: bool = True) -> dict | None:
        value = self._get(key, required)
        if value is None:
            if key in self.record:
                self.fail(key, "expected an object, got null")
            return None
        if not isinstance(value, dict):
            self.fail(key, f"expected an object, got {type_name(value)} ({value!r:.60})")
            return None
        return value

    def items(self, key: str, required: bool = True) -> list | None:
        value = self._get(key, required)
        if value is None:
            if key in self.record:
                self.fail(key, "expected a list, got null")
            return None
        if not isinstance(value, list):
            self.fail(key, f"expected a list, got {type_name(value)} ({value!r:.60})")
            return None
        return value

    def ident(self, key: str, required: bool = False) -> str | None:
        """Ids may be strings or integers in the wild (MQuAKE and CounterFact use integers)."""
        value = self._get(key, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            self.fail(key, f"expected a string or an integer, got {type_name(value)} ({value!r:.60})")
            return None
        return str(value)

    def unknown(self, known: set[str]) -> None:
        for key in self.record:
            if key not in known:
                self.fail(key, f"unknown field (known: {', '.join(sorted(known))})")

