"""CHFW Portal settings, read from the environment (one module, no local/production split).

Every variable is documented in README.md. Bad values fail loudly at start-up.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

BASE_DIR = Path(__file__).resolve().parent.parent

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    """A string from NAME, or from the file named by NAME_FILE (for container secrets)."""
    if path := os.environ.get(f"{name}_FILE"):
        return Path(path).read_text().strip()
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    if raw.strip().lower() in TRUE:
        return True
    if raw.strip().lower() in FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean: use true or false.")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number.") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


# GENERAL ------------------------------------------------------------------------------------------
DEBUG = env_bool("DEBUG", False)
DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me"  # noqa: S105 - refused below when DEBUG is off
SECRET_KEY = env_str("SECRET_KEY", DEV_SECRET_KEY)
TESTING = env_bool("PORTAL_TESTING", False)
if not DEBUG and not TESTING and SECRET_KEY == DEV_SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY is the development key and DEBUG is off. Set SECRET_KEY (or SECRET_KEY_FILE) "
        "to a long random value, or set DEBUG=true for local development."
    )
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG or TESTING else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
PORTAL_BASE_URL = env_str("PORTAL_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
PORTAL_REQUIRE_MFA = env_bool("PORTAL_REQUIRE_MFA", not DEBUG)
PORTAL_PROPOSAL_MAX_AGE_DAYS = env_int("PORTAL_PROPOSAL_MAX_AGE_DAYS", 14)  # B4: undecided proposals lapse
# A page request waits at most this long for a row lock (L10), then answers "busy" (chfw_portal/middleware.py).
PORTAL_LOCK_WAIT_SECONDS = env_int("PORTAL_LOCK_WAIT_SECONDS", 10)

TIME_ZONE = "Europe/London"  # dates shown in UK time; stored in UTC
USE_TZ = True
LANGUAGE_CODE = "en-gb"
USE_I18N = True
ROOT_URLCONF = "chfw_portal.urls"
WSGI_APPLICATION = "chfw_portal.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# DATABASES ----------------------------------------------------------------------------------------
# One SQL dialect: PostgreSQL. `make run` starts an embedded server and sets DATABASE_URL.
DATABASE_URL = env_str("DATABASE_URL")
if not DATABASE_URL:
    raise ImproperlyConfigured(
        "DATABASE_URL is not set. `make run` starts an embedded PostgreSQL and sets it; "
        "otherwise point it at PostgreSQL 15+, e.g. postgresql://postgres@127.0.0.1:5432/chfw."
    )
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))}
DATABASES["default"]["ATOMIC_REQUESTS"] = False  # services own their transactions (durable=True)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

# APPS ---------------------------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.postgres",  # ArrayField (rollouts.models.SmiVersionUpdate)
    "django_htmx",
    "django_tables2",
    "import_export",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "allauth.usersessions",
    "rollouts",
    "ssi",
    "ssmi",
]

# django-import-export: Django admin only, for device models and firmware versions (STYLE.md 6).
# Every import runs in one transaction and a file with any invalid row imports nothing (TOOLCHAIN:
# without this the valid rows of a bad file are committed). Its own formula escaping strips one `=`
# only, so it stays off: the resources escape with rollouts.exports.escape_cell.
IMPORT_EXPORT_USE_TRANSACTIONS = True
IMPORT_EXPORT_SKIP_ADMIN_CONFIRM = False
IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT = False

# MIDDLEWARE ---------------------------------------------------------------------------------------
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "allauth.usersessions.middleware.UserSessionsMiddleware",
    "chfw_portal.middleware.LockWaitMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.csp",
                "rollouts.context_processors.portal",
            ],
        },
    }
]

# AUTH / allauth -----------------------------------------------------------------------------------
AUTH_USER_MODEL = "rollouts.User"
AUTHENTICATION_BACKENDS = ["allauth.account.auth_backends.AuthenticationBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
ACCOUNT_ADAPTER = "rollouts.auth.PortalAccountAdapter"
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*"]
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = True
ACCOUNT_LOGIN_ON_PASSWORD_RESET = False
ACCOUNT_SESSION_REMEMBER = False
ACCOUNT_PREVENT_ENUMERATION = True
ACCOUNT_PASSWORD_RESET_BY_CODE_ENABLED = False
ACCOUNT_RATE_LIMITS = {
    "login_failed": "10/m/ip,5/5m/key",
    "reset_password": "20/m/ip,5/m/key",
    "reset_password_from_key": "20/m/ip",
}
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "CHFW Portal"
USERSESSIONS_TRACK_ACTIVITY = False
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 8 * 60 * 60)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG and not TESTING)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# CACHE (rate limits, progress) --------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# CELERY -------------------------------------------------------------------------------------------
# Unset broker: tasks run eagerly in-process (development without Redis, and most tests).
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", CELERY_BROKER_URL)
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Must exceed the longest task and countdown (Redis redelivers unacknowledged tasks after it).
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", 6 * 60 * 60)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_RESULT_EXPIRES = 24 * 60 * 60
CELERY_TASK_SERIALIZER = "json"
CELERY_TIMEZONE = TIME_ZONE

# EMAIL --------------------------------------------------------------------------------------------
# Django 6.1 mailers. EMAIL_BACKEND picks the class (console in development, SMTP in production).
_smtp_options = {
    "host": env_str("EMAIL_HOST", "localhost"),
    "port": env_int("EMAIL_PORT", 25),
    "username": env_str("EMAIL_HOST_USER"),
    "password": env_str("EMAIL_HOST_PASSWORD"),
    "use_tls": env_bool("EMAIL_USE_TLS", False),
    "timeout": env_int("EMAIL_TIMEOUT", 20),
}
_email_backend = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
MAILERS = {
    "default": {
        "BACKEND": _email_backend,
        "OPTIONS": _smtp_options if _email_backend.endswith("smtp.EmailBackend") else {},
    }
}
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "CHFW Portal <no-reply@chfw.invalid>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# FILES --------------------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / ".data" / "staticfiles")))
# Uploaded files are kept outside the static root and served only through audited views (X2).
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / ".data" / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# SECURITY / CSP -----------------------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY", False) else None
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "font-src": [CSP.SELF],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "object-src": [CSP.NONE],
}

# LOGGING ------------------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

# INTAKE (FILE_FORMATS.md: per-file limits) --------------------------------------------------------
INTAKE_MAX_BYTES = env_int("INTAKE_MAX_BYTES", 100 * 1024 * 1024)  # 100 MiB per file
INTAKE_MAX_CSV_ROWS = env_int("INTAKE_MAX_CSV_ROWS", 2_000_000)
INTAKE_MAX_XLSX_ROWS = env_int("INTAKE_MAX_XLSX_ROWS", 1_048_576)  # the format's own limit
INTAKE_MAX_XLSX_UNPACKED = env_int("INTAKE_MAX_XLSX_UNPACKED", 512 * 1024 * 1024)  # all entries, uncompressed
INTAKE_MAX_XLSX_SHEET = env_int(
    "INTAKE_MAX_XLSX_SHEET", 400 * 1024 * 1024
)  # the first worksheet, uncompressed
INTAKE_MAX_XLSX_RATIO = env_int("INTAKE_MAX_XLSX_RATIO", 200)  # uncompressed / compressed, per entry
INTAKE_MAX_XLSX_ENTRIES = env_int("INTAKE_MAX_XLSX_ENTRIES", 1000)
# Uploads bigger than this run in a Celery worker, with live progress.
INTAKE_BACKGROUND_BYTES = env_int("INTAKE_BACKGROUND_BYTES", 256 * 1024)
PORTAL_UPLOAD_MAX_ATTEMPTS = env_int("PORTAL_UPLOAD_MAX_ATTEMPTS", 3)  # then processing_failed
INTAKE_CALAMINE_MAX_BYTES = env_int("INTAKE_CALAMINE_MAX_BYTES", 8 * 1024 * 1024)  # above: openpyxl read-only
