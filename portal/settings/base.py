"""Settings for every environment, driven by environment variables.

With nothing set, the portal runs on an embedded default that needs only Python:
SQLite under var/ and Celery tasks executed in process. Setting DATABASE_URL and
CELERY_BROKER_URL (or REDIS_URL) switches to PostgreSQL, Redis and separate workers.
Production differs from development by environment only.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_float, env_int, env_list, env_str
from .storage import storages_from_env

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("PORTAL_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", default=False)
# The embedded default is for a newcomer's machine; it is the only mode where a
# missing SECRET_KEY is tolerated (a per-checkout key is generated under var/).
EMBEDDED = not env_str("DATABASE_URL")


def _secret_key() -> str:
    key = env_str("SECRET_KEY")
    if key:
        return key
    if not EMBEDDED:
        raise ImproperlyConfigured("SECRET_KEY must be set when DATABASE_URL is set.")
    from django.core.management.utils import get_random_secret_key

    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        key_file.write_text(get_random_secret_key())
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    # django.contrib.admin, with an admin site that audits every change (diagnostics/admin_audit.py).
    "diagnostics.apps.PortalAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "mozilla_django_oidc",
    "diagnostics",
]

MIDDLEWARE = [
    # Outermost: /healthz, /readyz and /metrics answered before anything else (diagnostics/operations_endpoints.py),
    # and refused uploads (413/429/503/507) counted for /metrics.
    "diagnostics.operations_endpoints.OperationsEndpointsMiddleware",
    # Then: refuses an oversized upload from its Content-Length before any body is read.
    "diagnostics.upload_limits.RequestSizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # After WhiteNoise (static files keep their own caching): CSP and no-store on patient data.
    "diagnostics.security_headers.SecurityHeadersMiddleware",
    # A database error in a page answers 503 with Retry-After, not 500 (the API: its exception handler).
    "diagnostics.database_unavailable.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.user.is_verified(): the session passed a one-time code; admins must before anything else.
    "django_otp.middleware.OTPMiddleware",
    "diagnostics.integrations.sign_in.middleware.TwoFactorRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: locks out repeated failed logins.
    "axes.middleware.AxesMiddleware",
]

# Sign-in methods (local accounts, LDAP / Active Directory, OpenID Connect), their backends and two-factor
# sign-in: portal/settings/sign_in.py, from environment variables.
from .sign_in import *  # noqa: E402,F403

# Lock a username+address pair after repeated failures; an admin unlocks in the admin (Axes).
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = env_int("LOGIN_LOCKOUT_MINUTES", 15) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

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
                "diagnostics.context_processors.intended_use",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{VAR_DIR / 'portal.sqlite3'}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
# PostgreSQL's JIT compiles any plan costed above jit_above_cost; for the portal's short queries
# (the worklist's triage order over 10,000 studies) compiling costs more than it saves (docs/performance.md).
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and not env_bool("DB_JIT", default=False):
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = "-c jit=off"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "diagnostics.User"

PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "worklist"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "diagnostics" / "static"]

# Uploaded X-rays live outside the web root and are never served by URL: only
# access-checked views stream them (see diagnostics/views/images.py).
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = None
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 50 * 1024 * 1024)
# Decoded image data one user may have in progress in the web processes at once (services.upload_admission):
# one of the largest films the decode budget accepts (48 MB), or a dozen ordinary ones, so that one user
# never holds more than one of the web workers with heavy decodes.
UPLOAD_DECODE_BUDGET_BYTES = env_int("UPLOAD_DECODE_BUDGET_BYTES", 48 * 1024 * 1024)
# Studies that may wait for the AI before uploads are answered 503 (services.upload_admission); 0: no limit.
INFERENCE_BACKLOG_LIMIT = env_int("INFERENCE_BACKLOG_LIMIT", 40)
DATA_UPLOAD_MAX_MEMORY_SIZE = UPLOAD_MAX_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
# Counts the bytes of every uploaded file as they stream in (covers chunked bodies too).
FILE_UPLOAD_HANDLERS = [
    "diagnostics.upload_limits.SizeLimitedUploadHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]

# Models: the default artifact committed with the code, and where trained ones go.
DEFAULT_MODEL_DIR = Path(env_str("DEFAULT_MODEL_DIR", str(BASE_DIR / "ml" / "default_model")))
MODEL_DIR = Path(env_str("MODEL_DIR", str(VAR_DIR / "models")))
PNEUMONIA_DATA_DIR = env_str("PNEUMONIA_DATA_DIR")
IMAGENET_WEIGHTS_DIR = env_str("IMAGENET_WEIGHTS_DIR")
# The promotion gate (services.promotion_gate; docs/operations.md, "Promotion gate"): its evaluation set must
# hold at least this many films, both classes, none the candidate trained on; and the candidate must meet
# these floors at the LOWER end of its 95 % patient-level bootstrap interval, whatever the active model does.
# The bundled model's lower ends on external/ (314 films) are 0.923 (sensitivity) and 0.950 (AUC).
PROMOTION_MIN_EVALUATION_FILMS = env_int("PROMOTION_MIN_EVALUATION_FILMS", 300)
PROMOTION_MIN_SENSITIVITY = env_float("PROMOTION_MIN_SENSITIVITY", 0.90)
PROMOTION_MIN_AUC = env_float("PROMOTION_MIN_AUC", 0.92)
INFERENCE_THREADS = env_int("INFERENCE_THREADS", 0)  # 0: ONNX Runtime decides
# A worker predicts the study it was sent plus up to this many waiting ones in one model call.
INFERENCE_MAX_BATCH = env_int("INFERENCE_MAX_BATCH", 16)
# Whether ONNX Runtime's idle threads busy-wait (off: the cores go back to the web and the
# database between calls). See docs/performance.md.
INFERENCE_SPIN = env_bool("INFERENCE_SPIN", default=False)

# Celery: with no broker configured, tasks run in process (embedded default).
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or env_str("REDIS_URL")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# Queues, routes and per-task options: worker/queues.py (set on the app in worker/celery_app.py).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
TRAINING_SOFT_TIME_LIMIT_SECONDS = env_int("TRAINING_SOFT_TIME_LIMIT_SECONDS", 5 * 3600)
# A running training run with no progress report for this long is failed (its worker died).
TRAINING_STALE_AFTER_SECONDS = env_int("TRAINING_STALE_AFTER_SECONDS", 30 * 60)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Longer than the longest task (training's hard limit), so Redis never redelivers
    # a task that is still running.
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 6 * 3600),
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A broker outage of any length: the worker keeps trying to reconnect (Celery's default gives up
# after 100 tries and exits), and a late acknowledgement on the connection that Redis dropped is not
# fatal (worker/broker.py: kombu's Redis transport with that fault worked around).
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT = "worker.broker:Transport"
# A study running when the connection drops finishes; its message, given back to the queue, is
# delivered again and finds the study done (the claim takes only a queued study). Cancelling it
# instead would leave it running until its lease ran out and spend one of its attempts.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# Recovery within a minute of a fault (services/reconcile.py, run every RECONCILE_EVERY_SECONDS):
# a running study whose worker stopped renewing its lease (STUDY_LEASE_SECONDS; renewed as the worker
# goes, a film takes milliseconds) goes back to the queue; a study queued longer than
# STUDY_STALE_AFTER_SECONDS has its message sent again (a lost message; a duplicate is a no-op);
# after STUDY_MAX_ATTEMPTS claims it is failed with a reason the clinician sees.
STUDY_LEASE_SECONDS = env_int("STUDY_LEASE_SECONDS", 30)
STUDY_STALE_AFTER_SECONDS = env_int("STUDY_STALE_AFTER_SECONDS", 30)
STUDY_MAX_ATTEMPTS = env_int("STUDY_MAX_ATTEMPTS", 3)
RECONCILE_EVERY_SECONDS = env_int("RECONCILE_EVERY_SECONDS", 10)
# Files with no row (a web worker killed mid-upload) are removed once older than this (services/storage_sweep.py).
ORPHAN_FILE_GRACE_SECONDS = env_int("ORPHAN_FILE_GRACE_SECONDS", 3600)
CELERY_BEAT_SCHEDULE = {
    "reconcile-stuck-studies": {
        "task": "worker.tasks.reconcile_stuck_studies",
        "schedule": RECONCILE_EVERY_SECONDS,
        # A missed run is replaced by the next one, never piled up.
        "options": {"expires": RECONCILE_EVERY_SECONDS},
    },
    "sweep-orphan-files": {
        "task": "worker.tasks.sweep_orphan_files",
        "schedule": 3600,
        "options": {"expires": 3600},
    },
    **(
        {
            # Directory accounts the directory disabled or removed stop working (sessions, API tokens).
            "sync-directory-accounts": {
                "task": "worker.tasks.sync_directory_accounts",
                "schedule": LDAP_SYNC_SECONDS,  # noqa: F405
                "options": {"expires": LDAP_SYNC_SECONDS},  # noqa: F405
            }
        }
        if LDAP_SERVER_URI  # noqa: F405
        else {}
    ),
}

REST_FRAMEWORK = {
    # Machine clients send an ApiToken (diagnostics/api/authentication.py); the browser uses its session.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "diagnostics.api.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "diagnostics.api.schema.PortalAutoSchema",
    "DEFAULT_PAGINATION_CLASS": "diagnostics.api.pagination.PortalPagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "diagnostics.api.errors.api_exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_THROTTLE_CLASSES": [
        "diagnostics.api.throttling.ClientRateThrottle",
        "diagnostics.api.throttling.AnonymousRateThrottle",
    ],
    # Per API token (or per signed-in user) and per address for anonymous requests.
    "DEFAULT_THROTTLE_RATES": {
        "client": env_str("API_THROTTLE_CLIENT", "600/minute"),
        "anonymous": env_str("API_THROTTLE_ANONYMOUS", "60/minute"),
    },
}
# Throttle counters must be shared by every web process: Redis when one is configured.
# Films, derivatives, heatmaps and model artifacts: the file system (default; a failed write leaves no partial
# file, diagnostics/storage.py) or S3-compatible object storage, from STORAGE_BACKEND (settings/storage.py).
STORAGES = storages_from_env()
# A worker keeps the model artifacts it fetched from object storage here, one folder per sha256.
MODEL_CACHE_DIR = Path(env_str("MODEL_CACHE_DIR", str(VAR_DIR / "model-cache")))

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "api_throttle": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CELERY_BROKER_URL,
            "KEY_PREFIX": "api-throttle",
        }
        if CELERY_BROKER_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "api-throttle"}
    ),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Pneumonia detection portal API",
    "DESCRIPTION": (
        "Decision support for pediatric chest X-rays; not a diagnosis. "
        'Every error has the shape {"error": {"code", "message", "fields"}}; see docs/api.md.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "StudyStatusEnum": "diagnostics.models.Study.Status",
        "ModelVersionStatusEnum": "diagnostics.models.ModelVersion.Status",
        "TrainingRunStatusEnum": "diagnostics.models.TrainingRun.Status",
        "WebhookDeliveryStatusEnum": "diagnostics.models.WebhookDelivery.Status",
        "LabelEnum": "diagnostics.models.Prediction.Label",
    },
    # Swagger UI and its assets are served by the portal itself (drf-spectacular-sidecar), never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

SESSION_COOKIE_HTTPONLY = True
# Idle timeout: every request pushes the expiry forward, so a session ends after this long unused.
SESSION_COOKIE_AGE = env_int("SESSION_IDLE_SECONDS", 30 * 60)
SESSION_SAVE_EVERY_REQUEST = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", default=not EMBEDDED)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
# Outside the embedded default the portal is served over HTTPS only (behind a TLS proxy, set
# SECURE_PROXY_SSL_HEADER_NAME=HTTP_X_FORWARDED_PROTO so Django trusts the proxy's scheme).
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=not EMBEDDED)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if EMBEDDED else 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
if env_str("SECURE_PROXY_SSL_HEADER_NAME"):
    SECURE_PROXY_SSL_HEADER = (env_str("SECURE_PROXY_SSL_HEADER_NAME"), "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}

# A DICOM film whose header disagrees with the patient record it is uploaded to (patient ID, name, birth
# date, sex: selectors.warnings): "warn" stores it and every surface shows the study with a wrong-patient
# warning; "refuse" refuses the upload (page and API) with the fields that differ, and stores nothing.
# Films from a PACS are never refused for this, always warned about (the PACS files them under their PatientID).
DICOM_PATIENT_MISMATCH = env_str("DICOM_PATIENT_MISMATCH", "warn").strip().lower()
if DICOM_PATIENT_MISMATCH not in ("warn", "refuse"):
    raise ImproperlyConfigured(f"DICOM_PATIENT_MISMATCH must be warn or refuse, not {DICOM_PATIENT_MISMATCH!r}.")
# Hosts a webhook callback may target although they resolve to private addresses (SSRF guard).
WEBHOOK_ALLOWED_HOSTS = env_list("WEBHOOK_ALLOWED_HOSTS", [])

INTENDED_USE = "Decision support for pediatric chest X-rays; not a diagnosis."
# The PDF report draws the pictures of this many films (each costs a web worker about 0.4 s); every film's
# assessment is in it whatever the number (docs/operations.md, "Processes give memory back").
REPORT_MAX_FILM_PICTURES = env_int("REPORT_MAX_FILM_PICTURES", 6)

# The embedded default serves static files straight from the source folders.
WHITENOISE_USE_FINDERS = EMBEDDED or DEBUG

# Hospital integration over DICOM (docs/integration.md). The receiver (`python manage.py dicom_receiver`)
# listens as DICOM_AE_TITLE on DICOM_PORT for the peers registered as DicomPeer and files each film as it
# arrives; at start it files what an older receiver left in DICOM_INBOX_DIR. Results go back as this AE title.
DICOM_AE_TITLE = env_str("DICOM_AE_TITLE", "PNEUMOPORTAL")
DICOM_PORT = env_int("DICOM_PORT", 11112)
DICOM_INBOX_DIR = Path(env_str("DICOM_INBOX_DIR", str(VAR_DIR / "dicom-inbox")))
# Who may call and how much (integrations/dicom_in/receiver.py, docs/integration.md "Security of the receiver").
# The interface it listens on: 127.0.0.1 for the embedded default; production sets the hospital-facing
# address (or 0.0.0.0 in a container) and registers every peer's addresses (DicomPeer.allowed_networks).
DICOM_BIND_ADDRESS = env_str("DICOM_BIND_ADDRESS", "127.0.0.1")
# Associations held at once by registered peers, in total (each peer has its own max_associations too),
# and connections not yet past association negotiation, in total and per calling address.
DICOM_MAX_ASSOCIATIONS = env_int("DICOM_MAX_ASSOCIATIONS", 10)
DICOM_MAX_PENDING_CONNECTIONS = env_int("DICOM_MAX_PENDING_CONNECTIONS", 10)
DICOM_MAX_PENDING_PER_ADDRESS = env_int("DICOM_MAX_PENDING_PER_ADDRESS", 4)
# Seconds: to send the A-ASSOCIATE-RQ (and finish a TLS handshake), to send a DIMSE message's next part,
# and of silence before an association is aborted.
DICOM_ACSE_TIMEOUT = env_float("DICOM_ACSE_TIMEOUT", 10.0)
DICOM_DIMSE_TIMEOUT = env_float("DICOM_DIMSE_TIMEOUT", 30.0)
DICOM_NETWORK_TIMEOUT = env_float("DICOM_NETWORK_TIMEOUT", 60.0)
# A dataset over this many bytes is refused while it streams (the association is aborted once it passes).
DICOM_MAX_DATASET_BYTES = env_int("DICOM_MAX_DATASET_BYTES", UPLOAD_MAX_BYTES)
# DICOM TLS (PS3.15 B.1): set the certificate and key to listen with TLS only; DICOM_TLS_CA_FILE holds
# the CA (or the peers' own certificates) a caller's certificate must chain to: no certificate, no association.
DICOM_TLS_CERT_FILE = env_str("DICOM_TLS_CERT_FILE", "")
DICOM_TLS_KEY_FILE = env_str("DICOM_TLS_KEY_FILE", "")
DICOM_TLS_CA_FILE = env_str("DICOM_TLS_CA_FILE", "")
if bool(DICOM_TLS_CERT_FILE) != bool(DICOM_TLS_KEY_FILE) or (DICOM_TLS_CERT_FILE and not DICOM_TLS_CA_FILE):
    raise ImproperlyConfigured("DICOM TLS needs DICOM_TLS_CERT_FILE, DICOM_TLS_KEY_FILE and DICOM_TLS_CA_FILE.")

# Operations (docs/operations.md, "Health, readiness and metrics"): /readyz remembers the active model's check
# this long; a worker writes its heartbeat every WORKER_HEARTBEAT_SECONDS (worker/heartbeat.py) and counts as
# seen for WORKER_HEARTBEAT_STALE_SECONDS. /metrics is off until a bearer token or the networks allowed to
# scrape it (not through a proxy) are set.
READYZ_MODEL_CHECK_SECONDS = env_int("READYZ_MODEL_CHECK_SECONDS", 30)
WORKER_HEARTBEAT_STALE_SECONDS = env_int("WORKER_HEARTBEAT_STALE_SECONDS", 60)
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS", [])
for _network in METRICS_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(f"METRICS_ALLOWED_NETWORKS: {_network!r} is not an address or network.") from None

# A read of patient data is audited once per user, thing and detail within this window (services/audit.py).
AUDIT_READ_WINDOW_SECONDS = env_int("AUDIT_READ_WINDOW_SECONDS", 60)

# FHIR for the hospital's EHR (integrations/fhir/, docs/integration.md): the identifier systems the hospital
# uses for its medical record numbers and its accession numbers (URIs, e.g. urn:oid:1.2.36.146.595.217.0.1).
# Left empty, identifiers carry their type (MR, ACSN) and value but no system: the portal never invents one.
# FHIR_REPORT_ID_SYSTEM, when set, names the system of the portal's own report identifiers (study ids).
FHIR_MRN_SYSTEM = env_str("FHIR_MRN_SYSTEM", "")
FHIR_ACCESSION_SYSTEM = env_str("FHIR_ACCESSION_SYSTEM", "")
FHIR_REPORT_ID_SYSTEM = env_str("FHIR_REPORT_ID_SYSTEM", "")
