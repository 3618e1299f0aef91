# The Spot pods, described without Helm: the API behind the ALB (autoscaled), one matching
# worker per shard, and the batcher. All run the same image with a different command.

locals {
  labels = { "app.kubernetes.io/part-of" = "spot" }

  # First apply without an image: the registry exists, nothing to run yet.
  deploy = var.image != ""

  # SPOT_* settings every process reads (12-factor); the values come from Secrets Manager.
  secret_env = ["SPOT_DATABASE_URL", "SPOT_REDIS_URL", "SPOT_JWT_SECRET"]
}

resource "kubernetes_namespace_v1" "spot" {
  metadata {
    name   = "spot"
    labels = local.labels
  }
}

resource "kubernetes_secret_v1" "spot" {
  metadata {
    name      = "spot"
    namespace = kubernetes_namespace_v1.spot.metadata[0].name
  }

  data = {
    SPOT_DATABASE_URL = jsondecode(data.aws_secretsmanager_secret_version.database.secret_string)["url"]
    SPOT_REDIS_URL    = jsondecode(data.aws_secretsmanager_secret_version.redis.secret_string)["url"]
    SPOT_JWT_SECRET   = data.aws_secretsmanager_secret_version.jwt.secret_string
  }
}

# --- API: stateless, scaled by CPU ---------------------------------------------------------

resource "kubernetes_deployment_v1" "api" {
  #checkov:skip=CKV_K8S_35:Spot is configured by SPOT_* environment variables (12-factor); the Secret is filled from Secrets Manager and encrypted by EKS envelope encryption.
  #checkov:skip=CKV_K8S_43:image is var.image, whose validation requires an @sha256 digest; checkov cannot see the value.
  #checkov:skip=CKV_K8S_14:as CKV_K8S_43: var.image is pinned by digest, never a tag.
  count = local.deploy ? 1 : 0

  metadata {
    name      = "api"
    namespace = kubernetes_namespace_v1.spot.metadata[0].name
    labels    = merge(local.labels, { "app.kubernetes.io/name" = "api" })
  }

  spec {
    selector {
      match_labels = { "app.kubernetes.io/name" = "api" }
    }

    template {
      metadata {
        labels = merge(local.labels, { "app.kubernetes.io/name" = "api" })
      }

      spec {
        automount_service_account_token  = false
        node_selector                    = { "spot.role" = "api" }
        termination_grace_period_seconds = 30

        toleration {
          key      = "spot.role"
          operator = "Equal"
          value    = "api"
          effect   = "NoSchedule"
        }

        # Spread the replicas so one reclaimed spot node takes out as few as possible.
        topology_spread_constraint {
          max_skew           = 1
          topology_key       = "kubernetes.io/hostname"
          when_unsatisfiable = "ScheduleAnyway"
          label_selector {
            match_labels = { "app.kubernetes.io/name" = "api" }
          }
        }

        security_context {
          run_as_non_root = true
          run_as_user     = 10001
          run_as_group    = 10001
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        container {
          name              = "api"
          image             = var.image
          image_pull_policy = "Always"
          args              = ["api"]

          port {
            container_port = var.api_port
          }

          env {
            name  = "SPOT_API_HOST"
            value = "0.0.0.0"
          }

          env {
            name  = "SPOT_API_PORT"
            value = tostring(var.api_port)
          }

          dynamic "env" {
            for_each = toset(local.secret_env)
            content {
              name = env.value
              value_from {
                secret_key_ref {
                  name = kubernetes_secret_v1.spot.metadata[0].name
                  key  = env.value
                }
              }
            }
          }

          resources {
            requests = var.api_resources
            limits   = var.api_resources
          }

          readiness_probe {
            http_get {
              path = "/readyz"
              port = var.api_port
            }
            period_seconds = 5
          }

          liveness_probe {
            http_get {
              path = "/healthz"
              port = var.api_port
            }
            period_seconds    = 10
            failure_threshold = 3
          }

          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            privileged                 = false
            capabilities {
              drop = ["ALL"]
            }
          }

          volume_mount {
            name       = "tmp"
            mount_path = "/tmp"
          }
        }

        volume {
          name = "tmp"
          empty_dir {}
        }
      }
    }
  }

  # The HPA owns the replica count.
  lifecycle {
    ignore_changes = [spec[0].replicas]
  }
}

resource "kubernetes_service_v1" "api" {
  count = local.deploy ? 1 : 0

  metadata {
    name      = "api"
    namespace = kubernetes_namespace_v1.spot.metadata[0].name
  }

  spec {
    type     = "NodePort"
    selector = { "app.kubernetes.io/name" = "api" }

    port {
      port        = 80
      target_port = var.api_port
      node_port   = local.api_node_port
    }
  }
}

resource "kubernetes_horizontal_pod_autoscaler_v2" "api" {
  count = local.deploy ? 1 : 0

  metadata {
    name      = "api"
    namespace = kubernetes_namespace_v1.spot.metadata[0].name
  }

  spec {
    min_replicas = var.api_replicas.min
    max_replicas = var.api_replicas.max

    scale_target_ref {
      api_version = "apps/v1"
      kind        = "Deployment"
      name        = kubernetes_deployment_v1.api[0].metadata[0].name
    }

    # The seed's target: 60-70 % CPU at peak, headroom for a lost spot node.
    metric {
      type = "Resource"
      resource {
        name = "cpu"
        target {
          type                = "Utilization"
          average_utilization = 65
        }
      }
    }
  }
}

