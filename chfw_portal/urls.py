from __future__ import annotations

from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import include, path

from . import views

# Staff sign in through allauth too, so rate limits and second factors apply to /admin/ (P5).
admin.site.login = secure_admin_login(admin.site.login)
admin.site.site_header = "CHFW Portal administration"
admin.site.site_title = "CHFW Portal admin"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("ssi/", include("ssi.urls")),
    path("ssmi/", include("ssmi.urls")),
]
