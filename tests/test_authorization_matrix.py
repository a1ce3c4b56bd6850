"""P1, P2: every URL of the project × every kind of persona, against a hand-written table.

The URL list comes from the URL configuration; the expected answers do not. A URL missing from
EXPECTED fails `test_every_url_is_in_the_table`, so each new page is covered the day it is added.
"""

from __future__ import annotations

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from .conftest import sign_in
from .factories import UserFactory

PERSONAS = ("dcc", "csp", "supplier", "staff", "anon")
LOGIN = "login"  # redirect to the sign-in page

SUPPLIER_ONLY = {"dcc": 403, "csp": 403, "supplier": 200, "staff": 403, "anon": LOGIN}
DCC_OR_CSP = {"dcc": 200, "csp": 200, "supplier": 403, "staff": 403, "anon": LOGIN}

# Written from REQUIREMENTS.md P1/P2, not from the views.
EXPECTED: dict[str, dict[str, int | str]] = {
    "home": {"dcc": "/ssmi/", "csp": "/ssmi/", "supplier": "/ssi/", "staff": "/admin/", "anon": LOGIN},
    "healthz": {"dcc": 200, "csp": 200, "supplier": 200, "staff": 200, "anon": 200},
    "ssi:dashboard": SUPPLIER_ONLY,
    "ssi:team": SUPPLIER_ONLY,
    "ssi:team-invite": SUPPLIER_ONLY,
    "ssi:team-deactivate": SUPPLIER_ONLY,  # target: a member of the Supplier's own organisation
    # target: an upload sent by the Supplier's own organisation
    "ssi:upload-detail": SUPPLIER_ONLY,
    "ssi:upload-file": SUPPLIER_ONLY,
    "ssi:upload-errors": SUPPLIER_ONLY,
    "ssi:rollout-detail": SUPPLIER_ONLY,  # target: a published rollout holding the Supplier's hub
    # U2: the Supplier's own estate; exports of the same rollout as rollout-detail
    "ssi:estate": SUPPLIER_ONLY,
    "ssi:estate-csv": SUPPLIER_ONLY,
    "ssi:estate-xlsx": SUPPLIER_ONLY,
    "ssi:rollout-eligibility": SUPPLIER_ONLY,
    "ssmi:rollout-device-status": DCC_OR_CSP,
    "ssmi:rollout-device-status-xlsx": DCC_OR_CSP,
    # PL3, SL3, PL5: a Supplier's own hubs and requests, on its face only
    "ssi:rollout-default-pilot-list": SUPPLIER_ONLY,
    "ssi:rollout-default-pilot-schedule": SUPPLIER_ONLY,
    "ssi:rollout-effective-pilot-group": SUPPLIER_ONLY,
    "ssi:rollout-safe-launch-schedule": SUPPLIER_ONLY,
    "ssi:rollout-schedule-requests": SUPPLIER_ONLY,
    # PL3, SL3, T5, PL5: a CSP's region, everything for DCC
    "ssmi:rollout-default-pilot-list": DCC_OR_CSP,
    "ssmi:rollout-default-pilot-list-xlsx": DCC_OR_CSP,
    "ssmi:rollout-default-pilot-schedule": DCC_OR_CSP,
    "ssmi:rollout-default-pilot-schedule-xlsx": DCC_OR_CSP,
    "ssmi:rollout-safe-launch-schedule": DCC_OR_CSP,
    "ssmi:rollout-safe-launch-schedule-xlsx": DCC_OR_CSP,
    "ssmi:rollout-effective-pilot-group": DCC_OR_CSP,
    "ssmi:rollout-deployment-plan": DCC_OR_CSP,
    "ssmi:rollout-schedule-requests": DCC_OR_CSP,
    # B5: the evidence pack is for DCC (the Panel) only
    "ssmi:rollout-evidence": {"dcc": 200, "csp": 403, "supplier": 403, "staff": 403, "anon": LOGIN},
    "ssi:notices-read": {"dcc": 403, "csp": 403, "supplier": 405, "staff": 403, "anon": LOGIN},  # POST only
    "ssmi:dashboard": DCC_OR_CSP,
    "ssmi:rollout-detail": DCC_OR_CSP,  # the same rollout: its hub is in CSP North's region
    "ssmi:notices-read": {"dcc": 405, "csp": 405, "supplier": 403, "staff": 403, "anon": LOGIN},
    # target: a pending proposal by another DCC user; proposals are DCC's only (B4)
    "ssmi:proposal-decide": {"dcc": 200, "csp": 403, "supplier": 403, "staff": 403, "anon": LOGIN},
    # target: an upload sent by the CSP; DCC sees every upload (PL3, X2)
    "ssmi:upload-detail": DCC_OR_CSP,
    "ssmi:upload-file": DCC_OR_CSP,
    "ssmi:upload-errors": DCC_OR_CSP,
    "ssmi:team": DCC_OR_CSP,
    "ssmi:team-invite": DCC_OR_CSP,
    # target: a DCC member; a CSP admin gets the same 404 as for a user that does not exist (P3)
    "ssmi:team-deactivate": {"dcc": 200, "csp": 404, "supplier": 403, "staff": 403, "anon": LOGIN},
}

