terraform {
  required_version = ">= 1.10" # S3 native state locking (use_lockfile)

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.95" # terraform-aws-modules/eks 20.x supports aws >= 5.95, < 6
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "~> 2.36"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.7"
    }
  }

  # State holds the generated secrets: keep it in an encrypted, versioned bucket.
  # terraform init -backend-config="bucket=..." -backend-config="key=spot/<env>.tfstate"
  backend "s3" {
    encrypt      = true
    use_lockfile = true
  }
}
