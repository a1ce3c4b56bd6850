"""Communications Hub GUIDs (EUI-64), as FILE_FORMATS.md "GUIDs" defines them.

Stored as the 16 bare upper-case hex digits; displayed as ``00-DB-12-34-56-78-9A-BC``.
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db import models

GUID_FORMAT = "guid_format"  # the reason code of FILE_FORMATS.md

# One separator style per value, exactly 8 octets. Explicit ASCII classes: \d and \s would also
# accept Arabic-Indic or full-width digits and unicode spaces.
_HEX = "[0-9A-Fa-f]"
_SPELLINGS = re.compile(
    rf"{_HEX}{{16}}"
    rf"|{_HEX}{{2}}(?:-{_HEX}{{2}}){{7}}"
    rf"|{_HEX}{{2}}(?::{_HEX}{{2}}){{7}}"
    rf"|{_HEX}{{2}}(?: {_HEX}{{2}}){{7}}"
)
# Surrounding whitespace that a spreadsheet cell or a pasted list may carry (ASCII only).
_SURROUNDING = " \t\r\n\f\v"


class GuidFormatError(ValueError):
    """A value that is not one of the accepted GUID spellings (reason code ``guid_format``)."""

    code = GUID_FORMAT

    def __init__(self, value: object) -> None:
        self.value = value
        super().__init__(
            f"{value!r} is not a GUID: expected 16 hexadecimal digits, e.g. 00-DB-12-34-56-78-9A-BC"
        )


def parse_guid(text: str) -> str:
    """Return the 16 upper-case hex digits of an accepted spelling; raise GuidFormatError otherwise."""
    if not isinstance(text, str):
        raise GuidFormatError(text)
    candidate = text.strip(_SURROUNDING)
    if not _SPELLINGS.fullmatch(candidate):
        raise GuidFormatError(text)
    if len(candidate) == 16:
        return candidate.upper()
    return candidate.replace(candidate[2], "").upper()  # one separator style per value (the pattern)


# The same rule in SQL, for files PostgreSQL parses itself (rollouts.intake.pipeline, plain CSV).
_SQL_HEX = "[0-9A-Fa-f]"
_SQL_SPACE = r"[ \t\r\n\f\v]"
_SQL_PATTERN = (
    rf"^{_SQL_SPACE}*(?:{_SQL_HEX}{{16}}|{_SQL_HEX}{{2}}(?:-{_SQL_HEX}{{2}}){{7}}"
    rf"|{_SQL_HEX}{{2}}(?::{_SQL_HEX}{{2}}){{7}}|{_SQL_HEX}{{2}}(?: {_SQL_HEX}{{2}}){{7}}){_SQL_SPACE}*$"
)


def guid_sql(column: str) -> str:
    """An immutable SQL expression equal to ``parse_guid(column)``, NULL where parse_guid raises.

    The common spellings 00-DB-12-... and 00DB12... take a cheap path (LIKE or the length, then decode
    as hex: 0.8 s per million rows here against 2.4 s for the pattern alone); any other value goes
    through the pattern. For a value of those shapes whose digits are not hex, decode raises "invalid
    hexadecimal": the caller treats that error as "use the Python reader" (tests/rollouts/test_guid.py
    checks both).
    """
    c = column
    slow = f"""CASE WHEN {c} ~ '{_SQL_PATTERN}'
                    THEN upper(translate(btrim({c}, E' \\t\\r\\n\\f\\x0b'), '-: ', '') COLLATE "C") END"""
    return f"""CASE WHEN {c} LIKE '__-__-__-__-__-__-__-__' THEN
                   CASE WHEN octet_length(decode(replace({c}, '-', ''), 'hex')) = 8
                        THEN upper(replace({c}, '-', '') COLLATE "C") ELSE {slow} END
               WHEN octet_length({c}) = 16 THEN
                   CASE WHEN octet_length(decode({c}, 'hex')) = 8 THEN upper({c} COLLATE "C") ELSE {slow} END
               ELSE {slow} END"""


def display_guid(value: str) -> str:
    """``00DB123456789ABC`` (or any accepted spelling) -> ``00-DB-12-34-56-78-9A-BC``."""
    hex16 = parse_guid(value)
    return "-".join(hex16[i : i + 2] for i in range(0, 16, 2))


class GuidFormField(forms.CharField):
    """A form field that accepts every spelling and cleans to the 16 stored digits."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["max_length"] = 64  # room for spaced spellings; parse_guid decides
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> str:
        text = super().to_python(value)
        if text in self.empty_values:
            return ""
        try:
            return parse_guid(text)
        except GuidFormatError:
            raise ValidationError(
                "Enter a GUID of 16 hexadecimal digits, such as 00-DB-12-34-56-78-9A-BC.", code=GUID_FORMAT
            ) from None


# GUIDs are identifiers, compared byte for byte: the "C" collation (as the hub table's column, migration 0020)
# lets PostgreSQL compare and sort them with memcmp and abbreviated keys instead of the database locale's
# strcoll. Staging tables declare their GUID columns with this type, so a join to the hub table compares
# like with like. The canonical form (upper-case hex digits) sorts the same in either collation.
GUID_SQL_TYPE = 'varchar(16) COLLATE "C"'
GUID_COLLATION = "C"


class GuidField(models.CharField):
    """A plain ``varchar(16)`` holding the bare digits.

    Deliberately not a ``char(16)`` db_type: TOOLCHAIN.md "Traps" saw bulk_create on PostgreSQL
    keep one character of every GUID with a custom char(16) type. The model gives
    ``db_collation=GUID_COLLATION`` explicitly (not a default here, so that the historical
    migrations keep describing the column as it was then).
    """

    description = "Communications Hub GUID (EUI-64)"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 16)
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> Any:
        name, path, args, kwargs = super().deconstruct()
        if kwargs.get("max_length") == 16:
            del kwargs["max_length"]
        return name, path, args, kwargs

    def to_python(self, value: Any) -> str | None:
        if value is None or value == "":
            return value
        try:
            return parse_guid(value)
        except GuidFormatError:
            raise ValidationError(
                "Enter a GUID of 16 hexadecimal digits, such as 00-DB-12-34-56-78-9A-BC.",
                code=GUID_FORMAT,
                params={"value": value},
            ) from None

    def get_prep_value(self, value: Any) -> Any:
        # Field's, not CharField's: CharField.get_prep_value calls to_python, which raises ValidationError.
        value = models.Field.get_prep_value(self, value)
        if value is None or value == "":
            return value
        # Like IntegerField with "abc": a value that cannot be a GUID is a programming error here;
        # user input is parsed (and reported as guid_format) before it reaches a query.
        return parse_guid(value)

    def formfield(self, **kwargs: Any) -> Any:
        return super().formfield(**{"form_class": GuidFormField, **kwargs})