resource "kubernetes_pod_disruption_budget_v1" "api" {
  count = local.deploy ? 1 : 0

  metadata {
    name      = "api"
    namespace = kubernetes_namespace_v1.spot.metadata[0].name
  }

  spec {
    max_unavailable = "1"
    selector {
      match_labels = { "app.kubernetes.io/name" = "api" }
    }
  }
}

# --- Matching workers: one deployment per shard ----------------------------------------------

resource "kubernetes_deployment_v1" "worker" {
  #checkov:skip=CKV_K8S_35:Spot is configured by SPOT_* environment variables (12-factor); the Secret is filled from Secrets Manager and encrypted by EKS envelope encryption.
  #checkov:skip=CKV_K8S_43:image is var.image, whose validation requires an @sha256 digest; checkov cannot see the value.
  #checkov:skip=CKV_K8S_14:as CKV_K8S_43: var.image is pinned by digest, never a tag.
  #checkov:skip=CKV_K8S_8:a worker serves no HTTP; its liveness is the process (it must exit on an unrecoverable error; the kubelet restarts it). An exec probe needs a `spot` health subcommand that does not exist yet.
  #checkov:skip=CKV_K8S_9:a worker receives no traffic, so there is nothing for a readiness probe to gate.
  for_each = local.deploy ? toset([for s in range(var.shards) : tostring(s)]) : toset([])

  metadata {
    name      = "worker-${each.key}"
    namespace = kubernetes_namespace_v1.spot.metadata[0].name
    labels    = merge(local.labels, { "app.kubernetes.io/name" = "worker", "spot.shard" = each.key })
  }

  spec {
    # Exactly one owner per shard (DESIGN invariant 4): never two pods during a rollout.
    replicas = 1
    strategy {
      type = "Recreate"
    }

    selector {
      match_labels = { "app.kubernetes.io/name" = "worker", "spot.shard" = each.key }
    }

    template {
      metadata {
        labels = merge(local.labels, { "app.kubernetes.io/name" = "worker", "spot.shard" = each.key })
      }

      spec {
        automount_service_account_token  = false
        node_selector                    = { "spot.role" = "worker" }
        termination_grace_period_seconds = 60

        toleration {
          key      = "spot.role"
          operator = "Equal"
          value    = "worker"
          effect   = "NoSchedule"
        }

        security_context {
          run_as_non_root = true
          run_as_user     = 10001
          run_as_group    = 10001
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        container {
          name              = "worker"
          image             = var.image
          image_pull_policy = "Always"
          args              = ["worker", "--shards", each.key]

          dynamic "env" {
            for_each = toset(local.secret_env)
            content {
              name = env.value
              value_from {
                secret_key_ref {
                  name = kubernetes_secret_v1.spot.metadata[0].name
                  key  = env.value
                }
              }
            }
          }

          resources {
            requests = var.worker_resources
            limits   = var.worker_resources
          }

          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            privileged                 = false
            capabilities {
              drop = ["ALL"]
            }
          }

          volume_mount {
            name       = "tmp"
            mount_path = "/tmp"
          }
        }

        volume {
          name = "tmp"
          empty_dir {}
        }
      }
    }
  }
}

# --- Batcher: the single writer to PostgreSQL, on the on-demand system nodes -----------------

resource "kubernetes_deployment_v1" "batcher" {
  #checkov:skip=CKV_K8S_35:Spot is configured by SPOT_* environment variables (12-factor); the Secret is filled from Secrets Manager and encrypted by EKS envelope encryption.
  #checkov:skip=CKV_K8S_43:image is var.image, whose validation requires an @sha256 digest; checkov cannot see the value.
  #checkov:skip=CKV_K8S_14:as CKV_K8S_43: var.image is pinned by digest, never a tag.
  #checkov:skip=CKV_K8S_8:the batcher serves no HTTP; its liveness is the process (it must exit on an unrecoverable error; the kubelet restarts it). An exec probe needs a `spot` health subcommand that does not exist yet.
  #checkov:skip=CKV_K8S_9:the batcher receives no traffic, so there is nothing for a readiness probe to gate.
  count = local.deploy ? 1 : 0

  metadata {
    name      = "batcher"
    namespace = kubernetes_namespace_v1.spot.metadata[0].name
    labels    = merge(local.labels, { "app.kubernetes.io/name" = "batcher" })
  }

  spec {
    replicas = 1
    strategy {
      type = "Recreate"
    }

    selector {
      match_labels = { "app.kubernetes.io/name" = "batcher" }
    }

    template {
      metadata {
        labels = merge(local.labels, { "app.kubernetes.io/name" = "batcher" })
      }

      spec {
        automount_service_account_token  = false
        node_selector                    = { "spot.role" = "system" }
        termination_grace_period_seconds = 60

        security_context {
          run_as_non_root = true
          run_as_user     = 10001
          run_as_group    = 10001
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        container {
          name              = "batcher"
          image             = var.image
          image_pull_policy = "Always"
          args              = ["batcher"]

          dynamic "env" {
            for_each = toset(local.secret_env)
            content {
              name = env.value
              value_from {
                secret_key_ref {
                  name = kubernetes_secret_v1.spot.metadata[0].name
                  key  = env.value
                }
              }
            }
          }

          resources {
            requests = { cpu = "1000m", memory = "1Gi" }
            limits   = { cpu = "1000m", memory = "1Gi" }
          }

          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            privileged                 = false
            capabilities {
              drop = ["ALL"]
            }
          }

          volume_mount {
            name       = "tmp"
            mount_path = "/tmp"
          }
        }

        volume {
          name = "tmp"
          empty_dir {}
        }
      }
    }
  }
}