# Library-owned URL trees (sign-in, MFA, admin) are tested in their own files.
LIBRARY_PREFIXES = ("admin", "accounts")


def project_url_names() -> set[str]:
    names: set[str] = set()

    def walk(patterns, namespace: str | None) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                if str(p.pattern).strip("/^") in LIBRARY_PREFIXES:
                    continue
                walk(p.url_patterns, p.namespace or namespace)
            elif isinstance(p, URLPattern) and p.name:
                names.add(f"{namespace}:{p.name}" if namespace else p.name)

    walk(get_resolver().url_patterns, None)
    return names


def test_every_url_is_in_the_table():
    assert project_url_names() - EXPECTED.keys() == set(), "add the new URL to EXPECTED with its answers"
    assert EXPECTED.keys() - project_url_names() == set(), "remove URLs that no longer exist"


@pytest.fixture
def people(dcc, csp_north, import_supplier, staff):
    return {
        "dcc": dcc,
        "csp": csp_north,
        "supplier": import_supplier,
        "staff": staff,
        "anon": None,
        "supplier_member": UserFactory(organisation=import_supplier.organisation),
        "dcc_member": UserFactory(organisation=dcc.organisation),
        "supplier_upload": an_upload(import_supplier),
        "csp_upload": an_upload(csp_north),
        **a_rollout(dcc, import_supplier),
    }


def a_rollout(dcc, supplier):
    from rollouts.models import DeviceModel, FirmwareVersion, Hub
    from rollouts.services.lifecycle import approve_proposal, create_rollout, propose

    second = UserFactory(organisation=dcc.organisation)
    model = DeviceModel.objects.create(
        cpl_code="010A030B", manufacturer="T", model="CH1", hardware_version="1"
    )
    v1 = FirmwareVersion.objects.create(device_model=model, version="0002012F")
    v2 = FirmwareVersion.objects.create(device_model=model, version="00020130")
    Hub.objects.create(
        guid="00DB000000000001",
        device_model=model,
        firmware_version=v1,
        region="north",
        import_supplier=supplier.organisation,
    )
    rollout = create_rollout(
        user=dcc,
        title="Fix",
        target_version=v2,
        replaced_versions=[v1],
        release_note_url="https://example.test/rn",
        severity="high",
        priority="high",
        release_type="sec_release",
        impact="functional",
    )
    approve_proposal(user=second, proposal_id=propose(user=dcc, rollout_id=rollout.pk, move="publish").pk)
    pending = propose(user=second, rollout_id=rollout.pk, move="stop", reason="Field reports")
    return {"rollout": rollout, "proposal": pending}


def an_upload(user):
    from django.core.files.base import ContentFile

    from rollouts.intake.pipeline import receive_upload
    from rollouts.models import UploadKind

    return receive_upload(
        user=user,
        organisation=user.organisation,
        kind=UploadKind.VULNERABLE_FLAGS,
        content=ContentFile(b"guid\n00DB123456789A01\n", name="flags.csv"),
    )


def url_for(name: str, people) -> str:
    if name == "ssi:team-deactivate":
        return reverse(name, args=[people["supplier_member"].pk])
    if name == "ssmi:team-deactivate":
        return reverse(name, args=[people["dcc_member"].pk])
    if name.partition(":")[2].startswith("rollout-"):
        return reverse(name, args=[people["rollout"].pk])
    if name == "ssmi:proposal-decide":
        return reverse(name, args=[people["proposal"].pk])
    if name.startswith("ssi:upload-"):
        return reverse(name, args=[people["supplier_upload"].pk])
    if name.startswith("ssmi:upload-"):
        return reverse(name, args=[people["csp_upload"].pk])
    return reverse(name)


@pytest.mark.req("P2")
@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_answer_for_each_persona(client, people, name, persona):
    if people[persona] is not None:
        sign_in(client, people[persona])
    url = url_for(name, people)
    response = client.get(url)
    expected = EXPECTED[name][persona]
    if expected == LOGIN:
        assert response.status_code == 302
        assert response.url.startswith(reverse("account_login"))
    elif isinstance(expected, str):
        assert response.status_code == 302
        assert response.url == expected
    else:
        assert response.status_code == expected, f"{persona} GET {url}"
    if expected == 403:
        assert "You cannot see this page" in response.text  # the portal's own 403 page, never the page
