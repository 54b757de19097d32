"""restik's sidecar: `restik watch` runs restic on a Backup's schedule and reports each run."""
