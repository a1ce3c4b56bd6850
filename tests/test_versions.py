"""Version guard: CI must never test the wrong stack (TOOLCHAIN.md)."""

from __future__ import annotations

import django
import openpyxl
from django.db import connection


def test_django_is_6_1_or_newer():
    assert django.VERSION >= (6, 1)


def test_postgresql_is_15_or_newer(db):
    assert connection.vendor == "postgresql"
    assert connection.pg_version >= 150000


def test_openpyxl_guards_against_xml_bombs():
    assert openpyxl.DEFUSEDXML is True
