"""Names of every label, annotation, container and volume restik owns: one place for all."""

GROUP = "backup.appscode.com"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Backup"
PLURAL = "backups"
CRD_NAME = f"{PLURAL}.{GROUP}"
RESTORE_KIND = "Restore"
RESTORE_PLURAL = "restores"
RESTORE_CRD_NAME = f"{RESTORE_PLURAL}.{GROUP}"

# On a workload's own metadata: which Backup it opts into.
CONFIG_LABEL = f"{GROUP}/config"
# On the pod template: hash of everything the controller rendered.
HASH_ANNOTATION = f"{GROUP}/config-hash"

SIDECAR_NAME = "restik"
# The init container that restores a workload's volume in place (a Restore's target).
RESTORE_CONTAINER = "restik-restore"
# On a restored PVC: which Restore (name, uid) wrote it from which snapshot, as JSON.
RESTORED_ANNOTATION = f"{GROUP}/restored-by"
# On a Backup: a new value asks its sidecars for a backup now (restik backup-now).
TRIGGER_ANNOTATION = f"{GROUP}/backup-now"
VOLUME_PREFIX = "restik-"
REPO_VOLUME = "restik-repo"
CACHE_VOLUME = "restik-cache"
TOKEN_VOLUME = "restik-token"  # noqa: S105 - a volume name, not a secret

REPO_MOUNT = "/restik/repo"
CACHE_MOUNT = "/restik/cache"
# The sidecar keeps the Backup's repository here, for `kubectl exec ... -- restic ...`.
REPOSITORY_FILE = CACHE_MOUNT + "/repository"
# Where the API clients look for the in-cluster service-account token (as automount puts it).
TOKEN_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"  # noqa: S105 - a path
METRICS_PORT = 9464
METRICS_PORT_NAME = "restik-metrics"

# The repository Secret's keys the sidecar gets, each as an optional secretKeyRef of the same
# name: restic's documented backend variables (restic's "Environment Variables" list), and
# nothing else. Any other key of the Secret (RESTIC_PASSWORD_COMMAND, LD_PRELOAD, PYKUBE_*,
# PATH, RESTIK_*, ...) never reaches the sidecar. The key `password` is RESTIC_PASSWORD.
SECRET_PASSWORD_KEY = "password"  # noqa: S105 - a key name
SECRET_ENV = (
    # S3 (and S3-compatible)
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "RESTIC_AWS_ASSUME_ROLE_ARN",
    "RESTIC_AWS_ASSUME_ROLE_SESSION_NAME",
    "RESTIC_AWS_ASSUME_ROLE_EXTERNAL_ID",
    "RESTIC_AWS_ASSUME_ROLE_POLICY",
    "RESTIC_AWS_ASSUME_ROLE_REGION",
    "RESTIC_AWS_ASSUME_ROLE_STS_ENDPOINT",
    # Backblaze B2
    "B2_ACCOUNT_ID",
    "B2_ACCOUNT_KEY",
    # Azure Blob Storage
    "AZURE_ACCOUNT_NAME",
    "AZURE_ACCOUNT_KEY",
    "AZURE_ACCOUNT_SAS",
    "AZURE_ENDPOINT_SUFFIX",
    # Google Cloud Storage (a token: the sidecar has no credentials file to point to)
    "GOOGLE_PROJECT_ID",
    "GOOGLE_ACCESS_TOKEN",
    # OpenStack Swift
    "ST_AUTH",
    "ST_USER",
    "ST_KEY",
    "OS_AUTH_URL",
    "OS_REGION_NAME",
    "OS_USERNAME",
    "OS_USER_ID",
    "OS_PASSWORD",
    "OS_TENANT_ID",
    "OS_TENANT_NAME",
    "OS_USER_DOMAIN_NAME",
    "OS_USER_DOMAIN_ID",
    "OS_PROJECT_NAME",
    "OS_PROJECT_DOMAIN_NAME",
    "OS_PROJECT_DOMAIN_ID",
    "OS_TRUST_ID",
    "OS_APPLICATION_CREDENTIAL_ID",
    "OS_APPLICATION_CREDENTIAL_NAME",
    "OS_APPLICATION_CREDENTIAL_SECRET",
    "OS_STORAGE_URL",
    "OS_AUTH_TOKEN",
    # REST server
    "RESTIC_REST_USERNAME",
    "RESTIC_REST_PASSWORD",
)

WORKLOAD_KINDS = {
    # kind: (apiVersion, plural)
    "Deployment": ("apps/v1", "deployments"),
    "StatefulSet": ("apps/v1", "statefulsets"),
    "DaemonSet": ("apps/v1", "daemonsets"),
    "ReplicaSet": ("apps/v1", "replicasets"),
    "ReplicationController": ("v1", "replicationcontrollers"),
}
# Kinds whose pods are backed up under the pod's own name (each pod has its own data).
PER_POD_HOST_KINDS = frozenset({"StatefulSet", "DaemonSet"})
# Kinds that never roll their pods on a template change: the controller evicts stale pods
# (StatefulSets and DaemonSets with updateStrategy OnDelete too: see rollout.py).
MANUAL_RESTART_KINDS = frozenset({"ReplicaSet", "ReplicationController"})

# Exit codes of every command: success; "changes planned" (diff) or "some Backup not
# healthy" (status); an error.
EXIT_OK, EXIT_CHANGES, EXIT_ERROR = 0, 1, 2
