"""A big upload's page shows a progress bar that moves, then swaps to the result (issue 7)."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from playwright.sync_api import expect

from .conftest import assert_accessible, sign_in

PASSWORD = "correct-horse-battery"


@pytest.mark.e2e
def test_the_progress_bar_moves_and_swaps_to_the_result(page, live_server, transactional_db):
    from rollouts.intake.pipeline import receive_upload, set_progress
    from rollouts.models import OrgKind, Upload, UploadKind, UploadState
    from tests.factories import OrganisationFactory, UserFactory

    org = OrganisationFactory(name="Volt Energy", kind=OrgKind.SUPPLIER)
    user = UserFactory(email="alice@volt.test", organisation=org, password=PASSWORD)
    upload = receive_upload(
        user=user,
        organisation=org,
        kind=UploadKind.VULNERABLE_FLAGS,
        content=ContentFile(b"guid\n00DB123456789A01\n", name="flags.csv"),
    )
    Upload.objects.filter(pk=upload.pk).update(state=UploadState.VALIDATING)
    set_progress(upload.pk, "reading", 10_000)

    sign_in(page, live_server, user.email, PASSWORD)
    page.goto(f"{live_server.url}/ssi/uploads/{upload.pk}/")
    bar = page.get_by_role("progressbar")
    expect(bar).to_have_attribute("value", "1")
    expect(page.get_by_text("10,000 rows read, 0 errors so far")).to_be_visible()
    assert_accessible(page)

    set_progress(upload.pk, "checking", 20_000, 2)  # the worker moves on; the page polls every second
    expect(page.get_by_text("Step 2 of 3: checking every row")).to_be_visible(timeout=5000)
    expect(bar).to_have_attribute("value", "2")

    Upload.objects.filter(pk=upload.pk).update(
        state=UploadState.APPLIED, row_count=20_000, summary={"new": 5}
    )
    set_progress(upload.pk, "applied", 20_000)
    expect(page.get_by_text("The file was applied")).to_be_visible(timeout=5000)
    expect(page.get_by_role("progressbar")).to_have_count(0)
    assert_accessible(page)
