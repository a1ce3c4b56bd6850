from __future__ import annotations

from django import forms

from rollouts.models import Role


class InviteForm(forms.Form):
    full_name = forms.CharField(label="Full name", max_length=200)
    email = forms.EmailField(label="Email address", help_text="They sign in with this address.")
    role = forms.ChoiceField(
        label="Role",
        choices=Role.choices,
        initial=Role.MEMBER,
        widget=forms.RadioSelect,
        help_text="An admin also manages your organisation's users.",
    )
